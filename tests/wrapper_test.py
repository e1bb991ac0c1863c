"""Tests for PruneWrapper and the registry: masked call on every prunable layer type."""
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tfprune import registry

L = keras.layers

# (layer factory, input shape without batch, input dtype)
LAYERS = {
    "dense": (lambda: L.Dense(6), (5,), "float32"),
    "einsum_dense": (lambda: L.EinsumDense("ab,bc->ac", output_shape=4), (5,), "float32"),
    "conv1d": (lambda: L.Conv1D(3, 3), (8, 2), "float32"),
    "conv2d": (lambda: L.Conv2D(3, 3), (6, 6, 2), "float32"),
    "conv3d": (lambda: L.Conv3D(2, 2), (4, 4, 4, 2), "float32"),
    "conv1d_transpose": (lambda: L.Conv1DTranspose(3, 3), (6, 2), "float32"),
    "conv2d_transpose": (lambda: L.Conv2DTranspose(3, 3), (5, 5, 2), "float32"),
    "conv3d_transpose": (lambda: L.Conv3DTranspose(2, 2), (3, 3, 3, 2), "float32"),
    "depthwise_conv1d": (lambda: L.DepthwiseConv1D(3), (8, 4), "float32"),
    "depthwise_conv2d": (lambda: L.DepthwiseConv2D(3), (6, 6, 4), "float32"),
    "separable_conv1d": (lambda: L.SeparableConv1D(3, 3), (8, 4), "float32"),
    "separable_conv2d": (lambda: L.SeparableConv2D(3, 3), (6, 6, 4), "float32"),
    "embedding": (lambda: L.Embedding(20, 4), (7,), "int32"),
    "lstm": (lambda: L.LSTM(4), (5, 3), "float32"),
    "gru": (lambda: L.GRU(4), (5, 3), "float32"),
    "simple_rnn": (lambda: L.SimpleRNN(4), (5, 3), "float32"),
}


def _inputs(shape, dtype, n=3):
  rng = np.random.default_rng(0)
  if dtype == "int32":
    return rng.integers(0, 20, size=(n,) + shape).astype("int32")
  return rng.normal(size=(n,) + shape).astype("float32")


def _random_masks(wrapper, rng):
  return [(rng.random(w.shape) > 0.5).astype("float32") for w in wrapper.prunable_weights]


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_wrapped_call_equals_dense_call_on_masked_weights(name):
  factory, shape, dtype = LAYERS[name]
  layer = factory()
  wrapper = tfprune.PruneWrapper(layer)
  x = _inputs(shape, dtype)
  wrapper(x)
  rng = np.random.default_rng(1)
  new_masks = _random_masks(wrapper, rng)
  wrapper.set_masks(new_masks, zero_weights=False)
  got = keras.ops.convert_to_numpy(wrapper(x))
  # Reference: a plain copy of the layer holding W * mask.
  ref = layer.__class__.from_config(layer.get_config())
  ref(x)
  masked = {id(w): w.numpy() * m for w, m in zip(wrapper.prunable_weights, new_masks)}
  ref.set_weights([masked.get(id(v), v.numpy()) for v in layer.weights])
  np.testing.assert_allclose(got, keras.ops.convert_to_numpy(ref(x)), rtol=1e-5, atol=1e-5)
  assert len(wrapper.prunable_weights) == len(registry.get_prunable_weights(layer))


def test_multi_head_attention_kernels_are_pruned():
  q = keras.Input((4, 8))
  kv = keras.Input((3, 6))
  with pytest.raises(ValueError, match="needs several input shapes"):
    tfprune.PruneWrapper(L.MultiHeadAttention(num_heads=2, key_dim=4))(q, kv)
  mha = L.MultiHeadAttention(num_heads=2, key_dim=4)
  mha(q, kv)  # built for cross-attention
  wrapper = tfprune.PruneWrapper(mha)
  model = keras.Model([q, kv], wrapper(q, kv))
  assert len(wrapper.prunable_weights) == 4  # query, key, value, output kernels
  x = [_inputs((4, 8), "float32"), _inputs((3, 6), "float32")]
  before = model(x).numpy()
  wrapper.set_masks([np.zeros(w.shape) for w in wrapper.prunable_weights])
  after = model(x).numpy()
  assert not np.allclose(before, after)
  # With every kernel zero only the output bias remains.
  bias = wrapper.layer.weights[-1].numpy()
  np.testing.assert_allclose(after, np.broadcast_to(bias, after.shape), atol=1e-6)


def test_gradients_of_masked_weights_are_exactly_zero():
  wrapper = tfprune.PruneWrapper(L.Dense(4))
  x = _inputs((6,), "float32")
  wrapper(x)
  mask = (np.random.default_rng(3).random((6, 4)) > 0.5).astype("float32")
  wrapper.set_masks([mask])
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(wrapper(x) ** 2)
  grad = tape.gradient(loss, wrapper.prunable_weights[0]).numpy()
  assert np.all(grad[mask == 0] == 0)
  assert np.any(grad[mask == 1] != 0)


class _Scale(L.Layer, tfprune.PrunableLayer):
  """A custom layer that opts in to pruning."""

  def build(self, input_shape):
    self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones")

  def call(self, x):
    return x * self.w

  def get_prunable_weights(self):
    return [self.w]


def test_custom_prunable_layer():
  wrapper = tfprune.PruneWrapper(_Scale())
  x = np.ones((2, 4), "float32")
  wrapper(x)
  wrapper.set_masks([np.array([1, 0, 1, 0], "float32")])
  np.testing.assert_array_equal(wrapper(x).numpy(), [[1, 0, 1, 0]] * 2)


def test_unsupported_layer_is_a_clear_error():
  with pytest.raises(ValueError, match=r"'bn' \(BatchNormalization\) cannot be pruned"):
    tfprune.PruneWrapper(L.BatchNormalization(name="bn"))


def test_set_masks_checks_count_and_shape():
  wrapper = tfprune.PruneWrapper(L.Dense(3))
  wrapper(np.ones((1, 2), "float32"))
  with pytest.raises(ValueError, match="has 1 prunable weights, got 2"):
    wrapper.set_masks([np.ones((2, 3)), np.ones((2, 3))])
  with pytest.raises(ValueError, match=r"must have shape \(2, 3\)"):
    wrapper.set_masks([np.ones((3, 2))])


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
