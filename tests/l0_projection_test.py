"""Tests for tfprune.optimizers.L0Projection and the l0_projection method."""
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tfprune import optimizers


from conftest import _mlp  # the shared fixtures (12 -> fc1 16 -> out 3)
from conftest import _toy_data as _data


def _nonzeros(method):
  return [int(np.count_nonzero(w.numpy())) for w in method.weights]


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_fit_keeps_exactly_k(scope):
  pruned = tfprune.prune(_mlp(), "l0_projection", target_sparsity=0.75, scope=scope)
  method = tfprune.get_method(pruned)
  x, y = _data(32)
  method.fit(pruned, x, y, epochs=1, batch_size=16, verbose=0)
  sizes = [int(np.prod(w.shape)) for w in method.weights]
  nz = _nonzeros(method)
  if scope == "layer":
    assert nz == [int(np.ceil(0.25 * s)) for s in sizes]
  else:
    assert sum(nz) == int(np.ceil(0.25 * sum(sizes)))
  masks = [int(m.numpy().sum()) for m in method.masks]
  assert masks == nz  # final masks = support
  stripped = tfprune.strip(pruned)
  np.testing.assert_allclose(stripped.predict(x, verbose=0), pruned.predict(x, verbose=0),
                             atol=1e-5)


def test_custom_loop_follows_schedule_every_step():
  pruned = tfprune.prune(_mlp(), "l0_projection",
                         schedule=tfprune.PolynomialDecay(0.0, 0.8, 0, 6, frequency=1))
  method = tfprune.get_method(pruned)
  opt = method.make_optimizer(keras.optimizers.SGD(0.1))
  method.on_train_begin(optimizer=opt)
  x, y = _data(16)
  loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  kernel = method.weights[0]
  for step in range(8):
    with tf.GradientTape() as tape:
      loss = loss_fn(y, pruned(x, training=True))
    grads = tape.gradient(loss, pruned.trainable_variables)
    opt.apply_gradients(zip(grads, pruned.trainable_variables))
    sparsity = float(tfprune.PolynomialDecay(0.0, 0.8, 0, 6).sparsity(step))
    expect = int(np.ceil((1 - sparsity) * 12 * 16 - 1e-9))
    assert int(np.count_nonzero(kernel.numpy())) == expect, step
  assert int(method.step) == 8


def test_plain_model_and_nm_scope():
  model = _mlp()
  opt = optimizers.L0Projection(keras.optimizers.SGD(0.1), 0.5, scope="n:m").bind(model)
  model.compile(optimizer=opt, loss=keras.losses.SparseCategoricalCrossentropy(True))
  x, y = _data(32)
  model.fit(x, y, epochs=1, batch_size=16, verbose=0)
  kernel = model.get_layer("fc1").kernel.numpy()  # [12, 16], groups of 4 along axis 0
  groups = kernel.reshape(3, 4, 16)
  assert (np.count_nonzero(groups, axis=1) <= 2).all()


def test_regrow_false_keeps_masks_in_step():
  pruned = tfprune.prune(_mlp(), "l0_projection", target_sparsity=0.5, regrow=False)
  method = tfprune.get_method(pruned)
  x, y = _data(32)
  method.fit(pruned, x, y, epochs=1, batch_size=16, verbose=0)
  for w, m in zip(method.weights, method.masks):
    assert np.array_equal(w.numpy() != 0, m.numpy() != 0)


def test_errors_and_serialization(tmp_path):
  with pytest.raises(ValueError, match="valid scopes"):
    optimizers.L0Projection(keras.optimizers.Adam(), 0.5, scope="rows")
  with pytest.raises(ValueError, match="does not know which weights"):
    opt = optimizers.L0Projection(keras.optimizers.Adam(), 0.5)
    var = keras.Variable(np.ones((2, 2), "float32"))
    opt.apply_gradients([(tf.ones((2, 2)), var)])
  opt = optimizers.L0Projection(keras.optimizers.Adam(2e-3),
                                tfprune.PolynomialDecay(0.1, 0.9, 3, 30), scope="global")
  clone = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
  assert isinstance(clone, optimizers.L0Projection)
  assert clone.scope == "global" and clone.schedule.final_sparsity == 0.9
  assert float(clone.inner_optimizer.learning_rate) == pytest.approx(2e-3)
  # A compiled pruned model saves and loads with its optimizer; training resumes.
  pruned = tfprune.prune(_mlp(), "l0_projection", target_sparsity=0.5)
  method = tfprune.get_method(pruned)
  x, y = _data(32)
  method.fit(pruned, x, y, epochs=1, batch_size=16, verbose=0)
  path = str(tmp_path / "p.keras")
  pruned.save(path)
  loaded = keras.models.load_model(path)
  assert isinstance(loaded.optimizer, optimizers.L0Projection)
  tfprune.get_method(loaded)
  with pytest.raises(ValueError, match="PruningCallback"):  # no silent no-op training
    loaded.fit(x, y, epochs=1, batch_size=16, verbose=0)
  loaded.fit(x, y, epochs=1, batch_size=16, verbose=0,
             callbacks=[tfprune.PruningCallback()])  # re-attaches the reloaded optimizer
  assert loaded.optimizer.method is tfprune.get_method(loaded)
  kernel = loaded.get_layer("prune_fc1").prunable_weights[0].numpy()
  assert np.count_nonzero(kernel) == 96


def test_wrong_optimizer_is_refused():
  pruned = tfprune.prune(_mlp(), "l0_projection", target_sparsity=0.5)
  pruned.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
  x, y = _data(16)
  with pytest.raises(ValueError, match="L0Projection"):
    pruned.fit(x, y, epochs=1, verbose=0, callbacks=[tfprune.PruningCallback()])


def test_mixed_float16_fit_works():
  """Issue 17 item 10: under mixed_float16 compile wraps the optimizer in a
  LossScaleOptimizer; method.fit used to refuse its own optimizer ("use method.fit")."""
  keras.mixed_precision.set_global_policy("mixed_float16")
  try:
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(3, dtype="float32")])
    pruned = tfprune.prune(model, "l0_projection", target_sparsity=0.5)
    x, y = _data(32)
    tfprune.get_method(pruned).fit(pruned, x, y, epochs=1, batch_size=16, verbose=0)
  finally:
    keras.mixed_precision.set_global_policy("float32")
  kernel = pruned.layers[0].prunable_weights[0].numpy()
  assert np.count_nonzero(kernel) == kernel.size // 2


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
