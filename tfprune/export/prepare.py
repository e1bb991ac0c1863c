"""Makes a Keras model convertible: unrolled recurrent layers, float32 compute.

Two Keras idioms do not convert as they are (docs/export.md, "Recurrent layers"
and "Converting Keras 3 models"):

* `LSTM` / `GRU` / `SimpleRNN` (plain, masked, `Bidirectional`) lower to
  TensorList ops that only Flex runs. Rebuilt with `unroll=True` they convert
  with builtin ops and compute the same function, masks included; unrolling
  needs a static time dimension.
* A `mixed_float16` / `mixed_bfloat16` model makes the converter emit TF ops
  without builtin kernels (`'tf.MatMul' op is neither a custom op nor a flex
  op`). The exporter computes in float32: same weights, float32 dtype policy.

* Keras augmentation layers (`RandomFlip`, `RandomRotation`, ... : `AUGMENTATION`)
  are identities at inference, but their graph keeps the random ops
  (StatelessRandom*, ImageProjectiveTransform) that TFLite lacks. The exporter
  replaces each with a `keras.layers.Identity` of the same name; the file is verified
  against the original `model(x, training=False)` like every export.

`prepare` clones the model with these changes where needed (sharing every layer
that needs none) and says what it changed. The input model is not modified.
"""
import numpy as np

from tfprune import _layers
from tfprune.export.errors import ExportError

_FLOAT32 = "float32"
# keras.layers preprocessing layers that return their input unchanged at inference
# (measured with Keras 3.15: max |layer(x, training=False) - x| = 0). RandomCrop is not
# one: at inference it crops / resizes to its target size.
AUGMENTATION = (
    "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomContrast",
    "RandomBrightness", "RandomHue", "RandomSaturation", "RandomSharpness", "RandomShear",
    "RandomColorDegeneration", "RandomColorJitter", "RandomGrayscale", "RandomInvert",
    "RandomPosterization", "RandomPerspective", "RandomElasticTransform", "RandomErasing",
    "RandomGaussianBlur", "AugMix", "RandAugment", "CutMix", "MixUp", "Solarization")


def _is_augmentation(layer):
  import keras  # pylint: disable=g-import-not-at-top
  return any(isinstance(layer, cls) for cls in
             (getattr(keras.layers, n, None) for n in AUGMENTATION) if cls is not None)


def augmentation_layers(model):
  """The inference-identity augmentation layers of `model` (`AUGMENTATION`)."""
  return [l for l in _layers.all_layers(model) if _is_augmentation(l)]


def _policy_name(value):
  if isinstance(value, str):
    return value
  if isinstance(value, dict):
    return (value.get("config") or {}).get("name")
  return getattr(value, "name", None)


def _rewrite(config, unroll, float32, changes):
  """Recursively sets `unroll=True` on RNN configs and float32 dtype policies."""
  if isinstance(config, list):
    return [_rewrite(c, unroll, float32, changes) for c in config]
  if not isinstance(config, dict):
    return config
  out = {}
  for key, value in config.items():
    if key == "unroll" and unroll and value is False:
      out[key] = True
      changes.add("unroll")
    elif key == "dtype" and float32 and _policy_name(value) not in (None, _FLOAT32):
      out[key] = _FLOAT32
      changes.add("float32")
    else:
      out[key] = _rewrite(value, unroll, float32, changes)
  return out


def _is_recurrent(layer):
  import keras  # pylint: disable=g-import-not-at-top
  if isinstance(layer, keras.layers.RNN):
    return True
  inner = [getattr(layer, a, None) for a in ("layer", "forward_layer", "backward_layer")]
  return any(isinstance(l, keras.layers.RNN) for l in inner if l is not None)


def _time_dim(layer):
  """The static time dimension of a recurrent layer's input (None if dynamic or unknown)."""
  import keras  # pylint: disable=g-import-not-at-top
  try:
    tensors = keras.tree.flatten(layer.input)
  except (AttributeError, ValueError, RuntimeError):
    return "unknown"
  if not tensors or len(tensors[0].shape) < 2:
    return "unknown"
  return tensors[0].shape[1]


def _non_float32(model):
  """Layers whose compute dtype is not float32 (mixed precision)."""
  out = []
  for layer in _layers.all_layers(model):
    policy = getattr(layer, "dtype_policy", None)
    compute = getattr(policy, "compute_dtype", _FLOAT32)
    if compute in ("float16", "bfloat16"):
      out.append(layer)
  return out


def recurrent_layers(model):
  """Recurrent layers (`keras.layers.RNN` or a wrapper of one) that are not unrolled."""
  out = []
  for layer in _layers.all_layers(model):
    if not _is_recurrent(layer):
      continue
    rnns = [layer] if hasattr(layer, "unroll") else [
        getattr(layer, a) for a in ("layer", "forward_layer", "backward_layer")
        if getattr(layer, a, None) is not None]
    if any(not getattr(r, "unroll", True) for r in rnns):
      out.append(layer)
  # A wrapper's inner layers are listed too by all_layers; keep the outermost.
  inner = {id(getattr(l, a)) for l in out for a in ("layer", "forward_layer", "backward_layer")
           if getattr(l, a, None) is not None}
  return [l for l in out if id(l) not in inner]


def prepare(model):
  """A convertible version of `model` and what was changed.

  Args:
    model: a Keras 3 model (Functional or Sequential when it needs changes).

  Returns:
    `(model, notes, float32_clone)`: the model to convert (`model` itself when
    nothing needs changing; a clone with unrolled recurrent layers, float32 policies,
    augmentation layers as identities), one sentence per change, and whether the compute
    dtype was changed (the clone then is the verification reference).

  Raises:
    ExportError: a recurrent layer with a dynamic time dimension (names the
      layer and says to give the Input a fixed sequence length), or a model
      that needs changes but cannot be cloned (subclassed).
  """
  import keras  # pylint: disable=g-import-not-at-top
  rnns = recurrent_layers(model)
  for layer in rnns:
    steps = _time_dim(layer)
    if steps is None:
      shape = tuple(keras.tree.flatten(layer.input)[0].shape)
      raise ExportError(
          f"layer '{layer.name}' ({type(layer).__name__}) has a dynamic time dimension (input "
          f"shape {shape}): TFLite has no builtin op for a Keras recurrent loop, so the exporter "
          f"unrolls it (unroll=True), which needs a fixed number of steps. Give the model's "
          f"Input a fixed sequence length (e.g. keras.Input((T,), dtype='int32') for token ids "
          f"padded to T), copy the weights over, and export again.")
  low = _non_float32(model)
  aug = augmentation_layers(model)
  if not rnns and not low and not aug:
    return model, [], False
  pairs = []

  def clone_layer(layer):
    if _is_augmentation(layer):
      return keras.layers.Identity(name=layer.name)
    changes = set()
    config = _rewrite(layer.get_config(), unroll=_is_recurrent(layer), float32=bool(low),
                      changes=changes)
    if not changes:
      return layer
    new = layer.__class__.from_config(config)
    pairs.append((layer, new))
    return new

  previous = keras.config.dtype_policy()
  try:
    keras.config.set_dtype_policy(_FLOAT32)
    try:
      clone = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    except Exception as e:  # pylint: disable=broad-except
      needs = [w for w, on in (("unrolled recurrent layers", rnns), ("float32 compute", low),
                               ("its augmentation layers replaced by their inference "
                                "identity", aug)) if on]
      raise ExportError(
          f"model '{model.name}' needs {' and '.join(needs)} to convert, "
          f"but cannot be cloned ({type(e).__name__}: {e}). Build it as a Functional or "
          f"Sequential model (subclassed models cannot be rebuilt layer by layer).") from e
  finally:
    keras.config.set_dtype_policy(previous)
  for old, new in pairs:
    weights = [np.asarray(w, np.float32) if np.issubdtype(np.asarray(w).dtype, np.floating)
               else np.asarray(w) for w in old.get_weights()]
    new.set_weights(weights)
  notes = []
  if rnns:
    names = ", ".join(f"'{l.name}' ({type(l).__name__})" for l in rnns)
    notes.append(f"unrolled recurrent layer(s) {names} (unroll=True, same weights): TFLite "
                 f"has no builtin op for the Keras recurrent loop")
  if low:
    policies = sorted({l.dtype_policy.name for l in low})
    notes.append(f"computing in float32: {len(low)} layer(s) use the {'/'.join(policies)} "
                 f"dtype policy, which the converter cannot convert; exported with the same "
                 f"weights and a float32 policy")
  if aug:
    names = ", ".join(f"'{l.name}' ({type(l).__name__})" for l in aug)
    notes.append(f"exported the augmentation layer(s) {names} as their inference identity "
                 f"(keras.layers.Identity): they only act in training, and their random "
                 f"ops have no TFLite kernel; verified against model(x, training=False)")
  return clone, notes, bool(low)
