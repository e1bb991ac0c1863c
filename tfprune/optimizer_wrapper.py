"""`WrappedOptimizer`: the optimizer-side hooks a pruning method may install.

It holds any Keras 3 optimizer (`inner_optimizer`), delegates the update, learning rate,
iteration counter and state to it, and offers two hooks for subclasses:

  * `transform_gradients(grads, variables)`: change (or observe) the gradients before
    the inner update;
  * `after_apply(variables)`: act on the variables after it (a projection).

A wrapper that works for a pruning method is ATTACHED to it (`attach(method)`): the
method's `on_train_begin(optimizer=...)` does it - `tfprune.PruningCallback` calls it in
`model.fit`, with the compiled optimizer - so an optimizer reloaded from a `.keras` file
finds its method again without any global registry. The wrapper classes of the methods
live with their methods (`tfprune.methods.admm.ADMMOptimizer`,
`tfprune.methods.l0_projection.L0Projection`); `GradientHook` here is the generic one
behind the methods' gradient hook (`PruningMethod.observe_gradients`).

Works with `model.fit` and with a custom `tf.GradientTape` loop
(`optimizer.apply_gradients(zip(grads, variables))`), serializes with
`get_config`/`from_config`, and is saved inside a compiled `.keras` model.
"""
import keras

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
    self.method = None

  # ------------------------------------------------------------ attaching
  def accepts(self, method):
    """True if this wrapper can serve `method` (default: no method at all)."""
    del method
    return False

  def attach(self, method):
    """Serves `method` from now on (its `on_train_begin` calls this); returns self.

    Raises:
      ValueError: this wrapper does not work for that method.
    """
    if not self.accepts(method):
      raise ValueError(f"{type(self).__name__} cannot serve pruning method "
                       f"{getattr(method, 'name', method)!r}.")
    self.method = method
    return self

  def require_method(self):
    """The attached method; ValueError with the fix when there is none."""
    if self.method is None:
      raise ValueError(
          f"{type(self).__name__} is not attached to a pruning method: pass method= when "
          f"you make it (method.prepare_optimizer(optimizer) does), call "
          f"method.on_train_begin(optimizer=...) in a custom loop, or train with "
          f"tfprune.PruningCallback, which attaches the compiled optimizer.")
    return self.method

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


@keras.saving.register_keras_serializable(package="tfprune")
class GradientHook(WrappedOptimizer):
  """Hands every gradient to the attached method's `observe_gradients`, unchanged.

  What a gradient-based method (movement pruning) trains with:
  `method.prepare_optimizer(keras.optimizers.Adam(1e-3))` returns one, attached.

  Args:
    inner_optimizer: the Keras optimizer doing the update.
    method: optional method to attach now (else `on_train_begin` attaches it).
    name: optional name.
  """

  def __init__(self, inner_optimizer, method=None, name=None, **kwargs):
    super().__init__(inner_optimizer, name=name, **kwargs)
    if method is not None:
      self.attach(method)

  def accepts(self, method):
    return bool(getattr(method, "uses_gradients", False))

  def transform_gradients(self, grads, variables):
    self.require_method().observe_gradients(grads, variables)
    return grads
