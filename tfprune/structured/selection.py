"""Which channel units to remove: the allocation rules and the masks that remove them.

Pure NumPy over a `depgraph.ChannelGraph`, unit scores (`importance.unit_scores`) and,
for a budget, a cost model (`costs.CostModel`: `costs.MacModel`, `latency.LatencyModel`):

  * `select_units(...)`: the units to remove for a fraction of the channels, globally
    (scores normalised per group, then ranked together: the default) or per group, with
    `round_to`, `min_units`, ignored layers, and a budget (`target=`) counted in an
    explicit `cost_model=` (MACs or measured LiteRT latency).
  * `unit_masks(...)`: 0/1 masks that zero every slice of the chosen units, so a masked
    model computes exactly what the shrunk model computes (docs/structured.md).
  * `structured_masks(...)`: both, from the L2 group norm of per-weight values.
"""
import heapq

import numpy as np

from tfprune import masks as masks_lib
from tfprune.structured import costs
from tfprune.structured import depgraph
from tfprune.structured import importance
from tfprune.structured import members


def select_units(graph, scores, fraction=None, allocation="global", round_to=1,
                 min_units=1, ignored=(), target=None, cost_model=None,
                 max_pruning_ratio=None):
  """The units to remove.

  Every group keeps at least `min_units` (>= 1) units, so no layer's output (nor input)
  is ever removed whole: the channel form of the layer floor (`tfprune.masks.
  layer_floor`); `max_pruning_ratio` r also keeps `keep_count(size, r)` of each group.

  Args:
    graph: the ChannelGraph.
    scores: `importance.unit_scores(...)`.
    fraction: fraction of the prunable units to remove, in [0, 1).
    allocation: "global" (scores divided by their group's mean, ranked together) or
      "layer" (each group loses `fraction` of its own units).
    round_to: keep a multiple of this many units per group (SIMD-friendly widths).
    min_units: keep at least this many units per group.
    ignored: layer names whose groups are left whole.
    target: instead of `fraction`, a budget in (0, 1]: remove the least important units
      until `cost_model.total()` is at most this fraction of today's.
    cost_model: the `costs.CostModel` the budget is counted in: `costs.MacModel` (MACs)
      or `latency.LatencyModel` (measured LiteRT microseconds, docs/structured.md); the
      removals stay applied to it on return.
    max_pruning_ratio: None or a float in (0, 1]: at most this fraction of any group's
      units is removed (on top of `min_units`).

  Returns:
    A sorted list of (group, unit).
  """
  if (fraction is None) == (target is None):
    raise ValueError(f"give exactly one of fraction= and target=; got fraction="
                     f"{fraction!r}, target={target!r}.")
  if fraction is not None and not 0.0 <= fraction < 1.0:
    raise ValueError(f"fraction must be in [0, 1), got {fraction}.")
  if target is not None:
    if not 0.0 < target <= 1.0:
      raise ValueError(f"target must be in (0, 1] (a fraction of today's cost), got "
                       f"{target}.")
    if cost_model is None:
      raise ValueError("target needs cost_model=: costs.MacModel(model, graph) or "
                       "latency.LatencyModel(model, graph).")
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
  if allocation == "layer" and target is not None:
    # The same fraction from every group: the smallest that meets the MACs budget.
    goal = target * cost_model.total()
    kwargs = dict(allocation="layer", round_to=round_to, min_units=min_units,
                  ignored=ignored, max_pruning_ratio=ratio)

    def macs_after(units):
      for g, u in units:
        cost_model.apply(graph.groups[g].units[u])
      total = cost_model.total()
      for g, u in units:
        cost_model.apply(graph.groups[g].units[u], sign=-1)
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
      cost_model.apply(graph.groups[g].units[u])
    return best
  if allocation == "layer" and target is None:
    chosen = []
    for g, ranked in per_group.items():
      size = len(ranked)
      keep = round_keep(int(masks_lib.keep_count(size, fraction)), size, round_to, floor[g])
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
  goal = None if target is None else target * cost_model.total()
  removed, chosen = 0, []
  # Units to remove: what `masks.keep_count` leaves of all units (the one keep rule).
  quota = None if fraction is None else total_units - int(
      masks_lib.keep_count(total_units, fraction))
  while heap:
    if goal is None and removed >= quota:
      break
    if goal is not None and cost_model.total() <= goal:
      break
    _, g, start, stop = heapq.heappop(heap)
    if goal is None and removed + (stop - start) > quota and removed > 0:
      continue  # this chunk would overshoot: try smaller chunks of other groups
    units = [u for _, u in per_group[g][start:stop]]
    chosen += [(g, u) for u in units]
    removed += len(units)
    if goal is not None:
      for u in units:
        cost_model.apply(graph.groups[g].units[u])
    _push(heap, g, per_group[g], stop, round_to, floor[g])
  return sorted(chosen)


def round_keep(keep, size, round_to, min_units):
  """`keep` channels of a group of `size`, raised to >= `min_units` and a multiple of
  `round_to` (at most `size`)."""
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
  slices = slices if slices is not None else members.unit_slices(model, graph)
  ops = {op.name: op for op in model.operations}
  masks = {}
  for key in units:
    for layer, name, axis, idx in slices[key]:
      if (layer, name) not in masks:
        shape = members.weights_by_name(ops[layer])[name].shape
        masks[(layer, name)] = np.ones(shape, np.float32)
      mask = masks[(layer, name)]
      index = [slice(None)] * mask.ndim
      index[axis] = idx
      mask[tuple(index)] = 0.0
  return masks


def structured_masks(model, fraction=None, values=None, graph=None, **select_kwargs):
  """Masks that remove `fraction` of the channel units (or meet `target=`).

  Args:
    model: a plain or pruned (PruneWrapper) Functional model.
    fraction: fraction of the prunable units to remove.
    values: optional per-weight importance {(layer, weight name): array} (default |W|);
      units are ranked by the L2 norm of their slices.
    graph: the model's ChannelGraph if already built.
    **select_kwargs: `select_units` options (allocation, round_to, min_units, ignored,
      target).

  Returns:
    ({(layer name, weight name): 0/1 mask}, chosen units).
  """
  graph = graph or depgraph.ChannelGraph(model)
  slices = members.unit_slices(model, graph)
  scores = importance.unit_scores(model, graph, "l2", slices=slices, values=values)
  if select_kwargs.get("target") is not None and "cost_model" not in select_kwargs:
    select_kwargs["cost_model"] = costs.MacModel(model, graph)
  units = select_units(graph, scores, fraction=fraction, **select_kwargs)
  return unit_masks(model, graph, units, slices), units
