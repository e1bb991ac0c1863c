"""Text models end to end (issue 25 item 5): dict inputs in any key order, per-input
vocabularies through nested models, dynamic sequence lengths, multi-output models,
augmentation layers, a keras_hub BERT backbone, and layer-wise methods on multi-input
models. Conversions are slow: the models are shared through module fixtures."""
import keras
import numpy as np
import pytest

import tfprune
from tfprune import export
from tfprune.export import inputs
from tfprune.export import tflite
from tfprune.export import verify

VOCAB = 40
SEQ = 8


def _text_model():
  """BERT-shaped: dict inputs in UNSORTED key order, None sequence length, the
  Embeddings inside a nested encoder model, dict outputs (sequence + pooled)."""
  keras.utils.set_random_seed(3)
  t_in = keras.Input((None,), dtype="int32", name="enc_tokens")
  s_in = keras.Input((None,), dtype="int32", name="enc_segments")
  h = (keras.layers.Embedding(VOCAB, 8, name="token_embedding")(t_in)
       + keras.layers.Embedding(2, 8, name="segment_embedding")(s_in))
  encoder = keras.Model({"tokens": t_in, "segments": s_in},
                        keras.layers.Dense(8, activation="tanh", name="ffn")(h),
                        name="encoder")
  tok = keras.Input((None,), dtype="int32", name="token_ids")
  seg = keras.Input((None,), dtype="int32", name="segment_ids")
  mask = keras.Input((None,), dtype="int32", name="padding_mask")
  seq = encoder({"tokens": tok, "segments": seg})
  seq = seq * keras.ops.expand_dims(keras.ops.cast(mask, "float32"), -1)
  pooled = keras.layers.Dense(3, name="pooler")(seq[:, 0])
  return keras.Model({"token_ids": tok, "segment_ids": seg, "padding_mask": mask},
                     {"sequence_output": seq, "pooled_output": pooled})


def _text_data(n=24, seq=SEQ, seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, VOCAB, (n, seq)).astype("int32")
  ids[:, 1] = VOCAB - 1   # the largest valid token id, in every sample
  mask = np.ones((n, seq), "int32")
  mask[:, seq - 2:] = 0
  # keys in yet another order than the model's
  return {"padding_mask": mask, "token_ids": ids,
          "segment_ids": rng.integers(0, 2, (n, seq)).astype("int32")}


@pytest.fixture(scope="module")
def text_model():
  return _text_model()


@pytest.fixture(scope="module")
def float_export(text_model):  # pylint: disable=redefined-outer-name
  shapes = {"token_ids": (SEQ,), "segment_ids": (SEQ,), "padding_mask": (SEQ,)}
  return export.convert(text_model, input_shapes=shapes)


def _keras_outputs(model, data):
  y = model(data, training=False)
  return {k: np.asarray(v) for k, v in y.items()}


def _file_outputs(result, model, data):
  """Runs the file ourselves (by signature names), independent of `verify.verify`."""
  names = [t.name for t in model.inputs]
  outs = tflite.output_names(model)
  got = verify.run_litert_outputs(result.flatbuffer, [data[n] for n in names], xnnpack=True,
                                  input_names=names,
                                  positions=verify.output_positions(result.flatbuffer, outs))
  return {name: y for name, (y, _, _) in zip(outs, got)}


def test_per_input_vocabulary_through_nested_models(text_model):  # pylint: disable=redefined-outer-name
  names = [t.name for t in text_model.inputs]
  vocab = {names[k]: v for k, v in inputs.embedding_vocab(text_model).items()}
  # Each input its own vocabulary; the mask feeds no Embedding (0 / 1 by default).
  assert vocab == {"token_ids": VOCAB, "segment_ids": 2}
  data = _text_data()
  arrays = inputs.as_samples(text_model, data)
  inputs.check_ranges(text_model, arrays)   # token ids up to VOCAB - 1 pass
  for name, bad in (("token_ids", VOCAB), ("segment_ids", 2)):
    wrong = dict(data, **{name: np.full((4, SEQ), bad, "int32")})
    wrong = {k: v[:4] for k, v in wrong.items()}
    with pytest.raises(export.ExportError, match=f"input '{name}'.*input_dim"):
      inputs.check_ranges(text_model, inputs.as_samples(text_model, wrong))
  ids, segments, mask = (inputs.random_samples(text_model, 64, 0, [(SEQ,)] * 3)[
      names.index(n)] for n in ("token_ids", "segment_ids", "padding_mask"))
  assert ids.max() > 2 * 2 and ids.max() < VOCAB    # not only 0 / 1 any more
  assert segments.max() == 1 and mask.max() == 1


def test_vocabulary_through_nested_sequential_and_custom_layers():
  seq = keras.Sequential([keras.Input((6,), dtype="int32"), keras.layers.Embedding(33, 3),
                          keras.layers.Flatten()])
  tok = keras.Input((6,), dtype="int32", name="tok")
  mask = keras.Input((6,), dtype="int32", name="mask")
  model = keras.Model([tok, mask], keras.layers.Dense(2)(
      seq(tok) * keras.ops.cast(keras.layers.Flatten()(keras.ops.repeat(mask, 3, axis=1)),
                                "float32")))
  assert inputs.embedding_vocab(model) == {0: 33}   # the mask feeds no Embedding

  class TokenAndSegment(keras.layers.Layer):   # Embeddings called inside `call`: no graph
    def __init__(self, **kwargs):
      super().__init__(**kwargs)
      self.token = keras.layers.Embedding(30, 4)
      self.segment = keras.layers.Embedding(5, 4)

    def call(self, x):
      return self.token(x) + self.segment(keras.ops.zeros_like(x))

  tok = keras.Input((6,), dtype="int32", name="tok")
  model = keras.Model(tok, keras.layers.Dense(2)(TokenAndSegment()(tok)))
  # The segment Embedding reads zeros computed from the ids, not the ids: the token
  # Embedding's vocabulary (tests/export_multimodal_test.py: position Embeddings).
  assert inputs.embedding_vocab(model) == {0: 30}


def test_keras_hub_task_model_vocabulary():
  keras_hub = pytest.importorskip("keras_hub")
  backbone = keras_hub.models.BertBackbone(
      vocabulary_size=64, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32,
      max_sequence_length=16)
  clf = keras_hub.models.BertTextClassifier(backbone=backbone, num_classes=3,
                                            preprocessor=None)
  for model in (backbone, clf):
    names = [t.name for t in model.inputs]
    assert {names[k]: v for k, v in inputs.embedding_vocab(model).items()} == {
        "token_ids": 64, "segment_ids": 2}


def test_float_export_dict_inputs_all_outputs_verified(text_model, float_export):  # pylint: disable=redefined-outer-name
  result = float_export
  assert any("'token_ids' (None,) to (8,) from input_shapes" in n for n in result.notes)
  for r in result.verification:
    assert r.ok and [o.output for o in r.outputs] == ["pooled_output", "sequence_output"]
    assert all(o.max_abs_diff < 1e-5 for o in r.outputs)
  data = {k: v[:4] for k, v in _text_data(seed=5).items()}
  want, got = _keras_outputs(text_model, data), _file_outputs(result, text_model, data)
  for key in want:
    np.testing.assert_allclose(got[key].reshape(want[key].shape), want[key], atol=1e-5)


def test_wrong_output_is_caught_and_named(text_model, float_export):  # pylint: disable=redefined-outer-name
  data = {k: v[:4] for k, v in _text_data(seed=6).items()}
  names = [t.name for t in text_model.inputs]
  outs = tflite.output_names(text_model)
  want = _keras_outputs(text_model, data)
  refs = [want[k] for k in outs]
  x = [data[n] for n in names]
  assert all(r.ok for r in verify.verify(float_export.flatbuffer, refs, x, input_names=names,
                                         output_names=outs))
  bad = [refs[0], refs[1] + 0.05]   # only the sequence output is wrong
  with pytest.raises(verify.VerificationError) as e:
    verify.verify(float_export.flatbuffer, bad, x, input_names=names, output_names=outs)
  msg = str(e.value)
  assert "Keras output 'sequence_output'" in msg and "max abs diff 0.05" in msg
  assert "Keras output 'pooled_output': ok" in msg


def test_int8_export_lengths_from_data(text_model):  # pylint: disable=redefined-outer-name
  """(dynamic range is exercised on BERT below.)"""
  data = _text_data(seq=6, seed=1)     # a 6-token sequence: the file takes 6
  result = export.convert(text_model, quantize="int8", representative_data=data)
  assert any("to (6,) from the representative data" in n for n in result.notes)
  assert all(r.ok and len(r.outputs) == 2 for r in result.verification)
  interp = verify.make_litert_interpreter(result.flatbuffer, xnnpack=False)
  details = interp.get_input_details()
  assert sorted(verify._tensor_input_name(d["name"]) for d in details) == [  # pylint: disable=protected-access
      "padding_mask", "segment_ids", "token_ids"]
  assert all(list(d["shape"]) == [1, 6] and d["dtype"] == np.int32 for d in details)


def test_dynamic_dimension_errors_name_the_input(text_model):  # pylint: disable=redefined-outer-name
  with pytest.raises(export.ExportError, match=r"input '\w+' has shape \(None,\).*input_shapes"):
    export.convert(text_model)
  cases = [({"token_ids": (8,), "nope": (8,)}, r"names \['nope'\], not inputs of model"),
           ({"token_ids": (8, 2)}, "input_shapes for input 'token_ids' is \\(8, 2\\)"),
           ({"token_ids": (0,)}, "input 'token_ids' must be a tuple of positive ints"),
           (8, "must be a dict by input name")]
  for shapes, match in cases:
    with pytest.raises(export.ExportError, match=match):
      export.convert(text_model, input_shapes=shapes)
  with pytest.raises(export.ExportError, match="'token_ids' has shape \\[n, 8\\].*gives \\(6,\\)"):
    export.convert(text_model, representative_data=_text_data(n=4),
                   input_shapes={"token_ids": (6,)})


def test_list_outputs_matched_by_name():
  """The converter reorders outputs (seen: reversed); each is matched by signature
  name, so swapping the Keras references must fail verification."""
  keras.utils.set_random_seed(1)
  a, b = keras.Input((4,), name="a"), keras.Input((3,), name="b")
  h = keras.layers.Concatenate()([a, b])
  model = keras.Model([a, b], [keras.layers.Dense(5, name="first")(h),
                               keras.layers.Dense(5, name="second")(h)])
  result = export.convert(model)
  assert all(r.ok and len(r.outputs) == 2 for r in result.verification)
  x = [np.random.default_rng(0).standard_normal((4, n)).astype("float32") for n in (4, 3)]
  refs = [np.asarray(y) for y in model(x)]
  outs = tflite.output_names(model)
  assert outs == ["output_0", "output_1"]
  verify.verify(result.flatbuffer, refs, x, input_names=["a", "b"], output_names=outs)
  with pytest.raises(verify.VerificationError, match="Keras output 'output_0'"):
    verify.verify(result.flatbuffer, refs[::-1], x, input_names=["a", "b"], output_names=outs)


def test_augmentation_layers_export_as_inference_identity():
  keras.utils.set_random_seed(2)
  img = keras.Input((16, 16, 3), name="image")
  x = keras.layers.Rescaling(1 / 255.0)(img)
  aug = keras.Sequential([keras.layers.RandomFlip(), keras.layers.RandomRotation(0.2),
                          keras.layers.RandomZoom(0.2)], name="augment")
  x = aug(x)
  x = keras.layers.RandomContrast(0.3)(x)
  x = keras.layers.Conv2D(8, 3, activation="relu")(x)
  model = keras.Model(img, keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(x)))
  data = np.random.default_rng(0).uniform(0, 255, (16, 16, 16, 3)).astype("float32")
  result = export.convert(model, quantize="int8", representative_data=data)
  note = next(n for n in result.notes if "inference identity" in n)
  for name in ("RandomFlip", "RandomRotation", "RandomZoom", "RandomContrast"):
    assert name in note
  assert all(r.ok for r in result.verification)
  y, _, _ = verify.run_litert(result.flatbuffer, data[:8], xnnpack=False)
  want = np.asarray(model(data[:8], training=False))
  assert np.max(np.abs(y - want)) < 0.1 * np.max(np.abs(want))
  assert isinstance(aug.layers[0], keras.layers.RandomFlip)   # the user's model untouched


def test_keras_hub_bert_pruned_and_exported():
  keras_hub = pytest.importorskip("keras_hub")
  keras.utils.set_random_seed(0)
  backbone = keras_hub.models.BertBackbone(
      vocabulary_size=64, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32,
      max_sequence_length=16)
  pruned = tfprune.prune(backbone, "magnitude", target_sparsity=0.5)
  tfprune.get_method(pruned).update_masks(0.5)
  stripped = tfprune.strip(pruned)
  ffn = [w for w in stripped.weights if "intermediate_dense" in w.path and "kernel" in w.path]
  assert ffn and abs(float(np.mean(np.asarray(ffn[0]) == 0)) - 0.5) < 0.02
  rng = np.random.default_rng(0)
  data = {"token_ids": rng.integers(0, 64, (16, 12)).astype("int32"),
          "segment_ids": rng.integers(0, 2, (16, 12)).astype("int32"),
          "padding_mask": np.ones((16, 12), "int32")}
  data["token_ids"][:, 2] = 63
  for quantize in (None, "dynamic", "int8"):
    result = export.convert(stripped, quantize=quantize,
                            representative_data=data if quantize == "int8" else None,
                            input_shapes={"token_ids": (12,), "segment_ids": (12,),
                                          "padding_mask": (12,)})
    assert all(r.ok and [o.output for o in r.outputs] == ["pooled_output", "sequence_output"]
               for r in result.verification), quantize
    if quantize is None:
      got = _file_outputs(result, stripped, {k: v[:4] for k, v in data.items()})
      want = _keras_outputs(stripped, {k: v[:4] for k, v in data.items()})
      for key in want:
        np.testing.assert_allclose(got[key].reshape(want[key].shape), want[key], atol=1e-4)


def _two_input_model():
  keras.utils.set_random_seed(4)
  a, b = keras.Input((8,), name="feat_b"), keras.Input((6,), name="feat_a")
  h = keras.layers.Concatenate()([keras.layers.Dense(16, activation="relu", name="da")(a),
                                  keras.layers.Dense(16, activation="relu", name="db")(b)])
  return keras.Model({"feat_b": a, "feat_a": b}, keras.layers.Dense(4, name="out")(h))


def test_logsum_on_a_two_input_model_with_dict_calibration():
  model = _two_input_model()
  rng = np.random.default_rng(0)
  data = {"feat_a": rng.standard_normal((64, 6)).astype("float32"),
          "feat_b": rng.standard_normal((64, 8)).astype("float32")}
  ref = np.asarray(model(data))
  pruned = tfprune.prune(model, "logsum", target_sparsity=0.5)
  table = tfprune.get_method(pruned).apply(pruned, data, verbose=False)
  assert len(table) == 3
  stripped = tfprune.strip(pruned)
  for name in ("da", "db", "out"):
    assert abs(float(np.mean(np.asarray(stripped.get_layer(name).kernel) == 0)) - 0.5) < 0.02
  err = np.max(np.abs(np.asarray(stripped(data)) - ref))
  assert 0 < err < np.max(np.abs(ref))   # pruned, refit: close to the dense model
  # a list in model.inputs order (sorted: feat_a, feat_b), or an (x, y) pair of it, is
  # the same data
  from tfprune import layerwise  # pylint: disable=g-import-not-at-top
  for same in ([data["feat_a"], data["feat_b"]], ((data["feat_a"], data["feat_b"]), None)):
    for a, b in zip(layerwise.calibration_batches(same, model, batch_size=40),
                    layerwise.calibration_batches(data, model, batch_size=40)):
      assert sorted(a) == sorted(b) == ["feat_a", "feat_b"]
      assert all(np.array_equal(a[k], b[k]) for k in a)


def test_layerwise_one_input_dict_calibration():
  """keras_hub's style {"images": x} for a one-input model is the same data as x."""
  from tfprune import layerwise  # pylint: disable=g-import-not-at-top
  inp = keras.Input((6,), name="images")
  model = keras.Model(inp, keras.layers.Dense(3, name="d")(inp))
  x = np.random.default_rng(0).standard_normal((5, 6)).astype("float32")
  for a, b in zip(layerwise.calibration_batches({"images": x}, model, batch_size=4),
                  layerwise.calibration_batches(x, model, batch_size=4)):
    assert np.array_equal(np.asarray(a), np.asarray(b))
  with pytest.raises(ValueError, match=r"keys \['pixels'\].*the one key 'images'"):
    list(layerwise.calibration_batches({"pixels": x}, model))


def test_layerwise_multi_input_structure_errors():
  from tfprune import layerwise  # pylint: disable=g-import-not-at-top
  model = _two_input_model()
  ok = {"feat_a": np.zeros((4, 6), "float32"), "feat_b": np.zeros((4, 8), "float32")}
  batches = list(layerwise.calibration_batches(ok, model, batch_size=3))
  assert [sorted(b) for b in batches] == [["feat_a", "feat_b"]] * 2
  assert [int(b["feat_a"].shape[0]) for b in batches] == [3, 1]
  bad = [({"feat_a": ok["feat_a"]}, r"2 inputs.*missing \['feat_b'\]"),
         (dict(ok, extra=ok["feat_a"]), r"unknown \['extra'\]"),
         (ok["feat_a"], "2 inputs; calibration data must be a dict by input name"),
         ({"feat_a": ok["feat_a"], "feat_b": np.zeros((4, 7))},
          r"input 'feat_b': expected \(batch,\) \+ \(8,\)"),
         ({"feat_a": ok["feat_a"], "feat_b": np.zeros((3, 8))}, "different sample counts")]
  for data, match in bad:
    with pytest.raises(ValueError, match=match):
      list(layerwise.calibration_batches(data, model))
    pruned = tfprune.prune(_two_input_model(), "logsum", target_sparsity=0.5)
    with pytest.raises(ValueError, match=match):
      tfprune.get_method(pruned).apply(pruned, data, verbose=False)


def test_cli_input_shapes_flag():
  # The parser lives in the flag-free CLI helpers: importing tfprune.bin.export here
  # would define its absl flags a second time in a worker that ran the train binary.
  from tfprune.bin import _cli  # pylint: disable=g-import-not-at-top
  parse = _cli.parse_input_shapes
  assert parse(None) is None
  assert parse("32x32x3") == (32, 32, 3)
  assert parse("token_ids:128, padding_mask:128") == {"token_ids": (128,),
                                                      "padding_mask": (128,)}
  for bad in ("token_ids:12a", "token_ids:0", "a:8,16", ":8"):
    with pytest.raises(ValueError, match="--input_shapes"):
      parse(bad)
