"""The one layer taxonomy: what tfprune knows about each Keras layer type.

Every rule that depends on a layer's type reads its entry here (docs/layers.md section 5):

  * `weights`: the prunable variables (`tfprune.registry`);
  * `channels`: how the layer maps channels, one of the `*` kinds below. The channel
    dependency graph (`tfprune.structured.depgraph`), the weight slices a channel owns
    (`structured.members`), the slicer that deletes it (`structured.slicing`), the MAC
    count (`structured.costs`) and the latency model (`structured.latency`) all
    dispatch on this kind;
  * `geometry`: the least-squares form of the layer-wise engine (`tfprune.layerwise`);
  * `gateable`: whether output units can carry L0 gates (`methods.l0_gates`);
  * `recurrent`: a recurrent layer (the registry prunes its cell's `weights`);
  * `activation`, `free`, `fuses`: how an exported graph runs it (latency model);
  * `follows`: config keys that equal the channel count and shrink with it;
  * `check(config, channels)`: why the channel rule does not apply to this
    configuration (or None); `channels` is the input's channel count (None if unknown).

A new layer type that behaves like an existing one is one entry in `_TYPES`. The kinds are
implemented once each by the modules above.

Lookups: `get(class_name)` for the graph code, which reads class names from model configs,
and `of(layer)` for live layers (the first class of the layer's MRO that has an entry, so
a subclass of `Dense` is a `Dense`).
"""
import dataclasses

# Channel kinds: what a layer does to the channels (last axis) of its input.
PASS = "pass"            # channel c in -> channel c out (pooling, dropout, activations)
MERGE = "merge"          # element-wise merge of equally wide tensors: ties their channels
CONCAT = "concat"        # channel-axis concatenation
SCALE = "scale"          # per-channel parameters on the last axis (BatchNormalization)
COUPLED = "coupled"      # normalises across the channels: they are never removed
FLATTEN = "flatten"      # channels repeated at every flattened position
RESHAPE = "reshape"      # channels kept when the last axis is; else flattened or mixed
OPAQUE = "opaque"        # never traced (`check` says why)
DENSE = "dense"          # producer: kernel [in, units]
CONV = "conv"            # producer: kernel [..., in, filters]
TRANSPOSE = "transpose"  # producer: kernel [..., filters, in]
DEPTHWISE = "depthwise"  # channel c in -> channels c * multiplier + j out
SEPARABLE = "separable"  # depthwise then a pointwise producer
EMBEDDING = "embedding"  # producer from token ids
EINSUM = "einsum"        # an EinsumDense that is a Dense on the last axis
ATTENTION = "attention"  # MultiHeadAttention: heads and input/output widths
PRODUCERS = (DENSE, CONV, TRANSPOSE, SEPARABLE, EMBEDDING, EINSUM, ATTENTION)


@dataclasses.dataclass(frozen=True)
class LayerType:
  """One Keras layer type (see the module docstring for the fields)."""
  name: str
  channels: str = None
  weights: tuple = ()
  geometry: str = None
  gateable: bool = False
  recurrent: bool = False
  activation: bool = False
  free: bool = False
  fuses: bool = False
  follows: tuple = ()
  check: object = None

  def channel_problem(self, config, channels=None):
    """Why this layer's channels cannot be traced with this config, or None."""
    if self.channels is None:
      return f"{self.name} is not understood by the channel graph"
    return self.check(config, channels) if self.check else None


def _softmax_activation(config, channels):
  del channels
  if config.get("activation") in ("softmax", "log_softmax"):
    return f"Activation({config['activation']!r}) normalises over the channel axis"
  return None


def _prelu(config, channels):
  del channels
  if config.get("shared_axes") is not None:
    return "PReLU with shared_axes is not traced"
  return None


def _grouped(config, channels):
  del channels
  if config.get("groups", 1) != 1:
    return f"grouped convolution (groups={config['groups']})"
  return None


def _group_norm(config, channels):
  # One group per channel normalises each channel on its own (an instance norm); wider
  # groups mix the statistics of their channels, so removing one changes the others.
  groups = config.get("groups", 32)
  if groups == -1 or (channels is not None and groups == channels):
    return None
  return (f"GroupNormalization with groups={groups} normalises several channels together "
          f"(only one group per channel is traced)")


def _lambda(config, channels):
  del config, channels
  return "Lambda (an arbitrary function) is not traced"


def _each(names, **fields):
  return tuple(LayerType(n, **fields) for n in names)


_K = ("kernel",)
_RECURRENT_K = ("kernel", "recurrent_kernel")
_TYPES = (
    # Producers (prunable).
    LayerType("Dense", DENSE, _K, geometry="dense", gateable=True),
    LayerType("EinsumDense", EINSUM, _K, geometry="einsum"),
    *_each(("Conv1D", "Conv2D"), channels=CONV, weights=_K, geometry="conv",
           gateable=True, check=_grouped),
    LayerType("Conv3D", CONV, _K, gateable=True, check=_grouped),
    *_each(("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"), channels=TRANSPOSE,
           weights=_K),
    *_each(("DepthwiseConv1D", "DepthwiseConv2D"), channels=DEPTHWISE, weights=_K,
           geometry="depthwise"),
    *_each(("SeparableConv1D", "SeparableConv2D"), channels=SEPARABLE,
           weights=("depthwise_kernel", "pointwise_kernel")),
    # `reverse_embeddings` exists only when the embedding is untied (`?`: optional).
    LayerType("ReversibleEmbedding", None, ("embeddings", "reverse_embeddings?"),
              geometry="embedding"),
    LayerType("Embedding", EMBEDDING, ("embeddings",), geometry="embedding"),
    LayerType("MultiHeadAttention", ATTENTION, ("*/kernel",)),
    # Recurrent layers: the kernels of their cell.
    *_each(("LSTMCell", "GRUCell", "SimpleRNNCell"), weights=_RECURRENT_K),
    *_each(("LSTM", "GRU", "SimpleRNN"), weights=_RECURRENT_K, recurrent=True),
    *_each(("ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D", "RNN"), recurrent=True),
    # Channel-wise layers.
    *_each(("ReLU", "LeakyReLU", "ELU"), channels=PASS, activation=True),
    LayerType("Activation", PASS, activation=True, check=_softmax_activation),
    LayerType("PReLU", PASS, activation=True, check=_prelu),
    LayerType("Softmax", COUPLED, activation=True),
    *_each(("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
            "GaussianNoise", "GaussianDropout", "AlphaDropout", "Identity",
            "ActivityRegularization", "Masking"), channels=PASS, free=True),
    *_each(tuple(f"{p}Pooling{d}D" for p in ("Max", "Average", "GlobalMax",
                                              "GlobalAverage") for d in (1, 2, 3)) +
           tuple(f"{p}{d}D" for p in ("ZeroPadding", "Cropping", "UpSampling")
                 for d in (1, 2, 3)), channels=PASS),
    LayerType("BatchNormalization", SCALE),
    LayerType("GroupNormalization", SCALE, follows=("groups",), check=_group_norm),
    LayerType("LayerNormalization", COUPLED),
    *_each(("Add", "Subtract", "Multiply"), channels=MERGE, fuses=True),
    *_each(("Maximum", "Minimum", "Average"), channels=MERGE),
    LayerType("Concatenate", CONCAT),
    LayerType("Flatten", FLATTEN, free=True),
    LayerType("Reshape", RESHAPE, free=True),
    LayerType("Lambda", OPAQUE, check=_lambda),
    LayerType("InputLayer", free=True),
)
TYPES = {t.name: t for t in _TYPES}
assert len(TYPES) == len(_TYPES), "a layer type is listed twice"


def get(class_name):
  """The entry of a Keras class name (as a model config spells it), or None."""
  return TYPES.get(class_name)


def of(layer):
  """The entry of a live layer: its class's, or its nearest Keras base class's; or None."""
  for cls in type(layer).__mro__:
    entry = TYPES.get(cls.__name__)
    if entry is not None and cls.__module__.startswith("keras."):
      return entry
  return None


def names(**fields):
  """Class names whose entries match every `field=value` (a tuple value: any of them)."""
  def match(t):
    return all(getattr(t, k) in v if isinstance(v, tuple) else getattr(t, k) == v
               for k, v in fields.items())
  return tuple(t.name for t in _TYPES if match(t))
