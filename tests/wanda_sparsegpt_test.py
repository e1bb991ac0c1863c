"""Tests of the retrain-free baselines Wanda and SparseGPT (tfprune.methods.wanda /
sparsegpt) on the layer-wise engine: exact counts, NumPy references, targets, models we
did not design, config round trip and argument errors."""
import json

import keras
import numpy as np
import pytest

import tfprune
from tfprune import _liveness
from tfprune.methods import sparsegpt
from tfprune.methods import wanda

D = 24


def _inputs(n=256, d=D, seed=0):
  """Correlated inputs with unequal scales (so ||X_j|| matters)."""
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(n, d))
  x = z * rng.uniform(0.2, 3.0, size=d) + 0.3 * z @ rng.normal(size=(d, d)) / np.sqrt(d)
  return x.astype("float32")


def _mlp(hidden=16, out=6):
  keras.utils.set_random_seed(0)
  inp = keras.Input((D,))
  h = keras.layers.Dense(hidden, activation="relu", name="fc1")(inp)
  return keras.Model(inp, keras.layers.Dense(out, name="out")(h))


def _layer(model, name):
  """The layer `name` of a plain or wrapped (`tfprune.prune`) model."""
  for layer in model.layers:
    if name in (layer.name, getattr(getattr(layer, "layer", None), "name", None)):
      return getattr(layer, "layer", layer)
  raise KeyError(name)


def _kernel(model, name):
  return _layer(model, name).kernel.numpy()


def _apply(model, name, x, **kwargs):
  pruned = tfprune.prune(model, name, **kwargs)
  rows = tfprune.get_method(pruned).apply(pruned, x, verbose=False)
  return pruned, rows


def _wanda_mask(w, x, keep):
  """NumPy reference: per output, the `keep` largest |W_ij| * ||X_j||_2."""
  score = np.abs(w.astype(np.float64)) * np.linalg.norm(x.astype(np.float64), axis=0)[:, None]
  mask = np.zeros(w.shape, bool)
  np.put_along_axis(mask, np.argsort(-score, axis=0, kind="stable")[:keep], True, axis=0)
  return mask


def test_wanda_keeps_trained_weights_and_the_reference_mask_per_output():
  model = _mlp()
  dense = {n: _kernel(model, n) for n in ("fc1", "out")}
  biases = {n: _layer(model, n).bias.numpy() for n in ("fc1", "out")}
  x = _inputs()
  pruned, rows = _apply(model, "wanda", x, target_sparsity=0.5)
  for name, inp in (("fc1", x), ("out", None)):
    w = _kernel(pruned, name)
    kept = w != 0
    np.testing.assert_array_equal(kept.sum(axis=0), w.shape[0] // 2)  # every output
    np.testing.assert_array_equal(w[kept], dense[name][kept])  # bit for bit
    np.testing.assert_array_equal(_layer(pruned, name).bias.numpy(), biases[name])
    if inp is None:  # cascade: the inputs of the pruned network
      inp = np.maximum(x @ _kernel(pruned, "fc1") + biases["fc1"], 0.0)
    np.testing.assert_array_equal(kept, _wanda_mask(dense[name], inp, w.shape[0] // 2))
  assert [r["sparsity"] for r in rows] == [0.5, 0.5]
  masks = tfprune.get_method(pruned).wrappers[0].masks[0].numpy()
  np.testing.assert_array_equal(masks != 0, _kernel(pruned, "fc1") != 0)


def test_wanda_conv_keeps_the_same_count_in_every_output_channel():
  keras.utils.set_random_seed(1)
  inp = keras.Input((8, 8, 3))
  h = keras.layers.Conv2D(8, 3, activation="relu", name="c1")(inp)
  h = keras.layers.DepthwiseConv2D(3, name="dw")(h)
  out = keras.layers.Dense(4, name="fc")(keras.layers.GlobalAveragePooling2D()(h))
  model = keras.Model(inp, out)
  x = np.random.default_rng(0).normal(size=(16, 8, 8, 3)).astype("float32")
  pruned, rows = _apply(model, "wanda", x, target_sparsity=0.7, mode="parallel")
  c1 = _kernel(pruned, "c1").reshape(27, 8)
  np.testing.assert_array_equal((c1 != 0).sum(axis=0), 8)  # round(0.3 * 27)
  dw = _kernel(pruned, "dw").reshape(9, 8)
  np.testing.assert_array_equal((dw != 0).sum(axis=0), 3)  # ceil(0.3 * 9) per channel
  assert [r["layer"] for r in rows] == ["c1", "dw", "fc"]


def _sparsegpt_reference(w, hessian, prune):
  """Straightforward SparseGPT (one block, no lazy updates), in its own layout:
  rows = outputs, columns = inputs."""
  rows = w.T.copy()
  u = np.linalg.cholesky(np.linalg.inv(hessian)).T
  score = rows ** 2 / np.diag(u)[None] ** 2
  pruned = np.zeros(score.size, bool)
  pruned[np.argsort(score.ravel(), kind="stable")[:prune]] = True
  pruned = pruned.reshape(score.shape)
  for i in range(rows.shape[1]):
    q = np.where(pruned[:, i], 0.0, rows[:, i])
    err = (rows[:, i] - q) / u[i, i]
    rows[:, i:] -= err[:, None] * u[i, i:][None]
    rows[:, i] = q
  return rows.T


def _damped(x, percdamp=0.01):
  g = x.T.astype(np.float64) @ x.astype(np.float64) / len(x)
  return g + percdamp * np.mean(np.diag(g)) * np.eye(len(g))


def test_sparsegpt_blocks_match_the_straightforward_reference():
  rng = np.random.default_rng(3)
  x, w = _inputs(64, 16, seed=3).astype(np.float64), rng.normal(size=(16, 4))
  hessian = _damped(x)
  factor, _, _ = sparsegpt.inverse_hessian_factor(_damped(x, 0.0)[None], 0.01)
  ref = _sparsegpt_reference(w, hessian, 32)
  got = sparsegpt.sparsegpt_prune(w[None], factor, 32, blocksize=16)[0]
  np.testing.assert_allclose(got, ref, atol=1e-10)
  assert np.sum(got == 0) == 32
  # Smaller blocks (lazy updates, one mask per block) keep each block's exact share.
  blocks = sparsegpt.sparsegpt_prune(w[None], factor, 29, blocksize=5)[0]
  assert np.sum(blocks == 0) == 29
  assert [c for _, _, c in sparsegpt.block_counts(29, 16, 5)] == [9, 9, 9, 2]


def test_sparsegpt_damping_rises_until_the_hessian_factors():
  gram = np.diag([1.0, 1.0, -0.05])[None]  # float rounding of a rank-deficient G
  factor, hessian, damp = sparsegpt.inverse_hessian_factor(gram, 0.01)
  assert damp[0] == pytest.approx(0.065)  # 0.0065 did not factor
  np.testing.assert_allclose(factor[0].T @ factor[0] @ hessian[0], np.eye(3), atol=1e-12)
  with pytest.raises(ValueError, match="percdamp"):
    sparsegpt.inverse_hessian_factor(-np.eye(3)[None], 0.01)


def test_sparsegpt_layer_matches_reference_and_beats_magnitude():
  keras.utils.set_random_seed(2)
  inp = keras.Input((16,))
  model = keras.Model(inp, keras.layers.Dense(4, name="fc")(inp))
  w0 = _kernel(model, "fc").astype(np.float64)
  x = _inputs(128, 16, seed=4)
  pruned, rows = _apply(model, "sparsegpt", x, target_sparsity=0.5, blocksize=128)
  got = _kernel(pruned, "fc")
  ref = _sparsegpt_reference(w0, _damped(x), 32)
  np.testing.assert_allclose(got, ref, atol=1e-5 * np.abs(w0).max())
  np.testing.assert_array_equal(got == 0, ref == 0)

  def err(w):
    return np.linalg.norm(x @ (w - w0)) / np.linalg.norm(x @ w0)

  magnitude = w0 * (np.abs(w0) >= np.sort(np.abs(w0).ravel())[32])
  assert np.sum(magnitude == 0) == 32
  assert err(got) < 0.8 * err(magnitude), (err(got), err(magnitude))
  assert rows[0]["sparsity"] == 0.5


def test_dense_outputs_target_differs_in_cascade_and_fits_the_dense_outputs_better():
  x = _inputs()
  published = _apply(_mlp(hidden=32), "sparsegpt", x, target_sparsity=0.8)
  dense = _apply(_mlp(hidden=32), "sparsegpt", x, target_sparsity=0.8,
                 target="dense_outputs")
  # The first layer sees the dense inputs: C = G W0, so W* = W0 and the same result.
  np.testing.assert_allclose(_kernel(dense[0], "fc1"), _kernel(published[0], "fc1"),
                             atol=1e-5)
  assert not np.allclose(_kernel(dense[0], "out"), _kernel(published[0], "out"))
  # The rows' error is w.r.t. the dense network's outputs.
  assert dense[1][1]["err_after_refit"] < 0.9 * published[1][1]["err_after_refit"]
  for pruned, _ in (published, dense):  # exactly the engine's keep count, ceil(0.2 size)
    assert [int(np.sum(_kernel(pruned, n) != 0)) for n in ("fc1", "out")] == [154, 39]


@pytest.mark.parametrize("name", ["wanda", "sparsegpt"])
def test_global_scope_meets_the_total(name):
  x = _inputs()
  pruned, rows = _apply(_mlp(), name, x, target_sparsity=0.6, scope="global")
  kernels = [_kernel(pruned, n) for n in ("fc1", "out")]
  total = sum(k.size for k in kernels)
  zeros = sum(int(np.sum(k == 0)) for k in kernels)
  assert abs(zeros - 0.6 * total) <= 0.01 * total + 6
  if name == "wanda":
    for k in kernels:
      assert len(set((k != 0).sum(axis=0))) == 1
  assert [r["layer"] for r in rows] == ["fc1", "out"]


def _mobilenet():
  return keras.applications.MobileNet(input_shape=(32, 32, 3), alpha=0.25, weights=None,
                                      classes=5)


def _hub_resnet():
  pytest.importorskip("keras_hub")
  import hub_models  # pylint: disable=g-import-not-at-top
  return hub_models.build("ResNetBackbone")


@pytest.mark.parametrize("name,build,kwargs", [
    ("wanda", _mobilenet, {"mode": "parallel"}),
    ("sparsegpt", _hub_resnet, {"target": "dense_outputs", "scope": "global"}),
])
def test_on_nets_we_did_not_design_the_model_stays_alive(name, build, kwargs):
  model = build()
  x = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype("float32")
  before = model(x).numpy()
  method = tfprune.methods.get_method_class(name)(target_sparsity=0.5, **kwargs)
  rows = method.apply(model, x, verbose=False)
  sizes = [np.prod([int(v) for v in r["shape"].split("x")]) for r in rows]
  total = sum(s * r["sparsity"] for s, r in zip(sizes, rows)) / sum(sizes)
  assert total == pytest.approx(0.5, abs=0.02)
  if name == "wanda":  # round(k / outputs) per output: 5 of 9 in a 3x3 depthwise kernel
    assert len(rows) == 28 and all(abs(r["sparsity"] - 0.5) < 0.06 for r in rows)
  _liveness.check_alive(model)
  after = model(x).numpy()
  assert np.all(np.isfinite(after)) and not np.allclose(after, before)


@pytest.mark.parametrize("name,extra", [("wanda", {}),
                                        ("sparsegpt", {"target": "dense_outputs",
                                                       "blocksize": 32, "percdamp": 0.05})])
def test_config_round_trip(name, extra):
  cls = tfprune.methods.get_method_class(name)
  method = cls(target_sparsity=0.7, scope="global", mode="parallel", **extra)
  config = method.get_config()
  again = cls.from_config(config)
  assert again.get_config() == config
  for key, value in extra.items():
    assert config[key] == value
  restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(method))
  assert type(restored) is cls and restored.get_config() == config


@pytest.mark.parametrize("name,kwargs,match", [
    ("sparsegpt", {"target": "outputs"}, "target"),
    ("sparsegpt", {"blocksize": 0}, "blocksize"),
    ("sparsegpt", {"blocksize": 2.5}, "blocksize"),
    ("sparsegpt", {"blocksize": "big"}, "blocksize"),
    ("sparsegpt", {"percdamp": -0.1}, "percdamp"),
    ("wanda", {"scope": "block"}, "scope"),
    ("wanda", {"mode": "serial"}, "mode"),
    ("wanda", {"target_sparsity": 1.0}, "target_sparsity"),
])
def test_bad_arguments_name_the_argument(name, kwargs, match):
  with pytest.raises(ValueError, match=match):
    tfprune.methods.get_method_class(name)(**kwargs)


def test_relu_model_is_refused_before_any_pass():
  model = _mlp()
  before = _kernel(model, "fc1").copy()
  method = wanda.Wanda(target_sparsity=0.5, relu_model=True)
  with pytest.raises(ValueError, match="relu_model"):
    method.apply(model, _inputs(), verbose=False)
  np.testing.assert_array_equal(_kernel(model, "fc1"), before)


@pytest.mark.parametrize("method,extra", [
    ("wanda", ()), ("sparsegpt", ('--method_arg=target="dense_outputs"',))])
def test_training_binary_runs_the_method(tmp_path, method, extra):
  from tfprune.bin import train  # pylint: disable=g-import-not-at-top
  out = tmp_path / "run"
  argv = ["tfprune-train", "--dataset=digits", "--model=lenet_300_100",
          f"--method={method}", *extra, "--dense_epochs=1", "--target_sparsity=0.5",
          "--batch_size=64", "--train_samples=256", "--calibration_samples=128",
          "--calibration_export=4", f"--output_dir={out}"]
  try:
    train.FLAGS(argv)
    train.main(argv[:1])
  finally:
    train.FLAGS.unparse_flags()
  report = json.loads((out / "report.json").read_text())
  assert report["sparsity"] == pytest.approx(0.5, abs=0.02)
  assert report["calibration_samples"] == 128
  assert len(report["method_report"]["layers"]) == 3  # the per-layer rows of the engine
  if extra:
    assert report["method_kwargs"]["target"] == "dense_outputs"
