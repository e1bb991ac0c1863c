"""Structured pruning benchmark: ResNet-8 on Fashion-MNIST, shrunk to <= 50% of the MACs.

Run (from the repo root):
  TF_CPP_MIN_LOG_LEVEL=3 PYTHONPATH=$PWD .venv/bin/python bench/structured_bench.py \
      [--fast] [--dense_epochs=4] [--finetune_epochs=4] [--target_macs=0.5] \
      [--methods=magnitude_global,magnitude_layer] [--torch_python=.venv-torch/bin/python] \
      [--output=bench/RESULTS_structured.md]

In one run, on the same data (Fashion-MNIST resized to 32x32x1), seed, optimizer (Adam
1e-3, batch 128) and epoch budget (dense epochs + fine-tune epochs):
  * the dense ResNet-8 after `dense_epochs`;
  * tfprune `scope="structured"` (channel dependency graph, group-L2 magnitude) with
    `target_macs`, global and per-layer allocation: pruned once at the first fine-tune
    step, fine-tuned, `strip(shrink=True)`; MACs of the shrunk model;
  * a dense ResNet-8 with narrower widths of (at most) the same MACs, trained from
    scratch for `dense_epochs + finetune_epochs` (pruning has to beat this);
  * Torch-Pruning 1.6 (DepGraph, group-L2, per-layer and global) via
    bench/torch_pruning_runner.py in its own venv (bench/setup_torch_pruning.sh);
  * LiteRT latency (1 thread, median of single-sample invokes, XNNPACK on / off,
    float and int8) of the dense vs the shrunk model, and the MAC ratio.
`--fast`: 2000 training / 500 test images, 1 + 1 epochs (a smoke run; numbers are not
comparable to the full run).
"""
import json
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

_FAST = flags.DEFINE_bool("fast", False, "Tiny subset, 1 + 1 epochs (smoke run).")
_DENSE = flags.DEFINE_integer("dense_epochs", 4, "Dense training epochs.")
_FINETUNE = flags.DEFINE_integer("finetune_epochs", 4, "Fine-tune epochs after pruning.")
_MACS = flags.DEFINE_float("target_macs", 0.5, "MACs budget (fraction of dense).")
_TRAIN = flags.DEFINE_integer("train_samples", 60000,
                              "Training images (the first N of Fashion-MNIST's 60000).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed.")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Batch size.")
_LR = flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
_METHODS = flags.DEFINE_list("methods", ["magnitude_global", "magnitude_layer"],
                             "tfprune variants: magnitude_global, magnitude_layer, "
                             "admm_global, movement_global, l0_global / l0_layer (l0_gates).")
_TORCH = flags.DEFINE_string("torch_python", ".venv-torch/bin/python",
                             "Python of the Torch-Pruning venv ('' to skip).")
_TORCH_ALLOC = flags.DEFINE_list("torch_allocations", ["layer", "global"],
                                 "Torch-Pruning allocations to run.")
_BASELINES = flags.DEFINE_bool("baselines", True, "Also the same-MACs model from scratch "
                                "and Torch-Pruning (--nobaselines: tfprune variants only).")
_ITERS = flags.DEFINE_integer("iters", 200, "Invokes per latency measurement.")
_OUTPUT = flags.DEFINE_string("output", "bench/RESULTS_structured.md", "Markdown results.")


def _say(*args):
  print(*args, flush=True)


def _data(fast):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tfprune  # pylint: disable=g-import-not-at-top
  (x, y), (xt, yt) = tfprune.data.load("fashion_mnist")
  if fast:
    x, y, xt, yt = x[:2000], y[:2000], xt[:500], yt[:500]
  else:
    x, y = x[:_TRAIN.value], y[:_TRAIN.value]

  def resize(a):
    out = []
    for i in range(0, len(a), 5000):
      out.append(tf.image.resize(a[i:i + 5000], (32, 32)).numpy())
    return np.concatenate(out).astype("float32")

  return (resize(x), y.astype("int64")), (resize(xt), yt.astype("int64"))


def _resnet8(widths, seed):
  """zoo.resnet8's layout with stack widths `widths` (for the same-MACs baseline)."""
  import keras  # pylint: disable=g-import-not-at-top
  from tfprune import zoo  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(seed)
  if tuple(widths) == (16, 16, 32, 64):
    return zoo.resnet8((32, 32, 1), 10)
  layers = keras.layers
  reg = keras.regularizers.L2(1e-4)

  def conv(f, k, s, name):
    return layers.Conv2D(f, k, strides=s, padding="same", kernel_initializer="he_normal",
                         kernel_regularizer=reg, name=name)

  inputs = keras.Input((32, 32, 1))
  x = layers.Activation("relu")(layers.BatchNormalization()(conv(widths[0], 3, 1, "conv1")(inputs)))
  for stack, f in enumerate(widths[1:], start=1):
    stride = 1 if stack == 1 else 2
    y = layers.Activation("relu")(layers.BatchNormalization()(
        conv(f, 3, stride, f"s{stack}c1")(x)))
    y = layers.BatchNormalization()(conv(f, 3, 1, f"s{stack}c2")(y))
    if stack > 1 or f != widths[0]:
      x = conv(f, 1, stride, f"s{stack}sc")(x)
    x = layers.Activation("relu")(layers.Add()([x, y]))
  x = layers.Flatten()(layers.AveragePooling2D(int(x.shape[1]))(x))
  return keras.Model(inputs, layers.Dense(10, kernel_initializer="he_normal")(x))


def _macs(model):
  from tfprune.shrink import count_params_and_macs  # pylint: disable=g-import-not-at-top
  return count_params_and_macs(model)[1]


def _compile(model, method=None):
  import keras  # pylint: disable=g-import-not-at-top
  opt = keras.optimizers.Adam(_LR.value)
  if method is not None:
    opt = method.prepare_optimizer(opt)
  model.compile(optimizer=opt,
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])


def _accuracy(model, xt, yt):
  logits = model.predict(xt, batch_size=1000, verbose=0)
  return float((logits.argmax(-1) == yt).mean())


def _latency_us(model_bytes, xnnpack, iters):
  return litert_timing.latency_us(model_bytes, xnnpack, iters)


def _latencies(model, calib, iters):
  from tfprune import export  # pylint: disable=g-import-not-at-top
  out = {}
  for quantize in (None, "int8"):
    result = export.convert(model, quantize=quantize, representative_data=calib[:64])
    for xnn in (True, False):
      out[(quantize or "float", xnn)] = _latency_us(result.model_bytes, xnn, iters)
  return out


def _tfprune_variant(name, dense, data, epochs, target_macs):
  import tfprune  # pylint: disable=g-import-not-at-top
  (x, y), (xt, yt) = data
  method, allocation = name.split("_")
  kwargs = dict(scope="structured", target_macs=target_macs, allocation=allocation,
                target_sparsity=0.5)
  if method == "admm":
    kwargs.update(admm_epochs=max(1, epochs // 2), finetune_epochs=epochs - max(1, epochs // 2))
  elif method == "l0":  # l0_gates: one hard-concrete gate per channel group
    method = "l0_gates"
  start = time.time()
  pruned = tfprune.prune(dense, method, **kwargs)
  m = tfprune.get_method(pruned)
  if method == "magnitude":
    _compile(pruned, m)
    pruned.fit(x, y, batch_size=_BATCH.value, epochs=epochs, verbose=2,
               callbacks=[tfprune.PruningCallback()])
  else:
    import keras  # pylint: disable=g-import-not-at-top
    m.fit(pruned, x, y, epochs=epochs, batch_size=_BATCH.value,
          optimizer=keras.optimizers.Adam(_LR.value), verbose=2)
  masked_acc = _accuracy(pruned, xt, yt)
  shrunk = tfprune.strip(pruned, shrink=True)
  probe = xt[:16]
  err = float(np.abs(shrunk.predict(probe, verbose=0) - pruned.predict(probe, verbose=0)).max())
  return shrunk, {"variant": f"tfprune {method} structured ({allocation})",
                  "accuracy": _accuracy(shrunk, xt, yt), "masked_accuracy": masked_acc,
                  "mac_fraction": _macs(shrunk) / _macs(dense),
                  "params": int(shrunk.count_params()), "max_abs_err_vs_masked": err,
                  "seconds": time.time() - start}


def _same_macs_widths(target_macs):
  """The widest (w, w, 2w, 4w) ResNet-8 with at most `target_macs` of the dense MACs."""
  dense = _macs(_resnet8((16, 16, 32, 64), 0))
  best = None
  for w in range(16, 4, -1):
    widths = (w, w, 2 * w, 4 * w)
    if _macs(_resnet8(widths, 0)) <= target_macs * dense:
      best = widths
      break
  return best, dense


def _torch(data_path, allocation, dense_epochs, finetune_epochs, target_macs):
  python = _TORCH.value
  if not python or not os.path.exists(python):
    return {"variant": f"Torch-Pruning ({allocation})",
            "error": f"no Torch-Pruning venv at {python!r} (bench/setup_torch_pruning.sh)"}
  cmd = [python, "bench/torch_pruning_runner.py", f"--data={data_path}",
         f"--dense_epochs={dense_epochs}", f"--finetune_epochs={finetune_epochs}",
         f"--target_macs={target_macs}", f"--allocation={allocation}",
         f"--seed={_SEED.value}", f"--batch_size={_BATCH.value}",
         f"--learning_rate={_LR.value}"]
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
  if proc.returncode or not lines:
    return {"variant": f"Torch-Pruning ({allocation})",
            "error": f"runner failed (rc {proc.returncode}): {proc.stderr[-400:]}"}
  out = json.loads(lines[-1])
  out["variant"] = f"Torch-Pruning {out.get('version', '')} ({allocation})"
  return out


def _write(rows, latency, shrunk_models, dense, dense_macs, command, fast, dense_epochs,
           finetune_epochs, partial):
  """Writes the Markdown results (also after every row: a killed run leaves its rows)."""
  goal_dense = rows[0]["accuracy"]
  lines = ["# Structured pruning benchmark: ResNet-8 on Fashion-MNIST (32x32x1)", "",
           f"Command: `{command}`", "",
           ("**PARTIAL: the run was still going when this was written.**" if partial else ""), "",
           ("**--fast smoke run** (2000 train / 500 test images, 1 + 1 epochs): not "
            "comparable to the full run." if fast else
            f"Full run: {min(_TRAIN.value, 60000)} train / 10000 test images, "
            f"{dense_epochs} dense + "
            f"{finetune_epochs} fine-tune epochs, Adam {_LR.value}, batch {_BATCH.value}, "
            f"seed {_SEED.value}, target <= {_MACS.value:.0%} of the dense MACs."), "",
           "| variant | test accuracy | MACs (of dense) | params | exact (max abs err "
           "shrunk vs masked) | seconds |", "|---|---|---|---|---|---|"]
  for r in rows:
    if "error" in r:
      lines.append(f"| {r['variant']} | not run: {r['error'][:200]} | | | | |")
      continue
    err = r.get("max_abs_err_vs_masked")
    lines.append(f"| {r['variant']} | {100 * r['accuracy']:.2f}% | "
                 f"{100 * r['mac_fraction']:.1f}% | {r['params']:,} | "
                 f"{'' if err is None else f'{err:.1e}'} | {r.get('seconds', 0):.0f} |")
  lines += ["", f"Goal: <= {_MACS.value:.0%} MACs within 0.5 points of the dense model "
            f"({100 * goal_dense:.2f}%) and at least Torch-Pruning's best.", ""]
  for r in rows[1:]:
    if r.get("variant", "").startswith("tfprune") and "error" not in r:
      ok = r["mac_fraction"] <= _MACS.value + 1e-9 and r["accuracy"] >= goal_dense - 0.005
      lines.append(f"* {r['variant']}: {'met' if ok else 'MISSED'} "
                   f"({100 * r['accuracy']:.2f}% at {100 * r['mac_fraction']:.1f}% MACs)")
  torch_acc = [r["accuracy"] for r in rows if r.get("variant", "").startswith("Torch")
               and "accuracy" in r]
  ours = [r["accuracy"] for r in rows if r.get("variant", "").startswith("tfprune")]
  if torch_acc and ours:
    best = max(ours)
    lines.append(f"* vs Torch-Pruning best {100 * max(torch_acc):.2f}%: tfprune best "
                 f"{100 * best:.2f}% ({'met' if best >= max(torch_acc) else 'MISSED'})")
  if not latency:
    lines += ["", "LiteRT latency: not measured yet."]
  lines += ["", "LiteRT latency, 1 thread, median of single-sample invokes (us); "
            "speed-up = dense / shrunk:", "",
            "| model | MACs | float XNNPACK | float ref | int8 XNNPACK | int8 ref |",
            "|---|---|---|---|---|---|"]
  for name, lat in latency.items():
    model = dense if name == "dense" else shrunk_models[name]
    if "dense" not in latency:
      break
    cells = []
    for key in (("float", True), ("float", False), ("int8", True), ("int8", False)):
      speed = latency["dense"][key] / lat[key]
      cells.append(f"{lat[key]:.0f}" + ("" if name == "dense" else f" ({speed:.2f}x)"))
    lines.append(f"| {name} | {_macs(model):,} ({_macs(model) / dense_macs:.0%}) | "
                 + " | ".join(cells) + " |")
  from tfprune import _io  # pylint: disable=g-import-not-at-top
  text = "\n".join(lines) + "\n"
  _io.atomic_write(_OUTPUT.value, text)
  if not partial:
    _say(text)


def main(argv):
  del argv
  import keras  # pylint: disable=g-import-not-at-top
  fast = _FAST.value
  dense_epochs = 1 if fast else _DENSE.value
  finetune_epochs = 1 if fast else _FINETUNE.value
  iters = 30 if fast else _ITERS.value
  command = ("TF_CPP_MIN_LOG_LEVEL=3 PYTHONPATH=$PWD .venv/bin/python "
             "bench/structured_bench.py " + " ".join(sys.argv[1:]))
  _say("command:", command)
  data = _data(fast)
  (x, y), (xt, yt) = data
  _say(f"data: {x.shape} train, {xt.shape} test")
  rows = []

  start = time.time()
  dense = _resnet8((16, 16, 32, 64), _SEED.value)
  _compile(dense)
  dense.fit(x, y, batch_size=_BATCH.value, epochs=dense_epochs, verbose=2)
  dense_macs = _macs(dense)
  rows.append({"variant": f"dense ResNet-8 ({dense_epochs} epochs)",
               "accuracy": _accuracy(dense, xt, yt), "mac_fraction": 1.0,
               "params": int(dense.count_params()), "seconds": time.time() - start})
  _say(json.dumps(rows[-1]))
  _write(rows, {}, {}, dense, dense_macs, command, fast, dense_epochs, finetune_epochs,
         partial=True)
  dense_weights = dense.get_weights()

  shrunk_models = {}
  for name in _METHODS.value:
    dense.set_weights(dense_weights)
    shrunk, row = _tfprune_variant(name, dense, data, finetune_epochs, _MACS.value)
    shrunk_models[name] = shrunk
    rows.append(row)
    _say(json.dumps(rows[-1]))
    _write(rows, {}, shrunk_models, dense, dense_macs, command, fast, dense_epochs,
           finetune_epochs, partial=True)
  dense.set_weights(dense_weights)

  if _BASELINES.value:
    widths, _ = _same_macs_widths(_MACS.value)
    start = time.time()
    small = _resnet8(widths, _SEED.value)
    _compile(small)
    small.fit(x, y, batch_size=_BATCH.value, epochs=dense_epochs + finetune_epochs,
              verbose=2)
    rows.append({"variant": f"dense ResNet-8 widths {widths} from scratch "
                            f"({dense_epochs + finetune_epochs} epochs)",
                 "accuracy": _accuracy(small, xt, yt),
                 "mac_fraction": _macs(small) / dense_macs,
                 "params": int(small.count_params()), "seconds": time.time() - start})
    _say(json.dumps(rows[-1]))
    _write(rows, {}, shrunk_models, dense, dense_macs, command, fast, dense_epochs,
           finetune_epochs, partial=True)

    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, "fmnist32.npz")
      np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt)
      for allocation in _TORCH_ALLOC.value:
        rows.append(_torch(path, allocation, dense_epochs, finetune_epochs, _MACS.value))
        _say(json.dumps(rows[-1]))
        _write(rows, {}, shrunk_models, dense, dense_macs, command, fast, dense_epochs,
               finetune_epochs, partial=True)

  latency = {"dense": _latencies(dense, x, iters)}
  for name, model in shrunk_models.items():
    latency[name] = _latencies(model, x, iters)
  _say(json.dumps({k: {f"{q}/{'xnn' if xn else 'ref'}": v for (q, xn), v in d.items()}
                   for k, d in latency.items()}))

  _write(rows, latency, shrunk_models, dense, dense_macs, command, fast, dense_epochs, finetune_epochs, partial=False)
  del keras


if __name__ == "__main__":
  app.run(main)
