"""Sparsity-informed adaptive pruning (SAP), driven by the PQ Index.

Diao et al., "Pruning Deep Neural Networks from a Sparsity Perspective", ICLR 2023
(docs/algorithms.md section 5; reference code diaoenmao/Pruning-Deep-Neural-Networks-from-a-
Sparsity-Perspective). Round t of the loop, with `d_t` the remaining weights of a unit
(a neuron, a layer or the whole model: `scope`):

  1. train E epochs (masked) -> `w_t`;
  2. `I_t = I_pq(w_t)` over the unit's remaining weights (`tfprune.pqi`);
  3. `r_t = d_t * (1 + eta_r) ** (-q/(q-p)) * (1 - I_t) ** (q*p/(q-p))`, the bound on the
     weights the unit needs;
  4. prune the `c_t = floor(d_t * min(gamma * (1 - r_t/d_t), beta))` smallest-magnitude
     remaining weights of the unit; optionally rewind the survivors to their initial
     values.

`rounds` = T pruning rounds, so T + 1 training phases (round 0 trains before any
pruning, the last one fine-tunes the final mask), as in the reference code. The loop also
stops at a target sparsity (the last round's count is clipped to hit it exactly), at an
accuracy floor (the previous round's model is restored), or - `stop_on_pqi` - when the
global PQI turns down again after rising, the paper's collapse signal (the round before,
the PQI peak, is restored and reported as `chosen_round`).

Channel groups (`scope="structured"`, this library's form of the paper's neuron scope
at channel level): the "vector" of a round is a channel group of the model's
`tfprune.structured.ChannelGraph` (coupled channels: both sides of a residual `Add`, a
conv and its BatchNorm, depthwise followers), and its entries are the group's remaining
channels, each valued by its group L2 norm (every kernel slice it owns: producer columns,
reader rows, depthwise slices). Per group: `d_t` = remaining channels, `I_t` = PQ Index of
their norms, `r_t` and `c_t` as above, and the `c_t` channels of smallest norm are removed
from every layer of the group (channel-graph masks), so `tfprune.strip(model,
shrink=True)` deletes them. All channels of one group own slices of the same shapes, so
their norms compare fairly within the group; across groups (fan-ins differ) they would
not, which is why there is no global PQ Index over channels. What does not carry over:
pruning *within* a neuron (the paper's neuron scope prunes the smallest weights inside
each unit) removes no channel, so it has no structured form; `target_sparsity` and the
`sparsity` the loop reports count channels, not weights.

Gaps filled here: the reference rounds `r_t` up and prunes `|w| < pivot` (ties can prune
more); this implementation follows docs/algorithms.md (no rounding of `r_t`) and prunes exactly
`c_t` weights, ties keeping the lower index. The PQI stopping rule and the accuracy floor
are this library's; the paper only describes the PQI curve.
"""
import math
import os

import keras
import numpy as np
import tensorflow as tf

from tfprune import callbacks as callbacks_lib
from tfprune import masks as masks_lib
from tfprune import pqi
from tfprune.methods.base import PruningMethod
from tfprune.methods.base import register_method
from tfprune.structured import importance
from tfprune.structured import selection

SCOPES = ("neuron", "layer", "global", "structured")


def prune_count(d, index, p=0.5, q=1.0, eta_r=0.0, gamma=1.0, beta=0.9):
  """SAP's pruning count `c = floor(d * min(gamma * (1 - r / d), beta))`, never negative.

  Args:
    d: remaining weights per unit (scalar or array).
    index: their PQ Index (same shape).
    p, q, eta_r: as in `tfprune.pqi.retained_bound`.
    gamma: the aggressiveness `gamma > 0` (scales the pruning ratio).
    beta: the cap in (0, 1) on the fraction pruned in one round.

  Returns:
    int64 NumPy array of `d`'s shape (0 where d = 0).
  """
  d64 = tf.cast(d, tf.float64)
  r = pqi.retained_bound(d64, index, p, q, eta_r)
  safe_d = tf.where(d64 > 0, d64, tf.ones_like(d64))
  ratio = tf.where(d64 > 0, 1.0 - r / safe_d, tf.zeros_like(d64))
  fraction = tf.clip_by_value(float(gamma) * ratio, 0.0, float(beta))
  return tf.cast(tf.floor(d64 * fraction + 1e-9), tf.int64).numpy()


def pqi_stop_round(values, tolerance=0.0):
  """The collapse signal: the first round where the PQI falls after having risen.

  Args:
    values: the global PQI after each round (round 0 first).
    tolerance: a change smaller than this is neither a rise nor a fall.

  Returns:
    The round index `t` (the fall from `t-1` to `t`), or None; the model to keep is the
    one of round `t - 1`, the PQI peak.
  """
  rose = False
  for t in range(1, len(values)):
    if values[t] > values[t - 1] + tolerance:
      rose = True
    elif rose and values[t] < values[t - 1] - tolerance:
      return t
  return None


def accuracy_drop_round(accuracies, points=1.0):
  """First round whose accuracy is more than `points` (percent) below the best so far.

  Args:
    accuracies: accuracy (fraction in [0, 1]) after each round.
    points: the drop, in percentage points.

  Returns:
    The round index, or None.
  """
  best = -math.inf
  for t, acc in enumerate(accuracies):
    if acc is None:
      continue
    if acc < best - points / 100.0:
      return t
    best = max(best, acc)
  return None


def split_counts(total, capacity, weights=None):
  """Splits `total` into integer parts proportional to `weights` (default `capacity`).

  Parts never exceed `capacity`; the rounding remainder goes to the largest fractional
  parts (ties: lower index). Used to clip a round to a target sparsity and by the
  fixed-count baselines.

  Args:
    total: a non-negative int, at most `sum(capacity)`.
    capacity: non-negative ints, one per unit.
    weights: non-negative proportions (default `capacity`).

  Returns:
    int64 NumPy array of `capacity`'s shape summing to `total`.
  """
  capacity = np.asarray(capacity, np.int64)
  weights = capacity.astype(np.float64) if weights is None else np.asarray(weights,
                                                                            np.float64)
  total = int(total)
  if total < 0 or total > int(capacity.sum()):
    raise ValueError(f"Cannot split {total} over a capacity of {int(capacity.sum())}.")
  if total == 0 or weights.sum() <= 0:
    parts = np.zeros_like(capacity)
  else:
    exact = total * weights / weights.sum()
    parts = np.minimum(np.floor(exact).astype(np.int64), capacity)
  while parts.sum() < total:
    room = capacity - parts
    exact = total * weights / max(weights.sum(), 1e-300)
    score = np.where(room > 0, exact - parts, -np.inf)
    order = np.argsort(-score, kind="stable")
    need = total - int(parts.sum())
    for i in order[:need]:
      if room[i] > 0:
        parts[i] += 1
  return parts


def _keep_top_per_column(scores, keep):
  """0/1 [n, u] mask keeping the `keep[j]` largest scores of column j (stable ties)."""
  order = tf.argsort(scores, axis=0, direction="DESCENDING", stable=True)
  ranks = tf.argsort(order, axis=0, stable=True)
  return tf.cast(ranks < tf.constant(keep, tf.int32)[None, :], scores.dtype)


@register_method("sap")
class SAP(PruningMethod):
  """Sparsity-informed adaptive pruning; prunes in `fit`, round by round.

  Args:
    rounds: T, the number of pruning rounds (T + 1 training phases), >= 1.
    epochs_per_round: E, epochs per training phase; None: `epochs // (rounds + 1)` of
      the budget given to `fit` (at least 1).
    p, q: the PQ Index's norms, 0 < p < q (defaults 0.5, 1).
    gamma: aggressiveness, > 0 (default 1).
    beta: cap on the fraction of a unit's remaining weights pruned per round, in (0, 1)
      (default 0.9).
    eta_r: tolerance of the bound, >= 0 (default 0).
    scope: `neuron` (each output unit of each kernel), `layer` (each kernel), `global`
      (all prunable weights as one vector) or `structured` (each channel group of the
      channel graph, its channels as entries: see the module docstring): where PQI,
      `r_t` and `c_t` are computed.
    rewind: reset the surviving weights (and all other model weights) to their values
      at the start of `fit` after each pruning round (lottery-ticket style).
    target_sparsity: stop once this overall sparsity is reached (None: no target);
      with `scope="structured"`, the fraction of the prunable channels removed.
    min_accuracy: accuracy floor in [0, 1] (validation accuracy when `fit` gets
      validation data): the first round below it ends the loop and the previous round's
      model is restored. None: no floor.
    stop_on_pqi: stop when the global PQI falls after having risen (the collapse
      signal); the PQI-peak round's model is restored.
    pqi_tolerance: PQI changes smaller than this are ignored by `stop_on_pqi`.
    round_to, min_units, ignored_layers: `scope="structured"` only, as in
      `PruningMethod` (kept channel counts a multiple of `round_to`, at least
      `min_units` per group, groups touching `ignored_layers` left whole).
    max_pruning_ratio: the layer floor of `scope="global"` (as in `PruningMethod`;
      the `neuron` and `layer` scopes never empty a unit: `beta < 1`).

  A phased method: `fit` runs the rounds; a plain `model.fit` is refused.

  After `fit`, `round_log` holds one dict per round (`tfprune.report.format_rounds`,
  `tfprune.plots.sap_rounds`),
  and `stop_reason`, `stop_round`, `chosen_round` say how the loop ended.
  """

  scopes = SCOPES
  phased = True
  multi_fit = True   # one model.fit per pruning round
  structured_graph = True  # scope="structured": the channel graph's groups

  def __init__(self, rounds=10, epochs_per_round=None, p=0.5, q=1.0, gamma=1.0, beta=0.9,
               eta_r=0.0, scope="layer", rewind=False, target_sparsity=None,
               min_accuracy=None, stop_on_pqi=False, pqi_tolerance=0.0, round_to=1,
               min_units=1, ignored_layers=None, max_pruning_ratio=None):
    if scope not in SCOPES:
      raise ValueError(f"Unknown SAP scope {scope!r}; valid scopes are "
                       f"{', '.join(SCOPES)}.")
    if target_sparsity is not None and not 0.0 < float(target_sparsity) < 1.0:
      raise ValueError(f"target_sparsity must be in (0, 1) or None, got "
                       f"{target_sparsity!r}.")
    super().__init__(target_sparsity=target_sparsity, scope=scope, round_to=round_to,
                     min_units=min_units, ignored_layers=ignored_layers,
                     max_pruning_ratio=max_pruning_ratio)
    if isinstance(rounds, bool) or int(rounds) != rounds or int(rounds) < 1:
      raise ValueError(f"rounds must be an integer >= 1 (pruning rounds), got {rounds!r}.")
    if epochs_per_round is not None and (int(epochs_per_round) != epochs_per_round or
                                         int(epochs_per_round) < 1):
      raise ValueError(f"epochs_per_round must be an integer >= 1 or None (split the fit "
                       f"budget), got {epochs_per_round!r}.")
    pqi.check_pq(p, q)
    if not float(gamma) > 0:
      raise ValueError(f"gamma must be > 0 (default 1.0), got {gamma!r}.")
    if not 0.0 < float(beta) < 1.0:
      raise ValueError(f"beta must be in (0, 1) (default 0.9), got {beta!r}.")
    if not float(eta_r) >= 0.0:
      raise ValueError(f"eta_r must be >= 0 (default 0.0), got {eta_r!r}.")
    if min_accuracy is not None:
      if not 0.0 <= float(min_accuracy) <= 1.0:
        raise ValueError(f"min_accuracy must be a fraction in [0, 1] or None, got "
                         f"{min_accuracy!r}.")
      min_accuracy = float(min_accuracy)
    if not float(pqi_tolerance) >= 0.0:
      raise ValueError(f"pqi_tolerance must be >= 0, got {pqi_tolerance!r}.")
    self.rounds = int(rounds)
    self.epochs_per_round = None if epochs_per_round is None else int(epochs_per_round)
    self.p, self.q = float(p), float(q)
    self.gamma, self.beta, self.eta_r = float(gamma), float(beta), float(eta_r)
    self.rewind = bool(rewind)
    self.min_accuracy = min_accuracy
    self.stop_on_pqi = bool(stop_on_pqi)
    self.pqi_tolerance = float(pqi_tolerance)
    self.round_log = []
    self.stop_reason = None
    self.stop_round = None
    self.chosen_round = None

  # ------------------------------------------------------------- the maths
  def update(self, step):
    """SAP changes masks only between rounds (`prune_round`): nothing per step."""
    del step

  def check_plain_fit(self):
    """SAP prunes between training rounds: a plain `model.fit` would prune nothing."""
    raise ValueError("SAP prunes between training rounds, so a plain model.fit with "
                     "PruningCallback would prune nothing: call tfprune.get_method(model)"
                     ".fit(model, x, y, epochs=...), which trains and prunes round by "
                     "round (method.prune_round() prunes one round by hand).")

  def _groups(self):
    """Units to prune as column groups: list of (|w*m| [n, u], mask [n, u]) tensors."""
    effective = [tf.abs(w * m) for w, m in zip(self.weights, self.masks)]
    masks = [tf.cast(tf.not_equal(m, 0), e.dtype) for m, e in zip(self.masks, effective)]
    if self.scope == "global":
      return [(tf.concat([tf.reshape(e, [-1]) for e in effective], 0)[:, None],
               tf.concat([tf.reshape(m, [-1]) for m in masks], 0)[:, None])]
    if self.scope == "layer":
      return [(tf.reshape(e, [-1, 1]), tf.reshape(m, [-1, 1]))
              for e, m in zip(effective, masks)]
    groups = []
    for e, m in zip(effective, masks):
      units = e.shape[-1] if e.shape.rank >= 2 else 1
      groups.append((tf.reshape(e, [-1, units]), tf.reshape(m, [-1, units])))
    return groups

  def _ungroup(self, group_masks):
    """Inverse of `_groups` for masks: one mask per prunable weight."""
    shapes = [tuple(m.shape) for m in self.masks]
    if self.scope == "global":
      sizes = [int(np.prod(s)) for s in shapes]
      parts = tf.split(tf.reshape(group_masks[0], [-1]), sizes)
      return [tf.reshape(part, s) for part, s in zip(parts, shapes)]
    return [tf.reshape(g, s) for g, s in zip(group_masks, shapes)]

  def plan_counts(self, groups):
    """The SAP rule: per group, (remaining d, PQ Index I, bound r, count c) arrays.

    Subclasses (fixed-count baselines) may override it to return other counts.
    """
    plan = []
    for a, m in groups:
      d = tf.reduce_sum(tf.cast(m, tf.float64), axis=0)
      index = pqi.pq_columns(tf.cast(a, tf.float64), d, self.p, self.q)
      r = pqi.retained_bound(d, index, self.p, self.q, self.eta_r).numpy()
      c = prune_count(d, index, self.p, self.q, self.eta_r, self.gamma, self.beta)
      plan.append({"d": d.numpy().astype(np.int64), "pq_index": index.numpy(), "bound": r,
                   "count": c})
    return plan

  def prune_round(self, max_total=None):
    """Prunes one round (the `c_t` smallest remaining weights of every unit).

    Args:
      max_total: optional cap on the total pruned (to land exactly on a target
        sparsity); the counts are scaled down proportionally.

    Returns:
      A dict: `pruned` (total count), `bound` (sum of the `r_t`), `counts` (per unit,
      concatenated over groups).
    """
    self._require_bound()
    if self.uses_channel_graph:
      return self._prune_round_channels(max_total)
    groups = self._groups()
    plan = self.plan_counts(groups)
    counts = np.concatenate([g["count"] for g in plan])
    if max_total is not None and counts.sum() > max_total:
      capacity = np.concatenate([g["d"] for g in plan])
      counts = split_counts(max(int(max_total), 0), np.minimum(counts, capacity), counts)
    new, start = [], 0
    for (a, m), g in zip(groups, plan):
      n_units = len(g["count"])
      keep = (g["d"] - counts[start:start + n_units]).astype(np.int32)
      start += n_units
      scores = tf.where(m > 0, a, -tf.ones_like(a))
      new.append(_keep_top_per_column(scores, keep) * m)
    if self.scope == "global":  # one top-k over all layers: with the layer floor
      alive = [tf.cast(tf.not_equal(m, 0), m.dtype) for m in self.masks]
      self.assign_masks([k * a for k, a in zip(self._global_masks(int(keep.sum())), alive)])
    else:
      self.assign_masks(self._ungroup(new))
    return {"pruned": int(counts.sum()),
            "bound": float(sum(float(np.sum(g["bound"])) for g in plan)),
            "counts": counts}

  # ------------------------------------------------------- channel groups
  def _channel_groups(self):
    """{group: sorted unit indices} of the prunable, not ignored channel groups."""
    slices = self.channels.slices
    ignored = self.channels.ignored_names()
    out = {}
    for g, u in sorted(slices):
      if not ignored & set(self.channels.graph.groups[g].layers):
        out.setdefault(g, []).append(u)
    return out

  def _removed_channels(self):
    """(group, unit) pairs whose every pruned kernel slice is masked out (read from the
    masks, so it survives save / load and a restored round)."""
    masks = {key: self.masks[i].numpy() for key, i in self.channels.weight_keys.items()}
    removed = set()
    for (g, u), owned in self.channels.slices.items():
      parts = [np.take(masks[(layer, name)], idx, axis=axis)
               for layer, name, axis, idx in owned if (layer, name) in masks]
      if parts and not any(np.any(p) for p in parts):
        removed.add((g, u))
    return removed

  def _prune_round_channels(self, max_total=None):
    """One SAP round over channel groups (module docstring): per group, the PQ Index of
    its remaining channels' group L2 norms gives `c_t` channels to remove."""
    keyed = {key: np.abs(self.weights[i].numpy() * self.masks[i].numpy())
             for key, i in self.channels.weight_keys.items()}
    graph = self.channels.graph
    scores = importance.unit_scores(graph.model, graph, "l2",
                                    slices=self.channels.slices, values=keyed)
    removed = self._removed_channels()
    groups = self._channel_groups()
    alive = {g: [u for u in units if (g, u) not in removed] for g, units in groups.items()}
    order = sorted(alive)
    counts, bounds, capacity = [], [], []
    for g in order:
      norms = np.array([scores[(g, u)] for u in alive[g]], np.float64)
      d = tf.constant([float(len(norms))], tf.float64)
      index = pqi.pq_columns(tf.constant(norms[:, None]), d, self.p, self.q)
      bounds.append(float(pqi.retained_bound(d, index, self.p, self.q, self.eta_r)[0]))
      c = int(prune_count(d, index, self.p, self.q, self.eta_r, self.gamma,
                          self.beta)[0])
      size = len(norms)
      keep = selection.round_keep(size - c, size, self.channels.round_to,
                                  self.channels.min_units)
      room = selection.round_keep(0, size, self.channels.round_to, self.channels.min_units)
      counts.append(max(0, size - keep))
      capacity.append(max(0, size - room))
    counts = np.asarray(counts, np.int64)
    if max_total is not None and counts.sum() > max_total:
      counts = split_counts(max(int(max_total), 0), np.minimum(counts, capacity), counts)
    for g, c in zip(order, counts):
      ranked = sorted(alive[g], key=lambda u, g=g: (scores[(g, u)], u))
      removed.update((g, u) for u in ranked[:int(c)])
    self.assign_masks(self.channels.masks_removing(removed, [w.shape for w in self.weights]))
    return {"pruned": int(counts.sum()), "bound": float(sum(bounds)), "counts": counts}

  def compute_masks(self, sparsity):
    """Magnitude masks at `sparsity` in SAP's scope (each neuron / layer / globally;
    channel groups: the structured scope's group-L2 masks)."""
    if self.uses_channel_graph:
      return super().compute_masks(sparsity)
    new = []
    for a, m in self._groups():
      n = int(a.shape[0])
      keep = int(masks_lib.keep_count(n, float(sparsity)))
      if self.scope == "global":
        return self._global_masks(keep)
      new.append(_keep_top_per_column(a, np.full([a.shape[1]], keep, np.int32)))
    return self._ungroup(new)

  def _global_masks(self, keep):
    """Global scope: the top `keep` of `|W * mask|` over all layers, with the layer
    floor (`tfprune.masks.global_masks`, `max_pruning_ratio`)."""
    effective = [tf.abs(w * m) for w, m in zip(self.weights, self.masks)]
    return [tf.cast(k, m.dtype) for k, m in
            zip(masks_lib.global_masks(effective, keep, self.max_pruning_ratio),
                self.masks)]

  def remaining(self):
    """Number of unpruned prunable weights (channels with `scope="structured"`)."""
    if self.uses_channel_graph:
      removed = self._removed_channels()
      return sum(1 for g, units in self._channel_groups().items() for u in units
                 if (g, u) not in removed)
    return int(sum(float(tf.reduce_sum(tf.cast(tf.not_equal(m, 0), tf.float32)))
                   for m in self.masks))

  def total(self):
    """Number of prunable weights (channels with `scope="structured"`)."""
    if self.uses_channel_graph:
      return sum(len(units) for units in self._channel_groups().values())
    return int(sum(int(np.prod(m.shape)) for m in self.masks))

  def diagnostics(self):
    """Overall sparsity and global PQ Index (logged each epoch by `PruningCallback`)."""
    values = tf.concat([tf.reshape(w * m, [-1]) for w, m in zip(self.weights, self.masks)],
                       0)
    masks = tf.concat([tf.reshape(m, [-1]) for m in self.masks], 0)
    return {"sparsity": 1.0 - self.remaining() / max(self.total(), 1),
            "pq_index": float(pqi.pq_index(values, self.p, self.q, mask=masks))}

  def report(self):
    """Per-round log and how the loop ended (for the training binary's report.json)."""
    return {"rounds": self.round_log, "stop_reason": self.stop_reason,
            "stop_round": self.stop_round, "chosen_round": self.chosen_round}

  def write_artifacts(self, output_dir):
    """`rounds.png`: PQ Index and accuracy per round, the stop round marked."""
    if not self.round_log:
      return []
    from tfprune import plots  # pylint: disable=g-import-not-at-top (matplotlib: only here)
    return [plots.sap_rounds(self.round_log, os.path.join(output_dir, "rounds.png"),
                        stop_round=self.stop_round)]

  def measure(self):
    """Sparsity and PQ Index (global + per weight) of the bound model now."""
    layers, sparsities = {}, {}
    for wrapper in self.wrappers:
      for w, m in zip(wrapper.prunable_weights, wrapper.masks):
        key = f"{wrapper.layer.name}/{w.path.split('/')[-1]}"
        layers[key] = float(pqi.pq_index(w * m, self.p, self.q, mask=m))
        sparsities[key] = 1.0 - float(tf.reduce_mean(tf.cast(tf.not_equal(m, 0),
                                                             tf.float32)))
    out = self.diagnostics()
    out.update({"remaining": self.remaining(), "pq_index_layers": layers,
                "sparsity_layers": sparsities})
    return out

  # ------------------------------------------------------------ training
  def _state_variables(self, model):
    """All model variables except the pruning state (masks, step, slots)."""
    skip = {id(v) for wr in self.wrappers for v in
            [*wr.masks, wr.pruning_step, *[s for vs in wr.slots.values() for s in vs]]}
    return [v for v in model.weights if id(v) not in skip]

  @staticmethod
  def _accuracy(history):
    """(accuracy after the last epoch, its source) from a `History.history` dict."""
    for validation, source in ((True, "validation"), (False, "train")):
      for key, values in history.items():
        if key.startswith("val_") == validation and "acc" in key and values:
          return float(values[-1]), source
    return None, None

  def fit(self, model, x, y=None, epochs=1, batch_size=128, optimizer=None, loss=None,
          metrics=("accuracy",), callbacks=(), validation_data=None, verbose=1):
    """Runs the SAP rounds: train, measure PQI, prune `c_t`; see the class docstring.

    Args:
      model: the pruned model this method is bound to.
      x, y, batch_size, validation_data, verbose, callbacks: as in `keras.Model.fit`
        (validation data gives the per-round accuracy; else the training accuracy).
      epochs: the budget, used only when `epochs_per_round` is None: each of the
        `rounds + 1` phases trains `max(1, epochs // (rounds + 1))` epochs.
      optimizer: None (Adam(1e-3)), a name or an optimizer instance. Its state (step,
        moments) is reset at the start of every round, as the reference code's fresh
        optimizer per round.
      loss: default sparse categorical cross-entropy on logits.
      metrics: compile metrics (keep an accuracy metric for the per-round accuracy).

    Returns:
      A dict of per-epoch metric lists over all rounds (the merged `History.history`).
      Per-round records are in `self.round_log`.
    """
    if model is not self.model:
      self.bind(model)
    per_round = self.epochs_per_round or max(1, int(epochs) // (self.rounds + 1))
    state_vars = self._state_variables(model)
    initial = [v.numpy() for v in state_vars] if self.rewind else None
    total = self.total()
    keep_target = None
    if self.target_sparsity is not None:
      keep_target = int(masks_lib.keep_count(total, self.target_sparsity))
    self.round_log, history = [], {}
    self.stop_reason = self.stop_round = self.chosen_round = None
    previous, last = None, self.rounds
    self._verbose = verbose
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3) if optimizer is None else optimizer,
        loss=loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=list(metrics))
    # One compile for all rounds (no retracing); "a fresh optimizer per round" is done by
    # restoring the optimizer's variables (step, moments) to their values before round 0.
    if not model.optimizer.built:
      model.optimizer.build(model.trainable_variables)
    fresh_optimizer = [v.numpy() for v in model.optimizer.variables]
    for t in range(self.rounds + 1):
      if t > 0:
        for v, value in zip(model.optimizer.variables, fresh_optimizer):
          v.assign(value)
      if t > 0 and self.rewind:
        for v, value in zip(state_vars, initial):
          v.assign(value)
        self.on_train_end()  # re-applies the masks to the rewound weights
      result = model.fit(x, y, batch_size=batch_size, epochs=(t + 1) * per_round,
                         initial_epoch=t * per_round, validation_data=validation_data,
                         verbose=verbose, callbacks=[callbacks_lib.PruningCallback(self), *callbacks])
      for key, values in result.history.items():
        history.setdefault(key, []).extend(values)
      accuracy, source = self._accuracy(result.history)
      record = {"round": t, "epochs": (t + 1) * per_round, "accuracy": accuracy,
                "accuracy_source": source, **self.measure(), "pruned": 0, "bound": None,
                "accuracy_pruned": None}
      self.round_log.append(record)
      if verbose:
        print(self._round_line(record), flush=True)
      if (self.min_accuracy is not None and accuracy is not None and
          accuracy < self.min_accuracy):
        self._finish("min_accuracy", t, t - 1 if previous else t, previous, model)
        break
      if self.stop_on_pqi:
        fall = pqi_stop_round([r["pq_index"] for r in self.round_log], self.pqi_tolerance)
        if fall is not None:
          self._finish("pq_index", t, fall - 1, previous, model)
          break
      if t >= last:
        self._finish("target_sparsity" if last < self.rounds else "rounds", t, t, None,
                     model)
        break
      previous = [v.numpy() for v in model.weights]
      max_total = None if keep_target is None else record["remaining"] - keep_target
      pruned = self.prune_round(max_total)
      record["pruned"], record["bound"] = pruned["pruned"], pruned["bound"]
      record["accuracy_pruned"] = self._evaluate(model, validation_data, batch_size)
      if keep_target is not None and self.remaining() <= keep_target:
        last = t + 1
    return history

  def _finish(self, reason, stop_round, chosen_round, previous, model):
    self.stop_reason, self.stop_round, self.chosen_round = reason, stop_round, chosen_round
    if previous is not None and chosen_round != stop_round:
      for v, value in zip(model.weights, previous):
        v.assign(value)
    if not getattr(self, "_verbose", 1):
      return
    print(f"SAP stopped at round {stop_round} ({reason}); keeping the model of round "
          f"{chosen_round}: sparsity {self.round_log[chosen_round]['sparsity']:.4f}, "
          f"PQI {self.round_log[chosen_round]['pq_index']:.4f}.", flush=True)

  @staticmethod
  def _evaluate(model, validation_data, batch_size):
    """Accuracy of the just-pruned model (before retraining) on the validation data."""
    if validation_data is None:
      return None
    if isinstance(validation_data, (tuple, list)):
      result = model.evaluate(validation_data[0], validation_data[1], batch_size=batch_size,
                              verbose=0, return_dict=True)
    else:
      result = model.evaluate(validation_data, verbose=0, return_dict=True)
    accs = [v for k, v in result.items() if "acc" in k]
    return float(accs[0]) if accs else None

  @staticmethod
  def _round_line(r):
    acc = "n/a" if r["accuracy"] is None else f"{100 * r['accuracy']:.2f}%"
    layers = " ".join(f"{k.split('/')[0]}={v:.3f}" for k, v in r["pq_index_layers"].items())
    return (f"SAP round {r['round']}: sparsity {r['sparsity']:.4f} "
            f"({r['remaining']} left), accuracy {acc}, PQI {r['pq_index']:.4f} [{layers}]")

  # ---------------------------------------------------------- serialization
  def get_config(self):
    return {"rounds": self.rounds, "epochs_per_round": self.epochs_per_round,
            "p": self.p, "q": self.q, "gamma": self.gamma, "beta": self.beta,
            "eta_r": self.eta_r, "scope": self.scope, "rewind": self.rewind,
            "target_sparsity": self.target_sparsity, "min_accuracy": self.min_accuracy,
            "stop_on_pqi": self.stop_on_pqi, "pqi_tolerance": self.pqi_tolerance,
            **({} if self.max_pruning_ratio is None else
               {"max_pruning_ratio": self.max_pruning_ratio}),
            **self.channels.changed()}
