"""Group importance of channel units: the structured criteria registry.

A criterion turns every prunable unit of a `depgraph.ChannelGraph` (the weight slices it
owns in every member layer: `unit_slices`) into one score; the lowest go first. The
registry below is the only list of criteria: `ChannelScope` validates `criterion=`
against it and reads each entry's needs (the method's per-weight values, gradients, a
layer kind every group must have). A new criterion is one `register_criterion` entry:

  * `l2` / `l1`: group norm of the unit's kernel slices (of the method's per-weight
    scores when given: Torch-Pruning's `GroupMagnitudeImportance`);
  * `bn_scale`: |gamma| of the unit's BatchNormalization (network slimming, Liu et al.,
    ICCV 2017);
  * `taylor`: first-order Taylor |sum W * dL/dW| over the unit's kernel slices
    (Molchanov et al., CVPR 2019);
  * `fpgm`: filter pruning via the geometric median (He et al., CVPR 2019): a unit's
    score is the sum of Euclidean distances from its kernel slice to the other units'
    slices of the same weight; units near the geometric median are the most
    replaceable and go first.
"""
import dataclasses
from typing import Callable

import numpy as np

from tfprune.structured import members


@dataclasses.dataclass(frozen=True)
class Criterion:
  """One registered criterion.

  Attributes:
    name: the `criterion=` value.
    score: fn(units: `Units`) -> {(group, unit): score >= 0}.
    uses_values: scores the method's per-weight values (`values=`) instead of the
      weights when given.
    needs_gradients: needs {(layer, weight name): dL/dW} (`gradients=`).
    group_needs: None, or fn(owned slices of one unit) -> why the unit's group cannot
      be scored (a string) or None; `ChannelScope.bind` leaves such groups whole.
  """
  name: str
  score: Callable
  uses_values: bool = False
  needs_gradients: bool = False
  group_needs: Callable | None = None


CRITERIA = {}


def register_criterion(name, uses_values=False, needs_gradients=False, group_needs=None):
  """Decorator: registers `fn(units) -> {(group, unit): score}` as criterion `name`."""

  def decorate(fn):
    if name in CRITERIA:
      raise ValueError(f"structured criterion {name!r} is already registered.")
    CRITERIA[name] = Criterion(name, fn, uses_values, needs_gradients, group_needs)
    return fn

  return decorate


def get_criterion(name):
  """The registered `Criterion` called `name`; a ValueError listing them otherwise."""
  if name not in CRITERIA:
    raise ValueError(f"criterion must be one of {', '.join(CRITERIA)}, got {name!r}.")
  return CRITERIA[name]


class Units:
  """What a criterion reads: the units' slices and the arrays they cut.

  Attributes:
    graph: the ChannelGraph.
    slices: {(group, unit): [(layer name, weight name, axis, indices)]}.
  """

  def __init__(self, model, graph, slices, values=None, gradients=None):
    self.graph, self.slices = graph, slices
    self._ops = {op.name: op for op in model.operations}
    self._values = {k: np.asarray(v, np.float64) for k, v in (values or {}).items()}
    self._weights = {}
    self._gradients = gradients or {}

  def weight(self, layer, name):
    """The current value of weight `name` of `layer` (float64)."""
    if (layer, name) not in self._weights:
      variable = members.weights_by_name(self._ops[layer])[name]
      self._weights[(layer, name)] = np.asarray(variable.numpy(), np.float64)
    return self._weights[(layer, name)]

  def value(self, layer, name):
    """The method's per-weight value of `layer`/`name` if given, else the weight."""
    if (layer, name) in self._values:
      return self._values[(layer, name)]
    return self.weight(layer, name)

  def gradient(self, layer, name):
    return np.asarray(self._gradients[(layer, name)], np.float64)

  def kernel_slices(self, key, array=None):
    """[(layer, weight name, axis, slice)] of the unit's kernel weights, the slices
    taken from `array(layer, name)` (default `value`)."""
    array = array or self.value
    return [(layer, name, axis, np.take(array(layer, name), idx, axis=axis))
            for layer, name, axis, idx in self.slices[key] if members.is_kernel(name)]


def unit_scores(model, graph, criterion="l2", gradients=None, slices=None, values=None):
  """Importance of every prunable unit: {(group, unit): score}.

  Args:
    model, graph: the model and its ChannelGraph.
    criterion: a registered criterion name (`CRITERIA`).
    gradients: for criteria that need them ("taylor"), {(layer name, weight name):
      dL/dW array}.
    slices: `members.unit_slices(model, graph)` if already computed.
    values: optional {(layer name, weight name): per-weight importance} used instead of
      the weights by criteria with `uses_values` (a method's own scores, e.g.
      movement's); weights without an entry use their values.
  """
  entry = get_criterion(criterion)
  if entry.needs_gradients and not gradients:
    raise ValueError(f"criterion={criterion!r} needs gradients={{(layer, weight): "
                     f"dL/dW}}.")
  slices = slices if slices is not None else members.unit_slices(model, graph)
  units = Units(model, graph, slices, values if entry.uses_values else None, gradients)
  return entry.score(units)


# ---------------------------------------------------------------- criteria
@register_criterion("l2", uses_values=True)
def _l2(units):
  return {key: float(np.sqrt(sum(float(np.square(w).sum())
                                 for *_, w in units.kernel_slices(key))))
          for key in units.slices}


@register_criterion("l1", uses_values=True)
def _l1(units):
  return {key: sum(float(np.abs(w).sum()) for *_, w in units.kernel_slices(key))
          for key in units.slices}


def _no_batchnorm(owned):
  if not any(name == "gamma" for _, name, _, _ in owned):
    return "no BatchNormalization scale (criterion='bn_scale')"
  return None


@register_criterion("bn_scale", group_needs=_no_batchnorm)
def _bn_scale(units):
  scores = {}
  for key, owned in units.slices.items():
    if _no_batchnorm(owned):
      raise ValueError(f"criterion='bn_scale' needs a BatchNormalization in every pruned "
                       f"group; group {key[0]} ({', '.join(units.graph.groups[key[0]].layers)})"
                       f" has none: ignore its layers or use l2.")
    scores[key] = sum(float(np.abs(np.take(units.weight(layer, name), idx, axis=axis)).sum())
                      for layer, name, axis, idx in owned if name == "gamma")
  return scores


@register_criterion("taylor", needs_gradients=True)
def _taylor(units):
  scores = {}
  for key in units.slices:
    weights = units.kernel_slices(key, units.weight)
    grads = units.kernel_slices(key, units.gradient)
    scores[key] = abs(sum(float((w * g).sum()) for (*_, w), (*_, g) in zip(weights, grads)))
  return scores


@register_criterion("fpgm")
def _fpgm(units):
  # Per group and kernel slice (layer, weight, axis): every unit's flattened slice; a
  # unit's score adds its summed distance to the other units of the group there.
  rows = {}
  for key in units.slices:
    for layer, name, axis, w in units.kernel_slices(key, units.weight):
      rows.setdefault((key[0], layer, name, axis, w.shape), []).append(
          (key, np.moveaxis(w, axis, 0).reshape(-1)))
  scores = {key: 0.0 for key in units.slices}
  for entries in rows.values():
    matrix = np.stack([v for _, v in entries])  # [units, slice size]
    sq = np.square(matrix).sum(1)
    dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * matrix @ matrix.T, 0.0))
    for (key, _), total in zip(entries, dist.sum(1)):
      scores[key] += float(total)
  return scores
