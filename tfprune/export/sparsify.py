"""Chooses and writes the sparse encoding of every constant tensor in a TFLite model.

The converter's own sparse output is decoded back to dense (`densify_model`), then
`encode_model` re-encodes each constant tensor with the smallest encoding that
is correct for the op reading it, following the rules measured in docs/export.md
("What the converter does", "Correctness traps"):

* FULLY_CONNECTED may read sparse weights directly: 1x4 blocks for float weights,
  1x16 blocks for int8 weights; such an FC is retagged to version 8 (XNNPACK
  returns garbage for a sparse FC above version 8 and skips version 8).
* Any other sparse tensor goes through a DENSIFY op, in the smallest
  one-value-per-nonzero layout: CSR or CSF (`sparse_encoding.encode_compressed`),
  and in quantized models also segmented CSR (`sparse_encoding.encode_segmented`,
  uint8 column indices; a RESHAPE after the DENSIFY restores the shape; never for
  a tensor quantized per axis along its last axis, e.g. a depthwise kernel: the
  split axis could not hold its scales). In a float model that is allowed for every op.
  In a quantized model a FULLY_CONNECTED reading a DENSIFY output is retagged to
  version 8 (otherwise XNNPACK fails at prepare with "failed to delegate
  FULLY_CONNECTED"). In a full-int8 model the weights of CONV_2D,
  DEPTHWISE_CONV_2D and TRANSPOSE_CONV may come from DENSIFY too (measured
  correct with XNNPACK on and off); in a dynamic-range model they may not
  (XNNPACK: "failed to delegate CONV_2D"), so they stay dense.
* For TFLM (`target="micro"`) nothing is sparse, except 1x16 int8 FC weights when
  the application registers a sparse FC kernel (`micro_sparse_kernel=True`).
* In every mode a tensor stays dense when its encoding (plus the ops it needs)
  is not smaller than the dense tensor. An all-zero tensor is encoded with one
  explicit stored zero (`sparse_encoding`): an empty values buffer would make
  the tensor non-constant, and LiteRT then reads garbage (NaN).
"""
import copy
import dataclasses

import numpy as np

from ai_edge_litert import schema_py_generated as schema
from tfprune.export import graph
from tfprune.export import sparse_encoding
from tfprune.export import targets
from tfprune.export.errors import UndecodableSparseTensor

FC = graph.BuiltinOperator.FULLY_CONNECTED
DENSIFY = graph.BuiltinOperator.DENSIFY
# Ops whose int8 weights (input 1) may be a DENSIFY output in a full-int8 model.
INT8_DENSIFY_WEIGHT_OPS = frozenset({
    graph.BuiltinOperator.CONV_2D, graph.BuiltinOperator.DEPTHWISE_CONV_2D,
    graph.BuiltinOperator.TRANSPOSE_CONV})
SPARSE_FC_VERSION = 8
# Extra bytes a DENSIFY op and its output tensor add to the file (measured ~100-150).
DENSIFY_OVERHEAD = 160
# Extra bytes of the RESHAPE (op, shape constant, output tensor) behind a segmented CSR.
RESHAPE_OVERHEAD = 240
MIN_ELEMENTS = 64
SPARSE_MODES = ("auto", "csr", "block", "off")


@dataclasses.dataclass
class TensorReport:
  """How one constant tensor was stored.

  Attributes:
    name: tensor name.
    op: name of the op(s) reading it.
    shape: tensor shape.
    dtype: TFLite type name.
    format: "dense", "csr" (via DENSIFY), "block1x4" or "block1x16".
    nonzeros: number of nonzero values.
    dense_bytes: bytes when stored dense.
    bytes: bytes actually stored (values + indices).
  """
  name: str
  op: str
  shape: tuple
  dtype: str
  format: str
  nonzeros: int
  dense_bytes: int
  bytes: int


def densify_model(model):
  """Decodes every sparse constant to dense and removes every DENSIFY op.

  Sparse constants with an empty values buffer (all-zero weights, as the
  converter writes them) become dense zeros.

  Args:
    model: `schema.ModelT`, modified in place.

  Raises:
    UndecodableSparseTensor: a sparse constant's layout does not fit its shape
      (`model` is then partly modified: reload it).
  """
  for sg in model.subgraphs:
    produced = graph.producers(sg)
    for ti, t in enumerate(sg.tensors):
      if t.sparsity is None:
        continue
      values = graph.constant_array(model, t)
      if values is None:
        dtype = graph.NUMPY_TYPES.get(int(t.type))
        if dtype is None or ti in produced or ti in set(sg.inputs):
          continue
        # The converter stores an all-zero weight as a sparse tensor with an empty
        # buffer: a non-constant tensor that the reader would see as garbage (NaN).
        values = np.zeros(0, dtype)
      if values.size == 0:
        dense = np.zeros([int(d) for d in t.shape], values.dtype)
      else:
        try:
          dense = sparse_encoding.decode(values, list(t.shape), t.sparsity)
        except ValueError as e:
          raise UndecodableSparseTensor(
              f"tensor '{graph.tensor_name(t)}' {list(t.shape)} "
              f"({sparse_encoding.describe(t.sparsity)}): {e}") from e
      graph.set_constant(model, t, dense)
      t.sparsity = None
    kept = []
    for op in sg.operators:
      if graph.op_code(model, op) == DENSIFY:
        src, dst = op.inputs[0], op.outputs[0]
        for other in sg.operators:
          other.inputs = [src if i == dst else i for i in other.inputs]
        sg.outputs = [src if i == dst else i for i in sg.outputs]
      else:
        kept.append(op)
    sg.operators = kept
  graph.compact(model)


def _per_axis_dim(tensor):
  """The tensor's per-axis quantization dimension, or None (float or per-tensor)."""
  q = tensor.quantization
  if q is None or q.scale is None or len(q.scale) <= 1:
    return None
  return int(q.quantizedDimension)


def _candidates(dense, fc_weight, int8_weight, quantize, target, micro_sparse_kernel,
                per_axis_dim=None):
  """Possible encodings as (format, via_densify, Encoded) tuples.

  Args:
    dense: the constant as a numpy array.
    fc_weight: every reader is a FULLY_CONNECTED reading it as weights.
    int8_weight: every reader is an op of `INT8_DENSIFY_WEIGHT_OPS` reading it as weights.
    quantize: None, "dynamic" or "int8".
    target, micro_sparse_kernel: as in `encode_model`.
    per_axis_dim: the tensor's per-axis quantization dimension (`_per_axis_dim`).
  """
  dtype = dense.dtype
  if not target.sparse_tensors:
    if micro_sparse_kernel and fc_weight and dtype == np.int8 and dense.shape[-1] % 16 == 0:
      return [("block1x16", False, sparse_encoding.encode_block(dense, 16))]
    return []
  out = []
  if fc_weight:
    block = 4 if dtype == np.float32 else 16
    if dense.shape[-1] % block == 0:
      out.append((f"block1x{block}", False, sparse_encoding.encode_block(dense, block)))
  if (fc_weight or (quantize is None and dtype == np.float32)
      or (quantize == "int8" and dtype == np.int8 and int8_weight)):
    out.append(("csr", True, sparse_encoding.encode_compressed(dense)))
    # Segmented CSR needs a RESHAPE each invoke: only where the reader runs outside
    # XNNPACK anyway (quantized); float DENSIFY weights are XNNPACK's fast static path.
    # Segmenting splits the last axis; when that axis carries per-axis scales
    # (DEPTHWISE_CONV_2D: quantized_dimension 3) no quantization of the stored and
    # DENSIFY tensors is valid (LiteRT: "num_scales must be 1 ... or <C/s>"), so not then.
    segmented = None
    if quantize and per_axis_dim != dense.ndim - 1:
      segmented = sparse_encoding.encode_segmented(dense)
    if segmented is not None:
      out.append(("csr", True, segmented))
  return out


def _cost(candidate, densify_extra=0):
  """File bytes a candidate costs: encoding plus the ops (and tensors) it needs."""
  _, via_densify, enc = candidate
  return (enc.nbytes + ((DENSIFY_OVERHEAD + densify_extra) if via_densify else 0)
          + (RESHAPE_OVERHEAD if enc.stored_shape is not None else 0))


def _densify_extra(tensor):
  """Bytes the DENSIFY output tensor copies from `tensor`: name and quantization."""
  extra = len(graph.tensor_name(tensor)) + len("/densified")
  q = tensor.quantization
  if q is not None and q.scale is not None:
    extra += 12 * len(q.scale)   # float32 scale + int64 zero point per channel
  return extra


def _choose(mode, dense_bytes, candidates, has_zero, densify_extra=0):
  """Picks one candidate (or None = dense) under sparse `mode`.

  A candidate is only taken when it costs fewer bytes than the dense tensor.
  """
  cost = lambda c: _cost(c, densify_extra)  # pylint: disable=unnecessary-lambda-assignment
  candidates = [c for c in candidates if cost(c) < dense_bytes]
  if not has_zero or not candidates:
    return None
  if mode == "csr":
    picks = [c for c in candidates if c[0] == "csr"]
    return min(picks, key=cost) if picks else None
  if mode == "block":
    picks = [c for c in candidates if c[0].startswith("block")]
    if picks:
      return picks[0]
  return min(candidates, key=cost)


def _add_tensor(sg, like, name, shape=None):
  """Appends a non-constant copy of tensor `like` (same type and quantization)."""
  t = copy.deepcopy(like)
  t.sparsity = None
  t.buffer = 0
  t.name = name.encode()
  if shape is not None:
    t.shape = np.asarray(shape, np.int32)
  sg.tensors.append(t)
  return len(sg.tensors) - 1


def _new_op(model, code, inputs, outputs, options_type, options):
  op = schema.OperatorT()
  op.opcodeIndex = graph.get_opcode_index(model, code, 1)
  op.inputs = list(inputs)
  op.outputs = list(outputs)
  op.builtinOptionsType = options_type
  op.builtinOptions = options
  return op


def _add_densify(model, sg, tensor_index, users, reshape_to=None):
  """Inserts DENSIFY(tensor) before its first user and rewires `users` to its output.

  Args:
    model: `schema.ModelT`.
    sg: the subgraph holding the tensor.
    tensor_index: index of the sparse constant tensor.
    users: list of (operator object, input position) reading the tensor.
    reshape_to: the users' shape when the tensor is stored segmented; a RESHAPE
      after the DENSIFY restores it.
  """
  src = sg.tensors[tensor_index]
  name = graph.tensor_name(src) + "/densified"
  dst_index = _add_tensor(sg, src, name)
  ops = [_new_op(model, DENSIFY, [tensor_index], [dst_index],
                 schema.BuiltinOptions.DensifyOptions, schema.DensifyOptionsT())]
  if reshape_to is not None:
    shape_t = schema.TensorT()
    shape_t.name = (name + "/shape").encode()
    shape_t.shape = np.asarray([len(reshape_to)], np.int32)
    shape_t.type = schema.TensorType.INT32
    graph.set_constant(model, shape_t, np.asarray(reshape_to, np.int32))
    sg.tensors.append(shape_t)
    shape_index = len(sg.tensors) - 1
    out_index = _add_tensor(sg, src, name + "/reshaped", reshape_to)
    options = schema.ReshapeOptionsT()
    options.newShape = [int(d) for d in reshape_to]
    ops.append(_new_op(model, graph.BuiltinOperator.RESHAPE, [dst_index, shape_index],
                       [out_index], schema.BuiltinOptions.ReshapeOptions, options))
    dst_index = out_index
  for user, pos in users:
    user.inputs[pos] = dst_index
  first = min(next(i for i, o in enumerate(sg.operators) if o is user) for user, _ in users)
  sg.operators[first:first] = ops


def encode_model(model, sparse="auto", quantize=None, target="litert",
                 micro_sparse_kernel=False):
  """Re-encodes the constants of a dense `model` and retags sparse FC ops.

  Args:
    model: dense `schema.ModelT` (see `densify_model`), modified in place.
    sparse: "auto" (smallest correct encoding per tensor, dense if sparse is not
      smaller), "csr", "block" (1x4 / 1x16 blocks wherever a FULLY_CONNECTED reads
      them directly, every other tensor as in "auto"), or "off".
    quantize: None (float model), "dynamic" (dynamic-range) or "int8" (full integer).
    target: the `targets.Target` (or its name): a target that reads no sparse tensors
      gets none, except 1x16 int8 FC weights for an application's sparse FC kernel.
    micro_sparse_kernel: allow 1x16 int8 FC weights for a custom TFLM kernel.

  Returns:
    A list of `TensorReport`, one per constant tensor with >= 2 dimensions.

  Raises:
    ValueError: on an unknown `sparse` mode.
  """
  if sparse not in SPARSE_MODES:
    raise ValueError(f"sparse must be one of {SPARSE_MODES}, got {sparse!r}.")
  target = targets.get(target) if isinstance(target, str) else target
  reports = []
  for sg in model.subgraphs:
    users_of = graph.consumers(sg)
    pending_densify = []
    fc_to_retag = set()
    for ti, t in enumerate(sg.tensors):
      values = graph.constant_array(model, t)
      if values is None or len(t.shape) < 2 or ti in set(sg.inputs):
        continue
      users = users_of.get(ti, [])
      if not users:
        continue
      dense = values.reshape(list(t.shape))
      ops = sorted({graph.op_name(model, sg.operators[i]) for i, _ in users})
      codes = [(graph.op_code(model, sg.operators[i]), pos) for i, pos in users]
      fc_weight = all(c == FC and pos == 1 for c, pos in codes) and dense.ndim == 2
      int8_weight = all(c in INT8_DENSIFY_WEIGHT_OPS and pos == 1 for c, pos in codes)
      fmt, nbytes = "dense", dense.nbytes
      if (sparse != "off" and dense.size >= MIN_ELEMENTS
          and dense.dtype in (np.float32, np.int8)):
        cands = _candidates(dense, fc_weight, int8_weight, quantize, target,
                            micro_sparse_kernel, _per_axis_dim(t))
        pick = _choose(sparse, dense.nbytes, cands, bool(np.any(dense == 0)),
                       _densify_extra(t))
        if pick is not None:
          fmt, via_densify, enc = pick
          graph.set_constant(model, t, enc.values)
          t.sparsity = enc.sparsity
          nbytes = enc.nbytes
          reshape_to = None
          if enc.stored_shape is not None:
            reshape_to = list(dense.shape)
            t.shape = np.asarray(enc.stored_shape, np.int32)
          if via_densify:
            pending_densify.append(
                (ti, [(sg.operators[i], pos) for i, pos in users], reshape_to))
            if fc_weight and quantize is not None:
              fc_to_retag.update(i for i, _ in users)
          else:
            fc_to_retag.update(i for i, _ in users)
      reports.append(TensorReport(
          name=graph.tensor_name(t), op="/".join(ops), shape=tuple(int(s) for s in dense.shape),
          dtype=graph.type_name(t), format=fmt, nonzeros=int(np.count_nonzero(dense)),
          dense_bytes=int(dense.nbytes), bytes=int(nbytes)))
    retag_ops = [sg.operators[i] for i in fc_to_retag]
    for ti, users, reshape_to in pending_densify:
      _add_densify(model, sg, ti, users, reshape_to)
    for op in retag_ops:
      graph.set_op_version(model, op, SPARSE_FC_VERSION)
  graph.compact(model)
  return reports


def retag_sparse_fc(model):
  """Sets every FULLY_CONNECTED that reads a sparse tensor directly to version 8.

  Args:
    model: `schema.ModelT`, modified in place.

  Returns:
    Number of ops retagged.
  """
  count = 0
  for sg in model.subgraphs:
    for op in sg.operators:
      if graph.op_code(model, op) != FC or len(op.inputs) < 2 or op.inputs[1] < 0:
        continue
      if sg.tensors[op.inputs[1]].sparsity is not None and graph.op_version(model, op) != SPARSE_FC_VERSION:
        graph.set_op_version(model, op, SPARSE_FC_VERSION)
        count += 1
  graph.compact(model)
  return count
