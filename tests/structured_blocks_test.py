"""Structured units inside custom blocks (tfprune/structured/blocks.py, issue 25 item 4).

keras_hub backbones built from their constructors at tiny sizes (random weights, no
presets): their transformer blocks are single graph nodes, and the FFN units and
attention heads inside them are removable groups; what cannot be traced is blocked with
the reason.
"""
# bazel-size: medium
import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # pylint: disable=g-import-not-at-top
import numpy as np
import pytest
import tensorflow as tf

import tfprune  # pylint: disable=g-import-not-at-top
from tfprune.structured import blocks
from tfprune.structured import ChannelGraph
from tfprune.structured import costs
from tfprune.structured import members
from tfprune.structured import selection
from tfprune.structured import slicing

keras_hub = pytest.importorskip("keras_hub")

SEQ = 8


def _tokens(model, seed, batch=4):
  rng = np.random.default_rng(seed)
  x = {"token_ids": rng.integers(0, 64, (batch, SEQ)).astype("int32"),
       "padding_mask": np.ones((batch, SEQ), "int32")}
  if "segment_ids" in [t.name for t in keras.tree.flatten(model.input)]:
    x["segment_ids"] = rng.integers(0, 2, (batch, SEQ)).astype("int32")
  return x


def _outputs(model, x):
  return [np.asarray(o, np.float64) for o in keras.tree.flatten(model(x, training=False))]


def _assert_same(a_model, b_model, seeds=(1, 2)):
  for seed in seeds:
    x = _tokens(a_model, seed)
    for a, b in zip(_outputs(a_model, x), _outputs(b_model, x)):
      assert a.shape == b.shape
      scale = np.max(np.abs(a))
      assert scale > 1e-3  # a live output
      np.testing.assert_allclose(b, a, atol=1e-5 * scale)


def _prune_fit(model, targets):
  """magnitude, scope="structured", 0.5; two fit steps with the callback."""
  pruned = tfprune.prune(model, "magnitude", target_sparsity=0.5, scope="structured")
  pruned.compile("adam", "mse", run_eagerly=True)  # (tracing fit costs ~10 s here)
  x = _tokens(model, 0)
  pruned.fit(x, targets, epochs=2, batch_size=4, verbose=0,
             callbacks=[tfprune.PruningCallback()])
  return pruned


def _block_groups(graph):
  return {m.role: g for g, group in enumerate(graph.groups)
          for m in group.units[0] if blocks.is_block_role(m.role)}


def test_bert_ffn_units_removed_heads_masked():
  model = keras_hub.models.BertBackbone(
      vocabulary_size=64, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32,
      max_sequence_length=16)
  report = ChannelGraph(keras.Model(model.input, model.output)).report()
  assert "32 FFN units (removable)" in report
  assert "2 attention heads (masked, not shrunk" in report
  pruned = _prune_fit(model, {"sequence_output": np.zeros((4, SEQ, 16), "float32"),
                              "pooled_output": np.zeros((4, 16), "float32")})
  method = tfprune.get_method(pruned)
  graph = method.channels.graph
  roles = _block_groups(graph)
  ffn = roles["block:ffn"]
  removed_ffn = sorted(u for g, u in method.channels.units if g == ffn)
  assert removed_ffn  # the schedule removed FFN units
  # The masks zero the removed units' up columns and down rows in the pruned model.
  block = pruned.get_layer("prune_transformer_layer_0").layer
  up = block._feedforward_intermediate_dense.kernel.numpy()  # pylint: disable=protected-access
  down = block._feedforward_output_dense.kernel.numpy()  # pylint: disable=protected-access
  assert not np.any(up[:, removed_ffn]) and not np.any(down[removed_ffn])
  kept = [u for u in range(32) if u not in removed_ffn]
  assert np.all(np.any(down[kept], axis=1))
  masked = tfprune.strip(pruned)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # a masked head, if chosen, is reported
    small = tfprune.strip(pruned, shrink=True)
  inner = small.get_layer("transformer_layer_0")
  assert inner.intermediate_dim == 32 - len(removed_ffn)
  assert small.count_params() == masked.count_params() - len(removed_ffn) * (16 + 1 + 16)
  _assert_same(masked, small)


def test_bert_masked_heads_are_reported_by_shrink():
  model = keras_hub.models.BertBackbone(
      vocabulary_size=64, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32,
      max_sequence_length=16)
  plain = keras.Model(model.input, model.output)
  graph = ChannelGraph(plain)
  roles = _block_groups(graph)
  heads, ffn = roles["block:heads:self_attention_layer"], roles["block:ffn"]
  units = [(heads, 0), (ffn, 3), (ffn, 7)]
  for (layer, name), mask in selection.unit_masks(plain, graph, units).items():
    variable = members.weights_by_name(plain.get_layer(layer))[name]
    variable.assign(variable.numpy() * mask)
  with pytest.warns(UserWarning, match="attention heads of 'transformer_layer_0' stay "
                                       "zeroed .masked. but unshrunk"):
    small = tfprune.shrink_model(plain)
  assert small.get_layer("transformer_layer_0").intermediate_dim == 30
  _assert_same(plain, small)
  # A head that is still read is alive: never removed, never "kept" as masked.
  problem = slicing.unit_problem(plain, graph, heads, 1, {})
  assert "still alive" in problem


@pytest.mark.parametrize("query_heads,kv_heads", [(2, 1), (4, 2)])
def test_gemma_ffn_and_grouped_heads(query_heads, kv_heads):
  model = keras_hub.models.GemmaBackbone(
      vocabulary_size=64, num_layers=1, num_query_heads=query_heads,
      num_key_value_heads=kv_heads, hidden_dim=16, intermediate_dim=32, head_dim=8)
  plain = keras.Model(model.input, model.output)
  graph = ChannelGraph(plain)
  roles = _block_groups(graph)
  head_role = next(r for r in roles if "heads" in r)
  # Multi-query: a unit is one query head; else one key/value head with its group.
  assert graph.groups[roles[head_role]].size == (query_heads if kv_heads == 1 else
                                                 kv_heads)
  assert graph.groups[roles["block:ffn"]].size == 16  # Gemma: intermediate_dim // 2
  # Remove the FIRST head unit and two FFN units exactly (the head-to-group mapping).
  units = [(roles[head_role], 0), (roles["block:ffn"], 0), (roles["block:ffn"], 5)]
  for (layer, name), mask in selection.unit_masks(plain, graph, units).items():
    variable = members.weights_by_name(plain.get_layer(layer))[name]
    variable.assign(variable.numpy() * mask)
  small = slicing.remove_units(plain, graph, units)
  block = small.get_layer("decoder_block_0")
  group = query_heads // kv_heads
  assert block.num_query_heads == query_heads - (1 if kv_heads == 1 else group)
  assert block.num_key_value_heads == (1 if kv_heads == 1 else kv_heads - 1)
  assert block.intermediate_dim == 28
  assert small.count_params() < plain.count_params()
  _assert_same(plain, small)


def test_gemma_structured_prune_custom_loop_shrink():
  model = keras_hub.models.GemmaBackbone(
      vocabulary_size=64, num_layers=1, num_query_heads=2, num_key_value_heads=1,
      hidden_dim=16, intermediate_dim=32, head_dim=8)
  pruned = tfprune.prune(model, "magnitude", target_sparsity=0.5, scope="structured")
  method = tfprune.get_method(pruned)
  optimizer = keras.optimizers.Adam(1e-3)
  method.on_train_begin(optimizer=optimizer)
  x = _tokens(model, 0)
  for _ in range(2):  # a custom training loop (eager)
    method.on_train_step()
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(tf.square(pruned(x, training=True)))
    variables = pruned.trainable_variables
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
  method.on_train_end()
  units = method.channels.units
  assert len(units) == 9  # half of 16 FFN units + 2 query heads
  masked = tfprune.strip(pruned)
  small = tfprune.strip(pruned, shrink=True)
  removed = len(units)
  assert small.count_params() < masked.count_params()
  block = small.get_layer("decoder_block_0")
  assert block.intermediate_dim // 2 + block.num_query_heads == 18 - removed
  _assert_same(masked, small)


class TwoDense(keras.layers.Layer):
  """A guide-style custom block whose sublayers have no recognised names: traced."""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.a = keras.layers.Dense(8, activation="relu")
    self.b = keras.layers.Dense(4)

  def call(self, x):
    return self.b(self.a(x)) + x[..., :4]


class OwnWeight(keras.layers.Layer):
  """A custom layer that multiplies a sublayer's output by its own variable: the trace
  cannot slice the variable, so nothing inside is removable."""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.a = keras.layers.Dense(8, activation="relu")

  def build(self, input_shape):
    self.a.build(input_shape)
    self.w = self.add_weight(shape=(8, 4), name="w")

  def call(self, x):
    return keras.ops.matmul(self.a(x), self.w)


class Ffn(keras.layers.Layer):
  """An FFN block (sublayers made in build(), as keras_hub does) whose config cannot say
  how wide it is."""

  def build(self, input_shape):
    self._feedforward_intermediate_dense = keras.layers.Dense(8, activation="relu")
    self._feedforward_intermediate_dense.build(input_shape)
    self._feedforward_output_dense = keras.layers.Dense(4)
    self._feedforward_output_dense.build(tuple(input_shape[:-1]) + (8,))

  def call(self, x):
    return self._feedforward_output_dense(self._feedforward_intermediate_dense(x))


class FfnInit(Ffn):
  """The same FFN with its sublayers made in __init__ (the Keras guides' style): when
  tfprune clones it, their variables are no longer under the block's path."""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self._feedforward_intermediate_dense = keras.layers.Dense(8, activation="relu")
    self._feedforward_output_dense = keras.layers.Dense(4)

  def build(self, input_shape):
    self._feedforward_intermediate_dense.build(input_shape)
    self._feedforward_output_dense.build(tuple(input_shape[:-1]) + (8,))


def test_untraceable_block_is_blocked_with_its_reason():
  inp = keras.Input((6,))
  x = keras.layers.Dense(6, name="stem")(inp)
  x = OwnWeight(name="opaque")(x)
  x = TwoDense(name="traced")(x)
  x = Ffn(name="ffn_block")(x)
  model = keras.Model(inp, keras.layers.Dense(2, name="head")(x))
  graph = ChannelGraph(model)
  report = graph.report()
  assert ("opaque: custom layer OwnWeight: no FFN (intermediate -> output Dense) or "
          "attention sublayer that tfprune can trace: its traced sublayers have no "
          "removable group; sublayers a (Dense) are not recognised") in report
  assert "traced: custom block TwoDense: its hidden channels are not traced; inside it: " \
         "8 units of" in report
  assert "8 FFN units (masked, not shrunk: its config has no intermediate_dim / " in report
  stem = next(g for g in graph.groups if "stem" in g.producers)
  assert stem.blocked and "OwnWeight" in stem.blocked
  for name in ("traced", "ffn_block"):
    group = next(g for g in graph.groups if g.layers == [name])
    assert group.blocked is None and group.size == 8


def test_block_units_count_in_the_macs_budget():
  inp = keras.Input((SEQ, 16))
  x = keras_hub.layers.TransformerEncoder(intermediate_dim=32, num_heads=2,
                                          name="encoder")(inp)
  model = keras.Model(inp, keras.layers.Dense(2, name="head")(x))
  graph = ChannelGraph(model)
  macs = costs.MacModel(model, graph)
  full = macs.total()
  # q, k, v, output (16 x 16 each) and the FFN (16 x 32 twice) per token, plus the head.
  assert full == SEQ * (4 * 16 * 16 + 2 * 16 * 32) + SEQ * 16 * 2
  ffn = _block_groups(graph)["block:ffn"]
  macs.apply(graph.groups[ffn].units[0])
  assert macs.total() == full - SEQ * (16 + 16)
  masks, units = selection.structured_masks(model, target=0.8, graph=graph)
  assert units and masks
  after = costs.MacModel(model, graph)
  for g, u in units:
    after.apply(graph.groups[g].units[u])
  assert after.total() <= 0.8 * full


@pytest.mark.parametrize("block", [Ffn, FfnInit, TwoDense])
def test_masked_only_units_shrink_with_a_warning_not_an_error(block):
  inp = keras.Input((6,))
  x = keras.layers.Dense(6, name="stem")(inp)
  x = block(name="ffn_block")(x)
  model = keras.Model(inp, keras.layers.Dense(2, name="head")(x))
  pruned = tfprune.prune(model, "magnitude", target_sparsity=0.5, scope="structured")
  method = tfprune.get_method(pruned)
  method.on_train_begin(optimizer=keras.optimizers.SGD())
  method.on_train_step()
  assert len(method.channels.units) == 4  # half of the block's 8 FFN units
  masked = tfprune.strip(pruned)
  with pytest.warns(UserWarning, match="units of .* of 'ffn_block' stay zeroed"
                    if block is TwoDense else "FFN units of 'ffn_block' stay zeroed"):
    small = tfprune.strip(pruned, shrink=True)
  inner = small.get_layer("ffn_block")
  down = (inner.b if block is TwoDense else
          inner._feedforward_output_dense).kernel.numpy()  # pylint: disable=protected-access
  assert down.shape == (8, 4) and int(np.sum(~np.any(down, axis=1))) == 4
  x = np.random.default_rng(0).standard_normal((4, 6)).astype("float32")
  np.testing.assert_allclose(small(x), masked(x), atol=1e-6)


class ListEncoder(keras.layers.Layer):
  """Blocks held in a Python list (keras_hub's ViTEncoder, the guides' `self.blocks`)."""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.blocks = [Residual(name=f"block_{i}") for i in range(2)]

  def call(self, x):
    for block in self.blocks:
      x = block(x)
    return x


class Residual(keras.layers.Layer):
  """An FFN block whose config sets its width: shrinkable alone, not inside the list."""

  def __init__(self, intermediate_dim=8, **kwargs):
    super().__init__(**kwargs)
    self.intermediate_dim = intermediate_dim

  def get_config(self):
    return {**super().get_config(), "intermediate_dim": self.intermediate_dim}

  def build(self, input_shape):
    self._feedforward_intermediate_dense = keras.layers.Dense(self.intermediate_dim,
                                                              activation="relu")
    self._feedforward_intermediate_dense.build(input_shape)
    self._feedforward_output_dense = keras.layers.Dense(int(input_shape[-1]))
    self._feedforward_output_dense.build(tuple(input_shape[:-1]) + (8,))

  def call(self, x):
    return x + self._feedforward_output_dense(self._feedforward_intermediate_dense(x))


def test_blocks_held_in_a_list_give_units_per_block_masked():
  inp = keras.Input((6,))
  x = keras.layers.Dense(6, name="stem")(inp)
  x = ListEncoder(name="encoder")(x)
  model = keras.Model(inp, keras.layers.Dense(2, name="head")(x))
  graph = ChannelGraph(model)
  roles = sorted(_block_groups(graph))
  assert roles == ["block:blocks.0/ffn", "block:blocks.1/ffn"], roles
  for role in roles:
    assert graph.groups[_block_groups(graph)[role]].size == 8
  assert "ListEncoder builds every block of its 'blocks' (2) from one config" in \
      graph.report()
  pruned = tfprune.prune(model, "magnitude", target_sparsity=0.5, scope="structured")
  method = tfprune.get_method(pruned)
  method.on_train_begin(optimizer=keras.optimizers.SGD())
  method.on_train_step()
  assert len(method.channels.units) == 8  # half of 2 x 8 FFN units
  masked = tfprune.strip(pruned)
  with pytest.warns(UserWarning, match="FFN units of block_0 of 'encoder' stay zeroed"):
    small = tfprune.strip(pruned, shrink=True)
  x = np.random.default_rng(0).standard_normal((4, 6)).astype("float32")
  np.testing.assert_allclose(small(x), masked(x), atol=1e-6)
  kernels = [v.numpy() for v in masked.get_layer("encoder").weights
             if tuple(v.shape) == (8, 6)]  # the two down projections
  assert len(kernels) == 2
  assert sum(int(np.sum(~np.any(k, axis=1))) for k in kernels) == 8


def test_vit_encoder_blocks_heads_and_ffn_units():
  model = keras_hub.models.ViTBackbone(
      image_shape=(16, 16, 3), patch_size=8, num_layers=2, num_heads=2, hidden_dim=8,
      mlp_dim=16)
  graph = ChannelGraph(keras.Model(model.input, model.output))
  roles = sorted(_block_groups(graph))
  assert roles == ["block:encoder_layers.0/ffn:mlp", "block:encoder_layers.0/heads:mha",
                   "block:encoder_layers.1/ffn:mlp", "block:encoder_layers.1/heads:mha"]
  pruned = tfprune.prune(model, "magnitude", target_sparsity=0.5, scope="structured")
  method = tfprune.get_method(pruned)
  method.on_train_begin(optimizer=keras.optimizers.SGD())
  method.on_train_step()
  masked = tfprune.strip(pruned)
  with pytest.warns(UserWarning, match="stay zeroed"):
    small = tfprune.strip(pruned, shrink=True)
  x = np.random.default_rng(0).standard_normal((2, 16, 16, 3)).astype("float32")
  xb = np.random.default_rng(1).standard_normal((2, 16, 16, 3)).astype("float32")
  np.testing.assert_allclose(small(x), masked(x), atol=1e-5)
  assert np.max(np.abs(masked(x) - masked(xb))) > 1e-3  # alive
  downs = [v.numpy() for v in masked.get_layer("vit_encoder").weights
           if v.path.endswith("mlp/dense_2/kernel")]
  assert len(downs) == 2
  assert sum(int(np.sum(~np.any(k, axis=1))) for k in downs) > 0  # FFN units removed
