"""Training-time L0-constrained pruning: `method="l0_projection"`.

Phan, Nguyen, Nguyen, Kalagnanam, "Pruning Deep Neural Networks with l0-constrained
Optimization", ICDM 2020, doi 10.1109/ICDM50108.2020.00152 (docs/algorithms.md section 4,
training-time variant): projected gradient descent on `min f(W) s.t. ||W||_0 <= k`. The
projection runs in the optimizer (`L0Projection`, below; exported as
`tfprune.optimizers.L0Projection`) after every update; this method holds the schedule and
scope, builds that optimizer (`prepare_optimizer`), attaches it in `on_train_begin` and
sets the final masks.
The paper projects layer-wise; where it does not say how `k` evolves during training, the
implementation fills the gap with the usual sparsity schedules (`PolynomialDecay`).

    pruned = tfprune.prune(model, "l0_projection", target_sparsity=0.95, scope="global",
                           schedule=tfprune.PolynomialDecay(0, 0.95, 0, 2800))
    tfprune.get_method(pruned).fit(pruned, x, y, epochs=10)
"""
import keras
import tensorflow as tf

from tfprune import masks as masks_lib
from tfprune import optimizer_wrapper
from tfprune import registry
from tfprune import schedules
from tfprune import wrapper as wrapper_lib
from tfprune._layers import all_layers
from tfprune.methods.base import PruningMethod
from tfprune.methods.base import register_method


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

  structured_graph = False  # the projection runs in the optimizer (per-layer units)

  def __init__(self, target_sparsity=0.9, scope="layer", schedule=None, block_size=4, n=2,
               m=4, allocation="layer", regrow=True):
    super().__init__(target_sparsity=target_sparsity, scope=scope, schedule=schedule,
                     block_size=block_size, n=n, m=m, allocation=allocation)
    self.regrow = bool(regrow)
    self.optimizer = None

  def optimizer_class(self):
    """The projection runs in the optimizer: training needs `L0Projection`."""
    return L0Projection

  def make_optimizer(self, inner_optimizer=None):
    """An `L0Projection` around `inner_optimizer` (default Adam(1e-3)), attached."""
    self.optimizer = L0Projection(inner_optimizer or keras.optimizers.Adam(1e-3),
                                  schedule=self.schedule, scope=self.scope,
                                  block_size=self.block_size, n=self.n, m=self.m,
                                  allocation=self.allocation, regrow=self.regrow,
                                  method=self)
    return self.optimizer

  def prepare_optimizer(self, optimizer):
    """Always a fresh `L0Projection(optimizer)` carrying this method's schedule/scope."""
    if isinstance(optimizer, L0Projection):
      self.optimizer = optimizer.attach(self)
      return optimizer
    return self.make_optimizer(optimizer)

  def on_train_begin(self, optimizer=None):
    super().on_train_begin(optimizer=optimizer)
    optimizer = optimizer if optimizer is not None else getattr(self.model, "optimizer",
                                                                None)
    if isinstance(optimizer, L0Projection):
      self.optimizer = optimizer

  def update(self, step):
    """Nothing per step here: the optimizer projects after each update."""
    del step

  def on_train_end(self):
    """Masks := the final top-k support (exact k); masked weights are zeroed."""
    self._require_bound()
    if self.optimizer is not None and self.optimizer.built:
      self.optimizer.finalize_masks()
    else:
      for w, m in zip(self.weights, self.masks):
        m.assign(tf.cast(tf.not_equal(w * m, 0), m.dtype))
    super().on_train_end()

  def get_config(self):
    return {**super().get_config(), "regrow": self.regrow}


@keras.saving.register_keras_serializable(package="tfprune")
class L0Projection(optimizer_wrapper.WrappedOptimizer):
  """L0-constrained training: after every update, project each weight onto its top-k.

  The training-time variant of Phan et al., "Pruning Deep Neural Networks with
  l0-constrained Optimization", ICDM 2020 (docs/algorithms.md section 4): projected gradient
  descent on `min f(W) s.t. ||W||_0 <= k`, i.e. `W <- H_k(W - step(grad))`, where the
  step is the inner optimizer's and `H_k` keeps the `k` largest magnitudes in the given
  scope (`layer`, `global`, `block`, `n:m`, `structured`; exact `k`, ties to the lower
  index). `k` follows a sparsity schedule: at the schedule's pruning steps the sparsity
  in effect is updated (`PolynomialDecay` gives TFMOT's trajectory); from `begin_step` on
  every update is projected at the sparsity in effect.

  Which weights: those of the `l0_projection` method passed as `method`, bound with
  `bind(model_or_method)` or attached by the method's `on_train_begin` (which
  `tfprune.PruningCallback` calls), or - for a plain model bound with `bind(model)` -
  every prunable weight of it (`tfprune.registry`).

  With `regrow=True` (default) the wrappers' masks stay open while training, so pruned
  weights get gradients and may re-enter the top-k (iterative hard thresholding); the
  masks are set to the final support by `finalize_masks()` (the `l0_projection` method
  calls it at the end of training). With `regrow=False` the masks follow the support at
  every step, so a pruned weight stays pruned.

  Example (custom loop):

      pruned = tfprune.prune(model, "l0_projection", target_sparsity=0.95)
      method = tfprune.get_method(pruned)
      opt = method.prepare_optimizer(keras.optimizers.Adam(1e-3))
      method.on_train_begin(optimizer=opt)
      for x, y in dataset:
        method.on_train_step()
        with tf.GradientTape() as tape:
          loss = loss_fn(y, pruned(x, training=True))
        grads = tape.gradient(loss, pruned.trainable_variables)
        opt.apply_gradients(zip(grads, pruned.trainable_variables))
      method.on_train_end()  # final masks = the top-k support

  Args:
    inner_optimizer: the Keras optimizer doing the update.
    schedule: a `tfprune.schedules.PruningSchedule`, its serialized config, or a float
      (constant sparsity from step 0).
    scope: mask scope, one of `tfprune.masks.SCOPES`.
    block_size, n, m, allocation: scope parameters (see `tfprune.masks.compute_masks`).
    regrow: let pruned weights re-enter (dense gradients), see above.
    method: optional `l0_projection` method whose weights to project.
    name: optional name.
  """

  def __init__(self, inner_optimizer, schedule=0.9, scope="layer", block_size=4, n=2, m=4,
               allocation="layer", regrow=True, method=None, name=None, **kwargs):
    super().__init__(inner_optimizer, name=name, **kwargs)
    if isinstance(schedule, (int, float)):
      schedule = schedules.ConstantSparsity(schedule, frequency=1)
    schedule = schedules.deserialize(schedule)
    if not isinstance(schedule, schedules.PruningSchedule):
      raise ValueError(f"L0Projection: schedule must be a sparsity (float) or a "
                       f"tfprune.schedules.PruningSchedule, got {type(schedule).__name__}.")
    masks_lib.validate_scope(scope, block_size, n, m, allocation)
    self.schedule = schedule
    self.scope = scope
    self.block_size, self.n, self.m = int(block_size), int(n), int(m)
    self.allocation = allocation
    self.regrow = bool(regrow)
    self._plain_weights = None
    if method is not None:
      self.attach(method)

  def accepts(self, method):
    return isinstance(method, L0ProjectionMethod)

  @property
  def bound_to_plain_model(self):
    """True when `bind(plain_model)` chose the weights (no method attached)."""
    return self._plain_weights is not None

  # ------------------------------------------------------------ binding
  def bind(self, target):
    """Projects the weights of `target`: an `l0_projection` method, a pruned model, or
    a plain Keras model (all its prunable weights). Returns self."""
    if isinstance(target, PruningMethod):
      self.attach(target)
      self._plain_weights = None
    elif isinstance(target, keras.Model):
      if wrapper_lib.find_wrappers(target):
        self.attach(wrapper_lib.get_method(target))
        self._plain_weights = None
      else:
        weights = []
        for layer in all_layers(target):
          if registry.is_prunable(layer) and not hasattr(layer, "layers"):
            weights.extend(registry.get_prunable_weights(layer))
        if not weights:
          raise ValueError(f"L0Projection: model {target.name!r} has no prunable weights.")
        self.method, self._plain_weights = None, weights
    else:
      raise ValueError(f"L0Projection.bind takes an l0_projection method or a Keras model, "
                       f"got {type(target).__name__}.")
    return self

  def _targets(self, variables):
    """[(weight, mask or None, wrapper or None)] to project."""
    if self._plain_weights is not None:
      return [(w, None, None) for w in self._plain_weights]
    del variables
    if self.method is None:
      raise ValueError("L0Projection does not know which weights to project: pass "
                       "method=, call optimizer.bind(model), or train a model pruned with "
                       "tfprune.prune(model, 'l0_projection', ...) with PruningCallback "
                       "(or method.on_train_begin(optimizer=...) in a custom loop).")
    methods = [self.method]
    out = []
    for method in methods:
      for wrapper in method.wrappers:
        for w, m in zip(wrapper.prunable_weights, wrapper.masks):
          out.append((w, m, wrapper))
    return out

  # ------------------------------------------------------------ the projection
  def build(self, var_list):
    super().build(var_list)
    self.current_sparsity = self.add_variable(shape=(), dtype="float32",
                                              initializer="zeros",
                                              name="current_sparsity")

  def projection_masks(self, weights, masks, sparsity):
    """Top-k masks of `|W * mask|` at `sparsity` in this optimizer's scope."""
    scores = [tf.abs(w * m) if m is not None else tf.abs(w) for w, m in zip(weights, masks)]
    return masks_lib.compute_masks(scores, sparsity, scope=self.scope,
                                   block_size=self.block_size, n=self.n, m=self.m,
                                   allocation=self.allocation)

  def after_apply(self, variables):
    targets = self._targets(variables)
    weights = [t[0] for t in targets]
    masks = [t[1] for t in targets]
    step = tf.cast(self.iterations, tf.int64) - 1  # the update just applied
    should, sparsity = self.schedule(step)
    self.current_sparsity.assign(tf.where(should, tf.cast(sparsity, tf.float32),
                                          self.current_sparsity))
    use_masks = [None if (m is None or self.regrow) else m for m in masks]

    def project():
      new = self.projection_masks(weights, use_masks, self.current_sparsity)
      for w, m, keep in zip(weights, masks, new):
        keep = tf.cast(keep, w.dtype)
        w.assign(w * keep)
        if m is not None and not self.regrow:
          m.assign(tf.cast(keep, m.dtype))
      return tf.constant(True)

    tf.cond(step >= self.schedule.begin_step, project, lambda: tf.constant(False))
    for wrapper in {id(t[2]): t[2] for t in targets if t[2] is not None}.values():
      wrapper.pruning_step.assign(step + 1)

  def finalize_masks(self, variables=None):
    """Sets the wrappers' masks to the current top-k support (exact k) and zeroes the
    rest; call once training is over (no-op for plain bound models)."""
    targets = [t for t in self._targets(variables or []) if t[1] is not None]
    if not targets or not self.built:
      return
    weights = [t[0] for t in targets]
    new = self.projection_masks(weights, [None] * len(weights), self.current_sparsity)
    for (w, m, _), keep in zip(targets, new):
      m.assign(tf.cast(keep, m.dtype))
      w.assign(w * tf.cast(keep, w.dtype))

  def get_config(self):
    config = super().get_config()
    config.update({"schedule": keras.saving.serialize_keras_object(self.schedule),
                   "scope": self.scope, "block_size": self.block_size, "n": self.n,
                   "m": self.m, "allocation": self.allocation, "regrow": self.regrow})
    return config
