"""Tests of the log-sum proximal iteratively reweighted solver and method."""
import math
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tfprune import layerwise
from tfprune import topk
from tfprune.methods import base
from tfprune.methods import logsum


def _planted(seed=0, d=40, m=5, n=400, density=0.2):
  """A noise-free problem whose exact sparse solution is `w_true`."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d))
  w_true = rng.normal(size=(d, m)) * (rng.random((d, m)) < density)
  w_true[np.abs(w_true) < 0.3] = 0.0
  w_true[w_true != 0] += np.sign(w_true[w_true != 0]) * 0.5
  gram = x.T @ x / n
  y = x @ w_true
  stats = layerwise.LayerStats(gram[None], (x.T @ y / n)[None], float(np.sum(y ** 2) / n),
                               (y.sum(0) / n)[None], n)
  w_start = w_true + 0.1 * rng.normal(size=w_true.shape)  # a dense "trained" kernel
  problem, _, _ = layerwise.make_problem("planted", stats, w_start[None])
  return problem, stats, w_true


def test_soft_threshold_and_prox_step_match_numpy():
  rng = np.random.default_rng(0)
  w = rng.normal(size=(3, 4)).astype(np.float32)
  grad = rng.normal(size=(3, 4)).astype(np.float32)
  lip, lam, eps = 2.5, 0.3, 0.1
  z = w - grad / lip
  thr = lam / (np.abs(w) + eps) / lip
  expected = np.sign(z) * np.maximum(np.abs(z) - thr, 0.0)
  np.testing.assert_allclose(logsum.soft_threshold(z, thr).numpy(), expected, atol=1e-6)
  np.testing.assert_allclose(logsum.prox_step(w, grad, lip, lam, eps).numpy(), expected,
                             atol=1e-6)


def test_solver_recovers_planted_sparse_solution():
  problem, stats, w_true = _planted()
  k = int(np.count_nonzero(w_true))
  w, info = logsum.LogSumSolver(eta=1e-5).solve(problem, k)
  scores = layerwise.support_scores(problem, w)
  support = topk.topk_mask(scores, k).numpy().astype(bool)
  np.testing.assert_array_equal(support[0], w_true != 0)
  refit, _ = layerwise.refit(stats.gram, stats.cross, support)
  np.testing.assert_allclose(refit[0], w_true, atol=1e-6)
  assert info["solves"] >= 1 and info["iterations"] > 0


@pytest.mark.parametrize("fast_search", [False, True])
def test_search_stops_when_nnz_jumps_across_the_bracket(monkeypatch, fast_search):
  # nnz(lambda) with a jump from 2k to k/10 at lambda* (what an eta-stopped solve next to
  # a converged one looks like): the default search returns the dense side once its
  # bracket is BRACKET_RTOL wide, the fast one once one side's count is stable
  # (SUPPORT_RTOL), instead of splitting the gap until max_solves.
  problem, _, _ = _planted(seed=2)
  k, jump, calls = 50, 3.7e-4, []

  def run(self, prob, lam, w_init=None, max_iter=None, min_iter=0):
    del self, max_iter, min_iter
    calls.append(lam)
    return (prob.w0 if w_init is None else w_init), 10, (2 * k if lam < jump else k // 10)

  monkeypatch.setattr(logsum.LogSumSolver, "run", run)
  _, info = logsum.LogSumSolver(max_solves=40, fast_search=fast_search).solve(problem, k)
  if fast_search:
    assert info["lambda"] < jump <= info["lambda"] * 1.5
    assert info["solves"] == len(calls) <= 6, calls
  else:
    assert info["lambda"] < jump <= info["lambda"] * (1 + logsum.BRACKET_RTOL) ** 2
    assert info["solves"] == len(calls) < 20, calls


def test_default_search_stops_when_converged_counts_cannot_reach_k(monkeypatch):
  # MobileNetV2's Conv_1 (trained, 0.5 per layer): the first solve is stopped by `eta`
  # after one step with every weight kept; every converged solve above its lambda keeps
  # fewer than k, creeping toward it by less each time. The search used to split that
  # gap until max_solves and return the first solve: it now returns it once the counts
  # cannot reach k, with the same result.
  problem, _, _ = _planted(seed=2)
  k, lam_cold, calls = 100, [], []

  def run(self, prob, lam, w_init=None, max_iter=None, min_iter=0):
    del self, max_iter
    calls.append(lam)
    if not lam_cold:  # the cold first solve
      assert min_iter == 0
      lam_cold.append(lam)
      return prob.w0, 1, 199
    assert min_iter > 0
    # converged counts approach 62 (< k) as lambda falls to the cold one
    count = int(62 - 30 * min(1.0, math.log(lam / lam_cold[0]) / math.log(4.0)))
    return prob.w0 * 0.5, 300, count

  monkeypatch.setattr(logsum.LogSumSolver, "run", run)
  solver = logsum.LogSumSolver(max_solves=12)
  w, info = solver.solve(problem, k)
  assert info["lambda"] == lam_cold[0]
  np.testing.assert_array_equal(w.numpy(), problem.w0.numpy())  # the first solve's
  assert info["solves"] == len(calls) <= 6, calls
  # Counts still growing fast enough are not given up on.
  assert not logsum._cannot_reach(100, [50, 90], 5)
  assert logsum._cannot_reach(100, [50, 52], 4)
  assert logsum._cannot_reach(100, [40, 60, 66], 5)  # growth 20 then 6: tail ~5


def test_fast_search_solves_do_not_stop_at_the_trained_kernel():
  # The trained kernel fits the rows exactly (C = G W0): the gradient vanishes at W0 and
  # the eta rule once stopped the first solve after one step, keeping every weight, so
  # the search returned magnitude pruning. Every solve now runs warm_min_iter first.
  rng = np.random.default_rng(3)
  x = rng.normal(size=(200, 30))
  w0 = rng.normal(size=(30, 4))
  y = x @ w0
  stats = layerwise.LayerStats((x.T @ x / 200)[None], (x.T @ y / 200)[None],
                               float(np.sum(y ** 2) / 200), (y.sum(0) / 200)[None], 200)
  problem, _, _ = layerwise.make_problem("exact", stats, w0[None])
  solver = logsum.LogSumSolver(fast_search=True)
  w, info = solver.solve(problem, 60)
  assert info["iterations"] >= solver.warm_min_iter * info["solves"], info
  assert info["solves"] < solver.max_solves
  assert 60 <= int(tf.math.count_nonzero(w)) <= 60 * (1 + solver.search_tol), info


def test_larger_eta_stops_earlier():
  problem, _, _ = _planted(seed=1)
  solver = logsum.LogSumSolver()
  its = []
  for eta in (1e-2, 1e-3, 1e-4):
    solver.eta = eta
    _, it, _ = solver.run(problem, 1e-3)
    its.append(it)
  assert its[0] < its[1] < its[2], its


def test_fixed_lambda_zero_keeps_least_squares_solution():
  problem, _, _ = _planted(seed=2)
  w, _ = logsum.LogSumSolver(lam=1e-12, eta=1e-6).solve(problem, 10)
  # With (almost) no penalty the solver converges to the dense least-squares optimum.
  grad = tf.matmul(problem.gram, w) - problem.cross
  assert float(tf.reduce_max(tf.abs(grad))) < 1e-3


@pytest.mark.parametrize("kwargs,match", [({"eps": 0.0}, "eps"), ({"eps": -1}, "eps"),
                                          ({"eta": 0.0}, "eta"), ({"eta": 1.5}, "eta"),
                                          ({"lam": -0.1}, "lambda"),
                                          ({"search": "grid"}, "search")])
def test_out_of_range_hyperparameters(kwargs, match):
  with pytest.raises(ValueError, match=match):
    logsum.LogSumSolver(**kwargs)


def test_method_registered_config_and_scope_errors():
  assert base.get_method_class("logsum") is logsum.LogSum
  method = logsum.LogSum(target_sparsity=0.8, scope="global", eta=1e-2, mode="parallel",
                         few_rows_search=True)
  config = method.get_config()
  again = logsum.LogSum.from_config(config)
  assert again.get_config() == config and config["few_rows_search"] is True
  assert again.post_training
  with pytest.raises(ValueError, match="scope 'layer' or 'global'"):
    logsum.LogSum(scope="n:m")
  with pytest.raises(ValueError, match="mode"):
    logsum.LogSum(mode="serial")
  with pytest.raises(ValueError, match="calibration data"):
    logsum.LogSum().apply(None, None)


def test_apply_on_plain_conv_model():
  keras.utils.set_random_seed(0)
  inp = keras.Input((8, 8, 2))
  h = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inp)
  h = keras.layers.DepthwiseConv2D(3, name="dw")(h)
  out = keras.layers.Dense(3, name="fc")(keras.layers.Flatten()(h))
  model = keras.Model(inp, out)
  x = np.random.default_rng(0).normal(size=(64, 8, 8, 2)).astype(np.float32)
  rows = logsum.LogSum(target_sparsity=0.5, calibration_samples=48).apply(
      model, x, verbose=False)
  assert [r["layer"] for r in rows] == ["conv", "dw", "fc"]
  for r in rows:
    assert abs(r["sparsity"] - 0.5) < 0.03
    assert r["err_after_refit"] < 1.0
  assert rows[0]["n"] == 48 * 64  # calibration_samples * output positions


def _few_rows_problem(n, d=40, m=5, seed=4):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d))
  w0 = rng.normal(size=(d, m))
  y = x @ w0 + 0.3 * rng.normal(size=(n, m))
  stats = layerwise.LayerStats((x.T @ x / n)[None], (x.T @ y / n)[None],
                               float(np.sum(y ** 2) / n), (y.sum(0) / n)[None], n,
                               rows=x[None])
  return layerwise.make_problem("few", stats, w0[None])[0]


def test_few_rows_keep_the_trained_weights_without_a_search(monkeypatch):
  # 10 rows for 40 inputs (FEW_ROWS_RATIO * n <= d): on such layers the full search
  # returned magnitude pruning plus refit after several long solves
  # (bench/RESULTS_layerwise.md), so the solver returns W0 at once and says so.
  calls = []
  real_run = logsum.LogSumSolver.run

  def run(self, *args, **kwargs):
    calls.append(args[1])
    return real_run(self, *args, **kwargs)

  monkeypatch.setattr(logsum.LogSumSolver, "run", run)
  few = _few_rows_problem(10)
  assert few.rows == 10 and logsum.FEW_ROWS_RATIO * few.rows <= int(few.live.sum())
  w, info = logsum.LogSumSolver().solve(few, 100)
  assert calls == [] and info["solves"] == 0 and info["lambda"] is None
  np.testing.assert_array_equal(w.numpy(), few.w0.numpy())
  assert "10 rows for 40 inputs: no lambda search" in info["notes"][0]
  # Searched when asked, with a fixed lambda, and with one row more than the ratio allows.
  _, info = logsum.LogSumSolver(few_rows_search=True).solve(few, 100)
  assert info["solves"] == len(calls) >= 1 and "notes" not in info
  logsum.LogSumSolver(lam=1e-3).solve(few, 100)
  assert len(calls) == info["solves"] + 1
  before = len(calls)
  _, info = logsum.LogSumSolver().solve(_few_rows_problem(11), 100)
  assert info["solves"] >= 1 and len(calls) == before + info["solves"]


def test_few_rows_layer_keeps_its_largest_weights_refit_and_reports_it():
  keras.utils.set_random_seed(5)
  inp = keras.Input((64,))
  model = keras.Model(inp, keras.layers.Dense(6, name="fc")(inp))
  w0 = model.get_layer("fc").kernel.numpy()
  x = np.random.default_rng(5).normal(size=(12, 64)).astype(np.float32)
  with pytest.warns(UserWarning, match="only 12 calibration rows"):
    rows = logsum.LogSum(target_sparsity=0.5, calibration_samples=12).apply(
        model, x, verbose=False)
  assert rows[0]["solves"] == 0 and any("no lambda search" in n for n in rows[0]["notes"])
  kernel = model.get_layer("fc").kernel.numpy()
  magnitude = topk.topk_mask(tf.constant(np.abs(w0)[None]), w0.size // 2).numpy()[0]
  np.testing.assert_array_equal(kernel != 0, magnitude.astype(bool))
  assert not np.allclose(kernel, w0 * magnitude)  # refit, not only masked
  probe = np.random.default_rng(6).normal(size=(32, 64)).astype(np.float32)
  assert float(np.std(model(probe).numpy(), axis=0).mean()) > 0.1  # still depends on x


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))


def test_a_kernel_with_fewer_nonzeros_than_it_keeps():
  """The first lambda comes from the smallest nonzero weight when fewer than k weights are
  nonzero (it divided by log(1 + 0) before: keras_hub Stable Diffusion 3)."""
  inp = keras.Input((6,))
  model = keras.Model(inp, keras.layers.Dense(4, name="d")(inp))
  kernel = np.zeros((6, 4), "float32")
  kernel[0, 0], kernel[1, 1], kernel[2, 2] = 1.0, -2.0, 0.5
  model.get_layer("d").kernel.assign(kernel)
  pruned = tfprune.prune(model, "logsum", target_sparsity=0.5)
  x = np.random.default_rng(0).standard_normal((64, 6)).astype("float32")
  tfprune.get_method(pruned).apply(pruned, x, verbose=False)
  out = tfprune.strip(pruned).get_layer("d").kernel.numpy()
  assert np.all(np.isfinite(out)) and np.count_nonzero(out) <= 12
  np.testing.assert_allclose(out[[0, 1, 2], [0, 1, 2]], [1.0, -2.0, 0.5], rtol=1e-4)
