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
    self.after_apply(variables)

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


@keras.saving.register_keras_serializable(package="tfprune")
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
