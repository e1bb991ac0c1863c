"""Sparsity schedules: at training step t, prune now? and to which sparsity?

Same formulas and step semantics as TFMOT's `ConstantSparsity` and `PolynomialDecay`
(Zhu & Gupta 2017, "To prune, or not to prune"):
`s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0)) ** power`, masks recomputed every
`frequency` steps from `begin_step` to `end_step` (inclusive; -1 = forever).
"""
import keras
import tensorflow as tf

from tfprune import masks


def _check_steps(begin_step, end_step, frequency):
  if int(begin_step) < 0:
    raise ValueError(f"begin_step must be >= 0, got {begin_step!r}.")
  if int(end_step) != -1 and int(end_step) < int(begin_step):
    raise ValueError(
        f"end_step must be -1 (never stop) or >= begin_step={begin_step}, got {end_step!r}.")
  if int(frequency) < 1:
    raise ValueError(f"frequency must be a positive number of steps, got {frequency!r}.")


class PruningSchedule:
  """Base class: `__call__(step) -> (should_prune: bool tensor, sparsity: float tensor)`."""

  def __init__(self, begin_step=0, end_step=-1, frequency=100):
    _check_steps(begin_step, end_step, frequency)
    self.begin_step = int(begin_step)
    self.end_step = int(end_step)
    self.frequency = int(frequency)

  @property
  def final_sparsity(self):
    raise NotImplementedError

  def should_prune(self, step):
    """True where `step` is a pruning step (TFMOT's `_should_prune_in_step`)."""
    step = tf.cast(step, tf.int64)
    in_range = step >= self.begin_step
    if self.end_step != -1:
      in_range = tf.logical_and(in_range, step <= self.end_step)
    turn = tf.equal(tf.math.floormod(step - self.begin_step, self.frequency), 0)
    return tf.logical_and(in_range, turn)

  def sparsity(self, step):
    raise NotImplementedError

  def __call__(self, step):
    return self.should_prune(step), self.sparsity(step)

  def get_config(self):
    return {"begin_step": self.begin_step, "end_step": self.end_step,
            "frequency": self.frequency}

  @classmethod
  def from_config(cls, config):
    return cls(**config)


@keras.saving.register_keras_serializable(package="tfprune")
class ConstantSparsity(PruningSchedule):
  """Prunes to a fixed `target_sparsity` every `frequency` steps."""

  def __init__(self, target_sparsity, begin_step=0, end_step=-1, frequency=100):
    super().__init__(begin_step, end_step, frequency)
    self.target_sparsity = masks.validate_sparsity(target_sparsity, "target_sparsity")

  @property
  def final_sparsity(self):
    return self.target_sparsity

  def sparsity(self, step):
    del step
    return tf.constant(self.target_sparsity, tf.float32)

  def get_config(self):
    return {"target_sparsity": self.target_sparsity, **super().get_config()}


@keras.saving.register_keras_serializable(package="tfprune")
class PolynomialDecay(PruningSchedule):
  """Gradual pruning from `initial_sparsity` to `final_sparsity` (cubic by default)."""

  def __init__(self, initial_sparsity, final_sparsity, begin_step, end_step, power=3,
               frequency=100):
    super().__init__(begin_step, end_step, frequency)
    if int(end_step) == -1:
      raise ValueError("PolynomialDecay needs a finite end_step (the step at which "
                       "final_sparsity is reached), got -1.")
    self.initial_sparsity = masks.validate_sparsity(initial_sparsity, "initial_sparsity")
    self.final_sparsity_value = masks.validate_sparsity(final_sparsity, "final_sparsity")
    if self.final_sparsity_value < self.initial_sparsity:
      raise ValueError(f"final_sparsity ({final_sparsity}) must be >= initial_sparsity "
                       f"({initial_sparsity}).")
    if float(power) <= 0:
      raise ValueError(f"power must be > 0, got {power!r}.")
    self.power = float(power)

  @property
  def final_sparsity(self):
    return self.final_sparsity_value

  def should_prune(self, step):
    """TFMOT's rule, plus always at `end_step`, so the final sparsity is reached.

    TFMOT prunes only every `frequency` steps from `begin_step`: when `end_step` is not
    on that grid (or comes before the first update after `begin_step`, as in a short
    run) it silently stops short of `final_sparsity`. Pruning at `end_step` too removes
    that trap; on the grid it changes nothing.
    """
    at_end = tf.equal(tf.cast(step, tf.int64), self.end_step)
    return tf.logical_or(super().should_prune(step), at_end)

  def sparsity(self, step):
    step = tf.cast(step, tf.float32)
    span = float(max(self.end_step - self.begin_step, 1))
    progress = tf.clip_by_value((step - self.begin_step) / span, 0.0, 1.0)
    s_i, s_f = self.initial_sparsity, self.final_sparsity_value
    return s_f + (s_i - s_f) * tf.pow(1.0 - progress, self.power)

  def get_config(self):
    return {"initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity_value, "power": self.power,
            **super().get_config()}


def deserialize(config):
  """A schedule from `keras.saving.serialize_keras_object` output (or itself)."""
  if config is None or isinstance(config, PruningSchedule):
    return config
  return keras.saving.deserialize_keras_object(config)
