"""Which weights of which Keras layers can be pruned.

Built-in layers map to the attribute names of their prunable kernels. Custom layers opt
in by subclassing `PrunableLayer` and returning their prunable variables.

A layer that is not itself in the table but holds prunable layers - `TimeDistributed`,
`Bidirectional`, `keras.layers.RNN(cell)`, a custom block with a Dense inside - is
prunable as a whole: its prunable weights are those of the layers inside it, so one
wrapper around it masks the inner kernels (its call is unchanged). Keras models are not
containers here: `tfprune.prune` rebuilds nested Functional / Sequential models layer by
layer.
"""
import abc

import keras

from tfprune import layer_types

# The prunable weights of built-in layers are the `weights` of their `tfprune.layer_types`
# entry, looked up along the layer's class hierarchy (a subclass of Dense is a Dense).
# Layers of other libraries recognised by a variable attribute, not by class (tfprune
# does not import them): keras_hub's `PositionEmbedding` holds `position_embeddings`.
_DUCK = ("position_embeddings",)

# A trainable weight of this rank or more that `tfprune.prune` leaves dense is listed
# (`unpruned_weights`); vectors (norm scales) and biases (named `*bias`, EinsumDense's
# are matrices) are left out silently.
LISTED_RANK = 2


class PrunableLayer(abc.ABC):
  """Mix-in for custom layers: say which of your variables tfprune may prune.

  Example:
    class MyLayer(keras.layers.Layer, tfprune.PrunableLayer):
      def get_prunable_weights(self):
        return [self.w]
  """

  @abc.abstractmethod
  def get_prunable_weights(self):
    """Returns the list of `keras.Variable`s to prune (built variables)."""


def _kernels_of(layer, names):
  """The variables behind attribute `names` (Keras 3 keeps some as `_name` variables);
  a name ending in `?` is optional (`reverse_embeddings` exists only when untied);
  `*/kernel` is every trainable `kernel` of the layer's sublayers (MultiHeadAttention)."""
  found = []
  for n in names:
    if n == "*/kernel":
      found += [v for v in layer.trainable_weights if v.path.split("/")[-1] == "kernel"]
      continue
    optional, n = n.endswith("?"), n.rstrip("?")
    var = getattr(layer, "_" + n, None)
    if not isinstance(var, keras.Variable):
      var = getattr(layer, n, None) if optional else getattr(layer, n)
    if var is not None:
      found.append(var)
  return found


def _duck_names(layer):
  """The `_DUCK` variable attributes `layer` holds (recognised without its class)."""
  return tuple(n for n in _DUCK if isinstance(getattr(layer, n, None), keras.Variable))


def _table_weights(layer):
  """The prunable weight names of `layer`'s `layer_types` entry, or None."""
  entry = layer_types.of(layer)
  return entry.weights if entry is not None and entry.weights else None


def _is_direct(layer):
  """True for the layers whose own kernels are in the table (or a PrunableLayer)."""
  return (isinstance(layer, PrunableLayer) or _table_weights(layer) is not None
          or bool(_duck_names(layer)))


def _sublayers(layer):
  """The layers directly inside `layer` (none for Keras models: they are not containers)."""
  if isinstance(layer, keras.Model):
    return []
  return layer._flatten_layers(include_self=False, recursive=False)  # pylint: disable=protected-access


def _prunable_inside(layer, skip_unused=False):
  """The outermost prunable layers inside a container layer, in tracking order.

  With `skip_unused` (a built, traced layer), a sublayer still unbuilt and holding no
  weights is skipped: the layer's call never uses it (keras_hub `FusedMBConvBlock`
  creates its squeeze-excite layers even when `se_ratio=0`), so it has nothing to prune.
  `PruneWrapper.build` traces the call first, so a lazily built sublayer is built by then.
  """
  found = []
  for sub in _sublayers(layer):
    if skip_unused and not sub.built and not sub.weights:
      continue
    found.extend([sub] if _is_direct(sub) else _prunable_inside(sub, skip_unused))
  return found


def is_prunable(layer):
  """True if tfprune knows how to prune `layer` (itself, or layers inside it)."""
  return _is_direct(layer) or bool(_prunable_inside(layer))


def supported_layer_names():
  names = [t.name for t in layer_types.TYPES.values() if t.weights]
  return sorted(names + ["PrunableLayer subclasses",
                         "layers holding a `position_embeddings` variable"])


def unit_gate_problem(layer):
  """Why output units of `layer` cannot carry a per-unit gate / be deleted as whole
  units (`l0_gates`), or None."""
  entry = layer_types.of(layer)
  if entry is None or not entry.gateable:
    return "not a Dense or Conv1D/2D/3D layer"
  if getattr(layer, "groups", 1) != 1:
    return f"grouped convolution (groups={layer.groups})"
  if getattr(layer, "data_format", "channels_last") != "channels_last":
    return "channels_first"
  return None


def get_prunable_weights(layer):
  """The prunable variables of a BUILT layer.

  Raises:
    ValueError: if the layer is not prunable (naming it and the supported types).
  """
  entry = layer_types.of(layer)
  if isinstance(layer, PrunableLayer):
    weights = list(layer.get_prunable_weights())
  elif entry is not None and entry.recurrent and entry.weights:
    weights = _kernels_of(layer.cell, entry.weights)
  else:
    names = _table_weights(layer) or _duck_names(layer) or None
    inside = _prunable_inside(layer, skip_unused=layer.built) if names is None else []
    if inside:
      weights, seen = [], set()
      for sub in inside:
        for w in get_prunable_weights(sub):
          if id(w) not in seen:  # a layer used twice inside holds its kernel once
            seen.add(id(w))
            weights.append(w)
      return weights
    if names is None:
      raise ValueError(
          f"Layer {layer.name!r} ({type(layer).__name__}) cannot be pruned. Prunable "
          f"layers: {', '.join(supported_layer_names())}, and layers that hold them "
          f"(TimeDistributed, Bidirectional, a custom layer with a Dense inside). For a "
          f"custom layer with its own variables, subclass tfprune.PrunableLayer and "
          f"implement get_prunable_weights().")
    weights = _kernels_of(layer, names)
  if not weights:
    raise ValueError(f"Layer {layer.name!r} returned no prunable weights.")
  return weights


def _all_inside(layer):
  """Every layer inside `layer` (not `layer`), outer layers before the layers they hold."""
  return layer._flatten_layers(include_self=False)  # pylint: disable=protected-access


def unpruned_weights(layer, pruned_ids):
  """The trainable weights of rank >= `LISTED_RANK` of `layer` (its sublayers included),
  biases excepted, that are not in `pruned_ids` (ids of the masked variables), with the
  reason.

  Returns:
    A list of `(weight path, reason)`.
  """
  found = []
  for w in layer.trainable_weights:
    if (id(w) in pruned_ids or len(w.shape) < LISTED_RANK
        or w.path.rsplit("/", 1)[-1].endswith("bias")):
      continue
    owner = layer
    for sub in _all_inside(layer):
      if any(v is w for v in sub.trainable_weights):
        owner = sub  # innermost last: `_all_inside` lists outer layers first
    if _is_direct(owner):
      kept = [v.path for v in get_prunable_weights(owner)]
      reason = f"{type(owner).__name__} prunes only {kept}"
    elif is_prunable(owner):
      reason = (f"a variable of {type(owner).__name__} itself, which prunes only the "
                f"supported layers inside it (subclass tfprune.PrunableLayer to prune it)")
    else:
      reason = (f"{type(owner).__name__} is not a supported layer (subclass "
                f"tfprune.PrunableLayer to prune it)")
    found.append((w.path, reason))
  return found
