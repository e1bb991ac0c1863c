"""`PruneWrapper`: a Keras layer wrapper that owns pruning state and computes with W * mask.

The wrapper owns the state (as TFMOT's wrapper does); the maths lives in the method:
  * one non-trainable 0/1 mask per prunable weight,
  * `pruning_step`, the schedule's step counter (int64),
  * per-weight slots that the method asks for (e.g. ADMM's Z and U),
so all of it is saved by `model.save` and restored by `keras.models.load_model`.

Lookup lives here too: `find_wrappers(model)` and `get_method(model)` (the method a
pruned model's wrappers share, bound to it - also after `load_model`).

The inner layer runs inside a `keras.StatelessScope` that maps each prunable variable to
`variable * mask`: the layer computes exactly as the dense layer would on the masked
weights, and the gradient of masked entries is exactly zero.
"""
from __future__ import annotations

import inspect
import re

import keras
import tensorflow as tf

from tfprune import registry
from tfprune import _layers
from tfprune._layers import all_layers


def _slot_prefix(variable):
  return re.sub(r"[^0-9A-Za-z_]", "_", variable.path.split("/", 1)[-1])


def _call_signature(own, inner):
  """The wrapper's call signature as Keras binds it: its own, plus the inner call's
  keyword arguments by name (so `layer(x, rope=(cos, sin), prefix=5)` binds two
  arguments, not one `kwargs` dict that mixes tensors and plain values)."""
  own = inspect.signature(own)
  params = list(own.parameters.values())
  names = {p.name for p in params}
  extra = [
      inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY,
                        default=None if p.default is p.empty else p.default)
      for p in list(inspect.signature(inner).parameters.values())[1:]
      if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in names]
  cut = next(i for i, p in enumerate(params) if p.kind is p.VAR_KEYWORD)
  return own.replace(parameters=params[:cut] + extra + params[cut:])


def _is_shape(shape):
  """True if `shape` is one tensor's shape (a tuple or list of ints / None)."""
  return isinstance(shape, (tuple, list)) and all(
      d is None or isinstance(d, int) for d in shape)


@keras.saving.register_keras_serializable(package="tfprune")
class PruneWrapper(keras.layers.Wrapper):
  """Wraps a prunable layer; computes with `weight * mask` for every prunable weight.

  Args:
    layer: the Keras layer to prune (see `tfprune.registry` for supported types).
    method: the `tfprune.methods.PruningMethod` driving the masks (shared by all the
      wrappers of a model), its serialized config, or None (masks only: set them with
      `set_masks`).
    layer_build_config: the inner layer's build config (set by `get_config`).
    layer_call_spec: the shapes / dtypes of the wrapper's call (set by `get_config`):
      loading traces the inner layer's call on them when its `build()` leaves
      sublayers unbuilt (a lazy custom layer).
    **kwargs: Keras layer arguments (name, ...). The dtype policy defaults to the
      layer's.

  The wrapper is transparent: output shape / spec, masks and dtype policy are the inner
  layer's, so a layer that runs unwrapped runs wrapped.
  """

  def __init__(self, layer, method=None, layer_build_config=None, layer_call_spec=None,
               **kwargs):
    if not isinstance(layer, keras.layers.Layer):
      raise ValueError(f"PruneWrapper needs a Keras layer, got {type(layer).__name__}.")
    if isinstance(layer, PruneWrapper):
      raise ValueError(f"Layer {layer.name!r} is already wrapped in a PruneWrapper.")
    # Loading: build the layer first (a keras_hub block makes its sublayers in build()).
    if layer_build_config is not None and not layer.built:
      layer.build_from_config(_layers.shapes_as_tuples(layer_build_config))
    if layer_call_spec is not None and _layers.unbuilt_sublayers(layer):
      _layers.build_by_tracing(layer, *_layers.spec_from_config(layer_call_spec))
    if not registry.is_prunable(layer):
      registry.get_prunable_weights(layer)  # raises the descriptive error
    kwargs.setdefault("name", f"prune_{layer.name}")
    kwargs.setdefault("dtype", layer.dtype_policy)
    super().__init__(layer, **kwargs)
    self._call_signature = _call_signature(self.call, layer.call)
    if isinstance(method, dict):
      method = keras.saving.deserialize_keras_object(method)
    self._method = method
    self.prunable_weights = []
    self.masks = []
    self.slots = {}
    self.scalar_slots = {}

  @property
  def method(self):
    """The `PruningMethod` driving this wrapper's masks (None: masks only)."""
    return self._method

  @method.setter
  def method(self, method):
    self._method = method

  def build(self, input_shape=None):
    if not self.layer.built:
      if input_shape is None:
        raise ValueError(f"Cannot build PruneWrapper {self.name!r}: its layer "
                         f"{self.layer.name!r} is not built and no input shape is known.")
      try:
        self.layer.build(input_shape)
      except TypeError as e:
        raise ValueError(
            f"Cannot build layer {self.layer.name!r} ({type(self.layer).__name__}) from the "
            f"wrapper's single input shape {input_shape}: it needs several input shapes. "
            f"Build it first (call it once, or use tfprune.prune on a built model).") from e
    if _layers.unbuilt_sublayers(self.layer) and _is_shape(input_shape):
      # Sublayers built on first call (a lazy layer's): trace the call so that the ones
      # still unbuilt afterwards are those the call never uses (the registry skips them).
      _layers.build_by_tracing(self.layer, (keras.KerasTensor(input_shape),), {})
    try:
      self.prunable_weights = registry.get_prunable_weights(self.layer)
    except AttributeError as e:  # "You must build the layer before accessing `kernel`"
      unbuilt = [l.name for l in _layers.unbuilt_sublayers(self.layer)]
      raise ValueError(
          f"Cannot build PruneWrapper {self.name!r}: layer {self.layer.name!r} "
          f"({type(self.layer).__name__}) is built but its sublayers {unbuilt} are not "
          f"({e}). Give {type(self.layer).__name__} a build(input_shape) that builds its "
          f"sublayers (e.g. self.dense.build(input_shape)), or call the model on data "
          f"before tfprune.prune.") from e
    self.masks = [
        self.add_weight(name=f"{_slot_prefix(w)}_mask", shape=w.shape, dtype=w.dtype,
                        initializer="ones", trainable=False)
        for w in self.prunable_weights]
    self.pruning_step = self.add_weight(name="pruning_step", shape=(), dtype="int64",
                                        initializer="zeros", trainable=False)
    slot_names = self._method.slot_names() if self._method is not None else ()
    self.slots = {
        slot: [self.add_weight(name=f"{_slot_prefix(w)}_{slot}", shape=w.shape,
                               dtype=w.dtype, initializer="zeros", trainable=False)
               for w in self.prunable_weights]
        for slot in slot_names}
    scalar_names = self._method.scalar_slot_names() if self._method is not None else ()
    self.scalar_slots = {
        slot: self.add_weight(name=slot, shape=(), dtype="float32", initializer="zeros",
                              trainable=False)
        for slot in scalar_names}
    # Keras tracks these lists for .weights.h5 but not for tf.train.Checkpoint (custom
    # loops, tf.distribute): give every mask and slot a named checkpoint dependency.
    for w, m in zip(self.prunable_weights, self.masks):
      self._track_trackable(m, name=f"{_slot_prefix(w)}_mask", overwrite=True)
    for slot, variables in self.slots.items():
      for w, v in zip(self.prunable_weights, variables):
        self._track_trackable(v, name=f"{_slot_prefix(w)}_{slot}", overwrite=True)
    for slot, v in self.scalar_slots.items():
      self._track_trackable(v, name=slot, overwrite=True)
    self.built = True

  def masked_weights(self):
    """The effective weights, `weight * mask`, as tensors."""
    return [w * m for w, m in zip(self.prunable_weights, self.masks)]

  def set_masks(self, new_masks, zero_weights=True):
    """Assigns 0/1 masks (arrays or tensors, one per prunable weight).

    Args:
      new_masks: list aligned with `prunable_weights`.
      zero_weights: also set the masked-out weights themselves to 0.

    Raises:
      ValueError: wrong count or shape (naming the layer and expected shapes).
    """
    if len(new_masks) != len(self.masks):
      raise ValueError(f"Layer {self.layer.name!r} has {len(self.masks)} prunable weights, "
                       f"got {len(new_masks)} masks.")
    for w, var, new in zip(self.prunable_weights, self.masks, new_masks):
      new = tf.cast(tf.convert_to_tensor(new), var.dtype)
      if tuple(new.shape) != tuple(var.shape):
        raise ValueError(f"Mask for {w.path} must have shape {tuple(var.shape)}, got "
                         f"{tuple(new.shape)}.")
      var.assign(new)
      if zero_weights:
        w.assign(w * new)

  def stripped_weights(self):
    """The inner layer's weights (NumPy, in `layer.weights` order) as `strip` bakes them:
    masked weights hold exact zeros. Subclasses that change the computation (e.g. the
    L0 gate wrapper) fold their extra state in here."""
    masked = {id(w): (w * m).numpy() for w, m in zip(self.prunable_weights, self.masks)}
    return [masked.get(id(v), v.numpy()) for v in self.layer.weights]

  def state_mapping(self, training):
    """(variable, effective value) pairs the inner layer computes with: W -> W * mask.

    Subclasses that change the computation (e.g. the L0 gate wrapper) override this.
    """
    del training
    return [(w, w * m) for w, m in zip(self.prunable_weights, self.masks)]

  def __call__(self, *args, **kwargs):
    if not args and "inputs" not in kwargs:
      # The inner layer called with its first argument by keyword (keras_hub XLNet's
      # `content_stream=`): pass it on as the wrapper's `inputs`.
      first = next(iter(inspect.signature(self.layer.call).parameters), None)
      if first in kwargs:
        args = (kwargs.pop(first),)
    return super().__call__(*args, **kwargs)

  def call(self, inputs, *args, training=None, mask=None, **kwargs):
    if training and self._method is not None:
      self._method.check_training(self)  # at trace time: fit without the callback fails
    mapping = self.state_mapping(training)
    if "training" in inspect.signature(self.layer.call).parameters:
      kwargs["training"] = training
    if mask is not None and self.layer._call_has_mask_arg:  # pylint: disable=protected-access
      kwargs["mask"] = mask  # e.g. the Embedding(mask_zero=True) mask into an LSTM
    with keras.StatelessScope(state_mapping=mapping):
      outputs = self.layer(inputs, *args, **kwargs)
    if training and self._method is not None:
      penalty = self._method.regularization(self)
      if penalty is not None:
        self.add_loss(penalty)
    return outputs

  def _inner_kwargs(self, kwargs, mask):
    kwargs = {k: v for k, v in kwargs.items() if k != "training"}
    if mask is not None and self.layer._call_has_mask_arg:  # pylint: disable=protected-access
      kwargs["mask"] = mask
    return kwargs

  def compute_output_spec(self, inputs, *args, training=None, mask=None, **kwargs):
    """The inner layer's output spec (its `compute_output_shape` when it has one)."""
    del training
    return self.layer.compute_output_spec(inputs, *args, **self._inner_kwargs(kwargs, mask))

  def compute_output_shape(self, input_shape):
    return self.layer.compute_output_shape(input_shape)

  def compute_mask(self, inputs, previous_mask=None):
    """The inner layer's output mask (an `Embedding(mask_zero=True)` keeps masking)."""
    if not self.layer.supports_masking:
      return None
    return self.layer.compute_mask(inputs, previous_mask)

  def get_config(self):
    config = super().get_config()
    if self.layer.built:
      config["layer_build_config"] = _layers.build_config(self.layer)
      # Built by __init__ from `layer_build_config` (shapes as tuples, then traced):
      # Keras would build it from the JSON lists first (keras_hub builds reject them).
      config["layer"].pop("build_config", None)
    recorded = _layers.recorded_call(self)
    if recorded is not None and _layers.children(self.layer):
      spec = _layers.spec_to_config(recorded)
      if spec is not None:
        config["layer_call_spec"] = spec
    if self._method is not None:
      config["method"] = keras.saving.serialize_keras_object(self._method)
    return config


def find_wrappers(model: keras.Model) -> list[PruneWrapper]:
  """All `PruneWrapper`s of a model (nested models included), in layer order, unique."""
  return [l for l in all_layers(model) if isinstance(l, PruneWrapper)]


def get_method(model: keras.Model):
  """The pruning method of a pruned model, bound to it (also after `load_model`).

  Raises:
    ValueError: the model has no `PruneWrapper`, or its wrappers carry no method.
  """
  wrappers = find_wrappers(model)
  if not wrappers:
    raise ValueError(f"Model {model.name!r} has no PruneWrapper layers: call "
                     f"tfprune.prune(model, ...) first.")
  method = wrappers[0].method
  if method is None:
    raise ValueError(f"The wrappers of model {model.name!r} carry no method (they were "
                     f"made with method=None).")
  if method.model is not model:
    method.bind(model)  # after load_model each wrapper holds its own copy: share one
  return method
