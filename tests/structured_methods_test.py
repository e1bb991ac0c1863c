"""l0_gates and sap over the channel graph's groups, then tfprune.strip(shrink=True).

On a small residual CNN (BatchNorm, an identity Add): one gate / one SAP count per
channel group, so the shrunk model loses the same channels in every layer of a group and
computes what the masked model computes.
"""
import sys

import keras
import numpy as np
import pytest

import tfprune
from tfprune import zoo
from tfprune.methods import l0_gates

L = keras.layers


def _resnet():
  keras.utils.set_random_seed(0)
  i = keras.Input((8, 8, 2))
  x = L.ReLU()(L.BatchNormalization(name="stem_bn")(
      L.Conv2D(8, 3, padding="same", name="stem")(i)))
  y = L.ReLU()(L.BatchNormalization(name="bn1")(L.Conv2D(8, 3, padding="same", name="c1")(x)))
  y = L.BatchNormalization(name="bn2")(L.Conv2D(8, 3, padding="same", name="c2")(y))
  x = L.ReLU()(L.Add(name="add")([x, y]))
  x = L.Conv2D(12, 1, activation="relu", name="expand")(x)
  x = L.GlobalAveragePooling2D()(x)
  return keras.Model(i, L.Dense(3, name="logits")(x))


def _data(n=32, seed=0):
  rng = np.random.default_rng(seed)
  return rng.standard_normal((n, 8, 8, 2)).astype("float32"), rng.integers(0, 3, n)


def _rel_err(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def _widths(model):
  """Channel counts of every layer of the residual group and of the expand group."""
  get = model.get_layer
  residual = [get("stem").filters, get("stem_bn").gamma.shape[0], get("c2").filters,
              get("bn2").gamma.shape[0], get("c1").kernel.shape[-2],
              get("expand").kernel.shape[-2]]
  inner = [get("c1").filters, get("bn1").gamma.shape[0], get("c2").kernel.shape[-2]]
  head = [get("expand").filters, get("logits").kernel.shape[0]]
  return residual, inner, head


def _check_shrunk(model, pruned, shrunk, x):
  assert not any(isinstance(l, tfprune.PruneWrapper) for l in shrunk.layers)
  assert shrunk.count_params() < model.count_params()
  assert _rel_err(shrunk.predict(x, verbose=0), pruned.predict(x, verbose=0)) <= 1e-4
  for widths in _widths(shrunk):  # every layer of a group kept the same channels
    assert len(set(widths)) == 1, widths
  assert shrunk.get_layer("logits").units == 3


def test_l0_gates_one_gate_per_group_shrinks_every_layer_of_it(tmp_path):
  model = _resnet()
  x, y = _data()
  pruned = tfprune.prune(model, "l0_gates", target_sparsity=0.5, dual_lr=0.05)
  method = tfprune.get_method(pruned)
  assert method.grouping == "graph" and method.group_gating  # "auto" on a residual net
  # One draw per group unit, shared: both sides of the Add see the same gates.
  method.on_train_begin()
  method.on_train_step()
  stem, c2, out = (pruned.get_layer(n) for n in ("prune_stem", "prune_c2", "prune_logits"))
  np.testing.assert_array_equal(stem.column_gates(True).numpy(), c2.column_gates(True).numpy())
  np.testing.assert_array_equal(out.column_gates(True).numpy(), np.ones(3))  # never gated
  method.on_train_end()
  history = method.fit(pruned, x, y, epochs=2, batch_size=16, verbose=0)
  assert np.isfinite(history["loss"]).all()
  assert method.last_kept == {"stem": 4, "c1": 4, "expand": 6}
  shrunk = tfprune.strip(pruned, shrink=True)
  _check_shrunk(model, pruned, shrunk, x)
  assert _widths(shrunk) == ([4] * 6, [4] * 3, [6] * 2)
  # .keras round trips: the pruned model (grouping saved resolved) and the shrunk one.
  path = str(tmp_path / "gated.keras")
  pruned.save(path)
  loaded = keras.models.load_model(path)
  np.testing.assert_allclose(loaded.predict(x, verbose=0), pruned.predict(x, verbose=0),
                             rtol=1e-5, atol=1e-6)
  loaded_method = tfprune.get_method(loaded)
  assert loaded_method.grouping == "graph" and loaded_method.group_gating
  assert loaded_method.kept_units()["stem"].sum() == 4
  path = str(tmp_path / "shrunk.keras")
  shrunk.save(path)
  np.testing.assert_allclose(keras.models.load_model(path).predict(x, verbose=0),
                             shrunk.predict(x, verbose=0), rtol=1e-6, atol=1e-6)


def test_l0_gates_global_budget_over_groups_and_min_units():
  model = _resnet()
  pruned = tfprune.prune(model, "l0_gates", target_sparsity=0.75, allocation="global",
                         min_units=2, grouping="graph")
  method = tfprune.get_method(pruned)
  rng = np.random.default_rng(0)
  for w in method.wrappers:  # owners' gates decide; the others are mirrored
    if isinstance(w, l0_gates.L0GateWrapper) and w.gate.trainable:
      w.gate.set_log_alpha(rng.normal(0.0, 3.0, w.gate.units))
  kept = method.hard_prune()
  assert sum(kept.values()) >= 7 and min(kept.values()) >= 2, kept  # 28 units, 25% kept
  shrunk = tfprune.strip(pruned, shrink=True)
  _check_shrunk(model, pruned, shrunk, _data(8)[0])
  assert [w[0] for w in _widths(shrunk)] == [kept["stem"], kept["c1"], kept["expand"]]


@pytest.mark.parametrize("allocation", ["global", "layer"])
def test_l0_gates_groups_meet_a_macs_budget(allocation):
  """target_macs: the hard prune closes the least-open units until the MACs fit."""
  from tfprune import structured  # pylint: disable=g-import-not-at-top
  model = _resnet()
  pruned = tfprune.prune(model, "l0_gates", target_sparsity=0.5, target_macs=0.5,
                         allocation=allocation, grouping="graph")
  method = tfprune.get_method(pruned)
  rng = np.random.default_rng(1)
  for w in method.wrappers:
    if isinstance(w, l0_gates.L0GateWrapper) and w.gate.trainable:
      w.gate.set_log_alpha(rng.normal(2.0, 3.0, w.gate.units))
  method.hard_prune()
  shrunk = tfprune.strip(pruned, shrink=True)
  _check_shrunk(model, pruned, shrunk, _data(8)[0])

  def macs(m):
    return sum(c for _, c in structured.layer_costs(m).values())

  assert 0.3 < macs(shrunk) / macs(model) <= 0.5


@pytest.mark.parametrize("name", ["ds_cnn", "transformer"])
def test_l0_gates_groups_on_depthwise_and_transformer_shrink_exactly(name):
  """Depthwise followers are masked with their group; a transformer's residual stream
  (blocked) and attention heads are left ungated, its FFN units gated."""
  keras.utils.set_random_seed(0)
  model = zoo.get(name, **({"input_shape": (49, 10, 1), "num_classes": 4}
                           if name == "ds_cnn" else {}))
  pruned = tfprune.prune(model, "l0_gates", target_sparsity=0.5)
  method = tfprune.get_method(pruned)
  assert method.grouping == "graph"
  if name == "transformer":
    assert method.gated_groups == ["block1_ffn1", "block2_ffn1"]
    assert "block1_attention' (attention heads) cannot carry" in method.channel_report()
  rng = np.random.default_rng(0)
  for w in method.wrappers:
    if isinstance(w, l0_gates.L0GateWrapper) and w.gate.trainable:
      w.gate.set_log_alpha(rng.normal(0.0, 3.0, w.gate.units))
  kept = method.hard_prune()
  shrunk = tfprune.strip(pruned, shrink=True)
  if name == "transformer":
    x = rng.integers(0, 100, (2,) + tuple(model.input_shape[1:]))
    assert shrunk.get_layer("block1_ffn1").units == kept["block1_ffn1"] == 64
  else:
    x = rng.standard_normal((2, 49, 10, 1)).astype("float32")
    assert shrunk.get_layer("pw1").filters == kept["pw1"] == 32
    assert shrunk.get_layer("dw2").kernel.shape[-2] == 32  # the depthwise follower
  assert _rel_err(shrunk(x), pruned(x)) <= 1e-4
  assert shrunk.count_params() < model.count_params()


def test_l0_gates_grouping_argument_round_trips_and_validates():
  with pytest.raises(ValueError, match="grouping must be one of auto, graph, layer"):
    tfprune.prune(_resnet(), "l0_gates", grouping="channels")
  method = tfprune.get_method(tfprune.prune(_resnet(), "l0_gates", round_to=2))
  config = method.get_config()
  assert config["grouping"] == "graph" and config["round_to"] == 2
  again = l0_gates.L0Gates.from_config(config)
  assert again.grouping == "graph" and again.channels.round_to == 2
  legacy = {k: v for k, v in config.items() if k not in ("grouping", "round_to")}
  assert l0_gates.L0Gates.from_config(legacy).grouping == "layer"  # older saved files
  # Per layer on request: the output layer is not wrapped, one gate per layer unit.
  per_layer = tfprune.get_method(tfprune.prune(_resnet(), "l0_gates", grouping="layer"))
  assert not per_layer.group_gating
  assert [w.layer.name for w in per_layer.wrappers] == ["stem", "c1", "c2", "expand"]
  # A plain chain has no coupled group: "auto" keeps the per-layer form there.
  chain = keras.Sequential([keras.Input((6,)), L.Dense(8, name="fc"), L.Dense(2)])
  assert tfprune.get_method(tfprune.prune(chain, "l0_gates")).grouping == "layer"
  with pytest.raises(ValueError, match="round_to apply to grouping='graph' only"):
    tfprune.prune(chain, "l0_gates", round_to=4)
  # target_units names any producer of a group (c2 feeds the residual Add with stem).
  budgets = tfprune.get_method(tfprune.prune(_resnet(), "l0_gates",
                                             target_units={"c2": 2})).budgets()
  assert budgets == {"stem": 2, "c1": 4, "expand": 6}
  with pytest.raises(ValueError, match="target_units names \\['nope'\\]"):
    tfprune.prune(_resnet(), "l0_gates", target_units={"nope": 2})


def test_sap_channel_groups_shrink_every_layer_of_a_group(tmp_path):
  model = _resnet()
  x, y = _data()
  pruned = tfprune.prune(model, "sap", scope="structured", rounds=1, eta_r=1.0, beta=0.5)
  method = tfprune.get_method(pruned)
  assert method.channels.graph is not None and method.total() == 28  # 8 + 8 + 12 channels
  method.fit(pruned, x, y, epochs=2, batch_size=16, verbose=0)
  # eta_r=1: r = d / 4, so each group loses min(1 - 1/4, beta) = half its channels.
  assert method.round_log[0]["pruned"] == 14 and method.remaining() == 14
  assert method.round_log[1]["sparsity"] == pytest.approx(0.5)
  shrunk = tfprune.strip(pruned, shrink=True)
  _check_shrunk(model, pruned, shrunk, x)
  assert _widths(shrunk) == ([4] * 6, [4] * 3, [6] * 2)
  path = str(tmp_path / "sap.keras")
  pruned.save(path)
  loaded = tfprune.get_method(keras.models.load_model(path))
  assert loaded.scope == "structured" and loaded.remaining() == 14  # read from the masks
  with pytest.raises(ValueError, match="Unknown SAP scope 'channels'.*structured"):
    tfprune.prune(model, "sap", scope="channels")
  with pytest.raises(ValueError, match="round_to.*scope='structured'"):
    tfprune.prune(model, "sap", scope="layer", round_to=4)


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
