"""Which channel units to remove: group importance, MACs, and the allocation rules.

Pure NumPy over a `depgraph.ChannelGraph` and the model's current weights:

  * `unit_slices(model, graph)`: for every unit, the weight slices it owns in every member
    layer (kernel columns of producers, kernel rows of readers, depthwise slices, heads).
  * `unit_scores(...)`: group importance per unit: "l2" / "l1" group magnitude over all
    those slices, "bn_scale" (|gamma| of the unit's BatchNormalization: network slimming,
    Liu et al., ICCV 2017), or "taylor" (first-order Taylor |sum W * dL/dW| over the
    slices: Molchanov et al., CVPR 2019).
  * `select_units(...)`: the units to remove for a fraction of the channels, globally
    (scores normalised per group, then ranked together: the default) or per group, with
    `round_to`, `min_units`, ignored layers, and a MACs budget (`target_macs`) or a
    measured latency budget (`target_latency`, `tfprune.structured.latency`).
  * `unit_masks(...)`: 0/1 masks that zero every slice of the chosen units, so a masked
    model computes exactly what the shrunk model computes (docs/structured.md).
"""
import heapq

import numpy as np

from tfprune import masks as masks_lib
from tfprune.structured import blocks
from tfprune.structured import depgraph
from tfprune.structured import members
from tfprune.structured.members import is_kernel  # pylint: disable=unused-import (re-exported)
from tfprune.structured.members import KERNELS  # pylint: disable=unused-import (re-exported)
from tfprune.structured.members import weight_name  # pylint: disable=unused-import (re-exported)

def inner_layer(op):
  """The layer whose weights a graph member names (a PruneWrapper's inner layer)."""
  return op.layer if depgraph.is_prune_wrapper(op) else op


def weights_by_name(layer):
  """{"kernel": variable, "query/kernel": variable, ...} of `layer` (of its inner layer
  for a PruneWrapper), in `layer.weights` order."""
  layer = inner_layer(layer)
  return {weight_name(layer, v): v for v in layer.weights}


def member_slices(layer, member):
  """[(weight name, axis, indices)] the member owns in `layer` (a custom block's unit,
  or a built-in layer's: `members.member_slices`)."""
  if blocks.is_block_role(member.role):  # [blocks hook] a unit inside a custom block
    return blocks.member_slices(layer, member)
  return members.member_slices(layer, member)


def unit_slices(model, graph):
  """{(group, unit): [(layer name, weight name, axis, indices)]} for prunable groups."""
  ops = {op.name: op for op in model.operations}
  out = {}
  for g, group in enumerate(graph.groups):
    if group.blocked:
      continue
    for u, members in enumerate(group.units):
      slices = []
      for member in members:
        layer = inner_layer(ops[member.layer])
        names = weights_by_name(layer)
        slices += [(member.layer, n, a, i) for n, a, i in member_slices(layer, member)
                   if n in names]
      out[(g, u)] = slices
  return out


def _take(array, axis, indices):
  return np.take(array, indices, axis=axis)


def unit_scores(model, graph, criterion="l2", gradients=None, slices=None, values=None):
  """Importance of every prunable unit: {(group, unit): score}.

  Args:
    model, graph: the model and its ChannelGraph.
    criterion: "l2", "l1", "bn_scale" or "taylor".
    gradients: for "taylor", {(layer name, weight name): dL/dW array}.
    slices: `unit_slices(model, graph)` if already computed.
    values: optional {(layer name, weight name): per-weight importance} used instead of
      the weights for "l2" / "l1" (a method's own scores, e.g. movement's); weights
      without an entry use their values.
  """
  if criterion not in ("l2", "l1", "bn_scale", "taylor"):
    raise ValueError(f"criterion must be one of l2, l1, bn_scale, taylor; got "
                     f"{criterion!r}.")
  if criterion == "taylor" and not gradients:
    raise ValueError("criterion='taylor' needs gradients={(layer, weight): dL/dW}.")
  slices = slices if slices is not None else unit_slices(model, graph)
  ops = {op.name: op for op in model.operations}
  cache = {k: np.asarray(v, np.float64) for k, v in (values or {}).items()}

  def value(layer, name):
    if (layer, name) not in cache:
      cache[(layer, name)] = np.asarray(weights_by_name(ops[layer])[name].numpy(), np.float64)
    return cache[(layer, name)]

  scores = {}
  for key, owned in slices.items():
    total = 0.0
    has_bn = False
    for layer, name, axis, idx in owned:
      if criterion == "bn_scale":
        if name == "gamma":
          has_bn = True
          total += float(np.abs(_take(value(layer, name), axis, idx)).sum())
        continue
      if not is_kernel(name):
        continue
      w = _take(value(layer, name), axis, idx)
      if criterion == "l2":
        total += float(np.square(w).sum())
      elif criterion == "l1":
        total += float(np.abs(w).sum())
      else:
        grad = np.asarray(gradients[(layer, name)], np.float64)
        total += float((w * _take(grad, axis, idx)).sum())
    if criterion == "bn_scale" and not has_bn:
      raise ValueError(f"criterion='bn_scale' needs a BatchNormalization in every pruned "
                       f"group; group {key[0]} ({', '.join(graph.groups[key[0]].layers)}) "
                       f"has none: ignore its layers or use l2.")
    scores[key] = np.sqrt(total) if criterion == "l2" else abs(total)
  return scores


# ------------------------------------------------------------------- MACs
class MacModel:
  """Multiply-accumulates per layer as a function of its remaining channels."""

  def __init__(self, model, graph):
    self.layers = {}
    for op in model.operations:
      cost = _layer_cost(op, inner_layer(op))
      if cost is not None:
        self.layers[op.name] = cost
    self.graph = graph
    self.removed = {name: {} for name in self.layers}

  def total(self):
    return sum(self.layer_macs(n) for n in self.layers)

  def layer_macs(self, name):
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


def _layer_cost(node, op):
  """cost(cut) -> MACs, with cut = {role: removed count}; None for cost-free layers.

  `node` is the graph operation (for shapes), `op` the layer holding the weights.
  """
  block_cost = blocks.layer_cost(node, op)  # [blocks hook] a custom transformer block
  if block_cost is not None:
    return block_cost
  cls = type(op).__name__
  if not hasattr(op, "kernel") and cls not in ("SeparableConv1D", "SeparableConv2D",
                                                "MultiHeadAttention"):
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
  if cls in ("Dense", "EinsumDense", "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose",
             "Conv2DTranspose", "Conv3DTranspose"):
    kernel = op.kernel.shape
    transpose = cls.endswith("Transpose")
    cin = kernel[-1] if transpose else kernel[-2]
    cout = kernel[-2] if transpose else kernel[-1]
    spatial = int(np.prod(kernel[:-2] or [1]))
    if transpose:
      positions = _positions(in_shape)
    return lambda cut: positions * spatial * (cin - cut.get("in", 0)) * \
        (cout - cut.get("out", 0))
  if cls.startswith("Depthwise"):
    kernel = op.kernel.shape
    spatial = int(np.prod(kernel[:-2]))
    return lambda cut: positions * spatial * (kernel[-2] - cut.get("dw", 0)) * kernel[-1]
  if cls.startswith("Separable"):
    dk, pk = op.depthwise_kernel.shape, op.pointwise_kernel.shape
    spatial = int(np.prod(dk[:-2]))

    def separable(cut):
      cin = dk[-2] - cut.get("dw", 0)
      return positions * (spatial * cin * dk[-1] + cin * dk[-1] * (pk[-1] - cut.get("out", 0)))

    return separable
  if cls == "MultiHeadAttention":
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


# -------------------------------------------------------------- selection
def select_units(graph, scores, fraction=None, allocation="global", round_to=1,
                 min_units=1, ignored=(), target_macs=None, mac_model=None,
                 target_latency=None, latency_model=None, max_pruning_ratio=None):
  """The units to remove.

  Every group keeps at least `min_units` (>= 1) units, so no layer's output (nor input)
  is ever removed whole: the channel form of the layer floor (`tfprune.masks.
  layer_floor`); `max_pruning_ratio` r also keeps `keep_count(size, r)` of each group.

  Args:
    graph: the ChannelGraph.
    scores: `unit_scores(...)`.
    fraction: fraction of the prunable units to remove, in [0, 1).
    allocation: "global" (scores divided by their group's mean, ranked together) or
      "layer" (each group loses `fraction` of its own units).
    round_to: keep a multiple of this many units per group (SIMD-friendly widths).
    min_units: keep at least this many units per group.
    ignored: layer names whose groups are left whole.
    target_macs: instead of `fraction`, remove the least important units until the
      model's MACs are at most this fraction of today's (needs `mac_model`).
    mac_model: a `MacModel` of the model.
    target_latency: the same budget in estimated latency (fraction of today's), with
      `latency_model` (a `tfprune.structured.latency.LatencyModel`: measured LiteRT
      times per layer, docs/structured.md).
    latency_model: the cost model for `target_latency`; any object with `total()` and
      `apply(members, sign)` works (the removals stay applied to it on return).
    max_pruning_ratio: None or a float in (0, 1]: at most this fraction of any group's
      units is removed (on top of `min_units`).

  Returns:
    A sorted list of (group, unit).
  """
  given = [n for n, v in (("fraction", fraction), ("target_macs", target_macs),
                          ("target_latency", target_latency)) if v is not None]
  if len(given) != 1:
    raise ValueError(f"give exactly one of fraction=, target_macs= and target_latency=; "
                     f"got {given or 'none'}.")
  if fraction is not None and not 0.0 <= fraction < 1.0:
    raise ValueError(f"fraction must be in [0, 1), got {fraction}.")
  if target_macs is not None:
    if not 0.0 < target_macs <= 1.0:
      raise ValueError(f"target_macs must be in (0, 1], got {target_macs}.")
    if mac_model is None:
      raise ValueError("target_macs needs mac_model=MacModel(model, graph).")
  if target_latency is not None:
    if not 0.0 < target_latency <= 1.0:
      raise ValueError(f"target_latency must be in (0, 1], got {target_latency}.")
    if latency_model is None:
      raise ValueError("target_latency needs latency_model=LatencyModel(model, graph) "
                       "(tfprune.structured.latency).")
    # The same budgeted search, against the measured cost model.
    target_macs, mac_model = target_latency, latency_model
  if allocation not in ("global", "layer"):
    raise ValueError(f"allocation must be 'global' or 'layer', got {allocation!r}.")
  round_to, min_units = int(round_to), int(min_units)
  if round_to < 1 or min_units < 1:
    raise ValueError(f"round_to and min_units must be >= 1, got {round_to}, {min_units}.")
  ignored = set(ignored)
  per_group = {}
  for (g, u), s in scores.items():
    if ignored & set(graph.groups[g].layers):
      continue
    per_group.setdefault(g, []).append((s, u))
  for g in per_group:
    per_group[g].sort()
  ratio = masks_lib.validate_max_pruning_ratio(max_pruning_ratio)
  floor = {g: min_units if ratio is None else
           max(min_units, int(masks_lib.keep_count(len(v), ratio)))
           for g, v in per_group.items()}
  total_units = sum(len(v) for v in per_group.values())
  if allocation == "layer" and target_macs is not None:
    # The same fraction from every group: the smallest that meets the MACs budget.
    goal = target_macs * mac_model.total()
    kwargs = dict(allocation="layer", round_to=round_to, min_units=min_units,
                  ignored=ignored, max_pruning_ratio=ratio)

    def macs_after(units):
      for g, u in units:
        mac_model.apply(graph.groups[g].units[u])
      total = mac_model.total()
      for g, u in units:
        mac_model.apply(graph.groups[g].units[u], sign=-1)
      return total

    lo, hi = 0.0, 0.999
    best = select_units(graph, scores, fraction=hi, **kwargs)
    for _ in range(14):
      mid = (lo + hi) / 2
      units = select_units(graph, scores, fraction=mid, **kwargs)
      if macs_after(units) <= goal:
        best, hi = units, mid
      else:
        lo = mid
    for g, u in best:
      mac_model.apply(graph.groups[g].units[u])
    return best
  if allocation == "layer" and target_macs is None:
    chosen = []
    for g, ranked in per_group.items():
      size = len(ranked)
      keep = _round_keep(size - int(round(fraction * size)), size, round_to, floor[g])
      chosen += [(g, u) for _, u in ranked[:size - keep]]
    return sorted(chosen)
  # Global: chunks of `round_to` units per group, cheapest normalised score first.
  heap = []
  position = {}
  for g, ranked in per_group.items():
    mean = float(np.mean([s for s, _ in ranked])) or 1.0
    per_group[g] = [(s / mean, u) for s, u in ranked]
    position[g] = 0
    _push(heap, g, per_group[g], 0, round_to, floor[g])
  goal = None if target_macs is None else target_macs * mac_model.total()
  removed, chosen = 0, []
  while heap:
    if goal is None and removed >= fraction * total_units - 1e-9:
      break
    if goal is not None and mac_model.total() <= goal:
      break
    _, g, start, stop = heapq.heappop(heap)
    if goal is None and removed + (stop - start) > fraction * total_units + 1e-9 and \
        removed > 0:
      continue  # this chunk would overshoot: try smaller chunks of other groups
    units = [u for _, u in per_group[g][start:stop]]
    chosen += [(g, u) for u in units]
    removed += len(units)
    if goal is not None:
      for u in units:
        mac_model.apply(graph.groups[g].units[u])
    _push(heap, g, per_group[g], stop, round_to, floor[g])
  return sorted(chosen)


def round_keep(keep, size, round_to, min_units):
  """`keep` channels of a group of `size`, raised to >= `min_units` and a multiple of
  `round_to` (at most `size`)."""
  return _round_keep(keep, size, round_to, min_units)


def _round_keep(keep, size, round_to, min_units):
  keep = max(keep, min_units)
  keep = int(np.ceil(keep / round_to) * round_to)
  return min(keep, size)


def _push(heap, g, ranked, start, round_to, min_units):
  """Queues the next chunk of group g (keeping a multiple of round_to, >= min_units)."""
  size = len(ranked)
  kept = size - start
  step = kept % round_to or round_to
  if kept - step < max(min_units, 1):
    return
  stop = start + step
  heapq.heappush(heap, (float(np.mean([s for s, _ in ranked[start:stop]])), g, start, stop))


def unit_masks(model, graph, units, slices=None):
  """{(layer, weight name): 0/1 float32 mask} zeroing every slice of `units`."""
  slices = slices if slices is not None else unit_slices(model, graph)
  ops = {op.name: op for op in model.operations}
  masks = {}
  for key in units:
    for layer, name, axis, idx in slices[key]:
      if (layer, name) not in masks:
        shape = weights_by_name(ops[layer])[name].shape
        masks[(layer, name)] = np.ones(shape, np.float32)
      mask = masks[(layer, name)]
      index = [slice(None)] * mask.ndim
      index[axis] = idx
      mask[tuple(index)] = 0.0
  return masks


def structured_masks(model, fraction=None, values=None, graph=None, **select_kwargs):
  """Masks that remove `fraction` of the channel units (or meet `target_macs=`).

  Args:
    model: a plain or pruned (PruneWrapper) Functional model.
    fraction: fraction of the prunable units to remove.
    values: optional per-weight importance {(layer, weight name): array} (default |W|);
      units are ranked by the L2 norm of their slices.
    graph: the model's ChannelGraph if already built.
    **select_kwargs: `select_units` options (allocation, round_to, min_units, ignored,
      target_macs).

  Returns:
    ({(layer name, weight name): 0/1 mask}, chosen units).
  """
  graph = graph or depgraph.ChannelGraph(model)
  slices = unit_slices(model, graph)
  scores = unit_scores(model, graph, "l2", slices=slices, values=values)
  if select_kwargs.get("target_macs") is not None and "mac_model" not in select_kwargs:
    select_kwargs["mac_model"] = MacModel(model, graph)
  units = select_units(graph, scores, fraction=fraction, **select_kwargs)
  return unit_masks(model, graph, units, slices), units
