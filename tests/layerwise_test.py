"""Tests of the shared layer-wise engine (statistics, im2col, refit, modes, errors)."""
import dataclasses
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tfprune import layerwise
from tfprune import topk
from tfprune.methods import logsum

L = keras.layers


def _explicit_patches_2d(x, kh, kw, stride, dilation, padding):
  """Reference im2col with Python loops (channels_last, NHWC)."""
  n, h, w, c = x.shape
  ekh, ekw = (kh - 1) * dilation + 1, (kw - 1) * dilation + 1
  if padding == "same":
    oh, ow = -(-h // stride), -(-w // stride)
    ph = max((oh - 1) * stride + ekh - h, 0)
    pw = max((ow - 1) * stride + ekw - w, 0)
    x = np.pad(x, [(0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)])
  else:
    oh, ow = (h - ekh) // stride + 1, (w - ekw) // stride + 1
  rows = []
  for b in range(n):
    for i in range(oh):
      for j in range(ow):
        patch = x[b, i * stride:i * stride + ekh:dilation, j * stride:j * stride + ekw:dilation]
        rows.append(patch.reshape(-1))
  return np.array(rows)


@pytest.mark.parametrize("stride,dilation,padding", [(1, 1, "valid"), (2, 1, "same"),
                                                     (1, 2, "same"), (2, 1, "valid")])
def test_conv2d_im2col_gram_matches_explicit_patches(stride, dilation, padding):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 7, 6, 3)).astype(np.float32)
  layer = L.Conv2D(4, (3, 2), strides=stride, dilation_rate=dilation, padding=padding)
  y = layer(x).numpy()
  ref = _explicit_patches_2d(x, 3, 2, stride, dilation, padding)
  patches = layerwise.layer_patches(layer, x).numpy()[0]
  np.testing.assert_allclose(patches, ref, atol=1e-6)
  w = layerwise.kernel_to_problems(layer, layer.kernel.numpy())[0]
  np.testing.assert_allclose(patches @ w + layer.bias.numpy(), y.reshape(-1, 4), atol=1e-5)
  stats = layerwise.compute_stats(layer, [x[:1], x[1:]])
  np.testing.assert_allclose(stats.gram[0], ref.T @ ref / len(ref), rtol=1e-5, atol=1e-6)
  assert stats.n == len(ref)


@pytest.mark.parametrize("padding", ["causal", "same", "valid"])
def test_conv1d_patches_reproduce_layer(padding):
  x = np.random.default_rng(1).normal(size=(2, 9, 3)).astype(np.float32)
  layer = L.Conv1D(5, 3, dilation_rate=2, padding=padding)
  y = layer(x).numpy().reshape(-1, 5)
  patches = layerwise.layer_patches(layer, x).numpy()[0]
  w = layerwise.kernel_to_problems(layer, layer.kernel.numpy())[0]
  np.testing.assert_allclose(patches @ w + layer.bias.numpy(), y, atol=1e-5)


def test_depthwise_is_one_problem_per_channel():
  x = np.random.default_rng(2).normal(size=(2, 6, 6, 3)).astype(np.float32)
  layer = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same")
  y = layer(x).numpy().reshape(-1, 3, 2)  # channel c*mult + j
  patches = layerwise.layer_patches(layer, x).numpy()  # [cin, N, 9]
  w = layerwise.kernel_to_problems(layer, layer.kernel.numpy())  # [cin, 9, mult]
  assert patches.shape == (3, 72, 9) and w.shape == (3, 9, 2)
  out = np.einsum("bnd,bdm->nbm", patches, w) + layer.bias.numpy().reshape(3, 2)
  np.testing.assert_allclose(out, y, atol=1e-5)
  back = layerwise.problems_to_kernel(layer, w, layer.kernel.shape)
  np.testing.assert_array_equal(back, layer.kernel.numpy())


@pytest.mark.parametrize("stats_dtype", ["float32", "float64"])
def test_streamed_stats_equal_one_shot(stats_dtype):
  rng = np.random.default_rng(3)
  x = rng.normal(size=(300, 12)).astype(np.float32)
  layer = L.Dense(4)
  layer.build((None, 12))
  w0 = layer.kernel.numpy().astype(np.float64)
  streamed = layerwise.compute_stats(layer, [x[i:i + 64] for i in range(0, 300, 64)],
                                     stats_dtype=stats_dtype)
  x64 = x.astype(np.float64)
  y = x64 @ w0
  np.testing.assert_allclose(streamed.gram[0], x64.T @ x64 / 300, rtol=1e-5)
  np.testing.assert_allclose(streamed.cross[0], x64.T @ y / 300, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(streamed.y_sq, np.sum(y ** 2) / 300, rtol=1e-5)
  np.testing.assert_allclose(streamed.y_colsum[0], y.sum(0) / 300, rtol=1e-4, atol=1e-7)
  assert streamed.n == 300
  # The relative output error computed from the statistics equals the direct one.
  w = w0 * (rng.random(w0.shape) < 0.5)
  b = rng.normal(size=4)
  direct = np.linalg.norm(x64 @ w + b - (y + b)) / np.linalg.norm(y + b)
  got = layerwise.relative_error(streamed, w[None], b[None])
  np.testing.assert_allclose(got, direct, rtol=1e-4)


def test_refit_reaches_least_squares_optimum_on_support():
  rng = np.random.default_rng(4)
  x = rng.normal(size=(200, 15))
  y = rng.normal(size=(200, 6))
  gram, cross = x.T @ x / 200, x.T @ y / 200
  support = rng.random((15, 6)) < 0.4
  support[:, 0] = False  # an empty column stays zero
  w, ridge = layerwise.refit(gram[None], cross[None], support[None], ridge=0.0,
                             max_entries=50)  # tiny chunks exercise the chunking
  assert ridge == 0.0
  for j in range(6):
    s = support[:, j]
    expected = np.zeros(15)
    if s.any():
      expected[s] = np.linalg.lstsq(x[:, s], y[:, j], rcond=None)[0]
    np.testing.assert_allclose(w[0, :, j], expected, atol=1e-8)


def test_refit_ridges_a_singular_support():
  x = np.random.default_rng(5).normal(size=(50, 3))
  x = np.concatenate([x, x[:, :1]], axis=1)  # duplicated input: G singular
  gram, cross = x.T @ x / 50, x.T @ x[:, :2] / 50
  w, ridge = layerwise.refit(gram[None], cross[None], np.ones((1, 4, 2), bool), ridge=0.0)
  assert np.all(np.isfinite(w))
  np.testing.assert_allclose(x @ w[0], x[:, :2], atol=1e-3)


def test_low_rank_refit_equals_the_dense_refit():
  # n = 12 rows for d = 60 inputs: the Woodbury solve on 12 x 12 systems gives the
  # solution of the ridged |S| x |S| systems.
  rng = np.random.default_rng(7)
  x = rng.normal(size=(12, 60))
  factor = x[None] / np.sqrt(12)
  rho = 1e-3 * float(np.mean(np.sum(factor ** 2, axis=1)))
  gram = factor[0].T @ factor[0] + rho * np.eye(60)
  cross = rng.normal(size=(1, 60, 5))
  support = rng.random((1, 60, 5)) < 0.7
  support[0, :, 1] = False
  dense, _ = layerwise.refit(gram[None], cross, support, ridge=1e-8)
  low, _ = layerwise.refit(gram[None], cross, support, ridge=1e-8, factor=factor,
                           factor_ridge=rho, max_entries=2000)  # several chunks
  assert layerwise.solvers._woodbury_cheaper(12, int(support.sum(1).max()))  # pylint: disable=protected-access
  np.testing.assert_allclose(low, dense, rtol=1e-6, atol=1e-9)
  assert np.all(low[~support] == 0)


def test_few_rows_use_the_factor_and_keep_the_trained_weights():
  # 6 samples for a 64-input layer: the statistics keep the rows, the solvers multiply
  # through the rank-6 factor, and with lambda -> 0 the solution is the trained kernel
  # (the few-sample ridge pulls toward W0, not toward 0).
  keras.utils.set_random_seed(3)
  inp = keras.Input((64,))
  model = keras.Model(inp, L.Dense(8, name="d")(inp))
  x = np.random.default_rng(8).normal(size=(6, 64)).astype(np.float32)
  layer = model.get_layer("d")
  stats = layerwise.compute_stats(layer, [x])
  assert stats.rows.shape == (1, 6, 64)
  np.testing.assert_allclose(stats.rows[0].T @ stats.rows[0] / 6, stats.gram[0], rtol=1e-5,
                             atol=1e-7)
  w0 = layer.kernel.numpy()[None]
  problem, ridge, notes = layerwise.make_problem("d", stats, w0)
  assert ridge > 0 and problem.factor is not None and any("rank-6" in n for n in notes)
  w = tf.constant(np.random.default_rng(9).normal(size=(1, 64, 8)), tf.float32)
  np.testing.assert_allclose(
      layerwise.gram_matmul(problem.gram, w, problem.factor, problem.ridge),
      tf.matmul(problem.gram, w), rtol=1e-4, atol=1e-6)
  solver = logsum.LogSumSolver(lam=1e-12)
  solved, _ = solver.solve(problem, w0.size)
  np.testing.assert_allclose(solved.numpy() * problem.scale, w0, rtol=1e-3, atol=1e-5)
  w = solved.numpy() * problem.scale * (np.abs(solved.numpy()) > 0.5)
  bias = np.zeros((1, 8))
  np.testing.assert_allclose(  # ||X W||^2 from the rows equals W^T G W
      layerwise.relative_error(stats, w, bias),
      layerwise.relative_error(dataclasses.replace(stats, rows=None), w, bias), rtol=1e-5)
  assert layerwise.compute_stats(layer, [np.tile(x, (12, 1))]).rows is None  # n >= d


def test_power_iteration_matches_eigvalsh():
  a = np.random.default_rng(6).normal(size=(2, 30, 30))
  g = np.einsum("bij,bkj->bik", a, a)
  lam = layerwise.power_iteration(tf.constant(g, tf.float32), 300).numpy()
  expected = np.linalg.eigvalsh(g)[:, -1]
  assert np.all(lam >= expected * 0.999) and np.all(lam <= expected * 1.03)


def _mlp(seed=0):
  keras.utils.set_random_seed(seed)
  inp = keras.Input((20,), name="pixels")
  h = L.Dense(16, activation="relu", name="h1")(inp)
  h = L.Dense(12, activation="relu", name="h2")(h)
  return keras.Model(inp, L.Dense(3, name="out")(h))


def _data(n=400, seed=0):
  return np.random.default_rng(seed).normal(size=(n, 20)).astype(np.float32)


def test_cascade_and_parallel_differ_as_expected():
  x = _data()
  base = _mlp()
  runs = {}
  for mode in ("parallel", "cascade"):
    model = keras.models.clone_model(base)
    model.set_weights(base.get_weights())
    rows = layerwise.prune_layerwise(model, x, logsum.LogSumSolver(), sparsity=0.6,
                                     mode=mode, verbose=False)
    runs[mode] = (model, rows)
  # The first layer sees the same inputs in both modes: identical result.
  np.testing.assert_allclose(runs["parallel"][0].get_layer("h1").kernel.numpy(),
                             runs["cascade"][0].get_layer("h1").kernel.numpy(), atol=1e-6)
  # Later layers are fitted to different inputs...
  assert not np.allclose(runs["parallel"][0].get_layer("h2").kernel.numpy(),
                         runs["cascade"][0].get_layer("h2").kernel.numpy())
  # ...and cascade, which compensates the earlier layers' errors, ends closer to the
  # original network output.
  ref = base.predict(x, verbose=0)
  err = {m: np.linalg.norm(runs[m][0].predict(x, verbose=0) - ref) for m in runs}
  assert err["cascade"] < err["parallel"]
  for rows in (runs["parallel"][1], runs["cascade"][1]):
    for r in rows:
      assert abs(r["sparsity"] - 0.6) < 0.02
      assert r["err_after_refit"] <= r["err_before_refit"] + 1e-9


def test_wrapped_model_gets_masks_and_kernels():
  import tfprune  # pylint: disable=g-import-not-at-top
  from tfprune import model as model_lib  # pylint: disable=g-import-not-at-top
  base = _mlp()
  pruned = model_lib.prune(base, "logsum", target_sparsity=0.75)
  method = pruned.get_layer("prune_h1").method
  rows = method.apply(pruned, _data(), verbose=False)
  assert [r["layer"] for r in rows] == ["h1", "h2", "out"]
  for name in ("h1", "h2", "out"):
    wrapper = pruned.get_layer(f"prune_{name}")
    kernel = wrapper.layer.kernel.numpy()
    mask = wrapper.masks[0].numpy()
    assert np.all(kernel[mask == 0] == 0)
    assert abs(1 - mask.mean() - 0.75) < 0.02
  assert np.all(np.isfinite(pruned.predict(_data(10), verbose=0)))
  del tfprune


def test_global_allocation_hits_total_sparsity():
  model = _mlp()
  rows = layerwise.prune_layerwise(model, _data(), logsum.LogSumSolver(), sparsity=0.7,
                                   allocation="global", mode="parallel", verbose=False)
  sizes = {"h1": 320, "h2": 192, "out": 36}
  zeros = sum(r["sparsity"] * sizes[r["layer"]] for r in rows)
  assert abs(zeros / sum(sizes.values()) - 0.7) < 0.01
  assert len({round(r["sparsity"], 3) for r in rows}) > 1  # not uniform


def test_wrong_calibration_shape_names_input_and_shape():
  with pytest.raises(ValueError, match=r"pixels.*\(batch,\) \+ \(20,\)"):
    layerwise.prune_layerwise(_mlp(), np.zeros((10, 21), np.float32),
                              logsum.LogSumSolver(), verbose=False)
  with pytest.raises(ValueError, match="numeric"):
    layerwise.prune_layerwise(_mlp(), np.array([["a"] * 20]), logsum.LogSumSolver(),
                              verbose=False)


def test_too_few_samples_warns_and_regularises():
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    model = _mlp()
    rows = layerwise.prune_layerwise(model, _data(8), logsum.LogSumSolver(), sparsity=0.5,
                                     verbose=False)
  assert any("only 8 calibration rows" in str(w.message) for w in caught)
  assert "ridge" in rows[0]["notes"][0]
  assert np.all(np.isfinite(model.get_layer("h1").kernel.numpy()))


def test_bad_arguments_are_named():
  with pytest.raises(ValueError, match="mode"):
    layerwise.prune_layerwise(_mlp(), _data(), logsum.LogSumSolver(), mode="serial")
  with pytest.raises(ValueError, match=r"unknown layers \['nope'\]"):
    layerwise.prune_layerwise(_mlp(), _data(), logsum.LogSumSolver(), sparsity={"nope": .5})
  with pytest.raises(ValueError, match="sparsity"):
    layerwise.prune_layerwise(_mlp(), _data(), logsum.LogSumSolver(), sparsity=1.0)
  with pytest.raises(ValueError, match="Cannot prune layers"):
    layerwise.prune_layerwise(_mlp(), _data(), logsum.LogSumSolver(), layers=["missing"])


def _mixed_net():
  """Token ids -> Embedding -> depthwise + pointwise conv -> MHA -> EinsumDense -> LSTM."""
  keras.utils.set_random_seed(0)
  ids = keras.Input((8,), dtype="int32", name="ids")
  h = L.Embedding(40, 8, name="emb")(ids)
  h = L.Reshape((8, 1, 8))(h)
  h = L.DepthwiseConv2D((3, 1), padding="same", name="dw")(h)
  h = L.Conv2D(8, 1, activation="relu", name="pw")(h)
  h = L.Reshape((8, 8))(h)
  h = L.MultiHeadAttention(2, 4, name="mha")(h, h)
  h = L.EinsumDense("abc,cd->abd", output_shape=(None, 6), bias_axes="d", name="proj")(h)
  h = L.LSTM(4, name="lstm")(h)
  return keras.Model(ids, L.Dense(3, name="head")(h))


def test_einsum_problems_reproduce_the_layer_and_round_trip():
  x = np.random.default_rng(7).normal(size=(2, 5, 6)).astype(np.float32)
  for eq, out_shape, bias in [("abc,cde->abde", (None, 2, 3), "de"),
                              ("abc,cd->abd", (None, 4), "d"),
                              ("...b,bc->...c", 4, "c")]:
    layer = L.EinsumDense(eq, output_shape=out_shape, bias_axes=bias)
    y = layer(x).numpy()
    w = layerwise.kernel_to_problems(layer, layer.kernel.numpy())
    patches = layerwise.layer_patches(layer, x).numpy()
    b = layerwise.geometry.bias_problems(layer, w.shape)
    np.testing.assert_allclose(patches @ w + b[:, None], y.reshape(1, 10, -1), atol=1e-5)
    back = layerwise.problems_to_kernel(layer, w, layer.kernel.shape)
    np.testing.assert_array_equal(back, layer.kernel.numpy())
  out = L.EinsumDense("abcd,cde->abe", output_shape=(None, 6), bias_axes="e")
  xh = np.random.default_rng(8).normal(size=(2, 5, 2, 3)).astype(np.float32)
  y = out(xh).numpy()
  w = layerwise.kernel_to_problems(out, out.kernel.numpy())
  assert w.shape == (1, 6, 6)  # [heads * head_dim] inputs x [hidden] outputs
  np.testing.assert_allclose(layerwise.layer_patches(out, xh).numpy() @ w
                             + out.bias.numpy(), y.reshape(1, 10, 6), atol=1e-5)


def test_real_layer_types_are_pruned_and_skips_are_said(capsys):
  model = _mixed_net()
  x = np.random.default_rng(0).integers(0, 40, size=(96, 8)).astype("int32")
  x[:, 0] = 3  # a frequent id
  ref = model(x).numpy()
  emb0 = model.get_layer("emb").embeddings.numpy().copy()
  lstm_kernel = model.get_layer("lstm").cell.kernel.numpy().copy()
  rows = layerwise.prune_layerwise(model, x, logsum.LogSumSolver(max_iter=300),
                                   sparsity=0.5)
  out = capsys.readouterr().out
  names = [r["layer"] for r in rows]
  assert names == ["emb", "dw", "pw", "query", "key", "value", "attention_output",
                   "proj", "head"]
  for r in rows:
    kernel = r["layer"]
    assert abs(r["sparsity"] - 0.5) < 0.05, r
    assert f"] {kernel} " in out and f"sparsity {r['sparsity']:.4f}" in out
  mha = model.get_layer("mha")
  for sub in (mha.query_dense, mha.key_dense, mha.value_dense, mha.output_dense):
    assert abs(np.mean(sub.kernel.numpy() == 0) - 0.5) < 0.05
  # Embedding: rows are inputs, G = diag(counts): keep the top-k of (count + 1) * w^2.
  emb = model.get_layer("emb").embeddings.numpy()
  counts = np.bincount(x.ravel(), minlength=40) + 1.0
  expected = topk.topk_mask(tf.constant(counts[:, None] * emb0 ** 2, tf.float32),
                            emb.size // 2).numpy()
  np.testing.assert_array_equal(emb != 0, expected != 0)
  np.testing.assert_array_equal(emb[emb != 0], emb0[emb != 0])
  assert np.mean(emb[3] != 0) > np.mean(emb != 0)  # the frequent id keeps more
  # The recurrent kernel is skipped, said so, and left untouched.
  assert "skip lstm (LSTM): recurrent kernels" in out
  assert [s[0] for s in rows.skipped] == ["lstm"]
  np.testing.assert_array_equal(model.get_layer("lstm").cell.kernel.numpy(), lstm_kernel)
  got = model(x).numpy()
  assert np.all(np.isfinite(got))
  assert np.linalg.norm(got - ref) < np.linalg.norm(ref)
  with pytest.raises(ValueError, match="lstm: recurrent kernels"):
    layerwise.prune_layerwise(model, x, logsum.LogSumSolver(), layers=["lstm"],
                              verbose=False)


def test_skips_warn_when_not_verbose():
  model = _mixed_net()
  x = np.random.default_rng(1).integers(0, 40, size=(32, 8)).astype("int32")
  with pytest.warns(UserWarning, match="skips: skip lstm"):
    layerwise.prune_layerwise(model, x, logsum.LogSumSolver(max_iter=50), sparsity=0.5,
                              layers=["head"], verbose=False)


def test_batchnorm_weighting_lowers_the_error_after_batchnorm():
  keras.utils.set_random_seed(5)
  inp = keras.Input((6, 6, 4))
  conv = L.Conv2D(8, 3, padding="same", name="conv")
  bn = L.BatchNormalization(name="bn")
  model = keras.Model(inp, bn(conv(inp)))
  bn.gamma.assign(np.geomspace(0.05, 20.0, 8).astype("float32"))  # very unequal channels
  x = np.random.default_rng(5).normal(size=(64, 6, 6, 4)).astype("float32")
  ref = model(x).numpy()
  errors = {}
  for weighting in (False, True):
    m = keras.models.clone_model(model)
    m.set_weights(model.get_weights())
    rows = layerwise.prune_layerwise(m, x, logsum.LogSumSolver(), sparsity=0.7,
                                     verbose=False, batchnorm_weighting=weighting)
    assert abs(rows[0]["sparsity"] - 0.7) < 0.01
    assert ("BatchNorm" in "".join(rows[0]["notes"])) == weighting
    errors[weighting] = np.linalg.norm(m(x).numpy() - ref)
  assert errors[True] < 0.9 * errors[False]


def test_inputs_that_are_always_padding_keep_the_target_sparsity():
  # On a 1x1 map a 3x3 'same' depthwise kernel only ever sees its centre tap: 8 of 9
  # rows are dead. The target sparsity is still met (dead-row weights kept by magnitude).
  keras.utils.set_random_seed(6)
  inp = keras.Input((1, 1, 6))
  model = keras.Model(inp, L.DepthwiseConv2D(3, padding="same", name="dw")(inp))
  x = np.random.default_rng(6).normal(size=(32, 1, 1, 6)).astype("float32")
  ref = model(x).numpy()
  rows = layerwise.prune_layerwise(model, x, logsum.LogSumSolver(), sparsity=0.5,
                                   verbose=False)
  assert rows[0]["sparsity"] == pytest.approx(0.5, abs=1 / 54)
  assert "always 0" in "".join(rows[0]["notes"])
  np.testing.assert_allclose(model(x).numpy(), ref, atol=1e-5)  # centre taps all kept


@pytest.mark.parametrize("use_bn", [False, True])
def test_mean_correction_removes_the_output_shift(use_bn):
  keras.utils.set_random_seed(9)
  inp = keras.Input((12,))
  h = L.Dense(10, use_bias=not use_bn, name="fc")(inp)
  out = L.BatchNormalization(name="bn")(h) if use_bn else h
  model = keras.Model(inp, out)
  x = np.abs(np.random.default_rng(9).normal(size=(200, 12))).astype("float32") + 1.0
  ref = model(x).numpy()
  errors, shifts = {}, {}
  for correct in (False, True):
    m = keras.models.clone_model(model)
    m.set_weights(model.get_weights())
    rows = layerwise.prune_layerwise(m, x, logsum.LogSumSolver(), sparsity=0.75,
                                     verbose=False, mean_correction=correct)
    diff = m(x).numpy() - ref
    errors[correct], shifts[correct] = np.linalg.norm(diff), np.abs(diff.mean(0)).max()
    if correct:
      assert ("bn" if use_bn else "bias") in "".join(rows[0]["notes"])
    if correct and not use_bn:  # the reported error is the corrected layer's
      direct = np.linalg.norm(m.get_layer("fc")(x).numpy() -
                              model.get_layer("fc")(x).numpy())
      reported = rows[0]["err_after_refit"] * np.linalg.norm(model.get_layer("fc")(x))
      np.testing.assert_allclose(reported, direct, rtol=1e-3)
  assert shifts[True] < 1e-3 * max(shifts[False], 1e-6) + 1e-5
  assert errors[True] <= errors[False] + 1e-6


def _conv_bn_net(seed=3):
  keras.utils.set_random_seed(seed)
  inp = keras.Input((8, 8, 3))
  h = L.Conv2D(12, 3, padding="same", use_bias=False, name="conv1")(inp)
  h = L.ReLU()(L.BatchNormalization(name="bn1")(h))
  h = L.Conv2D(12, 3, padding="same", use_bias=False, name="conv2")(h)
  h = L.ReLU()(L.BatchNormalization(name="bn2")(h))
  model = keras.Model(inp, L.Dense(5, name="head")(L.GlobalAveragePooling2D()(h)))
  rng = np.random.default_rng(seed)
  for name in ("bn1", "bn2"):
    bn = model.get_layer(name)
    bn.gamma.assign(rng.uniform(0.5, 2.0, bn.gamma.shape).astype("float32"))
    bn.beta.assign(rng.normal(size=bn.beta.shape).astype("float32"))
  x = rng.normal(size=(128, 8, 8, 3)).astype("float32")
  return model, x


def _bn_input_moments(model, names, x):
  sub = keras.Model(model.inputs, [model.get_layer(n).input for n in names])
  outs = sub(x, training=False)
  outs = outs if isinstance(outs, (list, tuple)) else [outs]
  flat = [keras.ops.convert_to_numpy(o).reshape(-1, o.shape[-1]).astype(np.float64)
          for o in outs]
  return [(f.mean(0), f.var(0)) for f in flat]


def _copy(model):
  m = keras.models.clone_model(model)
  m.set_weights(model.get_weights())
  return m


@pytest.mark.parametrize("mode", ["cascade", "parallel"])
def test_bn_recalibration_sets_the_pruned_nets_calibration_statistics(mode):
  model, x = _conv_bn_net()
  dense = _bn_input_moments(model, ["bn1", "bn2"], x)
  rows = layerwise.prune_layerwise(model, x, logsum.LogSumSolver(), sparsity=0.7, mode=mode,
                                   verbose=False, bn_recalibration=True)
  assert rows.batchnorm["layers"] == ["bn1", "bn2"]
  assert rows.batchnorm["samples"] == len(x)
  pruned = _bn_input_moments(model, ["bn1", "bn2"], x)  # after the re-calibration
  for name, (mean, var), (mean_d, var_d) in zip(["bn1", "bn2"], pruned, dense):
    bn = model.get_layer(name)
    scale = np.sqrt(var.max())
    np.testing.assert_allclose(bn.moving_mean.numpy(), mean, atol=1e-4 * scale)
    np.testing.assert_allclose(bn.moving_variance.numpy(), var, rtol=1e-3,
                               atol=1e-5 * var.max())
    assert np.abs(var - var_d).max() > 1e-3 * var_d.max()  # pruning did change them
  # Idempotent: a second re-calibration on the same data changes nothing.
  before = [model.get_layer(n).moving_variance.numpy() for n in ("bn1", "bn2")]
  layerwise.recalibrate_batchnorm(model, x, verbose=False)
  for n, b in zip(("bn1", "bn2"), before):
    np.testing.assert_allclose(model.get_layer(n).moving_variance.numpy(), b, rtol=1e-4,
                               atol=1e-6 * b.max())


def test_bn_recalibration_lowers_the_output_error_in_parallel_mode():
  model, x = _conv_bn_net(seed=4)
  layerwise.recalibrate_batchnorm(model, x, verbose=False)  # dense stats = calibration's
  ref = model(x).numpy()
  errors = {}
  for recal in (False, True):
    m = _copy(model)
    rows = layerwise.prune_layerwise(m, x, logsum.LogSumSolver(), sparsity=0.8,
                                     mode="parallel", verbose=False, bn_recalibration=recal)
    assert (rows.batchnorm is not None) == recal
    errors[recal] = np.linalg.norm(m(x).numpy() - ref) / np.linalg.norm(ref)
  assert errors[True] < 0.7 * errors[False]  # measured 0.109 vs 0.237


def test_bn_recalibration_only_touches_batchnorm_downstream_of_pruned_layers(capsys):
  model, x = _conv_bn_net()
  bn1 = [w.numpy() for w in model.get_layer("bn1").non_trainable_weights]
  rows = layerwise.prune_layerwise(model, x, logsum.LogSumSolver(), sparsity=0.5,
                                   layers=["conv2"], bn_recalibration=True)
  assert rows.batchnorm["layers"] == ["bn2"]
  assert "batchnorm recalibration: 1 BatchNormalization layers" in capsys.readouterr().out
  for w, b in zip(model.get_layer("bn1").non_trainable_weights, bn1):
    np.testing.assert_array_equal(w.numpy(), b)


def test_bn_recalibration_auto_and_models_without_batchnorm():
  model, x = _conv_bn_net()
  moving = model.get_layer("bn2").moving_variance.numpy()
  rows = layerwise.prune_layerwise(model, x, logsum.LogSumSolver(), sparsity=0.5,
                                   mode="cascade", verbose=False)  # auto: off in cascade
  assert rows.batchnorm is None
  np.testing.assert_array_equal(model.get_layer("bn2").moving_variance.numpy(), moving)
  plain = keras.Sequential([keras.Input((6,)), L.Dense(4, name="fc")])
  rows = layerwise.prune_layerwise(plain, np.ones((16, 6), "float32"),
                                   logsum.LogSumSolver(), sparsity=0.5, mode="parallel",
                                   verbose=False, bn_recalibration=True)
  assert rows.batchnorm is None
  with pytest.raises(ValueError, match="bn_recalibration"):
    layerwise.prune_layerwise(plain, np.ones((16, 6), "float32"), logsum.LogSumSolver(),
                              bn_recalibration="yes")
  method = logsum.LogSum(target_sparsity=0.5, bn_recalibration=False)
  config = method.get_config()
  assert config["bn_recalibration"] is False
  assert logsum.LogSum.from_config(config).bn_recalibration is False
  assert logsum.LogSum().bn_recalibration == "auto"


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))


@keras.saving.register_keras_serializable(package="tfprune_test")
class _Unused(keras.layers.Layer):
  """A block with a sublayer its call never uses on this data (keras_hub SAM's
  `no_mask_embed`, used only without a mask prompt)."""

  def build(self, input_shape):
    self.used = keras.layers.Dense(8, name="used")
    self.used.build(input_shape)
    self.spare = keras.layers.Dense(8, name="spare")
    self.spare.build(input_shape)

  def call(self, x):
    return self.used(x)


def test_a_layer_no_calibration_data_reaches_is_pruned_by_magnitude():
  inp = keras.Input((6,))
  model = keras.Model(inp, keras.layers.Dense(3, name="head")(_Unused(name="block")(inp)))
  pruned = tfprune.prune(model, "logsum", target_sparsity=0.5)
  x = np.random.default_rng(0).standard_normal((32, 6)).astype("float32")
  with pytest.warns(UserWarning, match="no calibration data reached it"):
    table = tfprune.get_method(pruned).apply(pruned, x, verbose=False)
  row = next(r for r in table if "spare" in r["layer"])
  assert row["sparsity"] == 0.5 and "pruned by magnitude" in row["notes"][0]
  spare = tfprune.strip(pruned).get_layer("block").spare.kernel.numpy()
  w0 = model.get_layer("block").spare.kernel.numpy()
  assert np.count_nonzero(spare) == 24
  assert np.min(np.abs(w0[spare != 0])) >= np.max(np.abs(w0[spare == 0]))
