"""The structured criteria registry (tfprune.structured.importance): FPGM as one entry.

FPGM (He et al., CVPR 2019) is checked against a brute-force NumPy reference, ranks a
duplicated channel lowest, and prunes a keras_hub ResNetBackbone (tiny config, random
weights) that then shrinks into a model computing exactly what the masked one computes.
"""
import sys

import keras
import numpy as np
import pytest

import tfprune
from tfprune.structured import ChannelGraph
from tfprune.structured import importance

L = keras.layers


def _mlp():
  keras.utils.set_random_seed(0)
  i = keras.Input((5,))
  x = L.Dense(6, activation="relu", name="d1")(i)
  return keras.Model(i, L.Dense(3, name="d2")(x))


def test_fpgm_matches_a_reference_and_ranks_a_duplicated_channel_lowest():
  model = _mlp()
  k1, k2 = model.get_layer("d1").kernel, model.get_layer("d2").kernel
  w1, w2 = k1.numpy(), k2.numpy()
  # Channels 4 and 5 are the same channel, sitting at the mean of the others (both the
  # producer's kernel column and the reader's kernel row).
  w1[:, 4] = w1[:, 5] = w1[:, :4].mean(1)
  w2[4] = w2[5] = w2[:4].mean(0)
  k1.assign(w1)
  k2.assign(w2)
  graph = ChannelGraph(model)
  scores = importance.unit_scores(model, graph, "fpgm")
  (group,) = {g for g, _ in scores}
  got = np.array([scores[(group, u)] for u in range(6)])
  w1, w2 = k1.numpy().astype(np.float64), k2.numpy().astype(np.float64)
  want = [sum(np.linalg.norm(w1[:, u] - w1[:, j]) + np.linalg.norm(w2[u] - w2[j])
              for j in range(6)) for u in range(6)]
  np.testing.assert_allclose(got, want, rtol=1e-9)
  assert set(np.argsort(got)[:2]) == {4, 5}, got


def _resnet():
  import keras_hub  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(0)
  return keras_hub.models.ResNetBackbone(
      input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 16],
      stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
      image_shape=(16, 16, 3))


def test_fpgm_prunes_a_hub_resnet_that_shrinks_exactly():
  model = _resnet()
  pruned = tfprune.prune(model, "magnitude", scope="structured", criterion="fpgm",
                         target_sparsity=0.5)
  method = tfprune.get_method(pruned)
  assert method.channels.criterion == "fpgm"
  rng = np.random.default_rng(0)
  x = rng.standard_normal((16, 16, 16, 3)).astype("float32")
  y = rng.standard_normal((16,) + tuple(pruned.output.shape[1:])).astype("float32")
  pruned.compile(optimizer=method.prepare_optimizer(keras.optimizers.Adam(1e-3)),
                 loss="mse", run_eagerly=True)  # (2 steps: tracing would cost more)
  pruned.fit(x, y, batch_size=8, epochs=1, steps_per_epoch=2, verbose=0,
             callbacks=[tfprune.PruningCallback()])
  assert method.channels.units
  xt = rng.standard_normal((4, 16, 16, 3)).astype("float32")
  masked = np.asarray(pruned(xt))
  assert np.abs(masked).max() > 0
  shrunk = tfprune.strip(pruned, shrink=True)
  assert shrunk.count_params() < 0.7 * model.count_params()
  got = np.asarray(shrunk(xt))
  np.testing.assert_allclose(got, masked, rtol=1e-4, atol=1e-4 * np.abs(masked).max())


def test_unknown_criterion_lists_the_registry_and_a_new_entry_is_one_decorator():
  with pytest.raises(ValueError, match="l2, l1, bn_scale, taylor, fpgm.*'l3'"):
    tfprune.prune(_mlp(), "magnitude", scope="structured", criterion="l3")

  @importance.register_criterion("first_unit_test")
  def _first(units):  # the lowest unit index goes first
    return {key: float(key[1]) for key in units.slices}

  try:
    pruned = tfprune.prune(_mlp(), "magnitude", scope="structured",
                           criterion="first_unit_test", target_sparsity=0.5)
    method = tfprune.get_method(pruned)
    method.update_masks(0.5)
    assert [u for _, u in method.channels.units] == [0, 1, 2]
    with pytest.raises(ValueError, match="already registered"):
      importance.register_criterion("first_unit_test")(_first)
  finally:
    del importance.CRITERIA["first_unit_test"]


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
