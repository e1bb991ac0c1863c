"""Writes the legacy_v0_1 test data: small pruned models saved by tfprune 0.1.0.

Run ONCE with the tfprune version the files are named after (they are committed; the
test `tests/legacy_test.py` loads them with today's code). Kept for the record:

    PYTHONPATH=<tfprune 0.1.0 checkout> python tests/testdata/legacy_v0_1/make_legacy.py
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

import tfprune  # pylint: disable=g-import-not-at-top
from tfprune import optimizers  # pylint: disable=g-import-not-at-top

HERE = os.path.dirname(os.path.abspath(__file__))


def mlp():
  keras.utils.set_random_seed(0)
  inputs = keras.Input((12,))
  x = keras.layers.Dense(16, activation="relu", name="fc1")(inputs)
  x = keras.layers.Dense(8, activation="relu", name="fc2")(x)
  return keras.Model(inputs, keras.layers.Dense(3, name="out")(x))


def data(n=64):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(n, 12)).astype("float32")
  return x, (np.abs(x[:, :3]).argmax(axis=1)).astype("int64")


def main():
  x, y = data()
  probe = np.random.default_rng(1).normal(size=(5, 12)).astype("float32")
  loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  expected = {}

  # magnitude: plain fit + PruningCallback.
  pruned = tfprune.prune(mlp(), "magnitude", target_sparsity=0.75)
  pruned.compile(keras.optimizers.Adam(1e-2), loss)
  pruned.fit(x, y, epochs=1, batch_size=16, verbose=0,
             callbacks=[tfprune.PruningCallback()])
  pruned.save(os.path.join(HERE, "magnitude.keras"))
  expected["magnitude"] = pruned.predict(probe, verbose=0)

  # admm with the ADMM optimizer wrapper compiled in (penalty="optimizer").
  pruned = tfprune.prune(mlp(), "admm", target_sparsity=0.8, penalty="optimizer",
                         admm_interval=2, admm_steps=6)
  method = tfprune.get_method(pruned)
  pruned.compile(optimizers.ADMM(keras.optimizers.Adam(1e-2), method=method), loss)
  pruned.fit(x, y, epochs=2, batch_size=16, verbose=0,
             callbacks=[tfprune.PruningCallback()])
  pruned.save(os.path.join(HERE, "admm.keras"))
  expected["admm"] = pruned.predict(probe, verbose=0)

  # l0_projection with its optimizer compiled in.
  pruned = tfprune.prune(mlp(), "l0_projection", target_sparsity=0.7)
  method = tfprune.get_method(pruned)
  pruned.compile(method.make_optimizer(keras.optimizers.Adam(1e-2)), loss)
  pruned.fit(x, y, epochs=1, batch_size=16, verbose=0,
             callbacks=[tfprune.PruningCallback()])
  pruned.save(os.path.join(HERE, "l0_projection.keras"))
  expected["l0_projection"] = pruned.predict(probe, verbose=0)

  # l0_gates through its recipe.
  pruned = tfprune.prune(mlp(), "l0_gates", target_sparsity=0.5)
  tfprune.get_method(pruned).fit(pruned, x, y, epochs=2, batch_size=16, verbose=0)
  pruned.save(os.path.join(HERE, "l0_gates.keras"))
  expected["l0_gates"] = pruned.predict(probe, verbose=0)

  # sap through its recipe.
  pruned = tfprune.prune(mlp(), "sap", rounds=1, epochs_per_round=1)
  tfprune.get_method(pruned).fit(pruned, x, y, batch_size=16, verbose=0)
  pruned.save(os.path.join(HERE, "sap.keras"))
  expected["sap"] = pruned.predict(probe, verbose=0)

  np.savez(os.path.join(HERE, "expected.npz"), probe=probe, **expected)
  print("tfprune", tfprune.__version__, "wrote", sorted(expected), file=sys.stderr)


if __name__ == "__main__":
  main()
