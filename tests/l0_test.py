"""Tests of layer-wise l0 (iterative hard thresholding) pruning."""
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfprune import layerwise
from tfprune.methods import base
from tfprune.methods import l0


@pytest.mark.parametrize("k", [0, 1, 7, 24])
def test_projection_keeps_exactly_k(k):
  w = np.array([[3., -3., 1., 1.], [1., -1., 0., 2.], [0.5, 1., -1., 0.2]] * 2, np.float32)
  out = l0.hard_threshold(tf.constant(w), k).numpy()
  assert np.count_nonzero(out) == min(k, np.count_nonzero(w))
  kept = out != 0
  if 0 < k < w.size:  # every kept magnitude >= every dropped one
    assert np.abs(w[kept]).min() >= np.abs(w[~kept]).max()
  np.testing.assert_array_equal(out[kept], w[kept])


def test_iht_recovers_planted_support():
  rng = np.random.default_rng(0)
  n, d, m = 500, 30, 4
  x = rng.normal(size=(n, d))
  w_true = np.zeros((d, m))
  for j in range(m):
    rows = rng.choice(d, 4, replace=False)
    w_true[rows, j] = rng.choice([-1.0, 1.0], 4) * rng.uniform(1.0, 2.0, 4)
  y = x @ w_true
  stats = layerwise.LayerStats((x.T @ x / n)[None], (x.T @ y / n)[None],
                               float(np.sum(y ** 2) / n), (y.sum(0) / n)[None], n)
  w_start = w_true + 0.3 * rng.normal(size=w_true.shape)
  problem, _, _ = layerwise.make_problem("planted", stats, w_start[None])
  k = int(np.count_nonzero(w_true))
  w, info = l0.IHTSolver(eta=1e-6).solve(problem, k)
  assert np.count_nonzero(w.numpy()) == k
  np.testing.assert_array_equal(w.numpy()[0] != 0, w_true != 0)
  refit, _ = layerwise.refit(stats.gram, stats.cross, (w.numpy() != 0))
  np.testing.assert_allclose(refit[0], w_true, atol=1e-6)
  assert info["iterations"] < 1000


def _relu_objective(model, base_model, layer, x):
  """Sum over y>0 of (z-y)^2 plus over y<=0 of max(z,0)^2 for one Dense layer."""
  ext = keras.Model(model.inputs, model.get_layer(layer).input)
  ext0 = keras.Model(base_model.inputs, base_model.get_layer(layer).input)
  lay, lay0 = model.get_layer(layer), base_model.get_layer(layer)
  z = ext(x).numpy() @ lay.kernel.numpy() + lay.bias.numpy()
  y = ext0(x).numpy() @ lay0.kernel.numpy() + lay0.bias.numpy()
  return float(np.sum(np.where(y > 0, (z - y) ** 2, np.maximum(z, 0) ** 2)))


def test_relu_model_lowers_the_relu_objective():
  keras.utils.set_random_seed(0)
  inp = keras.Input((16,))
  h = keras.layers.Dense(24, activation="relu", name="h")(inp)
  base_model = keras.Model(inp, keras.layers.Dense(2, name="out")(h))
  x = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
  objective = {}
  for relu in (False, True):
    model = keras.models.clone_model(base_model)
    model.set_weights(base_model.get_weights())
    rows = layerwise.prune_layerwise(model, x, l0.IHTSolver(), sparsity=0.7, layers=["h"],
                                     relu_model=relu, relu_passes=3, verbose=False)
    assert abs(rows[0]["sparsity"] - 0.7) < 0.01
    objective[relu] = _relu_objective(model, base_model, "h", x)
  assert objective[True] < objective[False]


def test_method_end_to_end_wrapped_global():
  from tfprune import model as model_lib  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(1)
  inp = keras.Input((12,), name="features")
  h = keras.layers.Dense(10, activation="relu", name="h")(inp)
  base_model = keras.Model(inp, keras.layers.Dense(3, name="out")(h))
  pruned = model_lib.prune(base_model, "l0", target_sparsity=0.6, scope="global")
  x = np.random.default_rng(1).normal(size=(200, 12)).astype(np.float32)
  rows = pruned.get_layer("prune_h").method.apply(pruned, x, verbose=False)
  total = sum(w.masks[0].numpy().size for w in
              (pruned.get_layer("prune_h"), pruned.get_layer("prune_out")))
  kept = sum(w.masks[0].numpy().sum() for w in
             (pruned.get_layer("prune_h"), pruned.get_layer("prune_out")))
  assert abs(1 - kept / total - 0.6) < 0.01
  assert "ReLU model" in " ".join(rows[0]["notes"])  # relu_model="auto" on h
  assert "ReLU model" not in " ".join(rows[1]["notes"])  # linear output layer


def test_config_registration_and_errors():
  assert base.get_method_class("l0") is l0.L0
  config = l0.L0(target_sparsity=0.95, eta=1e-2).get_config()
  assert l0.L0.from_config(config).get_config() == config
  with pytest.raises(ValueError, match="eta"):
    l0.IHTSolver(eta=2.0)
  with pytest.raises(ValueError, match="scope 'layer' or 'global'"):
    l0.L0(scope="block")
  with pytest.raises(ValueError, match="relu_model"):
    inp = keras.Input((4,))
    layerwise.prune_layerwise(keras.Model(inp, keras.layers.Dense(2)(inp)),
                              np.zeros((8, 4), np.float32), l0.IHTSolver(),
                              relu_model="yes")


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
