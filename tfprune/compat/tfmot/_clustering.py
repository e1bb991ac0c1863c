"""TFMOT's clustering API (`tfmot.clustering.keras`) implemented on tfprune, for Keras 3.

Same names and arguments as TFMOT 0.8 on top of `tfprune.cluster` /
`tfprune.clustering.ClusterWrapper` (Han, Mao, Dally, "Deep Compression", ICLR 2016):

  * `cluster_weights(to_cluster, number_of_clusters, cluster_centroids_init=
    CentroidInitialization.KMEANS_PLUS_PLUS, preserve_sparsity=False,
    cluster_per_channel=False, **kwargs)` wraps a layer, a list of layers, or every
    prunable layer of a Sequential / Functional model (a copy);
  * `strip_clustering` bakes the clustered weights into plain layers (`tfprune.strip`);
  * `CentroidInitialization` names TFMOT's four initialisations.

Differences from TFMOT (docs/algorithms.md section 10): the assignments are fixed after
k-means (Deep Compression's scheme; TFMOT re-assigns every step through a
straight-through copy of the weights), and with `preserve_sparsity=True` zero counts as
one of the `number_of_clusters` values, as in TFMOT.
"""
import enum
from typing import Any

import keras

import tfprune
from tfprune import clustering
from tfprune.compat.tfmot import _pruning


class CentroidInitialization(str, enum.Enum):
  """How the centroids start before k-means (TFMOT's names, tfprune's `init` values)."""
  LINEAR = "linear"
  RANDOM = "random"
  DENSITY_BASED = "density"
  KMEANS_PLUS_PLUS = "kmeans++"


def _init_name(value):
  if isinstance(value, CentroidInitialization):
    return value.value
  if isinstance(value, str) and value.startswith("CentroidInitialization."):
    member = CentroidInitialization.__members__.get(value.split(".", 1)[1])
    if member is not None:  # TFMOT's own enum values are these strings
      return member.value
  return value


def cluster_weights(
    to_cluster: "keras.Model | keras.layers.Layer | list[keras.layers.Layer]",
    number_of_clusters: int,
    cluster_centroids_init: "CentroidInitialization | str" = (
        CentroidInitialization.KMEANS_PLUS_PLUS),
    preserve_sparsity: bool = False,
    cluster_per_channel: bool = False,
    **kwargs: Any,
) -> "keras.Model | keras.layers.Layer | list[keras.layers.Layer]":
  """Wraps a layer, a list of layers or a model for weight clustering (TFMOT's API).

  Args:
    to_cluster: a Keras layer, a list of layers, or a Sequential / Functional model
      (copied; every prunable layer is clustered from its current weights).
    number_of_clusters: distinct values per kernel (per channel), in [2, 256].
    cluster_centroids_init: a `CentroidInitialization`.
    preserve_sparsity: keep the zero weights exactly zero (zero is one of the values).
    cluster_per_channel: one set of centroids per output channel.
    **kwargs: Keras layer arguments for the wrapper (layers only).

  Returns:
    The wrapped layer (`tfprune.ClusterWrapper`), list of layers, or clustered model.

  Raises:
    ValueError: a bad argument (named), an unsupported object or layer.
  """
  params = dict(n_clusters=number_of_clusters, init=_init_name(cluster_centroids_init),
                preserve_sparsity=preserve_sparsity, per_channel=cluster_per_channel)
  clustering.check_arguments(**params, names=dict(
      n_clusters="number_of_clusters", init="cluster_centroids_init",
      per_channel="cluster_per_channel"))
  if isinstance(to_cluster, list):
    return [cluster_weights(l, number_of_clusters, cluster_centroids_init,
                            preserve_sparsity, cluster_per_channel) for l in to_cluster]
  if isinstance(to_cluster, keras.Model):
    return tfprune.cluster(to_cluster, **params)
  if isinstance(to_cluster, keras.layers.Layer):
    # A Sequential model builds itself from its first layer's `input_shape=`.
    input_shape = getattr(to_cluster, "_input_shape_arg", None)
    if input_shape is not None and "input_shape" not in kwargs:
      kwargs["input_shape"] = input_shape
    return clustering.ClusterWrapper(to_cluster, **params, **kwargs)
  raise ValueError(
      f"`cluster_weights` can only cluster a keras.Sequential model, a Functional model, "
      f"a keras.layers.Layer or a list of layers; got {type(to_cluster).__name__}.")


def strip_clustering(
    to_strip: "keras.Model | keras.layers.Layer") -> "keras.Model | keras.layers.Layer":
  """Removes the clustering wrappers: plain layers holding the clustered weights.

  Args:
    to_strip: a clustered Sequential / Functional model, or a wrapped layer.

  Returns:
    For a model, a copy without wrappers (`tfprune.strip`); for a wrapped layer, its
    inner layer with the clustered weights (trainable again).
  """
  stripped = _pruning.strip_pruning(to_strip)   # a ClusterWrapper is a PruneWrapper
  if isinstance(to_strip, clustering.ClusterWrapper):
    for w in to_strip.prunable_weights:   # frozen while the centroids trained
      w.trainable = True
  return stripped


def cluster_scope() -> keras.utils.CustomObjectScope:
  """A `keras.utils.custom_object_scope` with the clustering wrapper (for loading files).

  Loading `.keras` files needs no scope (the wrapper is registered); TFMOT code that
  loads inside this scope keeps working.
  """
  return keras.utils.custom_object_scope({
      "ClusterWeights": clustering.ClusterWrapper,
      "tfprune>ClusterWrapper": clustering.ClusterWrapper})
