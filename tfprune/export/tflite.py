"""Keras 3 model -> verified sparse .tflite bytes for LiteRT or TensorFlow Lite Micro.

Pipeline: `tf.lite.TFLiteConverter.from_keras_model` (with EXPERIMENTAL_SPARSITY
for LiteRT) -> decode the converter's sparse tensors and drop its DENSIFY ops ->
re-encode every constant with the smallest encoding the reading op supports
(`sparsify.encode_model`) -> verify in LiteRT with XNNPACK on and off (and in
TFLM for `target="micro"`) against the Keras model -> bytes.

Never imports tfprune training code: it takes any plain Keras 3 model whose
pruned kernels hold exact zeros (e.g. the output of `tfprune.strip`).
"""
import dataclasses

import numpy as np

from tfprune import _io
from tfprune import _layers
from tfprune.export import checksum
from tfprune.export import graph
from tfprune.export import sparsify
from tfprune.export import verify as verify_lib

TARGETS = ("litert", "micro")
QUANTIZE = (None, "dynamic", "int8")
FC_QUANTIZATION = ("auto", "per_channel", "per_tensor")
# `fc_quantization="auto"` keeps per-channel FC weights unless per-tensor int8
# rounding costs at most this relative RMS error on every Dense kernel's nonzeros.
PER_TENSOR_MAX_ERROR = 0.01
METADATA_NAME = "tfprune_export"


@dataclasses.dataclass
class ExportResult:
  """What `convert` produced.

  Attributes:
    model_bytes: the verified .tflite bytes.
    tensors: list of `sparsify.TensorReport`, one per constant weight tensor.
    verification: list of `verify.RuntimeResult` (all ok).
    dense_size: size of the plain dense conversion with the same quantisation.
    target, quantize, sparse: the settings used.
    fc_quantization: "per_tensor" or "per_channel" (FULLY_CONNECTED weight scales;
      meaningful only when quantized).
  """
  model_bytes: bytes
  tensors: list
  verification: list
  dense_size: int
  target: str
  quantize: str
  sparse: str
  fc_quantization: str

  def size_table(self):
    """A plain-text table of per-tensor encodings and totals."""
    rows = [f"{'tensor':40s} {'op':16s} {'shape':14s} {'dtype':8s} {'format':10s} "
            f"{'nonzeros':>9s} {'dense B':>9s} {'bytes':>9s}"]
    for t in self.tensors:
      rows.append(f"{t.name[:40]:40s} {t.op[:16]:16s} {str(list(t.shape)):14s} "
                  f"{t.dtype:8s} {t.format:10s} {t.nonzeros:9d} {t.dense_bytes:9d} "
                  f"{t.bytes:9d}")
    rows.append(f"file: {len(self.model_bytes)} bytes (dense {self.dense_size} bytes, "
                f"{self.dense_size / max(1, len(self.model_bytes)):.2f}x smaller)")
    return "\n".join(rows)


def _check_args(target, quantize, sparse, representative_data, micro_sparse_kernel,
                fc_quantization):
  if target not in TARGETS:
    raise ValueError(f"target must be one of {TARGETS}, got {target!r}.")
  if quantize not in QUANTIZE:
    raise ValueError(f"quantize must be one of {QUANTIZE}, got {quantize!r}.")
  if sparse not in sparsify.SPARSE_MODES:
    raise ValueError(f"sparse must be one of {sparsify.SPARSE_MODES}, got {sparse!r}.")
  if fc_quantization not in FC_QUANTIZATION:
    raise ValueError(
        f"fc_quantization must be one of {FC_QUANTIZATION}, got {fc_quantization!r}.")
  if target == "micro" and quantize != "int8":
    raise ValueError(
        f"target='micro' needs quantize='int8' (TFLite Micro runs full-int8 models and "
        f"refuses dynamic-range ones), got quantize={quantize!r}.")
  if micro_sparse_kernel and target != "micro":
    raise ValueError("micro_sparse_kernel=True is only valid with target='micro'.")
  if quantize == "int8" and representative_data is None:
    raise ValueError(
        "quantize='int8' needs representative_data: an array [n, ...] (or list of "
        "arrays) of typical model inputs used to calibrate activation ranges.")
  if sparse == "csr" and quantize is not None:
    raise ValueError(
        f"sparse='csr' is not valid with quantize={quantize!r}: quantized ops cannot "
        "read CSR weights directly; use sparse='auto' or 'block'.")


def _as_samples(model, data):
  """Returns representative data as a float32 array [n, *input_shape[1:]]."""
  arr = np.asarray(data if not isinstance(data, (list, tuple)) else np.stack(data),
                   dtype=np.float32)
  shape = tuple(model.inputs[0].shape[1:])
  if arr.shape[1:] != shape:
    if arr.shape == shape:
      arr = arr[None]
    else:
      raise ValueError(
          f"representative_data has shape {arr.shape}; expected [n, {', '.join(map(str, shape))}] "
          f"to match the model input {model.inputs[0].shape}.")
  if len(arr) == 0:
    raise ValueError("representative_data is empty.")
  return arr


def _check_model(model):
  import keras  # pylint: disable=g-import-not-at-top
  if not isinstance(model, keras.Model):
    raise TypeError(f"model must be a keras.Model, got {type(model).__name__}.")
  if len(model.inputs) != 1 or len(model.outputs) != 1:
    raise ValueError(
        f"to_tflite supports models with one input and one output; '{model.name}' has "
        f"{len(model.inputs)} inputs and {len(model.outputs)} outputs.")
  if any(d is None for d in model.inputs[0].shape[1:]):
    raise ValueError(f"model input shape {model.inputs[0].shape} must be fixed except the batch.")


def per_tensor_error(kernel):
  """Relative RMS error of symmetric per-tensor int8 rounding on the nonzeros of `kernel`."""
  w = np.asarray(kernel, np.float64)
  nz = w[w != 0]
  if nz.size == 0:
    return 0.0
  scale = np.max(np.abs(nz)) / 127.0
  err = np.round(nz / scale) * scale - nz
  return float(np.sqrt(np.mean(err ** 2) / np.mean(nz ** 2)))


def _fc_per_tensor(model, fc_quantization, quantize, sparse_output):
  """Whether FULLY_CONNECTED weights are quantized per tensor (see `to_tflite`)."""
  if quantize is None or fc_quantization == "per_channel":
    return False
  if fc_quantization == "per_tensor":
    return True
  import keras  # pylint: disable=g-import-not-at-top
  kernels = [layer.kernel for layer in _layers.all_layers(model)
             if isinstance(layer, keras.layers.Dense)]
  return sparse_output and all(per_tensor_error(k) <= PER_TENSOR_MAX_ERROR for k in kernels)


def _run_converter(model, quantize, samples, sparsity, fc_per_tensor=False):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  converter = tf.lite.TFLiteConverter.from_keras_model(model)
  # Per-channel scales cost 12 bytes per output channel for the weights and again
  # for the bias: a large share of a sparse file.
  converter._experimental_disable_per_channel_quantization_for_dense_layers = fc_per_tensor  # pylint: disable=protected-access
  opts = []
  if sparsity:
    opts.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
  if quantize:
    opts.append(tf.lite.Optimize.DEFAULT)
  converter.optimizations = opts
  if quantize == "int8":
    calib = samples[:200]

    def representative_dataset():
      for x in calib:
        yield [x[None]]

    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
  return bytes(converter.convert())


def _verify_inputs(model, samples, num_samples, seed):
  if samples is not None:
    return samples[:num_samples]
  rng = np.random.default_rng(seed)
  shape = (num_samples,) + tuple(model.inputs[0].shape[1:])
  return rng.standard_normal(shape).astype(np.float32)


def convert(model, target="litert", quantize=None, representative_data=None, sparse="auto",
            micro_sparse_kernel=False, num_verify_samples=8, seed=0, fc_quantization="auto"):
  """Converts and verifies; returns an `ExportResult` (see `to_tflite`)."""
  _check_args(target, quantize, sparse, representative_data, micro_sparse_kernel,
              fc_quantization)
  _check_model(model)
  samples = None if representative_data is None else _as_samples(model, representative_data)
  use_sparsity = target == "litert" and sparse != "off"
  fc_per_tensor = _fc_per_tensor(model, fc_quantization, quantize, sparse_output=use_sparsity)
  raw = _run_converter(model, quantize, samples, sparsity=use_sparsity,
                       fc_per_tensor=fc_per_tensor)
  tfl = graph.load(raw)
  sparsify.densify_model(tfl)
  dense_bytes = graph.dump(tfl)
  reports = sparsify.encode_model(
      tfl, sparse=sparse if (target == "litert" or micro_sparse_kernel) else "off",
      quantize=quantize, target=target, micro_sparse_kernel=micro_sparse_kernel)
  # The metadata also records CRC32s of every buffer and of the file (checksum.py).
  model_bytes = checksum.dump_with_metadata(tfl, METADATA_NAME, {
      "target": target, "quantize": quantize, "sparse": sparse,
      "micro_sparse_kernel": bool(micro_sparse_kernel),
      "fc_quantization": "per_tensor" if fc_per_tensor else "per_channel"})
  x = _verify_inputs(model, samples, num_verify_samples, seed)
  ref = np.asarray(model(x, training=False), np.float32)
  runtimes = ["xnnpack", "builtin"]
  if target == "micro" and not micro_sparse_kernel:
    runtimes.append("tflm")
  results = verify_lib.verify(model_bytes, ref, x, quantize, runtimes, reference_bytes=dense_bytes)
  if target == "micro" and micro_sparse_kernel:
    # TFLM's builtin FC ignores sparsity; check the dense twin runs there instead.
    results += verify_lib.verify(dense_bytes, ref, x, quantize, ["tflm"])
  return ExportResult(model_bytes, reports, results, len(dense_bytes), target, quantize, sparse,
                      "per_tensor" if fc_per_tensor else "per_channel")


def to_tflite(model, target="litert", quantize=None, representative_data=None, sparse="auto",
              micro_sparse_kernel=False, num_verify_samples=8, seed=0, fc_quantization="auto"):
  """Converts a Keras 3 model to verified (sparse) .tflite bytes.

  Args:
    model: a `keras.Model` with one input and one output; pruned weights are exact zeros.
    target: "litert" (phones; sparse weights where they help) or "micro" (TFLite
      Micro: full-int8, no DENSIFY, no sparse tensors).
    quantize: None (float), "dynamic" (dynamic-range int8 weights, LiteRT only) or
      "int8" (full integer, int8 input/output).
    representative_data: array `[n, ...]` of typical inputs; required for "int8";
      also used as verification inputs (else random normal inputs).
    sparse: "auto" (per tensor the smallest correct encoding; dense when sparse
      would be larger), "csr", "block" (the fast path: 1x4 float / 1x16 int8 blocks
      for every FC weight whose input width allows it, read directly by the FC; every
      other tensor as in "auto"), "off".
    micro_sparse_kernel: with target="micro", store int8 FC weights in TFLite's
      1x16 block-sparse format for an application-registered sparse FC kernel.
    num_verify_samples: number of inputs used for verification.
    seed: seed for random verification inputs.
    fc_quantization: scales of quantized FULLY_CONNECTED weights: "per_channel"
      (the converter's default), "per_tensor" (one scale per weight tensor: saves
      24 bytes per output channel, a large share of a sparse file), or "auto":
      per tensor for a sparse LiteRT export when per-tensor int8 rounding changes
      every Dense kernel's nonzeros by at most `PER_TENSOR_MAX_ERROR` (relative
      RMS), per channel otherwise. The verification applies either way.

  Returns:
    The .tflite file contents as bytes.

  Raises:
    ValueError: on invalid arguments (the message names the argument and valid values).
    verify.VerificationError: if the file disagrees with the Keras model under any
      targeted runtime configuration.
  """
  return convert(model, target, quantize, representative_data, sparse, micro_sparse_kernel,
                 num_verify_samples, seed, fc_quantization).model_bytes


def save_tflite(model, path, **kwargs):
  """Converts like `to_tflite` and writes the file atomically.

  Args:
    model: the Keras model.
    path: destination .tflite path.
    **kwargs: arguments of `to_tflite`.

  Returns:
    The `ExportResult`.
  """
  result = convert(model, **kwargs)
  _io.atomic_write(path, result.model_bytes)
  return result
