"""Never a wrong shrink: splits, slices, Lambdas, dict outputs, Sequential, CSPNet.

Each model is pruned with `scope="structured"`, trained a few steps, then
`strip(pruned, shrink=True)` must compute what `strip(pruned)` computes AND be smaller
where the graph can remove channels; nodes the channel graph does not understand block
their channels (named in the report) instead of passing them through.
"""
import sys
import warnings

import keras
from keras import ops
import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tfprune import structured
from tfprune.structured import slicing

L = keras.layers


def _inputs(model, seed=0, batch=8):
  rng = np.random.default_rng(seed)
  return rng.standard_normal((batch,) + tuple(model.input_shape[1:])).astype("float32")


def _prune_fit(model, steps=2):
  """Structured magnitude at 0.5, a few steps of MSE training on random targets (steps=0:
  the masks are set at once, no training: fast)."""
  pruned = tfprune.prune(model, "magnitude", target_sparsity=0.5, scope="structured")
  if not steps:
    tfprune.get_method(pruned).update_masks(0.5)
    return pruned
  x = _inputs(model, batch=16)
  y = keras.tree.map_structure(lambda t: np.random.default_rng(1).standard_normal(
      (16,) + tuple(t.shape[1:])).astype("float32"),
      model.outputs[0] if isinstance(model, keras.Sequential) else model.output)
  pruned.compile(optimizer="adam", loss="mse")
  pruned.fit(x, y, batch_size=8, epochs=1, steps_per_epoch=steps, verbose=0,
             callbacks=[tfprune.PruningCallback()])
  return pruned


def _max_diff(a, b, x):
  ya, yb = keras.tree.flatten(a(x)), keras.tree.flatten(b(x))
  return max(float(np.max(np.abs(np.asarray(p) - np.asarray(q)))) for p, q in zip(ya, yb))


def _shrink_exact(pruned):
  """(stripped, shrunk, max |difference|), asserting the outputs agree to rounding."""
  stripped = tfprune.strip(pruned)
  shrunk = tfprune.strip(pruned, shrink=True)
  x = _inputs(stripped, seed=3)
  diff = _max_diff(stripped, shrunk, x)
  scale = max(float(np.max(np.abs(np.asarray(y)))) for y in keras.tree.flatten(stripped(x)))
  assert diff <= 1e-4 * max(scale, 1e-3), (diff, scale)
  return stripped, shrunk, diff


def _split_net(sections):
  """The issue's repro: Conv -> ReLU -> ops.split -> Conv on one part -> Concatenate."""
  keras.utils.set_random_seed(0)
  i = keras.Input((8, 8, 3))
  x = L.ReLU()(L.Conv2D(16, 1, name="c0")(i))
  parts = ops.split(x, sections, axis=-1)
  xs, xb = parts[0], parts[-1]
  xb = L.Conv2D(8, 3, padding="same", name="c1")(xb)
  x = L.Concatenate()([xs, xb] + list(parts[1:-1]))
  return keras.Model(i, L.Conv2D(4, 1, name="head")(x))


@pytest.mark.parametrize("sections", [2, [6], [4, 10]])
def test_split_on_the_channel_axis_shrinks_exactly(sections):
  model = _split_net(sections)
  _, shrunk, _ = _shrink_exact(_prune_fit(model))
  assert shrunk.get_layer("c0").filters < 16
  assert shrunk.get_layer("c1").filters < 8
  split = [c for c in shrunk.get_config()["layers"] if c["class_name"] == "Split"][0]
  new = split["config"]["indices_or_sections"]
  assert isinstance(new, list) and new[-1] < 16  # rewritten with the new section sizes


def test_split_on_another_axis_follows_its_input():
  keras.utils.set_random_seed(0)
  i = keras.Input((8, 8, 3))
  x = L.ReLU()(L.Conv2D(8, 1, name="c0")(i))
  top, bottom = ops.split(x, 2, axis=1)
  x = L.Concatenate(axis=1)([L.Conv2D(8, 1, name="c1")(top), bottom])
  model = keras.Model(i, L.Conv2D(4, 1, name="head")(x))
  graph = structured.ChannelGraph(model)
  c0 = next(g for g in graph.groups if "c0" in g.producers)
  assert c0.blocked is None and {"c1", "head"} <= set(c0.layers)
  _, shrunk, _ = _shrink_exact(_prune_fit(model, steps=0))
  assert shrunk.get_layer("c0").filters < 8


def _tf_split(t):
  return tf.split(t, 2, axis=-1)


def test_tf_split_in_a_lambda_is_blocked_not_passed_through():
  keras.utils.set_random_seed(0)
  i = keras.Input((8, 8, 3))
  x = L.ReLU()(L.Conv2D(16, 1, name="c0")(i))
  xs, xb = L.Lambda(_tf_split, name="tf_split")(x)
  xb = L.Conv2D(8, 3, padding="same", name="c1")(xb)
  x = L.Conv2D(6, 1, name="c2")(L.Concatenate()([xs, xb]))
  model = keras.Model(i, L.Conv2D(4, 1, name="head")(L.ReLU()(x)))
  graph = structured.ChannelGraph(model)
  c0 = next(g for g in graph.groups if g.producers == ["c0"])
  assert c0.blocked and "tf_split" in c0.blocked and "Lambda" in c0.blocked
  assert "tf_split" in graph.report()
  _, shrunk, _ = _shrink_exact(_prune_fit(model, steps=0))
  assert shrunk.get_layer("c0").filters == 16  # blocked
  assert shrunk.get_layer("c2").filters < 6  # the rest of the model still shrinks


def test_channel_slices_block_and_spatial_slices_follow():
  keras.utils.set_random_seed(0)
  i = keras.Input((8, 8, 3))
  a = L.ReLU()(L.Conv2D(8, 1, name="sliced")(i))
  b = L.ReLU()(L.Conv2D(8, 1, name="sliced_op")(i))
  c = L.ReLU()(L.Conv2D(8, 1, name="spatial")(i))
  x = L.Concatenate()([L.Conv2D(4, 1, name="r1")(a[..., :5]),
                       L.Conv2D(4, 1, name="r2")(ops.slice(b, [0, 0, 0, 2], [-1, 8, 8, 6])),
                       L.Conv2D(4, 1, name="r3")(L.ZeroPadding2D(((1, 0), (0, 0)))(
                           c[:, 1:]))])
  model = keras.Model(i, L.Conv2D(2, 1, name="head")(x))
  graph = structured.ChannelGraph(model)
  by_producer = {g.producers[0]: g for g in graph.groups if len(g.producers) == 1}
  assert "slices the channel axis" in by_producer["sliced"].blocked
  assert "slices the channel axis" in by_producer["sliced_op"].blocked
  assert by_producer["spatial"].blocked is None
  _, shrunk, _ = _shrink_exact(_prune_fit(model, steps=0))
  assert shrunk.get_layer("sliced").filters == 8
  assert shrunk.get_layer("sliced_op").filters == 8
  assert shrunk.get_layer("spatial").filters < 8


def test_unknown_ops_and_keyword_tensors_block_their_channels():
  """ops.flip reverses the channels: passing them through would remove the wrong ones."""

  class Mix(L.Layer):

    def call(self, x, other=None):
      return x + ops.mean(other, axis=-1, keepdims=True)

  keras.utils.set_random_seed(0)
  i = keras.Input((8, 8, 3))
  a = L.ReLU()(L.Conv2D(8, 1, name="flipped")(i))
  b = L.ReLU()(L.Conv2D(8, 1, name="keyword")(i))
  c = L.ReLU()(L.Conv2D(8, 1, name="plain")(i))
  x = L.Add()([L.Conv2D(4, 1, name="r1")(ops.flip(a, axis=-1)),
               Mix(name="mix")(L.Conv2D(4, 1, name="r2")(c), other=b)])
  model = keras.Model(i, L.Conv2D(2, 1, name="head")(x))
  graph = structured.ChannelGraph(model)
  by_producer = {g.producers[0]: g for g in graph.groups if len(g.producers) == 1}
  assert "Flip" in by_producer["flipped"].blocked
  assert "mix" in by_producer["keyword"].blocked
  assert by_producer["plain"].blocked is None
  _, shrunk, _ = _shrink_exact(_prune_fit(model, steps=0))
  assert shrunk.get_layer("flipped").filters == 8
  assert shrunk.get_layer("keyword").filters == 8
  assert shrunk.get_layer("plain").filters < 8


def test_dict_outputs():
  keras.utils.set_random_seed(0)
  i = keras.Input((12,))
  h = L.Dense(16, activation="relu", name="trunk")(i)
  h = L.Dense(16, activation="relu", name="mid")(h)
  model = keras.Model(i, {"score": L.Dense(1, name="score")(h),
                          "logits": L.Dense(3, name="logits")(h)})
  graph = structured.ChannelGraph(model)  # was KeyError: 0
  assert any(g.blocked is None for g in graph.groups)
  assert "model output" in next(g for g in graph.groups if "score" in g.producers).blocked
  _, shrunk, _ = _shrink_exact(_prune_fit(model, steps=0))
  assert shrunk.get_layer("trunk").units < 16 and shrunk.get_layer("mid").units < 16
  assert set(shrunk(_inputs(model))) == {"score", "logits"}


def test_dict_and_integer_inputs_are_probed_by_name():
  keras.utils.set_random_seed(0)
  ids = keras.Input((5,), dtype="int32", name="token_ids")
  feat = keras.Input((3,), name="features")
  h = L.GlobalAveragePooling1D()(L.Embedding(11, 8, name="embed")(ids))
  h = L.Concatenate()([h, L.Dense(8, activation="relu", name="feat_fc")(feat)])
  h = L.Dense(12, activation="relu", name="fc")(h)
  model = keras.Model({"token_ids": ids, "features": feat}, L.Dense(2, name="out")(h))
  kernel = model.get_layer("fc").kernel.numpy()
  kernel[:, :5] = 0.0  # five dead units (relu of a zero bias: exact zeros)
  model.get_layer("fc").kernel.assign(kernel)
  shrunk = tfprune.shrink_model(model)
  assert shrunk.get_layer("fc").units == 7
  rng = np.random.default_rng(0)
  x = {"features": rng.standard_normal((4, 3)).astype("float32"),
       "token_ids": rng.integers(0, 11, (4, 5)).astype("int32")}
  np.testing.assert_allclose(shrunk(x), model(x), atol=1e-5)


def test_sequential_without_warnings_and_its_shrink_report():
  keras.utils.set_random_seed(0)
  model = keras.Sequential([keras.Input((6, 6, 3)), L.Conv2D(8, 3, name="c1"), L.ReLU(),
                            L.Conv2D(8, 3, name="c2"), L.Flatten(), L.Dense(3, name="out")])
  pruned = _prune_fit(model)
  with warnings.catch_warnings():
    warnings.simplefilter("error", UserWarning)
    stripped, shrunk, _ = _shrink_exact(pruned)
  assert shrunk.get_layer("c1").filters < 8
  rows = structured.shrink_report(stripped, shrunk)  # was AttributeError: operations
  total = rows[-1]
  assert total["layer"] == "TOTAL" and total["macs_after"] < total["macs_before"]
  assert [r["layer"] for r in rows[:-1]] == ["c1", "c2", "out"]


def test_cspnet_backbone_structured_shrinks_exactly():
  keras_hub = pytest.importorskip("keras_hub")
  keras.utils.set_random_seed(0)
  model = keras_hub.models.CSPNetBackbone(
      stem_filters=8, stem_kernel_size=3, stem_strides=1, stackwise_depth=[1, 1],
      stackwise_strides=[1, 2], stackwise_num_filters=[8, 16], block_type="dark_block",
      stage_type="csp", expand_ratio=[2.0], bottle_ratio=[0.5], block_ratio=[1.0],
      image_shape=(8, 8, 3))
  stripped, shrunk, _ = _shrink_exact(_prune_fit(model, steps=0))
  assert shrunk.count_params() < 0.8 * stripped.count_params()
  assert shrunk.get_layer("stage_0_csp_conv_exp").filters < 16  # the conv before a split


def test_one_mac_count_includes_depthwise_and_separable():
  from tfprune.shrink import count_params_and_macs  # pylint: disable=g-import-not-at-top
  model = keras.Sequential([keras.Input((6, 6, 4)),
                            L.DepthwiseConv2D(3, padding="same", name="dw"),
                            L.SeparableConv2D(8, 3, name="sep")])
  params, macs = count_params_and_macs(model)
  assert params == model.count_params()
  # depthwise 6*6 positions * 9 * 4; separable 4*4 positions * (9*4 + 4*8)
  assert macs == 36 * 9 * 4 + 16 * (9 * 4 + 4 * 8)
  assert macs == sum(m for _, m in structured.layer_costs(model).values())


def test_a_wrong_shrink_raises_naming_the_layer(monkeypatch):
  """The verification catches a slicing bug (here: an injected bias error in 'c1')."""
  model = _split_net(2)
  pruned = _prune_fit(model)
  dense_like = slicing._dense_like  # pylint: disable=protected-access

  def broken(config, w, cut, units_key):
    dense_like(config, w, cut, units_key)
    if config.get("name") == "c1":
      w["bias"] = w["bias"] + 1.0

  monkeypatch.setattr(slicing, "_dense_like", broken)
  with pytest.raises(structured.ShrinkMismatchError, match="'c1'.*Channels removed"):
    tfprune.strip(pruned, shrink=True)


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))


def test_nested_models_are_inlined_and_shrink_exactly():
  """A classifier around a nested Functional feature extractor (keras_hub task models, a
  head on a keras.applications net): the channel graph sees through the nested model."""
  keras.utils.set_random_seed(0)
  i = keras.Input((8, 8, 3))
  inner = keras.Model(i, L.Conv2D(8, 3, padding="same", activation="relu", name="c1")(
      L.Conv2D(16, 1, activation="relu", name="c0")(i)), name="features")
  o = keras.Input((8, 8, 3))
  head = L.Dense(4, name="head")(L.GlobalAveragePooling2D()(inner(o)))
  model = keras.Model(o, head)
  graph = structured.ChannelGraph(model)
  assert sorted(g.producers[0] for g in graph.prunable_groups) == ["c0", "c1"]
  _, shrunk, _ = _shrink_exact(_prune_fit(model))
  assert shrunk.get_layer("c0").filters < 16 and shrunk.get_layer("c1").filters < 8
  assert shrunk.count_params() < model.count_params()
