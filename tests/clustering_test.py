"""Weight clustering (`tfprune.cluster`, `ClusterWrapper`, `tfmot.clustering.keras`).

Deep Compression's trained weight sharing (docs/algorithms.md section 10): at most
`n_clusters` distinct values per kernel (per channel) after `strip`, zeros kept exactly
with `preserve_sparsity`, centroids trained by `fit` and custom loops, save / load, a
Keras application we did not design, and int8 micro export of the stripped model.
"""
import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tfprune import _liveness
from tfprune import clustering
import tfprune.compat.tfmot as tfmot

import hub_models  # pylint: disable=g-bad-import-order  (tests/: tiny keras_hub configs)

L = keras.layers


def _conv_model(functional=True, seed=0):
  keras.utils.set_random_seed(seed)
  if not functional:
    return keras.Sequential([
        keras.Input((8, 8, 3)), L.Conv2D(8, 3, activation="relu"), L.DepthwiseConv2D(3),
        L.Flatten(), L.Dense(4)])
  inp = keras.Input((8, 8, 3))
  x = L.Conv2D(8, 3, activation="relu")(inp)
  y = L.DepthwiseConv2D(3, padding="same")(x)
  x = L.Add()([x, y])
  x = L.Conv2DTranspose(4, 2)(x)
  x = L.GlobalAveragePooling2D()(x)
  return keras.Model(inp, L.Dense(4)(x))


def _data(n=32, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(n, 8, 8, 3)).astype("float32"),
          rng.normal(size=(n, 4)).astype("float32"))


def _pruned(model, sparsity=0.5, seed=0):
  """A pruned and stripped copy of `model`: half of every kernel exactly zero."""
  rng = np.random.default_rng(seed)
  pruned = tfprune.prune(model)
  for wrapper in tfprune.model.find_wrappers(pruned):
    wrapper.set_masks([rng.random(w.shape) >= sparsity for w in wrapper.prunable_weights])
  return tfprune.strip(pruned)


def _kernels(model):
  """{layer name: (layer, kernel array)} of the plain model's clustered layers."""
  out = {}
  for layer in model.layers:
    if isinstance(layer, (L.Dense, L.Conv2D, L.DepthwiseConv2D, L.Conv2DTranspose)):
      out[layer.name] = (layer, np.asarray(layer.kernel.numpy()))
  return out


def _per_channel(layer, kernel):
  """The kernel as `[members, channels]` over its output channels."""
  axes = clustering.channel_axes(layer, layer.kernel)
  perm = [d for d in range(kernel.ndim) if d not in axes] + list(axes)
  return np.transpose(kernel, perm).reshape(-1, int(np.prod([kernel.shape[a] for a in axes])))


def _run(model, x):
  return keras.ops.convert_to_numpy(model(x, training=False))


def _fit(model, x, y, epochs=3, lr=1e-2):
  model.compile(keras.optimizers.Adam(lr), "mse")
  return model.fit(x, y, epochs=epochs, batch_size=8, verbose=0).history["loss"]


def test_kmeans_1d_finds_the_clusters():
  values = np.concatenate([np.full(5, -1.0), np.full(3, 0.5), np.full(4, 2.0)])
  values = values + np.random.default_rng(0).normal(scale=1e-3, size=values.size)
  for init in clustering.INITS:
    centroids = np.sort(clustering.kmeans_1d(values, 3, init))
    np.testing.assert_allclose(centroids, [-1.0, 0.5, 2.0], atol=2e-3, err_msg=init)
  # Fewer distinct values than clusters: each is its own centroid.
  assert set(clustering.kmeans_1d(np.array([1.0, 2.0, 2.0]), 4)) == {1.0, 2.0}
  assert clustering.nearest(np.array([-3.0, 0.4, 9.0]), np.array([2.0, 0.0])).tolist() == [
      1, 1, 0]


@pytest.mark.parametrize("per_channel, functional", [(False, False), (True, True)])
def test_strip_leaves_at_most_n_clusters_values(per_channel, functional):
  model = _conv_model(functional)
  x, y = _data()
  clustered = tfprune.cluster(model, n_clusters=6, per_channel=per_channel,
                              preserve_sparsity=False)
  assert all(isinstance(l, tfprune.ClusterWrapper) for l in clustered.layers
             if l.weights and not isinstance(l, L.Add))
  losses = _fit(clustered, x, y, epochs=2)
  assert np.isfinite(losses).all()
  stripped = tfprune.strip(clustered)
  assert not any(isinstance(l, tfprune.PruneWrapper) for l in stripped.layers)
  np.testing.assert_allclose(_run(stripped, x), _run(clustered, x),
                             rtol=1e-5, atol=1e-6)
  _liveness.check_alive(stripped, "test")
  kernels = _kernels(stripped)
  assert len(kernels) == (4 if functional else 3)
  for name, (layer, kernel) in kernels.items():
    if per_channel:
      view = _per_channel(layer, kernel)
      counts = [len(np.unique(view[:, c])) for c in range(view.shape[1])]
      assert max(counts) <= 6, (name, counts)
      # Channels have their own centroids: the kernel as a whole has more values.
      if view.shape[0] > 6:
        assert len(np.unique(kernel)) > 6, name
    else:
      assert 2 <= len(np.unique(kernel)) <= 6, name
  # The original model is untouched and clustering is not the identity.
  dense = model.layers[-1].kernel.numpy()
  assert len(np.unique(dense)) == dense.size


def test_preserve_sparsity_keeps_the_pruned_zeros_through_training():
  x, y = _data()
  sparse = _pruned(_conv_model())
  before = {n: k == 0 for n, (_, k) in _kernels(sparse).items()}
  assert all(0.3 < z.mean() < 0.7 for z in before.values())
  for preserve in (True, False):
    clustered = tfprune.cluster(sparse, n_clusters=8, preserve_sparsity=preserve)
    _fit(clustered, x, y, epochs=2, lr=3e-2)
    if preserve:  # the report reads the clustered weights and the sparsity mask
      rows = tfprune.sparsity_report(clustered, print_table=False)
      assert sorted(r["sparsity"] for r in rows) == pytest.approx(
          sorted(float(z.mean()) for z in before.values()))
    after = _kernels(tfprune.strip(clustered))
    for name, (_, kernel) in after.items():
      distinct = np.unique(kernel)
      assert len(distinct) <= 8, name
      if preserve:
        np.testing.assert_array_equal(kernel == 0, before[name], err_msg=name)
        assert 0.0 in distinct
    if not preserve:  # zeros are clustered and trained like any weight: not kept
      assert sum(int((k == 0).sum()) for _, k in after.values()) < sum(
          int(z.sum()) for z in before.values())


def test_centroids_train_under_fit_and_the_kernel_is_frozen():
  model = _conv_model()
  x, _ = _data(64)
  y = 3.0 * _run(model, x)  # reachable: scale the centroids (and biases)
  clustered = tfprune.cluster(model, n_clusters=4)
  wrappers = clustering.find_cluster_wrappers(clustered)
  start = [c.numpy().copy() for w in wrappers for c in w.centroids]
  kernels = [k.numpy().copy() for w in wrappers for k in w.prunable_weights]
  trainable = {id(v) for v in clustered.trainable_weights}
  assert all(id(c) in trainable for w in wrappers for c in w.centroids)
  assert not any(id(k) in trainable for w in wrappers for k in w.prunable_weights)
  losses = _fit(clustered, x, y, epochs=4)
  assert losses[-1] < 0.7 * losses[0], losses
  moved = [np.abs(c.numpy() - s).max() for w in wrappers for c in w.centroids
           for s in [start.pop(0)]]
  assert min(moved) > 1e-4, moved
  for w in wrappers:
    for k in w.prunable_weights:
      np.testing.assert_array_equal(k.numpy(), kernels.pop(0))


def test_custom_training_loop(tmp_path):
  x, y = _data(32)
  clustered = tfprune.cluster(_conv_model(functional=False), n_clusters=4, per_channel=True)
  optimizer = keras.optimizers.SGD(0.05)
  wrapper = clustering.find_cluster_wrappers(clustered)[0]
  start = wrapper.centroids[0].numpy().copy()

  @tf.function
  def step(xb, yb):
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(tf.square(clustered(xb, training=True) - yb))
    grads = tape.gradient(loss, clustered.trainable_variables)
    optimizer.apply(grads, clustered.trainable_variables)
    return loss

  losses = [float(step(x, y)) for _ in range(15)]
  assert losses[-1] < losses[0], losses
  assert np.abs(wrapper.centroids[0].numpy() - start).max() > 1e-4
  # tf.train.Checkpoint (custom loops) saves and restores the centroids and assignments.
  path = tf.train.Checkpoint(model=clustered).write(str(tmp_path / "ckpt"))
  other = tfprune.cluster(_conv_model(functional=False, seed=1), n_clusters=4,
                          per_channel=True)
  tf.train.Checkpoint(model=other).read(path).assert_existing_objects_matched()
  np.testing.assert_array_equal(_run(other, x), _run(clustered, x))
  # The centroid gradient is the sum of its members' gradients (the gather's).
  kernel = wrapper.prunable_weights[0]
  with tf.GradientTape(persistent=True) as tape:
    effective = wrapper.clustered_weights()[0]
    tape.watch(effective)
    with keras.StatelessScope(state_mapping=[(kernel, effective)]):
      loss = tf.reduce_sum(tf.square(wrapper.layer(x[:4])))
  g_centroids = tape.gradient(loss, wrapper.centroids[0]).numpy()
  g_weights = tape.gradient(loss, effective).numpy()
  view = _per_channel(wrapper.layer, g_weights)
  members = _per_channel(wrapper.layer, wrapper.assignments[0].numpy())
  for c in range(view.shape[1]):
    expected = np.bincount(members[:, c], weights=view[:, c], minlength=3)
    np.testing.assert_allclose(g_centroids[c], expected, rtol=1e-4, atol=1e-5)


def test_save_load_round_trip(tmp_path):
  x, y = _data()
  clustered = tfprune.cluster(_pruned(_conv_model()), n_clusters=8, per_channel=True,
                              init="linear")
  _fit(clustered, x, y, epochs=1)
  path = str(tmp_path / "clustered.keras")
  clustered.save(path)
  loaded = keras.models.load_model(path)
  np.testing.assert_array_equal(_run(loaded, x), _run(clustered, x))
  for a, b in zip(clustering.find_cluster_wrappers(loaded),
                  clustering.find_cluster_wrappers(clustered)):
    assert (a.n_clusters, a.per_channel, a.init) == (8, True, "linear")
    np.testing.assert_array_equal(a.assignments[0].numpy(), b.assignments[0].numpy())
    np.testing.assert_array_equal(a.masks[0].numpy(), b.masks[0].numpy())
  np.testing.assert_array_equal(_run(tfprune.strip(loaded), x), _run(clustered, x))


def test_a_keras_application_clusters_and_strips():
  keras.utils.set_random_seed(0)
  # Logits, not softmax: with random weights the softmax of this model is uniform to
  # float precision, which would make the liveness and equality checks vacuous.
  model = keras.applications.MobileNetV2(alpha=0.35, input_shape=(32, 32, 3), weights=None,
                                         classes=10, classifier_activation=None)
  clustered = tfprune.cluster(model, n_clusters=16)
  wrappers = clustering.find_cluster_wrappers(clustered)
  assert len(wrappers) == len([l for l in model.layers
                               if isinstance(l, (L.Conv2D, L.DepthwiseConv2D, L.Dense))])
  stripped = tfprune.strip(clustered)
  _liveness.check_alive(stripped, "test")
  x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
  out = _run(stripped, x)
  assert np.abs(out[0] - out[1]).max() > 1e-3 * np.abs(out).max() > 0  # depends on x
  np.testing.assert_allclose(out, _run(clustered, x), rtol=1e-4,
                             atol=1e-5 * np.abs(out).max())
  for layer in stripped.layers:
    if isinstance(layer, (L.Conv2D, L.DepthwiseConv2D, L.Dense)):
      assert len(np.unique(layer.kernel.numpy())) <= 16, layer.name


def test_a_keras_hub_backbone_clusters_per_channel(tmp_path):
  model = hub_models.build("BertBackbone")
  x = hub_models.data(model, 2)
  clustered = tfprune.cluster(model, n_clusters=8, per_channel=True)
  wrappers = clustering.find_cluster_wrappers(clustered)
  assert len(wrappers) >= 4  # embeddings, attention, feed-forward
  stripped = tfprune.strip(clustered)
  _liveness.check_alive(stripped, "test")
  for a, b in zip(hub_models.flat_outputs(stripped(x)), hub_models.flat_outputs(clustered(x))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
  for wrapper in wrappers:
    for w, value in zip(wrapper.prunable_weights, wrapper.clustered_weights()):
      axes = clustering.channel_axes(clustering._owner(wrapper.layer, w), w)  # pylint: disable=protected-access
      perm = [d for d in range(len(w.shape)) if d not in axes] + list(axes)
      view = np.transpose(value.numpy(), perm).reshape(-1, int(np.prod(
          [w.shape[d] for d in axes])))
      assert max(len(np.unique(view[:, c])) for c in range(view.shape[1])) <= 8, w.path
  path = str(tmp_path / "bert.keras")
  clustered.save(path)
  loaded = keras.models.load_model(path)
  for a, b in zip(hub_models.flat_outputs(loaded(x)), hub_models.flat_outputs(clustered(x))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_int8_micro_export_and_per_channel_int8_values():
  from tfprune import export  # pylint: disable=g-import-not-at-top
  x, y = _data(32)
  keras.utils.set_random_seed(0)
  model = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(16, 3, activation="relu"),
                            L.Flatten(), L.Dense(32, activation="relu"), L.Dense(4)])
  clustered = tfprune.cluster(_pruned(model), n_clusters=16, per_channel=True)
  _fit(clustered, x, y, epochs=1)
  stripped = tfprune.strip(clustered)
  # What TFLM's per-channel LUT reads: symmetric per-channel int8 (scale max|w| / 127)
  # keeps at most n_clusters values per output channel, zero among them.
  for name, (layer, kernel) in _kernels(stripped).items():
    view = _per_channel(layer, kernel)
    scale = np.maximum(np.abs(view).max(axis=0), 1e-12) / 127.0
    q = np.clip(np.round(view / scale), -127, 127).astype(np.int8)
    counts = [len(np.unique(q[:, c])) for c in range(q.shape[1])]
    assert max(counts) <= 16, (name, counts)
    assert all(0 in q[:, c] for c in range(q.shape[1]) if (view[:, c] == 0).any())
  kwargs = dict(target="micro", quantize="int8", representative_data=x,
                fc_quantization="per_channel")
  result = export.convert(stripped, **kwargs)
  assert len(result.model_bytes) > 0
  if "compress" not in inspect.signature(export.convert).parameters:
    pytest.skip("tfprune.export.convert has no `compress` argument yet (issue 27 item 1): "
                "the LUT size assertion is skipped")
  lut = export.convert(stripped, compress="lut", **kwargs)
  assert len(lut.model_bytes) < len(result.model_bytes)
  # The per-channel int8 FC weight [32, 576] takes 4-bit LUT indices (16 values).
  fc = [t for t in getattr(lut.memory, "tensors", []) if tuple(t.shape) == (32, 576)]
  assert [t.encoding for t in fc] == ["lut4"], fc


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_clusters=1), "n_clusters"), (dict(n_clusters=257), "n_clusters"),
    (dict(n_clusters=4.0), "n_clusters"), (dict(n_clusters=True), "n_clusters"),
    (dict(init="kmeans"), "init"), (dict(preserve_sparsity="yes"), "preserve_sparsity"),
    (dict(per_channel=None), "per_channel"), (dict(layers=["nope"]), "nope"),
])
def test_bad_arguments_are_named(kwargs, match):
  with pytest.raises(ValueError, match=match):
    tfprune.cluster(_conv_model(functional=False), **kwargs)


def test_wrapped_models_are_refused():
  clustered = tfprune.cluster(_conv_model(functional=False), n_clusters=4)
  with pytest.raises(ValueError, match="tfprune.strip"):
    tfprune.cluster(clustered)
  with pytest.raises(ValueError, match="tfprune.strip"):
    tfprune.cluster(tfprune.prune(_conv_model(functional=False)))


def test_tfmot_clustering_api():
  cl = tfmot.clustering.keras
  x, _ = _data()
  sparse = _pruned(_conv_model(functional=False))
  clustered = cl.cluster_weights(
      sparse, number_of_clusters=8,
      cluster_centroids_init=cl.CentroidInitialization.DENSITY_BASED, preserve_sparsity=True)
  assert {w.init for w in clustering.find_cluster_wrappers(clustered)} == {"density"}
  stripped = cl.strip_clustering(clustered)
  np.testing.assert_allclose(_run(stripped, x), _run(clustered, x), rtol=1e-5, atol=1e-6)
  for name, (_, kernel) in _kernels(stripped).items():
    assert len(np.unique(kernel)) <= 8, name
    np.testing.assert_array_equal(kernel == 0, _kernels(sparse)[name][1] == 0)
  # Layer by layer, in a Sequential model, as TFMOT's guide does.
  keras.utils.set_random_seed(0)
  model = keras.Sequential([
      cl.cluster_weights(L.Dense(16, activation="relu", input_shape=(8,)), 4,
                         cluster_centroids_init="CentroidInitialization.LINEAR"),
      L.Dense(2)])
  model.compile("adam", "mse")
  model.fit(np.ones((8, 8)), np.ones((8, 2)), epochs=1, verbose=0)
  assert len(np.unique(model.layers[0].clustered_weights()[0].numpy())) <= 4
  layer = cl.strip_clustering(model.layers[0])
  assert isinstance(layer, L.Dense) and len(np.unique(layer.kernel.numpy())) <= 4
  assert layer.kernel.trainable
  with cl.cluster_scope():
    pass
  # tfprune's own API takes TFMOT's enum too.
  wrapper = tfprune.ClusterWrapper(L.Dense(3), init=cl.CentroidInitialization.LINEAR)
  assert wrapper.init == "linear" and type(wrapper.init) is str
  with pytest.raises(ValueError, match="number_of_clusters"):
    cl.cluster_weights(sparse, number_of_clusters=300)
  with pytest.raises(ValueError, match="init"):
    cl.cluster_weights(sparse, 8, cluster_centroids_init="MEDIAN")
