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

L = keras.layers

# Order matters only for readability: lookups use isinstance.
_BUILTIN = (
    (L.Dense, ("kernel",)),
    (L.EinsumDense, ("kernel",)),
    (L.DepthwiseConv1D, ("kernel",)),
    (L.DepthwiseConv2D, ("kernel",)),
    (L.SeparableConv1D, ("depthwise_kernel", "pointwise_kernel")),
    (L.SeparableConv2D, ("depthwise_kernel", "pointwise_kernel")),
    (L.Conv1DTranspose, ("kernel",)),
    (L.Conv2DTranspose, ("kernel",)),
    (L.Conv3DTranspose, ("kernel",)),
    (L.Conv1D, ("kernel",)),
    (L.Conv2D, ("kernel",)),
    (L.Conv3D, ("kernel",)),
    (L.ReversibleEmbedding, ("embeddings", "reverse_embeddings?")),
    (L.Embedding, ("embeddings",)),
    (L.LSTMCell, ("kernel", "recurrent_kernel")),
    (L.GRUCell, ("kernel", "recurrent_kernel")),
    (L.SimpleRNNCell, ("kernel", "recurrent_kernel")),
)
_RNN = (L.LSTM, L.GRU, L.SimpleRNN)

# Layers of other libraries recognised by a variable attribute, not by class (tfprune
# does not import them): keras_hub's `PositionEmbedding` holds `position_embeddings`.
_DUCK = ("position_embeddings",)

# A trainable weight of this rank or more that `tfprune.prune` leaves dense is listed
# (`unpruned_weights`); vectors (norm scales) and biases (named `*bias`, EinsumDense's
# are matrices) are left out silently.
LISTED_RANK = 2

# Layers whose output units can carry a per-unit gate / be deleted as whole units
# (structured pruning: `l0_gates`), and the subclasses of those that cannot.
UNIT_GATEABLE = (L.Dense, L.Conv1D, L.Conv2D, L.Conv3D)
NOT_UNIT_GATEABLE = (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose,
                     L.SeparableConv1D, L.SeparableConv2D, L.DepthwiseConv1D,
                     L.DepthwiseConv2D)


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
  a name ending in `?` is optional (`reverse_embeddings` exists only when untied)."""
  found = []
  for n in names:
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


def _is_direct(layer):
  """True for the layers whose own kernels are in the table (or a PrunableLayer)."""
  if isinstance(layer, (PrunableLayer, L.MultiHeadAttention) + _RNN):
    return True
  return any(isinstance(layer, cls) for cls, _ in _BUILTIN) or bool(_duck_names(layer))


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
  names = [cls.__name__ for cls, _ in _BUILTIN] + [c.__name__ for c in _RNN]
  return sorted(names + ["MultiHeadAttention", "PrunableLayer subclasses",
                         "layers holding a `position_embeddings` variable"])


def get_prunable_weights(layer):
  """The prunable variables of a BUILT layer.

  Raises:
    ValueError: if the layer is not prunable (naming it and the supported types).
  """
  if isinstance(layer, PrunableLayer):
    weights = list(layer.get_prunable_weights())
  elif isinstance(layer, _RNN):
    weights = _kernels_of(layer.cell, ("kernel", "recurrent_kernel"))
  elif isinstance(layer, L.MultiHeadAttention):
    weights = [v for v in layer.trainable_weights if v.path.split("/")[-1] == "kernel"]
  else:
    names = next((n for cls, n in _BUILTIN if isinstance(layer, cls)),
                 _duck_names(layer) or None)
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
