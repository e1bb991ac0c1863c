"""target_latency: the measured LiteRT cost model (LatencyModel) and the structured budget.

One small residual CNN (16x16, BatchNorm, identity and projection blocks, a Concatenate)
whose table builds in a few seconds; measurements are cached in the process, so the
tests after the first reuse them.
"""
import json
import sys

import keras
import numpy as np
import pytest

import tfprune
from tfprune.structured import costs as costs_lib
from tfprune.structured import importance
from tfprune.structured import selection
from tfprune.structured import ChannelGraph
from tfprune.structured import latency

L = keras.layers


def _cnn():
  keras.utils.set_random_seed(0)
  i = keras.Input((16, 16, 3))
  x = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, padding="same", name="stem")(i)))
  y = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, padding="same", name="id1")(x)))
  y = L.BatchNormalization()(L.Conv2D(16, 3, padding="same", name="id2")(y))
  x = L.ReLU()(L.Add(name="add")([x, y]))
  y = L.ReLU()(L.BatchNormalization()(L.Conv2D(32, 3, 2, padding="same", name="pj1")(x)))
  s = L.Conv2D(32, 1, 2, name="skip")(x)
  x = L.Add(name="add_proj")([L.Conv2D(32, 3, padding="same", name="pj2")(y), s])
  b = L.Conv2D(16, 1, activation="relu", name="branch")(x)
  x = L.Concatenate(name="concatenate")([x, b])
  x = L.GlobalAveragePooling2D()(L.Activation("sigmoid", name="sigmoid")(x))
  return keras.Model(i, L.Dense(5, name="logits")(x))


@pytest.fixture(scope="module")
def costs():
  model = _cnn()
  # Full and half widths only: a 4-point grid per conv keeps the table at a few seconds.
  return model, latency.LatencyModel(model, verbose=True, widths=(1.0, 0.5))


def test_cost_model_matches_measured_latency_and_measures_identical_layers_once(costs):
  model, lm = costs
  assert set(lm.layers) >= {"stem", "id1", "id2", "pj1", "skip", "pj2", "branch",
                            "logits", "add", "concatenate"}, sorted(lm.layers)
  # BatchNorm after a conv and ReLU after conv / BN / Add are fused: not costed.
  assert not any(n.startswith(("batch_normalization", "re_lu")) for n in lm.layers)
  assert "sigmoid" in lm.layers  # a sigmoid is a real op
  # id1 and id2 are the same layer (signature): one table entry serves both.
  assert len(lm.table["layers"]) < len(lm.layers)
  assert lm.layer_macs("id1") == lm.layer_macs("id2") > 0
  measured = latency.model_latency_us(model)
  assert measured / 3 <= lm.total() <= 3 * measured, (lm.total(), measured)
  # Widths: costs never grow when channels go (monotone interpolation).
  graph = lm.graph
  group = next(g for g in graph.prunable_groups if "id1" in g.producers)
  before = lm.layer_macs("id1")
  for unit in group.units[:8]:
    assert "id1" in lm.apply(unit)
  assert lm.layer_macs("id1") <= before
  lm.reset()
  assert lm.layer_macs("id1") == before


def test_select_units_meets_the_latency_budget_and_table_round_trips(costs, tmp_path):
  model, lm = costs
  lm.reset()
  graph = lm.graph
  dense = lm.total()
  scores = importance.unit_scores(model, graph)
  units = selection.select_units(graph, scores, target=0.5, cost_model=lm)
  assert units and lm.total() <= 0.5 * dense
  lm.reset()
  layer = selection.select_units(graph, scores, target=0.5, cost_model=lm,
                                 allocation="layer", round_to=4)
  assert layer and lm.total() <= 0.5 * dense
  lm.reset()
  for g, u in units:
    lm.apply(graph.groups[g].units[u])
  # The allocation differs from a MACs budget's (the point of measuring).
  macs = costs_lib.MacModel(model, graph)
  assert isinstance(lm, costs_lib.CostModel) and isinstance(macs, costs_lib.CostModel)
  assert selection.select_units(graph, scores, target=0.5, cost_model=macs) != units
  # A table written to JSON gives the same estimates without measuring.
  path = tmp_path / "table.json"
  lm.save(path)
  again = latency.LatencyModel(model, graph, table=str(path))
  assert again.total() == pytest.approx(dense)
  for g, u in units:
    again.apply(graph.groups[g].units[u])
  assert again.total() == pytest.approx(lm.total())
  lm.reset()
  with pytest.raises(ValueError, match="target needs cost_model"):
    selection.select_units(graph, scores, target=0.5)
  with pytest.raises(ValueError, match="exactly one of"):
    selection.select_units(graph, scores, fraction=0.5, target=0.5, cost_model=lm)


def test_prune_to_target_latency_then_shrink_is_exact_and_smaller(costs):
  model, lm = costs
  pruned = tfprune.prune(model, "magnitude", scope="structured", target_latency=0.6,
                         latency_table=lm.table,
                         schedule=tfprune.ConstantSparsity(0.5, 0, frequency=1))
  method = tfprune.get_method(pruned)
  method.update(0)
  estimate = method.channels.latency_model()
  dense = estimate.total()
  for g, u in method.channels.units:
    estimate.apply(method.channels.graph.groups[g].units[u])
  assert estimate.total() <= 0.6 * dense + 1e-9
  x = np.random.default_rng(0).standard_normal((4, 16, 16, 3)).astype("float32")
  masked = tfprune.strip(pruned)
  small = tfprune.strip(pruned, shrink=True)
  assert small.count_params() < model.count_params()
  np.testing.assert_allclose(small.predict(x, verbose=0), masked.predict(x, verbose=0),
                             rtol=1e-4, atol=1e-5)


def test_config_round_trip_with_a_table(costs, tmp_path):
  model, lm = costs
  path = tmp_path / "t.json"
  path.write_text(json.dumps(lm.table))
  pruned = tfprune.prune(model, "magnitude", scope="structured", target_latency=0.5,
                         latency_table=str(path))
  method = tfprune.get_method(pruned)
  assert method.channels.latency_table == str(path)
  config = method.get_config()
  # The config holds the table itself: the saved model does not need the file.
  assert (config["target_latency"], config["latency_table"]) == (0.5, lm.table)
  assert "latency_precision" not in config  # the default is not written
  saved = str(tmp_path / "pruned.keras")
  pruned.save(saved)
  path.unlink()
  loaded = tfprune.get_method(keras.models.load_model(saved)).channels
  assert (loaded.target_latency, loaded.latency_precision, loaded.latency_table) == (
      0.5, "float", lm.table)
  # A dict table serializes as itself.
  pruned = tfprune.prune(model, "magnitude", scope="structured", target_latency=0.7,
                         latency_table=lm.table)
  again = type(tfprune.get_method(pruned)).from_config(
      tfprune.get_method(pruned).get_config()).channels
  assert again.latency_table == lm.table and again.target_latency == 0.7


def test_bad_arguments_fail_early_and_name_what_is_valid(costs, tmp_path):
  model, lm = costs
  cases = [
      (dict(target_latency=1.5), "target_latency must be in \\(0, 1\\]"),
      (dict(target_latency=0.5, target_macs=0.5), "give one of them"),
      (dict(target_latency=0.5, latency_precision="fp16"), "latency_precision must be"),
      (dict(latency_table=lm.table), "apply to a target_latency budget only"),
      (dict(target_latency=0.5, latency_precision="int8", latency_table=lm.table),
       "measured for precision 'float'"),
      (dict(target_latency=0.5, latency_table=str(tmp_path / "nope.json")),
       "could not be read"),
      (dict(target_latency=0.5, latency_table={"format": "x"}), "is not a"),
  ]
  for kwargs, match in cases:
    with pytest.raises(ValueError, match=match):
      tfprune.prune(model, "magnitude", scope="structured", **kwargs)
  with pytest.raises(ValueError, match="target_latency.*scope='structured'"):
    tfprune.prune(model, "magnitude", scope="layer", target_latency=0.5)
  # A table of another model names the layers it misses, when the method binds.
  other = keras.Sequential([keras.Input((6, 6, 3)), L.Conv2D(4, 3, name="c"),
                            L.Flatten(), L.Dense(8, name="d"), L.Dense(2)])
  with pytest.raises(ValueError, match="no measurement for layers.*measure_table"):
    tfprune.prune(other, "magnitude", scope="structured", target_latency=0.5,
                  latency_table=lm.table)


def test_int8_table_of_a_tiny_model():
  i = keras.Input((8, 8, 4))
  x = L.Conv2D(16, 3, padding="same", activation="relu", name="c1")(i)
  x = L.Conv2D(8, 3, padding="same", activation="relu", name="c2")(x)
  model = keras.Model(i, L.Dense(3)(L.GlobalAveragePooling2D()(x)))
  table = latency.measure_table(model, precision="int8")
  assert table["precision"] == "int8" and table["overhead_us"] > 0
  entry = next(e for e in table["layers"].values() if e["layer"] == "c1")
  assert entry["axes"] == ["in", "out"]
  # out: full and half (a quarter, 4, costs a whole tile of 8: not measured).
  assert sorted({p[1] for p in entry["points"]}) == [8, 16]
  assert sorted({p[0] for p in entry["points"]}) == [4]  # in: the model input, fixed
  lm = latency.LatencyModel(model, precision="int8", table=table)
  assert lm.total() > lm.overhead_us


def test_transformer_attention_by_macs_and_ops_nodes_listed():
  from tfprune import zoo  # pylint: disable=import-outside-toplevel
  model = zoo.get("transformer", num_classes=4, vocab_size=64, seq_len=16)
  lm = latency.LatencyModel(model, widths=(1.0, 0.5))
  attention = [n for n in lm.layers
               if type(model.get_layer(n)).__name__ == "MultiHeadAttention"]
  assert attention and all(lm.layer_macs(n) > 0 for n in attention)
  assert lm.table["us_per_mac"] > 0
  assert any("keras.ops node" in why for why in lm.unmeasured.values())
  measured = latency.model_latency_us(model)
  assert measured / 3 <= lm.total() <= 3 * measured, (lm.total(), measured)
  # Removing a head lowers the estimate.
  graph = lm.graph
  heads = next(g for g in graph.prunable_groups
               if any(m.role == "head" for m in g.units[0]))
  before = lm.total()
  lm.apply(heads.units[0])
  assert lm.total() < before


if __name__ == "__main__":
  sys.exit(pytest.main([__file__, "-v"]))
