"""Regenerates the demo assets: TFLM model/digit data and the Android assets.

This is the *producer* side of the demos (it trains and exports); the demos themselves
(C++ and Kotlin) only read the files written here.

    .venv/bin/python scripts/make_demo_assets.py            # all assets
    .venv/bin/python scripts/make_demo_assets.py --epochs=1 # faster, less accurate

Models (MNIST, 28x28 digits flattened to 784 inputs, logits out, full int8):
  dense   LeNet-300-100-like (784-304-112-10), dense int8 (the baseline)
  sparse  the dense model pruned with tfprune (`magnitude`, 1x16 blocks along each Dense
          kernel's input axis; 90% of the blocks in the hidden layers, 50% in the output
          layer) and fine-tuned with the masks fixed; FULLY_CONNECTED weights stored
          block-sparse
  shrunk  the dense model with tfprune's structured L0 gates (`l0_gates`, 64 and 32
          hidden units kept), then `tfprune.strip(shrink=True)`: a smaller dense
          784-64-32-10 MLP

Export: the `tfprune-export` binary (`--quantize=int8`; micro models
`--target=micro [--micro_sparse_kernel]`, Android models `--target=litert
--sparse=block|off`), which verifies every file against the Keras model in LiteRT
(XNNPACK on and off) and TFLM before writing it. The files are then checked again here
(LiteRT vs Keras on 1,000 test digits; TFLM vs LiteRT). With the same seed the outputs
are byte-identical from run to run (checked on the shared 2-core machine).
"""
import json
import os
import subprocess
import sys
import tempfile

from absl import app
from absl import flags
from absl import logging
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # pylint: disable=g-import-not-at-top

import tfprune  # pylint: disable=g-import-not-at-top

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_DIR = os.path.join(REPO, "tflite_demo")
sys.path.insert(0, os.path.join(DEMO_DIR, "tools"))
import tflite_fc  # pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS
flags.DEFINE_string("micro_dir", os.path.join(DEMO_DIR, "micro"), "Where *_model_data.{cc,h} and digits_data.{cc,h} go.")
flags.DEFINE_string("android_assets", os.path.join(DEMO_DIR, "android", "app", "src", "main",
                                                   "assets"), "Android assets directory.")
flags.DEFINE_integer("epochs", 3, "Training epochs (dense and shrunk); fine-tuning uses 2.")
flags.DEFINE_float("block_sparsity", 0.9, "Fraction of the 1x16 blocks zeroed in each "
                   "hidden Dense kernel.")
flags.DEFINE_float("logits_sparsity", 0.5, "Fraction of the 1x16 blocks zeroed in the "
                   "small 10-way output layer.")
flags.DEFINE_integer("seed", 0, "Random seed.")

# LeNet-300-100 with its hidden widths rounded up to multiples of 16 (304, 112): 1x16
# block-sparse FC weights need the input depth to be a multiple of 16 (tfprune-export
# keeps a layer dense otherwise).
HIDDEN = {"dense": (304, 112), "sparse": (304, 112), "shrunk": (64, 32)}
ASSET_NAMES = {"dense": "mnist_dense_int8.tflite", "sparse": "mnist_sparse_int8.tflite"}
# C arrays (and file stems) written with tfprune.export.c_array into micro/.
C_NAMES = {"sparse": "sparse_model_data", "shrunk": "shrunk_model_data"}


def load_mnist():
  """(x_train, y_train), (x_test, y_test): float32 [n, 784] in [0, 1], int labels."""
  (x, y), (xt, yt) = tfprune.data.load("mnist")
  return (x.reshape(-1, 784), y.astype(np.int32)), (xt.reshape(-1, 784), yt.astype(np.int32))


def mlp(hidden):
  layers = [keras.Input((784,), name="image")]
  layers += [keras.layers.Dense(h, activation="relu") for h in hidden]
  layers += [keras.layers.Dense(10, name="logits")]
  model = keras.Sequential(layers)
  model.compile(keras.optimizers.Adam(1e-3),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
  return model


def _compiled(model):
  model.compile(keras.optimizers.Adam(1e-3),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
  return model


def train_models(data, epochs, sparsity, seed):
  """Dense baseline, then the two pruned models, all with tfprune.

  sparse: 1x16 blocks along each Dense kernel's input axis (`magnitude`, scope `block`,
    per-layer targets), 2 epochs of masked fine-tuning, stripped.
  shrunk: structured L0 gates on the hidden units (`l0_gates`, 64 and 32 kept), then
    `strip(shrink=True)`: a physically smaller dense 784-64-32-10 MLP.
  """
  (x, y), (xt, yt) = data
  keras.utils.set_random_seed(seed)
  dense = mlp(HIDDEN["dense"])
  dense.fit(x, y, epochs=epochs, batch_size=128, verbose=0)
  models = {"dense": dense}
  pruned = tfprune.prune(dense, "magnitude", target_sparsity=sparsity, scope="block",
                         block_size=16, layer_sparsity={"logits": FLAGS.logits_sparsity},
                         schedule=tfprune.ConstantSparsity(sparsity, 0))
  tfprune.get_method(pruned).fit(pruned, x, y, epochs=2, batch_size=128, verbose=0)
  models["sparse"] = _compiled(tfprune.strip(pruned))
  hidden = [l.name for l in dense.layers if l.name != "logits"]
  gated = tfprune.prune(dense, "l0_gates",
                        target_units=dict(zip(hidden, HIDDEN["shrunk"])))
  tfprune.get_method(gated).fit(gated, x, y, epochs=epochs, batch_size=128, verbose=0)
  models["shrunk"] = _compiled(tfprune.strip(gated, shrink=True))
  for name, m in models.items():
    logging.info("%s: keras test accuracy %.4f", name, m.evaluate(xt, yt, verbose=0)[1])
  return models


def run_tfprune_export(model, calibration, target, sparse):
  """Exports with the `tfprune-export` binary; returns the .tflite bytes."""
  exe = os.path.join(os.path.dirname(sys.executable), "tfprune-export")
  with tempfile.TemporaryDirectory() as tmp:
    keras_path = os.path.join(tmp, "model.keras")
    model.save(keras_path)
    np.savez(os.path.join(tmp, "calibration.npz"), x=calibration)
    cmd = [exe if os.path.exists(exe) else "tfprune-export", f"--model={keras_path}",
           f"--output={tmp}/model.tflite", f"--target={target}", "--quantize=int8",
           f"--calibration_data={tmp}/calibration.npz",
           f"--representative_samples={len(calibration)}"]
    if target == "micro":
      cmd += ["--micro_sparse_kernel"] if sparse else ["--sparse=off"]
    else:
      cmd += ["--sparse=block" if sparse else "--sparse=off"]
    logging.info("%s", " ".join(cmd))
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode:
      raise RuntimeError(f"tfprune-export failed:\n{result.stdout}\n{result.stderr}")
    logging.info("%s", result.stdout[result.stdout.find("tensor "):])
    with open(os.path.join(tmp, "model.tflite"), "rb") as f:
      return f.read()


def export_int8(model, calibration, sparse, target="micro"):
  """Full-int8 .tflite bytes made by `tfprune-export`."""
  return run_tfprune_export(model, calibration, target, sparse)


def quantize_input(layers, images):
  """Float [n, 784] images in [0, 1] -> int8 with the first layer's input params."""
  l0 = layers[0]
  q = np.round(images / l0["input_scale"]) + l0["input_zero_point"]
  return np.clip(q, -128, 127).astype(np.int8)


def litert_logits(model_bytes, x_int8, xnnpack):
  from ai_edge_litert import interpreter as litert  # pylint: disable=g-import-not-at-top
  kind = (litert.OpResolverType.AUTO if xnnpack else
          litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
  it = litert.Interpreter(model_content=model_bytes, experimental_op_resolver_type=kind)
  it.allocate_tensors()
  i, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
  out = []
  for row in x_int8:
    it.set_tensor(i, row[None])
    it.invoke()
    out.append(it.get_tensor(o)[0].copy())
  return np.stack(out)


def tflm_logits(model_bytes, x_int8):
  from tflite_micro.python.tflite_micro import runtime  # pylint: disable=g-import-not-at-top
  it = runtime.Interpreter.from_bytes(model_bytes)
  out = []
  for row in x_int8:
    it.set_input(row[None], 0)
    it.invoke()
    out.append(it.get_output(0)[0].copy())
  return np.stack(out)


def verify(name, model_bytes, keras_model, x_test, micro):
  """LiteRT (XNNPACK on/off) vs Keras on 1,000 digits; TFLM too for dense micro models."""
  layers = tflite_fc.fc_layers(model_bytes)
  x = x_test[:1000]
  q = quantize_input(layers, x)
  ref = keras_model.predict(x, verbose=0).argmax(1)
  off = litert_logits(model_bytes, q, xnnpack=False)
  on = litert_logits(model_bytes, q, xnnpack=True)
  agree = float(np.mean(off.argmax(1) == ref))
  if agree < 0.97 or np.mean(on.argmax(1) == off.argmax(1)) < 0.99:
    raise RuntimeError(f"{name}: LiteRT disagrees with Keras ({agree:.3f})")
  if micro and not any(l["sparse"] for l in layers):
    # TFLM runs the reference int8 kernels; LiteRT's optimized dense int8 FC may differ by
    # 1 LSB in a few logits. Predictions must agree.
    micro_logits = tflm_logits(model_bytes, q)
    if (not np.array_equal(micro_logits.argmax(1), off.argmax(1))
        or np.abs(micro_logits.astype(int) - off).max() > 1):
      raise RuntimeError(f"{name}: TFLM predictions differ from LiteRT")
  logging.info("%s: %d bytes, LiteRT/Keras top-1 agreement %.3f", name, len(model_bytes), agree)
  return layers


def write_c_arrays(micro_dir, models):
  """Writes <name>.cc/.h per model with `tfprune.export.c_array` (hello_world style)."""
  from tfprune.export import c_array  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as tmp:
    for name, data in models.items():
      path = os.path.join(tmp, f"{name}.tflite")
      with open(path, "wb") as f:
        f.write(data)
      c_array(path, name, output_dir=micro_dir)


def pick_digits(x_test, y_test):
  """The first test image of each class 0..9 (indices into the test set)."""
  return [int(np.flatnonzero(y_test == c)[0]) for c in range(10)]


def write_digits_c(path_cc, path_h, pixels, labels, expected):
  n = len(labels)
  h = ["// Generated by scripts/make_demo_assets.py. Do not edit.",
       "#ifndef TFPRUNE_TFLITE_DEMO_MICRO_DIGITS_DATA_H_",
       "#define TFPRUNE_TFLITE_DEMO_MICRO_DIGITS_DATA_H_", "", "#include <stdint.h>", "",
       f"constexpr int kNumDigits = {n};", "constexpr int kDigitPixels = 784;",
       "// MNIST test digits, 28x28 uint8 row-major (0 = background).",
       "extern const uint8_t g_digit_pixels[kNumDigits][kDigitPixels];",
       "extern const uint8_t g_digit_labels[kNumDigits];",
       "// Predictions of the same .tflite files in LiteRT (golden outputs).",
       "extern const uint8_t g_expected_sparse[kNumDigits];",
       "extern const uint8_t g_expected_shrunk[kNumDigits];", "",
       "#endif  // TFPRUNE_TFLITE_DEMO_MICRO_DIGITS_DATA_H_", ""]
  rows = ",\n".join("  {" + ", ".join(str(int(v)) for v in p) + "}" for p in pixels)
  cc = ["// Generated by scripts/make_demo_assets.py. Do not edit.",
        '#include "digits_data.h"', "",
        f"const uint8_t g_digit_pixels[kNumDigits][kDigitPixels] = {{\n{rows}}};",
        "const uint8_t g_digit_labels[kNumDigits] = {" + ", ".join(map(str, labels)) + "};",
        "const uint8_t g_expected_sparse[kNumDigits] = {" +
        ", ".join(map(str, expected["sparse"])) + "};",
        "const uint8_t g_expected_shrunk[kNumDigits] = {" +
        ", ".join(map(str, expected["shrunk"])) + "};", ""]
  with open(path_h, "w") as f:
    f.write("\n".join(h))
  with open(path_cc, "w") as f:
    f.write("\n".join(cc))


def io_spec(model_bytes):
  from ai_edge_litert import interpreter as litert  # pylint: disable=g-import-not-at-top
  it = litert.Interpreter(model_content=model_bytes)
  def one(d):
    return {"name": d["name"], "shape": [int(v) for v in d["shape"]],
            "dtype": np.dtype(d["dtype"]).name, "scale": float(d["quantization"][0]),
            "zero_point": int(d["quantization"][1])}
  return one(it.get_input_details()[0]), one(it.get_output_details()[0])


def main(argv):
  del argv
  data = load_mnist()
  (x, _), (xt, yt) = data
  models = train_models(data, FLAGS.epochs, FLAGS.block_sparsity, FLAGS.seed)
  calibration = x[:500]
  tflite, android = {}, {}
  for name in ("sparse", "shrunk"):
    tflite[name] = export_int8(models[name], calibration, name == "sparse", "micro")
    verify(name, tflite[name], models[name], xt, micro=True)
  for name in ("sparse", "dense"):
    android[name] = export_int8(models[name], calibration, name == "sparse", "litert")
    verify(f"android {name}", android[name], models[name], xt, micro=False)

  idx = pick_digits(xt, yt)
  pixels = np.round(xt[idx] * 255).astype(np.uint8)
  labels = [int(v) for v in yt[idx]]
  def predictions(model_bytes):
    q = quantize_input(tflite_fc.fc_layers(model_bytes), pixels.astype(np.float32) / 255)
    return [int(v) for v in litert_logits(model_bytes, q, False).argmax(1)]
  expected = {name: predictions(b) for name, b in tflite.items()}
  keras_pred = {name: [int(v) for v in models[name].predict(
      pixels.astype(np.float32) / 255, verbose=0).argmax(1)] for name in models}

  micro = FLAGS.micro_dir
  write_c_arrays(micro, {C_NAMES["sparse"]: tflite["sparse"],
                         C_NAMES["shrunk"]: tflite["shrunk"]})
  write_digits_c(os.path.join(micro, "digits_data.cc"), os.path.join(micro, "digits_data.h"),
                 pixels.reshape(len(idx), 784), labels, expected)

  assets = FLAGS.android_assets
  os.makedirs(assets, exist_ok=True)
  spec = {"models": {}, "digits": {
      "file": "digits.bin", "count": len(idx), "height": 28, "width": 28, "dtype": "uint8",
      "labels": labels, "mnist_test_indices": idx}}
  for name in ("sparse", "dense"):
    with open(os.path.join(assets, ASSET_NAMES[name]), "wb") as f:
      f.write(android[name])
    inp, out = io_spec(android[name])
    spec["models"][name] = {"file": ASSET_NAMES[name], "input": inp, "output": out,
                            "keras_predictions": keras_pred[name],
                            "litert_predictions": predictions(android[name])}
  with open(os.path.join(assets, "digits.bin"), "wb") as f:
    f.write(pixels.tobytes())
  with open(os.path.join(assets, "model_spec.json"), "w") as f:
    json.dump(spec, f, indent=2)
    f.write("\n")
  logging.info("wrote %s and %s", micro, assets)


if __name__ == "__main__":
  app.run(main)
