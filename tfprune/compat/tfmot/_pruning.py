"""TFMOT's pruning API (`tfmot.sparsity.keras`) implemented on tfprune, for Keras 3.

TFMOT (TensorFlow Model Optimization Toolkit) runs only on Keras 2 (`tf_keras`). This
module gives its pruning API the same names, arguments and training-time behaviour on
Keras 3, on top of `tfprune.PruneWrapper` (masked computation, saving, `strip`):

  * `prune_low_magnitude(to_prune, pruning_schedule=ConstantSparsity(0.5, 0),
    block_size=(1, 1), block_pooling_type="AVG", pruning_policy=None,
    sparsity_m_by_n=None, **kwargs)` wraps a layer, a list of layers, or every prunable
    layer of a Sequential/Functional model (a copy: the original keeps its layers);
  * each wrapper has its own schedule and pattern, so per-layer configurations through
    `keras.models.clone_model(model, clone_function=...)` work as in TFMOT;
  * `UpdatePruningStep` sets every wrapper's step from the optimizer's iteration count
    before each batch and updates the masks on the schedule's pruning steps; training a
    wrapped layer without it raises, naming `UpdatePruningStep`, as TFMOT does;
  * the mask maths are TFMOT's magnitude pruning (Zhu & Gupta 2017, "To prune, or not
    to prune"): per tensor keep the `round((1 - s) * n)` largest |w| (ties at the
    threshold kept), optionally pooled over `block_size` blocks (AVG or MAX) of 2-D
    weights, or an M-by-N pattern (`sparsity_m_by_n=(m, n)`: m zeros in every n
    consecutive weights along the input axis).

Differences from TFMOT are listed in docs/migration.md.
"""
import abc
import os
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

import tfprune
from tfprune import masks as masks_lib
from tfprune import registry
from tfprune import schedules

_CALLBACK_ERROR = (
    "Prune() wrapper requires the UpdatePruningStep callback to be provided during "
    "training. Please add it as a callback to your model.fit call: "
    "callbacks=[tfmot.sparsity.keras.UpdatePruningStep()] (in a custom training loop, "
    "call its on_train_begin() once and on_train_batch_begin() before every step).")
POOLING_TYPES = ("AVG", "MAX")
# Layers TFMOT accepts but has nothing to prune in: returned unwrapped.
_NOTHING_TO_PRUNE = (
    keras.layers.BatchNormalization, keras.layers.LayerNormalization,
    keras.layers.GroupNormalization, keras.layers.UnitNormalization,
)


# ------------------------------------------------------------------------ schedules
PruningSchedule = schedules.PruningSchedule
ConstantSparsity = schedules.ConstantSparsity
PolynomialDecay = schedules.PolynomialDecay
PrunableLayer = tfprune.PrunableLayer


# ------------------------------------------------------------------------ policies
class PruningPolicy(abc.ABC):
  """Which layers `prune_low_magnitude(model, pruning_policy=...)` wraps (TFMOT's API).

  Subclass it and implement both methods, as in TFMOT.
  """

  @abc.abstractmethod
  def allow_pruning(self, layer: keras.layers.Layer) -> bool:
    """True if `layer` should be wrapped."""

  @abc.abstractmethod
  def ensure_model_supports_pruning(self, model: keras.Model) -> None:
    """Raises ValueError if `model` cannot be pruned under this policy."""


class PruneForLatencyOnXNNPack(PruningPolicy):
  """Prunes only 1x1 Conv2D layers (stride 1, no dilation, no groups), as TFMOT's policy.

  TFMOT also walks the graph to check that everything between the first 3x3 stride-2
  convolution and the final `GlobalAveragePooling2D(keepdims=True)` is an op XNNPACK's
  sparse inference accepts. tfprune does not repeat that walk: it checks only that the
  model has at least one such 1x1 convolution. (LiteRT reaches XNNPACK's sparse path only
  through the stock converter's sparse CONV_2D weights; tfprune's exporter stores sparse
  conv weights with DENSIFY: smaller files, dense speed. See docs/export.md.)
  """

  def allow_pruning(self, layer):
    return (type(layer) is keras.layers.Conv2D and  # pylint: disable=unidiomatic-typecheck
            tuple(layer.kernel_size) == (1, 1) and tuple(layer.strides) == (1, 1) and
            tuple(layer.dilation_rate) == (1, 1) and getattr(layer, "groups", 1) == 1)

  def ensure_model_supports_pruning(self, model):
    if not any(self.allow_pruning(l) for l in _all_layers(model)):
      raise ValueError(f"PruneForLatencyOnXNNPack: model {model.name!r} has no 1x1 Conv2D "
                       f"layer (stride 1, no dilation, groups=1) to prune.")


# ------------------------------------------------------------------------ the masks
def _check_pattern(block_size, block_pooling_type, sparsity_m_by_n):
  block = tuple(int(b) for b in block_size)
  if len(block) != 2 or min(block) < 1:
    raise ValueError(f"block_size must be two positive integers (height, width), got "
                     f"{block_size!r}.")
  if str(block_pooling_type).upper() not in POOLING_TYPES:
    raise ValueError(f"block_pooling_type must be one of {POOLING_TYPES}, got "
                     f"{block_pooling_type!r}.")
  m_by_n = None
  if sparsity_m_by_n is not None:
    m_by_n = tuple(int(v) for v in sparsity_m_by_n)
    if len(m_by_n) != 2 or not 0 < m_by_n[0] < m_by_n[1]:
      raise ValueError(f"sparsity_m_by_n must be (m, n) with 0 < m < n (m zeros in every "
                       f"n consecutive weights, e.g. (2, 4)), got {sparsity_m_by_n!r}.")
    if block != (1, 1):
      raise ValueError(f"sparsity_m_by_n={m_by_n} cannot be combined with "
                       f"block_size={block}; use block_size=(1, 1).")
  return block, str(block_pooling_type).upper(), m_by_n


def _magnitude_mask(scores, sparsity):
  """Keeps the `round((1 - s) * n)` largest scores; ties with the threshold are kept."""
  flat = tf.reshape(scores, [-1])
  size = tf.size(flat)
  k = tf.cast(tf.round(tf.cast(size, tf.float32) * (1.0 - sparsity)), tf.int32)
  k = tf.clip_by_value(k, 0, size)
  top, _ = tf.math.top_k(flat, k=size)
  threshold = tf.cond(k > 0, lambda: tf.gather(top, tf.maximum(k - 1, 0)),
                      lambda: tf.constant(np.inf, scores.dtype))
  return tf.cast(scores >= threshold, scores.dtype)


def _block_mask(scores, sparsity, block, pooling):
  """Magnitude mask over (height, width) blocks of a 2-D weight, pooled by AVG or MAX.

  Edge blocks that overhang the weight are pooled over their entries inside it only.
  """
  rows, cols = scores.shape
  bh, bw = block
  pad_r, pad_c = -rows % bh, -cols % bw
  padded = tf.pad(scores, [[0, pad_r], [0, pad_c]])
  shape = [(rows + pad_r) // bh, bh, (cols + pad_c) // bw, bw]
  blocks = tf.reshape(padded, shape)
  if pooling == "MAX":
    pooled = tf.reduce_max(blocks, axis=[1, 3])
  else:
    ones = tf.reshape(tf.pad(tf.ones_like(scores), [[0, pad_r], [0, pad_c]]), shape)
    pooled = tf.reduce_sum(blocks, axis=[1, 3]) / tf.reduce_sum(ones, axis=[1, 3])
  block_mask = _magnitude_mask(pooled, sparsity)
  full = tf.repeat(tf.repeat(block_mask, bh, axis=0), bw, axis=1)
  return full[:rows, :cols]


# ------------------------------------------------------------------------ the wrapper
@keras.saving.register_keras_serializable(package="tfprune")
class PruneLowMagnitude(tfprune.PruneWrapper):
  """A `tfprune.PruneWrapper` carrying TFMOT's per-layer pruning configuration.

  Args:
    layer: the Keras layer to prune.
    pruning_schedule: a `PruningSchedule` (default `ConstantSparsity(0.5, 0)`).
    block_size: (height, width) blocks of 2-D weights pruned together; (1, 1) prunes
      single weights.
    block_pooling_type: "AVG" or "MAX": how a block's magnitudes are pooled.
    sparsity_m_by_n: optional (m, n): m zeros in every n consecutive weights along the
      input axis (rank-2 and rank-4 weights); the schedule then only sets when.
    **kwargs: Keras layer arguments (name, ...).
  """

  def __init__(self, layer, pruning_schedule=None, block_size=(1, 1),
               block_pooling_type="AVG", sparsity_m_by_n=None, **kwargs):
    schedule = schedules.deserialize(pruning_schedule)
    if schedule is None:
      schedule = ConstantSparsity(0.5, 0)
    if not isinstance(schedule, PruningSchedule):
      raise ValueError(f"pruning_schedule must be a tfmot.sparsity.keras.PruningSchedule "
                       f"(ConstantSparsity, PolynomialDecay), got "
                       f"{type(schedule).__name__}.")
    self.block_size, self.block_pooling_type, self.sparsity_m_by_n = _check_pattern(
        block_size, block_pooling_type, sparsity_m_by_n)
    kwargs.setdefault("name", f"prune_low_magnitude_{layer.name}")
    # A Sequential model builds itself from its first layer's `input_shape=`: pass the
    # inner layer's on, so `Sequential([prune_low_magnitude(Dense(.., input_shape=..))])`
    # is built as in TFMOT.
    input_shape = getattr(layer, "_input_shape_arg", None)
    if input_shape is not None and "input_shape" not in kwargs:
      kwargs["input_shape"] = input_shape
    super().__init__(layer, method=None, **kwargs)
    self.pruning_schedule = schedule
    # Set by UpdatePruningStep.on_train_begin; checked when a training call is traced
    # (the step check below cannot fire under XLA, which drops assertions).
    self.step_callback_attached = False

  def build(self, input_shape=None):
    super().build(input_shape)
    if self.sparsity_m_by_n is not None or self.block_size != (1, 1):
      for w in self.prunable_weights:
        rank = len(w.shape)
        if self.sparsity_m_by_n is not None and rank not in (2, 4):
          raise ValueError(f"Layer {self.layer.name!r}: sparsity_m_by_n needs rank-2 or "
                           f"rank-4 weights (Dense, Conv2D); {w.path} has shape "
                           f"{tuple(w.shape)}.")
        if self.block_size != (1, 1) and len([d for d in w.shape if d != 1]) > 2:
          raise ValueError(f"Layer {self.layer.name!r}: block_size={self.block_size} "
                           f"needs 2-D weights (as in TFMOT); {w.path} has shape "
                           f"{tuple(w.shape)}. Use block_size=(1, 1) for this layer.")
    # -1 until UpdatePruningStep sets it: training without the callback raises.
    self.pruning_step.assign(-1)

  def call(self, inputs, *args, training=None, **kwargs):
    if training:
      if not self.step_callback_attached:
        raise ValueError(f"Layer {self.name!r}: {_CALLBACK_ERROR}")
      tf.debugging.assert_greater_equal(self.pruning_step, tf.constant(0, tf.int64),
                                        message=_CALLBACK_ERROR)
    return super().call(inputs, *args, training=training, **kwargs)

  def compute_masks(self, sparsity):
    """New 0/1 masks for the current weights at `sparsity` (TFMOT's maths)."""
    out = []
    for w, m in zip(self.prunable_weights, self.masks):
      scores = tf.abs(tf.convert_to_tensor(w) * tf.convert_to_tensor(m))
      if self.sparsity_m_by_n is not None:
        zeros, group = self.sparsity_m_by_n
        out.append(masks_lib.nm_mask(scores, n=group - zeros, m=group))
      elif self.block_size != (1, 1):
        squeezed = tf.reshape(scores, [d for d in w.shape if d != 1] or [1, 1])
        if len(squeezed.shape) == 1:
          squeezed = squeezed[:, None]
        mask = _block_mask(squeezed, sparsity, self.block_size, self.block_pooling_type)
        out.append(tf.reshape(mask, w.shape))
      else:
        out.append(_magnitude_mask(scores, sparsity))
    return out

  def update_step(self, step):
    """Sets the step; on a pruning step of the schedule, recomputes the masks."""
    self.pruning_step.assign(step)
    should_prune, sparsity = self.pruning_schedule(step)
    if bool(should_prune):
      self.set_masks(self.compute_masks(tf.cast(sparsity, tf.float32)))

  def apply_masks(self):
    """weights <- weights * masks (TFMOT re-masks at every epoch end)."""
    for w, m in zip(self.prunable_weights, self.masks):
      w.assign(w * m)

  def get_config(self):
    config = super().get_config()
    config.update({
        "pruning_schedule": keras.saving.serialize_keras_object(self.pruning_schedule),
        "block_size": list(self.block_size),
        "block_pooling_type": self.block_pooling_type,
        "sparsity_m_by_n": (list(self.sparsity_m_by_n) if self.sparsity_m_by_n
                            else None),
    })
    config.pop("method", None)
    return config


def _all_layers(model):
  """Every layer of `model`, nested models' layers included, in order."""
  found = []
  for layer in getattr(model, "layers", []):
    found.append(layer)
    if isinstance(layer, keras.Model):
      found += _all_layers(layer)
  return found


def _wrappers(model):
  return [l for l in _all_layers(model) if isinstance(l, PruneLowMagnitude)]


# ------------------------------------------------------------------------ the API
def _is_graph_model(model):
  return isinstance(model, keras.Sequential) or (
      isinstance(model, keras.Model) and type(model).__name__ == "Functional")


def _wrap(layer, params):
  """The wrapped layer, or `layer` itself when it has nothing to prune."""
  if isinstance(layer, tfprune.PruneWrapper):
    return layer
  if isinstance(layer, keras.layers.InputLayer):
    return layer
  if registry.is_prunable(layer):
    return PruneLowMagnitude(layer, **params)
  if isinstance(layer, _NOTHING_TO_PRUNE) or (layer.built and not layer.weights) or (
      not layer.built and _weightless_type(layer)):
    return layer
  raise ValueError(
      f"Layer {layer.name!r} ({type(layer).__name__}) has weights tfprune does not know "
      f"how to prune. Prunable: {', '.join(registry.supported_layer_names())}. "
      f"Make it a tfmot.sparsity.keras.PrunableLayer (return its prunable weights from "
      f"get_prunable_weights()), or leave it out of pruning with a clone_function.")


def _weightless_type(layer):
  L = keras.layers
  weightless = (L.Flatten, L.Reshape, L.Dropout, L.Activation, L.ReLU, L.Softmax,
                L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D, L.AveragePooling1D,
                L.AveragePooling2D, L.AveragePooling3D, L.GlobalAveragePooling1D,
                L.GlobalAveragePooling2D, L.GlobalAveragePooling3D,
                L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D,
                L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D, L.Add, L.Concatenate,
                L.Multiply, L.Subtract, L.Average, L.Maximum, L.Minimum, L.Permute,
                L.RepeatVector, L.UpSampling1D, L.UpSampling2D, L.UpSampling3D,
                L.Cropping1D, L.Cropping2D, L.Cropping3D, L.LeakyReLU, L.ELU,
                L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D,
                L.GaussianNoise, L.GaussianDropout, L.AlphaDropout, L.Rescaling)
  return isinstance(layer, weightless)


def prune_low_magnitude(
    to_prune: "keras.Model | keras.layers.Layer | list[keras.layers.Layer]",
    pruning_schedule: "PruningSchedule | None" = None,
    block_size: Sequence[int] = (1, 1),
    block_pooling_type: str = "AVG",
    pruning_policy: "PruningPolicy | None" = None,
    sparsity_m_by_n: "Sequence[int] | None" = None,
    **kwargs: Any,
) -> "keras.Model | keras.layers.Layer | list[keras.layers.Layer]":
  """Wraps a layer, a list of layers or a model for magnitude pruning (TFMOT's API).

  Gradual magnitude pruning after Zhu & Gupta 2017, "To prune, or not to prune". Train
  the result with the `UpdatePruningStep` callback, then `strip_pruning` it.

  Args:
    to_prune: a Keras layer, a list of layers, or a Sequential / Functional model. A
      model is copied (layers re-created from their configs, weights copied); every
      layer tfprune can prune is wrapped, layers without weights stay as they are.
    pruning_schedule: a `PruningSchedule`; default `ConstantSparsity(0.5, 0)` (50% from
      step 0, every 100 steps), as TFMOT.
    block_size: (height, width) of the blocks of 2-D weights pruned together.
    block_pooling_type: "AVG" or "MAX".
    pruning_policy: a `PruningPolicy` (models only): wraps only the layers it allows,
      after `ensure_model_supports_pruning(model)`.
    sparsity_m_by_n: optional (m, n) pattern: m zeros in every n consecutive weights.
    **kwargs: Keras layer arguments for the wrapper (layers only; ignored for models).

  Returns:
    The wrapped layer (`PruneLowMagnitude`), list of layers, or pruned model copy.

  Raises:
    ValueError: unsupported object, subclassed model, or a layer with unprunable weights.
  """
  params = {"pruning_schedule": pruning_schedule, "block_size": block_size,
            "block_pooling_type": block_pooling_type, "sparsity_m_by_n": sparsity_m_by_n}
  _check_pattern(block_size, block_pooling_type, sparsity_m_by_n)
  if pruning_policy is not None and not isinstance(to_prune, keras.Model):
    raise ValueError("pruning_policy applies to a whole model: pass a Sequential or "
                     "Functional model, or drop pruning_policy when pruning a layer.")
  if isinstance(to_prune, list):
    return [_wrap(layer, params) for layer in to_prune]
  if isinstance(to_prune, keras.Model):
    if not _is_graph_model(to_prune):
      raise ValueError(
          f"prune_low_magnitude supports Sequential and Functional models; "
          f"{to_prune.name!r} is a subclassed model ({type(to_prune).__name__}). Wrap "
          f"its layers with prune_low_magnitude(layer) inside its __init__ instead.")
    if pruning_policy is not None:
      pruning_policy.ensure_model_supports_pruning(to_prune)
    return _prune_model(to_prune, params, pruning_policy)
  if isinstance(to_prune, keras.layers.Layer):
    wrapped = _wrap(to_prune, params)
    if wrapped is not to_prune and kwargs:
      raise ValueError(f"Pass Keras layer arguments {sorted(kwargs)} when creating the "
                       f"layer, or call PruneLowMagnitude(layer, **kwargs) directly.")
    return wrapped
  raise ValueError(
      f"`prune_low_magnitude` can only prune a keras.Sequential model, a Functional "
      f"model, a keras.layers.Layer or a list of layers; got {type(to_prune).__name__}.")


def _prune_model(model, params, policy):
  """A copy of `model` with its prunable layers wrapped (nested models too)."""
  pairs = []

  def clone_function(layer):
    new = layer.__class__.from_config(layer.get_config())
    if layer.built and not new.built:
      build_config = layer.get_build_config()
      if build_config:
        new.build_from_config(build_config)
    if policy is None or policy.allow_pruning(layer):
      wrapped = _wrap(new, params)
    else:
      wrapped = new
    pairs.append((layer, new))
    return wrapped

  pruned = keras.models.clone_model(model, clone_function=clone_function, recursive=True)
  for old, new in pairs:
    if old.weights:
      new.set_weights(old.get_weights())
  return pruned


def strip_pruning(
    to_strip: "keras.Model | keras.layers.Layer") -> "keras.Model | keras.layers.Layer":
  """Removes the pruning wrappers: a plain Keras model (or layer) with exact zeros.

  Args:
    to_strip: a pruned Sequential / Functional model, or a wrapped layer.

  Returns:
    For a model, a copy without wrappers (`tfprune.strip`); for a wrapped layer, its
    inner layer with the masks applied to its weights.
  """
  if isinstance(to_strip, keras.Model):
    return tfprune.strip(to_strip)
  if isinstance(to_strip, tfprune.PruneWrapper):
    to_strip.layer.set_weights(to_strip.stripped_weights())
    return to_strip.layer
  if isinstance(to_strip, keras.layers.Layer):
    return to_strip
  raise ValueError(f"Expected `to_strip` to be a keras.Model or keras.layers.Layer, got "
                   f"{type(to_strip).__name__}.")


def prune_scope() -> keras.utils.CustomObjectScope:
  """A `keras.utils.custom_object_scope` with the pruning wrapper (for loading files).

  Loading `.keras` files needs no scope (the wrapper is registered); TFMOT code that
  loads inside this scope keeps working.
  """
  return keras.utils.custom_object_scope({
      "PruneLowMagnitude": PruneLowMagnitude,
      "tfprune>PruneLowMagnitude": PruneLowMagnitude,
      "ConstantSparsity": ConstantSparsity, "PolynomialDecay": PolynomialDecay})


# ------------------------------------------------------------------------ callbacks
class UpdatePruningStep(keras.callbacks.Callback):
  """Sets each wrapper's pruning step before every batch and prunes on schedule.

  Required when training a model made with `prune_low_magnitude` (TFMOT's contract):
  the step starts at the optimizer's iteration count at `on_train_begin` and advances by
  one per batch; at the end of every epoch the masked weights are zeroed again.
  """

  def __init__(self):
    super().__init__()
    self.step = 0

  def on_train_begin(self, logs=None):
    optimizer = getattr(self.model, "optimizer", None)
    iterations = getattr(optimizer, "iterations", None)
    self.step = int(iterations.numpy()) if iterations is not None else 0
    spe = getattr(self.model, "steps_per_execution", 1)
    spe = int(spe.numpy() if hasattr(spe, "numpy") else spe or 1)
    if spe != 1:
      raise ValueError("UpdatePruningStep needs steps_per_execution=1 in model.compile "
                       "(the pruning step advances once per batch).")
    wrappers = _wrappers(self.model)
    if not wrappers:
      raise ValueError(f"Model {self.model.name!r} has no prune_low_magnitude layers: "
                       f"call tfmot.sparsity.keras.prune_low_magnitude first.")
    if not all(w.step_callback_attached for w in wrappers):
      # A training function traced without this callback raised (or was never traced):
      # start from a fresh one, so a `fit` retried with the callback works.
      for wrapper in wrappers:
        wrapper.step_callback_attached = True
      if hasattr(self.model, "make_train_function"):
        self.model.make_train_function(force=True)

  def on_train_batch_begin(self, batch, logs=None):
    for wrapper in _wrappers(self.model):
      wrapper.update_step(self.step)
    self.step += 1

  def on_epoch_end(self, batch, logs=None):  # TFMOT's argument name
    for wrapper in _wrappers(self.model):
      wrapper.apply_masks()


class PruningSummaries(keras.callbacks.TensorBoard):
  """TensorBoard callback that also logs each pruned weight's sparsity (TFMOT's API).

  Writes `<layer>/<weight>/sparsity` scalars and the schedule's target sparsity under
  `log_dir/train` at every epoch end, next to Keras' usual TensorBoard logs.
  """

  def __init__(self, log_dir, update_freq="epoch", **kwargs):
    super().__init__(log_dir=log_dir, update_freq=update_freq, **kwargs)
    self._pruning_writer = None

  def on_epoch_end(self, epoch, logs=None):
    super().on_epoch_end(epoch, logs)
    if self._pruning_writer is None:
      self._pruning_writer = tf.summary.create_file_writer(
          os.path.join(self.log_dir, "train"))
    optimizer = getattr(self.model, "optimizer", None)
    step = int(optimizer.iterations.numpy()) if optimizer is not None else int(epoch)
    with self._pruning_writer.as_default(step=step):
      for wrapper in _wrappers(self.model):
        for w, m in zip(wrapper.prunable_weights, wrapper.masks):
          name = f"{wrapper.name}/{w.path.split('/')[-1]}"
          tf.summary.scalar(f"{name}/sparsity", 1.0 - float(tf.reduce_mean(m)))
        tf.summary.scalar(f"{wrapper.name}/target_sparsity",
                          float(wrapper.pruning_schedule(max(step - 1, 0))[1]))
    self._pruning_writer.flush()

