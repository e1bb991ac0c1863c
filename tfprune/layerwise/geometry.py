"""Layer geometry: which layers the layer-wise engine prunes, and how each one is a
batch of least-squares problems `[B, d, m]` (see `tfprune.layerwise`).

  * `Dense`: `d` = the last input axis, every leading axis is a sample (`B = 1`).
  * `Conv1D` / `Conv2D` (groups = 1): im2col rows via `tf.image.extract_patches`
    (padding valid / same / causal, strides, dilation, channels_first); `d = kh*kw*cin`.
  * `DepthwiseConv1D` / `DepthwiseConv2D`: one independent problem per input channel,
    `B = cin`, `d = kh*kw`, `m = depth_multiplier`.
  * `EinsumDense` (also the query / key / value / output projections inside
    `MultiHeadAttention`): from the equation `in,kernel->out`, kernel axes that are
    contracted (in the input, not the output) are `d`, kernel axes only in the output are
    `m`, kernel axes in input AND output are the problem batch `B`; input axes not in the
    kernel are samples. E.g. MHA's query `abc,cde->abde` is `[1, hidden, heads*dim]`, its
    output `abcd,cde->abe` is `[1, heads*dim, hidden]`.
  * `Embedding`: a lookup is a product with a one-hot row, so rows of the table are the
    inputs (`d = vocabulary`, `m = output_dim`) and `G = X^T X / n` is DIAGONAL: the
    token frequencies (see `tfprune.layerwise.stats.EmbeddingStats`).

Layers that hold a kernel but cannot be posed this way get a reason from `skip_reason`
(printed by the engine: nothing is skipped silently).
"""
import re

import keras
import numpy as np
import tensorflow as tf

from tfprune import _layers
from tfprune import layer_types

# The layer types the engine poses, by their `geometry` (tfprune/layer_types.py).
SUPPORTED_LAYERS = layer_types.names(geometry=("dense", "conv", "depthwise", "einsum",
                                               "embedding"))
_EQUATION = re.compile(r"^([a-zA-Z.]+),([a-zA-Z]+)->([a-zA-Z.]+)$")


inner_layer = _layers.inner_layer  # (re-exported: tfprune.layerwise.inner_layer)


def kind(inner):
  """`dense`, `conv`, `depthwise`, `einsum` or `embedding` (None: not supported)."""
  entry = layer_types.of(inner)
  geometry = entry.geometry if entry is not None else None
  if geometry == "conv" and getattr(inner, "groups", 1) != 1:
    return None
  if geometry == "einsum" and einsum_spec(inner) is None:
    return None
  return geometry


def is_recurrent(inner):
  """True for a recurrent layer (its kernels are left to training methods)."""
  entry = layer_types.of(inner)
  return (entry is not None and entry.recurrent) or hasattr(inner, "cell")


def is_supported(layer):
  """True if the layer-wise engine can prune `layer` (or the layer a wrapper holds)."""
  return kind(inner_layer(layer)) is not None


def supported_layers(model):
  """Top-level layers of `model` the engine prunes, in model order."""
  return [layer for layer in model.layers if is_supported(layer)]


def kernel_variable(inner):
  """The pruned weight: `embeddings` for `Embedding`, `kernel` otherwise."""
  return inner.embeddings if kind(inner) == "embedding" else inner.kernel


def has_kernel(layer):
  """True if `layer` itself (not its sublayers) owns a kernel-like weight."""
  own = {id(w) for w in layer._trainable_variables} if hasattr(  # pylint: disable=protected-access
      layer, "_trainable_variables") else None
  for w in layer.weights:
    if own is not None and id(w) not in own:
      continue
    name = w.path.split("/")[-1]
    if len(w.shape) >= 2 and ("kernel" in name or "embeddings" in name):
      return True
  return False


def skip_reason(inner):
  """Why the engine does not prune `inner`, a layer with a kernel (None if it does)."""
  if kind(inner) is not None:
    return None
  entry = layer_types.of(inner)
  geometry = entry.geometry if entry is not None else None
  if is_recurrent(inner):
    return ("recurrent kernels: each step's input depends on the layer's own previous "
            "output, so there is no fixed least-squares problem; prune it with a training "
            "method (magnitude, admm, ...)")
  if geometry == "conv":
    return f"grouped convolution (groups={inner.groups}) is not supported"
  if geometry == "einsum":
    return (f"einsum equation {inner.equation!r} does not map to [inputs x outputs] "
            f"(a kernel axis is summed, or an input axis is reduced without the kernel)")
  return (f"{type(inner).__name__} is not a supported layer type "
          f"({', '.join(SUPPORTED_LAYERS)})")


# ------------------------------------------------------------------------- einsum
def einsum_spec(inner):
  """Parses an `EinsumDense` equation into the letters of the problem layout.

  Returns:
    A dict with `input`, `kernel`, `output` (specs, "." for the ellipsis), `batch`,
    `contract`, `out` (kernel letters for B, d, m) and `elided_left`; None when the
    equation does not map to a least-squares problem.
  """
  match = _EQUATION.match(inner.equation.replace(" ", ""))
  if not match:
    return None
  spec_in, spec_k, spec_out = (g.replace("...", ".") for g in match.groups())
  if "." in spec_k or spec_in.count(".") > 1 or ("." in spec_in) != ("." in spec_out):
    return None
  batch = [c for c in spec_k if c in spec_in and c in spec_out]
  contract = [c for c in spec_k if c in spec_in and c not in spec_out]
  out = [c for c in spec_k if c in spec_out and c not in spec_in]
  if len(batch) + len(contract) + len(out) != len(spec_k) or not contract:
    return None
  if any(c not in spec_out for c in spec_in if c != "." and c not in spec_k):
    return None  # an input axis summed away without the kernel
  return {"input": spec_in, "kernel": spec_k, "output": spec_out, "batch": batch,
          "contract": contract, "out": out}


def _einsum_kernel_order(spec):
  letters = spec["batch"] + spec["contract"] + spec["out"]
  return [spec["kernel"].index(c) for c in letters]


def _einsum_sizes(spec, kernel_shape):
  size = dict(zip(spec["kernel"], kernel_shape))
  prod = lambda cs: int(np.prod([size[c] for c in cs])) if cs else 1
  return prod(spec["batch"]), prod(spec["contract"]), prod(spec["out"])


def _input_axes(spec_in, rank):
  """Letter -> axis of an input of `rank` (the ellipsis letters are `.0`, `.1`, ...)."""
  if "." not in spec_in:
    return {c: i for i, c in enumerate(spec_in)}
  head, tail = spec_in.split(".")
  n_ell = rank - len(head) - len(tail)
  axes = {c: i for i, c in enumerate(head)}
  axes.update({f".{j}": len(head) + j for j in range(n_ell)})
  axes.update({c: len(head) + n_ell + i for i, c in enumerate(tail)})
  return axes


# --------------------------------------------------------------------- reshapes
def kernel_to_problems(inner, kernel):
  """Kernel -> `[B, d, m]`: the layout the solvers see (see module docstring)."""
  kernel = np.asarray(kernel)
  k = kind(inner)
  if k in ("dense", "embedding"):
    return kernel[None]
  if k == "conv":
    return kernel.reshape(1, -1, kernel.shape[-1])
  if k == "einsum":
    spec = einsum_spec(inner)
    b, d, m = _einsum_sizes(spec, kernel.shape)
    return np.transpose(kernel, _einsum_kernel_order(spec)).reshape(b, d, m)
  cin, mult = kernel.shape[-2], kernel.shape[-1]
  return np.transpose(kernel.reshape(-1, cin, mult), (1, 0, 2))


def problems_to_kernel(inner, w, kernel_shape):
  """Inverse of `kernel_to_problems`."""
  w = np.asarray(w)
  k = kind(inner)
  if k == "depthwise":
    return np.transpose(w, (1, 0, 2)).reshape(kernel_shape)
  if k == "einsum":
    order = _einsum_kernel_order(einsum_spec(inner))
    moved = w.reshape([kernel_shape[i] for i in order])
    return np.transpose(moved, np.argsort(order))
  return w.reshape(kernel_shape)


def bias_problems(inner, w0_shape):
  """The layer's bias as `[B, m]` float64 (zeros when the layer has none)."""
  nb, _, m = w0_shape
  b = getattr(inner, "bias", None)
  if b is None or kind(inner) == "embedding":
    return np.zeros((nb, m))
  b = np.asarray(keras.ops.convert_to_numpy(b), np.float64)
  if kind(inner) != "einsum":
    return b.reshape(nb, m)
  spec = einsum_spec(inner)
  size = dict(zip(spec["kernel"], inner.kernel.shape))
  out_spec = spec["output"].replace(".", "")
  first = min(out_spec.index(c) for c in inner.bias_axes)
  letters = list(out_spec[first:])
  target = spec["batch"] + spec["out"]
  drop = [i for i, c in enumerate(letters) if c not in target]
  if any(b.shape[i] != 1 for i in drop):
    raise ValueError(f"Layer {inner.name!r}: bias axes {inner.bias_axes!r} vary over a "
                     f"sample axis of {inner.equation!r}; not supported layer-wise.")
  b = b.reshape([b.shape[i] for i in range(b.ndim) if i not in drop])
  letters = [c for c in letters if c in target]
  for c in target:
    if c not in letters:
      b, letters = b[..., None], letters + [c]
  b = np.transpose(b, [letters.index(c) for c in target])
  return np.broadcast_to(b, [size[c] for c in target]).reshape(nb, m).copy()


def layer_patches(inner, x):
  """The layer's input rows as `[B, N, d]` (im2col for convolutions).

  Args:
    inner: a supported Keras layer (not a wrapper), not an `Embedding` (whose rows are
      one-hot: see `tfprune.layerwise.stats.EmbeddingStats`).
    x: a batch of the layer's inputs, as the layer receives them.

  Returns:
    A float tensor `[B, N, d]` such that `patches @ kernel_to_problems(kernel)` equals the
    layer's pre-activation output minus its bias (rows ordered sample, position).
  """
  x = tf.convert_to_tensor(x)
  if not x.dtype.is_floating:
    x = tf.cast(x, tf.float32)
  k = kind(inner)
  if k == "dense":
    return tf.reshape(x, [1, -1, x.shape[-1]])
  if k == "einsum":
    return _einsum_patches(inner, x)
  rank = len(inner.kernel_size)
  if inner.data_format == "channels_first":
    x = tf.transpose(x, [0] + list(range(2, rank + 2)) + [1])
  ks, st = list(inner.kernel_size), list(inner.strides)
  dil, padding = list(inner.dilation_rate), inner.padding
  if rank == 1:
    if padding == "causal":
      x = tf.pad(x, [[0, 0], [dil[0] * (ks[0] - 1), 0], [0, 0]])
      padding = "valid"
    x = x[:, None]
    ks, st, dil = [1] + ks, [1] + st, [1] + dil
  patches = tf.image.extract_patches(x, sizes=[1] + ks + [1], strides=[1] + st + [1],
                                     rates=[1] + dil + [1], padding=padding.upper())
  depth = patches.shape[-1]
  if k == "conv":
    return tf.reshape(patches, [1, -1, depth])
  cin = x.shape[-1]
  patches = tf.reshape(patches, [-1, depth // cin, cin])  # (kh*kw, cin) order
  return tf.transpose(patches, [2, 0, 1])


def _einsum_patches(inner, x):
  spec = einsum_spec(inner)
  axes = _input_axes(spec["input"], x.shape.rank)
  batch = [axes[c] for c in spec["batch"]]
  contract = [axes[c] for c in spec["contract"]]
  samples = [a for a in range(x.shape.rank) if a not in batch + contract]
  moved = tf.transpose(x, batch + samples + contract)
  nb, d, _ = _einsum_sizes(spec, inner.kernel.shape)
  return tf.reshape(moved, [nb, -1, d])
