"""Small helpers over the TFLite flatbuffer object API (`schema_py_generated`).

Reading, writing and querying a `ModelT`: op names, tensor dtypes, constant data,
producers/consumers, adding ops and opcodes, and removing dead tensors/buffers.
No sparse or conversion policy lives here.
"""
import numpy as np

from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.tools import flatbuffer_utils

BuiltinOperator = schema.BuiltinOperator
TensorType = schema.TensorType

OP_NAMES = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}
TYPE_NAMES = {v: k for k, v in vars(TensorType).items() if not k.startswith("_")}
NUMPY_TYPES = {
    TensorType.FLOAT32: np.float32, TensorType.FLOAT16: np.float16,
    TensorType.FLOAT64: np.float64, TensorType.INT32: np.int32,
    TensorType.INT64: np.int64, TensorType.INT16: np.int16,
    TensorType.INT8: np.int8, TensorType.UINT8: np.uint8,
    TensorType.BOOL: np.bool_,
}


def load(model_bytes):
  """Parses TFLite bytes into a mutable `schema.ModelT`."""
  return flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))


# The schema's `Buffer.data` carries `force_align: 16`, which the C++ converter honours
# and TFLM's kernels rely on (e.g. DECODE's LUT reads 64-bit words of indices, int32 and
# int64 values are read in place); the generated Python `BufferT.Pack` aligns uint8 data
# to 4 bytes only.
BUFFER_ALIGNMENT = 16


class _AlignedBufferT(schema.BufferT):
  """A `BufferT` whose data starts on a `BUFFER_ALIGNMENT`-byte boundary of the file."""

  def Pack(self, builder):  # pylint: disable=invalid-name  (the generated API's name)
    if self.data is None or len(self.data) == 0:
      return super().Pack(builder)
    payload = np.asarray(self.data, np.uint8).tobytes()
    builder.StartVector(1, len(payload), BUFFER_ALIGNMENT)
    builder.head -= len(payload)
    builder.Bytes[builder.head:builder.head + len(payload)] = payload
    data = builder.EndVector()
    schema.BufferStart(builder)
    schema.BufferAddData(builder, data)
    schema.BufferAddOffset(builder, self.offset)
    schema.BufferAddSize(builder, self.size)
    return schema.BufferEnd(builder)


def dump(model):
  """Serialises a `schema.ModelT` to bytes, every buffer's data 16-byte aligned."""
  original = model.buffers
  aligned = []
  for buf in original or []:
    copy = _AlignedBufferT()
    copy.__dict__.update(buf.__dict__)
    aligned.append(copy)
  model.buffers = aligned
  try:
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
  finally:
    model.buffers = original


def builtin_code(opcode):
  """The builtin operator code of an `OperatorCodeT`."""
  return max(int(opcode.builtinCode), int(opcode.deprecatedBuiltinCode))


def op_code(model, op):
  """Builtin code of operator `op`."""
  return builtin_code(model.operatorCodes[op.opcodeIndex])


def op_name(model, op):
  """Human-readable name of operator `op`, e.g. "FULLY_CONNECTED" or "CUSTOM(x)"."""
  opcode = model.operatorCodes[op.opcodeIndex]
  code = builtin_code(opcode)
  if code == BuiltinOperator.CUSTOM:
    return f"CUSTOM({text(opcode.customCode)})"
  return OP_NAMES.get(code, f"OP_{code}")


def op_version(model, op):
  return int(model.operatorCodes[op.opcodeIndex].version)


def text(value):
  """A flatbuffer string field as str; bytes that are not UTF-8 are replaced."""
  if isinstance(value, (bytes, bytearray)):
    return value.decode("utf-8", "replace")
  return "" if value is None else str(value)


def tensor_name(tensor):
  return text(tensor.name)


def type_name(tensor):
  return TYPE_NAMES.get(int(tensor.type), f"TYPE_{tensor.type}")


def buffer_bytes(model, tensor):
  """Raw bytes of a tensor's buffer, or None when it holds no data."""
  if not tensor.buffer or tensor.buffer >= len(model.buffers):
    return None
  data = model.buffers[tensor.buffer].data
  if data is None or len(data) == 0:
    return None
  return np.asarray(data, dtype=np.uint8).tobytes()


def constant_array(model, tensor):
  """A constant tensor's stored values as a 1-D numpy array (None if not constant)."""
  raw = buffer_bytes(model, tensor)
  if raw is None:
    return None
  dtype = NUMPY_TYPES.get(int(tensor.type))
  if dtype is None:
    return None
  return np.frombuffer(raw, dtype=dtype).copy()


def set_constant(model, tensor, values):
  """Points `tensor` at a fresh buffer holding `values` (its old buffer is kept)."""
  buf = schema.BufferT()
  buf.data = np.frombuffer(np.ascontiguousarray(values).tobytes(), dtype=np.uint8)
  model.buffers.append(buf)
  tensor.buffer = len(model.buffers) - 1


def consumers(subgraph):
  """Maps tensor index -> list of (op index, input position)."""
  out = {}
  for i, op in enumerate(subgraph.operators or []):
    for pos, t in enumerate(op.inputs or []):
      if t >= 0:
        out.setdefault(t, []).append((i, pos))
  return out


def producers(subgraph):
  """Maps tensor index -> producing op index."""
  out = {}
  for i, op in enumerate(subgraph.operators or []):
    for t in op.outputs or []:
      if t >= 0:
        out[t] = i
  return out


def get_opcode_index(model, code, version):
  """Index of the builtin opcode (code, version), appended if missing."""
  for i, oc in enumerate(model.operatorCodes):
    if builtin_code(oc) == code and oc.version == version and code != BuiltinOperator.CUSTOM:
      return i
  oc = schema.OperatorCodeT()
  oc.builtinCode = code
  oc.deprecatedBuiltinCode = min(code, BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
  oc.version = version
  model.operatorCodes.append(oc)
  return len(model.operatorCodes) - 1


def set_op_version(model, op, version):
  """Makes operator `op` use version `version` of its builtin opcode."""
  op.opcodeIndex = get_opcode_index(model, op_code(model, op), version)


def compact(model):
  """Removes tensors no op or signature uses, unused opcodes, and orphan buffers.

  Args:
    model: `schema.ModelT`, modified in place.
  """
  used_buffers = {0}
  for sg in model.subgraphs:
    used = set(sg.inputs or []) | set(sg.outputs or [])
    for op in sg.operators or []:
      used.update(t for t in (op.inputs or []) if t >= 0)
      used.update(t for t in (op.outputs or []) if t >= 0)
      used.update(t for t in (op.intermediates or []) if t >= 0)
    remap = {}
    tensors = []
    for i, t in enumerate(sg.tensors):
      if i in used:
        remap[i] = len(tensors)
        tensors.append(t)
    sg.tensors = tensors
    sg.inputs = [remap[t] for t in sg.inputs]
    sg.outputs = [remap[t] for t in sg.outputs]
    for op in sg.operators or []:
      op.inputs = [remap[t] if t >= 0 else t for t in op.inputs]
      op.outputs = [remap[t] if t >= 0 else t for t in op.outputs]
      if op.intermediates is not None and len(op.intermediates):
        op.intermediates = [remap[t] if t >= 0 else t for t in op.intermediates]
    for sig in model.signatureDefs or []:
      if model.subgraphs.index(sg) != sig.subgraphIndex:
        continue
      for tm in list(sig.inputs or []) + list(sig.outputs or []):
        tm.tensorIndex = remap[tm.tensorIndex]
    used_buffers.update(t.buffer for t in sg.tensors)
  for md in model.metadata or []:
    used_buffers.add(md.buffer)
  for i, buf in enumerate(model.buffers):
    if i not in used_buffers:
      buf.data = None
  # Drop opcodes no operator uses.
  used_codes = sorted({op.opcodeIndex for sg in model.subgraphs for op in sg.operators or []})
  code_map = {old: new for new, old in enumerate(used_codes)}
  model.operatorCodes = [model.operatorCodes[i] for i in used_codes]
  for sg in model.subgraphs:
    for op in sg.operators or []:
      op.opcodeIndex = code_map[op.opcodeIndex]


def set_metadata(model, name, data):
  """Adds or replaces a metadata entry `name` holding `data` bytes."""
  model.metadata = [m for m in (model.metadata or []) if metadata_name(m) != name]
  buf = schema.BufferT()
  buf.data = np.frombuffer(data, dtype=np.uint8)
  model.buffers.append(buf)
  md = schema.MetadataT()
  md.name = name
  md.buffer = len(model.buffers) - 1
  model.metadata.append(md)


def get_metadata(model, name):
  """Bytes of metadata entry `name`, or None."""
  for m in model.metadata or []:
    if metadata_name(m) == name and m.buffer < len(model.buffers):
      data = model.buffers[m.buffer].data
      return None if data is None else np.asarray(data, np.uint8).tobytes()
  return None


def metadata_entry(model, name):
  """(metadata index, buffer index) of metadata entry `name`, or None."""
  for i, m in enumerate(model.metadata or []):
    if metadata_name(m) == name and 0 <= m.buffer < len(model.buffers or []):
      return i, m.buffer
  return None


def buffer_data_span(data, index):
  """(start, length) of buffer `index`'s data vector inside serialized `data`.

  `data` must be a verified TFLite flatbuffer (`fbverify.verify`). Returns None
  when the buffer holds no data vector.
  """
  root = schema.Model.GetRootAs(data, 0)
  if not 0 <= index < root.BuffersLength():
    return None
  buf = root.Buffers(index)
  o = buf._tab.Offset(4)  # pylint: disable=protected-access  # Buffer.data
  if not o:
    return None
  return buf._tab.Vector(o), buf._tab.VectorLen(o)  # pylint: disable=protected-access


def metadata_name(md):
  """Name of a `MetadataT` entry as str (bytes that are not UTF-8 are replaced)."""
  return text(md.name)
