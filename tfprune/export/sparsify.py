"""Chooses and writes the sparse encoding of every constant tensor in a TFLite model.

The converter's own sparse output is decoded back to dense (`densify_model`), then
`encode_model` re-encodes each constant tensor with the smallest encoding that
is correct for the op reading it, following the rules measured in
/work/shared/EXPORT.md:

* FULLY_CONNECTED may read sparse weights directly: 1x4 blocks for float weights,
  1x16 blocks for int8 weights; such an FC is retagged to version 8 (XNNPACK
  returns garbage for a sparse FC above version 8 and skips version 8).
* Any other sparse tensor goes through a DENSIFY op. In a float model that is
  allowed for every op. In a quantized model only FULLY_CONNECTED may read a
  DENSIFY output, and that FC is retagged to version 8 (otherwise XNNPACK fails at
  prepare with "failed to delegate FULLY_CONNECTED"); other quantized ops keep
  dense weights.
* For TFLM (`target="micro"`) nothing is sparse, except 1x16 int8 FC weights when
  the application registers a sparse FC kernel (`micro_sparse_kernel=True`).
"""
import copy
import dataclasses

import numpy as np

from ai_edge_litert import schema_py_generated as schema
from tfprune.export import graph
from tfprune.export import sparse_encoding

FC = graph.BuiltinOperator.FULLY_CONNECTED
DENSIFY = graph.BuiltinOperator.DENSIFY
SPARSE_FC_VERSION = 8
# Extra bytes a DENSIFY op and its output tensor add to the file (measured ~100-150).
DENSIFY_OVERHEAD = 160
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

  Args:
    model: `schema.ModelT`, modified in place.
  """
  for sg in model.subgraphs:
    for t in sg.tensors:
      if t.sparsity is None:
        continue
      values = graph.constant_array(model, t)
      if values is None:
        continue
      dense = sparse_encoding.decode(values, list(t.shape), t.sparsity)
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


def _candidates(dense, dtype, fc_weight, quantized, target, micro_sparse_kernel):
  """Possible encodings as (format, via_densify, Encoded) tuples."""
  out = []
  if target == "micro":
    if micro_sparse_kernel and fc_weight and dtype == np.int8 and dense.shape[-1] % 16 == 0:
      out.append(("block1x16", False, sparse_encoding.encode_block(dense, 16)))
    return out
  if fc_weight:
    block = 4 if dtype == np.float32 else 16
    if dense.shape[-1] % block == 0:
      out.append((f"block1x{block}", False, sparse_encoding.encode_block(dense, block)))
    out.append(("csr", True, sparse_encoding.encode_csr(dense)))
  elif not quantized and dtype == np.float32:
    out.append(("csr", True, sparse_encoding.encode_csr(dense)))
  return out


def _choose(mode, dense_bytes, candidates, has_zero):
  """Picks one candidate (or None = dense) under sparse `mode`."""
  if not has_zero or not candidates:
    return None
  if mode == "csr":
    picks = [c for c in candidates if c[0] == "csr"]
    return picks[0] if picks else None
  if mode == "block":
    picks = [c for c in candidates if c[0].startswith("block")]
    return picks[0] if picks else None
  best = min(candidates, key=lambda c: c[2].nbytes + (DENSIFY_OVERHEAD if c[1] else 0))
  cost = best[2].nbytes + (DENSIFY_OVERHEAD if best[1] else 0)
  return best if cost < dense_bytes else None


def _add_densify(model, sg, tensor_index, users):
  """Inserts DENSIFY(tensor) before its first user and rewires `users` to its output.

  Args:
    model: `schema.ModelT`.
    sg: the subgraph holding the tensor.
    tensor_index: index of the sparse constant tensor.
    users: list of (operator object, input position) reading the tensor.
  """
  src = sg.tensors[tensor_index]
  dst = copy.deepcopy(src)
  dst.sparsity = None
  dst.buffer = 0
  dst.name = (graph.tensor_name(src) + "/densified").encode()
  sg.tensors.append(dst)
  dst_index = len(sg.tensors) - 1
  op = schema.OperatorT()
  op.opcodeIndex = graph.get_opcode_index(model, DENSIFY, 1)
  op.inputs = [tensor_index]
  op.outputs = [dst_index]
  op.builtinOptionsType = schema.BuiltinOptions.DensifyOptions
  op.builtinOptions = schema.DensifyOptionsT()
  for user, pos in users:
    user.inputs[pos] = dst_index
  first = min(next(i for i, o in enumerate(sg.operators) if o is user) for user, _ in users)
  sg.operators.insert(first, op)


def encode_model(model, sparse="auto", quantized=False, target="litert",
                 micro_sparse_kernel=False):
  """Re-encodes the constants of a dense `model` and retags sparse FC ops.

  Args:
    model: dense `schema.ModelT` (see `densify_model`), modified in place.
    sparse: "auto" (smallest correct encoding per tensor, dense if sparse is not
      smaller), "csr", "block", or "off".
    quantized: True for dynamic-range or full-int8 models.
    target: "litert" or "micro".
    micro_sparse_kernel: allow 1x16 int8 FC weights for a custom TFLM kernel.

  Returns:
    A list of `TensorReport`, one per constant tensor with >= 2 dimensions.

  Raises:
    ValueError: on an unknown `sparse` mode.
  """
  if sparse not in SPARSE_MODES:
    raise ValueError(f"sparse must be one of {SPARSE_MODES}, got {sparse!r}.")
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
      fc_weight = all(graph.op_code(model, sg.operators[i]) == FC and pos == 1
                      for i, pos in users) and dense.ndim == 2
      fmt, nbytes = "dense", dense.nbytes
      if (sparse != "off" and dense.size >= MIN_ELEMENTS
          and dense.dtype in (np.float32, np.int8)):
        cands = _candidates(dense, dense.dtype, fc_weight, quantized, target,
                            micro_sparse_kernel)
        pick = _choose(sparse, dense.nbytes, cands, bool(np.any(dense == 0)))
        if pick is not None:
          fmt, via_densify, enc = pick
          graph.set_constant(model, t, enc.values)
          t.sparsity = enc.sparsity
          nbytes = enc.nbytes
          if via_densify:
            pending_densify.append((ti, [(sg.operators[i], pos) for i, pos in users]))
            if fc_weight and quantized:
              fc_to_retag.update(i for i, _ in users)
          else:
            fc_to_retag.update(i for i, _ in users)
      reports.append(TensorReport(
          name=graph.tensor_name(t), op="/".join(ops), shape=tuple(int(s) for s in t.shape),
          dtype=graph.type_name(t), format=fmt, nonzeros=int(np.count_nonzero(dense)),
          dense_bytes=int(dense.nbytes), bytes=int(nbytes)))
    retag_ops = [sg.operators[i] for i in fc_to_retag]
    for ti, users in pending_densify:
      _add_densify(model, sg, ti, users)
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
