"""prune / strip on every kind of Keras 3 graph: op nodes, masks, nested models, shared
layers, wrappers (TimeDistributed, Bidirectional), custom layers, several inputs/outputs,
and the refusal of non-finite weights.

Each model is checked the same way (`_check`): the pruned copy with all masks 1 computes
exactly what the original computes, with the same graph (op nodes included); after
`update_masks` the stripped model computes exactly what the pruned one computes; both
round-trip through `.keras`.
"""
import collections
import os
import sys

import keras
from keras import ops
import numpy as np
import pytest

import tfprune
from tfprune import registry
from conftest import SLOW  # pylint: disable=g-bad-import-order

L = keras.layers
RNG = np.random.default_rng(0)


def _flat(outputs):
  if isinstance(outputs, dict):
    return [np.asarray(outputs[k]) for k in sorted(outputs)]
  if isinstance(outputs, (list, tuple)):
    return [np.asarray(o) for o in outputs]
  return [np.asarray(outputs)]


def _assert_same(a, b, atol=1e-6):
  a, b = _flat(a), _flat(b)
  assert len(a) == len(b)
  for u, v in zip(a, b):
    np.testing.assert_allclose(u, v, rtol=1e-5, atol=atol)


def _graph(model):
  """Operation types of a model, nested models entered, wrappers unwrapped."""
  types = collections.Counter()
  for op in getattr(model, "operations", model.layers):
    if isinstance(op, keras.Model):
      types.update(_graph(op))
      types[type(op).__name__] += 1
    elif isinstance(op, tfprune.PruneWrapper):
      types[type(op.layer).__name__] += 1
    else:
      types[type(op).__name__] += 1
  return types


def _check(model, x, tmp_path, sparsity=0.5, method="magnitude"):
  """Prune (masks 1) == original; strip == pruned; both round-trip. Returns both."""
  before = [w.numpy().copy() for w in model.weights]
  reference = model(x)
  pruned = tfprune.prune(model, method, target_sparsity=sparsity)
  assert _graph(pruned) == _graph(model)
  _assert_same(pruned(x), reference)
  tfprune.get_method(pruned).update_masks(sparsity)
  for row in tfprune.sparsity_report(pruned, print_table=False):
    assert row["sparsity"] == pytest.approx(sparsity, abs=0.5 / row["size"] + 1e-9), row
  for w, b in zip(model.weights, before):  # the original is untouched
    np.testing.assert_array_equal(w.numpy(), b)
  stripped = tfprune.strip(pruned)
  assert not tfprune.methods.base.find_wrappers(stripped)
  assert _graph(stripped) == _graph(model)
  _assert_same(stripped(x), pruned(x), atol=1e-5)
  for m, name in ((pruned, "pruned.keras"), (stripped, "stripped.keras")):
    path = os.path.join(tmp_path, name)
    m.save(path)
    _assert_same(keras.models.load_model(path)(x), m(x))
  return pruned, stripped


def test_raw_op_node_r1(tmp_path):
  i = keras.Input((4,))
  o = L.Dense(2, name="out")(L.Dense(4, name="fc")(i) + 3.0)
  model = keras.Model(i, o)
  x = RNG.normal(size=(3, 4)).astype("float32")
  pruned, stripped = _check(model, x, tmp_path)
  assert _graph(pruned)["Add"] == 1 and _graph(stripped)["Add"] == 1
  assert [w.layer.name for w in tfprune.get_method(pruned).wrappers] == ["fc", "out"]
  _assert_same(tfprune.strip(pruned, shrink=True)(x), stripped(x), atol=1e-5)


def test_ops_inside_graph_several_inputs_and_outputs_train(tmp_path):
  a = keras.Input((6,), name="a")
  b = keras.Input((3,), name="b")
  h = L.Dense(8, name="fc_a")(a)
  h = ops.concatenate([ops.tanh(h), b * 2.0], axis=-1)
  h = L.Dense(8, activation="relu", name="fc_h")(h)
  head = L.Dense(4, name="head")(h[:, :5] - ops.mean(h, axis=-1, keepdims=True)[:, :1])
  aux = L.Dense(1, name="aux")(ops.reshape(h, (-1, 2, 4))[:, 1])
  model = keras.Model({"a": a, "b": b}, {"head": head, "aux": aux})
  x = {"a": RNG.normal(size=(16, 6)).astype("float32"),
       "b": RNG.normal(size=(16, 3)).astype("float32")}
  pruned, _ = _check(model, x, tmp_path)
  # One training step through the ops, with the callback, on both outputs.
  pruned.compile(optimizer="sgd", loss={"head": "mse", "aux": "mse"})
  y = {"head": np.zeros((16, 4), "float32"), "aux": np.zeros((16, 1), "float32")}
  history = pruned.fit(x, y, batch_size=8, epochs=1, verbose=0,
                       callbacks=[tfprune.PruningCallback()])
  assert np.isfinite(history.history["loss"][0])


def _train_step(pruned, x, y):
  """One eager training step with the pruning callback (tracing a big graph is slow)."""
  pruned.compile(optimizer="sgd", run_eagerly=True,
                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  history = pruned.fit(x, y, epochs=1, batch_size=len(y), verbose=0,
                       callbacks=[tfprune.PruningCallback()])
  assert np.isfinite(history.history["loss"][0])


# MobileNetV3Small's prune / fit / strip / save / load / export runs in
# tests/conformance_test.py; both sizes run here with TFPRUNE_SLOW_TESTS=1.
@pytest.mark.parametrize("ctor", [pytest.param(keras.applications.MobileNetV3Small,
                                               marks=SLOW),
                                  pytest.param(keras.applications.MobileNetV3Large,
                                               marks=SLOW)])
def test_mobilenet_v3_prunes_trains_strips_round_trips(ctor, tmp_path):
  # Hard-swish is `x * relu6(x + 3) / 6`: raw op nodes all over the graph (R1).
  model = ctor(input_shape=(32, 32, 3), weights=None, classes=4, alpha=0.75)
  assert _graph(model)["Add"] > 0 and _graph(model)["Rescaling"] == 1
  x = RNG.uniform(0, 255, size=(4, 32, 32, 3)).astype("float32")
  pruned, _ = _check(model, x, tmp_path)
  assert len(tfprune.get_method(pruned).wrappers) == sum(
      registry.is_prunable(l) for l in model.layers)
  _train_step(pruned, x, np.arange(4) % 4)
  stripped = tfprune.strip(pruned)
  _assert_same(stripped(x), pruned(x), atol=1e-4)
  for row in tfprune.sparsity_report(stripped, print_table=False):
    assert row["sparsity"] >= 0.5 - 1 / row["size"] - 1e-9, row


def _padded_tokens(n=6, length=7, used=4):
  tokens = RNG.integers(1, 30, size=(n, used))
  post = np.zeros((n, length), "int32")
  post[:, :used] = tokens
  pre = np.zeros((n, length), "int32")
  pre[:, length - used:] = tokens
  return post, pre


def _text_model(kind, mask_zero=True):
  i = keras.Input((7,), dtype="int32", name="tokens")
  e = L.Embedding(30, 8, mask_zero=mask_zero, name="embed")(i)
  if kind == "lstm":
    h = L.LSTM(6, name="lstm")(e)
  else:
    h = L.Bidirectional(L.GRU(5, name="gru"), name="bigru")(e)
  return keras.Model(i, L.Dense(3, name="logits")(h))


@pytest.mark.parametrize("kind", ["lstm", "bigru"])
def test_masked_recurrent_text_models_r2(kind, tmp_path):
  model = _text_model(kind)
  post, pre = _padded_tokens()
  # The mask matters: pre- and post-padding give the same outputs only when the
  # recurrent layer skips the padded steps.
  _assert_same(model(pre), model(post), atol=1e-5)
  unmasked = _text_model(kind, mask_zero=False)
  unmasked.set_weights(model.get_weights())
  assert not np.allclose(unmasked(pre), unmasked(post), atol=1e-4)
  pruned, stripped = _check(model, post, tmp_path)
  method = tfprune.get_method(pruned)
  weights = {w.path for w in method.weights}
  assert any(p.endswith("embeddings") for p in weights)
  assert sum(p.endswith("recurrent_kernel") for p in weights) == (1 if kind == "lstm" else 2)
  # The mask still propagates through the wrapped Embedding and recurrent layer ...
  _assert_same(pruned(pre), pruned(post), atol=1e-5)
  # ... and through the stripped model (also when shrunk).
  _assert_same(stripped(pre), stripped(post), atol=1e-5)
  shrunk = tfprune.strip(pruned, shrink=True)
  _assert_same(shrunk(pre), shrunk(post), atol=1e-5)
  _assert_same(shrunk(post), stripped(post), atol=1e-5)
  x = np.concatenate([post, pre])
  if kind == "lstm":  # the recipe (compiled, traced train step) ...
    history = method.fit(pruned, x, np.arange(len(x)) % 3, epochs=1, batch_size=6,
                         verbose=0)
    assert np.isfinite(history["loss"][0])
  else:  # ... and an eager step
    _train_step(pruned, x, np.arange(len(x)) % 3)
  after = tfprune.strip(pruned)
  _assert_same(after(pre), after(post), atol=1e-5)
  _assert_same(after(x), pruned(x), atol=1e-5)


def test_masked_sequential_keeps_the_mask(tmp_path):
  model = keras.Sequential([keras.Input((7,), dtype="int32"),
                            L.Embedding(30, 8, mask_zero=True), L.LSTM(6), L.Dense(3)])
  post, pre = _padded_tokens()
  pruned, stripped = _check(model, post, tmp_path)
  _assert_same(pruned(pre), pruned(post), atol=1e-5)
  _assert_same(stripped(pre), stripped(post), atol=1e-5)


def test_nested_functional_sequential_and_shared_layers(tmp_path):
  inner_in = keras.Input((6,))
  inner = keras.Model(inner_in, L.Dense(6, name="inner_fc")(inner_in) * 0.5, name="inner")
  seq = keras.Sequential([keras.Input((6,)), L.Dense(6, name="seq_fc")], name="seq")
  i = keras.Input((6,))
  shared = L.Dense(6, name="shared")
  a = shared(i)
  b = shared(L.Dense(6, name="branch")(i))
  h = inner(a) + inner(b)  # a nested model called twice
  out = L.Dense(2, name="head")(ops.concatenate([seq(h), h], axis=-1))
  model = keras.Model(i, out)
  x = RNG.normal(size=(5, 6)).astype("float32")
  pruned, _ = _check(model, x, tmp_path)
  names = [w.layer.name for w in tfprune.get_method(pruned).wrappers]
  assert sorted(names) == ["branch", "head", "inner_fc", "seq_fc", "shared"]


def test_wrappers_prune_the_inner_layers_kernels(tmp_path):
  i = keras.Input((5, 4))
  h = L.TimeDistributed(L.Dense(6, name="td_fc"), name="td")(i)
  h = L.Bidirectional(L.LSTM(3, name="lstm"), name="bilstm")(h)
  model = keras.Model(i, L.Dense(2, name="out")(h))
  x = RNG.normal(size=(3, 5, 4)).astype("float32")
  pruned, stripped = _check(model, x, tmp_path)
  wrappers = {w.layer.name: w for w in tfprune.get_method(pruned).wrappers}
  td, bilstm = wrappers["td"], wrappers["bilstm"]
  assert td.prunable_weights == [td.layer.layer.kernel]
  cells = (bilstm.layer.forward_layer.cell, bilstm.layer.backward_layer.cell)
  assert [id(w) for w in bilstm.prunable_weights] == [
      id(v) for c in cells for v in (c.kernel, c.recurrent_kernel)]
  kernel = stripped.get_layer("td").layer.kernel.numpy()
  assert np.sum(kernel == 0) == kernel.size // 2
  original = model.get_layer("bilstm")
  for cell, before in ((stripped.get_layer("bilstm").forward_layer.cell,
                        original.forward_layer.cell),
                       (stripped.get_layer("bilstm").backward_layer.cell,
                        original.backward_layer.cell)):
    for name in ("kernel", "recurrent_kernel"):
      value = getattr(cell, name).numpy()
      assert np.sum(value == 0) == value.size // 2, name
    np.testing.assert_array_equal(cell.bias.numpy(), before.bias.numpy())  # not pruned


@keras.saving.register_keras_serializable(package="tfprune_graph_test")
class _Block(L.Layer):
  """A custom layer with two Dense layers and a skip inside."""

  def __init__(self, units, **kwargs):
    super().__init__(**kwargs)
    self.units = units
    self.up = L.Dense(units, activation="relu")
    self.down = L.Dense(units)

  def build(self, input_shape):
    self.up.build(input_shape)
    self.down.build(tuple(input_shape[:-1]) + (self.units,))

  def call(self, x):
    return x + self.down(self.up(x))

  def get_config(self):
    return {**super().get_config(), "units": self.units}


class _Opaque(L.Layer):
  """A custom layer that cannot be rebuilt from its config (a callable argument)."""

  def __init__(self, fn, **kwargs):
    super().__init__(**kwargs)
    self.fn = fn
    self.fc = L.Dense(4)

  def call(self, x):
    return self.fn(self.fc(x))


def test_custom_layer_with_dense_inside_is_pruned(tmp_path):
  i = keras.Input((4,))
  model = keras.Model(i, L.Dense(2, name="out")(_Block(4, name="block")(i)))
  x = RNG.normal(size=(3, 4)).astype("float32")
  pruned, stripped = _check(model, x, tmp_path)
  block = next(w for w in tfprune.get_method(pruned).wrappers if w.layer.name == "block")
  assert [w.path.split("/")[-1] for w in block.prunable_weights] == ["kernel", "kernel"]
  for dense in (stripped.get_layer("block").up, stripped.get_layer("block").down):
    assert np.sum(dense.kernel.numpy() == 0) == 8


def test_custom_layer_whose_config_cannot_copy_it_is_rebuilt_and_named():
  # docs/layers.md section 3: rebuilt from its attributes (same outputs checked), warned.
  i = keras.Input((4,))
  model = keras.Model(i, _Opaque(lambda t: t * 2.0, name="opaque")(i))
  with pytest.warns(UserWarning, match=r"Layer 'opaque' \(_Opaque\): its get_config\(\) "
                                       r"cannot rebuild it.*attributes"):
    pruned = tfprune.prune(model, "magnitude")
  x = RNG.normal(size=(3, 4)).astype("float32")
  np.testing.assert_allclose(pruned(x), model(x), atol=1e-6)
  assert pruned.get_layer("prune_opaque").layer is not model.get_layer("opaque")


class _Sub(keras.Model):

  def __init__(self):
    super().__init__(name="sub")
    self.fc = L.Dense(3)

  def call(self, x):
    return self.fc(x)


def test_clear_errors_for_subclassed_inside_and_inner_layer_names():
  i = keras.Input((3,))
  model = keras.Model(i, L.Dense(2)(_Sub()(i)))
  with pytest.raises(ValueError, match="subclassed model 'sub'"):
    tfprune.prune(model, "magnitude")
  i = keras.Input((5, 4))
  model = keras.Model(i, L.TimeDistributed(L.Dense(2, name="td_fc"), name="td")(i))
  with pytest.raises(ValueError, match="'td_fc' is inside layer 'td'.*name 'td'"):
    tfprune.prune(model, "magnitude", layers=["td_fc"])
  assert len(tfprune.get_method(tfprune.prune(model, "magnitude", layers=["td"])).wrappers) == 1


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_prune_and_strip_refuse_non_finite_weights(bad):
  i = keras.Input((4,))
  model = keras.Model(i, L.Dense(3, name="out")(L.Dense(4, name="fc")(i)))
  kernel = model.get_layer("fc").kernel
  value = kernel.numpy()
  value[1, 2] = bad
  kernel.assign(value)
  with pytest.raises(ValueError, match=r"tfprune.prune: .*layer 'fc' weight 'fc/kernel'"):
    tfprune.prune(model, "magnitude", target_sparsity=0.5)
  value[1, 2] = 0.0
  kernel.assign(value)
  pruned = tfprune.prune(model, "magnitude", target_sparsity=0.5)
  bias = pruned.get_layer("prune_out").layer.bias
  bias.assign(np.array([0.0, bad, 0.0], "float32"))
  with pytest.raises(ValueError, match=r"tfprune.strip: .*layer 'out' weight 'out/bias'"):
    tfprune.strip(pruned)


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
