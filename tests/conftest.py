"""Shared pytest setup: quiet TensorFlow, deterministic seeds, small CPU thread pools."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top


@pytest.fixture(autouse=True)
def _seed():
  keras.utils.set_random_seed(0)
  yield
