"""Tests for the SAP method (tfprune.methods.sap, Diao et al., ICLR 2023)."""
import math
import sys

import keras
import numpy as np
import pytest

from conftest import _mlp as conftest_mlp

import tfprune
from tfprune import plots
from tfprune import pqi
from tfprune import report
from tfprune.methods import sap

L = keras.layers


def _mlp():
  return conftest_mlp(hidden=(16, 8), seed=None)  # the shared fixture's builder


def _data(n=128):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(n, 12)).astype("float32")
  return x, x[:, :3].argmax(axis=1).astype("int64")


def _masks(model):
  return [m.numpy() for wr in tfprune.methods.base.find_wrappers(model) for m in wr.masks]


def _kernels(model):
  return [(w * m).numpy() for wr in tfprune.methods.base.find_wrappers(model)
          for w, m in zip(wr.prunable_weights, wr.masks)]


# ------------------------------------------------------------------ the formulas
@pytest.mark.parametrize("d,index,gamma,beta,eta,expected", [
    (100, 0.2, 1.0, 0.9, 0.0, 20),     # p=.5, q=1: c = floor(d * gamma * I)
    (100, 0.2, 2.0, 0.9, 0.0, 40),
    (100, 0.2, 10.0, 0.9, 0.0, 90),    # capped by beta
    (100, 0.2, 10.0, 0.5, 0.0, 50),
    (100, 0.2, 1.0, 0.9, 1.0, 80),     # r = 100 * 2^-2 * 0.8 = 20 -> c = 80
    (7, 0.5, 1.0, 0.9, 0.0, 3),        # floor(3.5)
    (64, 0.0, 1.0, 0.9, 0.0, 0),       # flat vector: nothing to prune
    (0, 0.0, 1.0, 0.9, 0.0, 0),        # empty unit
])
def test_prune_count_hand_cases(d, index, gamma, beta, eta, expected):
  assert int(sap.prune_count(d, index, 0.5, 1.0, eta, gamma, beta)) == expected


def test_prune_count_vectorised_and_p1_q2():
  # p=1, q=2: r = d * (1 - I)^2 -> c = d * (1 - (1 - I)^2).
  counts = sap.prune_count(np.array([100, 10]), np.array([0.5, 0.1]), 1.0, 2.0)
  np.testing.assert_array_equal(counts, [75, 1])


def test_pqi_stop_round_and_accuracy_drop():
  assert sap.pqi_stop_round([0.3, 0.2, 0.25, 0.3, 0.28, 0.2]) == 4
  assert sap.pqi_stop_round([0.1, 0.2, 0.15]) == 2
  assert sap.pqi_stop_round([0.3, 0.2, 0.1, 0.05]) is None   # never rose
  assert sap.pqi_stop_round([0.2, 0.3, 0.4]) is None         # never fell after
  assert sap.pqi_stop_round([0.2, 0.25, 0.249], tolerance=0.01) is None
  assert sap.accuracy_drop_round([0.9, 0.95, 0.945, 0.93]) == 3
  assert sap.accuracy_drop_round([0.9, 0.95, 0.945]) is None


def test_distribute():
  np.testing.assert_array_equal(sap.split_counts(10, [10, 10, 20]), [3, 2, 5])
  parts = sap.split_counts(7, [1, 100], [5, 1])
  assert parts.sum() == 7 and parts[0] <= 1
  with pytest.raises(ValueError, match="Cannot split"):
    sap.split_counts(5, [1, 1])


# ------------------------------------------------------------------- one round
@pytest.mark.parametrize("scope", ["layer", "neuron", "global"])
def test_prune_round_removes_expected_counts_smallest_first(scope):
  pruned = tfprune.prune(_mlp(), "sap", scope=scope, gamma=1.5)
  method = tfprune.get_method(pruned)
  before = _kernels(pruned)
  if scope == "global":
    flat = np.concatenate([k.reshape(-1) for k in before])
    units = [flat[:, None]]
  elif scope == "layer":
    units = [k.reshape(-1, 1) for k in before]
  else:
    units = before
  expected = np.concatenate([
      [math.floor(u.shape[0] * min(1.5 * float(pqi.pq_index(u[:, j])), 0.9) + 1e-9)
       for j in range(u.shape[1])] for u in units])
  out = method.prune_round()
  np.testing.assert_array_equal(out["counts"], expected)
  assert out["pruned"] == expected.sum() == sum(int(np.sum(m == 0)) for m in _masks(pruned))
  after = _kernels(pruned)
  # Within each unit, every pruned weight is no larger than every kept one.
  new_units = ([np.concatenate([k.reshape(-1) for k in after])[:, None]]
               if scope == "global" else
               [k.reshape(-1, 1) for k in after] if scope == "layer" else after)
  old_units = units
  for old, new in zip(old_units, new_units):
    for j in range(old.shape[1]):
      gone = np.abs(old[:, j][new[:, j] == 0])
      kept = np.abs(old[:, j][new[:, j] != 0])
      if gone.size and kept.size:
        assert gone.max() <= kept.min()


@pytest.mark.parametrize("scope", ["layer", "neuron"])
def test_beta_caps_every_unit(scope):
  pruned = tfprune.prune(_mlp(), "sap", scope=scope, gamma=1e6, beta=0.5)
  method = tfprune.get_method(pruned)
  for _ in range(2):
    d_before = [np.sum(m != 0, axis=0 if scope == "neuron" else None) for m in _masks(pruned)]
    method.prune_round()
    for d, m in zip(d_before, _masks(pruned)):
      d_after = np.sum(m != 0, axis=0 if scope == "neuron" else None)
      np.testing.assert_array_equal(d - d_after, np.floor(0.5 * d))


def test_pruned_weights_stay_pruned():
  pruned = tfprune.prune(_mlp(), "sap", gamma=3.0)
  method = tfprune.get_method(pruned)
  method.prune_round()
  first = _masks(pruned)
  method.prune_round()
  for a, b in zip(first, _masks(pruned)):
    assert np.all(b <= a)
  assert sum(b.sum() for b in _masks(pruned)) < sum(a.sum() for a in first)


# ------------------------------------------------------------------- the loop
def test_fit_rounds_counts_match_the_rule():
  x, y = _data()
  pruned = tfprune.prune(_mlp(), "sap", rounds=2, epochs_per_round=1, scope="layer")
  method = tfprune.get_method(pruned)
  history = method.fit(pruned, x, y, batch_size=64, validation_data=(x, y), verbose=0)
  log = method.round_log
  assert [r["round"] for r in log] == [0, 1, 2]
  assert len(history["loss"]) == 3 and len(history["val_accuracy"]) == 3
  sizes = [k.size for k in _kernels(pruned)]
  for t in range(2):
    remaining = [round((1 - s) * n) for s, n in zip(log[t]["sparsity_layers"].values(), sizes)]
    expected = sum(math.floor(d * min(i, 0.9) + 1e-9)
                   for d, i in zip(remaining, log[t]["pq_index_layers"].values()))
    assert log[t]["pruned"] == expected > 0
    assert log[t]["remaining"] - log[t + 1]["remaining"] == log[t]["pruned"]
    assert log[t]["accuracy_pruned"] is not None
  assert log[2]["pruned"] == 0
  assert method.stop_reason == "rounds" and method.chosen_round == 2
  # Masks are exact: the masked kernels hold zeros where the masks do.
  for k, m in zip(_kernels(pruned), _masks(pruned)):
    assert np.all(k[m == 0] == 0)
  assert 0 < log[2]["accuracy"] <= 1 and log[2]["accuracy_source"] == "validation"


def test_epoch_budget_split_when_epochs_per_round_is_none():
  x, y = _data(64)
  pruned = tfprune.prune(_mlp(), "sap", rounds=1)
  history = tfprune.get_method(pruned).fit(pruned, x, y, epochs=4, batch_size=64,
                                           verbose=0)
  assert len(history["loss"]) == 4
  assert tfprune.get_method(pruned).round_log[1]["epochs"] == 4
  assert tfprune.get_method(pruned).round_log[1]["accuracy_source"] == "train"


def test_target_sparsity_is_hit_exactly():
  x, y = _data(64)
  pruned = tfprune.prune(_mlp(), "sap", rounds=8, epochs_per_round=1, gamma=20.0,
                         target_sparsity=0.6, scope="neuron")
  method = tfprune.get_method(pruned)
  method.fit(pruned, x, y, batch_size=64, verbose=0)
  total = sum(m.size for m in _masks(pruned))
  kept = sum(int(m.sum()) for m in _masks(pruned))
  assert kept == math.ceil(0.4 * total)
  assert method.stop_reason == "target_sparsity"
  assert len(method.round_log) < 9


def test_rewind_restores_initial_weights_under_the_mask():
  x, y = _data(64)
  model = _mlp()
  initial = [model.get_layer(n).kernel.numpy() for n in ("fc1", "fc2", "out")]
  pruned = tfprune.prune(model, "sap", rounds=1, epochs_per_round=1, rewind=True, gamma=2.0)
  seen = []

  class Record(keras.callbacks.Callback):

    def on_train_begin(self, logs=None):
      seen.append(([w.numpy() for w in tfprune.get_method(pruned).weights],
                   _masks(pruned)))

  tfprune.get_method(pruned).fit(pruned, x, y, batch_size=64, verbose=0,
                                 callbacks=[Record()])
  weights, masks = seen[1]  # start of round 1: rewound survivors, zeros elsewhere
  for w, m, w0 in zip(weights, masks, initial):
    assert m.sum() < m.size
    np.testing.assert_allclose(w, w0 * m, rtol=1e-6)


class _ScriptedPQI(sap.SAP):
  """SAP whose measured global PQI follows a script (to test the stopping rule)."""

  script = (0.30, 0.20, 0.25, 0.22, 0.5)

  def measure(self):
    out = super().measure()
    out["pq_index"] = self.script[len(self.round_log)]
    return out


def test_stop_on_pqi_restores_the_peak_round():
  x, y = _data(64)
  method = _ScriptedPQI(rounds=4, epochs_per_round=1, stop_on_pqi=True, gamma=2.0)
  pruned = tfprune.prune(_mlp(), method)
  states = []

  class Record(keras.callbacks.Callback):

    def on_train_end(self, logs=None):
      states.append(_masks(pruned))

  method.fit(pruned, x, y, batch_size=64, verbose=0, callbacks=[Record()])
  assert (method.stop_reason, method.stop_round, method.chosen_round) == ("pq_index", 3, 2)
  assert len(method.round_log) == 4
  for a, b in zip(_masks(pruned), states[2]):  # the model trained in round 2
    np.testing.assert_array_equal(a, b)
  assert method.diagnostics()["sparsity"] == pytest.approx(method.round_log[2]["sparsity"])


def test_accuracy_floor_stops():
  x, y = _data(64)
  pruned = tfprune.prune(_mlp(), "sap", rounds=3, epochs_per_round=1, min_accuracy=1.0)
  method = tfprune.get_method(pruned)
  method.fit(pruned, x, y, batch_size=64, verbose=0)
  assert method.stop_reason == "min_accuracy" and method.stop_round == 0
  assert method.diagnostics()["sparsity"] == 0.0


def test_plain_fit_is_refused_and_steps_do_not_prune():
  x, y = _data(64)
  pruned = tfprune.prune(_mlp(), "sap")
  pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  with pytest.raises(ValueError, match="SAP prunes between training rounds"):
    pruned.fit(x, y, epochs=1, batch_size=32, verbose=0,
               callbacks=[tfprune.PruningCallback()])
  method = tfprune.get_method(pruned)
  method.update(0)  # the per-step hook changes nothing: masks move between rounds
  assert all(np.all(m == 1) for m in _masks(pruned))
  assert int(method.step.numpy()) == 0


def test_save_load_round_trip(tmp_path):
  x, y = _data(64)
  pruned = tfprune.prune(_mlp(), "sap", rounds=1, epochs_per_round=1, scope="neuron",
                         p=0.5, q=2.0, gamma=1.3, beta=0.7, eta_r=0.01)
  tfprune.get_method(pruned).fit(pruned, x, y, batch_size=64, verbose=0)
  path = str(tmp_path / "sap.keras")
  pruned.save(path)
  loaded = keras.models.load_model(path)
  method = tfprune.get_method(loaded)
  assert isinstance(method, sap.SAP)
  assert method.get_config() == tfprune.get_method(pruned).get_config()
  for a, b in zip(_masks(pruned), _masks(loaded)):
    np.testing.assert_array_equal(a, b)
  assert any(np.any(m == 0) for m in _masks(loaded))
  np.testing.assert_allclose(loaded.predict(x, verbose=0), pruned.predict(x, verbose=0),
                             rtol=1e-5, atol=1e-6)
  method.prune_round()  # the loaded method keeps working
  assert sum(int(m.sum()) for m in _masks(loaded)) < sum(int(m.sum()) for m in _masks(pruned))


@pytest.mark.parametrize("kwargs,match", [
    ({"scope": "block"}, "valid scopes are neuron, layer, global"),
    ({"beta": 1.0}, "beta"), ({"gamma": 0.0}, "gamma"), ({"rounds": 0}, "rounds"),
    ({"eta_r": -0.5}, "eta_r"), ({"p": 1.0, "q": 0.5}, "0 < p < q"),
    ({"target_sparsity": 1.0}, "target_sparsity"), ({"min_accuracy": 2.0}, "min_accuracy"),
    ({"epochs_per_round": 0}, "epochs_per_round"),
])
def test_invalid_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    sap.SAP(**kwargs)


def test_plot_and_table(tmp_path):
  log = [{"round": t, "sparsity": 1 - 0.5 ** t, "pq_index": v, "accuracy": a,
          "pruned": 10 * (3 - t), "pq_index_layers": {"fc1/kernel": v, "out/kernel": v / 2}}
         for t, (v, a) in enumerate([(0.2, 0.97), (0.15, 0.975), (0.18, 0.96), (0.1, None)])]
  path = plots.sap_rounds(log, str(tmp_path / "rounds.png"), baselines={"IMP": log[:3]},
                         stop_round=3, drop_round=2)
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  table = report.format_rounds(log, log[:3])
  assert table.count("\n") == 5 and "IMP PQI" in table and "| 1 | 0.5000 | 0.1500 |" in table
  with pytest.raises(ValueError, match="at least one round"):
    plots.sap_rounds([], str(tmp_path / "x.png"))


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
