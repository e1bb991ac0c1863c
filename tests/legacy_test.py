"""Saved `.keras` files written by tfprune 0.1.0 still load and compute the same outputs.

The files in tests/testdata/legacy_v0_1 were written once by the 0.1.0 code
(`make_legacy.py` there); they hold the registered names of that version (methods,
wrappers, the `tfprune>ADMMOptimizer` / `tfprune>L0Projection` optimizer wrappers).
"""
# bazel-data: tests/testdata/legacy_v0_1
import os

import keras
import numpy as np
import pytest

import tfprune

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata", "legacy_v0_1")
EXPECTED = np.load(os.path.join(HERE, "expected.npz"))
OPTIMIZERS = {"admm": "ADMMOptimizer", "l0_projection": "L0Projection"}


@pytest.mark.parametrize("name", ["magnitude", "admm", "l0_projection", "l0_gates", "sap"])
def test_legacy_file_loads_and_matches(name):
  model = keras.models.load_model(os.path.join(HERE, f"{name}.keras"))
  method = tfprune.get_method(model)
  assert method.name == name
  assert method.model is model
  np.testing.assert_allclose(model.predict(EXPECTED["probe"], verbose=0), EXPECTED[name],
                             rtol=1e-5, atol=1e-6)
  rows = tfprune.sparsity_report(model, print_table=False)
  assert rows and all(0.0 <= r["sparsity"] < 1.0 for r in rows)
  if name in OPTIMIZERS:
    registered = keras.saving.get_registered_name(type(model.optimizer))
    assert registered == f"tfprune>{OPTIMIZERS[name]}"


def test_legacy_admm_resumes_training():
  """The reloaded ADMM optimizer finds its method again and training goes on."""
  model = keras.models.load_model(os.path.join(HERE, "admm.keras"))
  method = tfprune.get_method(model)
  before = int(method.step.numpy())
  rng = np.random.default_rng(0)
  x = rng.normal(size=(32, 12)).astype("float32")
  y = rng.integers(0, 3, 32)
  model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[tfprune.PruningCallback()])
  assert int(method.step.numpy()) == before + 2
  assert np.isfinite(model.predict(x, verbose=0)).all()
