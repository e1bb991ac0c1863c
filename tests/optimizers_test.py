"""Tests for tfprune.optimizers: the wrapper base and the ADMM W-step optimizer."""
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tfprune import optimizers


def _pruned(penalty="optimizer", seed=0, **kwargs):
  keras.utils.set_random_seed(seed)
  model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, name="fc"),
                            keras.layers.Dense(3, name="out")])
  kwargs.setdefault("rho0", 0.5)
  return tfprune.prune(model, "admm", target_sparsity=0.7, penalty=penalty, **kwargs)


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(8, 6)).astype("float32"), rng.integers(0, 3, size=8)


LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _perturb_u(method):
  for u in method.u:
    u.assign(tf.random.stateless_normal(u.shape, seed=[1, 2]) * 0.1)


def test_custom_loop_sgd_step_is_exact():
  pruned = _pruned()
  method = tfprune.get_method(pruned)
  opt = optimizers.ADMM(keras.optimizers.SGD(0.1))
  method.on_train_begin(optimizer=opt)  # attaches the optimizer to the method
  assert opt.method is method
  method.on_train_step()  # step 0: Z = Proj(W), U = 0
  _perturb_u(method)
  x, y = _batch()
  variables = pruned.trainable_variables
  before = {id(v): v.numpy().copy() for v in variables}
  with tf.GradientTape() as tape:
    loss = LOSS(y, pruned(x, training=True))
  assert not pruned.losses  # penalty="optimizer": nothing added to the loss
  grads = tape.gradient(loss, variables)
  opt.apply_gradients(zip(grads, variables))
  z = {id(w): zz.numpy() for w, zz in zip(method.weights, method.z)}
  u = {id(w): uu.numpy() for w, uu in zip(method.weights, method.u)}
  for v, g in zip(variables, grads):
    w0 = before[id(v)]
    extra = 0.5 * (w0 - z[id(v)] + u[id(v)]) if id(v) in z else 0.0  # rho0 = 0.5
    np.testing.assert_allclose(v.numpy(), w0 - 0.1 * (g.numpy() + extra), rtol=1e-5,
                               atol=1e-6, err_msg=v.path)
  assert int(opt.iterations) == 1


@pytest.mark.parametrize("make_opt", [lambda: keras.optimizers.SGD(0.05, momentum=0.9),
                                      lambda: keras.optimizers.Adam(1e-2)],
                         ids=["sgd", "adam"])
def test_custom_loop_matches_loss_penalty(make_opt):
  results = []
  for penalty in ("loss", "optimizer"):
    pruned = _pruned(penalty=penalty, admm_interval=2, admm_steps=6)
    method = tfprune.get_method(pruned)
    opt = make_opt()
    opt = method.prepare_optimizer(opt)  # ADMM wrapper for penalty="optimizer" only
    assert isinstance(opt, optimizers.ADMM) == (penalty == "optimizer")
    method.on_train_begin(optimizer=opt)

    @tf.function
    def train_step(x, y, pruned=pruned, opt=opt):
      with tf.GradientTape() as tape:
        loss = LOSS(y, pruned(x, training=True))
        if pruned.losses:
          loss += tf.add_n(pruned.losses)
      grads = tape.gradient(loss, pruned.trainable_variables)
      opt.apply_gradients(zip(grads, pruned.trainable_variables))

    for i in range(8):  # crosses Z-steps and the hard prune at step 6
      method.on_train_step()
      train_step(*_batch(i))
    method.on_train_end()
    results.append([w.numpy() for w in pruned.weights])
  for a, b in zip(*results):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_wrapped_optimizer_delegates():
  inner = keras.optimizers.Adam(3e-3)
  opt = optimizers.ADMM(inner)
  assert float(opt.learning_rate) == pytest.approx(3e-3)
  opt.learning_rate = 1e-4
  assert float(inner.learning_rate) == pytest.approx(1e-4)
  pruned = _pruned()
  opt.build(pruned.trainable_variables)
  # The inner optimizer's slots are part of the wrapper's state (checkpoints).
  assert len(opt.variables) >= len(inner.variables) > 0
  assert all(any(v is w for w in opt.variables) for v in inner.variables)


def test_get_config_round_trip():
  opt = optimizers.ADMM(keras.optimizers.Adam(2e-3, beta_1=0.8), name="admm_opt")
  config = keras.saving.serialize_keras_object(opt)
  assert config["registered_name"] == "tfprune>ADMMOptimizer"
  clone = keras.saving.deserialize_keras_object(config)
  assert isinstance(clone, optimizers.ADMM)
  assert isinstance(clone.inner_optimizer, keras.optimizers.Adam)
  assert clone.inner_optimizer.beta_1 == pytest.approx(0.8)
  assert float(clone.learning_rate) == pytest.approx(2e-3)
  assert clone.name == "admm_opt"


def test_saved_with_compiled_model_and_resumes(tmp_path):
  x, y = _batch()
  pruned = _pruned(admm_interval=2, admm_steps=50)
  pruned.compile(optimizers.ADMM(keras.optimizers.Adam(1e-2)), LOSS)
  pruned.fit(x, y, epochs=3, batch_size=4, verbose=0,
             callbacks=[tfprune.PruningCallback()])
  path = str(tmp_path / "m.keras")
  pruned.save(path)
  loaded = keras.models.load_model(path)
  assert isinstance(loaded.optimizer, optimizers.ADMM)
  assert int(loaded.optimizer.iterations) == 6
  for a, b in zip(pruned.optimizer.variables, loaded.optimizer.variables):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for cont in (pruned, loaded):
    cont.fit(x, y, epochs=1, batch_size=4, verbose=0, shuffle=False,
             callbacks=[tfprune.PruningCallback()])
  for a, b in zip(pruned.weights, loaded.weights):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)


def test_errors():
  with pytest.raises(ValueError, match="wraps a keras.optimizers.Optimizer instance"):
    optimizers.ADMM(object())
  with pytest.raises(ValueError, match=r"does not take \['clipnorm'\]"):
    optimizers.ADMM(keras.optimizers.SGD(), clipnorm=1.0)
  pruned = _pruned(penalty="loss")
  method = tfprune.get_method(pruned)
  opt = optimizers.ADMM(keras.optimizers.SGD(0.1))
  with pytest.raises(ValueError, match="penalty='loss'"):
    method.on_train_begin(optimizer=opt)
  grads = [tf.zeros_like(v) for v in pruned.trainable_variables]
  with pytest.raises(ValueError, match="not attached to a pruning method"):
    opt.apply_gradients(zip(grads, pruned.trainable_variables))
  # A compiled plain optimizer under penalty="optimizer" would silently drop the
  # penalty: refused before training, naming the call that works.
  pruned = _pruned(penalty="optimizer")
  pruned.compile(keras.optimizers.SGD(0.1), LOSS)
  with pytest.raises(ValueError, match=r"needs the optimizer wrapper ADMMOptimizer.*"
                                       r"method.prepare_optimizer"):
    pruned.fit(*_batch(), epochs=1, verbose=0, callbacks=[tfprune.PruningCallback()])


def test_plain_variables_pass_through():
  v = keras.Variable(np.ones(3, "float32"))
  opt = optimizers.ADMM(keras.optimizers.SGD(1.0), method=tfprune.get_method(_pruned()))
  opt.apply_gradients([(tf.constant([1.0, 2.0, 3.0]), v)])
  np.testing.assert_allclose(v.numpy(), [0.0, -1.0, -2.0])


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
