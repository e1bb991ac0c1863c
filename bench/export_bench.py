"""Benchmark of the sparse TFLite exporter: size, latency, correctness.

Run (from the repo root):
  TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python bench/export_bench.py \
      [--model_path=lenet_300_100_pruned.keras] [--model_path=lenet5_pruned.keras] \
      [--tfmot_python=.venv-tfmot/bin/python] [--iters=300] [--output=bench/RESULTS_export.md]

Sections:
1. 2048-2048-2048-2048-10 MLP (random weights), 90% 1x4 blocks along the Keras
   kernel's input axis: dense vs sparse float and dynamic-range latency (median of
   single-sample invokes, 1 thread), XNNPACK on and off; every file verified.
2. Pruned LeNets given by --model_path (stripped .keras): int8/float file sizes vs
   dense, MNIST test accuracy through the interpreter (XNNPACK on and off) vs Keras,
   latency. Side by side: TFMOT's own pruned model of the same architecture and
   sparsity through the stock converter, when `bench/compare.py --save_models` left
   tfmot_*_<sparsity>_seed<seed>_{float,int8}.tflite next to the .keras file.
3. Every emitted format x runtime (LiteRT XNNPACK on/off, TFLM): runs / correct.
4. The same MLP weights through the stock converter (EXPERIMENTAL_SPARSITY, what
   TFMOT users get after strip_pruning), run in a subprocess of the TFMOT env.
"""
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np

import litert_timing  # bench/litert_timing.py

_MODEL_PATHS = flags.DEFINE_multi_string("model_path", [], "Stripped pruned .keras MNIST models.")
_TFMOT_PY = flags.DEFINE_string("tfmot_python", ".venv-tfmot/bin/python", "TFMOT env python.")
_ITERS = flags.DEFINE_integer("iters", 300, "Invokes per latency measurement.")
_OUTPUT = flags.DEFINE_string("output", "bench/RESULTS_export.md", "Markdown results file.")
_WIDTH = flags.DEFINE_integer("width", 2048, "MLP width.")


def _latency_us(model_bytes, xnnpack, iters):
  return litert_timing.latency_us(model_bytes, xnnpack, iters)


def _mlp(width, block, sparsity, seed=0):
  import keras  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  inp = keras.Input((width,))
  x = inp
  for _ in range(3):
    x = keras.layers.Dense(width, activation="relu")(x)
  model = keras.Model(inp, keras.layers.Dense(10)(x))
  for layer in model.layers[1:]:
    k = layer.kernel.numpy()
    n_in, n_out = k.shape
    scale = np.sqrt(2.0 / (n_in * (1 - sparsity)))
    k = rng.standard_normal(k.shape).astype(np.float32) * scale
    if block and n_in % block == 0:
      mask = np.repeat(rng.random((n_in // block, n_out)) >= sparsity, block, axis=0)
      k = k * mask
    layer.kernel.assign(k)
  return model


TFMOT_SCRIPT = r"""
import sys, numpy as np, tensorflow as tf
import tensorflow_model_optimization as tfmot  # noqa: F401 (the env TFMOT users have)
import tf_keras as keras
w = np.load(sys.argv[1])
n = len([k for k in w.files if k.startswith("k")])
inp = keras.Input((w["k0"].shape[0],)); x = inp
for i in range(n):
  x = keras.layers.Dense(w[f"k{i}"].shape[1], activation="relu" if i < n - 1 else None)(x)
m = keras.Model(inp, x)
for i, l in enumerate(m.layers[1:]):
  l.set_weights([w[f"k{i}"], w[f"b{i}"]])
for q, out in (("float", sys.argv[2]), ("dynamic", sys.argv[3])):
  c = tf.lite.TFLiteConverter.from_keras_model(m)
  c.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY] + ([tf.lite.Optimize.DEFAULT] if q == "dynamic" else [])
  open(out, "wb").write(c.convert())
"""


def _stock_converter(model, tfmot_python):
  """Converts `model`'s weights with the stock converter in the TFMOT env."""
  tmp = tempfile.mkdtemp()
  arrays = {}
  for i, layer in enumerate(model.layers[1:]):
    arrays[f"k{i}"], arrays[f"b{i}"] = [np.asarray(v) for v in layer.get_weights()]
  np.savez(os.path.join(tmp, "w.npz"), **arrays)
  script = os.path.join(tmp, "conv.py")
  with open(script, "w") as f:
    f.write(TFMOT_SCRIPT)
  outs = [os.path.join(tmp, "float.tflite"), os.path.join(tmp, "dynamic.tflite")]
  env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.run([tfmot_python, script, os.path.join(tmp, "w.npz"), *outs],
                        capture_output=True, text=True, env=env, timeout=1200)
  if proc.returncode:
    raise RuntimeError(f"stock converter subprocess failed: {proc.stderr[-2000:]}")
  return [open(p, "rb").read() for p in outs]


def _check(model_bytes, ref, x, quantize, runtime):
  from tfprune.export import verify  # pylint: disable=g-import-not-at-top
  try:
    if runtime == "tflm":
      y, _ = verify.run_tflm(model_bytes, x)
      scale = None
    else:
      y, _, d = verify.run_litert(model_bytes, x, xnnpack=runtime == "xnnpack")
      scale = d["quantization"][0] or None
    res = verify.compare(y.reshape(len(x), -1), ref.reshape(len(x), -1), quantize, scale)
    return "runs / correct" if res.ok else f"runs / WRONG (diff {res.max_abs_diff:.3g})"
  except Exception as e:  # pylint: disable=broad-except
    return f"fails: {str(e).splitlines()[0][:60]}"


def bench_mlp(lines, iters, width, tfmot_python):
  from tfprune import export  # pylint: disable=g-import-not-at-top
  model = _mlp(width, 4, 0.9)
  model16 = _mlp(width, 16, 0.9)
  x = np.random.default_rng(1).standard_normal((4, width)).astype(np.float32)
  ref = np.asarray(model(x))
  rows = {}
  for name, q, sparse in (("dense float", None, "off"), ("1x4 float (ours)", None, "auto"),
                          ("dense dynamic-range", "dynamic", "off"),
                          ("1x16 dynamic-range (ours)", "dynamic", "block")):
    t = time.time()
    res = export.convert(model16 if q else model, quantize=q, sparse=sparse)
    rows[name] = (res.model_bytes, q, time.time() - t)
  lines += [f"## 1. {width}x4-10 MLP, 90% 1x4 blocks (float) / 1x16 blocks (dynamic-range), input axis, 1 thread, median of {iters} "
            "single-sample invokes", "",
            "| variant | size | XNNPACK on (us) | XNNPACK off (us) | verified on/off |",
            "|---|---|---|---|---|"]
  lat = {}
  for name, (data, q, _) in rows.items():
    on, off = _latency_us(data, True, iters), _latency_us(data, False, iters)
    lat[name] = (on, off)
    lines.append(f"| {name} | {len(data) / 1e6:.2f} MB | {on:.0f} | {off:.0f} | yes (to_tflite) |")
  if tfmot_python and os.path.exists(tfmot_python):
    try:
      stock = _stock_converter(model, tfmot_python)
      for name, data, q in (("stock converter float (TFMOT path)", stock[0], None),
                            ("stock converter dynamic-range (TFMOT path)", stock[1], "dynamic")):
        on = _latency_us(data, True, iters) if "fails" not in _check(data, ref, x, q, "xnnpack") else float("nan")
        off = _latency_us(data, False, iters)
        ok = f"{_check(data, ref, x, q, 'xnnpack')} / {_check(data, ref, x, q, 'builtin')}"
        lines.append(f"| {name} | {len(data) / 1e6:.2f} MB | {on:.0f} | {off:.0f} | {ok} |")
    except Exception as e:  # pylint: disable=broad-except
      lines.append(f"| stock converter | failed: {e} | | | |")
  f_speed = lat["dense float"][0] / lat["1x4 float (ours)"][0]
  d_speed = lat["dense dynamic-range"][0] / lat["1x16 dynamic-range (ours)"][0]
  lines += ["", f"Speed-up with XNNPACK: float 1x4 {f_speed:.2f}x (goal >= 4x), "
            f"dynamic-range 1x16 {d_speed:.2f}x (goal >= 2x).", ""]


def bench_formats(lines):
  from tfprune import export  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  calib = rng.standard_normal((16, 64)).astype(np.float32)
  lines += ["## 3. Emitted format x runtime (64-64-16 MLP)", "",
            "| file | formats | LiteRT XNNPACK on | LiteRT XNNPACK off | TFLM |", "|---|---|---|---|---|"]
  cases = (("float csr+DENSIFY", "random", None, "auto", "litert"),
           ("float 1x4", 4, None, "auto", "litert"),
           ("dynamic 1x16", 16, "dynamic", "auto", "litert"),
           ("int8 1x16", 16, "int8", "auto", "litert"),
           ("int8 csr+DENSIFY (FC v8)", "random", "int8", "auto", "litert"),
           ("micro int8 dense", 16, "int8", "auto", "micro"))
  for name, pattern, q, sparse, target in cases:
    model = _mlp(64, None if pattern == "random" else pattern, 0.9)
    if pattern == "random":
      for layer in model.layers[1:]:
        k = layer.kernel.numpy()
        layer.kernel.assign(k * (rng.random(k.shape) > 0.9))
    res = export.convert(model, target=target, quantize=q, sparse=sparse,
                         representative_data=calib)
    ref = np.asarray(model(calib[:8]))
    fmts = ",".join(sorted({t.format for t in res.tensors}))
    cells = [_check(res.model_bytes, ref, calib[:8], q, r) for r in ("xnnpack", "builtin", "tflm")]
    if target == "litert" and (res.tensors and any(t.format != "dense" for t in res.tensors)):
      cells[2] += " (not a TFLM target: sparse)"
    lines.append(f"| {name} | {fmts} | " + " | ".join(cells) + " |")
  lines.append("")


def _tfmot_file(path, quantize):
  """TFMOT's stock-converter file saved next to our model by compare.py, or None."""
  import glob  # pylint: disable=g-import-not-at-top
  stem = os.path.basename(path)[:-len(".keras")]            # <method>_<sparsity>_seed<s>
  suffix = "_".join(stem.split("_")[-2:])                     # <sparsity>_seed<s>
  found = glob.glob(os.path.join(os.path.dirname(path),
                                 f"tfmot_*_{suffix}_{quantize or 'float'}.tflite"))
  return found[0] if len(found) == 1 else None


def _lenet_row(name, variant, data, dense_size, xt, y_test, iters, keras_acc=None):
  """One table row: size, accuracy and latency with XNNPACK on and off."""
  from tfprune import export  # pylint: disable=g-import-not-at-top
  from tfprune.export import verify  # pylint: disable=g-import-not-at-top
  accs, lats = [], []
  for xnn in (True, False):
    try:
      y, _, _ = verify.run_litert(data, xt, xnnpack=xnn)
      accs.append(f"{np.mean(np.argmax(y.reshape(len(xt), -1), -1) == y_test):.2%}")
      lats.append(f"{_latency_us(data, xnn, iters):.0f}")
    except Exception as e:  # pylint: disable=broad-except
      accs.append(f"fails: {str(e).splitlines()[0][:40]}")
      lats.append("-")
  warnings = len(export.inspect(data).warnings)
  keras_cell = "" if keras_acc is None else f"{keras_acc:.2%}"
  return (f"| {name} | {variant} | {len(data)} | {dense_size / len(data):.1f}x | {keras_cell} | "
          f"{accs[0]} | {accs[1]} | {lats[0]} | {lats[1]} | {warnings} |")


def bench_lenet(lines, paths, iters):
  import keras  # pylint: disable=g-import-not-at-top
  from tfprune import export  # pylint: disable=g-import-not-at-top
  lines += ["## 2. Pruned LeNets (full MNIST test set through the interpreter)", ""]
  if not paths:
    lines += ["Not run: pass --model_path=<stripped pruned .keras> (one per model).", ""]
    return
  from tfprune import data as tfdata  # pylint: disable=g-import-not-at-top
  _, (x_test, y_test) = tfdata.load("mnist")
  lines += ["Ratio = dense file of the same model and quantisation (stock converter "
            "defaults, per-channel int8) / this file. Latency: median of single-sample "
            f"invokes, 1 thread, {iters} iterations. Warnings: `tfprune-inspect` "
            "known-broken patterns.", "",
            "| model | file | size (B) | ratio | Keras acc | acc XNNPACK on | acc XNNPACK off | "
            "us XNNPACK on | us XNNPACK off | warnings |",
            "|---|---|---|---|---|---|---|---|---|---|"]
  for path in paths:
    model = keras.models.load_model(path, compile=False)
    name = model.name
    xt = x_test.reshape((-1,) + tuple(model.inputs[0].shape[1:])).astype(np.float32)
    keras_acc = float(np.mean(np.argmax(model.predict(xt, verbose=0), -1) == y_test))
    for q in (None, "int8"):
      calib = xt[:200]
      dense = export.to_tflite(model, quantize=q, sparse="off", representative_data=calib)
      ours = export.convert(model, quantize=q, sparse="auto", representative_data=calib)
      label = q or "float"
      lines.append(_lenet_row(name, f"{label} dense", dense, len(dense), xt, y_test, iters))
      lines.append(_lenet_row(name, f"{label} tfprune ({ours.fc_quantization.replace('_', '-')} "
                              "FC)" if q else f"{label} tfprune", ours.model_bytes, len(dense),
                              xt, y_test, iters, keras_acc))
      # Speed over size: every block holding a nonzero is stored, read directly by the FC.
      block = export.to_tflite(model, quantize=q, sparse="block", representative_data=calib)
      lines.append(_lenet_row(name, f"{label} tfprune sparse=block", block, len(dense), xt,
                              y_test, iters, keras_acc))
      tfmot = _tfmot_file(path, q)
      if tfmot:
        lines.append(_lenet_row(name, f"{label} TFMOT + stock converter",
                                open(tfmot, "rb").read(), len(dense), xt, y_test, iters))
  lines.append("")


def main(argv):
  del argv
  lines = ["# Sparse TFLite export benchmark", "",
           "Command: `TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python bench/export_bench.py "
           + " ".join(sys.argv[1:]) + "`", ""]
  bench_mlp(lines, _ITERS.value, _WIDTH.value, _TFMOT_PY.value)
  bench_lenet(lines, _MODEL_PATHS.value, _ITERS.value)
  bench_formats(lines)
  from tfprune import _io  # pylint: disable=g-import-not-at-top
  _io.atomic_write(_OUTPUT.value, "\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  app.run(main)
