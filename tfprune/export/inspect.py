"""Inspects any .tflite file: per-tensor format and size, and known-broken patterns.

Parsing uses only the pure-Python flatbuffers reader (no C++ code touches the
file), after sanity checks on the header, and every parse error is turned into
`InvalidTFLiteError`, so a truncated or garbage file can never crash the process.

Warnings flag the silent-failure patterns measured in /work/shared/EXPORT.md,
typical of files made by other tools (e.g. TFMOT + the stock converter):
a sparse FULLY_CONNECTED above version 8 (garbage under XNNPACK), DENSIFY feeding
quantized ops (XNNPACK fails at prepare), a non-FC op reading sparse weights
directly (silently wrong), and, for models meant for TFLite Micro, DENSIFY /
sparse tensors / dynamic-range ops (TFLM has no DENSIFY, ignores sparsity, and
refuses hybrid ops).
"""
import dataclasses
import json
import os
import struct

import numpy as np

from tfprune.export import graph
from tfprune.export import sparse_encoding
from tfprune.export import sparsify

FC = graph.BuiltinOperator.FULLY_CONNECTED
DENSIFY = graph.BuiltinOperator.DENSIFY
RESHAPE = graph.BuiltinOperator.RESHAPE
INT8 = graph.TensorType.INT8
FLOAT32 = graph.TensorType.FLOAT32


class InvalidTFLiteError(ValueError):
  """The bytes are not a readable TFLite flatbuffer."""


@dataclasses.dataclass
class TensorInfo:
  """One constant tensor.

  Attributes:
    index: tensor index in subgraph 0... (subgraph, index).
    name: tensor name.
    op: ops reading it (via DENSIFY marked "DENSIFY>OP").
    shape: dense shape.
    dtype: TFLite type name.
    format: "dense", "csr", "block1x4", "block1x16" or a generic description.
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
  """
  path: str
  file_bytes: int
  ops: list
  tensors: list
  warnings: list
  metadata: dict

  @property
  def total_weight_bytes(self):
    return sum(t.bytes for t in self.tensors)

  @property
  def total_nonzeros(self):
    return sum(t.nonzeros or 0 for t in self.tensors)

  def format_table(self):
    """Human-readable report."""
    lines = [f"{self.path}: {self.file_bytes} bytes, {len(self.ops)} ops",
             f"{'tensor':44s} {'op':22s} {'shape':16s} {'dtype':8s} {'format':10s} "
             f"{'nonzeros':>9s} {'bytes':>9s}"]
    for t in self.tensors:
      lines.append(f"{t.name[:44]:44s} {t.op[:22]:22s} {str(list(t.shape)):16s} {t.dtype:8s} "
                   f"{t.format:10s} {str(t.nonzeros):>9s} {t.bytes:9d}")
    dense_count = sum(int(np.prod(t.shape)) for t in self.tensors)
    lines.append(f"total: {len(self.tensors)} constant tensors, {self.total_nonzeros} nonzeros of "
                 f"{dense_count} ({self.total_nonzeros / max(1, dense_count):.1%}), "
                 f"{self.total_weight_bytes} weight bytes")
    for w in self.warnings:
      lines.append(f"WARNING: {w}")
    if not self.warnings:
      lines.append("no known-broken patterns found")
    return "\n".join(lines)


def _read(path_or_bytes):
  if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
    return bytes(path_or_bytes), "<bytes>"
  path = os.fspath(path_or_bytes)
  try:
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
    model = graph.load(data)
    if not model.subgraphs:
      raise ValueError("no subgraphs")
    nbuf = len(model.buffers or [])
    for sg in model.subgraphs:
      n = len(sg.tensors or [])
      for t in sg.tensors or []:
        if t.buffer >= nbuf:
          raise ValueError(f"tensor '{graph.tensor_name(t)}' uses missing buffer {t.buffer}")
      for op in sg.operators or []:
        if op.opcodeIndex >= len(model.operatorCodes or []):
          raise ValueError(f"operator uses missing opcode {op.opcodeIndex}")
        for i in list(op.inputs or []) + list(op.outputs or []):
          if i >= n:
            raise ValueError(f"operator uses missing tensor {i}")
  except InvalidTFLiteError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise InvalidTFLiteError(
        f"{label}: truncated or corrupt TFLite flatbuffer ({type(e).__name__}: {e}).") from e
  return model



def _readers(model, sg, users, tensor):
  """(op index, input position) of the ops reading `tensor`, looking through RESHAPE."""
  out = []
  for j, pos in users.get(tensor, []):
    op = sg.operators[j]
    if graph.op_code(model, op) == RESHAPE and pos == 0:
      out += _readers(model, sg, users, op.outputs[0])
    else:
      out.append((j, pos))
  return out


def _safe_quantized_densify_reader(model, sg, user, pos):
  """Whether `user` may read a DENSIFY output (input `pos`) in a quantized model."""
  code = graph.op_code(model, user)
  if code == FC:
    return graph.op_version(model, user) == sparsify.SPARSE_FC_VERSION
  full_int8 = sg.tensors[user.outputs[0]].type == INT8  # dynamic-range ops output float
  return code in sparsify.INT8_DENSIFY_WEIGHT_OPS and pos == 1 and full_int8


def inspect(path, target=None):
  """Reports every constant tensor of a .tflite file and known-broken patterns.

  Args:
    path: .tflite path or the file's bytes.
    target: None (use the file's tfprune metadata if any), "litert" or "micro"
      (adds TFLite Micro checks).

  Returns:
    A `Report`.

  Raises:
    InvalidTFLiteError: if the file is missing, truncated or not TFLite.
    ValueError: on an unknown `target`.
  """
  if target not in (None, "litert", "micro"):
    raise ValueError(f"target must be None, 'litert' or 'micro', got {target!r}.")
  data, label = _read(path)
  model = parse(data, label)
  meta = {}
  raw_meta = graph.get_metadata(model, "tfprune_export")
  if raw_meta:
    try:
      meta = json.loads(raw_meta.decode())
    except ValueError:
      meta = {}
  target = target or meta.get("target")
  warnings, tensors, ops = [], [], []
  quantized = any(t.type == INT8 for sg in model.subgraphs for t in sg.tensors or [])
  for s, sg in enumerate(model.subgraphs):
    users = graph.consumers(sg)
    prod = graph.producers(sg)
    for i, op in enumerate(sg.operators or []):
      name, version = graph.op_name(model, op), graph.op_version(model, op)
      ops.append(f"{name} v{version}")
      ins = [sg.tensors[t] for t in op.inputs if t >= 0]
      code = graph.op_code(model, op)
      for pos, t in enumerate(op.inputs):
        if t < 0 or sg.tensors[t].sparsity is None:
          continue
        tname = graph.tensor_name(sg.tensors[t])
        if code == DENSIFY:
          continue
        if code != FC or pos != 1:
          warnings.append(f"{name} (op #{i}) reads sparse tensor '{tname}' directly: only "
                          "FULLY_CONNECTED weights may be sparse without DENSIFY; output is "
                          "silently wrong.")
        elif version > 8:
          warnings.append(f"FULLY_CONNECTED (op #{i}) reads sparse weights '{tname}' at version "
                          f"{version}: XNNPACK takes it over and returns garbage; retag to "
                          "version 8.")
      if code == DENSIFY:
        out = op.outputs[0]
        user_q = quantized or sg.tensors[out].type != FLOAT32
        for j, pos in _readers(model, sg, users, out):
          user = sg.operators[j]
          uname, uver = graph.op_name(model, user), graph.op_version(model, user)
          if user_q and not _safe_quantized_densify_reader(model, sg, user, pos):
            warnings.append(f"DENSIFY (op #{i}) feeds {uname} v{uver} (op #{j}) in a quantized "
                            "model: XNNPACK fails at prepare (\"failed to delegate\").")
        if target == "micro":
          warnings.append(f"DENSIFY (op #{i}) in a model meant for TFLite Micro: TFLM has no "
                          "DENSIFY kernel.")
      if (target == "micro" and code == FC and len(ins) > 1 and ins[0].type == FLOAT32
          and ins[1].type == INT8):
        warnings.append(f"FULLY_CONNECTED (op #{i}) is dynamic-range (float input, int8 "
                        "weights): TFLite Micro refuses hybrid ops.")
    for ti, t in enumerate(sg.tensors or []):
      raw = graph.buffer_bytes(model, t)
      if raw is None:
        continue
      readers = []
      for j, _ in users.get(ti, []):
        user = sg.operators[j]
        if graph.op_code(model, user) == DENSIFY:
          readers += [f"DENSIFY>{graph.op_name(model, sg.operators[k])}"
                      for k, _ in _readers(model, sg, users, user.outputs[0])]
        else:
          readers.append(graph.op_name(model, user))
      shape = tuple(int(d) for d in (t.shape if t.shape is not None else []))
      dtype = np.dtype(graph.NUMPY_TYPES.get(int(t.type), np.uint8))
      nonzeros = None
      values = np.frombuffer(raw[: len(raw) // dtype.itemsize * dtype.itemsize], dtype=dtype)
      if t.sparsity is not None:
        fmt = sparse_encoding.describe(t.sparsity)
        try:
          nonzeros = int(np.count_nonzero(sparse_encoding.decode(values, shape, t.sparsity)))
        except Exception as e:  # pylint: disable=broad-except
          warnings.append(f"sparse tensor '{graph.tensor_name(t)}' cannot be decoded: {e}")
        nbytes = len(raw) + sparse_encoding.index_bytes(t.sparsity)
        dense = int(np.prod(shape)) * dtype.itemsize
        if nbytes > dense:
          warnings.append(f"sparse tensor '{graph.tensor_name(t)}' ({fmt}) takes {nbytes} bytes, "
                          f"more than dense ({dense} bytes).")
        if target == "micro" and not meta.get("micro_sparse_kernel"):
          warnings.append(f"sparse tensor '{graph.tensor_name(t)}' in a model meant for TFLite "
                          "Micro: TFLM ignores sparsity (NaN/garbage) unless the application "
                          "registers a sparse kernel.")
      else:
        fmt = "dense"
        nonzeros = int(np.count_nonzero(values))
        nbytes = len(raw)
      tensors.append(TensorInfo((s, ti), graph.tensor_name(t), "/".join(sorted(set(readers))),
                                shape, graph.type_name(t), fmt, nonzeros, nbytes))
  return Report(label, len(data), ops, tensors, warnings, meta)
