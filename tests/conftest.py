"""Shared pytest setup: quiet TensorFlow, two logical CPU devices, deterministic seeds.

The CPU is split into two logical devices before TensorFlow initialises them, so the
tf.distribute tests (MirroredStrategy over /cpu:0 and /cpu:1) run in this process; every
other test places its ops on /cpu:0 as usual.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # pylint: disable=g-import-not-at-top

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(autouse=True)
def _seed():
  keras.utils.set_random_seed(0)
  yield


def _sparse_mlp(pattern, out=16, density=None, seed=0):
  """64-64-`out` MLP whose Dense kernels hold exact zeros in `pattern`.

  `pattern`: "random", "2:4", or an int B for 1xB blocks along the Keras kernel's input
  axis (axis 0). `density` is the kept fraction (default 0.1 random, 0.15 blocks).
  """
  rng = np.random.default_rng(seed)
  inp = keras.Input((64,))
  x = keras.layers.Dense(64, activation="relu")(inp)
  model = keras.Model(inp, keras.layers.Dense(out)(x))
  for layer in model.layers[1:]:
    k = layer.kernel.numpy()
    n_in, n_out = k.shape
    if pattern == "random":
      mask = rng.random(k.shape) > 1 - (0.1 if density is None else density)
    elif pattern == "2:4":
      mask = np.zeros(k.shape, bool)
      mask[0::4] = mask[1::4] = True
    else:
      keep = rng.random((n_in // pattern, n_out)) > 1 - (0.15 if density is None else density)
      mask = np.repeat(keep, pattern, axis=0)
    layer.kernel.assign(k * mask)
  return model


@pytest.fixture(scope="session")
def sparse_mlp():
  """Factory fixture: `sparse_mlp(pattern, out=16, density=None, seed=0)` (see above)."""
  return _sparse_mlp


def _mlp(inputs=12, hidden=(16,), classes=3, seed=0, names=None, out_name="out",
         activation="relu"):
  """A small Functional MLP: `inputs` -> Dense(h, relu) per `hidden` -> Dense(classes).

  Hidden layers are named `fc1`, `fc2`, ... (or `names`), the output `out_name`; weights
  are seeded by `seed` (None: continue the test's random stream, seeded per test).
  """
  if seed is not None:
    keras.utils.set_random_seed(seed)
  names = names or [f"fc{i + 1}" for i in range(len(hidden))]
  x = inp = keras.Input((inputs,))
  for units, name in zip(hidden, names):
    x = keras.layers.Dense(units, activation=activation, name=name)(x)
  return keras.Model(inp, keras.layers.Dense(classes, name=out_name)(x))


def _toy_data(n=64, inputs=12, classes=3, seed=0, learnable=False):
  """`(x float32 [n, inputs], y int64 [n])`: random labels, or (`learnable`) the argmax
  of |x| over the first `classes` features."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, inputs)).astype("float32")
  if learnable:
    return x, np.abs(x[:, :classes]).argmax(axis=1).astype("int64")
  return x, rng.integers(0, classes, n).astype("int64")


@pytest.fixture(scope="session")
def mlp():
  """Factory fixture: `mlp(inputs=12, hidden=(16,), classes=3, seed=0, ...)` (above)."""
  return _mlp


@pytest.fixture(scope="session")
def toy_data():
  """Factory fixture: `toy_data(n=64, inputs=12, classes=3, seed=0, learnable=False)`."""
  return _toy_data


# Larger variants of tests that already run a smaller twin by default: run them with
# TFPRUNE_SLOW_TESTS=1 (the default suite must stay within 15 minutes on 2 cores).
SLOW = pytest.mark.skipif(not os.environ.get("TFPRUNE_SLOW_TESTS"),
                          reason="large variant: set TFPRUNE_SLOW_TESTS=1 to run it")
