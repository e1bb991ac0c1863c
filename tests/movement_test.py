"""Tests for tfprune.methods.movement (Sanh et al. 2020) through every entry point."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tfprune import optimizers

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _regression_layer(w0):
  """Linear model y = x @ W (no bias) starting from `w0`, plus its exact data."""
  inp = keras.Input((w0.shape[0],))
  model = keras.Model(inp, keras.layers.Dense(w0.shape[1], use_bias=False, name="fc")(inp))
  model.get_layer("fc").kernel.assign(w0)
  return model


def test_scores_accumulate_minus_w_times_grad(mlp, toy_data):
  pruned = tfprune.prune(mlp(), "movement", target_sparsity=0.5, pruning_steps=10)
  method = tfprune.get_method(pruned)
  opt = method.prepare_optimizer(keras.optimizers.SGD(0.1))
  assert isinstance(opt, optimizers.GradientHook) and opt.method is method
  method.on_train_begin(optimizer=opt)
  expected = [np.zeros(w.shape, "float32") for w in method.weights]
  for step in range(3):
    x, y = toy_data(16, seed=step)
    method.on_train_step()
    with tf.GradientTape() as tape:
      loss = LOSS(y, pruned(x, training=True))
    grads = tape.gradient(loss, pruned.trainable_variables)
    by_id = {id(v): g.numpy() for g, v in zip(grads, pruned.trainable_variables)}
    for i, w in enumerate(method.weights):
      expected[i] -= by_id[id(w)] * w.numpy()
    opt.apply_gradients(zip(grads, pruned.trainable_variables))
  for s, e in zip(method.movement_scores, expected):
    np.testing.assert_allclose(s.numpy(), e, rtol=1e-5, atol=1e-7)
  assert int(method.step) == 3


def test_movement_keeps_weights_moving_away_from_zero_not_large_ones():
  """Large weights that the loss pulls to 0 are pruned; small growing ones are kept."""
  rng = np.random.default_rng(0)
  target = np.zeros((6, 1), "float32")
  target[:3] = 1.0  # the useful inputs
  w0 = np.full((6, 1), 0.1, "float32")
  w0[3:] = 0.8  # big but useless: the gradient shrinks them
  x = rng.normal(size=(256, 6)).astype("float32")
  y = x @ target
  results = {}
  for name in ("movement", "magnitude"):
    schedule = tfprune.ConstantSparsity(0.5, begin_step=4, end_step=4, frequency=1)
    pruned = tfprune.prune(_regression_layer(w0), name, target_sparsity=0.5,
                           schedule=schedule)
    method = tfprune.get_method(pruned)
    pruned.compile(method.prepare_optimizer(keras.optimizers.SGD(0.02)), "mse")
    pruned.fit(x, y, epochs=1, batch_size=32, verbose=0, shuffle=False,
               callbacks=[tfprune.PruningCallback()])
    results[name] = method.masks[0].numpy()[:, 0]
  np.testing.assert_array_equal(results["movement"], [1, 1, 1, 0, 0, 0])
  np.testing.assert_array_equal(results["magnitude"], [0, 0, 0, 1, 1, 1])


@pytest.mark.parametrize("scope", ["layer", "global", "block"])
def test_fit_with_callback_reaches_target_in_scope(mlp, toy_data, scope):
  pruned = tfprune.prune(mlp(hidden=(16, 8)), "movement", target_sparsity=0.75,
                         scope=scope, pruning_steps=6, frequency=2)
  method = tfprune.get_method(pruned)
  pruned.compile(method.prepare_optimizer(keras.optimizers.Adam(1e-2)), LOSS)
  x, y = toy_data(128)
  pruned.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[tfprune.PruningCallback()])
  assert int(method.step) == 16
  masks = [m.numpy() for m in method.masks]
  total = sum(m.size for m in masks)
  assert 1 - sum(m.sum() for m in masks) / total == pytest.approx(0.75, abs=0.02)
  if scope == "layer":  # compute_masks = the exact top-k of the (shifted) scores
    for s, new in zip(method.scores(), method.compute_masks(0.75)):
      s, new = s.numpy().ravel(), new.numpy().ravel()
      assert int(new.sum()) == int(np.ceil(0.25 * s.size))
      assert s[new > 0].min() >= s[new == 0].max()
      assert s.min() >= 0
    for s, m in zip(method.scores(), masks):  # pruned weights stay pruned
      assert not np.any(s.numpy()[m == 0])
  for w, m in zip(method.weights, masks):
    assert not np.any(w.numpy()[m == 0])


def test_recipe_lays_out_the_cubic_schedule(mlp, toy_data):
  pruned = tfprune.prune(mlp(), "movement", target_sparsity=0.8)
  method = tfprune.get_method(pruned)
  assert method.schedule is None
  x, y = toy_data(96)
  history = method.fit(pruned, x, y, epochs=3, batch_size=16, verbose=0)
  assert len(history["loss"]) == 3
  assert isinstance(method.schedule, tfprune.PolynomialDecay)
  assert method.schedule.end_step == 12 and method.schedule.power == 3  # 2/3 of 18 steps
  assert method.diagnostics()["sparsity"] == pytest.approx(0.8, abs=0.01)
  stripped = tfprune.strip(pruned)
  np.testing.assert_allclose(stripped.predict(x, verbose=0), pruned.predict(x, verbose=0),
                             atol=1e-5)


def test_refusals_name_the_call_that_works(mlp, toy_data):
  x, y = toy_data(32)
  pruned = tfprune.prune(mlp(), "movement", target_sparsity=0.5)
  pruned.compile(keras.optimizers.Adam(), LOSS)
  with pytest.raises(ValueError, match="pruning_steps=N"):  # no schedule outside fit
    pruned.fit(x, y, verbose=0, callbacks=[tfprune.PruningCallback()])
  pruned = tfprune.prune(mlp(), "movement", target_sparsity=0.5, pruning_steps=4)
  pruned.compile(keras.optimizers.Adam(), LOSS)  # a plain optimizer sees no gradients
  with pytest.raises(ValueError, match=r"GradientHook.*method.prepare_optimizer"):
    pruned.fit(x, y, verbose=0, callbacks=[tfprune.PruningCallback()])
  with pytest.raises(ValueError, match="without it"):  # no callback at all
    pruned.fit(x, y, verbose=0)


def test_custom_loop_with_manual_gradient_hook(mlp, toy_data):
  pruned = tfprune.prune(mlp(), "movement", target_sparsity=0.5, pruning_steps=2,
                         frequency=1)
  method = tfprune.get_method(pruned)
  opt = keras.optimizers.SGD(0.1)  # plain: the loop calls the hook itself
  method.on_train_begin()  # (on_train_begin(optimizer=opt) would ask for the hook)
  for step in range(4):
    x, y = toy_data(16, seed=step)
    method.on_train_step()
    with tf.GradientTape() as tape:
      loss = LOSS(y, pruned(x, training=True))
    grads = tape.gradient(loss, pruned.trainable_variables)
    method.observe_gradients(grads, pruned.trainable_variables)
    opt.apply_gradients(zip(grads, pruned.trainable_variables))
  method.on_train_end()
  assert method.diagnostics()["sparsity"] == pytest.approx(0.5, abs=0.01)
  # Forgetting the hook is caught at the second step, not after a useless run.
  pruned = tfprune.prune(mlp(), "movement", target_sparsity=0.5, pruning_steps=2)
  method = tfprune.get_method(pruned)
  method.on_train_begin()
  method.on_train_step()
  with pytest.raises(ValueError, match="saw none in the first training step"):
    method.on_train_step()


def test_save_load_resumes_with_scores_and_hook(mlp, toy_data, tmp_path):
  x, y = toy_data(64)
  pruned = tfprune.prune(mlp(), "movement", target_sparsity=0.6, pruning_steps=8,
                         frequency=2)
  method = tfprune.get_method(pruned)
  pruned.compile(method.prepare_optimizer(keras.optimizers.Adam(1e-2)), LOSS)
  pruned.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[tfprune.PruningCallback()])
  path = str(tmp_path / "movement.keras")
  pruned.save(path)
  loaded = keras.models.load_model(path)
  again = tfprune.get_method(loaded)
  assert again.name == "movement" and again.pruning_steps == 8
  for a, b in zip(method.movement_scores, again.movement_scores):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  assert isinstance(loaded.optimizer, optimizers.GradientHook)
  loaded.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[tfprune.PruningCallback()])
  assert loaded.optimizer.method is again and int(again.step) == 12  # passed step 8
  assert again.diagnostics()["sparsity"] == pytest.approx(0.6, abs=0.01)


def test_training_binary_runs_movement(tmp_path):
  out = tmp_path / "run"
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.run(
      [sys.executable, "-m", "tfprune.bin.train", "--dataset=digits",
       "--model=lenet_300_100", "--method=movement", "--target_sparsity=0.7",
       "--dense_epochs=2", "--prune_epochs=2", "--batch_size=64", "--frequency=5",
       "--train_samples=640", f"--output_dir={out}"],
      capture_output=True, text=True, env=env, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads((out / "report.json").read_text())
  assert report["flags"]["method"] == "movement"
  assert report["sparsity"] == pytest.approx(0.7, abs=0.01)


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
