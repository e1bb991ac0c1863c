"""Movement pruning: `method="movement"`, a gradient-based criterion for fine-tuning.

Sanh, Wolf, Rush, "Movement Pruning: Adaptive Sparsity by Fine-Tuning", NeurIPS 2020
(arXiv 2005.07683). Magnitude pruning keeps the weights that are large; movement pruning
keeps the weights that are MOVING AWAY from zero while the model is fine-tuned. Each
prunable weight carries a score that accumulates, every training step t,

    S <- S - (dL/dW)_t * W_t          (the paper's S^(T) = -sum_t (dL/dW)^(t) W^(t),
                                       "hard" movement pruning, learning-rate factor
                                       dropped: it does not change the ranking)

so `S > 0` when gradient descent pushes `W` away from 0 and `S < 0` when it pulls it
towards 0. On the schedule's pruning steps the masks keep the top-k scores in the
method's scope (`layer`, `global`, `block`, `n:m`, `structured`, as every method), at
the sparsity of the cubic schedule `s_t = s_f (1 - (1 - t / T)^3)` the paper uses
(`tfprune.schedules.PolynomialDecay` with power 3; Zhu & Gupta 2017).

Where this fills gaps: the scores live in a wrapper slot (`movement_scores`: saved with
the model, in checkpoints); a pruned weight is zero and gets a zero gradient through the
mask, so its score is frozen (it may re-enter only if others fall below it); the mask
maths takes non-negative scores, so `S - min(S)` (one shift over all weights, which keeps
the ranking) is what it ranks. Without a schedule, `fit` spans `schedule_fraction` of
its steps with the cubic schedule (the rest fine-tunes at the final masks); outside
`fit`, pass `schedule=` or `pruning_steps=`.

The gradient reaches the method through the contract's gradient hook: train with
`method.prepare_optimizer(optimizer)` (a `tfprune.optimizer_wrapper.GradientHook`), in
`model.fit` with `PruningCallback` or in a custom loop, or call
`method.observe_gradients(grads, variables)` after `tape.gradient` yourself.
Single device only (the scores are updated inside the replica step).

    pruned = tfprune.prune(model, "movement", target_sparsity=0.9)
    tfprune.get_method(pruned).fit(pruned, x, y, epochs=3)
"""
import math

import tensorflow as tf

from tfprune import schedules
from tfprune.methods.base import PruningMethod
from tfprune.methods.base import register_method

SLOT = "movement_scores"


def _steps_per_epoch(x, batch_size):
  """Batches per epoch of `x` (arrays, a dict / tuple of arrays or a finite dataset)."""
  if isinstance(x, tf.data.Dataset):
    n = int(x.cardinality())
    if n < 0:
      raise ValueError("movement fit needs a dataset of known finite cardinality to lay "
                       "out its schedule; pass schedule= or pruning_steps= instead.")
    return n
  if isinstance(x, dict):
    x = next(iter(x.values()))
  if isinstance(x, (list, tuple)):
    x = x[0]
  return int(math.ceil(int(x.shape[0]) / int(batch_size)))


@register_method("movement")
class Movement(PruningMethod):
  """Movement pruning (Sanh et al. 2020): masks = top-k of accumulated `-W * dL/dW`.

  Args:
    target_sparsity, scope, block_size, n, m, allocation, layer_sparsity: as in
      `PruningMethod`.
    **structured: `max_pruning_ratio` and `global_score` (the layer floor and LAMP of
      `scope="global"`, as in `PruningMethod`); `round_to`, `min_units`,
      `ignored_layers`, `target_macs`,
      `target_latency`, `latency_precision`, `latency_table`, `criterion`
      (l2 / l1 of the movement scores per channel group) for `scope="structured"`.
    schedule: a `tfprune.schedules.PruningSchedule`; default the cubic
      `PolynomialDecay(0, target_sparsity, 0, pruning_steps)` (set by `fit` from its
      budget when `pruning_steps` is None too).
    pruning_steps: the step at which the default schedule reaches the target.
    frequency: steps between mask updates of the default schedule.
    schedule_fraction: `fit` without a schedule: fraction of its steps over which the
      sparsity rises (the rest fine-tunes the final masks), in (0, 1].
  """

  uses_gradients = True

  def __init__(self, target_sparsity=0.9, scope="layer", schedule=None, block_size=4, n=2,
               m=4, allocation=None, layer_sparsity=None, pruning_steps=None,
               frequency=100, schedule_fraction=2 / 3, **structured):
    if pruning_steps is not None and int(pruning_steps) < 1:
      raise ValueError(f"pruning_steps must be >= 1 (the step the target is reached), "
                       f"got {pruning_steps!r}.")
    if int(frequency) < 1:
      raise ValueError(f"frequency must be >= 1 steps, got {frequency!r}.")
    if not 0.0 < float(schedule_fraction) <= 1.0:
      raise ValueError(f"schedule_fraction must be in (0, 1], got {schedule_fraction!r}.")
    self.pruning_steps = None if pruning_steps is None else int(pruning_steps)
    self.frequency = int(frequency)
    self.schedule_fraction = float(schedule_fraction)
    super().__init__(target_sparsity=target_sparsity, scope=scope, schedule=schedule,
                     block_size=block_size, n=n, m=m, allocation=allocation,
                     layer_sparsity=layer_sparsity, **structured)

  def default_schedule(self):
    """The paper's cubic schedule to `pruning_steps`, or None (`fit` lays it out)."""
    if self.pruning_steps is None:
      return None
    return schedules.PolynomialDecay(0.0, self.target_sparsity, 0, self.pruning_steps,
                                     power=3, frequency=min(self.frequency,
                                                            self.pruning_steps))

  # ------------------------------------------------------------- state
  def slot_names(self):
    return (SLOT,)

  @property
  def movement_scores(self):
    """The accumulated scores S, aligned with `weights`."""
    return self.slots(SLOT)

  # ------------------------------------------------------------- the maths
  def observe_gradients(self, grads, variables):
    """`S -= dL/dW * W` for every prunable weight among `variables` (graph-safe)."""
    by_id = {id(v): g for g, v in zip(grads, variables)}
    for w, s in zip(self.weights, self.movement_scores):
      g = by_id.get(id(w))
      if g is None:
        continue
      g = tf.convert_to_tensor(g)  # (IndexedSlices of an embedding: densified)
      s.assign_add(-tf.cast(g, s.dtype) * tf.cast(w, s.dtype))
    self.record_gradient_step()

  def scores(self):
    """Kept weights: `1 + (S - min S) / (max S - min S)` in [1, 2], the ranking of S
    (one affine map over all weights, so `global` compares layers fairly); pruned
    weights: 0, so a pruned weight stays pruned (its weight is 0, its score frozen)."""
    scores = [tf.convert_to_tensor(s) for s in self.movement_scores]
    keep = [tf.not_equal(m, 0) for m in self.masks]
    big = tf.constant(float("inf"), scores[0].dtype)
    low = tf.reduce_min(tf.stack([tf.reduce_min(tf.where(k, s, big))
                                  for s, k in zip(scores, keep)]))
    high = tf.reduce_max(tf.stack([tf.reduce_max(tf.where(k, s, -big))
                                   for s, k in zip(scores, keep)]))
    span = tf.where(high > low, high - low, tf.ones_like(high))
    return [tf.where(k, 1.0 + (s - low) / span, tf.zeros_like(s))
            for s, k in zip(scores, keep)]

  # ------------------------------------------------------------- training
  def on_train_begin(self, optimizer=None):
    """Refuses a missing schedule and multi-replica strategies, then starts."""
    if self.schedule is None:
      raise ValueError("movement needs to know when to reach the target: pass "
                       "schedule=tfprune.PolynomialDecay(0.0, 0.9, 0, end_step) or "
                       "pruning_steps=N to tfprune.prune(..., 'movement', ...), or train "
                       "with tfprune.get_method(model).fit(model, x, y, epochs=...), "
                       "which spans its epochs.")
    strategy = getattr(self.model, "distribute_strategy", None)
    if strategy is not None and strategy.num_replicas_in_sync > 1:
      raise ValueError(f"movement updates its scores inside the replica step; it runs "
                       f"on one device only, not under {type(strategy).__name__} with "
                       f"{strategy.num_replicas_in_sync} replicas.")
    super().on_train_begin(optimizer=optimizer)

  def fit(self, model, x, y=None, epochs=1, batch_size=128, optimizer=None, loss=None,
          metrics=("accuracy",), callbacks=(), validation_data=None, verbose=1):
    """The default recipe; without a schedule, the cubic schedule spans
    `schedule_fraction` of the `epochs` budget (arguments as `PruningMethod.fit`)."""
    if self.schedule is None:
      total = _steps_per_epoch(x, batch_size) * int(epochs)
      end = max(1, int(round(self.schedule_fraction * total)))
      frequency = max(1, min(self.frequency, end // 10))
      self.schedule = schedules.PolynomialDecay(0.0, self.target_sparsity, 0, end,
                                                power=3, frequency=frequency)
    return super().fit(model, x, y, epochs=epochs, batch_size=batch_size,
                       optimizer=optimizer, loss=loss, metrics=metrics,
                       callbacks=callbacks, validation_data=validation_data,
                       verbose=verbose)

  def diagnostics(self):
    out = super().diagnostics()
    if self.wrappers:
      kept = [tf.boolean_mask(s, tf.not_equal(m, 0))
              for s, m in zip(self.movement_scores, self.masks)]
      values = tf.concat([tf.reshape(k, [-1]) for k in kept], 0)
      out["movement/mean_kept_score"] = float(tf.reduce_mean(values)) if int(
          tf.size(values)) else 0.0
    return out

  def get_config(self):
    config = super().get_config()
    if config.get("schedule") is None:
      config.pop("schedule", None)
    config.update({"pruning_steps": self.pruning_steps, "frequency": self.frequency,
                   "schedule_fraction": self.schedule_fraction})
    return config
