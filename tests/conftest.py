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
