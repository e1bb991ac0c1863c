"""Hard-concrete L0 gates on whole units (Dense neurons, conv filters).

Louizos, Welling, Kingma, "Learning Sparse Neural Networks through L0 Regularization",
ICLR 2018 (arXiv:1712.01312). Each unit j carries a gate `z_j` in [0, 1] drawn from the
hard-concrete distribution with location `log_alpha_j`:

    u ~ U(0, 1)
    s = sigmoid((log u - log(1 - u) + log_alpha) / beta)        (binary concrete)
    z = clip(s * (zeta - gamma) + gamma, 0, 1)                  (stretch, then hard clip)

with the paper's constants `beta = 2/3`, `gamma = -0.1`, `zeta = 1.1`. The probability
that a gate is non-zero is `sigmoid(log_alpha - beta * log(-gamma / zeta))`, so the
expected L0 norm of the gates (the number of open units) is the differentiable

    E[||z||_0] = sum_j sigmoid(log_alpha_j - beta * log(-gamma / zeta))     (paper eq. 12)

and the penalty is `lambda * E[||z||_0]`. At test time the gates are deterministic
(paper eq. 13): `z = clip(sigmoid(log_alpha) * (zeta - gamma) + gamma, 0, 1)`; a gate with
`z = 0` deletes its unit.

The first half of this module is pure maths on tensors (as in state_of_sparsity's
`l0_norm/common.py`); `L0Gate` is the Keras layer that owns `log_alpha`.
"""
import math

import keras
import numpy as np
import tensorflow as tf

BETA = 2.0 / 3.0
GAMMA = -0.1
ZETA = 1.1
EPSILON = 1e-6

# log_alpha at which the test-time gate becomes exactly 0 / exactly 1.
CLOSED_LOG_ALPHA = math.log(-GAMMA / ZETA)  # sigmoid = -gamma / (zeta - gamma) = 1/12
OPEN_LOG_ALPHA = math.log((1.0 - GAMMA) / (ZETA - 1.0))  # sigmoid = 11/12


# ------------------------------------------------------------------- pure maths
def open_probability(log_alpha, beta=BETA, gamma=GAMMA, zeta=ZETA):
  """P(z != 0) for each gate: `sigmoid(log_alpha - beta * log(-gamma / zeta))`."""
  return tf.sigmoid(log_alpha - beta * math.log(-gamma / zeta))


def expected_l0(log_alpha, beta=BETA, gamma=GAMMA, zeta=ZETA):
  """Expected number of open gates, `sum_j P(z_j != 0)` (Louizos et al. eq. 12)."""
  return tf.reduce_sum(open_probability(log_alpha, beta, gamma, zeta))


def sample_gates(log_alpha, shape=None, beta=BETA, gamma=GAMMA, zeta=ZETA, seed=None):
  """Draws hard-concrete gates (training time, reparameterised: differentiable).

  Args:
    log_alpha: location parameters, shape `[units]`.
    shape: shape of the sample, broadcastable with `log_alpha` (default its shape: one
      gate per unit for the whole minibatch).
    beta, gamma, zeta: hard-concrete constants.
    seed: optional `keras.random.SeedGenerator`.

  Returns:
    Gates in [0, 1] of shape `shape`.
  """
  shape = tf.shape(log_alpha) if shape is None else shape
  u = keras.random.uniform(shape, minval=EPSILON, maxval=1.0 - EPSILON,
                           dtype=log_alpha.dtype, seed=seed)
  return gates_from_noise(log_alpha, u, beta, gamma, zeta)


def gates_from_noise(log_alpha, u, beta=BETA, gamma=GAMMA, zeta=ZETA):
  """Hard-concrete gates for given uniform noise `u` in (0, 1) (differentiable in
  `log_alpha`): the sample of `sample_gates` with the noise drawn elsewhere, so several
  layers can share one draw (the channel-group gates of `l0_gates`)."""
  u = tf.cast(u, log_alpha.dtype)
  s = tf.sigmoid((tf.math.log(u) - tf.math.log(1.0 - u) + log_alpha) / beta)
  return tf.clip_by_value(s * (zeta - gamma) + gamma, 0.0, 1.0)


def deterministic_gates(log_alpha, gamma=GAMMA, zeta=ZETA):
  """Test-time gates `clip(sigmoid(log_alpha) * (zeta - gamma) + gamma, 0, 1)`."""
  return tf.clip_by_value(tf.sigmoid(log_alpha) * (zeta - gamma) + gamma, 0.0, 1.0)


def log_alpha_for_droprate(droprate):
  """Initial `log_alpha` such that a gate is closed with probability ~`droprate`.

  This is the initialisation of Louizos et al.'s reference code
  (`log(1 - p) - log(p)`).
  """
  if not 0.0 < float(droprate) < 1.0:
    raise ValueError(f"droprate_init must be in (0, 1), got {droprate!r}.")
  return math.log(1.0 - droprate) - math.log(droprate)


def expected_l0_numpy(log_alpha, beta=BETA, gamma=GAMMA, zeta=ZETA):
  """NumPy reference of `expected_l0` (for tests and reports)."""
  log_alpha = np.asarray(log_alpha, np.float64)
  return float(np.sum(1.0 / (1.0 + np.exp(-(log_alpha - beta * np.log(-gamma / zeta))))))


# -------------------------------------------------------------------- the layer
@keras.saving.register_keras_serializable(package="tfprune")
class L0Gate(keras.layers.Layer):
  """Hard-concrete gates on the last axis of its input (units or channels).

  Training: `x * z` with `z` sampled per minibatch (one gate per unit; the reference
  code's non-local-reparameterised form). Inference: `x * z` with the deterministic
  test-time gates. A non-trainable 0/1 `unit_mask` closes units for good (the hard
  top-k that enforces a target number of kept units).

  Used on its own after any layer, or by the `l0_gates` pruning method, whose wrappers
  apply the gates to the pre-activation outputs of Dense / Conv layers (see
  `tfprune.methods.l0_gates`).

  Args:
    units: number of gates; default the size of the input's last axis at build time.
    droprate_init: initial probability that a gate is closed (sets `log_alpha`).
    log_alpha_scale: `log_alpha = log_alpha_scale * raw`, the trainable variable:
      multiplies the gates' effective learning rate under Adam-like optimizers (a short
      pruning budget needs gates that move faster than weights).
    **kwargs: Keras layer arguments.
  """

  def __init__(self, units=None, droprate_init=0.05, log_alpha_scale=1.0, **kwargs):
    super().__init__(**kwargs)
    if units is not None and int(units) < 1:
      raise ValueError(f"L0Gate {self.name!r}: units must be >= 1, got {units!r}.")
    log_alpha_for_droprate(droprate_init)  # validates
    if float(log_alpha_scale) <= 0:
      raise ValueError(f"L0Gate {self.name!r}: log_alpha_scale must be > 0, got "
                       f"{log_alpha_scale!r}.")
    self.units = None if units is None else int(units)
    self.droprate_init = float(droprate_init)
    self.log_alpha_scale = float(log_alpha_scale)
    self.seed_generator = keras.random.SeedGenerator(None)

  def build(self, input_shape=None):
    if self.units is None:
      if input_shape is None or input_shape[-1] is None:
        raise ValueError(f"L0Gate {self.name!r} needs `units` or an input with a known "
                         f"last axis.")
      self.units = int(input_shape[-1])
    init = log_alpha_for_droprate(self.droprate_init) / self.log_alpha_scale
    self.raw_log_alpha = self.add_weight(
        name="log_alpha", shape=(self.units,), initializer=keras.initializers.Constant(init),
        trainable=True)
    self.unit_mask = self.add_weight(name="unit_mask", shape=(self.units,),
                                     initializer="ones", trainable=False)
    self.built = True

  @property
  def log_alpha(self):
    """The gates' `log_alpha` (a tensor)."""
    return self.raw_log_alpha * self.log_alpha_scale

  def set_log_alpha(self, values):
    """Assigns `log_alpha` (array of shape `[units]`)."""
    self.raw_log_alpha.assign(np.asarray(values, np.float32) / self.log_alpha_scale)

  def gates(self, training=False):
    """Gate values `[units]`: sampled when training, deterministic otherwise (masked)."""
    log_alpha = tf.convert_to_tensor(self.log_alpha)
    if training:
      z = sample_gates(log_alpha, seed=self.seed_generator)
    else:
      z = deterministic_gates(log_alpha)
    return z * tf.cast(self.unit_mask, z.dtype)

  def expected_l0(self):
    """Expected number of open gates among the units not closed by `unit_mask`."""
    return tf.reduce_sum(open_probability(self.log_alpha) * self.unit_mask)

  def open_probability(self):
    """P(z_j != 0) per unit (masked)."""
    return open_probability(self.log_alpha) * self.unit_mask

  def open_units(self):
    """Boolean NumPy array: which units are open at test time."""
    return self.gates(training=False).numpy() > 0

  def call(self, inputs, training=None):
    z = self.gates(training=bool(training))
    return inputs * tf.cast(z, inputs.dtype)

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    return {**super().get_config(), "units": self.units,
            "droprate_init": self.droprate_init, "log_alpha_scale": self.log_alpha_scale}
