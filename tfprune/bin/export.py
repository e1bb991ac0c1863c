"""tfprune-export: Keras .keras model -> verified sparse .tflite file.

Example:
  tfprune-export --model=lenet.keras --target=litert --quantize=int8 \
      --calibration_data=calib.npz --output=lenet_int8.tflite

Prints the per-tensor size table, what the exporter changed (notes) and the
verification result (LiteRT with XNNPACK on and off; TFLite Micro for
--target=micro). Every flag and path is checked before the model is loaded;
TensorFlow's and the converter's output is hidden unless --verbosity=1; any
failure is one ERROR paragraph on stderr and exit status 1, nothing written.

For a model with several inputs, --calibration_data holds one array per input,
named like the Keras input; integer arrays (token ids) keep their dtype. Dynamic
(None) input dimensions (a text model's sequence length) are fixed from
--calibration_data or --input_shapes=token_ids:128,padding_mask:128. Every output
of a multi-output model is verified. --target=micro --compress=auto|pruning|lut writes
TFLite Micro DECODE-compressed weights and prints the flash / arena / invoke-time report.

`tfprune-export inspect FILE.tflite [...]` is `tfprune-inspect FILE.tflite [...]`: each
constant tensor's encoding (dense, sparse, decode:pruning, decode:lut4, ...) and size.
"""
import logging
import os
import sys
import traceback
import zipfile

from absl import app
from absl import flags

from tfprune.bin import _cli
from tfprune.export import targets

_MODEL = flags.DEFINE_string("model", None, "Input Keras model (.keras), e.g. tfprune.strip output.")
_OUTPUT = flags.DEFINE_string("output", None, "Output .tflite path.")
_TARGET = flags.DEFINE_enum("target", "litert", list(targets.TARGETS),
                            "Runtime to target: " + ", ".join(
                                f"{t.name} ({t.runtime})" for t in targets.TARGETS.values()))
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
                             ".npz of model inputs (key 'x', else the first array; one array "
                             "per input, named like it, for several inputs) used for int8 "
                             "calibration and as verification inputs.")
_NSAMPLES = flags.DEFINE_integer("representative_samples", 200,
                                 "How many samples of --calibration_data to use (>= 1).")
_MICRO_SPARSE = flags.DEFINE_bool("micro_sparse_kernel", False,
                                  "--target=micro only: 1x16 sparse int8 FC weights for an "
                                  "application-registered sparse FC kernel.")
_COMPRESS = flags.DEFINE_enum(
    "compress", "off", list(targets.MICRO.compress_modes),
    "--target=micro only: TFLite Micro DECODE compression of conv/FC weights and biases: "
    "pruning = bitmask + kept values (sparse weights), lut = indices into <= 128 values per "
    "channel (clustered weights), auto = per tensor the smallest; never larger than off. "
    "The application registers TFLM's DECODE kernel.")
_INPUT_SHAPES = flags.DEFINE_string(
    "input_shapes", None,
    "Fixed shapes (batch left out) for inputs with dynamic (None) dimensions: "
    "'name:DxD,name2:D' (e.g. token_ids:128,padding_mask:128), or 'DxD' for a single "
    "input. Default: the shape of --calibration_data.")
_C_ARRAY = flags.DEFINE_string("c_array_name", None,
                               "Also write <name>.cc/.h next to --output (C identifier).")


class _LoadError(Exception):
  """--model could not be loaded (the message is the user-facing error)."""


def _fail(msg):
  print(f"ERROR: {msg}", file=sys.stderr)
  return 1


def _check_model_file(path):
  """Refuses anything that is not a Keras 3 `.keras` archive (a zip with config.json)."""
  if not path.endswith(".keras"):
    raise ValueError(f"--model={path}: must be a .keras file (Keras 3 model.save output).")
  if not os.path.isfile(path):
    raise ValueError(f"--model={path}: no such file.")
  try:
    with zipfile.ZipFile(path) as z:
      names = z.namelist()
      bad = z.testzip()
  except (zipfile.BadZipFile, OSError, EOFError) as e:
    raise ValueError(
        f"--model={path}: not a Keras .keras archive (it is not a valid zip file: {e}); it may "
        f"be truncated or not a model at all. Save the model with model.save('m.keras').") from e
  if "config.json" not in names or bad is not None:
    what = f"corrupt member {bad!r}" if bad else "no config.json"
    raise ValueError(f"--model={path}: not a complete Keras .keras archive ({what}). Save the "
                     f"model again with model.save('m.keras').")


def _check_output(path):
  """--output must end in .tflite and land in a writable directory."""
  if not path or not path.endswith(".tflite"):
    raise ValueError(f"--output={path}: must be a path ending in .tflite.")
  if os.path.isdir(path):
    raise ValueError(f"--output={path}: is a directory; give a file path ending in .tflite.")
  parent = os.path.dirname(os.path.abspath(path))
  existing = parent
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise ValueError(f"--output={path}: {existing} is a file, so {parent} cannot be created.")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise ValueError(f"--output={path}: directory {existing} is not writable.")


def _load_calibration(path):
  """`{name: array}` from an .npz, every float array checked finite (named by file and key)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise ValueError(f"--calibration_data={path}: no such file.")
  try:
    with np.load(path, allow_pickle=False) as data:
      arrays = {key: data[key] for key in data.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise ValueError(f"--calibration_data={path}: cannot read arrays from the .npz ({e}).") from e
  if not arrays:
    raise ValueError(f"--calibration_data={path}: the .npz holds no arrays.")
  for key, arr in arrays.items():
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
      bad = ~np.isfinite(arr)
      first = int(np.argwhere(bad.reshape(len(arr), -1).any(axis=1))[0][0]) if arr.ndim else 0
      raise ValueError(
          f"--calibration_data={path}: array '{key}' holds {int(bad.sum())} non-finite values "
          f"(NaN or Inf), the first in sample {first}; int8 calibration crashes the converter on "
          f"them. Drop or replace those samples.")
    if arr.ndim == 0 or len(arr) == 0:
      raise ValueError(f"--calibration_data={path}: array '{key}' has no samples.")
  return arrays


def _calibration_for(model, arrays, path, n):
  """The calibration arrays for `model`'s inputs: one array per input, first `n` samples."""
  names = [t.name for t in model.inputs]
  if len(names) == 1:
    key = "x" if "x" in arrays else next(iter(arrays))
    return arrays[key][:n]
  missing = [name for name in names if name not in arrays]
  if missing:
    raise ValueError(
        f"--calibration_data={path}: model '{model.name}' has {len(names)} inputs {names}; the "
        f".npz needs one array per input named like it (missing {missing}; it has "
        f"{sorted(arrays)}).")
  return {name: arrays[name][:n] for name in names}


def _validate_flags():
  """Checks every flag and path before anything slow; raises ValueError."""
  if not _MODEL.value:
    raise ValueError("--model is required: path to a .keras model.")
  _check_model_file(_MODEL.value)
  _check_output(_OUTPUT.value)
  if _NSAMPLES.value < 1:
    raise ValueError(f"--representative_samples={_NSAMPLES.value}: must be >= 1.")
  _cli.parse_input_shapes(_INPUT_SHAPES.value)
  quantize = None if _QUANTIZE.value == "none" else _QUANTIZE.value
  if quantize == "int8" and not _CALIB.value:
    raise ValueError("--quantize=int8 needs --calibration_data=inputs.npz (representative inputs).")
  targets.get(_TARGET.value).check(quantize, _SPARSE.value, _MICRO_SPARSE.value,
                                   _COMPRESS.value, cli=True)
  if _C_ARRAY.value is not None:
    from tfprune.export.c_array import is_c_identifier  # pylint: disable=g-import-not-at-top
    if not is_c_identifier(_C_ARRAY.value):
      raise ValueError(f"--c_array_name={_C_ARRAY.value}: must be a C identifier "
                       f"([A-Za-z_][A-Za-z0-9_]*), e.g. g_model.")
  return quantize


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  verbose = flags.FLAGS.verbosity >= 1
  try:
    quantize = _validate_flags()
    arrays = _load_calibration(_CALIB.value) if _CALIB.value else None
  except ValueError as e:
    return _fail(str(e))
  if not verbose:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from tfprune import _capture as capture  # pylint: disable=g-import-not-at-top
  from tfprune.export import errors  # pylint: disable=g-import-not-at-top
  from tfprune.export import tflite  # pylint: disable=g-import-not-at-top
  from tfprune.export import verify  # pylint: disable=g-import-not-at-top
  logging.getLogger("tfprune.export").setLevel(logging.ERROR)   # notes are printed below
  # TensorFlow logs device probing (CUDA) from a background thread at some point
  # after import: keep fds 1/2 captured from model loading to the end of export.
  failure, result = None, None
  with capture.captured_output(enabled=not verbose):
    try:
      import keras  # pylint: disable=g-import-not-at-top
      try:
        model = keras.models.load_model(_MODEL.value, compile=False)
      except Exception as e:  # pylint: disable=broad-except
        raise _LoadError(f"--model={_MODEL.value}: cannot load the Keras model "
                         f"({type(e).__name__}: {' '.join(str(e).split())[:400]}).") from e
      data = _calibration_for(model, arrays, _CALIB.value, _NSAMPLES.value) if arrays else None
      result = tflite.convert(
          model, target=_TARGET.value, quantize=quantize, representative_data=data,
          sparse=_SPARSE.value, micro_sparse_kernel=_MICRO_SPARSE.value,
          fc_quantization=_FC_QUANT.value, verbose=verbose,
          input_shapes=_cli.parse_input_shapes(_INPUT_SHAPES.value), compress=_COMPRESS.value)
    except Exception as e:  # pylint: disable=broad-except
      failure = e
      trace = traceback.format_exc()
  if isinstance(failure, _LoadError):
    return _fail(str(failure))
  if isinstance(failure, verify.VerificationError):
    return _fail(f"verification failed, nothing written:\n{failure}")
  if isinstance(failure, (errors.ExportError, ValueError, TypeError)):
    return _fail(f"{failure} Nothing written.")
  if failure is not None:
    if verbose:
      print(trace, file=sys.stderr)
    return _fail(f"export failed, nothing written ({type(failure).__name__}: "
                 f"{' '.join(str(failure).split())[:400]}); rerun with --verbosity=1 for the "
                 f"traceback and the converter log.")
  from tfprune.export import c_array  # pylint: disable=g-import-not-at-top  (the function)
  try:
    result.save(_OUTPUT.value)
  except OSError as e:
    return _fail(f"--output={_OUTPUT.value}: cannot write ({e}).")
  print(result.summary())
  if quantize:
    print(f"FULLY_CONNECTED weight scales: {result.fc_quantization.replace('_', '-')}")
  for r in result.verification:
    extra = "" if r.argmax_agreement is None else f", argmax agreement {r.argmax_agreement:.0%}"
    print(f"verified {r.runtime:11s}: max abs diff {r.max_abs_diff:.3g} <= {r.tolerance:.3g}{extra}")
    for o in r.outputs or []:
      print(f"  output {o.output}: max abs diff {o.max_abs_diff:.3g} <= {o.tolerance:.3g}")
  if result.memory is not None and result.memory.alt_decompression_bytes:
    print(f"verified tflm-decode: the written DECODE-compressed file gives exactly the int8 "
          f"outputs of the uncompressed file (checked above in LiteRT and TFLM), with decoded "
          f"tensors in the arena and in {result.memory.alt_decompression_bytes} bytes of "
          f"alternate decompression memory")
  print(f"wrote {_OUTPUT.value} ({len(result.model_bytes)} bytes"
        f"{', dense: the sparse file was not smaller' if result.dense_fallback else ''})")
  if _C_ARRAY.value:
    try:
      paths = c_array(_OUTPUT.value, _C_ARRAY.value)
    except (ValueError, OSError) as e:
      return _fail(f"--c_array_name: {e}")
    print("wrote " + " ".join(paths))
  return 0


def run():
  """Console entry point; TensorFlow's start-up lines are hidden unless --verbosity >= 1.

  Output before `main` (flag errors) is passed through unchanged; --help is answered first.
  `tfprune-export inspect ...` runs `tfprune-inspect ...` (its own flags) instead.
  """
  delegated = _cli.subcommand_argv(sys.argv, "inspect", "tfprune.bin.inspect")
  if delegated:
    sys.stdout.flush()
    os.execv(sys.executable, delegated)
  _cli.answer_help(__name__)
  from tfprune import _capture as capture  # pylint: disable=g-import-not-at-top
  redirect = capture.start_capture()

  def main_after_flags(argv):
    early = redirect.stop()
    if flags.FLAGS.verbosity >= 1:
      sys.stdout.write(early.stdout)
      sys.stderr.write(early.stderr)
    return main(argv)

  try:
    app.run(main_after_flags)
  finally:
    if redirect._active:  # pylint: disable=protected-access  (exited before main)
      early = redirect.stop()
      sys.stdout.write(early.stdout)
      sys.stderr.write(early.stderr)
      sys.stdout.flush()
      sys.stderr.flush()


if __name__ == "__main__":
  run()
