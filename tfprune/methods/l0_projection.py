"""Training-time L0-constrained pruning: `method="l0_projection"`.

Phan, Nguyen, Nguyen, Kalagnanam, "Pruning Deep Neural Networks with l0-constrained
Optimization", ICDM 2020, doi 10.1109/ICDM50108.2020.00152 (ALGORITHMS.md section 4,
training-time variant): projected gradient descent on `min f(W) s.t. ||W||_0 <= k`. The
projection runs in the optimizer (`tfprune.optimizers.L0Projection`) after every update;
this method holds the schedule and scope, builds that optimizer, and sets the final masks.
The paper projects layer-wise; where it does not say how `k` evolves during training, the
implementation fills the gap with the usual sparsity schedules (`PolynomialDecay`).

    pruned = tfprune.prune(model, "l0_projection", target_sparsity=0.95, scope="global",
                           schedule=tfprune.PolynomialDecay(0, 0.95, 0, 2800))
    tfprune.get_method(pruned).fit(pruned, x, y, epochs=10)
"""
import weakref

import keras
import tensorflow as tf

from tfprune.methods.base import PruningMethod
from tfprune.methods.base import register_method

_BOUND = weakref.WeakSet()


def bound_methods():
  """The `l0_projection` methods currently bound to a model."""
  return [m for m in list(_BOUND) if m.wrappers]


@register_method("l0_projection")
class L0ProjectionMethod(PruningMethod):
  """Projects every prunable weight onto its top-k after each optimizer update.

  Args:
    target_sparsity, scope, schedule, block_size, n, m, allocation: as in
      `PruningMethod`; with `schedule=None` the projection keeps `target_sparsity` from
      the first step.
    regrow: dense gradients, pruned weights may re-enter the top-k (see
      `tfprune.optimizers.L0Projection`).
  """

  def __init__(self, target_sparsity=0.9, scope="layer", schedule=None, block_size=4, n=2,
               m=4, allocation="layer", regrow=True):
    super().__init__(target_sparsity=target_sparsity, scope=scope, schedule=schedule,
                     block_size=block_size, n=n, m=m, allocation=allocation)
    self.regrow = bool(regrow)
    self._optimizer = None

  def bind(self, model):
    super().bind(model)
    _BOUND.add(self)
    return self

  def make_optimizer(self, inner_optimizer=None):
    """An `L0Projection` around `inner_optimizer` (default Adam(1e-3)), bound to self."""
    from tfprune.optimizers import L0Projection  # pylint: disable=g-import-not-at-top
    self._optimizer = L0Projection(inner_optimizer or keras.optimizers.Adam(1e-3),
                                   schedule=self.schedule, scope=self.scope,
                                   block_size=self.block_size, n=self.n, m=self.m,
                                   allocation=self.allocation, regrow=self.regrow,
                                   method=self)
    return self._optimizer

  def on_train_begin(self):
    from tfprune.optimizers import L0Projection  # pylint: disable=g-import-not-at-top
    super().on_train_begin()
    optimizer = getattr(self.model, "optimizer", None)
    if optimizer is not None and getattr(self.model, "compiled", False):
      if not isinstance(optimizer, L0Projection):
        raise ValueError(
            f"Method 'l0_projection' projects inside the optimizer: compile model "
            f"{self.model.name!r} with tfprune.optimizers.L0Projection (e.g. "
            f"method.make_optimizer(keras.optimizers.Adam(1e-3))), not "
            f"{type(optimizer).__name__}; or use method.fit(...).")
      if optimizer._bound is None and optimizer._plain_weights is None:  # pylint: disable=protected-access
        optimizer.bind(self)
      self._optimizer = optimizer

  def on_train_step(self):
    """Nothing per step here: the optimizer projects after each update."""
    self._require_bound()

  def on_train_end(self):
    """Masks := the final top-k support (exact k); masked weights are zeroed."""
    self._require_bound()
    if self._optimizer is not None and self._optimizer.built:
      self._optimizer.finalize_masks()
    else:
      for w, m in zip(self.weights, self.masks):
        m.assign(tf.cast(tf.not_equal(w * m, 0), m.dtype))
    super().on_train_end()

  def prepare_optimizer(self, optimizer):
    """The default recipe trains with `L0Projection(optimizer)` (see `PruningMethod.fit`)."""
    return self.make_optimizer(optimizer)

  def get_config(self):
    return {**super().get_config(), "regrow": self.regrow}
