"""scope="structured" through the channel graph + tfprune.strip(shrink=True): done-when tests.

A residual CNN with BatchNorm, a projection shortcut and a Concatenate branch, pruned to
half its channels, shrinks into a smaller dense model that computes what the masked model
computes, saves as .keras and exports to a verified float TFLite file.
"""
import sys
import warnings

import keras
import numpy as np
import pytest

import tfprune
from tfprune import structured
from tfprune import zoo

L = keras.layers


def _cnn():
  """Stem, an identity residual block, a projection block (1x1 stride-2 conv on the skip),
  a Concatenate branch, global pooling, Dense head; BatchNorm everywhere."""
  keras.utils.set_random_seed(0)
  i = keras.Input((16, 16, 3))
  x = L.Conv2D(16, 3, padding="same", name="stem")(i)
  x = L.ReLU()(L.BatchNormalization(name="stem_bn")(x))
  y = L.Conv2D(16, 3, padding="same", name="id_conv1")(x)
  y = L.ReLU()(L.BatchNormalization(name="id_bn1")(y))
  y = L.Conv2D(16, 3, padding="same", name="id_conv2")(y)
  y = L.BatchNormalization(name="id_bn2")(y)
  x = L.ReLU()(L.Add(name="id_add")([x, y]))
  y = L.Conv2D(32, 3, strides=2, padding="same", name="pj_conv1")(x)
  y = L.ReLU()(L.BatchNormalization(name="pj_bn1")(y))
  y = L.Conv2D(32, 3, padding="same", name="pj_conv2")(y)
  y = L.BatchNormalization(name="pj_bn2")(y)
  s = L.BatchNormalization(name="pj_skip_bn")(L.Conv2D(32, 1, strides=2, name="pj_skip")(x))
  x = L.ReLU()(L.Add(name="pj_add")([y, s]))
  b = L.ReLU()(L.BatchNormalization(name="br_bn")(L.Conv2D(16, 1, name="branch")(x)))
  x = L.Concatenate(name="concat")([x, b])
  x = L.Conv2D(32, 3, padding="same", name="head_conv")(x)
  x = L.GlobalAveragePooling2D()(L.ReLU()(x))
  x = L.Dense(24, activation="relu", name="fc")(x)
  return keras.Model(i, L.Dense(5, name="logits")(x))


def _small():
  """A tiny residual net with BatchNorm (fast to train)."""
  keras.utils.set_random_seed(0)
  i = keras.Input((8, 8, 2))
  x = L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 3, padding="same", name="stem")(i)))
  y = L.BatchNormalization()(L.Conv2D(8, 3, padding="same", name="conv")(x))
  x = L.ReLU()(L.Add()([x, y]))
  x = L.Conv2D(12, 1, activation="relu", name="expand")(x)
  x = L.GlobalAveragePooling2D()(x)
  return keras.Model(i, L.Dense(3, name="logits")(x))


def _rel_err(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def _fit(pruned, x, y, steps=3):
  method = tfprune.get_method(pruned)
  pruned.compile(optimizer=method.prepare_optimizer(keras.optimizers.Adam(1e-3)),
                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  pruned.fit(x, y, batch_size=16, epochs=1, steps_per_epoch=steps, verbose=0,
             callbacks=[tfprune.PruningCallback()])


def test_residual_cnn_half_the_channels_shrinks_exactly(tmp_path):
  model = _cnn()
  rng = np.random.default_rng(0)
  x = rng.standard_normal((48, 16, 16, 3)).astype("float32")
  y = rng.integers(0, 5, 48)
  pruned = tfprune.prune(model, "magnitude", scope="structured", target_sparsity=0.5)
  method = tfprune.get_method(pruned)
  assert method.allocation == "global" and method.channels.graph is not None
  _fit(pruned, x, y)
  prunable = sum(g.size for g in method.channels.graph.prunable_groups)
  assert abs(len(method.channels.units) - prunable / 2) <= 1
  with warnings.catch_warnings():
    warnings.simplefilter("error", UserWarning)  # a structured shrink removes every masked channel
    shrunk = tfprune.strip(pruned, shrink=True)
  assert not any(isinstance(l, tfprune.PruneWrapper) for l in shrunk.layers)
  xt = rng.standard_normal((8, 16, 16, 3)).astype("float32")
  masked = pruned.predict(xt, verbose=0)
  assert _rel_err(shrunk.predict(xt, verbose=0), masked) <= 1e-4
  rows = structured.shrink_report(model, shrunk)
  total = rows[-1]
  assert total["params_after"] < 0.5 * total["params_before"]
  assert total["macs_after"] < 0.5 * total["macs_before"]
  assert shrunk.count_params() < 0.5 * model.count_params()
  # Both sides of each residual Add and the concat reader lost the same channels.
  assert shrunk.get_layer("id_conv2").filters == shrunk.get_layer("stem").filters
  assert shrunk.get_layer("pj_skip").filters == shrunk.get_layer("pj_conv2").filters
  assert shrunk.get_layer("head_conv").kernel.shape[-2] == (
      shrunk.get_layer("pj_conv2").filters + shrunk.get_layer("branch").filters)
  assert "TOTAL" in structured.format_shrink_report(rows)
  # .keras round trip of the shrunk model and of the pruned one (the new arguments).
  path = str(tmp_path / "shrunk.keras")
  shrunk.save(path)
  np.testing.assert_allclose(keras.models.load_model(path).predict(xt, verbose=0),
                             shrunk.predict(xt, verbose=0), rtol=1e-6, atol=1e-6)
  # Float TFLite export, verified against Keras by the exporter.
  from tfprune import export  # pylint: disable=import-outside-toplevel
  result = export.convert(shrunk, representative_data=xt)
  assert result.verification and len(result.model_bytes) > 0


def test_structured_arguments_round_trip_and_validate(tmp_path):
  model = _cnn()
  pruned = tfprune.prune(model, "magnitude", scope="structured", target_sparsity=0.5,
                         round_to=4, min_units=4, ignored_layers=["branch"],
                         criterion="bn_scale")
  method = tfprune.get_method(pruned)
  method.update_masks(0.5)
  kept = {}
  for g, u in method.channels.units:
    kept[g] = kept.get(g, method.channels.graph.groups[g].size) - 1
  assert kept and all(v % 4 == 0 and v >= 4 for v in kept.values()), kept
  assert all("prune_branch" not in method.channels.graph.groups[g].layers for g in kept)
  path = str(tmp_path / "pruned.keras")
  pruned.save(path)
  loaded = tfprune.get_method(keras.models.load_model(path)).channels
  assert (loaded.round_to, loaded.min_units, loaded.ignored_layers, loaded.criterion) == (
      4, 4, ("branch",), "bn_scale")
  assert loaded.graph is not None
  with pytest.raises(ValueError, match="round_to.*scope='structured'"):
    tfprune.prune(model, "magnitude", scope="layer", round_to=8)
  with pytest.raises(ValueError, match="ignored_layers names layers \\['nope'\\]"):
    tfprune.prune(model, "magnitude", scope="structured", ignored_layers=["nope"])
  with pytest.raises(ValueError, match="criterion must be one of"):
    tfprune.prune(model, "magnitude", scope="structured", criterion="l3")
  with pytest.raises(ValueError, match="no channel group"):
    tfprune.prune(keras.Sequential([keras.Input((4,)), L.Dense(3)]), "magnitude",
                  scope="structured")


def test_target_macs_and_gradual_schedule_are_monotone():
  model = _cnn()
  schedule = tfprune.schedules.PolynomialDecay(0.0, 0.5, 0, 4, frequency=1)
  pruned = tfprune.prune(model, "magnitude", scope="structured", target_sparsity=0.5,
                         target_macs=0.5, schedule=schedule)
  method = tfprune.get_method(pruned)
  dense = structured.costs.MacModel(pruned, method.channels.graph).total()
  previous = set()
  for s in (0.1, 0.3, 0.5):
    method.update_masks(s)
    units = set(method.channels.units)
    assert previous <= units  # a removed channel stays removed
    previous = units
  shrunk = tfprune.strip(pruned, shrink=True)
  macs = structured.shrink_report(model, shrunk)[-1]
  assert macs["macs_after"] <= 0.5 * dense
  x = np.random.default_rng(1).standard_normal((4, 16, 16, 3)).astype("float32")
  assert _rel_err(shrunk(x), pruned(x)) <= 1e-4


@pytest.mark.parametrize("name,shape", [("resnet8", (32, 32, 1)), ("ds_cnn", (49, 10, 1))])
def test_zoo_models_at_half_shrink_exactly(name, shape):
  keras.utils.set_random_seed(0)
  model = zoo.get(name, input_shape=shape, num_classes=10)
  for layer in model.layers:  # trained-looking BN statistics (constant channels != 0)
    if isinstance(layer, L.BatchNormalization):
      rng = np.random.default_rng(len(layer.name))
      layer.set_weights([(rng.random(w.shape) + 0.5).astype("float32")
                         for w in layer.get_weights()])
  pruned = tfprune.prune(model, "magnitude", scope="structured", target_sparsity=0.5)
  tfprune.get_method(pruned).update_masks(0.5)
  shrunk = tfprune.strip(pruned, shrink=True)
  x = np.random.default_rng(2).standard_normal((4,) + shape).astype("float32")
  assert _rel_err(shrunk(x), pruned(x)) <= 1e-4
  total = structured.shrink_report(model, shrunk)[-1]
  assert total["macs_after"] < 0.6 * total["macs_before"], total
  assert shrunk.count_params() < 0.7 * model.count_params()


def test_zoo_transformer_heads_and_ffn_units_shrink_exactly():
  keras.utils.set_random_seed(0)
  model = zoo.get("transformer")
  pruned = tfprune.prune(model, "magnitude", scope="structured", target_sparsity=0.5)
  tfprune.get_method(pruned).update_masks(0.5)
  shrunk = tfprune.strip(pruned, shrink=True)
  x = np.random.default_rng(0).integers(0, 100, (2,) + tuple(model.input_shape[1:]))
  assert _rel_err(shrunk(x), pruned(x)) <= 1e-4
  total = structured.shrink_report(model, shrunk)[-1]
  assert total["macs_after"] < 0.6 * total["macs_before"], total


@pytest.mark.parametrize("method,kwargs", [
    ("movement", dict(pruning_steps=2, frequency=1)),
    ("admm", dict(admm_interval=1, admm_steps=2)),
    ("magnitude", dict(criterion="taylor",
                       schedule=tfprune.schedules.ConstantSparsity(0.5, begin_step=2,
                                                                   frequency=1))),
])
def test_structured_variants_of_other_criteria_shrink_exactly(method, kwargs):
  model = _small()
  rng = np.random.default_rng(0)
  x = rng.standard_normal((48, 8, 8, 2)).astype("float32")
  y = rng.integers(0, 3, 48)
  pruned = tfprune.prune(model, method, scope="structured", target_sparsity=0.5, **kwargs)
  _fit(pruned, x, y, steps=3)
  m = tfprune.get_method(pruned)
  assert m.channels.units, method
  shrunk = tfprune.strip(pruned, shrink=True)
  assert shrunk.count_params() < 0.7 * model.count_params(), method
  assert _rel_err(shrunk(x[:4]), pruned(x[:4])) <= 1e-4


def test_dead_channel_that_cannot_go_is_reported_not_silent():
  keras.utils.set_random_seed(0)
  i = keras.Input((8, 8, 2))
  x = L.Conv2D(6, 3, padding="same", name="c1")(i)
  x = L.BatchNormalization(name="bn")(x)  # shifts the dead channel to a nonzero constant
  x = L.Conv2D(4, 3, padding="same", name="c2")(L.ReLU()(x))  # same padding: no fold
  model = keras.Model(i, L.Dense(2)(L.GlobalAveragePooling2D()(x)))
  model.get_layer("bn").set_weights([np.full(6, v, "float32") for v in (1.0, 0.5, 0.0, 1.0)])
  kernel = model.get_layer("c1").kernel.numpy()
  kernel[..., 0] = 0.0
  model.get_layer("c1").kernel.assign(kernel)
  with pytest.warns(UserWarning, match="dead channel.*'c1'.*'c2'.*padding='same'"):
    shrunk = tfprune.shrink_model(model)
  assert shrunk.get_layer("c1").filters == 6  # kept: removing it would change the outputs


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
