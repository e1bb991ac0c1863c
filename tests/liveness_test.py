"""Never a dead model: the layer floor of every allocation across layers, LAMP, the
liveness check of `strip` and the exporter, and `sparsity_report`'s DEAD mark (issue 25)."""
import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tfprune import _liveness
from tfprune import masks


def _repro():
  """The issue's repro: a first layer 20x smaller in scale than the others."""
  keras.utils.set_random_seed(0)
  i = keras.Input((16,))
  h = keras.layers.Dense(64, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                         name="small")(i)
  h = keras.layers.Dense(64, name="mid")(h)
  return keras.Model(i, keras.layers.Dense(4, name="out")(h))


def _data(n=64):
  rng = np.random.default_rng(0)
  return (rng.normal(size=(n, 16)).astype(np.float32),
          rng.integers(0, 4, size=(n,)).astype(np.int32))


def _fit(pruned, epochs=1):
  x, y = _data()
  optimizer = tfprune.get_method(pruned).prepare_optimizer(keras.optimizers.Adam(1e-3))
  pruned.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  pruned.fit(x, y, epochs=epochs, batch_size=32, verbose=0,
             callbacks=[tfprune.PruningCallback()])


def _prune_now(pruned, sparsity=0.8):
  """The masks of a pruning step at `sparsity`, without training (fast)."""
  tfprune.get_method(pruned).update_masks(sparsity)
  return pruned


def _nonzeros(model):
  return {r["layer"]: r["nonzeros"] for r in tfprune.sparsity_report(model, False)}


def _output_depends_on_input(model):
  a, b = _data(4)[0], _data(8)[0][4:]
  return float(np.max(np.abs(model(a) - model(b)))) > 0.0


# ------------------------------------------------------------------- the repro
def test_repro_global_magnitude_keeps_every_layer_alive_by_default():
  pruned = tfprune.prune(_repro(), "magnitude", target_sparsity=0.8, scope="global")
  _fit(pruned)
  stripped = tfprune.strip(pruned)
  nz = _nonzeros(stripped)
  # The floor: the largest weight of each of the 64 output units (and 16 input rows).
  assert nz["small"] >= 64, nz
  assert _output_depends_on_input(stripped)
  # The total is still the target's exact count (the floor takes from the others).
  assert sum(nz.values()) == int(masks.keep_count(16 * 64 + 64 * 64 + 64 * 4, 0.8))


def test_max_pruning_ratio_one_allows_emptying_then_strip_raises_naming_the_layer():
  pruned = _prune_now(tfprune.prune(_repro(), "magnitude", target_sparsity=0.8,
                                    scope="global", max_pruning_ratio=1.0))
  rows = tfprune.sparsity_report(pruned, print_table=False)
  dead = [r["layer"] for r in rows if r["dead"]]
  assert dead == ["small"]
  text = tfprune.report.format_report(rows)
  assert "DEAD" in [line for line in text.splitlines() if line.startswith("small")][0]
  assert "DEAD (100% sparse" in text
  with pytest.raises(tfprune.DeadModelError, match=r"small/kernel"):
    tfprune.strip(pruned)
  assert issubclass(tfprune.DeadModelError, ValueError)


def test_max_pruning_ratio_caps_each_tensor():
  pruned = _prune_now(tfprune.prune(_repro(), "magnitude", target_sparsity=0.8,
                                    scope="global", max_pruning_ratio=0.9))
  nz = _nonzeros(pruned)
  assert nz["small"] >= int(np.ceil(0.1 * 1024)), nz
  assert sum(nz.values()) == int(masks.keep_count(5376, 0.8))


@pytest.mark.parametrize("kwargs", [
    dict(scope="block", allocation="global"),  # without the floor: small has 0
    dict(scope="structured"),
], ids=["block-global", "structured"])
def test_magnitude_scopes_keep_every_layer_alive(kwargs):
  pruned = _prune_now(tfprune.prune(_repro(), "magnitude", target_sparsity=0.8, **kwargs))
  assert all(v > 0 for v in _nonzeros(pruned).values()), _nonzeros(pruned)
  stripped = tfprune.strip(pruned, shrink=kwargs["scope"] == "structured")
  assert _output_depends_on_input(stripped)


def test_movement_global_keeps_every_layer_alive():
  pruned = tfprune.prune(_repro(), "movement", target_sparsity=0.97, scope="global",
                         pruning_steps=2, frequency=1)
  _fit(pruned, epochs=2)
  nz = _nonzeros(pruned)
  assert nz["small"] >= 16 and nz["mid"] >= 64 and nz["out"] >= 4, nz
  assert _output_depends_on_input(tfprune.strip(pruned))


@pytest.mark.parametrize("ratio, small", [(None, 64), (1.0, 0)])
def test_admm_global_projection_keeps_every_layer_alive(ratio, small):
  pruned = tfprune.prune(_repro(), "admm", target_sparsity=0.9, scope="global",
                         max_pruning_ratio=ratio)
  method = tfprune.get_method(pruned)
  z, _ = method.project([w.value for w in method.weights])
  kept = [int(np.count_nonzero(v.numpy())) for v in z]
  assert (kept[0] >= 64) if small else (kept[0] == 0), kept  # 0: the plain projection
  assert sum(kept) == int(masks.keep_count(5376, 0.9))


def test_sap_global_keeps_every_layer_alive():
  x, y = _data()
  pruned = tfprune.prune(_repro(), "sap", scope="global", rounds=2, epochs_per_round=1,
                         gamma=4.0, beta=0.95)
  tfprune.get_method(pruned).fit(pruned, x, y, batch_size=32, verbose=0)
  assert all(v > 0 for v in _nonzeros(pruned).values()), _nonzeros(pruned)
  assert _output_depends_on_input(tfprune.strip(pruned))


def test_layerwise_global_allocation_keeps_every_layer_alive():
  x, _ = _data()
  pruned = tfprune.prune(_repro(), "logsum", target_sparsity=0.99, scope="global",
                         calibration_samples=64, max_iter=200)
  tfprune.get_method(pruned).apply(pruned, x, verbose=False)
  nz = _nonzeros(pruned)
  # Without the floor: small 14, mid 22 (below min(fan_in, fan_out) = 16 and 64).
  assert nz["small"] >= 16 and nz["mid"] >= 64 and nz["out"] >= 4, nz
  assert _output_depends_on_input(tfprune.strip(pruned))


def test_structured_groups_never_remove_a_whole_layer():
  pruned = _prune_now(tfprune.prune(_repro(), "magnitude", target_sparsity=0.99,
                                    scope="structured"), 0.99)
  method = tfprune.get_method(pruned)
  for wrapper in tfprune.model.find_wrappers(pruned):
    kernel = (wrapper.prunable_weights[0] * wrapper.masks[0]).numpy()
    assert np.any(kernel, axis=0).sum() >= method.channels.min_units, wrapper.name
  assert _output_depends_on_input(tfprune.strip(pruned, shrink=True))


def test_structured_max_pruning_ratio_caps_each_group():
  pruned = _prune_now(tfprune.prune(_repro(), "magnitude", target_sparsity=0.8,
                                    scope="structured", max_pruning_ratio=0.5))
  for name in ("small", "mid"):  # their output channels are the two prunable groups
    wrapper = [w for w in tfprune.model.find_wrappers(pruned) if w.layer.name == name][0]
    kernel = (wrapper.prunable_weights[0] * wrapper.masks[0]).numpy()
    assert np.any(kernel, axis=0).sum() >= 32, name


# ------------------------------------------------------------------- the maths
def test_floor_is_a_no_op_when_no_tensor_is_below_its_trigger():
  rng = np.random.default_rng(3)
  scores = [tf.constant(np.abs(rng.normal(size=s)).astype(np.float32))
            for s in [(64, 32), (32, 16)]]
  k = masks.keep_count(64 * 32 + 32 * 16, 0.7)
  plain = tfprune.topk.global_topk_masks(scores, k)
  floored = masks.global_masks(scores, k)
  for p, f in zip(plain, floored):
    np.testing.assert_array_equal(p.numpy(), f.numpy())


def test_path_floor_covers_every_row_and_column_and_depthwise_channels():
  rng = np.random.default_rng(4)
  dense = tf.constant(np.abs(rng.normal(size=(16, 64))).astype(np.float32) * 1e-3)
  depthwise = tf.constant(np.abs(rng.normal(size=(3, 3, 8, 1))).astype(np.float32) * 1e-3)
  big = tf.constant(np.abs(rng.normal(size=(64, 64))).astype(np.float32))
  fn = tf.function(lambda a, b, c: masks.compute_masks([a, b, c], 0.9, scope="global"))
  md, mdw, mb = [m.numpy() for m in fn(dense, depthwise, big)]
  assert md.any(axis=0).all() and md.any(axis=1).all()
  assert mdw.reshape(9, 8).any(axis=0).all()  # every depthwise channel alive
  assert int(md.sum() + mdw.sum() + mb.sum()) == int(masks.keep_count(1024 + 72 + 4096, 0.9))


def test_floor_keep_counts_raise_and_rebalance():
  floors = masks.layer_floor([tf.ones([16, 64]), tf.ones([64, 64])])
  # Ties: the first row / column wins, so the 64 + 16 picks overlap in one entry.
  assert masks.floor_keep_counts([0, 1000], floors) == [79, 921]
  assert masks.floor_keep_counts([20, 980], floors) == [20, 980]  # above the trigger


def test_lamp_scores_match_the_paper_formula():
  w = np.array([[0.5, -2.0], [1.0, 0.1]], np.float32)
  got = masks.lamp_scores([tf.constant(np.abs(w))])[0].numpy()
  sq = np.sort((w ** 2).ravel())
  ref = {v: v / sq[i:].sum() for i, v in enumerate(sq)}
  np.testing.assert_allclose(got, np.vectorize(ref.get)(w ** 2), rtol=1e-6)
  assert got.max() == 1.0


def test_lamp_prunes_across_scales_and_serializes(tmp_path):
  pruned = _prune_now(tfprune.prune(_repro(), "magnitude", target_sparsity=0.8,
                                    scope="global", global_score="lamp"))
  nz = _nonzeros(pruned)
  assert nz["small"] > 0.1 * 1024, nz  # LAMP ignores the 20x smaller scale
  method = tfprune.get_method(pruned)
  config = method.get_config()
  assert config["global_score"] == "lamp"
  assert type(method).from_config(config).global_score == "lamp"
  path = os.path.join(tmp_path, "lamp.keras")
  pruned.save(path)
  loaded = keras.models.load_model(path)
  assert tfprune.get_method(loaded).global_score == "lamp"
  np.testing.assert_allclose(loaded(_data(4)[0]), pruned(_data(4)[0]), atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_pruning_ratio=0.0), "max_pruning_ratio must be"),
    (dict(max_pruning_ratio=1.5), "max_pruning_ratio must be"),
    (dict(max_pruning_ratio="x"), "max_pruning_ratio must be"),
    (dict(scope="layer", max_pruning_ratio=0.5), "caps the fraction removed"),
    (dict(scope="layer", global_score="lamp"), "needs an allocation across layers"),
    (dict(global_score="l2"), "Unknown global_score"),
])
def test_arguments_are_validated(kwargs, match):
  kwargs = {"scope": "global", **kwargs}
  with pytest.raises(ValueError, match=match):
    tfprune.prune(_repro(), "magnitude", target_sparsity=0.8, **kwargs)


def test_max_pruning_ratio_round_trips_in_the_config():
  pruned = tfprune.prune(_repro(), "magnitude", target_sparsity=0.8, scope="global",
                         max_pruning_ratio=0.95)
  method = tfprune.get_method(pruned)
  assert type(method).from_config(method.get_config()).max_pruning_ratio == 0.95


# ----------------------------------------------------------- the liveness check
def _zeroed(model, name):
  layer = model.get_layer(name)
  layer.kernel.assign(tf.zeros_like(layer.kernel))
  return model


def test_exporter_refuses_a_dead_model_and_writes_nothing(tmp_path):
  from tfprune import export  # pylint: disable=g-import-not-at-top
  model = _zeroed(_repro(), "mid")
  path = os.path.join(tmp_path, "dead.tflite")
  with pytest.raises(tfprune.DeadModelError, match=r"mid/kernel"):
    export.save_tflite(model, path)
  assert not os.path.exists(path)


def test_check_alive_dict_and_integer_inputs():
  keras.utils.set_random_seed(0)
  ids = keras.Input((6,), dtype="int32", name="token_ids")
  mask = keras.Input((6,), dtype="int32", name="padding_mask")
  h = keras.layers.Embedding(50, 8, name="emb")(ids)
  h = h * keras.ops.expand_dims(keras.ops.cast(mask, "float32"), -1)
  out = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling1D()(h))
  model = keras.Model({"token_ids": ids, "padding_mask": mask}, out)
  _liveness.check_alive(model)  # alive: no error
  _zeroed(model, "head")
  with pytest.raises(tfprune.DeadModelError, match="head/kernel"):
    _liveness.check_alive(model)


def test_constant_model_without_a_zero_kernel_only_warns():
  i = keras.Input((3,))
  out = keras.layers.Dense(2, kernel_initializer="ones", name="d")(i) * 0.0
  with pytest.warns(UserWarning, match="none of its kernels is entirely zero"):
    _liveness.check_alive(keras.Model(i, out))


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
