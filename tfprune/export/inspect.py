"""Inspects any .tflite file: per-tensor format and size, and known-broken patterns.

Parsing uses only the pure-Python flatbuffers reader (no C++ code touches the
file), after sanity checks on the header, and every parse error is turned into
`InvalidTFLiteError`, so a truncated or garbage file can never crash the process.

Warnings flag the silent-failure patterns measured in docs/export.md,
typical of files made by other tools (e.g. TFMOT + the stock converter):
a sparse FULLY_CONNECTED above version 8 (garbage under XNNPACK), DENSIFY feeding
quantized ops (XNNPACK fails at prepare), a non-FC op reading sparse weights
directly (silently wrong), and, for models meant for TFLite Micro, DENSIFY /
sparse tensors / dynamic-range ops (TFLM has no DENSIFY, ignores sparsity, and
refuses hybrid ops).

Before the object-API parse, `fbverify.verify` bounds-checks every offset and
length the reader will follow, so `inspect` is total over arbitrary bytes: it
returns a `Report` or raises `InvalidTFLiteError`, in time linear in the file
size. Files exported by tfprune carry CRC32 checksums of their buffers and of the
whole file (`checksum`); `inspect` recomputes them and reports any mismatch in
`Report.corruption`.
"""
import dataclasses
import json
import math
import os
import struct

import numpy as np

from tfprune.export import checksum as checksum_lib
from tfprune.export import fbverify
from tfprune.export import graph
from tfprune.export import micro_compress
from tfprune.export import sparse_encoding
from tfprune.export import sparsify
from tfprune.export import targets
from tfprune.export.errors import InvalidTFLiteError
from tfprune.export.errors import MalformedFlatbufferError

FC = graph.BuiltinOperator.FULLY_CONNECTED
DENSIFY = graph.BuiltinOperator.DENSIFY
RESHAPE = graph.BuiltinOperator.RESHAPE
INT8 = graph.TensorType.INT8
FLOAT32 = graph.TensorType.FLOAT32
METADATA_NAME = "tfprune_export"  # as written by tflite.py
# A sparse tensor is decoded (to count nonzeros) only when its dense form and every
# intermediate index array stay below this many elements, or 16 per file byte.
MAX_DECODE_ELEMENTS = 1 << 22


@dataclasses.dataclass
class TensorInfo:
  """One constant tensor.

  Attributes:
    index: tensor index in subgraph 0... (subgraph, index).
    name: tensor name.
    op: ops reading it (via DENSIFY marked "DENSIFY>OP").
    shape: dense shape.
    dtype: TFLite type name.
    format: "dense", "csr", "block1x4", "block1x16", "decode:pruning" / "decode:lut<bits>"
      (TFLite Micro DECODE compression: name, shape, dtype and op are the decoded
      tensor's) or a generic description.
    nonzeros: nonzero values (None if undecodable).
    bytes: bytes stored (values + sparse indices).
  """
  index: tuple
  name: str
  op: str
  shape: tuple
  dtype: str
  format: str
  nonzeros: int
  bytes: int


@dataclasses.dataclass
class Report:
  """Result of `inspect`.

  Attributes:
    path: file inspected (or "<bytes>").
    file_bytes: file size.
    ops: list of "NAME vN" per operator.
    tensors: list of `TensorInfo` (constant tensors).
    warnings: list of strings, one per known-broken pattern found.
    metadata: tfprune export metadata dict, if the file has it.
    checksum: "ok" (the tfprune checksums match), "mismatch" (see `corruption`)
      or "absent" (no tfprune checksum: a stock converter file, or an older export).
    corruption: list of strings, one per checksum mismatch ("checksum mismatch in
      buffer N (tensor 'NAME')..."); empty unless `checksum` is "mismatch".
  """
  path: str
  file_bytes: int
  ops: list
  tensors: list
  warnings: list
  metadata: dict
  checksum: str = "absent"
  corruption: list = dataclasses.field(default_factory=list)

  @property
  def total_weight_bytes(self):
    return sum(t.bytes for t in self.tensors)

  @property
  def total_nonzeros(self):
    return sum(t.nonzeros or 0 for t in self.tensors)

  def format_table(self):
    """Human-readable report."""
    lines = [f"{self.path}: {self.file_bytes} bytes, {len(self.ops)} ops",
             f"{'tensor':44s} {'op':22s} {'shape':16s} {'dtype':8s} {'format':14s} "
             f"{'nonzeros':>9s} {'bytes':>9s}"]
    for t in self.tensors:
      lines.append(f"{t.name[:44]:44s} {t.op[:22]:22s} {str(list(t.shape)):16s} {t.dtype:8s} "
                   f"{t.format:14s} {str(t.nonzeros):>9s} {t.bytes:9d}")
    dense_count = sum(math.prod(t.shape) for t in self.tensors)
    lines.append(f"total: {len(self.tensors)} constant tensors, {self.total_nonzeros} nonzeros of "
                 f"{dense_count} ({self.total_nonzeros / max(1, dense_count):.1%}), "
                 f"{self.total_weight_bytes} weight bytes")
    for w in self.warnings:
      lines.append(f"WARNING: {w}")
    if not self.warnings:
      lines.append("no known-broken patterns found")
    for c in self.corruption:
      lines.append(f"CORRUPT: {c}")
    if self.checksum == "ok":
      lines.append("checksum ok (crc32 of every buffer and of the whole file)")
    elif self.checksum == "absent":
      lines.append("note: no tfprune checksum in this file (not exported by tfprune, or by an "
                   "older version): corruption cannot be detected")
    return "\n".join(lines)


def _read(path_or_bytes):
  if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
    return bytes(path_or_bytes), "<bytes>"
  path = os.fspath(path_or_bytes)
  try:
    size = os.stat(path).st_size
    if size > fbverify.MAX_BUFFER_SIZE:
      raise InvalidTFLiteError(
          f"{path}: {size} bytes is above the {fbverify.MAX_BUFFER_SIZE}-byte flatbuffer limit "
          "(files with external buffers are not supported).")
    with open(path, "rb") as f:
      return f.read(), path
  except OSError as e:
    raise InvalidTFLiteError(f"{path}: cannot read file: {e.strerror or e}") from e


def parse(data, label="<bytes>"):
  """Sanity-checks and parses TFLite bytes into a `ModelT`.

  Args:
    data: file contents.
    label: name used in error messages.

  Returns:
    `schema.ModelT`.

  Raises:
    InvalidTFLiteError: if the bytes are not a complete TFLite flatbuffer.
  """
  if len(data) < 16:
    raise InvalidTFLiteError(f"{label}: {len(data)} bytes is too short for a TFLite file.")
  if data[4:8] != b"TFL3":
    raise InvalidTFLiteError(
        f"{label}: not a TFLite flatbuffer (file identifier {data[4:8]!r}, expected b'TFL3').")
  (root,) = struct.unpack_from("<I", data, 0)
  if root + 4 > len(data):
    raise InvalidTFLiteError(f"{label}: truncated or corrupt (root table offset {root} "
                             f"beyond file size {len(data)}).")
  try:
    fbverify.verify(data, label)
  except MalformedFlatbufferError as e:
    raise InvalidTFLiteError(f"{e} (truncated or corrupt file).") from e
  try:
    model = graph.load(data)
  except Exception as e:  # pylint: disable=broad-except
    raise InvalidTFLiteError(
        f"{label}: truncated or corrupt TFLite flatbuffer ({type(e).__name__}: {e}).") from e
  problem = _check_indices(model)
  if problem:
    raise InvalidTFLiteError(f"{label}: corrupt TFLite file: {problem}.")
  return model


def _check_indices(model):
  """The first dangling index in a parsed model, as a sentence, or None."""
  if not model.subgraphs:
    return "no subgraphs"
  nbuf, ncodes = len(model.buffers or []), len(model.operatorCodes or [])
  for m in model.metadata or []:
    if m.buffer >= nbuf:
      return f"metadata '{graph.metadata_name(m)}' uses missing buffer {m.buffer}"
  for s, sg in enumerate(model.subgraphs):
    n = len(sg.tensors or [])
    for t in sg.tensors or []:
      if t.buffer >= nbuf:
        return f"tensor '{graph.tensor_name(t)}' uses missing buffer {t.buffer} of {nbuf}"
    for i in list(sg.inputs if sg.inputs is not None else []) + list(
        sg.outputs if sg.outputs is not None else []):
      if not 0 <= i < n:
        return f"subgraph {s} input/output {i} is not one of its {n} tensors"
    for j, op in enumerate(sg.operators or []):
      if op.opcodeIndex >= ncodes:
        return f"operator #{j} uses missing opcode {op.opcodeIndex} of {ncodes}"
      for field in (op.inputs, op.outputs, op.intermediates):
        for i in (field if field is not None else []):
          if not -1 <= i < n:
            return f"operator #{j} uses tensor {i}, not one of the {n} tensors (or -1)"
  return None



def _first_output(op):
  """Index of `op`'s first output tensor, or None."""
  outs = op.outputs if op.outputs is not None else []
  return int(outs[0]) if len(outs) and outs[0] >= 0 else None


def _readers(model, sg, users, tensor):
  """(op index, input position) of the ops reading `tensor`, looking through RESHAPE."""
  out, seen, todo = [], {tensor}, [tensor]
  while todo:  # iterative, and each tensor once: a corrupt file may wire a cycle
    for j, pos in users.get(todo.pop(), []):
      op = sg.operators[j]
      nxt = _first_output(op)
      if graph.op_code(model, op) == RESHAPE and pos == 0 and nxt is not None:
        if nxt not in seen:
          seen.add(nxt)
          todo.append(nxt)
      else:
        out.append((j, pos))
  return out


def _safe_quantized_densify_reader(model, sg, user, pos):
  """Whether `user` may read a DENSIFY output (input `pos`) in a quantized model."""
  code = graph.op_code(model, user)
  if code == FC:
    return graph.op_version(model, user) == sparsify.SPARSE_FC_VERSION
  out = _first_output(user)
  full_int8 = out is not None and sg.tensors[out].type == INT8  # dynamic-range ops output float
  return code in sparsify.INT8_DENSIFY_WEIGHT_OPS and pos == 1 and full_int8


def _decode_cost(shape, sparsity):
  """Upper bound on the elements `sparse_encoding.decode` allocates, or None if unknown."""
  if any(d < 0 for d in shape):
    return None
  cost = positions = 1
  for dim in sparsity.dimMetadata or []:
    if dim.format == sparse_encoding.DENSE:
      positions *= max(0, int(dim.denseSize))
    else:
      vec = dim.arrayIndices
      values = None if vec is None else getattr(vec, "values", None)
      positions = 0 if values is None else len(values)
    cost = max(cost, positions * (len(sparsity.dimMetadata) + 1))
  return max(cost, math.prod(shape))


def _tensor_info(model, sg, s, ti, t, users, meta, target, limit, warnings):
  """`TensorInfo` of constant tensor `t` (index `ti` of subgraph `s`), or None."""
  raw = graph.buffer_bytes(model, t)
  if raw is None:
    return None
  name = graph.tensor_name(t)
  readers = []
  for j, _ in users.get(ti, []):
    user = sg.operators[j]
    out = _first_output(user)
    if graph.op_code(model, user) == DENSIFY and out is not None:
      readers += [f"DENSIFY>{graph.op_name(model, sg.operators[k])}"
                  for k, _ in _readers(model, sg, users, out)]
    else:
      readers.append(graph.op_name(model, user))
  shape = tuple(int(d) for d in (t.shape if t.shape is not None else []))
  dtype = np.dtype(graph.NUMPY_TYPES.get(int(t.type), np.uint8))
  values = np.frombuffer(raw[: len(raw) // dtype.itemsize * dtype.itemsize], dtype=dtype)
  nonzeros = None
  if t.sparsity is not None:
    fmt = sparse_encoding.describe(t.sparsity)
    cost = _decode_cost(shape, t.sparsity)
    if cost is None or cost > limit:
      warnings.append(f"sparse tensor '{name}' of shape {list(shape)} is not decoded: its "
                      f"dimensions or sparsity parameters claim more than {limit} elements "
                      "(corrupt file?).")
    else:
      try:
        nonzeros = int(np.count_nonzero(sparse_encoding.decode(values, shape, t.sparsity)))
      except Exception as e:  # pylint: disable=broad-except
        warnings.append(f"sparse tensor '{name}' cannot be decoded: {e}")
    nbytes = len(raw) + sparse_encoding.index_bytes(t.sparsity)
    dense = math.prod(shape) * dtype.itemsize
    if nbytes > dense:
      warnings.append(f"sparse tensor '{name}' ({fmt}) takes {nbytes} bytes, "
                      f"more than dense ({dense} bytes).")
    if target is not None and not target.sparse_tensors and not meta.get(
        "micro_sparse_kernel"):
      warnings.append(f"sparse tensor '{name}' in a model meant for {target.runtime}: it "
                      "ignores sparsity (NaN/garbage) unless the application registers a "
                      "sparse kernel.")
  else:
    fmt = "dense"
    nonzeros = int(np.count_nonzero(values))
    nbytes = len(raw)
  return TensorInfo((s, ti), name, "/".join(sorted(set(readers))), shape, graph.type_name(t),
                    fmt, nonzeros, nbytes)


def _decoded_info(model, sg, s, ti, decoded, users, limit, warnings):
  """`TensorInfo` of the DECODE-compressed constant `ti`: `decoded` is (ancillary tensor
  index, decoded tensor index); reported under the decoded tensor's name and shape."""
  anc_index, out_index = decoded
  enc = graph.buffer_bytes(model, sg.tensors[ti]) or b""
  anc = graph.buffer_bytes(model, sg.tensors[anc_index]) or b""
  out = sg.tensors[out_index]
  name = graph.tensor_name(out)
  shape = tuple(int(d) for d in (out.shape if out.shape is not None else []))
  readers = sorted({graph.op_name(model, sg.operators[j]) for j, _ in users.get(out_index, [])})
  nonzeros, fmt = None, "decode:?"
  try:
    fmt = "decode:" + micro_compress.describe(anc)
    dtype = graph.NUMPY_TYPES.get(int(out.type))
    if dtype is None or any(d < 0 for d in shape) or math.prod(shape) > limit:
      raise ValueError(f"cannot be decoded here (dtype {graph.type_name(out)}, shape "
                       f"{list(shape)})")
    zero = micro_compress.zero_points(out, shape)
    values = micro_compress.decode(enc, anc, shape, dtype, 0 if zero is None else zero,
                                   micro_compress.channel_axis(out, shape))
    nonzeros = int(np.count_nonzero(values != (0 if zero is None else zero)))
  except (ValueError, IndexError) as e:
    warnings.append(f"DECODE-compressed tensor '{name}': {e}.")
  return TensorInfo((s, ti), name, "/".join(readers), shape, graph.type_name(out), fmt,
                    nonzeros, len(enc) + len(anc))


def _decode_inputs(model, sg):
  """Maps each DECODE op's encoded input -> (ancillary input, decoded output)."""
  out = {}
  for op in sg.operators or []:
    if not micro_compress.is_decode(model, op):
      continue
    ins, outs = list(op.inputs if op.inputs is not None else []), list(
        op.outputs if op.outputs is not None else [])
    for k, o in enumerate(outs):
      if 2 * k + 1 < len(ins) and min(ins[2 * k], ins[2 * k + 1], o) >= 0:
        out.setdefault(int(ins[2 * k]), (int(ins[2 * k + 1]), int(o)))
  return out


def _op_warnings(model, sg, users, quantized, target, warnings):
  """Appends the known-broken operator patterns of subgraph `sg`; returns its op names."""
  ops = []
  for i, op in enumerate(sg.operators or []):
    name, version = graph.op_name(model, op), graph.op_version(model, op)
    ops.append(f"{name} v{version}")
    inputs = [int(t) for t in (op.inputs if op.inputs is not None else [])]
    ins = [sg.tensors[t] for t in inputs if t >= 0]
    code = graph.op_code(model, op)
    for pos, t in enumerate(inputs):
      if t < 0 or sg.tensors[t].sparsity is None or code == DENSIFY:
        continue
      tname = graph.tensor_name(sg.tensors[t])
      if code != FC or pos != 1:
        warnings.append(f"{name} (op #{i}) reads sparse tensor '{tname}' directly: only "
                        "FULLY_CONNECTED weights may be sparse without DENSIFY; output is "
                        "silently wrong.")
      elif version > 8:
        warnings.append(f"FULLY_CONNECTED (op #{i}) reads sparse weights '{tname}' at version "
                        f"{version}: XNNPACK takes it over and returns garbage; retag to "
                        "version 8.")
    out = _first_output(op)
    if code == DENSIFY and out is not None:
      user_q = quantized or sg.tensors[out].type != FLOAT32
      for j, pos in _readers(model, sg, users, out):
        user = sg.operators[j]
        uname, uver = graph.op_name(model, user), graph.op_version(model, user)
        if user_q and not _safe_quantized_densify_reader(model, sg, user, pos):
          warnings.append(f"DENSIFY (op #{i}) feeds {uname} v{uver} (op #{j}) in a quantized "
                          "model: XNNPACK fails at prepare (\"failed to delegate\").")
    if target is None:
      continue
    if not target.decode_op and micro_compress.is_decode(model, op):
      warnings.append(f"{name} (op #{i}) is TFLite Micro's DECODE operator: "
                      f"{target.runtime} has no kernel for it; this file runs only in TFLM "
                      "(register its DECODE kernel).")
    if code == DENSIFY and not target.sparse_tensors:
      warnings.append(f"DENSIFY (op #{i}) in a model meant for {target.runtime}: it has no "
                      "DENSIFY kernel.")
    if (not target.hybrid_ops and code == FC and len(ins) > 1 and ins[0].type == FLOAT32
        and ins[1].type == INT8):
      warnings.append(f"FULLY_CONNECTED (op #{i}) is dynamic-range (float input, int8 "
                      f"weights): {target.runtime} refuses hybrid ops.")
  return ops


def _metadata(model):
  """The tfprune export metadata dict ({} if absent or unreadable)."""
  raw = graph.get_metadata(model, METADATA_NAME)
  if not raw:
    return {}
  try:
    meta = json.loads(raw.decode("utf-8"))
  except ValueError:
    return {}
  return meta if isinstance(meta, dict) else {}


def inspect(path, target=None):
  """Reports every constant tensor of a .tflite file, known-broken patterns and corruption.

  Total over arbitrary input: whatever the bytes, this returns a `Report` or
  raises `InvalidTFLiteError`, in time linear in the file size.

  Args:
    path: .tflite path or the file's bytes.
    target: None (use the file's tfprune metadata if any) or a target name
      (`targets.TARGETS`: "litert", "micro"), which adds that runtime's checks.

  Returns:
    A `Report`; for files exported by tfprune, `Report.checksum` says whether
    their stored CRC32s match (`Report.corruption` lists each mismatch).

  Raises:
    InvalidTFLiteError: if the file is missing, truncated, corrupt or not TFLite.
    ValueError: on an unknown `target`.
  """
  if target is not None and target not in targets.TARGETS:
    raise ValueError(f"target must be None or one of {tuple(targets.TARGETS)}, got "
                     f"{target!r}.")
  data, label = _read(path)
  model = parse(data, label)
  try:
    return _inspect_model(model, data, label, target)
  except Exception as e:  # pylint: disable=broad-except
    # Unreachable for any input the fuzz test found; kept so that the promise above
    # holds even for a case it did not.
    raise InvalidTFLiteError(f"{label}: cannot inspect this file ({type(e).__name__}: {e}); "
                             "it is corrupt, or this is a tfprune bug worth reporting.") from e


def _inspect_model(model, data, label, target):
  meta = _metadata(model)
  target = target or meta.get("target")
  target = targets.TARGETS.get(target) if isinstance(target, str) else None
  status, corruption = checksum_lib.check(data, METADATA_NAME)
  warnings, tensors, ops = [], [], []
  limit = max(MAX_DECODE_ELEMENTS, 16 * len(data))
  quantized = any(t.type == INT8 for sg in model.subgraphs for t in sg.tensors or [])
  for s, sg in enumerate(model.subgraphs):
    users = graph.consumers(sg)
    ops += _op_warnings(model, sg, users, quantized, target, warnings)
    decoded = _decode_inputs(model, sg)
    ancillary = {a for a, _ in decoded.values()}
    for ti, t in enumerate(sg.tensors or []):
      if ti in ancillary:
        continue
      if ti in decoded:
        tensors.append(_decoded_info(model, sg, s, ti, decoded[ti], users, limit, warnings))
        continue
      info = _tensor_info(model, sg, s, ti, t, users, meta, target, limit, warnings)
      if info is not None:
        tensors.append(info)
  return Report(label, len(data), ops, tensors, warnings, meta, status, corruption)
