"""Float islands in an int8 file: the ops whose activations 8 bits cannot represent.

Full-integer quantization gives every activation tensor one int8 scale from its calibrated
range (shared along ops that need equal scales: reshapes, selects, concatenations). What
breaks that on models we did not design (docs/export.md, section 13):

* an outlier range: attention masks written as `where(mask, logits, -1e9)` (keras_hub's
  Gemma, Bloom, Falcon, Qwen...) give the logits a range of 1e9, so one int8 step is
  ~4e6 and every real logit rounds to the same value: the softmax becomes uniform;
* a divisor that rounds to its zero point: LiteRT's int8 DIV refuses to run
  ("data[i] != zero_point") when a divisor (e.g. an RMSNorm's sqrt(mean(x^2))) is closer
  to zero than half a quantization step. An int8 range always holds 0, and the inputs
  met after calibration can be smaller, so every DIV by a computed divisor stays float;
* rounding error that compounds: some ops add far more error than the rest (found by
  running the int8 file and the calibrated float file side by side).

`Islands.quantize(calibrated, quantize)` quantizes the converter's calibrated model, leaves
the ops of the first two kinds float (for a QUANTIZE the quantizer inserted, the ops that
read it) until none is left, then, while `check` (the exporter's verification) fails,
leaves float the ops that add the most error, doubling their number each round. The
exporter does this only when the full-int8 file failed its verification, for targets
that run float ops (`Target.float_islands`), and verifies the result again.
"""
import numpy as np

from tfprune.export import graph
from tfprune.export import verify

# An int8 tensor whose range (255 steps) exceeds this many times the median range of the
# model's int8 activations is an outlier (masks: ~1e8 times; activations: within ~1e2).
OUTLIER_FACTOR = 1e3
MAX_ROUNDS = 8
# The error-guided rounds stop when this share of the ops would be float.
MAX_FLOAT_SHARE = 0.25
ERROR_SAMPLES = 4
_OUTLIER, _DIV_ZERO, _ERROR = ("an outlier int8 range", "a DIV by a computed int8 divisor, "
                               "which can round to its zero point (LiteRT then refuses "
                               "to run it)",
                               "the largest int8 rounding error")
_INT8 = 9  # TensorType.INT8
_QUANT_OPS = (graph.BuiltinOperator.QUANTIZE, graph.BuiltinOperator.DEQUANTIZE)


def _int8(t):
  q = None if t is None else t.quantization
  if t is None or t.type != _INT8 or q is None or q.scale is None or len(q.scale) != 1:  # pylint: disable=g-explicit-length-test
    return None
  return float(q.scale[0]), int(q.zeroPoint[0])


def _ops(data):
  """[(opcode, input tensors, output tensors)] of a file's first subgraph; constant
  input tensors (weights) are left out (None)."""
  model = graph.load(data)
  sub = model.subgraphs[0]

  def activation(i):
    if i < 0:
      return None
    t = sub.tensors[i]
    buf = model.buffers[t.buffer] if 0 < t.buffer < len(model.buffers) else None
    return None if buf is not None and buf.data is not None and len(buf.data) else t  # pylint: disable=g-explicit-length-test

  return [(graph.builtin_code(model.operatorCodes[op.opcodeIndex]),
           [activation(i) for i in op.inputs],
           [sub.tensors[o] for o in op.outputs]) for op in sub.operators]


def _name(t):
  return graph.tensor_name(t)


class Islands:
  """Finds and keeps float the ops int8 cannot represent.

  Attributes:
    kept: [(op output tensor name, why)].
  """

  def __init__(self, check=None, inputs=None, input_names=None):
    """`check(data) -> bool`: whether a file passes; `inputs` feed the error rounds."""
    self.kept, self._check, self._inputs, self._names = [], check, inputs, input_names

  def summary(self):
    """One line: the kept ops grouped by why (names shortened to their last two parts)."""
    groups = {}
    for name, why in self.kept:
      groups.setdefault(why, []).append("/".join(name.split("/")[-2:]))
    return "; ".join(f"{len(n)} with {why}: {', '.join(n)}" for why, n in groups.items())

  def _structural(self, data):
    """[(name, why)] of outlier ranges and zero-point divisors in a quantized file."""
    ops = _ops(data)
    widths = [255 * q[0] for _, _, outs in ops for t in outs for q in [_int8(t)]
              if q and len(t.shape) > 1]
    median = float(np.median(widths)) if widths else 0.0
    readers = {}
    for _, ins, outs in ops:
      for t in ins:
        if t is not None:
          readers.setdefault(_name(t), []).extend(outs)
    found = []
    for opcode, ins, outs in ops:
      for t in outs:
        q = _int8(t)
        if q and median and 255 * q[0] > OUTLIER_FACTOR * median:
          # A QUANTIZE the quantizer put before an op: that op reads the outlier scale.
          targets = (readers.get(_name(t), []) if opcode == graph.BuiltinOperator.QUANTIZE
                     else [t])
          found += [(_name(r), _OUTLIER) for r in targets]
      if opcode == graph.BuiltinOperator.DIV and len(ins) > 1 and _int8(ins[1]):
        # An int8 range always holds 0: any computed divisor near 0 (an RMSNorm's
        # sqrt(mean(x^2)) of a small input) rounds to the zero point, beyond calibration.
        found += [(_name(t), _DIV_ZERO) for t in outs]
    return found

  def _errors(self, data, calibrated):
    """[(name, error added)] of the int8 file's ops, largest first: each op's relative
    RMS error against the calibrated float file minus the largest of its inputs'."""
    values = []
    for model_bytes in (data, calibrated):
      interp = verify.make_litert_interpreter(model_bytes, xnnpack=False,
                                              preserve_all_tensors=True)
      details = verify._order_details(interp.get_input_details(), self._names)  # pylint: disable=protected-access
      arrays = verify.as_input_list(self._inputs)
      step = verify.file_batch(details)
      runs = []
      for j in range(0, min(len(arrays[0]), ERROR_SAMPLES), step):
        for detail, arr in zip(details, arrays):
          interp.set_tensor(detail["index"], verify._feed(arr[j:j + step], detail))  # pylint: disable=protected-access
        interp.invoke()
        run = {}
        for d in interp.get_tensor_details():
          try:
            run[d["name"]] = (interp.get_tensor(d["index"]), d["quantization"])
          except ValueError:  # a tensor the run did not keep (no data)
            continue
        runs.append(run)
      values.append(runs)
    quant, flt = values

    def rel(name, ref_name):
      num = den = 0.0
      for q_run, f_run in zip(quant, flt):
        if name not in q_run or ref_name not in f_run:
          return None
        (a, (scale, zero)), (b, _) = q_run[name], f_run[ref_name]
        if a.shape != b.shape:
          return None
        a = (a.astype(np.float64) - zero) * scale if scale else a.astype(np.float64)
        num += float(np.sum((a - b) ** 2))
        den += float(np.sum(np.asarray(b, np.float64) ** 2))
      return np.sqrt(num / den) if den > 0 else None

    ref, err, out = {}, {}, []
    for opcode, ins, outs in _ops(data):
      for t in outs:
        n = _name(t)
        source = _name(ins[0]) if opcode in _QUANT_OPS and ins[0] is not None else None
        ref[n] = ref.get(source, source) if source else n  # (re)quantized: its input's value
        err[n] = rel(n, ref[n])
      if opcode in _QUANT_OPS:
        continue
      before = max([err.get(_name(t)) or 0.0 for t in ins if t is not None] or [0.0])
      for t in outs:
        if err[_name(t)] is not None:
          out.append((_name(t), err[_name(t)] - before))
    return sorted(out, key=lambda e: -e[1])

  def quantize(self, calibrated, quantize):
    """The int8 file of `calibrated` with the islands left float (see the module)."""
    data = quantize([])
    for _ in range(MAX_ROUNDS):
      names = {n for n, _ in self.kept}
      new = list(dict((n, why) for n, why in self._structural(data) if n not in names).items())
      if not new:
        break
      self.kept += new
      data = quantize([n for n, _ in self.kept])
    if self._check is None or self._inputs is None:
      return data
    limit = MAX_FLOAT_SHARE * len(_ops(data))
    for _ in range(MAX_ROUNDS):
      if self._check(data) or len(self.kept) >= limit:
        break
      names = {n for n, _ in self.kept}
      try:
        errors = self._errors(data, calibrated)
      except (ValueError, RuntimeError):  # a file the side-by-side run cannot feed
        break
      worst = [n for n, _ in errors if n not in names]
      if not worst:
        break
      self.kept += [(n, _ERROR) for n in worst[:max(1, len(self.kept))]]
      data = quantize([n for n, _ in self.kept])
    return data
