"""Keras 3 model -> verified sparse .tflite bytes for LiteRT or TensorFlow Lite Micro.

Pipeline (docs/export.md): make the model convertible (`prepare`: unrolled
recurrent layers, float32 compute for mixed-precision models, augmentation layers
as identities; `inputs.resolve_shapes`: fixed dynamic dimensions) -> Keras
SavedModel export into a temporary directory (always removed) ->
`tf.lite.TFLiteConverter.from_saved_model` (with EXPERIMENTAL_SPARSITY for
LiteRT), its output silenced at the fd level unless `verbose=True` -> decode
the converter's sparse tensors and drop its DENSIFY ops -> re-encode every
constant with the smallest encoding the reading op supports
(`sparsify.encode_model`), or keep the dense file when the sparse one is not
smaller -> verify in LiteRT with XNNPACK on and off (and in TFLM for
`target="micro"`) against the Keras model -> bytes.

`convert` is the entry point and returns an `ExportResult` (`.flatbuffer`,
`.save(path)`); `to_tflite` (bytes) and `save_tflite` (writes the file) are thin
aliases kept for existing code.

Never imports tfprune training code: it takes any plain Keras 3 model whose
pruned kernels hold exact zeros (e.g. the output of `tfprune.strip`).
"""
from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np

from tfprune import _capture as capture
from tfprune import _io
from tfprune import _litert
from tfprune import _layers
from tfprune import _liveness
from tfprune.export import checksum
from tfprune.export import errors
from tfprune.export import graph
from tfprune.export import inputs as inputs_lib
from tfprune.export import islands
from tfprune.export import micro_compress
from tfprune.export import prepare as prepare_lib
from tfprune.export import sparsify
from tfprune.export import targets
from tfprune.export import verify as verify_lib
from tfprune.export.errors import ExportError

FC_QUANTIZATION = ("auto", "per_channel", "per_tensor")
# `fc_quantization="auto"` keeps per-channel FC weights unless per-tensor int8
# rounding costs at most this relative RMS error on every Dense kernel's nonzeros.
PER_TENSOR_MAX_ERROR = 0.01
METADATA_NAME = "tfprune_export"
CALIBRATION_SAMPLES = 200
_log = logging.getLogger("tfprune.export")

@dataclasses.dataclass
class ExportResult:
  """What `convert` produced.

  Attributes:
    model_bytes: the verified .tflite bytes (also `flatbuffer`).
    tensors: list of `sparsify.TensorReport`, one per constant weight tensor.
    verification: list of `verify.RuntimeResult` (all ok).
    dense_size: size of the plain dense conversion with the same quantisation.
    target, quantize, sparse: the settings used.
    fc_quantization: "per_tensor" or "per_channel" (FULLY_CONNECTED weight scales;
      meaningful only when quantized).
    notes: one sentence per change the exporter made to get a correct file
      (fixed dynamic input dimensions, unrolled recurrent layers, float32 compute,
      augmentation layers as their inference identity, dense fallback).
    memory: for target="micro", a `micro_compress.MemoryReport` (flash per tensor and
      in all, TFLM arena with and without alternate decompression memory, host invoke
      time vs the uncompressed file); None for LiteRT.
    compress: the DECODE compression asked for ("off" for LiteRT).
    fixed_batch: None (the file takes one sample per invoke, or any batch), or the
      fixed batch the file was converted and verified at because some outputs mix the
      samples of a batch (docs/export.md, "Outputs that depend on the batch size").
    dense_fallback: True when sparse encoding was asked for but the sparse file
      was not smaller than the dense one, so the dense file was kept.
    converter_log: what the converter printed (captured unless `verbose=True`).
  """
  model_bytes: bytes
  tensors: list
  verification: list
  dense_size: int
  target: str
  quantize: str
  sparse: str
  fc_quantization: str
  notes: list = dataclasses.field(default_factory=list)
  dense_fallback: bool = False
  converter_log: str = ""
  memory: micro_compress.MemoryReport = None
  compress: str = "off"
  fixed_batch: int = None

  @property
  def flatbuffer(self):
    """The verified .tflite bytes."""
    return self.model_bytes

  def save(self, path):
    """Writes the .tflite file atomically; returns `path`."""
    _io.atomic_write(path, self.model_bytes)
    return path

  def size_table(self):
    """A plain-text table of per-tensor encodings and totals (full tensor names)."""
    width = max([len("tensor")] + [len(t.name) for t in self.tensors])
    op_width = max([len("op")] + [len(t.op) for t in self.tensors])
    rows = [f"{'tensor':{width}s} {'op':{op_width}s} {'shape':14s} {'dtype':8s} "
            f"{'format':14s} {'nonzeros':>9s} {'dense B':>9s} {'bytes':>9s}"]
    for t in self.tensors:
      rows.append(f"{t.name:{width}s} {t.op:{op_width}s} {str(list(t.shape)):14s} "
                  f"{t.dtype:8s} {t.format:14s} {t.nonzeros:9d} {t.dense_bytes:9d} "
                  f"{t.bytes:9d}")
    rows.append(f"file: {len(self.model_bytes)} bytes (dense {self.dense_size} bytes, "
                f"{self.dense_size / max(1, len(self.model_bytes)):.2f}x smaller)")
    return "\n".join(rows)

  def summary(self):
    """`size_table()`, the TFLite Micro memory report (target="micro") and one `note:`
    line per change the exporter made."""
    memory = [self.memory.summary()] if self.memory is not None else []
    return "\n".join([self.size_table()] + memory + [f"note: {n}" for n in self.notes])


def _check_args(target, quantize, sparse, representative_data, micro_sparse_kernel,
                fc_quantization, num_verify_samples, compress):
  """Raises ValueError naming the first bad argument; returns the `targets.Target`."""
  tgt = targets.get(target)
  if quantize not in targets.QUANTIZE:
    raise ValueError(f"quantize must be one of {targets.QUANTIZE}, got {quantize!r}.")
  if sparse not in sparsify.SPARSE_MODES:
    raise ValueError(f"sparse must be one of {sparsify.SPARSE_MODES}, got {sparse!r}.")
  if fc_quantization not in FC_QUANTIZATION:
    raise ValueError(
        f"fc_quantization must be one of {FC_QUANTIZATION}, got {fc_quantization!r}.")
  tgt.check(quantize, sparse, micro_sparse_kernel, compress)
  if quantize == "int8" and representative_data is None:
    raise ValueError(
        "quantize='int8' needs representative_data: an array [n, ...] (a list of arrays "
        "or a dict by input name for several inputs) of typical model inputs used to "
        "calibrate activation ranges.")
  if not isinstance(num_verify_samples, int) or num_verify_samples < 1:
    raise ValueError(f"num_verify_samples must be an int >= 1, got {num_verify_samples!r}.")
  return tgt


def _check_model(model):
  import keras  # pylint: disable=g-import-not-at-top
  if not isinstance(model, keras.Model):
    raise TypeError(f"model must be a keras.Model, got {type(model).__name__}.")
  try:
    model.inputs, model.outputs  # pylint: disable=pointless-statement
  except (AttributeError, ValueError) as e:
    raise ExportError(f"model '{model.name}' has no symbolic inputs/outputs ({e}): build "
                      f"it as a Functional or Sequential model with an Input.") from e


def output_names(model):
  """The serving-signature names of the model's outputs, in `model.outputs` order.

  `model.export` names dict outputs by key (Keras flattens a dict in sorted key
  order) and every other output `output_<i>`.
  """
  try:
    struct = model.output
  except (AttributeError, ValueError):   # a Sequential model never called
    struct = None
  if isinstance(struct, dict) and all(not isinstance(v, (dict, list, tuple))
                                      for v in struct.values()):
    return sorted(struct)
  return [f"output_{i}" for i in range(len(model.outputs))]


def _structured(model, arrays):
  """Per-input arrays (model input order) in the model's input structure (a dict by key
  for dict inputs, in whatever key order the model was built with)."""
  import keras  # pylint: disable=g-import-not-at-top
  try:
    struct = model.input
  except (AttributeError, ValueError):   # a Sequential model never called
    struct = None
  if isinstance(struct, (dict, list, tuple)):
    return keras.tree.pack_sequence_as(struct, list(arrays))
  return arrays[0] if len(arrays) == 1 else list(arrays)


def _predict(model, arrays):
  """Keras outputs (inference mode) as float32 arrays, one per output (`model.outputs`
  order).

  On the TensorFlow backend the model runs as a `tf.function` traced with an unknown
  batch dimension, like the SavedModel export: Keras' TF `ops.add` (also `+` on
  tensors) turns an add into `bias_add` when, at the concrete batch size, the second
  operand squeezes to one dimension equal to the first's channel count, e.g.
  `conv (8, H, W, 8) + mean(x, axis=(1, 2, 3), keepdims=True) (8, 1, 1, 1)` at batch 8
  adds sample i's mean to channel i. Called eagerly with the verification batch, that
  reference was wrong while the file was right (docs/export.md, section 4, trap 6).
  """
  import keras  # pylint: disable=g-import-not-at-top
  x = _structured(model, arrays)
  y = None
  if keras.backend.backend() == "tensorflow":
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    specs = _structured(model, [tf.TensorSpec((None,) + a.shape[1:], a.dtype) for a in arrays])
    try:
      y = tf.function(lambda t: model(t, training=False), input_signature=[specs])(x)
    except Exception:  # pylint: disable=broad-except
      y = None   # untraceable: the export fails on it too, with the converter's named error
  if y is None:
    y = model(x, training=False)
  return [np.asarray(keras.ops.convert_to_numpy(t), np.float32) for t in keras.tree.flatten(y)]


def _signature(model, shapes, batch=None):
  """The export input signature: the model's input structure of named TensorSpecs with
  the resolved (fixed) shapes and `batch` (None: dynamic); None when the model's own
  signature already fits."""
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  dynamic = any(None in tuple(t.shape[1:]) for t in model.inputs)
  if (batch is None and not dynamic
      and not isinstance(_structured(model, list(model.inputs)), dict)):
    return None
  specs = [tf.TensorSpec((batch,) + tuple(shape), keras.backend.standardize_dtype(t.dtype),
                         name=t.name) for t, shape in zip(model.inputs, shapes)]
  return [_structured(model, specs)]


def batch_dependent_outputs(model, x, ref):
  """`[(output name, shape at batch n, shape at another batch)]`: the outputs whose shape
  is not `(batch, same shape)` at every batch size: they mix samples (e.g. CLIP's
  logits, the similarity of every image with every text: `(batch, batch)`).

  `ref` holds the Keras outputs for `x` (batch n); a second batch (1, or 2 when n is 1)
  runs only when an output's symbolic shape has a dynamic dimension beyond the batch or
  a `ref` output does not lead with n. Generic: shapes, not layer names.
  """
  n = len(x[0])
  if not (any(r.ndim == 0 or r.shape[0] != n for r in ref)
          or any(None in tuple(t.shape[1:]) or not len(t.shape) for t in model.outputs)):
    return []
  other = [a[:1] for a in x] if n > 1 else [np.concatenate([a, a]) for a in x]
  m = len(other[0])
  alt = _predict(model, other)
  names = output_names(model)
  return [(name, tuple(r.shape), tuple(a.shape)) for name, r, a in zip(names, ref, alt)
          if r.ndim == 0 or a.ndim == 0 or r.shape[0] != n or a.shape[0] != m
          or r.shape[1:] != a.shape[1:]]


def _fixed_batch(model, x, ref, quantize, tgt):
  """`(batch, note)`: the fixed batch to export at (the verification batch) when some
  outputs mix samples (`batch_dependent_outputs`), else `(None, None)`.

  Raises:
    ExportError: before conversion, naming those outputs, for full-int8 (calibrated one
      sample at a time) and target="micro" (TFLM runs one sample at a time).
  """
  dependent = batch_dependent_outputs(model, x, ref)
  if not dependent:
    return None, None
  n = len(x[0])
  m = 1 if n > 1 else 2
  what = ", ".join(f"'{name}' (shape {a} at batch {n}, {b} at batch {m})"
                   for name, a, b in dependent)
  why = ("quantize='int8' calibrates one sample at a time" if quantize == "int8" else
         f"target={tgt.name!r} runs one sample at a time"
         if "tflm" in tgt.verify_runtimes else None)
  if why:
    raise ExportError(
        f"model '{model.name}' output(s) {what} depend on the batch size: they mix the "
        f"samples of a batch (e.g. the similarity of every image with every text), so no "
        f"per-sample file computes them, and {why}. Export the parts that do not mix "
        f"samples as models of their own (e.g. the image and text towers, each to its "
        f"embedding) and compute the mixing (the similarity matmul) in the application, "
        f"or export for LiteRT with quantize=None or 'dynamic', which fixes the batch "
        f"(docs/export.md, 'Outputs that depend on the batch size').")
  return n, (f"output(s) {what} depend on the batch size (they mix the samples of a "
             f"batch), so the file was converted and verified at a fixed batch of {n}, the "
             f"verification batch: it takes exactly {n} samples per invoke (set the batch "
             f"with num_verify_samples=, and at least that many representative_data "
             f"samples)")


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


def _run_converter(model, quantize, samples, sparsity, fc_per_tensor=False, verbose=False,
                   shapes=None, keep_float=None, batch=None):
  """SavedModel export + TFLite conversion (`tfprune._litert.convert`, shared with the
  latency model); returns `(bytes, captured log)`.

  The SavedModel goes to a temporary directory that is removed whatever happens
  (the converter's own `from_keras_model` leaves it behind when it crashes).
  Any failure becomes an `ExportError` naming the op and layer.
  """
  if quantize == "int8":
    n = min(CALIBRATION_SAMPLES, len(samples[0]))
    samples = [arr[:n] for arr in samples]
  try:
    data, log = _litert.convert(
        model, quantize, samples, sparsity=sparsity, fc_per_tensor=fc_per_tensor,
        input_signature=_signature(model, shapes, batch) if shapes else None,
        verbose=verbose, keep_float=keep_float)
  except _litert.ConverterFailed as e:
    raise errors.converter_error(e.cause, model, quantize, e.log.text) from e.cause
  return data, log.text


def convert(model, target: str = "litert", quantize: str | None = None,
            representative_data=None, sparse: str = "auto", micro_sparse_kernel: bool = False,
            num_verify_samples: int = 8, seed: int = 0, fc_quantization: str = "auto",
            verbose: bool = False, input_shapes=None, compress: str = "off") -> ExportResult:
  """Converts a Keras 3 model to a verified (sparse) .tflite file.

  The primary export entry point: `to_tflite` and `save_tflite` are aliases.

  Args:
    model: a `keras.Model` with one or more inputs (float, int or bool; a list or a
      dict in any key order; token-id inputs stay integer, also in int8 models)
      and one or more outputs (a list or dict: every output is verified); pruned
      weights are exact zeros. Recurrent layers are unrolled (static time
      dimension needed), mixed-precision models computed in float32 and
      augmentation layers (RandomFlip, ...) exported as their inference identity;
      `notes` says so.
    target: "litert" (phones; sparse weights where they help) or "micro" (TFLite
      Micro: full-int8, no DENSIFY, no sparse tensors).
    quantize: None (float), "dynamic" (dynamic-range int8 weights, LiteRT only) or
      "int8" (full integer; float inputs/outputs become int8).
    representative_data: typical inputs: an array `[n, ...]` for a single input;
      for several inputs a list of arrays (model input order) or a dict keyed
      by input name. Each is cast to its input's dtype (never integer -> float).
      Required for "int8"; also the verification inputs (else random inputs from
      a valid range per input: normal floats, random bools, ints in
      `[0, input_dim)` of the Embedding they feed, nested models included, else
      0 / 1). Must be finite. Dynamic (None) dimensions are fixed to its shape.
    sparse: "auto" (per tensor the smallest correct encoding; dense when sparse
      would not be smaller), "csr", "block" (the fast path: 1x4 float / 1x16
      int8 blocks for every FC weight whose input width allows it and where
      they are smaller than dense, read directly by the FC; every other tensor
      as in "auto"), "off". In every mode, when the whole sparse file is not
      smaller than the dense conversion, the dense file is kept
      (`dense_fallback`).
    micro_sparse_kernel: with target="micro", store int8 FC weights in TFLite's
      1x16 block-sparse format for an application-registered sparse FC kernel.
    num_verify_samples: number of inputs used for verification; also the fixed batch
      of a file whose outputs mix the samples of a batch (CLIP's `(batch, batch)`
      logits: `ExportResult.fixed_batch`, docs/export.md section 14).
    seed: seed for random verification inputs.
    fc_quantization: scales of quantized FULLY_CONNECTED weights: "per_channel"
      (the converter's default), "per_tensor" (one scale per weight tensor: saves
      24 bytes per output channel, a large share of a sparse file), or "auto":
      per tensor for a sparse LiteRT export when per-tensor int8 rounding changes
      every Dense kernel's nonzeros by at most `PER_TENSOR_MAX_ERROR` (relative
      RMS), per channel otherwise. The verification applies either way.
    verbose: let the converter and SavedModel export print to stdout/stderr
      (by default their output is captured and shown only in errors).
    input_shapes: fixed shapes (batch left out) for inputs with dynamic (None)
      dimensions, e.g. `{"token_ids": (128,), "padding_mask": (128,)}` (a dict by
      input name, a list per input, or one shape for a single input); default:
      the representative data's shape. `notes` says what was fixed.
    compress: target="micro" only: TFLite Micro DECODE compression of conv and FC
      weights and biases (docs/export.md, section 11): "off", "pruning" (a bitmask
      and the kept values: pays on unstructured sparsity), "lut" (indices into at
      most 128 values per channel or tensor: pays on clustered weights), "auto" (per
      tensor the smallest of pruning, LUT and dense). A tensor is compressed only
      where that is smaller, and the uncompressed file is kept when the whole
      compressed one is not smaller. The compressed file must give exactly the
      uncompressed file's TFLM outputs (with decoded tensors in the arena and in
      alternate decompression memory); the application registers TFLM's DECODE
      kernel. `memory` reports flash, arena and invoke time.

  Returns:
    An `ExportResult`: `.flatbuffer` (the bytes), `.save(path)`, the per-tensor
    report, the verification results and `notes`.

  Raises:
    ValueError: on invalid arguments (the message names the argument and valid values).
    ExportError (a ValueError): the model or data cannot be exported as asked
      (bad/non-finite data, dynamic shapes, ops TFLite lacks, ...); raised before
      conversion where possible, and the message says what to do.
    verify.VerificationError: if the file disagrees with the Keras model under any
      targeted runtime configuration.
    tfprune.DeadModelError (a ValueError): the model's outputs do not depend on its
      inputs (docs/export.md, "Liveness check"); nothing is converted or written.
  """
  tgt = _check_args(target, quantize, sparse, representative_data, micro_sparse_kernel,
                    fc_quantization, num_verify_samples, compress)
  _check_model(model)
  samples = None
  if representative_data is not None:
    samples = inputs_lib.as_samples(model, representative_data)
    inputs_lib.check_ranges(model, samples)
  prepared, notes, float32 = prepare_lib.prepare(model)   # named RNN errors come first
  shapes, shape_notes = inputs_lib.resolve_shapes(model, samples, input_shapes)
  notes = shape_notes + notes
  if samples is not None:
    x = [a[:num_verify_samples] for a in samples]
  else:
    x = inputs_lib.random_samples(model, num_verify_samples, seed, shapes)
  ref = _predict(prepared if float32 else model, x)
  if not all(np.all(np.isfinite(r)) for r in ref):
    raise ExportError(
        f"the Keras model '{model.name}' itself outputs NaN/Inf on the "
        f"{'representative' if samples is not None else 'random verification'} inputs, so "
        f"no file can be verified against it: check its weights for NaN/Inf (and the data).")
  _liveness.check_alive(model, "tfprune.export")  # a dead model is never converted
  batch, batch_note = _fixed_batch(prepared if float32 else model, x, ref, quantize, tgt)
  if batch_note:
    notes.append(batch_note)
  if float32:
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(_predict(model, x), ref))
    notes[-1] += f" (max abs diff to the mixed-precision model: {diff:.3g})"
  use_sparsity = tgt.sparse_tensors and sparse != "off"
  fc_per_tensor = _fc_per_tensor(prepared, fc_quantization, quantize, sparse_output=use_sparsity)
  meta = {"target": target, "quantize": quantize, "sparse": sparse,
          "micro_sparse_kernel": bool(micro_sparse_kernel),
          "fc_quantization": "per_tensor" if fc_per_tensor else "per_channel"}
  names = [t.name for t in model.inputs]
  outs = output_names(model)   # every output is verified, matched by signature name
  outs = outs if len(outs) > 1 else None

  def build(keep_float=None):
    """Converts, encodes and verifies: (file, dense file, reports, results, fallback,
    log, notes)."""
    more = []
    raw, log = _run_converter(prepared, quantize, samples, sparsity=use_sparsity,
                              fc_per_tensor=fc_per_tensor, verbose=verbose, shapes=shapes,
                              keep_float=keep_float, batch=batch)
    tfl = graph.load(raw)
    try:
      sparsify.densify_model(tfl)
    except errors.UndecodableSparseTensor as e:
      # The converter's sparsity pass wrote a layout that does not decode (and its file
      # computes wrong outputs): convert dense and let encode_model choose the encodings.
      more.append(f"converted again without the converter's sparsity pass, whose output "
                  f"was not valid ({e})")
      raw, log = _run_converter(prepared, quantize, samples, sparsity=False,
                                fc_per_tensor=fc_per_tensor, verbose=verbose, shapes=shapes,
                                keep_float=keep_float, batch=batch)
      tfl = graph.load(raw)
      sparsify.densify_model(tfl)
    # The dense conversion: written as it is when no sparse file is smaller. The metadata
    # also records CRC32s of every buffer and of the file (checksum.py).
    dense_bytes = checksum.dump_with_metadata(tfl, METADATA_NAME, meta)
    reports = sparsify.encode_model(
        tfl, sparse=tgt.sparse_mode(sparse, micro_sparse_kernel), quantize=quantize,
        target=tgt, micro_sparse_kernel=micro_sparse_kernel)
    model_bytes = checksum.dump_with_metadata(tfl, METADATA_NAME, meta)
    any_sparse = any(t.format != "dense" for t in reports)
    fallback = any_sparse and len(model_bytes) >= len(dense_bytes)
    if not any_sparse:
      model_bytes = dense_bytes
    if fallback:
      more.append(f"wrote the dense file: the sparse encoding ({len(model_bytes)} bytes) "
                  f"was not smaller than the dense conversion ({len(dense_bytes)} bytes)")
      model_bytes = dense_bytes
      reports = [dataclasses.replace(t, format="dense", bytes=t.dense_bytes) for t in reports]
    runtimes, twin_runtimes = tgt.runtimes(micro_sparse_kernel)
    with capture.captured_output(enabled=not verbose):   # "Created XNNPACK delegate" lines
      results = verify_lib.verify(model_bytes, ref, x, quantize, runtimes,
                                  reference_bytes=dense_bytes,
                                  input_names=names, output_names=outs)
      if twin_runtimes:
        # TFLM's builtin FC ignores sparsity; check the dense twin runs there instead.
        results += verify_lib.verify(dense_bytes, ref, x, quantize, twin_runtimes,
                                     input_names=names, output_names=outs)
    return model_bytes, dense_bytes, reports, results, fallback, log, more

  try:
    model_bytes, dense_bytes, reports, results, fallback, log, more = build()
  except verify_lib.VerificationError as e:
    rnns = prepare_lib.recurrent_layers(model)
    if quantize == "int8" and rnns:
      raise verify_lib.VerificationError(
          f"{e}\n  full-int8 quantizes the state of the unrolled recurrent layer(s) "
          f"{', '.join(repr(l.name) for l in rnns)} to 8 bits at every time step, and the error "
          f"grows with the sequence (measured 20-30% of the output peak on small LSTMs, "
          f"docs/export.md): export with quantize='dynamic' (int8 weights, float state) or "
          f"float.") from e
    if quantize != "int8" or not tgt.float_islands:
      raise
    # Float islands (docs/export.md, section 13), verified again.
    found = islands.Islands(lambda data: _passes(data, ref, x, quantize, names, outs,
                                                 verbose), x, names)
    try:
      model_bytes, dense_bytes, reports, results, fallback, log, more = build(found.quantize)
    except verify_lib.VerificationError as again:
      raise verify_lib.VerificationError(
          f"{e}\n  converted again with {len(found.kept)} op(s) left float (docs/export.md, "
          f"section 13: {found.summary() or 'none found'}); that file: {again}",
          conversion_at_fault=again.conversion_at_fault) from e
    first = (str(e).splitlines()[1:] or [str(e)])[0].strip()
    more.append(f"full int8 failed its verification ({first}); " + (
        f"kept {len(found.kept)} op(s) float, int8 everywhere else ({found.summary()})"
        if found.kept else "quantized again from the calibrated model, which verified"))
  notes += more
  for note in notes:
    _log.warning("tfprune.export: %s.", note)
  memory = None
  if tgt.memory_report and not micro_sparse_kernel:   # TFLM cannot run the custom-kernel file
    model_bytes, memory, more = _compress_micro(model_bytes, compress, meta, x, ref, names, outs,
                                                notes)
    results += more
    decoded = {t.name: t for t in memory.tensors if t.encoding != "dense"}
    reports = [dataclasses.replace(r, format=f"decode:{decoded[r.name].encoding}",
                                   bytes=decoded[r.name].bytes) if r.name in decoded else r
               for r in reports]
  return ExportResult(model_bytes, reports, results, len(dense_bytes), target, quantize, sparse,
                      "per_tensor" if fc_per_tensor else "per_channel", notes, fallback, log,
                      memory, compress, batch)


def _passes(data, ref, x, quantize, names, outs, verbose):
  """Whether a file passes the verification (builtin kernels): the islands' check."""
  try:
    with capture.captured_output(enabled=not verbose):
      verify_lib.verify(data, ref, x, quantize, ("builtin",), input_names=names,
                        output_names=outs)
    return True
  except verify_lib.VerificationError:
    return False


def _compress_micro(model_bytes, compress, meta, x, ref, input_names, output_names, notes):
  """DECODE-compresses a verified micro file; `(bytes, MemoryReport, extra results)`.

  The compressed file is checked against the Keras model in TFLM and must equal the
  uncompressed file's TFLM outputs bit for bit, with decoded tensors in the arena and
  in alternate decompression memory; it is kept only when smaller (`notes` says so).
  """
  model = graph.load(model_bytes)
  tensors, alt = micro_compress.compress_model(model, compress)
  uncompressed, results, note = model_bytes, [], None
  if any(t.encoding != "dense" for t in tensors):
    packed = checksum.dump_with_metadata(model, METADATA_NAME, dict(meta, compress=compress))
    if len(packed) < len(model_bytes):
      results = [dataclasses.replace(r, runtime="tflm-decode") for r in verify_lib.verify(
          packed, ref, x, "int8", ["tflm"], input_names=input_names, output_names=output_names)]
      for offered in (0, alt):
        verify_lib.check_identical_tflm(packed, model_bytes, x, offered)
      model_bytes = packed
    else:
      note = (f"kept the uncompressed file: with compress={compress!r} it is {len(packed)} "
              f"bytes, not smaller than {len(model_bytes)}")
      tensors = [dataclasses.replace(t, encoding="dense", bytes=t.dense_bytes, decoded_bytes=0)
                 for t in tensors]
      alt = 0
  elif compress != "off":
    note = (f"compress={compress!r} compressed nothing: no conv/FC weight or bias has an "
            f"encoding smaller than its dense bytes (pruning needs exact zeros, LUT at most "
            f"128 distinct values per channel)")
  if note:
    notes.append(note)
    _log.warning("tfprune.export: %s.", note)
  arena = verify_lib.tflm_arena_bytes(model_bytes)["total"]
  invoke = verify_lib.tflm_invoke_us(model_bytes, x)
  compressed = model_bytes is not uncompressed
  memory = micro_compress.MemoryReport(
      len(model_bytes), len(uncompressed), tensors, arena,
      verify_lib.tflm_arena_bytes(model_bytes, alt_decompression_bytes=alt)["total"] if alt
      else arena, alt,
      verify_lib.tflm_arena_bytes(uncompressed)["total"] if compressed else arena,
      invoke, verify_lib.tflm_invoke_us(uncompressed, x) if compressed else invoke)
  return model_bytes, memory, results


def to_tflite(model, *args, **kwargs) -> bytes:
  """Alias of `convert` that returns only the verified .tflite bytes.

  Kept for existing code; takes exactly `convert`'s arguments.

  Returns:
    `convert(model, ...).flatbuffer` (bytes).
  """
  return convert(model, *args, **kwargs).model_bytes


def save_tflite(model, path: str, **kwargs) -> ExportResult:
  """Alias of `convert(model, **kwargs).save(path)`: converts, then writes atomically.

  Nothing is written when conversion or verification fails.

  Args:
    model: the Keras model.
    path: destination .tflite path.
    **kwargs: arguments of `convert`.

  Returns:
    The `ExportResult`.
  """
  result = convert(model, **kwargs)
  result.save(path)
  return result
