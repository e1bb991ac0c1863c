"""Tests for tfprune.zoo: architectures, weight counts, shapes, errors."""
# bazel-size: large
import os
import sys

import keras
import numpy as np
import pytest

import tfprune
from tfprune import zoo


def _kernel_count(model):
  return sum(int(np.prod(w.shape)) for w in model.weights if w.path.endswith("kernel"))


def _layer_types(model):
  return [type(layer).__name__ for layer in model.layers]


_ALL = ("lenet_300_100", "lenet5", "resnet_cifar", "resnet8", "ds_cnn", "mobilenet_v1_025",
        "transformer")


def test_names_and_unknown_name():
  assert zoo.NAMES == _ALL
  assert all(type(n) is zoo.ModelName and isinstance(n, str) for n in zoo.NAMES)
  with pytest.raises(ValueError, match="'vgg16'.*lenet_300_100, lenet5, resnet_cifar, "
                                       "resnet8, ds_cnn, mobilenet_v1_025, transformer"):
    zoo.get("vgg16")


@pytest.mark.parametrize("name", _ALL)
def test_names_carry_the_default_input_and_classes(name):
  entry = zoo.spec(name)
  model = zoo.get(name)
  assert model.input_shape == (None,) + entry.input_shape
  assert model.output_shape == (None, entry.num_classes)
  assert keras.backend.standardize_dtype(model.inputs[0].dtype) == entry.input_dtype
  assert entry.task


def test_lenet_300_100_structure():
  model = zoo.lenet_300_100()
  assert _layer_types(model) == ["InputLayer", "Flatten", "Dense", "Dense", "Dense"]
  assert [model.get_layer(n).units for n in ("fc1", "fc2", "logits")] == [300, 100, 10]
  assert model.get_layer("fc1").activation is keras.activations.relu
  assert model.get_layer("logits").activation is keras.activations.linear
  assert _kernel_count(model) == 784 * 300 + 300 * 100 + 100 * 10
  assert model.count_params() == 266_610


def test_lenet5_caffe_has_430500_kernel_weights():
  model = zoo.lenet5()
  assert _layer_types(model) == ["InputLayer", "Conv2D", "MaxPooling2D", "Conv2D",
                                 "MaxPooling2D", "Flatten", "Dense", "Dense"]
  assert _kernel_count(model) == 430_500
  assert model.get_layer("conv1").kernel.shape == (5, 5, 1, 20)
  assert model.get_layer("conv2").kernel.shape == (5, 5, 20, 50)
  assert model.get_layer("fc1").kernel.shape == (800, 500)
  assert model.get_layer("logits").activation is keras.activations.linear


def test_lenet5_small_inputs():
  # "auto" (default) falls back to "same" padding for the 8x8 digits.
  model = zoo.lenet5(input_shape=(8, 8, 1))
  assert model.get_layer("conv1").padding == "same"
  assert model.get_layer("fc1").kernel.shape == (2 * 2 * 50, 500)
  assert zoo.lenet5(input_shape=(16, 16, 1)).get_layer("conv1").padding == "valid"
  with pytest.raises(ValueError, match=r"minimum is 16x16.*padding='same'"):
    zoo.lenet5(input_shape=(8, 8, 1), padding="valid")
  with pytest.raises(ValueError, match=r"minimum is 4x4"):
    zoo.lenet5(input_shape=(3, 8, 1))
  with pytest.raises(ValueError, match="valid options: 'auto', 'valid', 'same'"):
    zoo.lenet5(padding="full")


@pytest.mark.parametrize("depth", [8, 14])
def test_resnet_cifar_structure(depth):
  model = zoo.resnet_cifar(depth=depth, num_classes=7)
  types = _layer_types(model)
  blocks = (depth - 2) // 6 * 3
  assert types.count("Add") == blocks
  # Stem conv + 2 per block + 2 projection shortcuts (at the two stride-2 stages).
  assert types.count("Conv2D") == 1 + 2 * blocks + 2
  assert types.count("BatchNormalization") == types.count("Conv2D")
  assert types[-2:] == ["GlobalAveragePooling2D", "Dense"]
  assert model.output_shape == (None, 7)
  assert model.get_layer("stage3_block1_conv1").kernel.shape == (3, 3, 32, 64)


def test_resnet_cifar_rejects_bad_depth():
  with pytest.raises(ValueError, match=r"6n\+2.*got 10"):
    zoo.resnet_cifar(depth=10)


@pytest.mark.parametrize("name,shape", [
    ("lenet_300_100", (28, 28, 1)), ("lenet5", (28, 28, 1)),
    ("lenet_300_100", (8, 8, 1)), ("lenet5", (8, 8, 1)), ("resnet_cifar", (8, 8, 1)),
])
def test_get_builds_logit_models_that_train(name, shape):
  kwargs = {"depth": 8} if name == "resnet_cifar" else {}
  model = zoo.get(name, shape, 10, **kwargs)
  assert model.input_shape == (None,) + shape and model.output_shape == (None, 10)
  x = np.random.default_rng(0).random((8,) + shape, dtype=np.float32)
  y = np.arange(8) % 10
  model.compile(optimizer="sgd",
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  history = model.fit(x, y, epochs=1, batch_size=8, verbose=0)
  assert np.isfinite(history.history["loss"][0])
  logits = model.predict(x, verbose=0)
  # Logits, not probabilities: rows need not sum to 1.
  assert not np.allclose(logits.sum(axis=1), 1.0)


def test_default_input_shapes_and_bad_args():
  assert zoo.get("resnet_cifar", depth=8).input_shape == (None, 32, 32, 3)
  assert zoo.get("lenet5").input_shape == (None, 28, 28, 1)
  with pytest.raises(ValueError, match="input_shape must be"):
    zoo.lenet_300_100(input_shape=(28, 28))
  with pytest.raises(ValueError, match="num_classes must be >= 2"):
    zoo.lenet5(num_classes=1)


# Parameter counts of the MLPerf Tiny reference models (github.com/mlcommons/tiny,
# benchmark/training/): ResNet-8 (image_classification/keras_model.py, 16/32/64
# filters) 78,666; DS-CNN (keyword_spotting/keras_model.py "ds_cnn", 64 filters, 4
# depthwise-separable blocks) 24,908 of which 23,756 trainable; MobileNetV1-0.25 96x96
# (visual_wake_words/vww_model.py) 221,794. The final Dense is the same with logits.
@pytest.mark.parametrize("name,total,trainable", [
    ("resnet8", 78_666, 78_186),
    ("ds_cnn", 24_908, 23_756),
    ("mobilenet_v1_025", 221_794, 216_322),
])
def test_mlperf_tiny_reference_parameter_counts(name, total, trainable):
  model = zoo.get(name)
  assert model.count_params() == total
  assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == trainable


def test_resnet8_structure_and_grey_input():
  model = zoo.resnet8()
  types = _layer_types(model)
  assert types.count("Conv2D") == 9 and types.count("Add") == 3
  assert types.count("BatchNormalization") == 7  # no BN on the 1x1 shortcuts
  assert model.get_layer("stack3_conv1").kernel.shape == (3, 3, 32, 64)
  assert model.get_layer("stack3_shortcut").kernel.shape == (1, 1, 32, 64)
  assert model.get_layer("pool").pool_size == (8, 8)
  grey = zoo.get("resnet8", (32, 32, 1))
  assert grey.get_layer("conv1").kernel.shape == (3, 3, 1, 16)
  assert grey.count_params() == 78_666 - 2 * 9 * 16
  assert zoo.get("resnet8", (28, 28, 1)).get_layer("pool").pool_size == (7, 7)
  with pytest.raises(ValueError, match="too small"):
    zoo.resnet8(input_shape=(3, 3, 1))


def test_ds_cnn_structure():
  model = zoo.ds_cnn()
  assert model.get_layer("conv1").kernel.shape == (10, 4, 1, 64)
  assert model.get_layer("conv1").strides == (2, 2)
  assert _layer_types(model).count("DepthwiseConv2D") == 4
  assert model.get_layer("pool").pool_size == (24, 5)  # (49 // 2, 10 // 2), as the reference
  assert model.get_layer("pool").output.shape == (None, 1, 1, 64)
  assert zoo.ds_cnn(blocks=5).count_params() == 24_908 + 640 + 256 + 4160 + 256


def test_mobilenet_v1_025_structure():
  model = zoo.mobilenet_v1_025()
  assert model.get_layer("conv1").kernel.shape == (3, 3, 3, 8)
  assert [model.get_layer(f"pw{i}").filters for i in range(1, 14)] == [
      16, 32, 32, 64, 64, 128, 128, 128, 128, 128, 128, 256, 256]
  assert model.get_layer("pool").output.shape == (None, 1, 1, 256)
  assert model.get_layer("pool").pool_size == (3, 3)
  with pytest.raises(ValueError, match="at least 32x32"):
    zoo.mobilenet_v1_025(input_shape=(28, 28, 1))


def test_transformer_tokens_and_image_rows():
  model = zoo.transformer(num_classes=3, vocab_size=50, seq_len=16, embed_dim=32,
                          num_heads=4, ff_dim=64, num_layers=2)
  assert model.input_shape == (None, 16) and model.output_shape == (None, 3)
  assert _layer_types(model).count("MultiHeadAttention") == 2
  assert model.get_layer("token_embedding").embeddings.shape == (50, 32)
  assert model.get_layer("position_embedding").embeddings.shape == (16, 32)
  tokens = np.random.default_rng(0).integers(0, 50, size=(2, 16))
  assert model(tokens).shape == (2, 3)
  rows = zoo.get("transformer", (28, 28, 1), 10, embed_dim=32, ff_dim=64)
  assert rows.get_layer("row_embedding").kernel.shape == (28, 32)
  assert rows.get_layer("position_embedding").embeddings.shape == (28, 32)
  assert rows(np.zeros((2, 28, 28, 1), "float32")).shape == (2, 10)
  with pytest.raises(ValueError, match="multiple of num_heads"):
    zoo.transformer(embed_dim=30, num_heads=4)
  with pytest.raises(ValueError, match="input_shape must be"):
    zoo.transformer(input_shape=(2, 3, 4, 5))


# Small inputs where the architecture allows (the weights and graph are the reference's).
_SMALL = {
    "resnet8": dict(input_shape=(16, 16, 3)),
    "ds_cnn": dict(),
    "mobilenet_v1_025": dict(input_shape=(32, 32, 3)),
    "transformer": dict(vocab_size=40, seq_len=12, embed_dim=16, num_heads=2, ff_dim=32),
    "transformer_rows": dict(input_shape=(8, 8, 1), embed_dim=16, num_heads=2, ff_dim=32),
}


@pytest.mark.parametrize("key", sorted(_SMALL))
def test_edge_models_prune_strip_round_trip(key, tmp_path):
  name = key.split("_rows")[0]
  model = zoo.get(name, num_classes=4, **_SMALL[key])
  rng = np.random.default_rng(0)
  shape = (6,) + model.input_shape[1:]
  if keras.backend.standardize_dtype(model.inputs[0].dtype) == "int32":
    x = rng.integers(0, 40, size=shape).astype("int32")
  else:
    x = rng.random(shape, dtype=np.float32)
  y = np.arange(6) % 4
  pruned = tfprune.prune(model, "magnitude", target_sparsity=0.5, scope="global")
  np.testing.assert_allclose(pruned(x), model(x), rtol=1e-5, atol=1e-5)
  method = tfprune.get_method(pruned)
  method.update_masks(0.5)
  # One eager training step with the pruning callback (tracing the step is slow here).
  pruned.compile(optimizer="sgd", run_eagerly=True,
                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  history = pruned.fit(x, y, epochs=1, batch_size=6, verbose=0,
                       callbacks=[tfprune.PruningCallback()])
  assert np.isfinite(history.history["loss"][0])
  stripped = tfprune.strip(pruned)
  np.testing.assert_allclose(stripped(x), pruned(x), rtol=1e-4, atol=1e-5)
  rows = tfprune.sparsity_report(stripped, print_table=False)
  assert tfprune.model.total_sparsity(rows) == pytest.approx(0.5, abs=0.01)
  if name == "transformer":
    assert any(r["layer"].endswith("attention") for r in rows)
  path = os.path.join(tmp_path, "stripped.keras")
  stripped.save(path)
  np.testing.assert_allclose(keras.models.load_model(path)(x), stripped(x), rtol=1e-6,
                             atol=1e-6)


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
