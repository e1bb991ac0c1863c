"""Tests for tfprune.prune / strip / get_method / sparsity_report and training."""
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import _mlp as conftest_mlp

import tfprune

L = keras.layers


def _mlp():
  return conftest_mlp(hidden=(16, 16), seed=None)  # the shared fixture's builder


def _data(n=256, d=12, classes=3):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(n, d)).astype("float32")
  y = (x[:, :classes].argmax(axis=1)).astype("int64")
  return x, y


def _effective(model):
  return [w.numpy() * m.numpy() for wr in tfprune.methods.base.find_wrappers(model)
          for w, m in zip(wr.prunable_weights, wr.masks)]


def _kernel_zeros(model):
  return sum(int(np.sum(m.numpy() == 0)) for wr in tfprune.methods.base.find_wrappers(model)
             for m in wr.masks)


def _schedule():
  return tfprune.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=12, frequency=4)


def test_prune_copies_weights_and_leaves_original_untouched():
  model = _mlp()
  x, _ = _data()
  pruned = tfprune.prune(model, "magnitude", target_sparsity=0.5)
  np.testing.assert_allclose(pruned.predict(x, verbose=0), model.predict(x, verbose=0),
                             rtol=1e-5, atol=1e-6)
  before = [w.numpy().copy() for w in model.weights]
  tfprune.get_method(pruned).update_masks(0.5)
  for w, b in zip(model.weights, before):
    np.testing.assert_array_equal(w.numpy(), b)
  assert [l.name for l in pruned.layers[1:]] == ["prune_fc1", "prune_fc2", "prune_out"]


def test_fit_reaches_target_and_masked_weights_stay_zero():
  x, y = _data()
  pruned = tfprune.prune(_mlp(), "magnitude", target_sparsity=0.75, schedule=_schedule())
  method = tfprune.get_method(pruned)
  history = method.fit(pruned, x, y, epochs=3, batch_size=32, verbose=0)
  assert "accuracy" in history and len(history["loss"]) == 3
  rows = tfprune.sparsity_report(pruned, print_table=False)
  for row in rows:
    assert row["nonzeros"] == int(np.ceil(0.25 * row["size"] - 1e-9))
  for w, m in zip(method.weights, method.masks):
    assert np.all(w.numpy()[m.numpy() == 0] == 0)
  assert int(method.step.numpy()) == 3 * 8


def test_custom_training_loop_with_the_same_method_object():
  x, y = _data()
  pruned = tfprune.prune(_mlp(), "magnitude", target_sparsity=0.75, schedule=_schedule())
  method = tfprune.get_method(pruned)
  optimizer = keras.optimizers.Adam(1e-2)
  loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

  @tf.function
  def train_step(xb, yb):
    with tf.GradientTape() as tape:
      loss = loss_fn(yb, pruned(xb, training=True))
    grads = tape.gradient(loss, pruned.trainable_variables)
    optimizer.apply_gradients(zip(grads, pruned.trainable_variables))
    return loss

  method.on_train_begin()
  zeros_seen = []
  for epoch in range(2):
    for i in range(0, len(x), 32):
      method.on_train_step()
      train_step(x[i:i + 32], y[i:i + 32])
      zeros_seen.append(_kernel_zeros(pruned))
      # Effective weights are exactly zero wherever the mask is zero, after every step.
      for w, m in zip(method.weights, method.masks):
        assert np.all((w.numpy() * m.numpy())[m.numpy() == 0] == 0)
  method.on_train_end()
  assert zeros_seen == sorted(zeros_seen)  # sparsity only grows
  for row in tfprune.sparsity_report(pruned, print_table=False):
    assert row["sparsity"] == pytest.approx(0.75, abs=0.01)
    assert np.all(method.weights[0].numpy()[method.masks[0].numpy() == 0] == 0)


def test_save_load_round_trip_keeps_masks_and_schedule_state(tmp_path):
  x, y = _data()
  pruned = tfprune.prune(_mlp(), "magnitude", target_sparsity=0.75, schedule=_schedule(),
                         scope="global")
  tfprune.get_method(pruned).fit(pruned, x, y, epochs=1, batch_size=32, verbose=0)
  path = str(tmp_path / "pruned.keras")
  pruned.save(path)
  loaded = keras.models.load_model(path)
  np.testing.assert_allclose(loaded.predict(x, verbose=0), pruned.predict(x, verbose=0),
                             rtol=1e-6, atol=1e-6)
  method = tfprune.get_method(loaded)
  assert method.scope == "global" and int(method.step.numpy()) == 8
  assert method.schedule.get_config() == _schedule().get_config()
  for a, b in zip(_effective(loaded), _effective(pruned)):
    np.testing.assert_array_equal(a, b)
  # Training resumes from the saved step and strip works after loading.
  method.fit(loaded, x, y, epochs=1, batch_size=32, verbose=0)
  assert int(method.step.numpy()) == 16
  stripped = tfprune.strip(loaded)
  assert not tfprune.methods.base.find_wrappers(stripped)
  np.testing.assert_allclose(stripped.predict(x, verbose=0), loaded.predict(x, verbose=0),
                             rtol=1e-5, atol=1e-5)


def test_strip_returns_plain_model_with_exact_zeros(tmp_path):
  pruned = tfprune.prune(_mlp(), "magnitude", target_sparsity=0.6)
  tfprune.get_method(pruned).update_masks(0.6)
  stripped = tfprune.strip(pruned)
  assert all(not isinstance(l, tfprune.PruneWrapper) for l in stripped.layers)
  for layer in stripped.layers[1:]:
    kernel = layer.kernel.numpy()
    assert np.mean(kernel == 0) == pytest.approx(0.6, abs=0.02)
  path = str(tmp_path / "stripped.keras")
  stripped.save(path)
  reloaded = keras.models.load_model(path)
  assert [l.name for l in reloaded.layers[1:]] == ["fc1", "fc2", "out"]


def test_sequential_branches_skips_shared_and_nested_models():
  x = np.random.default_rng(0).normal(size=(4, 10)).astype("float32")
  seq = keras.Sequential([keras.Input((10,)), L.Dense(8, activation="relu"), L.Dense(2)])
  inp = keras.Input((10,))
  shared = L.Dense(10, name="shared")
  a = shared(inp)
  b = shared(L.Dense(10, name="branch")(inp))  # shared layer used twice
  h = L.Add()([a, b, inp])  # skip connection
  inner = keras.Sequential([keras.Input((10,)), L.Dense(6, name="inner_fc")], name="inner")
  out = L.Dense(2, name="head")(L.Concatenate()([inner(h), h]))
  functional = keras.Model(inp, out)
  for model in (seq, functional):
    pruned = tfprune.prune(model, "magnitude", target_sparsity=0.5)
    np.testing.assert_allclose(pruned(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)
    method = tfprune.get_method(pruned)
    method.update_masks(0.5)
    stripped = tfprune.strip(pruned)
    np.testing.assert_allclose(stripped(x).numpy(), pruned(x).numpy(), rtol=1e-5, atol=1e-5)
  names = [w.layer.name for w in tfprune.get_method(pruned).wrappers]
  assert names.count("shared") == 1 and "inner_fc" in names


def test_prune_selected_layers_only():
  pruned = tfprune.prune(_mlp(), "magnitude", layers=["fc2"], target_sparsity=0.5)
  assert [w.layer.name for w in tfprune.get_method(pruned).wrappers] == ["fc2"]


def test_convnet_block_and_structured_scopes():
  inp = keras.Input((8, 8, 4))
  h = L.Conv2D(8, 3, activation="relu")(inp)
  h = L.Flatten()(L.MaxPooling2D()(h))
  model = keras.Model(inp, L.Dense(32)(h))
  for scope, kwargs in [("block", dict(block_size=4)), ("structured", {}),
                        ("n:m", dict(n=2, m=4))]:
    pruned = tfprune.prune(model, "magnitude", target_sparsity=0.5, scope=scope, **kwargs)
    tfprune.get_method(pruned).update_masks(0.5)
    for row in tfprune.sparsity_report(pruned, print_table=False):
      assert row["sparsity"] == pytest.approx(0.5, abs=0.05), (scope, row)


def test_layer_sparsity_overrides_per_layer_and_round_trips(tmp_path):
  x, y = _data()
  pruned = tfprune.prune(_mlp(), "magnitude", target_sparsity=0.75, schedule=_schedule(),
                         layer_sparsity={"fc1": 0.5, "out": 0.25})
  tfprune.get_method(pruned).fit(pruned, x, y, epochs=2, batch_size=32, verbose=0)
  got = {r["layer"]: r for r in tfprune.sparsity_report(pruned, print_table=False)}
  for name, s in {"fc1": 0.5, "fc2": 0.75, "out": 0.25}.items():
    assert got[name]["nonzeros"] == int(np.ceil((1 - s) * got[name]["size"] - 1e-9)), name
  path = str(tmp_path / "m.keras")
  pruned.save(path)
  assert tfprune.get_method(keras.models.load_model(path)).layer_sparsity == {
      "fc1": 0.5, "out": 0.25}


def test_layer_sparsity_errors():
  with pytest.raises(ValueError, match="not pruned in model"):
    tfprune.prune(_mlp(), "magnitude", layer_sparsity={"nope": 0.5})
  with pytest.raises(ValueError, match="per-layer allocation"):
    tfprune.prune(_mlp(), "magnitude", scope="global", layer_sparsity={"fc1": 0.5})
  with pytest.raises(ValueError, match=r"layer_sparsity\['fc1'\] must be in"):
    tfprune.prune(_mlp(), "magnitude", layer_sparsity={"fc1": 1.0})


def test_sparsity_report_rows_and_pq_index(capsys):
  pruned = tfprune.prune(_mlp(), "magnitude", target_sparsity=0.5)
  rows = tfprune.sparsity_report(pruned)
  assert [r["layer"] for r in rows] == ["fc1", "fc2", "out"]
  assert set(rows[0]) == {"layer", "weight", "shape", "size", "nonzeros", "sparsity",
                          "pq_index", "dead"}
  assert all(0 <= r["pq_index"] < 1 for r in rows)
  assert "total" in capsys.readouterr().out


class _Subclassed(keras.Model):

  def __init__(self):
    super().__init__()
    self.fc = L.Dense(2)

  def call(self, x):
    return self.fc(x)


def test_clear_errors():
  model = _mlp()
  with pytest.raises(ValueError, match="Unknown pruning method 'l1'; valid methods are"):
    tfprune.prune(model, "l1")
  with pytest.raises(ValueError, match=r"target_sparsity must be in \[0, 1\)"):
    tfprune.prune(model, "magnitude", target_sparsity=1.0)
  sub = _Subclassed()
  sub(np.ones((1, 3), "float32"))
  with pytest.raises(ValueError, match="subclassed model.*PruneWrapper"):
    tfprune.prune(sub, "magnitude")
  with pytest.raises(ValueError, match="No layer named 'nope'"):
    tfprune.prune(model, "magnitude", layers=["nope"])
  bn = keras.Sequential([keras.Input((4,)), L.BatchNormalization(name="bn"), L.Dense(2)])
  with pytest.raises(ValueError, match="'bn' \\(BatchNormalization\\) cannot be pruned"):
    tfprune.prune(bn, "magnitude", layers=["bn"])
  pruned = tfprune.prune(model, "magnitude")
  with pytest.raises(ValueError, match="already pruned"):
    tfprune.prune(pruned, "magnitude")
  with pytest.raises(ValueError, match="has no PruneWrapper"):
    tfprune.get_method(model)


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
