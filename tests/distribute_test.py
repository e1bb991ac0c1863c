"""tf.distribute tests on CPU with 2 logical devices (MirroredStrategy).

The two logical devices are configured by tests/conftest.py before TensorFlow
initialises its devices.

Checks: `fit` with magnitude, admm and l0_projection under MirroredStrategy gives the
same masks and (to float tolerance) the same weights as a single-device run with the
same global batch and seed, and every replica holds identical variables after every
step; a custom `strategy.run` loop; checkpoints restore on another replica count;
layer-wise G / C all-reduced over replicas equal the single-device statistics; clear
errors when pruning outside the strategy scope; `scope="structured"` magnitude on a small
conv net with synchronized BatchNorm picks the same channels on 2 replicas as on one
device and `strip(shrink=True)` of the mirrored model equals the masked one.
"""
# bazel-size: large
import sys

if __name__ == "__main__":  # run through pytest so tests/conftest.py configures devices first
  import pytest  # pylint: disable=g-import-not-at-top
  sys.exit(pytest.main([__file__]))

import keras  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

import tfprune
from tfprune import distribute
from tfprune import layerwise

if len(tf.config.list_logical_devices("CPU")) < 2:
  raise RuntimeError("tests/conftest.py must split the CPU into 2 logical devices before "
                     "TensorFlow initialises them.")

STRATEGY = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
_RNG = np.random.default_rng(0)
X = _RNG.normal(size=(192, 12)).astype("float32")
Y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype("int32")

METHOD_KWARGS = {
    "magnitude": dict(target_sparsity=0.75, scope="global",
                      schedule={"class_name": "PolynomialDecay", "config": dict(
                          initial_sparsity=0.0, final_sparsity=0.75, begin_step=0,
                          end_step=4, frequency=2)}),
    "admm": dict(target_sparsity=0.75, scope="global", admm_interval=2, rho0=1e-2),
    "l0_projection": dict(target_sparsity=0.75, scope="global"),
}


def _make_model():
  keras.utils.set_random_seed(0)
  return keras.Sequential([keras.Input((12,)), keras.layers.Dense(16, activation="relu"),
                           keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])


def _kwargs(name):
  kwargs = dict(METHOD_KWARGS[name])
  if "schedule" in kwargs:
    kwargs["schedule"] = tfprune.PolynomialDecay(**kwargs["schedule"]["config"])
  return kwargs


class _SyncCheck(keras.callbacks.Callback):
  """Asserts that every replica holds identical variables after every step."""

  def __init__(self):
    super().__init__()
    self.steps = 0

  def on_train_batch_end(self, batch, logs=None):
    diff = distribute.replicas_in_sync(self.model.weights)
    assert not diff, f"replicas diverged after step {self.steps}: {diff}"
    self.steps += 1


def _fit(name, strategy=None, fit_outside_scope=False):
  """Prunes and fits; returns (masks, weights, slots, replicas checked) as NumPy.

  With `fit_outside_scope`, `method.fit` is called after leaving the strategy scope (the
  recipe must enter the model's strategy itself).
  """
  scope = strategy.scope() if strategy is not None else _null()
  with scope:
    pruned = tfprune.prune(_make_model(), name, **_kwargs(name))
    method = tfprune.get_method(pruned)
    check = _SyncCheck()
  fit_scope = _null() if fit_outside_scope or strategy is None else strategy.scope()
  with fit_scope:
    method.fit(pruned, X, Y, epochs=2, batch_size=32, optimizer=keras.optimizers.SGD(0.1),
               verbose=0, callbacks=[check] if strategy is not None else [])
  slots = [v for wr in method.wrappers for vs in wr.slots.values() for v in vs]
  return ([m.numpy() for m in method.masks], [w.numpy() for w in method.weights],
          [s.numpy() for s in slots], check.steps, pruned)


class _null:  # pylint: disable=invalid-name
  def __enter__(self):
    return self

  def __exit__(self, *a):
    return False


@pytest.mark.parametrize("name,fit_outside_scope", [
    ("magnitude", False), ("admm", False), ("l0_projection", False), ("admm", True)])
def test_fit_mirrored_matches_single_device(name, fit_outside_scope):
  masks1, weights1, slots1, _, _ = _fit(name)
  masks2, weights2, slots2, steps, pruned = _fit(name, STRATEGY, fit_outside_scope)
  assert steps == 12  # 2 epochs x 6 batches, replicas compared after each
  assert isinstance(pruned.layers[0].masks[0].value, tf.distribute.DistributedValues)
  for a, b in zip(masks1, masks2):
    np.testing.assert_array_equal(a, b)
  total = sum(m.size for m in masks1)
  kept = sum(m.sum() for m in masks1)
  assert kept == int(np.ceil(0.25 * total - 1e-9))
  for a, b in zip(weights1, weights2):
    np.testing.assert_allclose(a, b, atol=2e-5)
  for a, b in zip(slots1, slots2):
    np.testing.assert_allclose(a, b, atol=2e-5)


def test_custom_loop_strategy_run_matches_single_device():
  def run(strategy):
    scope = strategy.scope() if strategy is not None else _null()
    with scope:
      pruned = tfprune.prune(_make_model(), "magnitude", **_kwargs("magnitude"))
      optimizer = keras.optimizers.SGD(0.1)
    method = tfprune.get_method(pruned)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction="sum")
    data = tf.data.Dataset.from_tensor_slices((X, Y)).batch(32)

    def replica_step(x, y):
      with tf.GradientTape() as tape:
        loss = loss_fn(y, pruned(x, training=True)) / 32.0  # global batch
      grads = tape.gradient(loss, pruned.trainable_variables)
      optimizer.apply_gradients(zip(grads, pruned.trainable_variables))

    if strategy is None:
      step = tf.function(replica_step)
      batches = data
    else:
      step = tf.function(lambda x, y: strategy.run(replica_step, args=(x, y)))
      batches = strategy.experimental_distribute_dataset(data)
    method.on_train_begin()
    for x, y in batches:
      method.on_train_step()  # cross-replica: masks computed once, written everywhere
      step(x, y)
      if strategy is not None:
        assert not distribute.replicas_in_sync(pruned.weights)
    method.on_train_end()
    return [m.numpy() for m in method.masks], [w.numpy() for w in method.weights]

  masks1, weights1 = run(None)
  masks2, weights2 = run(STRATEGY)
  for a, b in zip(masks1, masks2):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(weights1, weights2):
    np.testing.assert_allclose(a, b, atol=2e-5)


def test_checkpoint_restores_on_another_replica_count(tmp_path):
  _, _, _, _, mirrored = _fit("admm", STRATEGY)
  path = str(tmp_path / "mirrored.weights.h5")
  mirrored.save_weights(path)
  single = tfprune.prune(_make_model(), "admm", **_kwargs("admm"))
  single.load_weights(path)
  for a, b in zip(mirrored.weights, single.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  # And back: a single-device checkpoint into a 2-replica model (every replica).
  path2 = str(tmp_path / "single.weights.h5")
  for m in tfprune.get_method(single).masks:
    m.assign(tf.zeros_like(m))
  single.save_weights(path2)
  with STRATEGY.scope():
    again = tfprune.prune(_make_model(), "admm", **_kwargs("admm"))
  again.load_weights(path2)
  for m in tfprune.get_method(again).masks:
    assert all(not c.any() for c in distribute.replica_values(m))
  # tf.train.Checkpoint too (what BackupAndRestore / custom loops use).
  ckpt_path = tf.train.Checkpoint(model=mirrored).save(str(tmp_path / "ckpt"))
  plain = tfprune.prune(_make_model(), "admm", **_kwargs("admm"))
  tf.train.Checkpoint(model=plain).restore(ckpt_path).expect_partial()
  for a, b in zip(tfprune.get_method(mirrored).masks, tfprune.get_method(plain).masks):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_layerwise_stats_all_reduced_equal_single_device():
  keras.utils.set_random_seed(1)
  model = keras.Sequential([
      keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
      keras.layers.Flatten(), keras.layers.Dense(6)])
  xs = np.random.default_rng(1).normal(size=(40, 8, 8, 3)).astype("float32")
  layers = [model.layers[0], model.layers[2]]
  data = tf.data.Dataset.from_tensor_slices((xs, np.zeros(40))).batch(8)
  dist = layerwise.distributed_stats(STRATEGY, model, layers, data)
  extractor = keras.Model(model.inputs[0], [l.input for l in layers])
  for i, (layer, got) in enumerate(zip(layers, dist)):
    inputs = [extractor(xs[j:j + 8])[i] for j in range(0, 40, 8)]
    ref = layerwise.compute_stats(layer, inputs)
    assert got.n == ref.n
    np.testing.assert_allclose(got.gram, ref.gram, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.cross, ref.cross, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.y_sq, ref.y_sq, rtol=1e-5)
    np.testing.assert_allclose(got.y_colsum, ref.y_colsum, rtol=1e-5, atol=1e-6)
  # An already distributed dataset is accepted as is.
  again = layerwise.distributed_stats(STRATEGY, model, layers[1:],
                                 STRATEGY.experimental_distribute_dataset(data))
  np.testing.assert_allclose(again[0].gram, dist[1].gram, rtol=1e-6, atol=1e-7)


def test_layerwise_cascade_stats_all_reduced_equal_single_device():
  keras.utils.set_random_seed(2)
  make = lambda: keras.Sequential([keras.Input((10,)), keras.layers.Dense(7, activation="relu"),
                                   keras.layers.Dense(5)])
  original, pruned = make(), make()
  pruned.set_weights(original.get_weights())
  kernel = pruned.layers[0].kernel
  kernel.assign(kernel * (np.abs(kernel.numpy()) > 0.3))  # "pruned" first layer
  xs = np.random.default_rng(2).normal(size=(36, 10)).astype("float32")
  data = layerwise.calibration_dataset(xs, pruned, batch_size=12)
  (got,) = layerwise.distributed_stats(STRATEGY, pruned, [pruned.layers[1]], data,
                                  stats_dtype="float64", original_model=original,
                                  original_layers=[original.layers[1]])
  ext_p = keras.Model(pruned.inputs[0], pruned.layers[1].input)
  ext_o = keras.Model(original.inputs[0], original.layers[1].input)
  batches = [xs[j:j + 12] for j in range(0, 36, 12)]
  ref = layerwise.compute_stats(original.layers[1], [ext_p(b) for b in batches],
                                stats_dtype="float64",
                                xs_original=[ext_o(b) for b in batches])
  assert got.n == ref.n == 36
  np.testing.assert_allclose(got.gram, ref.gram, rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(got.cross, ref.cross, rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(got.y_sq, ref.y_sq, rtol=1e-10)
  with pytest.raises(ValueError, match="original_layers"):
    layerwise.distributed_stats(STRATEGY, pruned, [pruned.layers[1]], data,
                           original_model=original)


@pytest.mark.parametrize("mode", ["parallel", "cascade"])
def test_prune_layerwise_with_strategy_matches_single_device(mode):
  from tfprune.methods import l0 as l0_method  # pylint: disable=g-import-not-at-top
  xs = np.random.default_rng(3).normal(size=(128, 6, 6, 3)).astype("float32")

  def make():
    keras.utils.set_random_seed(3)
    return keras.Sequential([
        keras.Input((6, 6, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.Flatten(), keras.layers.Dense(8, activation="relu"),
        keras.layers.Dense(3)])

  single, dist = make(), make()
  kwargs = dict(sparsity=0.6, mode=mode, batch_size=64, verbose=False)
  rows1 = layerwise.prune_layerwise(single, xs, l0_method.IHTSolver(max_iter=100), **kwargs)
  data = tf.data.Dataset.from_tensor_slices(xs).batch(64)  # a tf.data calibration set
  rows2 = layerwise.prune_layerwise(dist, data, l0_method.IHTSolver(max_iter=100),
                                    strategy=STRATEGY, **kwargs)
  assert [r["n"] for r in rows1] == [r["n"] for r in rows2]
  for a, b in zip(single.get_weights(), dist.get_weights()):
    np.testing.assert_array_equal(a != 0, b != 0)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_strategy_path_rejects_what_the_single_device_path_rejects():
  from tfprune.methods import l0 as l0_method  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(4)
  inp = keras.Input((6,), name="features")
  model = keras.Model(inp, keras.layers.Dense(3)(inp))
  bad = {"wrong shape": (np.zeros((16, 7), "float32"), r"features.*\(batch,\) \+ \(6,\)"),
         "strings": (np.array([["a"] * 6] * 4), "numeric"),
         "dataset of wrong shape": (tf.data.Dataset.from_tensor_slices(
             np.zeros((8, 5), "float32")).batch(4), r"\(batch,\) \+ \(6,\)"),
         "empty": (np.zeros((0, 6), "float32"), "empty")}
  for name, (data, match) in bad.items():
    for strategy in (None, STRATEGY):
      with pytest.raises(ValueError, match=match):
        layerwise.prune_layerwise(model, data, l0_method.IHTSolver(), verbose=False,
                                  strategy=strategy)
    with pytest.raises(ValueError, match=match):  # checked before any pass, by both
      list(layerwise.calibration_batches(data, model))
    with pytest.raises(ValueError, match=match):
      layerwise.calibration_dataset(data, model)


def test_clear_errors_outside_the_scope():
  with STRATEGY.scope():
    mirrored_model = _make_model()
  with pytest.raises(ValueError, match="strategy.scope"):
    tfprune.prune(mirrored_model, "magnitude", target_sparsity=0.5)
  with STRATEGY.scope():
    tfprune.prune(mirrored_model, "magnitude", target_sparsity=0.5)  # fine inside
  plain = tfprune.prune(_make_model(), "magnitude", target_sparsity=0.5)
  method = tfprune.get_method(plain)
  with STRATEGY.scope():
    with pytest.raises(ValueError, match="not mirrored"):
      distribute.check_method_strategy(method)
  distribute.check_method_strategy(method)  # single device: fine


@pytest.mark.parametrize("name,kwargs", [
    ("l0_gates", dict(target_sparsity=0.5)),
    ("sap", dict(rounds=2, epochs_per_round=1))])
def test_gates_and_sap_fit_keep_replicas_identical(name, kwargs):
  with STRATEGY.scope():
    pruned = tfprune.prune(_make_model(), name, **kwargs)
    method = tfprune.get_method(pruned)
    check = _SyncCheck()
    method.fit(pruned, X[:96], Y[:96], epochs=2, batch_size=32, verbose=0,
               callbacks=[check])
  assert check.steps >= 6
  assert not distribute.replicas_in_sync(pruned.weights)
  assert 0.0 < method.diagnostics()["sparsity"] < 1.0


def test_call_in_cross_replica_runs_once_and_writes_all_replicas():
  with STRATEGY.scope():
    v = tf.Variable(0.0)
    calls = tf.Variable(0.0)

  def update():
    calls.assign_add(1.0)  # cross-replica assign on a mirrored var: all replicas
    v.assign(v + 1.0)

  @tf.function
  def step():
    STRATEGY.run(lambda: distribute.call_in_cross_replica(update))

  step()
  step()
  assert [float(c) for c in distribute.replica_values(v)] == [2.0, 2.0]
  assert [float(c) for c in distribute.replica_values(calls)] == [2.0, 2.0]



XC = _RNG.normal(size=(64, 8, 8, 3)).astype("float32")
YC = (XC[:, :4, :4, 0].mean((1, 2)) > XC[:, 4:, 4:, 1].mean((1, 2))).astype("int32")


def _conv_model():
  """Conv-BN-ReLU x2 with a residual Add, pooled to a Dense head (8x8x3 -> 2).

  BatchNormalization is `synchronized` so that 2 replicas of 16 see the statistics of
  the global batch of 32, as the single-device run does (unsynchronized BN would
  normalise each half-batch on its own and the two runs would differ by design).
  """
  keras.utils.set_random_seed(5)
  inp = keras.Input((8, 8, 3))
  x = keras.layers.Conv2D(8, 3, padding="same", name="c1")(inp)
  x = keras.layers.BatchNormalization(synchronized=True, name="bn1")(x)
  x = keras.layers.ReLU()(x)
  y = keras.layers.Conv2D(8, 3, padding="same", name="c2")(x)
  y = keras.layers.BatchNormalization(synchronized=True, name="bn2")(y)
  x = keras.layers.ReLU()(keras.layers.Add()([x, y]))
  x = keras.layers.Conv2D(12, 3, padding="same", activation="relu", name="c3")(x)
  x = keras.layers.GlobalAveragePooling2D()(x)
  return keras.Model(inp, keras.layers.Dense(2, name="logits")(x))


def _fit_structured(strategy=None):
  """Structured magnitude at 0.5 fitted for 2 epochs; returns (masks, pruned, method)."""
  scope = strategy.scope() if strategy is not None else _null()
  with scope:
    pruned = tfprune.prune(
        _conv_model(), "magnitude", scope="structured", target_sparsity=0.5,
        schedule=tfprune.PolynomialDecay(0.0, 0.5, begin_step=2, end_step=3, frequency=1))
    method = tfprune.get_method(pruned)
    check = _SyncCheck()
    method.fit(pruned, XC, YC, epochs=2, batch_size=32, optimizer=keras.optimizers.SGD(0.5),
               verbose=0, callbacks=[check] if strategy is not None else [])
  if strategy is not None:
    assert check.steps == 4  # replicas compared after each of the 2 x 2 steps
  return [m.numpy() for m in method.masks], pruned, method


def test_structured_scope_mirrored_matches_single_device_and_shrinks():
  masks1, pruned1, _ = _fit_structured()
  masks2, pruned2, method2 = _fit_structured(STRATEGY)
  assert isinstance(pruned2.get_layer("prune_c1").masks[0].value, tf.distribute.DistributedValues)
  assert not distribute.replicas_in_sync(pruned2.weights)
  # The masks were computed at steps 2 and 3 from trained weights (other channels than
  # the initial weights would give): the same channels on 2 replicas as on one device.
  at_init = tfprune.prune(_conv_model(), "magnitude", scope="structured", target_sparsity=0.5,
                          schedule=tfprune.ConstantSparsity(0.5, 0, frequency=1))
  tfprune.get_method(at_init).update(0)
  assert any(not np.array_equal(a.numpy(), b)
             for a, b in zip(tfprune.get_method(at_init).masks, masks2))
  assert len(masks1) == len(masks2) > 0
  for a, b in zip(masks1, masks2):
    np.testing.assert_array_equal(a, b)
  removed = sum(float((m == 0).mean()) for m in masks2) / len(masks2)
  assert 0.2 < removed < 0.8, removed
  for a, b in zip(pruned1.get_weights(), pruned2.get_weights()):
    np.testing.assert_allclose(a, b, atol=1e-4)
  # strip(shrink=True) of the mirrored model: smaller, and exactly the masked model.
  masked = tfprune.strip(pruned2)
  small = tfprune.strip(pruned2, shrink=True)
  assert small.count_params() < 0.8 * masked.count_params()
  assert small.get_layer("c1").filters < 8 or small.get_layer("c3").filters < 12
  a = np.asarray(masked.predict(XC, verbose=0))
  b = np.asarray(small.predict(XC, verbose=0))
  np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * np.abs(a).max())
  assert method2.diagnostics()["sparsity"] > 0
