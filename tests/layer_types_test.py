"""The one layer taxonomy (tfprune/layer_types.py): every entry is a real Keras layer with
known kinds, every consumer reads it, and a new layer type is one entry.

GroupNormalization is the example of a type added as ONE entry (issue 26): with one group
per channel its channels are removed exactly (gamma/beta sliced, `groups` following the
width); with wider groups they are blocked, with the reason in the report.
"""
import keras
import numpy as np
import pytest

import tfprune
from tfprune import layer_types
from tfprune import registry
from tfprune.layerwise import geometry
from tfprune.structured import depgraph
from tfprune.structured import latency

L = keras.layers
_KINDS = {v for k, v in vars(layer_types).items() if k.isupper() and isinstance(v, str)}


def test_every_entry_is_a_keras_layer_with_known_kinds():
  for name, entry in layer_types.TYPES.items():
    assert hasattr(L, name), name
    assert entry.channels is None or entry.channels in _KINDS, name
    assert entry.geometry in (None, "dense", "conv", "depthwise", "einsum", "embedding")
    assert not (entry.gateable and entry.channels not in (layer_types.DENSE,
                                                          layer_types.CONV)), name


def test_lookup_follows_the_class_hierarchy_but_not_other_libraries():
  class MyDense(L.Dense):
    pass

  assert layer_types.of(MyDense(3)).name == "Dense"
  assert layer_types.of(L.Conv2DTranspose(2, 3)).name == "Conv2DTranspose"
  assert layer_types.of(L.Layer()) is None
  assert layer_types.get("MyDense") is None  # the graph reads configs: exact names


def test_consumers_read_the_taxonomy():
  assert set(latency._PASS) >= set(layer_types.names(channels=layer_types.PASS))  # pylint: disable=protected-access
  assert "GroupNormalization" in latency._PASS  # pylint: disable=protected-access
  assert set(geometry.SUPPORTED_LAYERS) == set(layer_types.names(
      geometry=("dense", "conv", "depthwise", "einsum", "embedding")))
  assert registry.unit_gate_problem(L.Conv2D(4, 3, groups=2)).startswith("grouped")
  assert registry.unit_gate_problem(L.DepthwiseConv2D(3)) is not None
  assert registry.unit_gate_problem(L.Dense(3)) is None


def _group_norm_net(groups):
  keras.utils.set_random_seed(0)
  i = keras.Input((8, 8, 3))
  x = L.Conv2D(8, 3, padding="same", name="c0")(i)
  x = L.GroupNormalization(groups=groups, name="gn")(x)
  x = L.ReLU()(x)
  x = L.Conv2D(4, 1, name="c1")(x)
  return keras.Model(i, L.GlobalAveragePooling2D()(x))


@pytest.mark.parametrize("groups", [-1, 8])
def test_group_norm_with_one_group_per_channel_shrinks_exactly(groups):
  model = _group_norm_net(groups)
  pruned = tfprune.prune(model, "magnitude", target_sparsity=0.5, scope="structured")
  tfprune.get_method(pruned).update_masks(0.5)
  stripped = tfprune.strip(pruned)
  shrunk = tfprune.strip(pruned, shrink=True)  # compared with `stripped` inside
  x = np.random.default_rng(1).standard_normal((4, 8, 8, 3)).astype("float32")
  np.testing.assert_allclose(shrunk(x), stripped(x), atol=1e-5)
  width = shrunk.get_layer("c0").filters
  assert width < 8
  gn = shrunk.get_layer("gn")
  # (Keras stores groups=-1 as the channel count once built.)
  assert tuple(gn.gamma.shape) == (width,) and gn.groups == width
  assert float(np.std(np.asarray(shrunk(x)))) > 0  # still depends on its input


def test_group_norm_with_wider_groups_blocks_its_channels_with_the_reason():
  graph = depgraph.ChannelGraph(_group_norm_net(2))
  assert "normalises several channels together" in graph.notes["gn"]
  blocked = [g for g in graph.groups if any(m.layer == "c0" for u in g.units for m in u)]
  assert blocked and all(g.blocked for g in blocked)


def test_a_softmax_activation_keeps_its_channels():
  i = keras.Input((8,))
  x = L.Activation("softmax", name="sm")(L.Dense(6, name="d0")(i))
  graph = depgraph.ChannelGraph(keras.Model(i, L.Dense(2, name="d1")(x)))
  assert "normalises over the channel axis" in graph.notes["sm"]
  assert all(g.blocked for g in graph.groups
             if any(m.layer == "d0" for u in g.units for m in u))
