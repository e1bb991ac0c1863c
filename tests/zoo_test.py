"""Tests for tfprune.zoo: architectures, weight counts, shapes, errors."""
import sys

import keras
import numpy as np
import pytest

from tfprune import zoo


def _kernel_count(model):
  return sum(int(np.prod(w.shape)) for w in model.weights if w.path.endswith("kernel"))


def _layer_types(model):
  return [type(layer).__name__ for layer in model.layers]


def test_names_and_unknown_name():
  assert zoo.NAMES == ("lenet_300_100", "lenet5", "resnet_cifar")
  with pytest.raises(ValueError, match="'vgg16'.*lenet_300_100, lenet5, resnet_cifar"):
    zoo.get("vgg16")


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


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
