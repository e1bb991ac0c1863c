"""Optimizer wrappers: add a pruning term to the user's Keras optimizer.

`WrappedOptimizer` is the small shared base: it holds any Keras 3 optimizer (`inner`),
delegates the update, learning rate, iteration counter and state to it, and offers two
hooks for subclasses:

  * `transform_gradients(grads, variables)`: change the gradients before the inner
    update (ADMM adds `rho * (W - Z + U)`);
  * `after_apply(variables)`: act on the variables after it (a projection optimizer
    projects each weight onto its top-k).

It works with `model.fit` and with a custom `tf.GradientTape` loop
(`optimizer.apply_gradients(zip(grads, variables))`), serializes with
`get_config`/`from_config`, and is saved inside a compiled `.keras` model.

`ADMM` is the W-step of ADMM pruning (Lee et al. 2023, doi 10.1007/s44196-023-00202-z;
see `tfprune.methods.admm`): the gradient of `rho/2 * ||W - Z + U||_F^2` is added to the
gradient of every weight pruned by an ADMM method with `penalty="optimizer"`.
"""
import keras
import tensorflow as tf

from tfprune import distribute


class WrappedOptimizer(keras.optimizers.Optimizer):
  """Base class: wraps `inner_optimizer`, changing gradients and/or variables.

  Args:
    inner_optimizer: any `keras.optimizers.Optimizer` instance (SGD, Adam, ...). Set
      learning rate, clipping, weight decay, EMA... on it.
    name: optional name.

  Raises:
    ValueError: `inner_optimizer` is not a Keras optimizer.
  """

  def __init__(self, inner_optimizer, name=None, **kwargs):
    if isinstance(inner_optimizer, (dict, str)):
      inner_optimizer = keras.optimizers.get(inner_optimizer)
    if not isinstance(inner_optimizer, keras.optimizers.Optimizer):
      raise ValueError(f"{type(self).__name__} wraps a keras.optimizers.Optimizer instance "
                       f"(e.g. keras.optimizers.Adam(1e-3)), got "
                       f"{type(inner_optimizer).__name__}.")
    if kwargs:
      raise ValueError(f"{type(self).__name__} does not take {sorted(kwargs)}: set them on "
                       f"the inner optimizer.")
    super().__init__(learning_rate=0.0, name=name)
    self.inner_optimizer = inner_optimizer

  # ---------------------------------------------------------------- hooks
  def transform_gradients(self, grads, variables):
    """Returns the gradients the inner optimizer applies (default: unchanged)."""
    del variables
    return grads

  def after_apply(self, variables):
    """Runs after the inner update (default: nothing)."""
    del variables

  # ----------------------------------------------------------- delegation
  def build(self, var_list):
    self.inner_optimizer.build(var_list)
    super().build(var_list)

  @property
  def variables(self):
    return self._variables + self.inner_optimizer.variables

  def apply(self, grads, trainable_variables=None):
    grads = list(grads)
    if not self.built:
      if trainable_variables is None:
        raise ValueError(f"{type(self).__name__}.apply needs trainable_variables on its "
                         f"first call (or call build(variables) first).")
      with keras.name_scope(self.name, caller=self):
        self.build(trainable_variables)
      self.built = True
    variables = list(trainable_variables if trainable_variables is not None
                     else self._trainable_variables)
    grads = self.transform_gradients(grads, variables)
    self.inner_optimizer.apply(grads, trainable_variables)
    if type(self).after_apply is not WrappedOptimizer.after_apply:
      # Under tf.distribute, run the hook once, cross-replica (a merge_call), on the
      # synchronised weights: its assignments write every replica identically.
      distribute.call_in_cross_replica(self.after_apply, variables)

  def stateless_apply(self, optimizer_variables, grads, trainable_variables):
    raise NotImplementedError(f"{type(self).__name__} supports the TensorFlow backend's "
                              f"stateful apply only.")

  @property
  def learning_rate(self):
    return self.inner_optimizer.learning_rate

  @learning_rate.setter
  def learning_rate(self, learning_rate):
    self.inner_optimizer.learning_rate = learning_rate

  @property
  def iterations(self):
    return self.inner_optimizer.iterations

  def scale_loss(self, loss):
    return self.inner_optimizer.scale_loss(loss)

  def finalize_variable_values(self, var_list):
    self.inner_optimizer.finalize_variable_values(var_list)

  def get_config(self):
    return {"name": self.name,
            "inner_optimizer": keras.saving.serialize_keras_object(self.inner_optimizer)}

  @classmethod
  def from_config(cls, config, custom_objects=None):
    config = dict(config)
    inner = keras.saving.deserialize_keras_object(config.pop("inner_optimizer"),
                                                  custom_objects=custom_objects)
    return cls(inner, **config)


# Registered as "tfprune>ADMMOptimizer": "tfprune>ADMM" is the pruning method.
@keras.saving.register_keras_serializable(package="tfprune", name="ADMMOptimizer")
class ADMM(WrappedOptimizer):
  """ADMM W-step as an optimizer wrapper: `grad += rho * (W - Z + U)` on pruned weights.

  The ADMM state (`Z`, `U`, the step from which `rho` follows) lives in the pruned
  model's wrappers; the method that owns it must use `penalty="optimizer"` (else the
  penalty would be counted twice). The method is found automatically from the variables
  being trained (any bound ADMM method whose weights they are), or passed explicitly.

  Example (custom loop):

      pruned = tfprune.prune(model, "admm", target_sparsity=0.98, penalty="optimizer",
                             admm_steps=3000)
      method = tfprune.get_method(pruned)
      opt = tfprune.optimizers.ADMM(keras.optimizers.Adam(1e-3))
      method.on_train_begin()
      for x, y in dataset:
        method.on_train_step()          # Z/U steps, hard prune at admm_steps
        with tf.GradientTape() as tape:
          loss = loss_fn(y, pruned(x, training=True))
        grads = tape.gradient(loss, pruned.trainable_variables)
        opt.apply_gradients(zip(grads, pruned.trainable_variables))
      method.on_train_end()

  Args:
    inner_optimizer: the Keras optimizer doing the update.
    method: optional `tfprune.methods.admm.ADMM` (default: found from the variables).
    name: optional name.
  """

  def __init__(self, inner_optimizer, method=None, name=None, **kwargs):
    super().__init__(inner_optimizer, name=name, **kwargs)
    self._admm_method = method

  def _methods_for(self, variables):
    from tfprune.methods import admm  # pylint: disable=g-import-not-at-top
    candidates = [self._admm_method] if self._admm_method is not None else \
        admm.bound_methods()
    ids = {id(v) for v in variables}
    found = [m for m in candidates if any(id(w) in ids for w in m.weights)]
    for m in found:
      if m.penalty != "optimizer":
        raise ValueError(f"tfprune.optimizers.ADMM adds the ADMM penalty gradient, but the "
                         f"ADMM method of model {m.model.name!r} already adds it to the loss "
                         f"(penalty={m.penalty!r}). Use penalty='optimizer' with this "
                         f"optimizer, or a plain optimizer with penalty='loss'.")
    return found

  def transform_gradients(self, grads, variables):
    terms = {}
    for method in self._methods_for(variables):
      for var, term in method.penalty_gradients():
        terms[id(var)] = term
    out = []
    for g, v in zip(grads, variables):
      term = terms.get(id(v))
      if g is None or term is None:
        out.append(g)
      else:
        out.append(g + tf.cast(term, g.dtype))
    return out


@keras.saving.register_keras_serializable(package="tfprune")
class L0Projection(WrappedOptimizer):
  """L0-constrained training: after every update, project each weight onto its top-k.

  The training-time variant of Phan et al., "Pruning Deep Neural Networks with
  l0-constrained Optimization", ICDM 2020 (ALGORITHMS.md section 4): projected gradient
  descent on `min f(W) s.t. ||W||_0 <= k`, i.e. `W <- H_k(W - step(grad))`, where the
  step is the inner optimizer's and `H_k` keeps the `k` largest magnitudes in the given
  scope (`layer`, `global`, `block`, `n:m`, `structured`; exact `k`, ties to the lower
  index). `k` follows a sparsity schedule: at the schedule's pruning steps the sparsity
  in effect is updated (`PolynomialDecay` gives TFMOT's trajectory); from `begin_step` on
  every update is projected at the sparsity in effect.

  Which weights: those of the `l0_projection` method passed as `method`, or bound with
  `bind(model_or_method)`, or else found automatically (a bound `l0_projection` method
  whose weights are being trained), or - for a plain model bound with `bind(model)` -
  every prunable weight of it (`tfprune.registry`).

  With `regrow=True` (default) the wrappers' masks stay open while training, so pruned
  weights get gradients and may re-enter the top-k (iterative hard thresholding); the
  masks are set to the final support by `finalize_masks()` (the `l0_projection` method
  calls it at the end of training). With `regrow=False` the masks follow the support at
  every step, so a pruned weight stays pruned.

  Example (custom loop):

      pruned = tfprune.prune(model, "l0_projection", target_sparsity=0.95)
      opt = tfprune.get_method(pruned).make_optimizer(keras.optimizers.Adam(1e-3))
      for x, y in dataset:
        with tf.GradientTape() as tape:
          loss = loss_fn(y, pruned(x, training=True))
        grads = tape.gradient(loss, pruned.trainable_variables)
        opt.apply_gradients(zip(grads, pruned.trainable_variables))
      opt.finalize_masks()

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
    from tfprune import masks as masks_lib  # pylint: disable=g-import-not-at-top
    from tfprune import schedules as schedules_lib  # pylint: disable=g-import-not-at-top
    super().__init__(inner_optimizer, name=name, **kwargs)
    if isinstance(schedule, (int, float)):
      schedule = schedules_lib.ConstantSparsity(schedule, frequency=1)
    schedule = schedules_lib.deserialize(schedule)
    if not isinstance(schedule, schedules_lib.PruningSchedule):
      raise ValueError(f"L0Projection: schedule must be a sparsity (float) or a "
                       f"tfprune.schedules.PruningSchedule, got {type(schedule).__name__}.")
    masks_lib.validate_scope(scope, block_size, n, m, allocation)
    self.schedule = schedule
    self.scope = scope
    self.block_size, self.n, self.m = int(block_size), int(n), int(m)
    self.allocation = allocation
    self.regrow = bool(regrow)
    self._bound = method
    self._plain_weights = None

  # ------------------------------------------------------------ binding
  def bind(self, target):
    """Projects the weights of `target`: an `l0_projection` method, a pruned model, or
    a plain Keras model (all its prunable weights). Returns self."""
    from tfprune import registry  # pylint: disable=g-import-not-at-top
    from tfprune.methods import base  # pylint: disable=g-import-not-at-top
    if isinstance(target, base.PruningMethod):
      self._bound, self._plain_weights = target, None
    elif isinstance(target, keras.Model):
      if base.find_wrappers(target):
        from tfprune import model as model_lib  # pylint: disable=g-import-not-at-top
        self._bound, self._plain_weights = model_lib.get_method(target), None
      else:
        weights = []
        for layer in base.all_layers(target):
          if registry.is_prunable(layer) and not hasattr(layer, "layers"):
            weights.extend(registry.get_prunable_weights(layer))
        if not weights:
          raise ValueError(f"L0Projection: model {target.name!r} has no prunable weights.")
        self._bound, self._plain_weights = None, weights
    else:
      raise ValueError(f"L0Projection.bind takes an l0_projection method or a Keras model, "
                       f"got {type(target).__name__}.")
    return self

  def _targets(self, variables):
    """[(weight, mask or None, wrapper or None)] to project."""
    if self._plain_weights is not None:
      return [(w, None, None) for w in self._plain_weights]
    methods = [self._bound] if self._bound is not None else []
    if not methods:
      from tfprune.methods import l0_projection  # pylint: disable=g-import-not-at-top
      ids = {id(v) for v in variables}
      methods = [m for m in l0_projection.bound_methods()
                 if any(id(w) in ids for w in m.weights)]
    if not methods:
      raise ValueError("L0Projection does not know which weights to project: pass "
                       "method=, call optimizer.bind(model), or train a model pruned with "
                       "tfprune.prune(model, 'l0_projection', ...).")
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
    from tfprune import masks as masks_lib  # pylint: disable=g-import-not-at-top
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
