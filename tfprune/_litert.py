"""TFLite conversion and LiteRT timing, shared by the exporter and the latency model.

Neutral ground between `tfprune/export/` (which never imports training code) and
`tfprune/structured/latency.py` (training code, which never imports the exporter):

  * `convert`: a Keras model to TFLite bytes, float or full-integer int8 (int8 inputs
    and outputs), with the converter's C++ output captured; through a SavedModel in a
    temporary directory (the exporter: any model, the directory always removed) or
    `from_keras_model` (about 2.5x faster: the latency model's one-layer models);
  * `interpreter`: an allocated `ai_edge_litert` interpreter (XNNPACK on or off);
  * `time_us`: the median single-thread invoke time of a file, the latency model's
    protocol (docs/structured.md section 5).
"""
import shutil
import tempfile
import time

import numpy as np

from tfprune import _capture

TEMP_PREFIX = "tfprune-export-"


class ConverterFailed(Exception):
  """The TFLite converter raised; `cause` is its exception, `log` the `Captured` output."""

  def __init__(self, cause, log):
    super().__init__(f"{type(cause).__name__}: {cause}")
    self.cause, self.log = cause, log


def convert(model, quantize=None, samples=None, sparsity=False, fc_per_tensor=False,
            saved_model=True, input_signature=None, verbose=False, keep_float=None):
  """TFLite bytes of `model`.

  Args:
    model: a built Keras model.
    quantize: None (float), "float16", "dynamic" or "int8" (full integer, int8 inputs
      and outputs); any other non-None value sets `Optimize.DEFAULT` only.
    samples: for "int8", the calibration data: one array `[n, ...]` per model input
      (in `model.inputs` order); each of the n samples is one calibration step.
    sparsity: also `Optimize.EXPERIMENTAL_SPARSITY` (sparse tensor encodings).
    fc_per_tensor: per-tensor instead of per-channel scales for Dense layers.
    saved_model: convert through a SavedModel of the inference call (robust, what the
      exporter ships; `_export_inference`), else `TFLiteConverter.from_keras_model`
      (faster).
    input_signature: with `saved_model`, the export's input signature (fixed shapes).
    verbose: let the converter's output through instead of capturing it.
    keep_float: with "int8", a function `(calibrated, quantize)` returning the file:
      `calibrated` is the converter's calibrated model, `quantize(nodes)` quantizes it
      to int8 leaving the ops named by their output tensors `nodes` float (QUANTIZE /
      DEQUANTIZE around them).

  Returns:
    (bytes, `_capture.Captured` log).

  Raises:
    ConverterFailed: the converter (or the SavedModel export) raised.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tmp = tempfile.mkdtemp(prefix=TEMP_PREFIX) if saved_model else None
  failure = None
  try:
    with _capture.captured_output(enabled=not verbose) as log:
      try:
        if saved_model:
          _export_inference(model, tmp, input_signature, verbose)
          converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        else:
          converter = tf.lite.TFLiteConverter.from_keras_model(model)
        # Per-channel scales cost 12 bytes per output channel for the weights and
        # again for the bias: a large share of a sparse file.
        converter._experimental_disable_per_channel_quantization_for_dense_layers = fc_per_tensor  # pylint: disable=protected-access
        opts = []
        if sparsity and keep_float is None:  # (calibrate-only drops the graph with it)
          opts.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
        if quantize:
          opts.append(tf.lite.Optimize.DEFAULT)
        converter.optimizations = opts
        if quantize == "int8":
          names = [t.name for t in model.inputs]

          def representative_dataset():
            for j in range(len(samples[0])):
              batch = [arr[j:j + 1] for arr in samples]
              yield dict(zip(names, batch)) if saved_model else batch

          converter.representative_dataset = representative_dataset
          converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
          converter.inference_input_type = tf.int8
          converter.inference_output_type = tf.int8
        if quantize == "int8" and keep_float is not None:
          from tensorflow.lite.python import convert as tflite_convert  # pylint: disable=g-import-not-at-top
          converter._experimental_calibrate_only = True  # pylint: disable=protected-access
          calibrated = converter.convert()
          data = bytes(keep_float(calibrated, lambda nodes: tflite_convert.mlir_quantize(
              calibrated, input_data_type=tf.int8, output_data_type=tf.int8,
              denylisted_nodes=list(nodes),
              disable_per_channel_for_dense_layers=fc_per_tensor)))
        else:
          data = bytes(converter.convert())
      except Exception as e:  # pylint: disable=broad-except
        failure = e
  finally:
    if tmp is not None:
      shutil.rmtree(tmp, ignore_errors=True)
  if failure is not None:
    raise ConverterFailed(failure, log) from failure
  return data, log


def _export_inference(model, path, input_signature, verbose):
  """Writes a SavedModel of `model(inputs, training=False)` to `path`.

  Not `model.export`: on keras_hub's SegFormer and DeepLabV3 backbones its SavedModel
  computes something else than the model's inference call (max abs diff 1.1 on outputs
  of peak 4, measured with Keras 3.15); this endpoint is what TF's own
  `from_keras_model` exports for Keras 3 models.
  """
  import functools  # pylint: disable=g-import-not-at-top
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if input_signature is None:
    specs = [tf.TensorSpec(t.shape, keras.backend.standardize_dtype(t.dtype), name=t.name)
             for t in model.inputs]
    input_signature = [specs[0] if len(specs) == 1 else specs]
  archive = keras.export.ExportArchive()
  archive.track(model)
  archive.add_endpoint("serve", functools.partial(model.__call__, training=False),
                       input_signature)
  archive.write_out(path, verbose=verbose)


def interpreter(model_bytes, xnnpack=True, num_threads=1, preserve_all_tensors=False):
  """Creates an allocated `ai_edge_litert` interpreter.

  Args:
    model_bytes: the .tflite bytes.
    xnnpack: True for the default XNNPACK delegate, False for builtin kernels only.
    num_threads: CPU threads.
    preserve_all_tensors: keep intermediates readable (XNNPACK off only).

  Returns:
    An `ai_edge_litert.interpreter.Interpreter`.
  """
  from ai_edge_litert import interpreter as litert  # pylint: disable=g-import-not-at-top
  resolver = (litert.OpResolverType.AUTO if xnnpack
              else litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
  interp = litert.Interpreter(
      model_content=bytes(model_bytes), num_threads=num_threads,
      experimental_op_resolver_type=resolver,
      experimental_preserve_all_tensors=preserve_all_tensors)
  interp.allocate_tensors()
  return interp


def random_input(detail, rng):
  """A timing input for one interpreter input: normal floats, token ids 0/1 for wider
  integers (valid for any vocabulary), int8 activations spread over the range (not
  zeros: some kernels short-circuit on them)."""
  dtype, shape = detail["dtype"], detail["shape"]
  if np.issubdtype(dtype, np.floating):
    return rng.standard_normal(shape).astype(dtype)
  if np.dtype(dtype).itemsize > 1:
    return rng.integers(0, 2, shape).astype(dtype)
  info = np.iinfo(dtype)
  return np.clip(np.round(rng.standard_normal(shape) * 20), info.min,
                 info.max).astype(dtype)


def time_us(model_bytes, xnnpack=True, budget_s=0.008, seed=0):
  """Median single-thread invoke time (us): ~`budget_s` of invokes after a warm-up.

  Every input is set once to `random_input` values; at least 3 warm-up invokes (up to
  2 ms of them, at most 200), then between 15 and 400 timed invokes.
  """
  interp = interpreter(model_bytes, xnnpack, num_threads=1)
  rng = np.random.default_rng(seed)
  for detail in interp.get_input_details():
    interp.set_tensor(detail["index"], random_input(detail, rng))
  start, warm = time.perf_counter(), 0
  while warm < 3 or (time.perf_counter() - start < 0.002 and warm < 200):
    interp.invoke()
    warm += 1
  estimate = (time.perf_counter() - start) / warm
  times = []
  for _ in range(int(np.clip(budget_s / max(estimate, 1e-7), 15, 400))):
    t = time.perf_counter()
    interp.invoke()
    times.append(time.perf_counter() - t)
  return float(np.median(times) * 1e6)
