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
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(autouse=True)
def _seed():
  keras.utils.set_random_seed(0)
  yield
