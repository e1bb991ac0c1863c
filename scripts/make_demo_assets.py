"""Regenerates the demo assets: TFLM model/digit data and the Android assets.

This is the *producer* side of the demos (it trains and exports); the demos themselves
(C++ and Kotlin) only read the files written here.

    .venv/bin/python scripts/make_demo_assets.py            # all assets
    .venv/bin/python scripts/make_demo_assets.py --epochs=1 # faster, less accurate
    .venv/bin/python scripts/make_demo_assets.py --only=kws # only the keyword-spotting model
    .venv/bin/python scripts/make_demo_assets.py --only=decode # only the DECODE DS-CNN
    .venv/bin/python scripts/make_demo_assets.py --only=web   # only tflite_demo/web/models

Models (MNIST, 28x28 digits flattened to 784 inputs, logits out, full int8):
  dense   LeNet-300-100-like (784-304-112-10), dense int8 (the baseline)
  sparse  the dense model pruned with tfprune (`magnitude`, 1x16 blocks along each Dense
          kernel's input axis; 90% of the blocks in the hidden layers, 50% in the output
          layer) and fine-tuned with the masks fixed; FULLY_CONNECTED weights stored
          block-sparse
  shrunk  the dense model with tfprune's structured L0 gates (`l0_gates`, 64 and 32
          hidden units kept), then `tfprune.strip(shrink=True)`: a smaller dense
          784-64-32-10 MLP

Keyword spotting (micro only), 49 MFCC frames x 10 coefficients x 1, 12 classes:
  kws     tfprune.zoo's DS-CNN (MLPerf Tiny KWS reference, 64 channels, 4 depthwise-
          separable blocks) pruned with `scope="structured"` magnitude (group L2, global
          allocation) to `--kws_target_macs` of its MACs, masked fine-tune, then
          `tfprune.strip(shrink=True)`: a smaller dense DS-CNN for TFLM's stock CONV_2D /
          DEPTHWISE_CONV_2D kernels. Speech Commands is not available offline, so it is
          trained on SYNTHETIC 12-class features (`synthetic_kws`: a temporal modulation
          per class plus noise): the predictions mean nothing about speech; the file's
          sizes, ops, arena and TFLM-vs-LiteRT agreement are those of the real
          architecture.
  decode  the same dense DS-CNN pruned unstructured (`magnitude`, `--decode_sparsity` of
          every conv / depthwise / FC kernel, per layer), masked fine-tune, stripped, and
          exported with `tfprune.export.convert(..., target="micro", quantize="int8",
          compress="pruning")`: each pruned weight stored as a bitmask plus its kept values
          and expanded by TFLM's DECODE operator right before its conv / FC. Its golden
          outputs are LiteRT's for the uncompressed int8 file (LiteRT has no DECODE); the
          exporter checked that TFLM's outputs for the compressed file are identical to
          the uncompressed file's.

Web (tflite_demo/web/models, LiteRT.js in a browser), float32 in/out (LiteRT.js has no
int8 tensors: `tfprune.export.litertjs.float_io` adds QUANTIZE / DEQUANTIZE around the int8
graph):
  mnist_dense / mnist_sparse  the Android assets above, wrapped (same int8 graph)
  cnn_shrunk  a small MNIST CNN (conv 16-32, dense 64) pruned with `scope="structured"`
          magnitude to `--web_target_macs` of its MACs, masked fine-tune,
          `tfprune.strip(shrink=True)`, exported full int8 with `tfprune.export.convert`
          (verified against Keras), wrapped; its Keras logits on the bundled digits go to
          models.json (tests/demo_web_test.py compares the browser's outputs with them).

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
flags.DEFINE_enum("only", "all", ["all", "mnist", "kws", "decode", "web"], "Which assets to "
                  "regenerate: everything, the MNIST models (micro + Android), web (the "
                  "LiteRT.js demo's models, from the Android assets and a shrunk CNN), the shrunk "
                  "keyword-spotting DS-CNN (micro kws_model_data / kws_data) or the pruned "
                  "DS-CNN with DECODE-compressed weights (micro decode_model_data / "
                  "decode_data).")
flags.DEFINE_float("kws_target_macs", 0.5, "MAC budget of the shrunk DS-CNN (fraction of "
                   "the dense model's MACs).")
flags.DEFINE_integer("kws_samples", 4, "Feature frames bundled in kws_data.cc (and "
                     "decode_data.cc).")
flags.DEFINE_string("web_dir", os.path.join(DEMO_DIR, "web", "models"), "Where the web "
                    "demo's models and models.json go.")
flags.DEFINE_float("web_target_macs", 0.4, "MAC budget of the web demo's shrunk CNN "
                   "(fraction of the dense CNN's MACs).")
flags.DEFINE_float("decode_sparsity", 0.8, "Fraction of the weights zeroed (unstructured "
                   "magnitude) in every kernel of the DECODE DS-CNN.")

# LeNet-300-100 with its hidden widths rounded up to multiples of 16 (304, 112): 1x16
# block-sparse FC weights need the input depth to be a multiple of 16 (tfprune-export
# keeps a layer dense otherwise).
HIDDEN = {"dense": (304, 112), "sparse": (304, 112), "shrunk": (64, 32)}
ASSET_NAMES = {"dense": "mnist_dense_int8.tflite", "sparse": "mnist_sparse_int8.tflite"}
# C arrays (and file stems) written with tfprune.export.c_array into micro/.
C_NAMES = {"sparse": "sparse_model_data", "shrunk": "shrunk_model_data",
           "kws": "kws_model_data", "decode": "decode_model_data"}
KWS_SHAPE = (49, 10, 1)  # MFCC frames x coefficients x 1 (MLPerf Tiny keyword spotting)
KWS_CLASSES = 12


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


def synthetic_kws(n, seed):
  """(x [n, 49, 10, 1] float32, y [n] int32): synthetic 12-class "keyword" features.

  Class c is a temporal modulation of (1.5 + c) cycles per 49 frames, random phase, on a
  fixed random per-class profile over the 10 coefficients, plus Gaussian noise: shift-
  invariant in time, so the DS-CNN's global average pool keeps what tells them apart.
  """
  profiles = np.random.default_rng(1234).uniform(0.5, 1.5, (KWS_CLASSES, KWS_SHAPE[1]))
  rng = np.random.default_rng(seed)
  y = rng.integers(0, KWS_CLASSES, n).astype(np.int32)
  t = np.arange(KWS_SHAPE[0])[None, :, None]
  phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
  wave = np.sin(2 * np.pi * (1.5 + y[:, None, None]) * t / KWS_SHAPE[0] + phase)
  x = wave * profiles[y][:, None, :] + 0.5 * rng.standard_normal((n,) + KWS_SHAPE[:2])
  return x[..., None].astype(np.float32), y


def train_dense_kws(seed):
  """Dense DS-CNN trained 4 epochs on synthetic features, BatchNorm statistics
  re-estimated.

  Returns:
    (dense model, (x_train, y_train), (x_test, y_test)).
  """
  from tfprune import layerwise  # pylint: disable=g-import-not-at-top
  x, y = synthetic_kws(1536, seed)
  xt, yt = synthetic_kws(256, seed + 1)
  keras.utils.set_random_seed(seed)
  dense = _compiled(tfprune.zoo.get("ds_cnn", input_shape=KWS_SHAPE, num_classes=KWS_CLASSES))
  dense.fit(x, y, epochs=4, batch_size=32, verbose=0)
  # A few hundred steps leave BatchNorm's moving statistics far from the data's (momentum
  # 0.99): re-estimate them, or inference-mode outputs are one class for every input.
  layerwise.recalibrate_batchnorm(dense, x, verbose=False)
  return dense, (x, y), (xt, yt)


def train_kws(seed, target_macs):
  """`train_dense_kws`, structured magnitude to `target_macs`, 2 masked fine-tune
  epochs, shrunk; BatchNorm statistics re-estimated after each training.

  Returns:
    (shrunk model, fraction of the MACs kept, (x_train, y_train), (x_test, y_test)).
  """
  from tfprune import layerwise  # pylint: disable=g-import-not-at-top
  from tfprune import structured  # pylint: disable=g-import-not-at-top
  dense, (x, y), (xt, yt) = train_dense_kws(seed)
  pruned = tfprune.prune(dense, "magnitude", scope="structured", target_macs=target_macs,
                         schedule=tfprune.ConstantSparsity(0.5, 0, frequency=1))
  tfprune.get_method(pruned).fit(pruned, x, y, epochs=2, batch_size=32, verbose=0)
  small = _compiled(tfprune.strip(pruned, shrink=True))
  layerwise.recalibrate_batchnorm(small, x, verbose=False)
  total = structured.shrink_report(dense, small)[-1]  # the TOTAL row
  fraction = total["macs_after"] / total["macs_before"]
  acc = small.evaluate(xt, yt, verbose=0)[1]
  logging.info("kws: dense %d params, shrunk %d params, %.1f%% of the MACs, synthetic test "
               "accuracy %.3f (dense %.3f)", dense.count_params(), small.count_params(),
               100 * fraction, acc, dense.evaluate(xt, yt, verbose=0)[1])
  return small, fraction, (x, y), (xt, yt)


def kws_io(model_bytes):
  """((input scale, zero point), (output scale, zero point)) of an int8 file."""
  from ai_edge_litert import interpreter as litert  # pylint: disable=g-import-not-at-top
  it = litert.Interpreter(model_content=model_bytes)
  return it.get_input_details()[0]["quantization"], it.get_output_details()[0]["quantization"]


def make_kws(micro_dir, seed, target_macs, n_samples):
  """Trains, shrinks and exports the DS-CNN; writes kws_model_data.* and kws_data.*."""
  model, fraction, (x, _), (xt, yt) = train_kws(seed, target_macs)
  data = export_int8(model, x[:256], sparse=False, target="micro")
  (in_scale, in_zero), _ = kws_io(data)
  q = np.clip(np.round(xt / in_scale) + in_zero, -128, 127).astype(np.int8)
  off = litert_logits(data, q[:200], xnnpack=False)
  micro_out = tflm_logits(data, q[:200])
  steps = int(np.abs(micro_out.astype(int) - off).max())
  if steps > 1 or not np.array_equal(micro_out.argmax(1), off.argmax(1)):
    raise RuntimeError(f"kws: TFLM differs from LiteRT by {steps} int8 steps")
  keras_pred = model.predict(xt[:200], verbose=0).argmax(1)
  logging.info("kws: %d bytes, %.1f%% of the MACs, TFLM vs LiteRT max %d steps on 200 "
               "inputs, LiteRT/Keras top-1 agreement %.3f", len(data), 100 * fraction, steps,
               float(np.mean(off.argmax(1) == keras_pred)))
  write_c_arrays(micro_dir, {C_NAMES["kws"]: data})
  golden = off[:n_samples]
  write_frames_c(micro_dir, "kws", q[:n_samples].reshape(n_samples, -1),
                 [int(v) for v in yt[:n_samples]], golden,
                 "LiteRT's int8 outputs (reference kernels) for the same file and inputs (golden).")


def train_decode_kws(seed, sparsity):
  """`train_dense_kws`, unstructured magnitude pruning of every kernel to `sparsity`
  (per layer), 2 masked fine-tune epochs, stripped (same shapes, exact zeros); BatchNorm
  statistics re-estimated.

  Returns:
    (pruned model, (x_train, y_train), (x_test, y_test)).
  """
  from tfprune import layerwise  # pylint: disable=g-import-not-at-top
  dense, (x, y), (xt, yt) = train_dense_kws(seed)
  pruned = tfprune.prune(dense, "magnitude", target_sparsity=sparsity,
                         schedule=tfprune.ConstantSparsity(sparsity, 0, frequency=1))
  tfprune.get_method(pruned).fit(pruned, x, y, epochs=2, batch_size=32, verbose=0)
  model = _compiled(tfprune.strip(pruned))
  layerwise.recalibrate_batchnorm(model, x, verbose=False)
  logging.info("decode: synthetic test accuracy %.3f pruned (dense %.3f)",
               model.evaluate(xt, yt, verbose=0)[1], dense.evaluate(xt, yt, verbose=0)[1])
  return model, (x, y), (xt, yt)


def make_decode(micro_dir, seed, sparsity, n_samples):
  """Trains and prunes the DS-CNN, exports it with DECODE-compressed weights; writes
  decode_model_data.* (with the alternate decompression memory it needs) and
  decode_data.*."""
  from tfprune import export  # pylint: disable=g-import-not-at-top
  model, (x, _), (xt, yt) = train_decode_kws(seed, sparsity)
  plain = export.convert(model, target="micro", quantize="int8", representative_data=x[:256],
                         compress="off")
  packed = export.convert(model, target="micro", quantize="int8",
                          representative_data=x[:256], compress="pruning")
  data = packed.model_bytes
  if (len(data) >= len(plain.model_bytes)
      or packed.memory.uncompressed_flash_bytes != len(plain.model_bytes)):
    raise RuntimeError(f"decode: the compressed file ({len(data)} B) is not a smaller form of "
                       f"the uncompressed one ({len(plain.model_bytes)} B)")
  alt_bytes = packed.memory.alt_decompression_bytes
  (in_scale, in_zero), _ = kws_io(plain.model_bytes)
  q = np.clip(np.round(xt / in_scale) + in_zero, -128, 127).astype(np.int8)
  # LiteRT has no DECODE kernel: the golden outputs are its outputs for the uncompressed
  # file, which the exporter verified TFLM reproduces exactly from the compressed one.
  off = litert_logits(plain.model_bytes, q[:200], xnnpack=False)
  micro_out = tflm_logits(data, q[:200])
  steps = int(np.abs(micro_out.astype(int) - off).max())
  if steps > 1 or not np.array_equal(micro_out.argmax(1), off.argmax(1)):
    raise RuntimeError(f"decode: TFLM (DECODE) differs from LiteRT by {steps} int8 steps")
  logging.info("decode: %d bytes (uncompressed int8 %d), %d bytes of alternate decompression "
               "memory, TFLM vs LiteRT max %d steps on 200 inputs\n%s", len(data),
               len(plain.model_bytes), alt_bytes, steps, packed.memory.table())
  # c_array writes decode_model_data_alt_decompression_bytes (the same figure) too.
  write_c_arrays(micro_dir, {C_NAMES["decode"]: data})
  write_frames_c(micro_dir, "decode", q[:n_samples].reshape(n_samples, -1),
                 [int(v) for v in yt[:n_samples]], off[:n_samples],
                 "LiteRT's int8 outputs (reference kernels) for the uncompressed int8 file of the "
                 "same model (golden; LiteRT has no DECODE).")


def write_frames_c(micro_dir, name, inputs, labels, expected, golden_comment):
  """Writes `<name>_data.{cc,h}`: int8 feature frames, labels and golden int8 outputs."""
  n, size = inputs.shape
  cap = name.capitalize()
  guard = f"TFPRUNE_TFLITE_DEMO_MICRO_{name.upper()}_DATA_H_"
  h = ["// Generated by scripts/make_demo_assets.py. Do not edit.",
       f"#ifndef {guard}", f"#define {guard}", "", "#include <stdint.h>", "",
       f"constexpr int kNum{cap}Samples = {n};",
       f"constexpr int k{cap}InputSize = {size};  // 49 frames x 10 MFCCs x 1",
       f"constexpr int k{cap}Classes = {expected.shape[1]};",
       "// SYNTHETIC feature frames (class template + noise; no speech data offline), already",
       "// quantized with the model's int8 input scale / zero point.",
       f"extern const int8_t g_{name}_inputs[kNum{cap}Samples][k{cap}InputSize];",
       f"extern const uint8_t g_{name}_labels[kNum{cap}Samples];",
       f"// {golden_comment}",
       f"extern const int8_t g_{name}_expected[kNum{cap}Samples][k{cap}Classes];", "",
       f"#endif  // {guard}", ""]
  def rows(a):
    return ",\n".join("  {" + ", ".join(str(int(v)) for v in r) + "}" for r in a)
  cc = ["// Generated by scripts/make_demo_assets.py. Do not edit.", f'#include "{name}_data.h"',
        "",
        f"const int8_t g_{name}_inputs[kNum{cap}Samples][k{cap}InputSize] = {{\n{rows(inputs)}}};",
        f"const uint8_t g_{name}_labels[kNum{cap}Samples] = {{" + ", ".join(map(str, labels)) +
        "};",
        f"const int8_t g_{name}_expected[kNum{cap}Samples][k{cap}Classes] = "
        f"{{\n{rows(expected)}}};", ""]
  with open(os.path.join(micro_dir, f"{name}_data.h"), "w") as f:
    f.write("\n".join(h))
  with open(os.path.join(micro_dir, f"{name}_data.cc"), "w") as f:
    f.write("\n".join(cc))


WEB_FILES = {"dense": "mnist_dense.tflite", "sparse": "mnist_sparse.tflite",
             "shrunk_cnn": "cnn_shrunk.tflite"}


def train_web_cnn(data, seed, target_macs):
  """A small MNIST CNN, structured magnitude pruning to `target_macs`, masked fine-tune,
  shrunk. Returns (dense CNN, shrunk CNN)."""
  from tfprune import structured  # pylint: disable=g-import-not-at-top
  (x, y), (xt, yt) = data
  x, xt = x[:20000].reshape(-1, 28, 28, 1), xt.reshape(-1, 28, 28, 1)
  y = y[:20000]
  keras.utils.set_random_seed(seed)
  dense = _compiled(keras.Sequential([
      keras.Input((28, 28, 1), name="image"),
      keras.layers.Conv2D(16, 3, activation="relu"), keras.layers.MaxPooling2D(),
      keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.MaxPooling2D(),
      keras.layers.Flatten(), keras.layers.Dense(64, activation="relu"),
      keras.layers.Dense(10, name="logits")]))
  dense.fit(x, y, epochs=1, batch_size=64, verbose=0)
  pruned = tfprune.prune(dense, "magnitude", scope="structured", target_macs=target_macs,
                         schedule=tfprune.ConstantSparsity(0.5, 0, frequency=1))
  tfprune.get_method(pruned).fit(pruned, x, y, epochs=1, batch_size=64, verbose=0)
  small = _compiled(tfprune.strip(pruned, shrink=True))
  total = structured.shrink_report(dense, small)[-1]
  logging.info("web cnn: %d -> %d params, %.1f%% of the MACs, test accuracy %.4f (dense "
               "%.4f)", dense.count_params(), small.count_params(),
               100 * total["macs_after"] / total["macs_before"],
               small.evaluate(xt, yt, verbose=0)[1], dense.evaluate(xt, yt, verbose=0)[1])
  return dense, small


def make_web(web_dir, android_assets, seed, target_macs, mlps=None):
  """Writes the web demo's models (float interface) and models.json.

  `mlps`: the Keras models the Android assets were exported from ({"dense", "sparse"}),
  when they were just trained: their logits on the digits go to models.json too (with
  --only=web only their recorded predictions do).
  """
  from tfprune import export  # pylint: disable=g-import-not-at-top
  from tfprune.export import litertjs  # pylint: disable=g-import-not-at-top
  with open(os.path.join(android_assets, "model_spec.json")) as f:
    spec = json.load(f)
  digits_rel = os.path.relpath(os.path.join(android_assets, spec["digits"]["file"]),
                               os.path.dirname(web_dir))
  pixels = np.fromfile(os.path.join(android_assets, spec["digits"]["file"]), np.uint8)
  images = pixels.reshape(-1, 28, 28, 1).astype(np.float32) / 255
  data = load_mnist()
  _, cnn = train_web_cnn(data, seed, target_macs)
  calibration = data[0][0][:256].reshape(-1, 28, 28, 1)
  result = export.convert(cnn, target="litert", quantize="int8",
                          representative_data=calibration)
  files = {"dense": open(os.path.join(android_assets, ASSET_NAMES["dense"]), "rb").read(),
           "sparse": open(os.path.join(android_assets, ASSET_NAMES["sparse"]), "rb").read(),
           "shrunk_cnn": result.flatbuffer}
  os.makedirs(web_dir, exist_ok=True)
  out = {"digits": {"file": digits_rel, "count": int(images.shape[0]),
                    "labels": spec["digits"]["labels"]}, "models": []}
  titles = {"dense": "dense MLP 784-304-112-10 (Android asset)",
            "sparse": "90% 1x16 block-sparse MLP (Android asset)",
            "shrunk_cnn": "structurally shrunk CNN (tfprune.strip(shrink=True))"}
  for name, int8_bytes in files.items():
    web_bytes = litertjs.float_io(int8_bytes)
    with open(os.path.join(web_dir, WEB_FILES[name]), "wb") as f:
      f.write(web_bytes)
    _, out_spec = io_spec(int8_bytes)
    entry = {"name": name, "title": titles[name], "file": f"models/{WEB_FILES[name]}",
             "int8_source": (os.path.relpath(os.path.join(android_assets, ASSET_NAMES[name]),
                                             os.path.dirname(web_dir))
                             if name in ASSET_NAMES else None),
             "input_shape": [1, 28, 28, 1] if name == "shrunk_cnn" else [1, 784],
             "output_scale": out_spec["scale"]}
    keras_model = cnn if name == "shrunk_cnn" else (mlps or {}).get(name)
    if keras_model is not None:
      logits = keras_model.predict(images.reshape([-1] + entry["input_shape"][1:]), verbose=0)
      entry["keras_outputs"] = [[round(float(v), 6) for v in row] for row in logits]
      entry["keras_predictions"] = [int(v) for v in logits.argmax(1)]
    else:
      entry["keras_predictions"] = spec["models"][name]["keras_predictions"]
    out["models"].append(entry)
    logging.info("web %s: %d bytes (int8 file %d bytes)", name, len(web_bytes),
                 len(int8_bytes))
  with open(os.path.join(web_dir, "models.json"), "w") as f:
    json.dump(out, f, indent=1)
    f.write("\n")


def main(argv):
  del argv
  if FLAGS.only in ("all", "kws"):
    make_kws(FLAGS.micro_dir, FLAGS.seed, FLAGS.kws_target_macs, FLAGS.kws_samples)
  if FLAGS.only in ("all", "decode"):
    make_decode(FLAGS.micro_dir, FLAGS.seed, FLAGS.decode_sparsity, FLAGS.kws_samples)
  if FLAGS.only == "web":
    make_web(FLAGS.web_dir, FLAGS.android_assets, FLAGS.seed, FLAGS.web_target_macs)
  if FLAGS.only in ("kws", "decode", "web"):
    return
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
  make_web(FLAGS.web_dir, assets, FLAGS.seed, FLAGS.web_target_macs, models)  # new assets


if __name__ == "__main__":
  app.run(main)
