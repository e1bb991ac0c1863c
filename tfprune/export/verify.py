"""Runs TFLite models in LiteRT (XNNPACK on/off) and TFLM and compares them to Keras.

Every file the exporter writes passes `verify` first: the model runs on sample
inputs under each runtime configuration it targets, and its outputs are compared
with the Keras model's (float: max abs diff; dynamic-range: relative diff;
int8: diff in quantized output units and argmax agreement). A disagreement
raises `VerificationError` naming the runtime, the output tensor, and the op
most likely at fault.
"""
import dataclasses
import re
import time

import numpy as np

from tfprune import _capture as capture
from tfprune import _litert
from tfprune.export import graph
from tfprune.export.errors import VerificationError

RUNTIMES = ("xnnpack", "builtin", "tflm")


@dataclasses.dataclass
class RuntimeResult:
  """Result of one runtime configuration.

  Attributes:
    runtime: "xnnpack", "builtin" (LiteRT, XNNPACK off) or "tflm".
    ok: whether outputs matched within tolerance.
    max_abs_diff: max abs difference to the reference (float units).
    tolerance: tolerance it was checked against.
    argmax_agreement: fraction of samples with the same argmax, among those whose
      reference top-two margin an int8 output can resolve (None if 1 output, or no
      such sample; see `compare`).
    error: message when it failed to run.
    output: the model output compared ("" for a single-output model).
    outputs: for a model with several outputs, one `RuntimeResult` per output (the
      fields above are then the worst of them: `ok` all, `max_abs_diff` the largest).
  """
  runtime: str
  ok: bool
  max_abs_diff: float = float("nan")
  tolerance: float = float("nan")
  argmax_agreement: float = None
  error: str = ""
  output: str = ""
  outputs: list = None


def _quantize(x, detail):
  scale, zero = detail["quantization"]
  info = np.iinfo(detail["dtype"])
  return np.clip(np.round(x / scale + zero), info.min, info.max).astype(detail["dtype"])


def _feed(x, detail):
  """Casts one sample to what an input tensor takes.

  Float samples are quantized for a quantized (int8/uint8/int16 with a scale)
  input; integer and bool samples (token ids, flags) are passed as they are, cast
  to the tensor's dtype.
  """
  dtype = np.dtype(detail["dtype"])
  scale = detail["quantization"][0] if detail.get("quantization") else 0.0
  if np.issubdtype(x.dtype, np.floating) and dtype != np.float32 and scale:
    return _quantize(x.astype(np.float32), detail)
  return x.astype(dtype)


def as_input_list(inputs):
  """Verification inputs as a list with one array `[n, ...]` per model input.

  Args:
    inputs: an array (single-input model) or a list/tuple of arrays, one per
      model input in the model's input order.

  Returns:
    A list of numpy arrays of equal length.

  Raises:
    ValueError: if the arrays differ in their number of samples.
  """
  arrays = [np.asarray(a) for a in inputs] if isinstance(inputs, (list, tuple)) else [np.asarray(inputs)]
  if len({len(a) for a in arrays}) > 1:
    raise ValueError(f"inputs differ in sample count: {[len(a) for a in arrays]}.")
  return arrays


def _tensor_input_name(name):
  """'serving_default_tokens:0' -> 'tokens' (the Keras input name)."""
  name = name.split(":")[0]
  return name[len("serving_default_"):] if name.startswith("serving_default_") else name


def _order_details(details, input_names):
  """Input details in the order of `input_names` (Keras input names), matched by name."""
  if not input_names or len(details) < 2:
    return list(details)
  by_name = {_tensor_input_name(d["name"]): d for d in details}
  if all(n in by_name for n in input_names):
    return [by_name[n] for n in input_names]
  return sorted(details, key=lambda d: d["index"])


def _dequantize(y, detail):
  if detail["dtype"] in (np.int8, np.uint8, np.int16):
    scale, zero = detail["quantization"]
    return (y.astype(np.float32) - zero) * scale
  return y.astype(np.float32)


# An allocated `ai_edge_litert` interpreter, XNNPACK on or off (shared with the latency
# model: tfprune/_litert.py).
make_litert_interpreter = _litert.interpreter


def output_positions(model_bytes, output_names):
  """Positions in the file's output list of the Keras outputs named `output_names`.

  The converter orders a model's outputs as it likes (seen: reversed); the file's
  serving signature names them (dict outputs by key, list outputs `output_<i>`).
  Falls back to the file's order when the signature does not name them all.
  """
  model = graph.load(model_bytes)
  outputs = list(model.subgraphs[0].outputs)
  if not output_names:
    return list(range(len(outputs)))
  for sig in model.signatureDefs or []:
    by_name = {_text(t.name): t.tensorIndex for t in sig.outputs or []}
    if all(n in by_name for n in output_names) and all(
        by_name[n] in outputs for n in output_names):
      return [outputs.index(by_name[n]) for n in output_names]
  if len(outputs) != len(output_names):
    raise ValueError(f"the file has {len(outputs)} outputs, the Keras model "
                     f"{len(output_names)} ({output_names}).")
  return list(range(len(outputs)))


def _text(name):
  return name.decode() if isinstance(name, bytes) else str(name)


def run_litert_outputs(model_bytes, inputs, xnnpack=True, input_names=None, positions=None):
  """Like `run_litert`, for every output: a list of `(float_outputs, raw, detail)`.

  `positions` (from `output_positions`) selects and orders the file's outputs
  (default: the file's order).
  """
  arrays = as_input_list(inputs)
  interp = make_litert_interpreter(model_bytes, xnnpack)
  details = _order_details(interp.get_input_details(), input_names)
  if len(details) != len(arrays):
    raise ValueError(f"the model has {len(details)} inputs, got {len(arrays)} input arrays.")
  outs = interp.get_output_details()
  outs = [outs[p] for p in positions] if positions is not None else outs
  raw = [[] for _ in outs]
  step = file_batch(details)
  for j in range(0, len(arrays[0]), step):
    for detail, arr in zip(details, arrays):
      interp.set_tensor(detail["index"], _feed(arr[j:j + step], detail))
    interp.invoke()
    for k, out in enumerate(outs):
      raw[k].append(interp.get_tensor(out["index"]).copy())
  return [(_dequantize(np.concatenate(r), out), np.concatenate(r), out)
          for r, out in zip(raw, outs)]


def file_batch(details):
  """Samples per invoke of a LiteRT file, from its input details: its fixed batch
  dimension when it has one (a file exported at a fixed batch because its outputs mix
  samples, docs/export.md), else 1 (a dynamic batch: one sample at a time)."""
  if not details or not len(details[0]["shape"]):
    return 1
  signature = details[0].get("shape_signature")
  if signature is not None and len(signature) and signature[0] == -1:
    return 1
  return max(1, int(details[0]["shape"][0]))


def run_litert(model_bytes, inputs, xnnpack=True, input_names=None):
  """Runs a model one sample at a time (a file with a fixed batch: that many at a time);
  returns its first output (`run_litert_outputs`: all of them).

  Args:
    model_bytes: the .tflite bytes.
    inputs: array `[n, ...]`, or a list of arrays (one per model input, in the
      order of `input_names`); float arrays are quantized here for int8 inputs,
      integer arrays (token ids) are fed as they are.
    xnnpack: whether XNNPACK is on.
    input_names: Keras input names, to match the file's inputs
      (`serving_default_<name>`) when there are several; default: file order.

  Returns:
    `(float_outputs, raw_outputs, output_detail)`; float outputs are dequantized.
  """
  return run_litert_outputs(model_bytes, inputs, xnnpack, input_names, positions=[0])[0]


# The arena offered to TFLM on the host (or 4x the file): large enough for any model a
# microcontroller could hold; `tflm_arena_bytes` reports what is actually used.
TFLM_HOST_ARENA_BYTES = 1 << 20

# TFLM's int8 SOFTMAX Prepare computes a multiplier beta * input_scale * 2^(31 - 5) and
# aborts the whole process (TFLITE_CHECK, no error status) unless it exceeds 1.
_TFLM_SOFTMAX_MIN_SCALE_BETA = 2.0 ** -26


def _check_tflm_can_prepare(model_bytes):
  """Raises VerificationError for a file that TFLM would abort on instead of refusing."""
  model = graph.load(model_bytes)
  for sg in model.subgraphs:
    for i, op in enumerate(sg.operators or []):
      if graph.op_code(model, op) != graph.BuiltinOperator.SOFTMAX:
        continue
      t = sg.tensors[op.inputs[0]]
      q = t.quantization
      if t.type != graph.TensorType.INT8 or q is None or q.scale is None or not len(q.scale):
        continue
      beta = float(getattr(op.builtinOptions, "beta", 1.0) or 1.0)
      if float(q.scale[0]) * beta <= _TFLM_SOFTMAX_MIN_SCALE_BETA:
        raise VerificationError(
            f"TFLite Micro cannot run int8 SOFTMAX (op #{i}): its input scale x beta "
            f"({float(q.scale[0]) * beta:.3g}) is at most 2^-26, so its logits span less "
            f"than ~4e-6 (an untrained or collapsed model); TFLM's kernel would abort the "
            f"process. Train the model, or export the logits (no softmax).")


def _tflm_interpreter(model_bytes, arena_size=None, alt_decompression_bytes=0):
  _check_tflm_can_prepare(model_bytes)
  try:
    from tflite_micro.python.tflite_micro import runtime  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "Verifying a target='micro' export runs it in TensorFlow Lite Micro, which is not "
        "installed: pip install tflite-micro (or pip install 'tfprune[micro]').") from e
  arena = arena_size or max(TFLM_HOST_ARENA_BYTES, 4 * len(model_bytes))
  try:
    return runtime.Interpreter.from_bytes(bytes(model_bytes), arena_size=arena,
                                          alt_decompression_memory_size=alt_decompression_bytes)
  except RuntimeError as e:
    if arena_size or "allocate" not in str(e):
      raise
    # Activations larger than any microcontroller's RAM: still verify, and say so.
    try:
      return runtime.Interpreter.from_bytes(
          bytes(model_bytes), arena_size=TFLM_HOST_ARENA_BYTES * 64,
          alt_decompression_memory_size=alt_decompression_bytes)
    except RuntimeError:
      raise RuntimeError(f"{e} (offered {arena} and {TFLM_HOST_ARENA_BYTES * 64} bytes of "
                         f"arena: an op is unsupported or the activations do not fit)") from e


def run_tflm(model_bytes, inputs, arena_size=None, positions=None, alt_decompression_bytes=0):
  """Runs a model in the TensorFlow Lite Micro Python interpreter.

  Args:
    model_bytes: the .tflite bytes.
    inputs: array `[n, ...]` or a list of arrays, one per input in the file's
      input order (float arrays are quantized here for int8 inputs).
    arena_size: tensor arena bytes (default: generous, from the model size).
    positions: None (the first output) or the file output positions to return
      (`output_positions`): then a list of `(float_outputs, raw_outputs)`.
    alt_decompression_bytes: alternate decompression memory offered to DECODE ops
      (0: decoded tensors live in the arena).

  Returns:
    `(float_outputs, raw_outputs)` (a list of them with `positions`).
  """
  arrays = as_input_list(inputs)
  interp = _tflm_interpreter(model_bytes, arena_size, alt_decompression_bytes)
  details = [_tflm_detail(interp.get_input_details(k)) for k in range(len(arrays))]
  which = [0] if positions is None else list(positions)
  outs = [_tflm_detail(interp.get_output_details(p)) for p in which]
  raw = [[] for _ in which]
  for j in range(len(arrays[0])):
    for k, (detail, arr) in enumerate(zip(details, arrays)):
      interp.set_input(_feed(arr[j:j + 1], detail), k)
    interp.invoke()
    for i, p in enumerate(which):
      raw[i].append(np.array(interp.get_output(p))[0].copy())
    interp.reset()
  got = [(_dequantize(np.stack(r), out), np.stack(r)) for r, out in zip(raw, outs)]
  return got[0] if positions is None else got


def tflm_arena_bytes(model_bytes, arena_size=None, alt_decompression_bytes=0):
  """Tensor-arena bytes TFLite Micro actually uses for a model.

  Allocates the model in the `tflite-micro` Python interpreter and reads its
  recording allocator's report ("Arena allocation total / head / tail", what the C++
  `MicroInterpreter::arena_used_bytes()` returns). The recording allocator keeps its
  own bookkeeping in the arena too, so the total is a slight upper bound (a few hundred
  bytes) of what a stock `MicroAllocator` on a board needs (docs/export.md).

  Args:
    model_bytes: the .tflite bytes (a target="micro" export).
    arena_size: the arena offered (default: generous, from the model size).
    alt_decompression_bytes: alternate decompression memory offered to DECODE ops
      (0: decoded tensors are planned in the arena like activations).

  Returns:
    A dict with int "total", "head" (non-persistent: activations, scratch) and
    "tail" (persistent: tensor structs, quantization data, kernel buffers) bytes.

  Raises:
    ImportError: if tflite-micro is not installed.
    RuntimeError: if the interpreter's report cannot be read.
  """
  interp = _tflm_interpreter(model_bytes, arena_size, alt_decompression_bytes)
  with capture.captured_output() as out:
    interp.print_allocations()
  found = dict(re.findall(r"Arena allocation (total|head|tail) (\d+) bytes", out.text))
  if set(found) != {"total", "head", "tail"}:
    raise RuntimeError("tflm_arena_bytes: the TFLM interpreter printed no arena report "
                       f"(got: {out.tail(5)!r}); is tflite-micro's recording allocator on?")
  return {k: int(v) for k, v in found.items()}


def check_identical_tflm(model_bytes, reference_bytes, inputs, alt_decompression_bytes=0):
  """Raises VerificationError unless `model_bytes` gives exactly the raw outputs of
  `reference_bytes` in TFLite Micro (every output, every input sample).

  Used for DECODE-compressed files, whose decoded weights must equal the uncompressed
  file's bit for bit; `alt_decompression_bytes` runs them from alternate decompression
  memory instead of the arena.
  """
  n_out = len(graph.load(reference_bytes).subgraphs[0].outputs)
  positions = list(range(n_out))
  want = run_tflm(reference_bytes, inputs, positions=positions)
  try:
    got = run_tflm(model_bytes, inputs, positions=positions,
                   alt_decompression_bytes=alt_decompression_bytes)
  except Exception as e:  # pylint: disable=broad-except
    raise VerificationError(f"TFLite Micro failed to run the compressed file: {e}") from e
  where = (f" with {alt_decompression_bytes} bytes of alternate decompression memory"
           if alt_decompression_bytes else "")
  for k, ((_, a), (_, b)) in enumerate(zip(got, want)):
    if a.shape != b.shape or not np.array_equal(a, b):
      diff = (np.max(np.abs(a.astype(np.int64) - b.astype(np.int64)))
              if a.shape == b.shape else f"shape {a.shape} vs {b.shape}")
      raise VerificationError(
          f"TFLite Micro: the compressed file's output {k} differs from the uncompressed "
          f"file's{where} (max diff {diff} quantized steps): a DECODE encoding is wrong.")


def tflm_invoke_us(model_bytes, inputs, repeats=10, alt_decompression_bytes=0):
  """Median host time of one TFLite Micro `invoke` (microseconds) over the first input
  sample, `repeats` times after one warm-up; reference kernels on this CPU, not an MCU
  figure."""
  arrays = as_input_list(inputs)
  interp = _tflm_interpreter(model_bytes, None, alt_decompression_bytes)
  for k, arr in enumerate(arrays):
    interp.set_input(_feed(arr[:1], _tflm_detail(interp.get_input_details(k))), k)
  times = []
  for _ in range(repeats + 1):
    start = time.perf_counter()
    interp.invoke()
    times.append(time.perf_counter() - start)
  return float(np.median(times[1:]) * 1e6)


def _tflm_detail(detail):
  """Converts a TFLM tensor detail to the LiteRT-style {dtype, quantization}."""
  q = detail.get("quantization_parameters") or {}
  scales, zeros = list(q.get("scales", [])), list(q.get("zero_points", []))
  quant = (float(scales[0]), int(zeros[0])) if scales else (0.0, 0)
  return {"dtype": np.dtype(detail["dtype"]).type, "quantization": quant}


def tolerance(reference, quantize, output_scale=None):
  """Allowed max abs difference for a model kind.

  Args:
    reference: reference float outputs.
    quantize: None, "dynamic" or "int8".
    output_scale: int8 output scale (float units per quantized unit).

  Returns:
    A float tolerance.
  """
  peak = float(np.max(np.abs(reference))) if reference.size else 0.0
  if quantize is None:
    return 1e-4 + 1e-3 * peak
  if quantize == "dynamic":
    return 1e-3 + 0.08 * peak
  return max(16 * (output_scale or 0.0), 0.1 * peak)


MIN_ARGMAX_AGREEMENT = 0.75  # int8 only (docs/export.md, section 4, trap 4)


def _argmax_agreement(a, b, resolution=0.0):
  """Argmax agreement of `a` with the reference `b` over its decisive samples.

  A sample is decisive when its two largest reference outputs differ by more than
  `2 * resolution`: closer than that, rounding alone can swap them. Returns None for a
  single output or when no sample is decisive.
  """
  if a.ndim < 2 or a.shape[-1] < 2:
    return None
  top2 = np.sort(b, axis=-1)[..., -2:]
  decisive = (top2[..., 1] - top2[..., 0]) > 2 * resolution
  if not np.any(decisive):
    return None
  return float(np.mean(np.argmax(a, -1)[decisive] == np.argmax(b, -1)[decisive]))


def compare(outputs, reference, quantize, output_scale=None, runtime=""):
  """Compares outputs to reference; returns a `RuntimeResult`.

  int8 also needs `MIN_ARGMAX_AGREEMENT` of the decisive samples (see
  `_argmax_agreement`) to keep their argmax; the resolution is the output scale, or for
  float outputs the reference's range (widened to hold 0, as calibration does) over the
  255 steps of an int8 output.
  """
  diff = float(np.max(np.abs(outputs - reference))) if reference.size else 0.0
  tol = tolerance(reference, quantize, output_scale)
  resolution = 0.0
  if quantize == "int8" and reference.size:
    # A calibrated int8 range always holds 0.
    resolution = output_scale or (max(float(reference.max()), 0.0)
                                  - min(float(reference.min()), 0.0)) / 255
  agree = _argmax_agreement(outputs, reference, resolution)
  ok = bool(np.all(np.isfinite(outputs))) and diff <= tol
  if quantize == "int8" and agree is not None:
    ok = ok and agree >= MIN_ARGMAX_AGREEMENT
  return RuntimeResult(runtime, ok, diff, tol, agree)


def _miss_line(label, out_name, res):
  """What a failed `RuntimeResult` missed, in words."""
  if not np.isfinite(res.max_abs_diff):
    return f"{label}: output tensor '{out_name}' is not finite (NaN or Inf)"
  agree = ("" if res.argmax_agreement is None
           else f"argmax agreement {res.argmax_agreement:.2f}")
  if res.max_abs_diff > res.tolerance:
    return (f"{label}: output tensor '{out_name}' max abs diff {res.max_abs_diff:.4g} "
            f"> tolerance {res.tolerance:.4g}" + (f" ({agree})" if agree else ""))
  return (f"{label}: output tensor '{out_name}' {agree} < {MIN_ARGMAX_AGREEMENT} on the "
          f"samples whose top two Keras outputs an int8 output can tell apart (max abs "
          f"diff {res.max_abs_diff:.4g} is within tolerance {res.tolerance:.4g})")


def sparse_readers(model_bytes):
  """Describes ops that read sparse tensors directly or via DENSIFY (suspects)."""
  model = graph.load(model_bytes)
  out = []
  for sg in model.subgraphs:
    prod = graph.producers(sg)
    for i, op in enumerate(sg.operators):
      for t in op.inputs:
        if t < 0:
          continue
        tensor = sg.tensors[t]
        via = ""
        if tensor.sparsity is None and t in prod and graph.op_code(model, sg.operators[prod[t]]) == graph.BuiltinOperator.DENSIFY:
          via = " via DENSIFY"
        elif tensor.sparsity is None:
          continue
        out.append(f"{graph.op_name(model, op)} (op #{i}, version {graph.op_version(model, op)}) "
                   f"reading sparse tensor '{graph.tensor_name(tensor)}'{via}")
  return out


def localize(model_bytes, reference_bytes, inputs, input_names=None):
  """Finds the first op whose output differs from a dense reference file.

  Both files run with XNNPACK off and all tensors preserved; op outputs are
  matched by tensor name.

  Args:
    model_bytes: the suspect .tflite bytes.
    reference_bytes: a dense conversion of the same graph.
    inputs: samples `[n, ...]` or a list of arrays, one per input (see `run_litert`).
    input_names: Keras input names (see `run_litert`).

  Returns:
    A description string, or None when every op output matches.
  """
  try:
    arrays = as_input_list(inputs)
    results = []
    for data in (model_bytes, reference_bytes):
      interp = make_litert_interpreter(data, xnnpack=False, preserve_all_tensors=True)
      details = _order_details(interp.get_input_details(), input_names)
      for detail, arr in zip(details, arrays):
        interp.set_tensor(detail["index"], _feed(arr[:file_batch(details)], detail))
      interp.invoke()
      model = graph.load(data)
      sg = model.subgraphs[0]
      outs = []
      for i, op in enumerate(sg.operators):
        for t in op.outputs:
          outs.append((graph.op_name(model, op), i, graph.tensor_name(sg.tensors[t]),
                       interp.get_tensor(t)))
      results.append(outs)
    ref = {name: val for _, _, name, val in results[1]}
    for op_name, i, name, val in results[0]:
      if name in ref and ref[name].shape == val.shape:
        a, b = val.astype(np.float64), ref[name].astype(np.float64)
        if np.max(np.abs(a - b), initial=0) > 1e-3 * max(1.0, np.max(np.abs(b), initial=0)) + 2:
          return f"{op_name} (op #{i}) output tensor '{name}' first differs"
  except Exception as e:  # pylint: disable=broad-except
    return f"(could not localize: {e})"
  return None


def _dense_disagreement(reference_bytes, reference_outputs, inputs, quantize, input_names,
                        runtimes, output_names=None):
  """Runs the dense conversion under the LiteRT `runtimes` the file failed in.

  Returns `(line, conversion_at_fault)`: a line saying where the dense file misses Keras
  too (None when it passes everywhere), and whether it misses in every one of them.
  """
  missed, passed = [], []
  for r in runtimes:
    try:
      res = _check(reference_bytes, r, reference_outputs, inputs, quantize, input_names,
                   output_names, raise_errors=True)
    except Exception:  # pylint: disable=broad-except
      return None, False
    (passed if res.ok else missed).append((r, res))
  if passed:
    if not missed:
      return None, False
    return (f"the dense conversion passes with {', '.join(_LABELS[r] for r, _ in passed)} "
            f"but misses Keras too with {', '.join(_LABELS[r] for r, _ in missed)}"), False
  worst = max(res.max_abs_diff for _, res in missed)
  peak = max(float(np.max(np.abs(r))) for r in reference_outputs)
  what = ("the converter's quantization" if quantize else "the conversion itself") + \
      ", not tfprune's sparse encoding"
  advice = ("representative data that covers the real input range, a trained model (an "
            "untrained one, e.g. with unset BatchNorm statistics, has activations that grow "
            "layer by layer and 8-bit rounding noise that compounds with them), or a float "
            "export" if quantize else "a trained model: very large activations (an untrained "
            "model with unset BatchNorm statistics) make float32 rounding differences between "
            "kernels grow over the depth")
  if not quantize and worst > FLOAT_ROUNDING_SHARE * peak:
    # Rounding alone rarely reaches this: do not blame the weights on a guess.
    what = "the converted graph computing differently from Keras, not tfprune's sparse encoding"
    advice = (f"a trained model only if activations inside the model are very large: "
              f"{worst / max(peak, 1e-30):.1%} of the output peak is more than float32 "
              f"rounding differences between kernels usually reach, so an op may compute "
              f"differently in TFLite than in Keras (or Keras itself may: check that the Keras "
              f"model gives the same outputs one sample at a time as batched); please report "
              f"it with the model")
  return (f"the dense conversion of the same graph disagrees with Keras as well (max abs diff "
          f"{worst:.4g}, output peak {peak:.4g}): the error comes from {what}; use "
          f"{advice}"), True


# A float file missing Keras by more than this share of the output peak is not blamed on
# float32 rounding (grown by large activations) alone (see `_dense_disagreement`).
FLOAT_ROUNDING_SHARE = 0.01

_LABELS = {"xnnpack": "LiteRT with XNNPACK", "builtin": "LiteRT without XNNPACK",
           "tflm": "TFLite Micro"}


def _check(model_bytes, runtime, references, inputs, quantize, input_names,
           output_names=None, raise_errors=False):
  """Runs `model_bytes` under one runtime and compares every output; a `RuntimeResult`.

  `references` is a list of Keras outputs `[n, -1]`, matched to the file's outputs by
  `output_names` (`output_positions`). A failure to run is a failed result (raised
  instead with `raise_errors`).
  """
  try:
    positions = output_positions(model_bytes, output_names) if output_names else (
        list(range(len(references))))
    if runtime == "tflm":
      sg = graph.load(model_bytes).subgraphs[0]
      got = []
      for (y, _), p in zip(run_tflm(model_bytes, inputs, positions=positions), positions):
        q = sg.tensors[sg.outputs[p]].quantization
        got.append((y, float(q.scale[0]) if q is not None and q.scale is not None
                    and len(q.scale) else None))
    else:
      got = [(y, detail["quantization"][0] or None) for y, _, detail in run_litert_outputs(
          model_bytes, inputs, xnnpack=(runtime == "xnnpack"), input_names=input_names,
          positions=positions)]
    parts = []
    for k, ((y, scale), ref) in enumerate(zip(got, references)):
      res = compare(y.reshape(ref.shape), ref, quantize, scale, runtime)
      res.output = output_names[k] if output_names else ""
      parts.append(res)
  except ImportError:  # a runtime that is not installed: not a disagreement
    raise
  except Exception as e:  # pylint: disable=broad-except
    if raise_errors:
      raise
    return RuntimeResult(runtime, False, error=str(e).strip().splitlines()[0]
                         if str(e).strip() else repr(e))
  if len(parts) == 1:
    return parts[0]
  agree = [p.argmax_agreement for p in parts if p.argmax_agreement is not None]
  worst = max(parts, key=lambda p: (not p.ok, p.max_abs_diff
                                    if np.isfinite(p.max_abs_diff) else np.inf))
  return RuntimeResult(runtime, all(p.ok for p in parts), worst.max_abs_diff, worst.tolerance,
                       min(agree) if agree else None, output=worst.output, outputs=parts)


def verify(model_bytes, reference_outputs, inputs, quantize=None,
           runtimes=("xnnpack", "builtin"), reference_bytes=None, input_names=None,
           output_names=None):
  """Checks a .tflite file against reference (Keras) outputs.

  Args:
    model_bytes: the .tflite bytes.
    reference_outputs: Keras outputs for `inputs`, float `[n, ...]`; for a model with
      several outputs a list of them (Keras output order, see `output_names`).
    inputs: samples `[n, ...]`, or a list of arrays, one per model input (see
      `run_litert`).
    quantize: None, "dynamic" or "int8" (sets the tolerance).
    runtimes: subset of ("xnnpack", "builtin", "tflm").
    reference_bytes: optional dense conversion used to name the failing op (or, when
      it disagrees with Keras too, to say the error is the conversion's; it may be
      `model_bytes` itself).
    input_names: Keras input names, matched to the file's inputs (several inputs).
    output_names: the file's signature names of the reference outputs (dict keys,
      or `output_<i>`), used to match them to the file's outputs: EVERY output is
      compared, each with its own tolerance. Default: the file's order.

  Returns:
    A list of `RuntimeResult`, all ok (with `outputs`, one per output, for several).

  Raises:
    VerificationError: if any runtime fails to run or disagrees on any output; the
      message names the runtime, each output tensor that misses with its diff, and
      the suspect op/tensor.
    ValueError: on an unknown runtime name.
  """
  for r in runtimes:
    if r not in RUNTIMES:
      raise ValueError(f"Unknown runtime {r!r}; valid: {RUNTIMES}.")
  n = len(as_input_list(inputs)[0])
  several = isinstance(reference_outputs, (list, tuple))
  references = [np.asarray(r, np.float32).reshape(n, -1)
                for r in (reference_outputs if several else [reference_outputs])]
  if output_names is not None and len(output_names) != len(references):
    raise ValueError(f"output_names {list(output_names)} do not match the "
                     f"{len(references)} reference outputs.")
  model = graph.load(model_bytes)
  sg = model.subgraphs[0]
  positions = output_positions(model_bytes, output_names) if output_names else list(
      range(len(references)))
  tensor_names = [graph.tensor_name(sg.tensors[sg.outputs[p]]) for p in positions]
  results, failures = [], []
  for r in runtimes:
    res = _check(model_bytes, r, references, inputs, quantize, input_names, output_names)
    results.append(res)
    if not res.ok:
      failures.append(res)
  if failures:
    lines = []
    for f in failures:
      label = _LABELS[f.runtime]
      if f.error:
        lines.append(f"{label}: failed to run: {f.error}")
        continue
      for k, part in enumerate(f.outputs or [f]):
        where = f"{label}, Keras output '{part.output}'" if part.output else label
        if not part.ok:
          lines.append(_miss_line(where, tensor_names[k], part))
        elif f.outputs:
          lines.append(f"{where}: ok (max abs diff {part.max_abs_diff:.4g} <= tolerance "
                       f"{part.tolerance:.4g})")
    same = reference_bytes is not None and bytes(reference_bytes) == bytes(model_bytes)
    where = (localize(model_bytes, reference_bytes, inputs, input_names)
             if reference_bytes and not same else None)
    suspects = sparse_readers(model_bytes)
    conversion_at_fault = False
    if where:
      lines.append(f"first differing op (XNNPACK off): {where}")
    elif reference_bytes:
      litert = [f.runtime for f in failures if f.runtime != "tflm"]
      dense, conversion_at_fault = _dense_disagreement(
          reference_bytes, references, inputs, quantize, input_names,
          litert, output_names) if litert else (None, False)
      if dense:
        lines.append(dense)
      if conversion_at_fault:
        suspects = []   # the dense file misses as much: the sparse weights are not at fault
    if suspects:
      lines.append("ops reading sparse weights: " + "; ".join(suspects))
    raise VerificationError("TFLite model disagrees with the Keras model:\n  " + "\n  ".join(lines),
                            conversion_at_fault=conversion_at_fault)
  return results
