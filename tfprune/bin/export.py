"""tfprune-export: Keras .keras model -> verified sparse .tflite file.

Example:
  tfprune-export --model=lenet.keras --target=litert --quantize=int8 \
      --calibration_data=calib.npz --output=lenet_int8.tflite

Prints the per-tensor size table and the verification result (LiteRT with XNNPACK
on and off; TFLite Micro for --target=micro).
"""
import os
import sys

from absl import app
from absl import flags

from tfprune.bin import _cli

_MODEL = flags.DEFINE_string("model", None, "Input Keras model (.keras), e.g. tfprune.strip output.")
_OUTPUT = flags.DEFINE_string("output", None, "Output .tflite path.")
_TARGET = flags.DEFINE_enum("target", "litert", ["litert", "micro"], "Runtime to target.")
_QUANTIZE = flags.DEFINE_enum("quantize", "none", ["none", "dynamic", "int8"],
                              "Quantisation: none (float), dynamic (dynamic-range), int8 (full).")
_SPARSE = flags.DEFINE_enum(
    "sparse", "auto", ["auto", "csr", "block", "off"],
    "Sparse encoding: auto = smallest file; block = 1x4 (float) / 1x16 (int8) blocks read "
    "directly by FULLY_CONNECTED (speed), the rest as auto; csr; off = dense.")
_FC_QUANT = flags.DEFINE_enum(
    "fc_quantization", "auto", ["auto", "per_channel", "per_tensor"],
    "Scales of quantized FULLY_CONNECTED weights; auto = per tensor for sparse LiteRT "
    "exports when that costs <= 1% relative RMS rounding error on every Dense kernel.")
_CALIB = flags.DEFINE_string("calibration_data", None,
                             ".npz of model inputs (key 'x', else the first array) used for int8 "
                             "calibration and as verification inputs.")
_NSAMPLES = flags.DEFINE_integer("representative_samples", 200,
                                 "How many samples of --calibration_data to use (>= 1).")
_MICRO_SPARSE = flags.DEFINE_bool("micro_sparse_kernel", False,
                                  "--target=micro only: 1x16 sparse int8 FC weights for an "
                                  "application-registered sparse FC kernel.")
_C_ARRAY = flags.DEFINE_string("c_array_name", None,
                               "Also write <name>.cc/.h next to --output (C identifier).")


def _fail(msg):
  print(f"ERROR: {msg}", file=sys.stderr)
  return 1


def _load_calibration(path, n):
  import numpy as np  # pylint: disable=g-import-not-at-top
  try:
    with np.load(path) as data:
      if not data.files:
        raise ValueError("it holds no arrays")
      key = "x" if "x" in data.files else data.files[0]
      return data[key][:n].astype("float32")
  except (OSError, ValueError) as e:
    raise ValueError(f"--calibration_data={path}: cannot read an array from the .npz ({e}).") from e


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not _MODEL.value:
    return _fail("--model is required: path to a .keras model.")
  if not _MODEL.value.endswith(".keras") or not os.path.isfile(_MODEL.value):
    return _fail(f"--model={_MODEL.value}: must be an existing .keras file.")
  if not _OUTPUT.value or not _OUTPUT.value.endswith(".tflite"):
    return _fail(f"--output={_OUTPUT.value}: must be a path ending in .tflite.")
  if _NSAMPLES.value < 1:
    return _fail(f"--representative_samples={_NSAMPLES.value}: must be >= 1.")
  quantize = None if _QUANTIZE.value == "none" else _QUANTIZE.value
  if quantize == "int8" and not _CALIB.value:
    return _fail("--quantize=int8 needs --calibration_data=inputs.npz (representative inputs).")
  if _MICRO_SPARSE.value and _TARGET.value != "micro":
    return _fail("--micro_sparse_kernel is only valid with --target=micro.")
  if _TARGET.value == "micro" and quantize != "int8":
    return _fail(f"--target=micro needs --quantize=int8 (got --quantize={_QUANTIZE.value}).")
  try:
    data = _load_calibration(_CALIB.value, _NSAMPLES.value) if _CALIB.value else None
  except ValueError as e:
    return _fail(str(e))

  import keras  # pylint: disable=g-import-not-at-top
  from tfprune.export import c_array  # pylint: disable=g-import-not-at-top  (the function)
  from tfprune.export import tflite  # pylint: disable=g-import-not-at-top
  from tfprune.export import verify  # pylint: disable=g-import-not-at-top
  try:
    model = keras.models.load_model(_MODEL.value, compile=False)
  except Exception as e:  # pylint: disable=broad-except
    return _fail(f"--model={_MODEL.value}: cannot load Keras model: {e}")
  try:
    result = tflite.save_tflite(
        model, _OUTPUT.value, target=_TARGET.value, quantize=quantize,
        representative_data=data, sparse=_SPARSE.value,
        micro_sparse_kernel=_MICRO_SPARSE.value, fc_quantization=_FC_QUANT.value)
  except verify.VerificationError as e:
    return _fail(f"verification failed, nothing written:\n{e}")
  except (ValueError, TypeError) as e:
    return _fail(str(e))
  print(result.size_table())
  if quantize:
    print(f"FULLY_CONNECTED weight scales: {result.fc_quantization.replace('_', '-')}")
  for r in result.verification:
    extra = "" if r.argmax_agreement is None else f", argmax agreement {r.argmax_agreement:.0%}"
    print(f"verified {r.runtime:8s}: max abs diff {r.max_abs_diff:.3g} <= {r.tolerance:.3g}{extra}")
  print(f"wrote {_OUTPUT.value} ({len(result.model_bytes)} bytes)")
  if _C_ARRAY.value:
    try:
      paths = c_array(_OUTPUT.value, _C_ARRAY.value)
    except ValueError as e:
      return _fail(f"--c_array_name: {e}")
    print("wrote " + " ".join(paths))
  return 0


def run():
  _cli.run(main, __name__)


if __name__ == "__main__":
  run()
