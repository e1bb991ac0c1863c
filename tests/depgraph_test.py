"""Channel dependency graph + physical removal on residual, depthwise, attention graphs."""
import keras
import numpy as np
import pytest

from tfprune.structured import ChannelGraph
from tfprune.structured import remove_units
from tfprune.structured import shrink
from conftest import SLOW  # pylint: disable=g-bad-import-order

L = keras.layers


def _randomize_norms(model, seed=0):
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    if isinstance(layer, L.BatchNormalization):
      layer.set_weights([(rng.random(w.shape) + 0.5).astype("float32")
                         for w in layer.get_weights()])


def _zero_outputs(model, graph, units, biases=False):
  """Zeroes the producing kernels (and optionally biases) of units: dead channels."""
  for g, u in units:
    for m in graph.groups[g].units[u]:
      layer = model.get_layer(m.layer)
      weights = {v.path.split("/")[-1]: v for v in layer.weights}
      if m.role == "out" and "kernel" in weights:
        k = weights["kernel"].numpy()
        k[..., m.index] = 0
        weights["kernel"].assign(k)
        if biases and "bias" in weights:
          b = weights["bias"].numpy()
          b[m.index] = 0
          weights["bias"].assign(b)


def _residual_cnn():
  i = keras.Input((12, 12, 3))
  x = L.Conv2D(8, 3, padding="same", name="stem")(i)
  x = L.ReLU()(L.BatchNormalization()(x))
  y = L.Conv2D(16, 3, strides=2, padding="same", name="b1_conv1")(x)
  y = L.ReLU()(L.BatchNormalization()(y))
  y = L.Conv2D(16, 1, name="b1_conv2")(y)
  y = L.BatchNormalization()(y)
  s = L.Conv2D(16, 1, strides=2, name="b1_proj")(x)
  x = L.ReLU()(L.Add()([y, s]))
  z = L.Conv2D(8, 1, name="branch")(x)
  x = L.Concatenate()([x, L.ReLU()(z)])
  x = L.Conv2D(12, 1, name="head_conv")(x)
  x = L.Flatten()(x)
  o = L.Dense(4, name="logits")(x)
  m = keras.Model(i, o)
  _randomize_norms(m)
  return m


def _group_of(graph, layer):
  return next(k for k, g in enumerate(graph.groups) if layer in g.producers)


def test_residual_groups_tie_add_inputs_and_concat_offsets():
  m = _residual_cnn()
  g = ChannelGraph(m)
  res = g.groups[_group_of(g, "b1_conv2")]
  assert res.blocked is None
  assert set(res.producers) == {"b1_conv2", "b1_proj"}
  assert {"branch", "head_conv"} <= set(res.layers)
  assert res.size == 16
  # The concat reader sees residual channel k at row k and the branch after offset 16.
  branch = g.groups[_group_of(g, "branch")]
  rows = [m.index for m in branch.units[3] if m.layer == "head_conv"]
  assert rows == [(19,)]
  # Flatten -> Dense: one unit of head_conv is a block of 6*6 rows of logits' kernel.
  head = g.groups[_group_of(g, "head_conv")]
  rows = [m.index for m in head.units[0] if m.layer == "logits"][0]
  assert len(rows) == 36 and rows[:2] == (0, 12)
  out = [gr for gr in g.groups if "logits" in gr.producers][0]
  assert "model output" in out.blocked


def test_remove_dead_units_is_exact_and_smaller():
  m = _residual_cnn()
  g = ChannelGraph(m)
  res, branch = _group_of(g, "b1_conv2"), _group_of(g, "branch")
  units = [(res, u) for u in (0, 5, 9)] + [(branch, u) for u in (1, 2)]
  _zero_outputs(m, g, units, biases=True)
  # BN shifts keep the residual channels constant (nonzero): folded into 1x1 readers.
  x = np.random.default_rng(1).standard_normal((3, 12, 12, 3)).astype("float32")
  new = remove_units(m, g, units)
  assert new.count_params() < m.count_params()
  assert new.get_layer("b1_proj").filters == 13
  assert new.get_layer("branch").filters == 6
  np.testing.assert_allclose(new(x), m(x), rtol=1e-4, atol=1e-4)


def test_alive_channel_refused():
  m = _residual_cnn()
  g = ChannelGraph(m)
  with pytest.raises(ValueError, match="still alive"):
    remove_units(m, g, [(_group_of(g, "branch"), 0)])


def test_blocked_group_refused_with_reason():
  m = _residual_cnn()
  g = ChannelGraph(m)
  out = next(k for k, gr in enumerate(g.groups) if "logits" in gr.producers)
  with pytest.raises(ValueError, match="model output"):
    remove_units(m, g, [(out, 0)])


def test_same_padding_reader_keeps_nonzero_constant_and_says_so():
  m = _residual_cnn()
  g = ChannelGraph(m)
  stem = _group_of(g, "stem")
  _zero_outputs(m, g, [(stem, u) for u in range(8)])
  new, report = shrink(m)
  x = np.random.default_rng(2).standard_normal((2, 12, 12, 3)).astype("float32")
  np.testing.assert_allclose(new(x), m(x), rtol=1e-4, atol=1e-4)
  # Stem channels are read by same-padded 3x3 convs: only constant zeros (ReLU of a
  # negative BN shift) may go; the others are kept, with the reason.
  if stem in report["kept"]:
    assert "padding" in report["kept"][stem] or "every unit" in report["kept"][stem]


def _transformer(seq=6, vocab=20, dim=16, heads=4, ffn=24):
  i = keras.Input((seq,), dtype="int32")
  x = L.Embedding(vocab, dim)(i)
  a = L.MultiHeadAttention(heads, 4, name="mha")(x, x)
  x = L.LayerNormalization()(L.Add()([x, a]))
  f = L.Dense(ffn, activation="relu", name="ffn1")(x)
  f = L.Dense(dim, name="ffn2")(f)
  x = L.LayerNormalization()(L.Add()([x, f]))
  x = L.GlobalAveragePooling1D()(x)
  return keras.Model(i, L.Dense(3, name="cls")(x))


def test_transformer_heads_and_ffn_units():
  m = _transformer()
  g = ChannelGraph(m)
  heads = next(k for k, gr in enumerate(g.groups) if any(
      mem.role == "head" for mem in gr.units[0]))
  ffn = _group_of(g, "ffn1")
  assert g.groups[heads].size == 4 and g.groups[ffn].size == 24
  # The residual stream is tied to LayerNormalization: blocked, with the reason.
  stream = [gr for gr in g.groups if "ffn2" in gr.producers][0]
  assert "normalises over the channel axis" in stream.blocked
  # Kill head 1 (its value projection is zero: contributes its bias, folded) and 5 FFN units.
  mha = m.get_layer("mha")
  vk = mha.value_dense.kernel
  v = vk.numpy()
  v[:, 1, :] = 0
  vk.assign(v)
  _zero_outputs(m, g, [(ffn, u) for u in range(5)])
  x = np.random.default_rng(3).integers(0, 20, (4, 6)).astype("int32")
  new = remove_units(m, g, [(ffn, u) for u in range(5)])
  assert new.get_layer("ffn1").units == 19
  np.testing.assert_allclose(new(x), m(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("build", [
    lambda: keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35,
                                           weights=None, classes=5),
    pytest.param(lambda: keras.applications.ResNet50(input_shape=(32, 32, 3), weights=None,
                                                     classes=5), marks=SLOW),
], ids=["mobilenet_v2", "resnet50"])
def test_applications_graph_and_exact_removal(build):
  m = build()
  g = ChannelGraph(m)
  prunable = g.prunable_groups
  assert len(prunable) >= 10
  # Kill two units of every prunable group whose readers are 1x1 / valid convs or Dense.
  units = [(k, u) for k, gr in enumerate(g.groups) if gr.blocked is None and gr.size > 4
           for u in (0, 1)]
  _zero_outputs(m, g, units, biases=True)
  new, report = shrink(m)
  assert sum(report["removed"].values()) > 0
  assert new.count_params() < m.count_params()
  x = np.random.default_rng(4).standard_normal((2, 32, 32, 3)).astype("float32")
  np.testing.assert_allclose(new(x), m(x), rtol=1e-3, atol=1e-4)
