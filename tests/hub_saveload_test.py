"""Save / load of pruned and stripped models holding library-style layers whose default
build config cannot rebuild them (keras_hub's Swin, DeBERTa, RWKV7, DeepLabV3 blocks):
the model saves and loads as the library's own model does."""
import os
import warnings

import keras
import numpy as np

import tfprune
from tfprune.wrapper import find_wrappers

L = keras.layers


@keras.saving.register_keras_serializable(package="tfprune_hub_saveload_test")
class PatchLike(L.Layer):
  """keras_hub Swin's PatchEmbedding: a class argument its get_config() cannot serialize
  (the unbound `get_config`), no build(), its own compute_output_shape (so Keras marks it
  built from a build config without tracing the call)."""

  def __init__(self, units, norm_layer=None, **kwargs):
    super().__init__(**kwargs)
    self.units = units
    self.norm_layer = norm_layer
    self.proj = L.Dense(units)
    self.norm = norm_layer(name="norm") if norm_layer is not None else None

  def call(self, x):
    x = self.proj(x)
    return self.norm(x) if self.norm is not None else x

  def compute_output_shape(self, input_shape):
    return tuple(input_shape[:-1]) + (self.units,)

  def get_config(self):
    return {**super().get_config(), "units": self.units,
            "norm_layer": keras.saving.serialize_keras_object(self.norm_layer)}

  @classmethod
  def from_config(cls, config):
    config["norm_layer"] = keras.saving.deserialize_keras_object(config["norm_layer"])
    return cls(**config)


@keras.saving.register_keras_serializable(package="tfprune_hub_saveload_test")
class NormOnly(L.Layer):
  """keras_hub DeBERTa's RelativeEmbedding: nothing to prune (a LayerNormalization built
  on first call), no build(), its own compute_output_shape."""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.ln = L.LayerNormalization(name="ln")

  def call(self, x):
    return self.ln(x)

  def compute_output_shape(self, input_shape):
    return input_shape


@keras.saving.register_keras_serializable(package="tfprune_hub_saveload_test")
class TupleBuild(L.Layer):
  """keras_hub RWKV7 / DeepLabV3 blocks: sublayers made in build(), which reads a list as
  several shapes and extends a shape with a tuple (a JSON list shape breaks it)."""

  def __init__(self, units, **kwargs):
    super().__init__(**kwargs)
    self.units = units

  def build(self, input_shape):
    if isinstance(input_shape, list):
      input_shape = input_shape[0]
    self.up = L.Dense(self.units, name="up")
    self.up.build(input_shape)
    self.down = L.Dense(input_shape[-1], name="down")
    self.down.build(input_shape[:-1] + (self.units,))

  def call(self, x):
    return x + self.down(ops_relu(self.up(x)))

  def get_config(self):
    return {**super().get_config(), "units": self.units}


def ops_relu(x):
  return keras.ops.relu(x)


def _model():
  keras.utils.set_random_seed(0)
  i = keras.Input((5, 6))
  h = PatchLike(8, norm_layer=L.LayerNormalization, name="patch")(i)
  h = NormOnly(name="norm_only")(h)
  h = TupleBuild(16, name="block")(h)
  return keras.Model(i, L.Dense(3, name="head")(h))


def _roundtrip(model, path, x):
  model.save(path)
  loaded = keras.models.load_model(path)
  np.testing.assert_allclose(loaded(x), model(x), rtol=1e-6, atol=1e-6)
  return loaded


def test_pruned_and_stripped_library_layers_save_and_load(tmp_path):
  model = _model()
  x = np.random.default_rng(0).normal(size=(4, 5, 6)).astype("float32")
  # The copy of PatchLike comes from its attributes (its config cannot rebuild it).
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    pruned = tfprune.prune(model, "magnitude", target_sparsity=0.5)
    pruned.compile(optimizer="sgd", loss="mse", run_eagerly=True)
    pruned.fit(x, np.zeros((4, 5, 3), "float32"), epochs=1, verbose=0,
               callbacks=[tfprune.PruningCallback()])
    stripped = tfprune.strip(pruned)
    loaded = _roundtrip(pruned, os.path.join(tmp_path, "pruned.keras"), x)
    _roundtrip(stripped, os.path.join(tmp_path, "stripped.keras"), x)
  # The loaded pruned model is still pruned: same masks, strips to the same model.
  wrapped = {w.name: w for w in find_wrappers(pruned)}
  assert {w.name for w in find_wrappers(loaded)} == set(wrapped)
  for w in find_wrappers(loaded):
    for a, b in zip(w.masks, wrapped[w.name].masks):
      np.testing.assert_array_equal(a.numpy(), b.numpy())
  assert 0.4 < float(np.mean([np.mean(m.numpy() == 0) for w in find_wrappers(loaded)
                              for m in w.masks])) < 0.6
  np.testing.assert_allclose(tfprune.strip(loaded)(x), stripped(x), rtol=1e-6, atol=1e-6)


def test_keras_layers_keep_their_build_config():
  """Only library layers are rebuilt by call on load; Keras layers keep theirs."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    stripped = tfprune.strip(tfprune.prune(_model(), "magnitude", target_sparsity=0.5))
  config = stripped.get_config()["layers"]
  by_name = {c["config"]["name"]: c for c in config}
  assert "build_config" in by_name["head"]
  assert "build_config" not in by_name["block"]
