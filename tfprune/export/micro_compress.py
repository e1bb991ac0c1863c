"""TFLite Micro DECODE compression: pruning bitmasks and look-up tables (docs/export.md, 11).

TFLM's custom operator `TFLM_DECODE` turns a compressed constant into the dense tensor
its consumer reads. Each compressed constant becomes a UINT8 "encoded" tensor plus a
UINT8 "ancillary" tensor (a 16-byte header, then type-specific data), and one DECODE
op is inserted right before every op that reads it; the decoded tensor keeps the
original's shape, type and quantization.

Encodings written here (layouts in docs/export.md, section 11):
* PRUNING (decode type 2): one bit per element, flat row-major order, most significant
  bit first (1 = the next kept value, 0 = the element's zero point: its channel's along
  the quantized dimension); the ancillary data holds the kept values in the tensor's own
  type, little-endian.
* LUT (decode type 0): `bits`-wide indices (1-7 bits, most significant bit first) into one
  value table per tensor or per channel (axis 0 or the last axis).

Never larger than the uncompressed file: a tensor is compressed only when its encoding
plus the DECODE bookkeeping is smaller than its dense bytes, and `compress_model`'s
caller keeps the uncompressed file when the whole compressed one is not smaller.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ai_edge_litert import schema_py_generated as schema
from tfprune.export import graph

COMPRESS_MODES = ("off", "pruning", "lut", "auto")
DECODE_OP = "TFLM_DECODE"
DECODE_LUT = 0
DECODE_PRUNING = 2
HEADER_BYTES = 16
MAX_LUT_BITS = 7          # the LUT header's bitwidth field holds 1-7
MAX_LUT_STRIDE = 128      # and its value-table stride field at most 128 values
PER_TENSOR_AXIS = 0xF
# Flatbuffer bytes a compressed tensor adds besides its encoded and ancillary data: two
# tensor tables and buffers, and per reading op one DECODE operator and one decoded
# tensor (measured on conv/FC exports: 216 bytes for one reader, 348 for two). An
# estimate used only to skip tensors where nothing can be won; the whole file is
# compared exactly afterwards.
DECODE_TENSOR_OVERHEAD_BYTES = 84
DECODE_READER_OVERHEAD_BYTES = 132
ALIGN = 16                # TFLM aligns every tensor buffer it allocates to 16 bytes

B = schema.BuiltinOperator
# The operator inputs a DECODE output may feed: TFLM's reference kernels read these only
# in Eval (weights and bias of the conv and FC kernels), never at Prepare time as
# constants (TRANSPOSE_CONV's input 0, the output shape, must stay constant).
DECODABLE_INPUTS = {
    B.CONV_2D: (1, 2),
    B.DEPTHWISE_CONV_2D: (1, 2),
    B.FULLY_CONNECTED: (1, 2),
    B.TRANSPOSE_CONV: (1, 3),
}


@dataclasses.dataclass
class Encoded:
  """One tensor's encoding: `kind` ("pruning" or "lut<bits>"), the encoded and ancillary
  bytes."""
  kind: str
  encoded: bytes
  ancillary: bytes

  @property
  def nbytes(self):
    return len(self.encoded) + len(self.ancillary)


def _header(decode_type, user_data=b""):
  head = bytearray(HEADER_BYTES)
  head[0] = decode_type
  head[1] = 1                       # DECODE common metadata version
  head[4:4 + len(user_data)] = user_data
  return bytes(head)


def channel_axis(tensor, shape):
  """The quantized dimension when the tensor has several scales, else None."""
  q = tensor.quantization
  if q is None or q.scale is None or len(q.scale) <= 1:
    return None
  return int(q.quantizedDimension) % len(shape)


def zero_points(tensor, shape):
  """Per-element zero point of a (quantized) constant, broadcastable to `shape`, as
  TFLM's pruning decoder fills the 0-bits; None when that decoder cannot (only int8
  tensors with one zero point per channel may have nonzero zero points)."""
  q = tensor.quantization
  zp = None if q is None or q.zeroPoint is None else np.asarray(q.zeroPoint, np.int64)
  if zp is None or zp.size == 0 or not np.any(zp):
    return np.zeros((), np.int64)
  axis = channel_axis(tensor, shape)
  if tensor.type != schema.TensorType.INT8 or axis is None or zp.size != shape[axis]:
    return None
  view = [1] * len(shape)
  view[axis] = zp.size
  return zp.reshape(view)


def encode_pruning(values, zero_point):
  """PRUNING encoding of `values` (any shape and dtype) whose pruned elements equal
  `zero_point` (broadcastable); None when nothing is pruned."""
  mask = (values.astype(np.int64) != zero_point) if values.dtype.kind in "iu" else (values != 0)
  mask = np.broadcast_to(mask, values.shape).ravel()
  if mask.all():
    return None
  kept = values.ravel()[mask]
  bits = np.packbits(mask.astype(np.uint8), bitorder="big").tobytes()
  user = bytes([1])                 # pruning format version (DCM byte 4)
  data = kept.astype(kept.dtype.newbyteorder("<"), copy=False).tobytes()
  return Encoded("pruning", bits, _header(DECODE_PRUNING, user) + data)


def _pack_indices(indices, bits):
  """`indices` (uint) as `bits`-wide fields, most significant bit first, zero-padded."""
  shifts = np.arange(bits - 1, -1, -1, dtype=np.uint8)
  flat = ((indices.ravel().astype(np.uint8)[:, None] >> shifts) & 1).astype(np.uint8)
  return np.packbits(flat.ravel(), bitorder="big").tobytes()


def _lut_tables(values, axis):
  """(tables, indices) for one table (axis None) or one per slice along `axis`."""
  if axis is None:
    table, idx = np.unique(values, return_inverse=True)
    return [table], idx.reshape(values.shape)
  tables, idx = [], []
  for part in np.moveaxis(values, axis, 0):
    table, i = np.unique(part, return_inverse=True)
    tables.append(table)
    idx.append(i.reshape(part.shape))
  return tables, np.moveaxis(np.stack(idx), 0, axis)


def encode_lut(values, axis, max_bits=MAX_LUT_BITS):
  """LUT encoding of `values` with one table per slice along `axis` (None: one table),
  or None when a table would need more than 2^max_bits values.

  TFLM takes the tables' channel axis from the decoded tensor's quantization (one table
  per scale, along the quantized dimension, which must be 0 or the last), not from the
  header's axis field; the header still names it.
  """
  tables, idx = _lut_tables(values, axis)
  stride = max(len(t) for t in tables)
  bits = max(1, int(stride - 1).bit_length())
  if bits > max_bits or stride > MAX_LUT_STRIDE:
    return None
  body = b"".join(np.pad(t, (0, stride - len(t))).astype(t.dtype.newbyteorder("<"))
                  .tobytes() for t in tables)
  user = bytes([1, ((PER_TENSOR_AXIS if axis is None else axis) << 4) | bits, stride])
  return Encoded(f"lut{bits}", _pack_indices(idx, bits), _header(DECODE_LUT, user) + body)


def choose(values, zero_point, axis, mode, readers=1):
  """The encoding `mode` picks for one constant (channel axis `axis` or None, read by
  `readers` ops), or None to keep it dense."""
  cands = []
  if mode in ("pruning", "auto") and zero_point is not None:
    cands.append(encode_pruning(values, zero_point))
  if mode in ("lut", "auto"):
    cands.append(encode_lut(values, axis))
  overhead = DECODE_TENSOR_OVERHEAD_BYTES + readers * DECODE_READER_OVERHEAD_BYTES
  cands = [c for c in cands if c is not None and c.nbytes + overhead < values.nbytes]
  return min(cands, key=lambda c: c.nbytes) if cands else None


@dataclasses.dataclass
class TensorEncoding:
  """What `compress_model` did with one constant read by a decodable op input."""
  name: str
  op: str
  shape: tuple
  dtype: str
  encoding: str       # "dense", "pruning" or "lut<bits>"
  dense_bytes: int
  bytes: int          # encoded + ancillary data (dense: the dense bytes)
  decoded_bytes: int  # arena bytes of the decoded tensor (0 when dense)


def _decodable(model, sg, shared):
  """Maps constant tensor index -> list of (op index, input position) reading it, for the
  constants that only decodable op inputs read.

  A buffer that several tensors share (`shared`: buffer -> tensors, the converter merges
  identical constants, e.g. zero biases) is left dense: its bytes stay in the file while
  any alias reads them.
  """
  out = {}
  for t, uses in graph.consumers(sg).items():
    if graph.buffer_bytes(model, sg.tensors[t]) is None or shared[sg.tensors[t].buffer] > 1:
      continue
    if all(pos in DECODABLE_INPUTS.get(graph.op_code(model, sg.operators[i]), ())
           for i, pos in uses):
      out[t] = uses
  return out


def _is_decode_code(opcode):
  return graph.builtin_code(opcode) == B.CUSTOM and graph.text(opcode.customCode) == DECODE_OP


def _custom_opcode(model):
  for i, oc in enumerate(model.operatorCodes):
    if _is_decode_code(oc):
      return i
  oc = schema.OperatorCodeT()
  oc.builtinCode = B.CUSTOM
  oc.deprecatedBuiltinCode = B.CUSTOM
  oc.customCode = DECODE_OP
  oc.version = 1
  model.operatorCodes.append(oc)
  return len(model.operatorCodes) - 1


def _new_tensor(sg, shape, ttype, name="", quantization=None):
  t = schema.TensorT()
  t.shape = np.asarray(shape, np.int32)
  t.type = ttype
  t.name = name
  t.buffer = 0
  t.quantization = quantization
  sg.tensors.append(t)
  return len(sg.tensors) - 1


def _uint8_constant(model, sg, data, name=""):
  index = _new_tensor(sg, (len(data),), schema.TensorType.UINT8, name)
  graph.set_constant(model, sg.tensors[index], np.frombuffer(data, np.uint8))
  return index


def _aligned(n):
  return -(-n // ALIGN) * ALIGN


def compress_model(model, mode):
  """Compresses the decodable constants of a TFLM model in place.

  Args:
    model: `schema.ModelT` of a full-int8 micro export (no sparse tensors).
    mode: one of `COMPRESS_MODES`; "off" does nothing.

  Returns:
    `(reports, alt_bytes)`: a `TensorEncoding` per constant that a decodable op input
    reads, and the alternate decompression memory a board needs so that no decoded
    tensor lives in the arena (the largest DECODE op's outputs, each 16-byte aligned).
  """
  if mode not in COMPRESS_MODES:
    raise ValueError(f"compress must be one of {COMPRESS_MODES}, got {mode!r}.")
  reports = []
  opcode = None
  shared = {}
  for sg in model.subgraphs:
    for tensor in sg.tensors:
      shared[tensor.buffer] = shared.get(tensor.buffer, 0) + 1
  for sg in model.subgraphs:
    chosen = {}
    for t, uses in sorted(_decodable(model, sg, shared).items()):
      tensor = sg.tensors[t]
      shape = tuple(int(d) for d in tensor.shape)
      values = graph.constant_array(model, tensor)
      if values is None or values.size != int(np.prod(shape)):
        continue
      values = values.reshape(shape)
      axis = channel_axis(tensor, shape)
      # TFLM's decoders take the channel of an element from the quantized dimension and
      # accept only the first or the last axis.
      enc = None if mode == "off" or axis not in (None, 0, len(shape) - 1) else choose(
          values, zero_points(tensor, shape), axis, mode, len({i for i, _ in uses}))
      first_op = graph.op_name(model, sg.operators[uses[0][0]])
      reports.append(TensorEncoding(
          graph.tensor_name(tensor), first_op, shape, graph.type_name(tensor),
          enc.kind if enc else "dense", values.nbytes, enc.nbytes if enc else values.nbytes,
          values.nbytes if enc else 0))
      if enc is not None:
        chosen[t] = enc
    if not chosen:
      continue
    opcode = _custom_opcode(model) if opcode is None else opcode
    encoded_index = {}
    for t, enc in chosen.items():
      encoded_index[t] = (_uint8_constant(model, sg, enc.encoded),
                          _uint8_constant(model, sg, enc.ancillary))
    new_ops = []
    for op in sg.operators:
      reads = [(pos, t) for pos, t in enumerate(op.inputs) if t in chosen]
      if reads:
        dec = schema.OperatorT()
        dec.opcodeIndex = opcode
        dec.inputs, dec.outputs = [], []
        for pos, t in reads:
          old = sg.tensors[t]
          out = _new_tensor(sg, old.shape, old.type, graph.tensor_name(old), old.quantization)
          dec.inputs += list(encoded_index[t])
          dec.outputs.append(out)
          op.inputs[pos] = out
        new_ops.append(dec)
      new_ops.append(op)
    sg.operators = new_ops
  graph.compact(model)
  return reports, alt_decompression_bytes(model)


def is_decode(model, op):
  """Whether `op` is a TFLM DECODE operator."""
  return _is_decode_code(model.operatorCodes[op.opcodeIndex])


def _tensor_bytes(tensor):
  return int(np.prod(tensor.shape)) * np.dtype(graph.NUMPY_TYPES[int(tensor.type)]).itemsize


def alt_decompression_bytes(model):
  """Alternate decompression memory that keeps every decoded tensor out of the arena.

  TFLM restarts the alternate region at each DECODE op's Prepare and places that op's
  outputs one after the other, each 16-byte aligned; a tensor that does not fit goes to
  the arena. So the size needed is the largest DECODE op's aligned outputs (0 without
  DECODE ops).
  """
  best = 0
  for sg in model.subgraphs:
    for op in sg.operators or []:
      if is_decode(model, op):
        best = max(best, sum(_aligned(_tensor_bytes(sg.tensors[t])) for t in op.outputs))
  return best


@dataclasses.dataclass
class MemoryReport:
  """What a TFLite Micro export costs on a board (`ExportResult.memory`).

  Attributes:
    flash_bytes: the file (the model's share of flash).
    uncompressed_flash_bytes: the same export without DECODE compression.
    tensors: a `TensorEncoding` per constant a conv/FC weight or bias input reads.
    arena_bytes: TFLM tensor arena with every decoded tensor in the arena.
    arena_bytes_alt: the arena when the application gives TFLM alternate decompression
      memory of `alt_decompression_bytes` (`MicroInterpreter::SetDecompressionMemory`).
    alt_decompression_bytes: that memory's size (0 without DECODE ops).
    uncompressed_arena_bytes: the arena of the uncompressed file.
    invoke_us, uncompressed_invoke_us: median host time of one TFLM invoke (reference
      kernels on this CPU), compressed and uncompressed.
  """
  flash_bytes: int
  uncompressed_flash_bytes: int
  tensors: list
  arena_bytes: int
  arena_bytes_alt: int
  alt_decompression_bytes: int
  uncompressed_arena_bytes: int
  invoke_us: float
  uncompressed_invoke_us: float

  def table(self):
    """Plain-text per-tensor encodings, then `summary()`."""
    width = max([len("tensor")] + [len(t.name) for t in self.tensors])
    rows = [f"{'tensor':{width}s} {'op':18s} {'encoding':9s} {'dense B':>9s} {'flash B':>9s}"]
    for t in self.tensors:
      rows.append(f"{t.name:{width}s} {t.op[:18]:18s} {t.encoding:9s} {t.dense_bytes:9d} "
                  f"{t.bytes:9d}")
    return "\n".join(rows + [self.summary()])

  def summary(self):
    """Three lines: flash, arena (both ways) and host invoke time."""
    rows = []
    ratio = self.flash_bytes / max(1, self.uncompressed_flash_bytes)
    rows.append(f"flash: {self.flash_bytes} bytes ({ratio:.2f}x of the uncompressed "
                f"{self.uncompressed_flash_bytes})")
    if self.alt_decompression_bytes:
      rows.append(f"arena: {self.arena_bytes} bytes with decoded tensors in the arena; "
                  f"{self.arena_bytes_alt} bytes with {self.alt_decompression_bytes} bytes of "
                  f"alternate decompression memory (uncompressed: "
                  f"{self.uncompressed_arena_bytes})")
    else:
      rows.append(f"arena: {self.arena_bytes} bytes")
    rows.append(f"TFLM invoke (host, reference kernels): {self.invoke_us:.0f} us "
                f"(uncompressed {self.uncompressed_invoke_us:.0f} us)")
    return "\n".join(rows)


def describe(ancillary):
  """The encoding an ancillary tensor names ("pruning", "lut<bits>"), or raises
  ValueError for a header this module does not write."""
  head = bytes(ancillary[:HEADER_BYTES])
  if len(head) < HEADER_BYTES or head[1] != 1:
    raise ValueError("DECODE ancillary data shorter than its 16-byte header, or of an "
                     "unknown header version")
  if head[0] == DECODE_PRUNING:
    return "pruning"
  if head[0] == DECODE_LUT:
    return f"lut{head[5] & 0x7}"
  raise ValueError(f"DECODE type {head[0]} (tfprune reads LUT 0 and PRUNING 2)")


def decode(encoded, ancillary, shape, dtype, zero_point=0, channel_axis=None):
  """Inverse of `encode_pruning` / `encode_lut`: the dense array of `shape` and `dtype`.

  Args:
    encoded, ancillary: the two DECODE inputs' bytes.
    shape, dtype: the decoded tensor's.
    zero_point: per-element zero points (pruning), broadcastable to `shape`.
    channel_axis: the decoded tensor's quantized dimension when it has several scales
      (the LUT tables' axis), else None.

  Raises:
    ValueError: when the bytes do not hold a tensor of that shape and type.
  """
  kind = describe(ancillary)
  dtype = np.dtype(dtype).newbyteorder("<")
  n = int(np.prod(shape))
  body = bytes(ancillary[HEADER_BYTES:])
  if kind == "pruning":
    if len(encoded) < -(-n // 8):
      raise ValueError(f"pruning bitmask of {len(encoded)} bytes for {n} elements")
    mask = np.unpackbits(np.frombuffer(bytes(encoded), np.uint8), bitorder="big")[:n] > 0
    kept = int(mask.sum())
    if len(body) < kept * dtype.itemsize:
      raise ValueError(f"{kept} kept values need {kept * dtype.itemsize} bytes, the "
                       f"ancillary data holds {len(body)}")
    out = np.broadcast_to(np.asarray(zero_point), shape).astype(dtype).ravel().copy()
    out[mask] = np.frombuffer(body[:kept * dtype.itemsize], dtype)
    return out.reshape(shape).astype(dtype.newbyteorder("="))
  bits, stride = ancillary[5] & 0x7, ancillary[6]
  if bits == 0 or stride == 0 or len(encoded) < -(-n * bits // 8):
    raise ValueError(f"LUT of {bits}-bit indices and stride {stride} cannot hold {n} elements")
  fields = np.unpackbits(np.frombuffer(bytes(encoded), np.uint8), bitorder="big")
  fields = fields[:n * bits].reshape(n, bits).astype(np.int64)
  idx = (fields << np.arange(bits - 1, -1, -1)).sum(axis=1)
  channels = 1 if channel_axis is None else int(shape[channel_axis])
  if len(body) < channels * stride * dtype.itemsize or np.any(idx >= stride):
    raise ValueError(f"LUT value tables too short for {channels} channel(s) of {stride} values")
  tables = np.frombuffer(body[:channels * stride * dtype.itemsize], dtype).reshape(channels,
                                                                                   stride)
  if channel_axis is None:
    chan = np.zeros(n, np.int64)
  else:
    chan = np.moveaxis(np.broadcast_to(
        np.arange(channels).reshape([-1 if a == channel_axis else 1 for a in range(len(shape))]),
        shape), 0, 0).ravel()
  return tables[chan, idx].reshape(shape).astype(dtype.newbyteorder("="))
