"""What a model costs as channel units are removed: the cost-model protocol and MACs.

`selection.select_units(..., target=f, cost_model=...)` removes units until
`cost_model.total()` is at most `f` of today's; any `CostModel` works:

  * `MacModel`: multiply-accumulates per example (`layer_cost`: the formula of every
    Dense / EinsumDense / conv / transposed / depthwise / separable conv and
    MultiHeadAttention layer by its `tfprune.layer_types` kind; a recognised custom
    block's from `blocks.layer_cost`);
  * `tfprune.structured.latency.LatencyModel`: measured LiteRT microseconds.
"""
from typing import Protocol, runtime_checkable

import numpy as np

from tfprune import _layers
from tfprune import layer_types
from tfprune.structured import blocks


@runtime_checkable
class CostModel(Protocol):
  """A model's cost as a function of the channel units removed so far."""

  def total(self):
    """The model's cost now (with the removals recorded so far)."""

  def layer_macs(self, name):
    """The cost of layer `name` now."""

  def apply(self, members, sign=1):
    """Records (sign=1) or undoes (-1) the removal of one unit's graph members;
    returns the names of the layers whose cost changes."""


class MacModel:
  """Multiply-accumulates per layer as a function of its remaining channels (a
  `CostModel`: `layer_cost` of every costed layer, the removals recorded by role)."""

  def __init__(self, model, graph):
    self.layers = {}
    for op in model.operations:
      cost = layer_cost(op, _layers.inner_layer(op))
      if cost is not None:
        self.layers[op.name] = cost
    self.graph = graph
    self.removed = {name: {} for name in self.layers}

  def total(self):
    """MACs per example of the model with the channels removed so far."""
    return sum(self.layer_macs(n) for n in self.layers)

  def layer_macs(self, name):
    """MACs per example of layer `name` with the channels removed so far."""
    cost = self.layers[name]
    cut = self.removed[name]
    return cost(cut)

  def apply(self, members, sign=1):
    """Records (sign=1) or undoes (-1) the removal of one unit's members."""
    touched = set()
    for m in members:
      if m.layer not in self.removed:
        continue
      count = len(m.index) if isinstance(m.index, tuple) else 1
      cut = self.removed[m.layer]
      cut[m.role] = cut.get(m.role, 0) + sign * count
      touched.add(m.layer)
    return touched


def _positions(shape):
  return int(np.prod([d for d in shape[1:-1]] or [1]))


def layer_cost(node, op):
  """cost(cut) -> MACs, with cut = {role: removed count}; None for cost-free layers.

  `node` is the graph operation (for shapes), `op` the layer holding the weights.
  """
  block_cost = blocks.layer_cost(node, op)  # [blocks hook] a custom transformer block
  if block_cost is not None:
    return block_cost
  kind = getattr(layer_types.of(op), "channels", None)
  if kind not in (layer_types.DENSE, layer_types.EINSUM, layer_types.CONV,
                  layer_types.TRANSPOSE, layer_types.DEPTHWISE, layer_types.SEPARABLE,
                  layer_types.ATTENTION):
    return None
  try:
    out_shape = list(node.output.shape)
    in_shape = list(node.input.shape) if not isinstance(node.input, (list, tuple)) else \
        list(node.input[0].shape)
  except (AttributeError, ValueError, IndexError):
    return None
  if None in out_shape[1:]:
    return None
  positions = _positions(out_shape)
  if kind in (layer_types.DENSE, layer_types.EINSUM, layer_types.CONV,
              layer_types.TRANSPOSE):
    kernel = op.kernel.shape
    transpose = kind == layer_types.TRANSPOSE
    cin = kernel[-1] if transpose else kernel[-2]
    cout = kernel[-2] if transpose else kernel[-1]
    spatial = int(np.prod(kernel[:-2] or [1]))
    if transpose:
      positions = _positions(in_shape)
    return lambda cut: positions * spatial * (cin - cut.get("in", 0)) * \
        (cout - cut.get("out", 0))
  if kind == layer_types.DEPTHWISE:
    kernel = op.kernel.shape
    spatial = int(np.prod(kernel[:-2]))
    return lambda cut: positions * spatial * (kernel[-2] - cut.get("dw", 0)) * kernel[-1]
  if kind == layer_types.SEPARABLE:
    dk, pk = op.depthwise_kernel.shape, op.pointwise_kernel.shape
    spatial = int(np.prod(dk[:-2]))

    def separable(cut):
      cin = dk[-2] - cut.get("dw", 0)
      return positions * (spatial * cin * dk[-1] + cin * dk[-1] * (pk[-1] - cut.get("out", 0)))

    return separable
  if kind == layer_types.ATTENTION:
    q = op.query_dense.kernel.shape  # [d, heads, key_dim]
    v = op.value_dense.kernel.shape
    o = op.output_dense.kernel.shape
    seq = positions

    def attention(cut):
      heads = q[1] - cut.get("head", 0)
      dq = q[0] - cut.get("in_query", 0)
      dv = v[0] - cut.get("in_value", 0)
      dk = v[0] - cut.get("in_key", cut.get("in_value", 0))
      proj = seq * heads * (dq * q[2] + dk * q[2] + dv * v[2])
      scores = seq * seq * heads * (q[2] + v[2])
      return proj + scores + seq * heads * v[2] * (o[-1] - cut.get("out", 0))

    return attention
  return None
