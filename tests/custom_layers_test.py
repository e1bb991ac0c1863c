"""Layers tfprune did not design: guide-style lazy custom layers, layers with a broken
get_config(), custom layers with their own output shape, keras_hub backbones (tiny
configs from their constructors, random weights, nothing downloaded)."""
import warnings

import keras
import numpy as np
import pytest
from keras import ops

import tfprune
from tfprune.model import unpruned_weights
from tfprune.wrapper import find_wrappers
from tfprune.wrapper import PruneWrapper

L = keras.layers


@keras.saving.register_keras_serializable(package="tfprune_test")
class Block(L.Layer):
  """The Keras guides' style: sublayers made in __init__, built on first call, no build()."""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.d1 = L.Dense(8, activation="relu")
    self.d2 = L.Dense(4)

  def call(self, x):
    return self.d2(self.d1(x))


@keras.saving.register_keras_serializable(package="tfprune_test")
class NormProject(L.Layer):
  """Gemma-style: its own build() and compute_output_shape(); the call is not sparse-safe."""

  def __init__(self, units=6, **kwargs):
    super().__init__(**kwargs)
    self.units = units
    self.proj = L.Dense(units)

  def build(self, input_shape):
    self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones")
    self.proj.build(input_shape)

  def call(self, x):
    x = x * ops.rsqrt(ops.mean(ops.square(x), axis=-1, keepdims=True) + 1e-6)
    return self.proj(x * self.scale)

  def compute_output_shape(self, input_shape):
    return tuple(input_shape[:-1]) + (self.units,)

  def get_config(self):
    return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="tfprune_test")
class BrokenConfig(L.Layer):
  """A library layer whose get_config() returns a derived value __init__ rejects."""

  def __init__(self, units=5, **kwargs):
    super().__init__(**kwargs)
    self.units = units
    self.dense = L.Dense(units)

  def build(self, input_shape):
    self.dense.build(input_shape)

  def call(self, x):
    return self.dense(x)

  def get_config(self):
    return {**super().get_config(), "units": self.units, "units_squared": self.units ** 2}


class _Spec:

  def __init__(self, width):
    self.width = width


class Opaque(L.Layer):
  """No usable config at all: an object argument, stored under another name."""

  def __init__(self, spec, **kwargs):
    super().__init__(**kwargs)
    self.width = spec.width
    self.dense = L.Dense(self.width)

  def build(self, input_shape):
    self.dense.build(input_shape)

  def call(self, x):
    return self.dense(x)

  def get_config(self):
    raise NotImplementedError("Opaque has no config")


def _weights(model):
  return [w.numpy().copy() for w in model.weights]


def _same(a, b):
  return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def _max_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(keras.tree.flatten(a), keras.tree.flatten(b)))


def _run(model, x):
  return keras.tree.map_structure(np.asarray, model(x, training=False))


def _prune_fit_strip_roundtrip(model, x, tmp_path, steps=2):
  """prune global 0.8, fit with the callback, strip, save/load; checks every step.

  Eager calls and an eager fit: tracing predict / train functions would take most of
  the time of these tiny models.
  """
  before = _weights(model)
  y0 = _run(model, x)
  pruned = tfprune.prune(model, "magnitude", target_sparsity=0.8, scope="global")
  assert _max_diff(_run(pruned, x), y0) < 1e-5
  target = keras.tree.map_structure(np.zeros_like, y0)
  pruned.compile("adam", "mse", run_eagerly=True)
  n = len(keras.tree.flatten(x)[0])
  pruned.fit(x, target, batch_size=max(1, n // steps), epochs=1, verbose=0,
             callbacks=[tfprune.PruningCallback()])
  masks = np.concatenate([np.ravel(m.numpy()) for w in find_wrappers(pruned)
                          for m in w.masks])
  assert 0.7 < 1 - masks.mean() < 0.9  # the global 80% reached
  stripped = tfprune.strip(pruned)
  y_pruned = _run(pruned, x)
  y_stripped = _run(stripped, x)
  assert _max_diff(y_pruned, y_stripped) < 1e-5
  path = tmp_path / "m.keras"
  stripped.save(path)
  loaded = keras.models.load_model(path)
  assert _max_diff(_run(loaded, x), y_stripped) == 0.0
  # The original model is untouched and shares no variable with the copies.
  assert _same(_weights(model), before)
  ids = {id(v) for v in model.weights}
  assert not ids & {id(v) for v in pruned.weights}
  assert not ids & {id(v) for v in stripped.weights}
  return pruned, stripped


def _lazy_model():
  inp = keras.Input((6,))
  return keras.Model(inp, Block()(inp))


def test_lazy_custom_layer_prunes_fits_strips_and_round_trips(tmp_path):
  model = _lazy_model()
  x = np.random.default_rng(0).normal(size=(8, 6)).astype("float32")
  pruned, _ = _prune_fit_strip_roundtrip(model, x, tmp_path)
  (wrapper,) = find_wrappers(pruned)
  assert [w.shape for w in wrapper.prunable_weights] == [(6, 8), (8, 4)]
  # The wrapped model saves and loads too: the wrapper records its call's shapes and
  # loading traces the lazy layer's call to build its sublayers.
  pruned.save(tmp_path / "p.keras")
  loaded = keras.models.load_model(tmp_path / "p.keras")
  assert _max_diff(_run(loaded, x), _run(pruned, x)) == 0.0
  assert _same([m.numpy() for m in find_wrappers(loaded)[0].masks],
               [m.numpy() for m in wrapper.masks])
  assert _max_diff(_run(tfprune.strip(loaded), x), _run(pruned, x)) < 1e-6


def test_lazy_layer_that_cannot_be_traced_names_the_layer_and_the_fix():

  class EagerOnly(L.Layer):

    def __init__(self, **kwargs):
      super().__init__(**kwargs)
      self.dense = L.Dense(3)

    def call(self, x):
      if float(ops.convert_to_numpy(ops.sum(x))) > 1e9:  # eager-only Python control flow
        x = -x
      return self.dense(x)

    def compute_output_shape(self, input_shape):
      return tuple(input_shape[:-1]) + (3,)

  inp = keras.Input((4,))
  model = keras.Model(inp, EagerOnly(name="eager_only")(inp))
  model(np.ones((1, 4), "float32"))  # the eager call builds the Dense
  with pytest.raises(ValueError, match=r"eager_only.*build\(input_shape\) that builds its "
                                       r"sublayers"):
    tfprune.prune(model, "magnitude", target_sparsity=0.5)


def test_custom_layer_after_sparse_marked_op_runs_wrapped():
  # Keras marks `x * ops.cast(ops.sqrt(8.0), x.dtype)` sparse; the layer's own
  # compute_output_shape keeps the plain model running, and the wrapper delegates to it.
  inp = keras.Input((5,), dtype="int32")
  x = L.Embedding(12, 8)(inp)
  x = x * ops.cast(ops.sqrt(8.0), x.dtype)
  model = keras.Model(inp, NormProject(name="norm_project")(x))
  ids = np.random.default_rng(0).integers(0, 12, size=(3, 5)).astype("int32")
  pruned = tfprune.prune(model, "magnitude", target_sparsity=0.8)
  assert {w.layer.name for w in find_wrappers(pruned)} >= {"norm_project"}
  np.testing.assert_allclose(pruned(ids), model(ids), atol=1e-5)
  wrapper = pruned.get_layer("prune_norm_project")
  assert wrapper.compute_output_shape((None, 5, 8)) == (None, 5, 6)
  assert not pruned.outputs[0].sparse


def test_wrapper_takes_the_layer_dtype_policy():
  layer = L.Dense(3, dtype="mixed_float16")
  layer.build((None, 4))
  wrapper = PruneWrapper(layer)
  assert wrapper.dtype_policy.name == "mixed_float16"
  out = wrapper(np.ones((2, 4), "float32"))
  assert out.dtype == "float16"


def test_broken_get_config_is_rebuilt_from_constructor_arguments(tmp_path):
  inp = keras.Input((4,))
  model = keras.Model(inp, L.Dense(2)(BrokenConfig(name="broken")(inp)))
  x = np.random.default_rng(1).normal(size=(8, 4)).astype("float32")
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    _prune_fit_strip_roundtrip(model, x, tmp_path)
  texts = [str(w.message) for w in caught if "get_config() cannot rebuild" in str(w.message)]
  assert texts and all("'broken' (BrokenConfig)" in t for t in texts)
  # The whole root cause, not cut: the rejected keyword is named.
  assert all("units_squared" in t and "constructor arguments" in t for t in texts)


def test_layer_without_any_config_is_reused_and_says_so():
  inp = keras.Input((4,))
  model = keras.Model(inp, Opaque(_Spec(3), name="opaque")(inp))
  with pytest.warns(UserWarning, match=r"'opaque' \(Opaque\).*Opaque has no config.*SHARED"):
    pruned = tfprune.prune(model, "magnitude", target_sparsity=0.5)
  assert find_wrappers(pruned)[0].layer is model.get_layer("opaque")


def test_weight_bearing_layers_are_pruned_or_listed():
  keras_hub = pytest.importorskip("keras_hub")
  inp = keras.Input((6,), dtype="int32")
  x = keras_hub.layers.ReversibleEmbedding(20, 8, tie_weights=False, name="tokens")(inp)
  x = x + keras_hub.layers.PositionEmbedding(sequence_length=6, name="positions")(x)

  class Raw(L.Layer):

    def build(self, input_shape):
      self.k = self.add_weight(shape=(input_shape[-1], 3), name="k")
      self.b = self.add_weight(shape=(3,), name="b")

    def call(self, x):
      return ops.matmul(x, self.k) + self.b

  model = keras.Model(inp, Raw(name="raw")(x))
  with pytest.warns(UserWarning, match=r"1 weight\(s\).*raw/k \(Raw is not a supported "
                                       r"layer.*PrunableLayer"):
    pruned = tfprune.prune(model, "magnitude", target_sparsity=0.8)
  pruned_paths = {w.path for wr in find_wrappers(pruned) for w in wr.prunable_weights}
  assert pruned_paths == {"tokens/embeddings", "tokens/reverse_embeddings",
                          "positions/embeddings"}
  assert [p for p, _ in unpruned_weights(pruned)] == ["raw/k"]


@pytest.fixture(scope="module")
def keras_hub():
  return pytest.importorskip("keras_hub")


def _efficientnet(hub):
  return hub.models.EfficientNetBackbone(
      stackwise_width_coefficients=[1.0, 1.0], stackwise_depth_coefficients=[1.0, 1.0],
      stackwise_kernel_sizes=[3, 3], stackwise_num_repeats=[1, 1],
      stackwise_input_filters=[8, 8], stackwise_output_filters=[8, 16],
      stackwise_expansion_ratios=[1, 4], stackwise_squeeze_and_excite_ratios=[0.25, 0.25],
      stackwise_strides=[1, 2], stackwise_block_types=["fused", "unfused"],
      stackwise_force_input_filters=[0, 0], stackwise_nores_option=[False, False],
      min_depth=8, depth_divisor=8, input_shape=(16, 16, 3), num_features=16)


def _tokens(rng):
  return {"token_ids": rng.integers(0, 64, size=(4, 6)).astype("int32"),
          "padding_mask": np.ones((4, 6), "int32")}


HUB = {
    # Its MBConv blocks' build() leaves their sublayers unbuilt.
    "efficientnet": (_efficientnet,
                     lambda rng: rng.random((4, 16, 16, 3)).astype("float32")),
    # `x * ops.cast(ops.sqrt(d), x.dtype)` before the decoder blocks is marked sparse.
    "gemma": (lambda hub: hub.models.GemmaBackbone(
        vocabulary_size=64, num_layers=1, num_query_heads=2, num_key_value_heads=1,
        hidden_dim=16, intermediate_dim=32, head_dim=8), _tokens),
    # ViTPatchingAndEmbedding.get_config() returns `num_patches`, which __init__ rejects.
    "vit": (lambda hub: hub.models.ViTBackbone(
        image_shape=(16, 16, 3), patch_size=8, num_layers=1, num_heads=2, hidden_dim=8,
        mlp_dim=16), lambda rng: rng.random((4, 16, 16, 3)).astype("float32")),
}


@pytest.mark.parametrize("name", sorted(HUB))
def test_keras_hub_backbone_prunes_fits_strips_and_round_trips(keras_hub, name, tmp_path):
  make, data = HUB[name]
  model = make(keras_hub)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # ViT: the get_config fallback warns
    pruned, _ = _prune_fit_strip_roundtrip(model, data(np.random.default_rng(0)), tmp_path)
  assert len(find_wrappers(pruned)) >= 2


@keras.saving.register_keras_serializable(package="tfprune_test")
class UnusedSublayer(L.Layer):
  """A sublayer made in __init__ that call never uses (keras_hub FusedMBConvBlock with
  se_ratio=0 always creates its squeeze-excite layers)."""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.main = L.Dense(8)
    self.unused = L.Dense(8)

  def build(self, input_shape):
    self.main.build(input_shape)

  def call(self, x):
    return self.main(x)


def test_sublayer_the_call_never_uses_is_skipped(tmp_path):
  i = keras.Input((4,))
  model = keras.Model(i, UnusedSublayer()(i))
  x = np.random.default_rng(0).random((3, 4)).astype("float32")
  pruned = tfprune.prune(model, "magnitude", target_sparsity=0.5)
  (wrapper,) = find_wrappers(pruned)
  assert [id(w) for w in wrapper.prunable_weights] == [id(wrapper.layer.main.kernel)]
  assert not wrapper.layer.unused.built
  np.testing.assert_allclose(_run(pruned, x), _run(model, x), atol=1e-6)
  pruned.save(tmp_path / "p.keras")
  loaded = keras.models.load_model(tmp_path / "p.keras")
  np.testing.assert_array_equal(_run(loaded, x), _run(pruned, x))


@keras.saving.register_keras_serializable(package="tfprune_test")
class KwargsBlock(L.Layer):
  """Called with its first argument by keyword (keras_hub XLNet) and with a keyword
  argument holding tensors next to one holding a plain value (DINOV3, T5)."""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.d = L.Dense(8)

  def build(self, content_shape):
    self.d.build(content_shape)

  def call(self, content, rope=None, prefix=0):
    cos, sin = rope
    return self.d(content) * cos + sin + prefix


def test_clone_keeps_keyword_call_arguments():
  i = keras.Input((4, 8))
  rope = (L.Dense(8, name="cos")(i), L.Dense(8, name="sin")(i))
  model = keras.Model(i, KwargsBlock()(content=i, rope=rope, prefix=3))
  x = np.random.default_rng(0).random((2, 4, 8)).astype("float32")
  pruned = tfprune.prune(model, "magnitude", target_sparsity=0.5)
  assert len(find_wrappers(pruned)) == 3
  np.testing.assert_allclose(_run(pruned, x), _run(model, x), atol=1e-5)
  np.testing.assert_allclose(_run(tfprune.strip(pruned), x), _run(pruned, x), atol=1e-6)


def test_keras_hub_transformer_decoder_is_cloned(keras_hub):
  # Its config carries `decoder_sequence_shape`: from_config builds it already.
  i = keras.Input((4, 16))
  model = keras.Model(i, keras_hub.layers.TransformerDecoder(
      intermediate_dim=32, num_heads=2)(i))
  x = np.random.default_rng(0).random((2, 4, 16)).astype("float32")
  pruned = tfprune.prune(model, "magnitude", target_sparsity=0.5)
  assert find_wrappers(pruned)
  assert not {id(v) for v in model.weights} & {id(v) for v in pruned.weights}
  np.testing.assert_allclose(_run(pruned, x), _run(model, x), atol=1e-5)


@keras.saving.register_keras_serializable(package="tfprune_test")
class ClassArgument(L.Layer):
  """keras_hub Swin's PatchEmbedding: a class as an __init__ argument, which its own
  get_config() cannot serialize."""

  def __init__(self, norm_layer=L.LayerNormalization, **kwargs):
    super().__init__(**kwargs)
    self.norm_layer = norm_layer
    self.d = L.Dense(8)
    self.norm = norm_layer()

  def build(self, input_shape):
    self.d.build(input_shape)
    self.norm.build(tuple(input_shape[:-1]) + (8,))

  def call(self, x):
    return self.norm(self.d(x))

  def get_config(self):
    return {**super().get_config(),
            "norm_layer": keras.saving.serialize_keras_object(self.norm_layer)}

  @classmethod
  def from_config(cls, config):
    config["norm_layer"] = keras.saving.deserialize_keras_object(config["norm_layer"])
    return cls(**config)


def test_class_argument_saves_and_loads(tmp_path):
  i = keras.Input((4,))
  model = keras.Model(i, ClassArgument()(i))
  x = np.random.default_rng(0).random((3, 4)).astype("float32")
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # the get_config fallback warns
    pruned = tfprune.prune(model, "magnitude", target_sparsity=0.5)
  pruned.save(tmp_path / "p.keras")
  loaded = keras.models.load_model(tmp_path / "p.keras")
  np.testing.assert_array_equal(_run(loaded, x), _run(pruned, x))


@keras.saving.register_keras_serializable(package="tfprune_test")
class Holder(keras.layers.Layer):
  """Holds another layer of the graph as an attribute (keras_hub Gemma3n's processor
  holds the text model that is also a node of the backbone)."""

  def __init__(self, inner, **kwargs):
    super().__init__(**kwargs)
    self.inner = inner

  def call(self, x):
    return self.inner(x) * 2.0

  def get_config(self):
    return {**super().get_config(), "inner": keras.layers.serialize(self.inner)}

  @classmethod
  def from_config(cls, config):
    return cls(keras.layers.deserialize(config.pop("inner")), **config)


def test_a_layer_held_by_another_is_named_in_a_warning():
  shared = keras.layers.Dense(4, name="shared")
  inp = keras.Input((4,))
  x = Holder(shared, name="holder")(inp)
  model = keras.Model(inp, shared(x))
  with pytest.warns(UserWarning, match="layer 'shared' is also held by layer 'holder' "
                                       r"\(its attribute 'inner'\)"):
    tfprune.prune(model, "magnitude", target_sparsity=0.5)


@keras.saving.register_keras_serializable(package="tfprune_test")
class ConfigHoldsVariable(keras.layers.Layer):
  """Its build() replaces a config value by a variable, which get_config() then returns
  (keras_hub D-FINE's decoder): a copy from config holds one weight more."""

  def __init__(self, factor=2.0, **kwargs):
    super().__init__(**kwargs)
    self.factor = factor

  def build(self, input_shape):
    self.dense = keras.layers.Dense(4)
    self.dense.build(input_shape)
    value = float(keras.ops.convert_to_numpy(self.factor))
    self.factor = self.add_weight(shape=(), name="factor", trainable=False,
                                  initializer=keras.initializers.Constant(value))

  def call(self, x):
    return self.dense(x) * self.factor

  def get_config(self):
    return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="tfprune_test")
class CachesOnFirstCall(keras.layers.Layer):
  """No weights; caches a table on its first call (keras_hub SD3's scheduler)."""

  def call(self, x):
    if getattr(self, "table", None) is None:
      object.__setattr__(self, "table", 1.0 + float(x.shape[-1]))
    return x / self.table


def test_config_holding_a_variable_and_weightless_state():
  inp = keras.Input((6,))
  x = CachesOnFirstCall(name="cache")(ConfigHoldsVariable(name="block")(inp))
  model = keras.Model(inp, keras.layers.Dense(2, name="head")(x))
  data = np.random.default_rng(0).standard_normal((4, 6)).astype("float32")
  ref = np.asarray(model(data))
  with pytest.warns(UserWarning, match="holds .* weights, not the layer's"):
    pruned = tfprune.prune(model, "magnitude", target_sparsity=0.5)
  assert pruned.get_layer("cache") is model.get_layer("cache")  # reused: its state kept
  np.testing.assert_allclose(np.asarray(pruned(data)), ref, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(np.asarray(tfprune.strip(pruned)(data)), ref, rtol=1e-6,
                             atol=1e-6)
