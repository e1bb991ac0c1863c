"""Tests for tfprune.shrink (`tfprune.shrink_model`) and tfprune.strip(model, shrink=True)."""
import sys

import keras
import numpy as np
import pytest

import tfprune
from tfprune import zoo
from tfprune.shrink import count_params_and_macs

L = keras.layers


def _close_some(pruned, seed=0, frac=0.5):
  """Random gates, about `frac` of the units closed at test time."""
  rng = np.random.default_rng(seed)
  for w in tfprune.get_method(pruned).wrappers:
    la = rng.uniform(0.5, 4.0, w.gate.units)
    closed = rng.permutation(w.gate.units)[:int(frac * w.gate.units)]
    la[closed] = -6.0
    w.gate.set_log_alpha(la)


def _mlp():
  keras.utils.set_random_seed(0)
  inputs = keras.Input((10,))
  x = L.Dense(32, activation="relu", name="fc1")(inputs)
  x = L.Dropout(0.1)(x)
  x = L.Dense(16, activation="tanh", name="fc2")(x)
  return keras.Model(inputs, L.Dense(4, name="out")(x))


def _convnet():
  keras.utils.set_random_seed(1)
  inputs = keras.Input((16, 16, 2))
  x = L.Conv2D(8, 3, name="conv1")(inputs)
  x = L.MaxPooling2D(2)(x)
  x = L.Conv2D(12, 3, padding="same", activation="relu", name="conv2")(x)
  x = L.BatchNormalization(center=False, name="bn")(x)
  x = L.AveragePooling2D(2)(x)
  x = L.Flatten()(x)
  x = L.Dense(20, activation="relu", name="fc1")(x)
  return keras.Model(inputs, L.Dense(3, name="out")(x))


@pytest.mark.parametrize("make", [_mlp, _convnet])
def test_shrunk_model_matches_gated_model(make):
  model = make()
  pruned = tfprune.prune(model, "l0_gates")
  _close_some(pruned)
  method = tfprune.get_method(pruned)
  open_units = {w.layer.name: int(w.open_units().sum()) for w in method.wrappers}
  shrunk = tfprune.strip(pruned, shrink=True)
  x = np.random.default_rng(2).normal(size=(16,) + tuple(model.input_shape[1:]))
  x = x.astype("float32")
  np.testing.assert_allclose(shrunk.predict(x, verbose=0), pruned.predict(x, verbose=0),
                             rtol=1e-4, atol=1e-5)
  for name, units in open_units.items():
    layer = shrunk.get_layer(name)
    assert layer.kernel.shape[-1] == units
  assert shrunk.count_params() < model.count_params()
  assert shrunk.output_shape == model.output_shape
  assert not any(isinstance(l, tfprune.PruneWrapper) for l in shrunk.layers)


def test_shrink_keeps_sequential_without_dead_units_equal():
  keras.utils.set_random_seed(0)
  model = keras.Sequential([keras.Input((5,)), L.Dense(6, activation="relu"), L.Dense(2)])
  shrunk = tfprune.shrink_model(model)
  x = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
  np.testing.assert_allclose(shrunk.predict(x, verbose=0), model.predict(x, verbose=0),
                             atol=1e-6)
  assert shrunk.count_params() == model.count_params()


def test_constant_units_through_nonzero_activation_are_folded_exactly():
  model = keras.Sequential([keras.Input((5,)), L.Dense(6, activation="sigmoid", name="d"),
                            L.Dense(2)])
  model.get_layer("d").kernel.assign(np.zeros((5, 6), "float32"))
  # sigmoid(0) = 0.5 is no zero: the constant units are folded into the next bias (one
  # stays so the layer keeps a unit, and that is reported).
  with pytest.warns(UserWarning, match="'d' stay: every unit is constant"):
    shrunk = tfprune.shrink_model(model)
  assert shrunk.get_layer("d").units == 1
  x = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
  np.testing.assert_allclose(shrunk(x), model(x), atol=1e-6)


def test_refuses_residual_add_with_disagreeing_sides():
  keras.utils.set_random_seed(0)
  inputs = keras.Input((8,))
  a = L.Dense(6, activation="relu", name="left")(inputs)
  b = L.Dense(6, activation="relu", name="right")(inputs)
  x = L.Add(name="residual_add")([a, b])
  model = keras.Model(inputs, L.Dense(2, name="out")(x))
  pruned = tfprune.prune(model, "l0_gates", layers=["left", "right"])
  method = tfprune.get_method(pruned)
  method.wrappers[0].gate.set_log_alpha([-6, -6, 3, 3, 3, 3])
  method.wrappers[1].gate.set_log_alpha([3, 3, 3, 3, -6, -6])
  with pytest.raises(ValueError, match="'residual_add'.*different dead channels"):
    tfprune.strip(pruned, shrink=True)
  # Both sides closed alike: shrinks through the Add.
  method.wrappers[1].gate.set_log_alpha([-6, -6, 3, 3, 3, 3])
  shrunk = tfprune.strip(pruned, shrink=True)
  assert shrunk.get_layer("left").units == 4 and shrunk.get_layer("right").units == 4
  x = np.random.default_rng(0).normal(size=(5, 8)).astype("float32")
  np.testing.assert_allclose(shrunk.predict(x, verbose=0), pruned.predict(x, verbose=0),
                             atol=1e-5)


def test_refuses_reshape_and_subclassed():
  keras.utils.set_random_seed(0)
  inputs = keras.Input((8,))
  x = L.Dense(6, activation="relu", name="fc")(inputs)
  x = L.Reshape((2, 3), name="reshape")(x)
  model = keras.Model(inputs, L.Dense(2)(L.Flatten()(x)))
  model.get_layer("fc").kernel.assign(np.zeros((8, 6), "float32"))
  shrunk = tfprune.shrink_model(model)  # dead units behind a Reshape are kept, not deleted
  assert shrunk.get_layer("fc").units == 6

  class Sub(keras.Model):
    def call(self, x):
      return x

  with pytest.raises(ValueError, match="Sequential or Functional"):
    tfprune.shrink_model(Sub())


def test_count_params_and_macs():
  keras.utils.set_random_seed(0)
  model = zoo.lenet5()
  params, macs = count_params_and_macs(model)
  assert params == model.count_params()
  assert macs == 24 * 24 * 25 * 20 + 8 * 8 * 500 * 50 + 800 * 500 + 5000


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
