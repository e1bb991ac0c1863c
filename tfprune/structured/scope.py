"""The `scope="structured"` of a pruning method: masks that remove whole channel groups.

A method with this scope ranks channel groups of the model's `ChannelGraph` (coupled
output channels of producers, input rows of their readers, BatchNorm slices, ...) by an
importance built from the method's own per-weight scores, chooses the groups to remove
with `selection.select_units` (global or per-layer, `round_to`, `min_units`, ignored
layers, a `target_macs` budget or a `target_latency` budget measured on LiteRT) and
zeroes each removed channel in every weight of its group, so
`tfprune.strip(model, shrink=True)` deletes it exactly (docs/structured.md).

`ChannelScope` holds the arguments, the graph built when the method binds, the units
the last masks removed and, for a gradient criterion (`taylor`), the loss gradients of
the pruned weights summed since the last masks (`observe_gradients`); it knows nothing
of the method classes. A method receives it as `method.channels` (docs/methods.md).
"""
import os

import numpy as np
import tensorflow as tf

from tfprune.structured import costs
from tfprune.structured import depgraph
from tfprune.structured import importance
from tfprune.structured import latency
from tfprune.structured import members
from tfprune.structured import selection

# The arguments and their defaults (a method serializes only the changed ones).
DEFAULTS = {"round_to": 1, "min_units": 1, "ignored_layers": (), "target_macs": None,
            "criterion": "l2", "target_latency": None, "latency_precision": "float",
            "latency_table": None}


class ChannelScope:
  """Channel-graph masks for one method's pruned weights.

  Args:
    round_to: kept channel counts are a multiple of this (e.g. 8 / 16 for SIMD).
    min_units: at least this many channels kept per group.
    ignored_layers: layer names whose groups are never pruned.
    target_macs: a MACs budget (fraction of today's MACs) instead of a channel fraction.
    criterion: group importance, a name in the registry
      `tfprune.structured.importance.CRITERIA`: `l2` / `l1` group norm of the method's
      scores, `bn_scale` (|gamma|, network slimming: Liu et al., ICCV 2017), `taylor`
      (|sum W * dL/dW|, Molchanov et al., CVPR 2019) or `fpgm` (distance to the other
      units' filters, He et al., CVPR 2019).
    target_latency: a latency budget (fraction of today's estimated LiteRT latency)
      instead of a channel fraction; the per-layer costs are measured on this machine's
      LiteRT (`tfprune.structured.latency.LatencyModel`, the first time masks are made)
      or read from `latency_table`. Exclusive with `target_macs`.
    latency_precision: `float` or `int8`: the precision the latency is measured for.
    latency_table: a table from `tfprune.structured.latency.measure_table` (a dict or
      the path of its JSON file), e.g. measured on the target device; configs hold the
      table itself.

  Raises:
    ValueError: an argument out of range, naming it and what would be valid.
  """

  def __init__(self, round_to=1, min_units=1, ignored_layers=None, target_macs=None,
               criterion="l2", target_latency=None, latency_precision="float",
               latency_table=None):
    if isinstance(ignored_layers, str):
      ignored_layers = [ignored_layers]
    self.round_to, self.min_units = int(round_to), int(min_units)
    self.ignored_layers = tuple(str(n) for n in (ignored_layers or ()))
    self.target_macs = None if target_macs is None else float(target_macs)
    self.criterion = criterion
    if self.round_to < 1 or self.min_units < 1:
      raise ValueError(f"round_to and min_units must be >= 1 channel, got round_to="
                       f"{round_to!r}, min_units={min_units!r}.")
    if self.target_macs is not None and not 0.0 < self.target_macs <= 1.0:
      raise ValueError(f"target_macs must be in (0, 1] (the fraction of today's MACs to "
                       f"keep), got {target_macs!r}.")
    self._criterion = importance.get_criterion(criterion)  # (the registry's error)
    self.target_latency = None if target_latency is None else float(target_latency)
    if self.target_latency is not None and not 0.0 < self.target_latency <= 1.0:
      raise ValueError(f"target_latency must be in (0, 1] (the fraction of today's "
                       f"LiteRT latency to keep), got {target_latency!r}.")
    if self.target_latency is not None and self.target_macs is not None:
      raise ValueError(f"target_macs={target_macs!r} and target_latency="
                       f"{target_latency!r} are two budgets for the same allocation: "
                       f"give one of them.")
    self.latency_precision = latency.validate_precision(latency_precision)
    if isinstance(latency_table, os.PathLike):
      latency_table = os.fspath(latency_table)
    self.latency_table = latency_table
    if self.target_latency is None and (latency_table is not None or
                                        latency_precision != "float"):
      raise ValueError("latency_precision and latency_table apply to a target_latency "
                       "budget only; set target_latency=... (e.g. 0.5) or drop them.")
    self._table = None if latency_table is None else latency.load_table(
        latency_table, self.latency_precision)
    self._latency = None  # the LatencyModel, built the first time it is needed
    self.graph = None
    self.units = []  # (group, unit) pairs the last masks remove
    self._index = self._names = self._slices = None
    self._skipped = {}
    self._gradient_sums = self._gradient_steps = None  # (a gradient criterion)
    self._weights = []

  def changed(self):
    """{argument: value} of the arguments that differ from `DEFAULTS` (for configs).

    A `latency_table` given as a path is written as the table itself, so a saved
    model loads where the file is not.
    """
    out = {}
    for key, default in DEFAULTS.items():
      value = getattr(self, key)
      if value != default:
        out[key] = list(value) if key == "ignored_layers" else value
    if self._table is not None:
      out["latency_table"] = self._table
    return out

  def bind(self, model, wrappers):
    """Builds the ChannelGraph of `model`; `wrappers` are the method's PruneWrappers.

    Raises:
      ValueError: the graph cannot be built, an ignored layer is unknown, or no group
        can be removed (with the graph's report and why each group is left whole).
    """
    try:
      graph = depgraph.ChannelGraph(model)
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(
          f"scope='structured' needs the channel dependency graph of model "
          f"{model.name!r}, which could not be built ({type(e).__name__}: {e}); pruned "
          f"layers: {[w.layer.name for w in wrappers]}. Use scope='layer' or 'global', "
          f"or make the model a Functional model of supported layers "
          f"(docs/structured.md).") from e
    model = graph.model  # (a Sequential model's Functional view)
    index = {}
    for wrapper in wrappers:
      for w in wrapper.prunable_weights:
        index[(wrapper.name, members.weight_name(wrapper.layer, w))] = len(index)
    names = {op.name: op.name for op in model.operations}  # user-facing -> graph name
    names.update({w.layer.name: w.name for w in wrappers})
    unknown = [n for n in self.ignored_layers if n not in names]
    if unknown:
      raise ValueError(f"ignored_layers names layers {unknown} that are not in model "
                       f"{model.name!r}; layers: {sorted(names)}.")
    slices = members.unit_slices(model, graph)
    eligible, skipped = set(), {}
    for (g, _), owned in slices.items():
      missing = [f"{layer}/{name}" for layer, name, _, _ in owned
                 if members.is_kernel(name) and (layer, name) not in index]
      if missing:
        skipped.setdefault(g, f"weights {sorted(set(missing))[:3]} are not pruned "
                              f"(not wrapped)")
      elif self._criterion.group_needs and self._criterion.group_needs(owned):
        skipped.setdefault(g, self._criterion.group_needs(owned))
      else:
        eligible.add(g)
    eligible -= set(skipped)
    if not eligible:
      raise ValueError(
          f"scope='structured': no channel group of model {model.name!r} can be "
          f"removed (every group reaches an input/output, passes a layer that cannot be "
          f"sliced, or touches a layer that is not pruned); the widest are blocked by: "
          f"{graph.main_blockers()}.\n{graph.report()}"
          + "".join(f"\ngroup {g}: {why}" for g, why in sorted(skipped.items())))
    self.graph, self._index, self._names = graph, index, names
    self._slices = {k: v for k, v in slices.items() if k[0] in eligible}
    self._skipped = skipped
    self._latency = None
    self._weights = [w for wrapper in wrappers for w in wrapper.prunable_weights]
    if self.needs_gradients:  # sums of dL/dW since the last masks (observe_gradients)
      self._gradient_sums = [tf.Variable(tf.zeros(w.shape, w.dtype), trainable=False,
                                         name="taylor_grad_sum") for w in self._weights]
      self._gradient_steps = tf.Variable(0, dtype=tf.int64, trainable=False,
                                         name="taylor_steps")
    if self._table is not None:  # a table that misses some layers fails here, not later
      self._latency = latency.LatencyModel(model, graph, self.latency_precision,
                                           self._table)

  def latency_model(self):
    """The `LatencyModel` of the bound model (measured on this host on first use)."""
    if self.graph is None:
      raise ValueError("The structured scope is not bound to a model.")
    if self._latency is None:
      self._latency = latency.LatencyModel(self.graph.model, self.graph,
                                           self.latency_precision, self._table)
    self._latency.reset()
    return self._latency

  @property
  def slices(self):
    """{(group, unit): [(layer, weight name, axis, indices)]} of the removable groups."""
    return self._slices

  def ignored_names(self):
    """Graph names of `ignored_layers` (a pruned layer's wrapper name)."""
    return {self._names[n] for n in self.ignored_layers}

  @property
  def weight_keys(self):
    """{(wrapper name, weight name): position in the method's `weights`}."""
    return dict(self._index)

  @property
  def needs_gradients(self):
    """True if the criterion scores units with the loss gradient (`taylor`)."""
    return self._criterion.needs_gradients

  def observe_gradients(self, grads, variables):
    """Adds one training step's gradients of the pruned weights to the sums a gradient
    criterion scores with (TensorFlow ops only: runs inside the training step).

    Args:
      grads: gradients aligned with `variables` (None where a variable has none).
      variables: the model's trainable variables.
    """
    if self._gradient_sums is None:
      raise ValueError(f"criterion={self.criterion!r} takes no gradients, or the "
                       f"structured scope is not bound to a model.")
    by_id = {id(v): g for g, v in zip(grads, variables)}
    for w, acc in zip(self._weights, self._gradient_sums):
      g = by_id.get(id(w))
      if g is not None:
        acc.assign_add(tf.cast(tf.convert_to_tensor(g), acc.dtype))
    self._gradient_steps.assign_add(1)

  def mean_gradients(self):
    """{(wrapper name, weight name): mean gradient} over the steps observed since the
    last call, which resets the sums; None when no step was observed."""
    steps = 0 if self._gradient_steps is None else int(self._gradient_steps.numpy())
    if steps == 0:
      return None
    grads = {key: self._gradient_sums[i].numpy() / steps
             for key, i in self._index.items()}
    for v in self._gradient_sums:
      v.assign(tf.zeros_like(v))
    self._gradient_steps.assign(0)
    return grads

  @property
  def budget(self):
    """The `target_macs` or `target_latency` budget (fraction to keep), or None."""
    return self.target_macs if self.target_macs is not None else self.target_latency

  def cost_model(self):
    """The cost model this scope's budget counts in: a fresh `MacModel` for
    `target_macs`, the (reset) `LatencyModel` for `target_latency`; None without one."""
    if self.target_macs is not None:
      return costs.MacModel(self.graph.model, self.graph)
    if self.target_latency is not None:
      return self.latency_model()
    return None

  def select(self, scores, allocation, fraction=None, budget=None):
    """`selection.select_units` with this scope's `round_to`, `min_units`, ignored layers
    and, given `budget` (a fraction of today's MACs / latency, whichever this scope's
    budget is), its cost model (`cost_model()`); else `fraction` of the units."""
    kwargs = dict(allocation=allocation, round_to=self.round_to, min_units=self.min_units,
                  ignored=self.ignored_names(),
                  max_pruning_ratio=getattr(self, "max_pruning_ratio", None))
    if budget is None:
      return selection.select_units(self.graph, scores, fraction=fraction, **kwargs)
    return selection.select_units(self.graph, scores, target=budget,
                                  cost_model=self.cost_model(), **kwargs)

  def masks(self, shapes, values, sparsity, allocation, final_sparsity, gradients=None):
    """0/1 masks (float32 NumPy, aligned with `shapes`) removing channel groups.

    Args:
      shapes: the shapes of the method's pruned weights, in order.
      values: per-weight non-negative importances aligned with `shapes`.
      sparsity: fraction of the prunable channels to remove now (with `target_macs` /
        `target_latency`: `sparsity / final_sparsity` is the progress towards the
        budget).
      allocation: `global` or `layer` (`selection.select_units`).
      final_sparsity: the schedule's final sparsity.
      gradients: {(wrapper name, weight name): mean gradient} for a gradient
        criterion (`taylor`); default `mean_gradients()`, the observed steps' mean.

    Returns:
      The masks; `self.units` holds the (group, unit) pairs they remove. None (keep
      the current masks) when a gradient criterion has observed no gradient yet.
    """
    if self.graph is None:
      raise ValueError("The structured scope is not bound to a model.")
    sparsity = float(np.asarray(sparsity))
    out = [np.ones(shape, np.float32) for shape in shapes]
    if sparsity <= 0.0:
      return out
    if self.needs_gradients and gradients is None:
      gradients = self.mean_gradients()
      if gradients is None:
        return None
    keyed = None if not self._criterion.uses_values else {
        key: np.asarray(values[i]) for key, i in self._index.items()}
    scores = importance.unit_scores(self.graph.model, self.graph, self.criterion,
                                    gradients=gradients, slices=self._slices, values=keyed)
    budget = self.budget
    if budget is not None:
      progress = min(1.0, sparsity / final_sparsity) if final_sparsity > 0 else 1.0
      goal = 1.0 - progress * (1.0 - budget)
      if goal >= 1.0:
        return out
      units = self.select(scores, allocation, budget=goal)
    else:
      units = self.select(scores, allocation, fraction=min(sparsity, 0.999))
    return self.masks_removing(units, shapes)

  def masks_removing(self, units, shapes):
    """0/1 masks (float32 NumPy, aligned with `shapes`, the method's pruned weights)
    that remove the (group, unit) pairs `units`; records them in `self.units`."""
    out = [np.ones(shape, np.float32) for shape in shapes]
    for key, mask in selection.unit_masks(self.graph.model, self.graph, units,
                                          self._slices).items():
      if key in self._index:
        out[self._index[key]] = mask
    self.units = sorted(units)
    return out

  def report(self):
    """Text: the graph's groups and which were left whole, and why."""
    if self.graph is None:
      return ""
    text = self.graph.report()
    for g, why in sorted(self._skipped.items()):
      text += f"\ngroup {g} not pruned: {why}"
    return text
