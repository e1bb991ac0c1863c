"""Weight clustering (weight sharing) with trainable centroids, sparsity preserving.

Han, Mao, Dally, "Deep Compression: Compressing Deep Neural Networks with Pruning,
Trained Quantization and Huffman Coding", ICLR 2016 (arXiv:1510.00149), section 3. The
weights of each prunable kernel (per layer, or per output channel) are clustered by 1-D
k-means into `n_clusters` centroids; the layer then computes with `W[i] = c[a[i]]`, where
the assignments `a` are fixed and the centroids `c` are trained: the gradient of a
centroid is the sum of the gradients of the weights assigned to it (the gather's
gradient). With `preserve_sparsity=True` the zero weights (e.g. of a pruned and stripped
model) keep a fixed zero of their own, outside the trainable centroids, so a kernel
holds at most `n_clusters` distinct values, zero included. docs/algorithms.md section 10.

`ClusterWrapper` is a `PruneWrapper` whose mask is the sparsity mask and whose effective
weight is `c[a] * mask`: `tfprune.strip` turns it back into the plain layer holding the
clustered weights, and everything else a wrapper does (transparent calls, saving,
checkpoints, nested layers) is the pruning wrapper's. Training-side code: it never
imports the exporter.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfprune import distribute
from tfprune import model as model_lib
from tfprune import wrapper as wrapper_lib
from tfprune.wrapper import PruneWrapper

L = keras.layers

INITS = ("kmeans++", "linear", "density", "random")
MIN_CLUSTERS = 2
MAX_CLUSTERS = 256  # an 8-bit index (a LUT of int8 values has at most 256 entries)
KMEANS_ITERATIONS = 50
_TRANSPOSED = (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)
_DEPTHWISE = (L.DepthwiseConv1D, L.DepthwiseConv2D)
_SEPARABLE = (L.SeparableConv1D, L.SeparableConv2D)


def check_arguments(n_clusters, init, preserve_sparsity=True, per_channel=False,
                    names=None):
  """Raises ValueError, naming the argument, unless the clustering arguments are valid.

  Args:
    n_clusters, init, preserve_sparsity, per_channel: as `cluster`.
    names: the caller's names of the arguments, if not these (the TFMOT API's).
  """
  name = {"n_clusters": "n_clusters", "init": "init", "preserve_sparsity":
          "preserve_sparsity", "per_channel": "per_channel", **(names or {})}
  if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)) or not (
      MIN_CLUSTERS <= int(n_clusters) <= MAX_CLUSTERS):
    raise ValueError(f"{name['n_clusters']} must be an integer in [{MIN_CLUSTERS}, "
                     f"{MAX_CLUSTERS}] (zero included when preserve_sparsity=True), got "
                     f"{n_clusters!r}.")
  if not isinstance(init, str) or init not in INITS:
    raise ValueError(f"{name['init']} must be one of {INITS}, got {init!r}.")
  for arg, value in (("preserve_sparsity", preserve_sparsity),
                     ("per_channel", per_channel)):
    if not isinstance(value, (bool, np.bool_)):
      raise ValueError(f"{name[arg]} must be True or False, got {value!r}.")


# ------------------------------------------------------------------ 1-D k-means
def nearest(values, centroids):
  """Index of the nearest centroid of every value (NumPy; ties to the lower value)."""
  order = np.argsort(centroids, kind="stable")
  ordered = np.asarray(centroids)[order]
  midpoints = (ordered[1:] + ordered[:-1]) / 2
  return order[np.searchsorted(midpoints, values)]


def _initial(values, k, init, rng):
  """`k` initial centroids of the 1-D `values` (more than `k` distinct ones)."""
  lo, hi = float(values.min()), float(values.max())
  if init == "linear":  # Han et al.'s best: equally spaced over [min, max]
    return np.linspace(lo, hi, k)
  if init == "density":  # equally spaced on the CDF (TFMOT's DENSITY_BASED)
    return np.quantile(values, np.linspace(0.0, 1.0, k))
  if init == "random":
    return np.sort(rng.uniform(lo, hi, k))
  chosen = [values[rng.integers(values.size)]]  # kmeans++: D^2 sampling
  d2 = (values - chosen[0]) ** 2
  while len(chosen) < k:
    total = d2.sum()
    if total <= 0:
      break
    chosen.append(values[rng.choice(values.size, p=d2 / total)])
    d2 = np.minimum(d2, (values - chosen[-1]) ** 2)
  return np.sort(np.asarray(chosen + [chosen[-1]] * (k - len(chosen))))


def kmeans_1d(values, k, init="kmeans++", rng=None):
  """k-means (Lloyd) of 1-D `values` into `k` centroids (NumPy float64).

  Fewer than `k` distinct values are their own centroids (the last repeated); an empty
  `values` gives zeros. A cluster that loses all its members keeps its centroid.
  """
  values = np.asarray(values, np.float64).ravel()
  if values.size == 0:
    return np.zeros(k)
  distinct = np.unique(values)
  if distinct.size <= k:
    return np.concatenate([distinct, np.full(k - distinct.size, distinct[-1])])
  rng = rng if rng is not None else np.random.default_rng(0)
  centroids = _initial(values, k, init, rng).astype(np.float64)
  for _ in range(KMEANS_ITERATIONS):
    members = nearest(values, centroids)
    counts = np.bincount(members, minlength=k)
    sums = np.bincount(members, weights=values, minlength=k)
    new = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
    if np.array_equal(new, centroids):
      break
    centroids = new
  return centroids


# --------------------------------------------------------------- channel layout
def channel_axes(owner, weight):
  """The Keras axes of `weight`'s output channels (those TFLite quantizes per channel).

  The last axis, except: transposed convolutions (`[..., out, in]`: axis -2) and
  depthwise kernels (`[..., in, multiplier]`: both, output channel `in * mult + m`).
  """
  rank = len(weight.shape)
  if rank < 2:
    return ()
  if isinstance(owner, _TRANSPOSED):
    return (rank - 2,)
  depthwise = isinstance(owner, _DEPTHWISE) or (
      isinstance(owner, _SEPARABLE) and weight is owner.depthwise_kernel)
  return (rank - 2, rank - 1) if depthwise else (rank - 1,)


def _layout(shape, axes):
  """(permutation moving `axes` last, number of groups): the `[members, groups]` view."""
  rank = len(shape)
  perm = [d for d in range(rank) if d not in axes] + list(axes)
  return perm, int(np.prod([shape[d] for d in axes])) if axes else 1


def _to_view(x, perm, groups, xp):
  return xp.reshape(xp.transpose(x, perm), [-1, groups])


def _from_view(view, shape, perm, xp):
  permuted = xp.reshape(view, [int(shape[p]) for p in perm])
  return xp.transpose(permuted, [int(i) for i in np.argsort(perm)])


def _owner(layer, weight):
  """The innermost layer inside `layer` (or itself) that holds `weight`."""
  owner = layer
  for sub in layer._flatten_layers(include_self=False):  # pylint: disable=protected-access
    if any(v is weight for v in sub.weights):
      owner = sub
  return owner


# ----------------------------------------------------------------- the wrapper
@keras.saving.register_keras_serializable(package="tfprune")
class ClusterWrapper(PruneWrapper):
  """Wraps a prunable layer; computes with clustered kernels `centroids[assignment]`.

  For each prunable weight (`tfprune.registry`): trainable `centroids` of shape
  `[groups, k]` (one group per layer, or one per output channel with `per_channel`), an
  int32 `assignment` of the weight's shape (fixed: Deep Compression's scheme) and the
  pruning wrapper's mask, which is the sparsity mask (`weight != 0`) with
  `preserve_sparsity`, else all ones. `k` is `n_clusters - 1` with `preserve_sparsity`
  (zero is the extra, fixed value), else `n_clusters`. The inner layer's own kernels are
  frozen (non-trainable) while wrapped; `tfprune.strip` bakes `centroids[assignment] *
  mask` into them.

  Args:
    layer: the Keras layer to cluster.
    n_clusters: distinct values per kernel (per channel), zero included, in [2, 256].
    preserve_sparsity: keep the weights that are zero at clustering time exactly zero.
    per_channel: one set of centroids per output channel (`channel_axes`).
    init: centroid initialisation before k-means: "kmeans++" (TFMOT's default),
      "linear" (Han et al.'s best), "density" (equally spaced on the CDF), "random".
    seed: seed of the "kmeans++" / "random" initialisations.
    cluster_on_build: compute the clusters from the layer's weights when the wrapper is
      built (`from_config` turns it off: the saved weights are loaded afterwards;
      `tfprune.cluster` clusters after copying the weights in, `init_clusters`).
    **kwargs: `PruneWrapper` / Keras layer arguments (name, ...).
  """

  def __init__(self, layer, n_clusters=16, preserve_sparsity=True, per_channel=False,
               init="kmeans++", seed=0, cluster_on_build=True, **kwargs):
    check_arguments(n_clusters, init, preserve_sparsity, per_channel)
    if kwargs.pop("method", None) is not None:
      raise ValueError("ClusterWrapper takes no pruning method: prune and strip first, "
                       "then cluster (preserve_sparsity=True keeps the zeros).")
    kwargs.setdefault("name", f"cluster_{getattr(layer, 'name', 'layer')}")
    super().__init__(layer, method=None, **kwargs)
    self.n_clusters = int(n_clusters)
    self.preserve_sparsity = bool(preserve_sparsity)
    self.per_channel = bool(per_channel)
    self.init = next(i for i in INITS if i == init)  # a plain str (not a str Enum)
    self.seed = int(seed)
    self.cluster_on_build = bool(cluster_on_build)
    self.centroids = []
    self.assignments = []
    self._layouts = []

  @property
  def trainable_clusters(self):
    """Trainable centroids per group: `n_clusters - 1` with `preserve_sparsity`."""
    return self.n_clusters - 1 if self.preserve_sparsity else self.n_clusters

  def build(self, input_shape=None):
    super().build(input_shape)
    self.centroids, self.assignments, self._layouts = [], [], []
    for w in self.prunable_weights:
      axes = channel_axes(_owner(self.layer, w), w) if self.per_channel else ()
      perm, groups = _layout(tuple(w.shape), axes)
      self._layouts.append((tuple(int(d) for d in w.shape), perm, groups))
      prefix = wrapper_lib._slot_prefix(w)  # pylint: disable=protected-access
      c = self.add_weight(name=f"{prefix}_centroids", shape=(groups, self.trainable_clusters),
                          dtype=w.dtype, initializer="zeros", trainable=True)
      a = self.add_weight(name=f"{prefix}_assignment", shape=w.shape, dtype="int32",
                          initializer="zeros", trainable=False)
      self._track_trackable(c, name=f"{prefix}_centroids", overwrite=True)
      self._track_trackable(a, name=f"{prefix}_assignment", overwrite=True)
      self.centroids.append(c)
      self.assignments.append(a)
      w.trainable = False  # the centroids are the parameters now (no gradient reaches w)
    if self.cluster_on_build:
      self.init_clusters()
    self.built = True

  def init_clusters(self):
    """(Re)clusters the inner layer's current weights: k-means, assignments, mask."""
    rng = np.random.default_rng(self.seed)
    for w, mask, c, a, (shape, perm, groups) in zip(
        self.prunable_weights, self.masks, self.centroids, self.assignments, self._layouts):
      value = np.asarray(keras.ops.convert_to_numpy(w), np.float64)
      keep = value != 0 if self.preserve_sparsity else np.ones(value.shape, bool)
      values, kept = _to_view(value, perm, groups, np), _to_view(keep, perm, groups, np)
      centroids = np.zeros((groups, self.trainable_clusters))
      members = np.zeros(values.shape, np.int32)
      for g in range(groups):
        centroids[g] = kmeans_1d(values[kept[:, g], g], self.trainable_clusters, self.init,
                                 rng)
        members[:, g] = nearest(values[:, g], centroids[g])
      c.assign(centroids.astype(c.dtype))
      a.assign(_from_view(members, shape, perm, np))
      mask.assign(keep.astype(mask.dtype))

  def clustered_weights(self):
    """The effective weights `centroids[assignment] * mask`, as tensors."""
    out = []
    for mask, c, a, (shape, perm, groups) in zip(self.masks, self.centroids,
                                                 self.assignments, self._layouts):
      index = tf.transpose(_to_view(tf.convert_to_tensor(a), perm, groups, tf))  # [G, N]
      value = tf.transpose(tf.gather(tf.convert_to_tensor(c), index, batch_dims=1))
      out.append(_from_view(value, shape, perm, tf) * mask)
    return out

  def masked_weights(self):
    """The effective (clustered, masked) weights, as tensors."""
    return self.clustered_weights()

  def state_mapping(self, training):
    """(weight, centroids[assignment] * mask) pairs the inner layer computes with."""
    del training
    return list(zip(self.prunable_weights, self.clustered_weights()))

  def stripped_weights(self):
    """The inner layer's weights (NumPy) with the clustered kernels baked in."""
    clustered = {id(w): v.numpy() for w, v in zip(self.prunable_weights,
                                                  self.clustered_weights())}
    return [clustered.get(id(v), v.numpy()) for v in self.layer.weights]

  def get_config(self):
    config = super().get_config()
    config.update(n_clusters=self.n_clusters, preserve_sparsity=self.preserve_sparsity,
                  per_channel=self.per_channel, init=self.init, seed=self.seed)
    return config

  @classmethod
  def from_config(cls, config, custom_objects=None):
    config = dict(config)
    config.setdefault("cluster_on_build", False)  # the saved weights are loaded next
    return super().from_config(config, custom_objects)


def find_cluster_wrappers(model):
  """All `ClusterWrapper`s of a model (nested models included), in layer order."""
  return [l for l in wrapper_lib.find_wrappers(model) if isinstance(l, ClusterWrapper)]


def cluster(model: keras.Model, n_clusters: int = 16, preserve_sparsity: bool = True,
            per_channel: bool = False, init: str = "kmeans++",
            layers: str | list[str] | None = None, seed: int = 0) -> keras.Model:
  """Returns a copy of `model` whose prunable kernels are clustered (`ClusterWrapper`).

  Each kernel of the chosen layers (default: every layer `tfprune.prune` would wrap) is
  clustered by k-means into at most `n_clusters` values; training (`model.fit` or a
  custom loop) then trains the centroids with the assignments fixed, and
  `tfprune.strip` returns the plain model whose kernels hold those values. To combine
  with pruning: prune, fine-tune, `strip`, then cluster with `preserve_sparsity=True`
  (the zeros stay exact zeros). docs/algorithms.md section 10.

  Args:
    model: a built Sequential or Functional Keras model without wrappers.
    n_clusters: distinct values per kernel (per output channel with `per_channel`),
      zero included when `preserve_sparsity`, in [2, 256] (16: 4-bit LUT indices).
    preserve_sparsity: keep every weight that is zero now exactly zero (a fixed zero
      outside the `n_clusters - 1` trainable centroids).
    per_channel: one set of centroids per output channel instead of one per kernel
      (more values per kernel; still at most `n_clusters` per channel once quantized
      with per-channel int8 scales, which TFLM's per-channel LUT encoding needs).
    init: "kmeans++" (default, as TFMOT), "linear", "density" or "random": how the
      centroids start before the k-means iterations.
    layers: names of the layers to cluster (default every prunable layer).
    seed: seed of the "kmeans++" / "random" initialisations.

  Returns:
    The clustered model; its outputs are the original model's computed with the
    clustered weights.

  Raises:
    ValueError: bad argument (naming it), a model that is already wrapped (pruned or
      clustered: strip it first), subclassed or unbuilt, non-finite weights, unknown or
      unprunable layer.
  """
  check_arguments(n_clusters, init, preserve_sparsity, per_channel)
  model_lib._check_graph_model(model, "tfprune.cluster")  # pylint: disable=protected-access
  wrapped = [l.name for l in wrapper_lib.find_wrappers(model)]
  if wrapped:
    raise ValueError(
        f"tfprune.cluster: model {model.name!r} has wrapped layers {wrapped}: call "
        f"tfprune.strip(model) first (with preserve_sparsity=True the pruned zeros stay "
        f"zeros).")
  model_lib._check_finite_weights(model, "tfprune.cluster")  # pylint: disable=protected-access
  distribute.check_prune_scope(model, "tfprune.cluster")
  chosen = {id(l) for l in model_lib._select(model, layers)}  # pylint: disable=protected-access

  def make_layer(layer):
    new = model_lib._fresh_copy(layer)  # pylint: disable=protected-access
    if id(layer) not in chosen:
      return new
    return ClusterWrapper(new, n_clusters=n_clusters, preserve_sparsity=preserve_sparsity,
                          per_channel=per_channel, init=init, seed=seed,
                          cluster_on_build=False)

  clustered, pairs = model_lib._clone(model, make_layer)  # pylint: disable=protected-access
  for old, new in pairs:
    if isinstance(new, ClusterWrapper):
      new.layer.set_weights(old.get_weights())
      new.init_clusters()
    else:
      new.set_weights(old.get_weights())
  return clustered
