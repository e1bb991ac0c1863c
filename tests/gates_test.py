"""Tests for tfprune.gates (hard-concrete maths, L0Gate) and the l0_gates method."""
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import _mlp as conftest_mlp
from conftest import _toy_data as toy_data

import tfprune
from tfprune import distill
from tfprune import gates
from tfprune.methods import l0_gates


def _mlp(seed=0):
  return conftest_mlp(hidden=(16, 8), seed=seed)  # the shared fixtures' builders


def _data(n=64, seed=0):
  return toy_data(n, seed=seed)


def test_expected_l0_matches_numpy_reference():
  log_alpha = np.array([-5.0, -2.4, 0.0, 0.7, 3.0], np.float32)
  ref = np.sum(1 / (1 + np.exp(-(log_alpha - (2 / 3) * np.log(0.1 / 1.1)))))
  assert float(gates.expected_l0(tf.constant(log_alpha))) == pytest.approx(ref, rel=1e-6)
  assert gates.expected_l0_numpy(log_alpha) == pytest.approx(ref, rel=1e-9)
  layer = gates.L0Gate(5)
  layer.build((None, 5))
  layer.set_log_alpha(log_alpha)
  assert float(layer.expected_l0()) == pytest.approx(ref, rel=1e-5)


def test_gate_statistics_and_determinism():
  log_alpha = tf.constant([-3.0, 0.0, 3.0])
  samples = gates.sample_gates(log_alpha, shape=(3000, 3)).numpy()  # 3000 draws at once
  assert samples.min() >= 0 and samples.max() <= 1
  # P(z != 0) of the hard-concrete equals the closed form (Louizos eq. 12).
  np.testing.assert_allclose((samples > 0).mean(0),
                             gates.open_probability(log_alpha).numpy(), atol=0.03)
  layer = gates.L0Gate(3)
  x = np.ones((4, 3), np.float32)
  layer.build(x.shape)
  layer.set_log_alpha([-3.0, 0.0, 3.0])
  a, b = layer(x, training=False).numpy(), layer(x, training=False).numpy()
  np.testing.assert_array_equal(a, b)
  expected = np.clip(1 / (1 + np.exp(-np.array([-3.0, 0.0, 3.0]))) * 1.2 - 0.1, 0, 1)
  np.testing.assert_allclose(a[0], expected, rtol=1e-5)
  assert a[0, 0] == 0.0 and a[0, 2] == 1.0
  with pytest.raises(ValueError, match="droprate_init"):
    gates.L0Gate(3, droprate_init=1.5)


def test_prune_gates_hidden_layers_only_and_refuses_others():
  pruned = tfprune.prune(_mlp(), "l0_gates", target_sparsity=0.5)
  names = [w.layer.name for w in tfprune.get_method(pruned).wrappers]
  assert names == ["fc1", "fc2"]
  inputs = keras.Input((8, 8, 3))
  x = keras.layers.DepthwiseConv2D(3, name="dw")(inputs)
  model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
  with pytest.raises(ValueError, match="'dw'.*cannot carry L0 unit gates"):
    tfprune.prune(model, "l0_gates", layers=["dw"])
  with pytest.raises(ValueError, match="not gated layers"):
    tfprune.prune(_mlp(), "l0_gates", target_units={"nope": 3})


@pytest.mark.parametrize("distill", [0.0, 0.5])
def test_fit_meets_unit_budget_and_test_time_is_deterministic(distill):
  pruned = tfprune.prune(_mlp(), "l0_gates", target_units={"fc1": 6, "fc2": 3},
                         dual_lr=0.05, gate_fraction=0.5, distill=distill)
  method = tfprune.get_method(pruned)
  x, y = _data(64)
  history = method.fit(pruned, x, y, epochs=2, batch_size=16, verbose=0)
  assert len(history["accuracy"]) == 2 and np.isfinite(history["loss"]).all()
  kept = {w.layer.name: int(w.open_units().sum()) for w in method.wrappers}
  assert kept == {"fc1": 6, "fc2": 3} == method.last_kept  # hard prune: exactly k
  a = pruned.predict(x, verbose=0)
  np.testing.assert_array_equal(a, pruned.predict(x, verbose=0))
  # After fit the model is compiled for plain labels again (also after distillation).
  assert np.isfinite(pruned.evaluate(x, y, verbose=0)).all()
  if distill:
    return
  # The penalty is lambda * E[L0], present in training mode only (which needs the
  # method started, as in any training loop).
  method.on_train_begin()
  for w in method.wrappers:
    w.l0_lambda.assign(2.0)
  pruned(x, training=True)
  expect = sum(2.0 * float(w.gate.expected_l0()) for w in method.wrappers)
  assert float(sum(pruned.losses)) == pytest.approx(expect, rel=1e-5)


def test_distillation_loss_matches_formula():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(5, 4)).astype("float32")
  teacher = rng.normal(size=(5, 4)).astype("float32")
  labels = rng.integers(0, 4, 5)
  loss = distill.DistillationLoss(alpha=0.3, temperature=2.0)
  got = float(loss(distill.pack_targets(labels, teacher), logits))

  def log_softmax(v):
    v = v - v.max(-1, keepdims=True)
    return v - np.log(np.exp(v).sum(-1, keepdims=True))

  ce = -log_softmax(logits)[np.arange(5), labels]
  pt = np.exp(log_softmax(teacher / 2))
  kl = (pt * (log_softmax(teacher / 2) - log_softmax(logits / 2))).sum(-1)
  assert got == pytest.approx(float(np.mean(0.7 * ce + 0.3 * 4.0 * kl)), rel=1e-5)
  with pytest.raises(ValueError, match="distill"):
    tfprune.prune(_mlp(), "l0_gates", distill=1.0)
  with pytest.raises(ValueError, match="finetune_lr_scale"):
    tfprune.prune(_mlp(), "l0_gates", finetune_lr_scale=0.0)


def test_save_load_gated_model(tmp_path):
  pruned = tfprune.prune(_mlp(), "l0_gates", target_sparsity=0.5)
  method = tfprune.get_method(pruned)
  rng = np.random.default_rng(1)
  for w in method.wrappers:
    w.gate.set_log_alpha(rng.normal(0, 3, w.gate.units))
  x, _ = _data(8)
  path = str(tmp_path / "gated.keras")
  pruned.save(path)
  loaded = keras.models.load_model(path)
  np.testing.assert_allclose(loaded.predict(x, verbose=0), pruned.predict(x, verbose=0),
                             atol=1e-6)
  loaded_method = tfprune.get_method(loaded)
  assert isinstance(loaded_method, l0_gates.L0Gates)
  assert isinstance(loaded.get_layer("prune_fc1"), l0_gates.L0GateWrapper)
  np.testing.assert_allclose(loaded.get_layer("prune_fc1").gate.log_alpha.numpy(),
                             pruned.get_layer("prune_fc1").gate.log_alpha.numpy())


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
