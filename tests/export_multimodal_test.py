"""Multimodal models in the exporter (issue 25 items 5 and 6): outputs that mix the
samples of a batch (CLIP-style image x text logits) export at a fixed batch or are
refused before conversion; a position Embedding beside the token Embedding inside a
custom layer (SigLIP's text embedding) does not set the token input's vocabulary."""
import keras
import numpy as np
import pytest

from tfprune import export
from tfprune.export import inputs
from tfprune.export import tflite
from tfprune.export import verify

VOCAB = 50
SEQ = 6


def _two_towers():
  """An image tower and a text tower; 'logits' is (batch, batch): every image with every
  text, as CLIP's; 'image_embeds' is per sample."""
  keras.utils.set_random_seed(5)
  img = keras.Input((4,), name="images")
  ids = keras.Input((SEQ,), dtype="int32", name="token_ids")
  image = keras.layers.Dense(3, name="image_proj")(img)
  text = keras.layers.Dense(3, name="text_proj")(keras.ops.mean(
      keras.layers.Embedding(VOCAB, 3, name="tokens")(ids), axis=1))
  logits = keras.ops.matmul(image, keras.ops.transpose(text))
  return keras.Model({"images": img, "token_ids": ids},
                     {"logits": logits, "image_embeds": image})


def _tower_data(n, seed=0):
  rng = np.random.default_rng(seed)
  return {"images": rng.standard_normal((n, 4)).astype("float32"),
          "token_ids": rng.integers(0, VOCAB, (n, SEQ)).astype("int32")}


def test_batch_mixing_outputs_found_by_shape():
  model = _two_towers()
  x = inputs.as_samples(model, _tower_data(5))
  ref = tflite._predict(model, x)   # pylint: disable=protected-access
  dependent = tflite.batch_dependent_outputs(model, x, ref)
  assert [(name, a, b) for name, a, b in dependent] == [("logits", (5, 5), (1, 1))]
  x1 = [a[:1] for a in x]   # one sample: the second batch is 2
  assert tflite.batch_dependent_outputs(model, x1, tflite._predict(model, x1))[0][1:] == (  # pylint: disable=protected-access
      (1, 1), (2, 2))
  per_sample = keras.Model(model.inputs, model.output["image_embeds"])
  assert tflite.batch_dependent_outputs(per_sample, x, tflite._predict(per_sample, x)) == []  # pylint: disable=protected-access


def test_batch_mixing_model_exports_at_fixed_batch():
  model = _two_towers()
  data = _tower_data(12)
  result = export.convert(model, representative_data=data, num_verify_samples=5)
  assert result.fixed_batch == 5
  assert any("'logits'" in n and "fixed batch of 5" in n for n in result.notes)
  assert all(r.ok for r in result.verification)
  # The file takes 5 samples per invoke and gives Keras' 5 x 5 logits.
  x = [data["images"][5:10], data["token_ids"][5:10]]
  want = model({"images": x[0], "token_ids": x[1]})
  got = verify.run_litert_outputs(result.flatbuffer, x, input_names=["images", "token_ids"],
                                  positions=verify.output_positions(
                                      result.flatbuffer, ["image_embeds", "logits"]))
  assert got[1][0].shape == (5, 5)
  np.testing.assert_allclose(got[1][0], keras.ops.convert_to_numpy(want["logits"]), atol=1e-5)
  np.testing.assert_allclose(got[0][0], keras.ops.convert_to_numpy(want["image_embeds"]),
                             atol=1e-5)


def test_batch_mixing_model_int8_refused_before_conversion(monkeypatch):
  model = _two_towers()

  def no_conversion(*args, **kwargs):
    raise AssertionError("converted")

  monkeypatch.setattr(tflite, "_run_converter", no_conversion)
  with pytest.raises(export.ExportError, match=r"'logits' \(shape \(8, 8\) at batch 8, "
                                               r"\(1, 1\) at batch 1\).*towers"):
    export.convert(model, quantize="int8", representative_data=_tower_data(8))


class TokenAndPosition(keras.layers.Layer):
  """SigLIP's text embedding, guide style: a token Embedding and a (smaller) position
  Embedding reading positions from `ops.arange` (`stored=False`) or from a weight that
  holds them (`stored=True`, SigLIP's `position_ids`), both called inside `call`."""

  def __init__(self, stored=False, **kwargs):
    super().__init__(**kwargs)
    self.stored = stored
    self.token = keras.layers.Embedding(VOCAB, 4)
    self.position = keras.layers.Embedding(SEQ, 4)

  def build(self, input_shape):
    self.token.build(input_shape)
    self.position.build((1, SEQ))
    if self.stored:
      self.position_ids = self.add_weight(shape=(1, SEQ), dtype="int32", trainable=False,
                                          initializer="zeros")
      self.position_ids.assign(keras.ops.expand_dims(keras.ops.arange(SEQ), 0))

  def call(self, x):
    positions = (self.position_ids if self.stored else
                 keras.ops.expand_dims(keras.ops.arange(SEQ), 0))
    return self.token(x) + self.position(positions)


@pytest.mark.parametrize("stored", [False, True])
def test_position_embedding_does_not_set_the_vocabulary(stored):
  ids = keras.Input((SEQ,), dtype="int32", name="token_ids")
  model = keras.Model(ids, keras.layers.Dense(2)(keras.layers.Flatten()(
      TokenAndPosition(stored)(ids))))
  assert inputs.embedding_vocab(model) == {0: VOCAB}   # the token Embedding's, not SEQ's
  good = np.full((2, SEQ), VOCAB - 1, "int32")
  inputs.check_ranges(model, [good])
  with pytest.raises(export.ExportError, match=f"input_dim {VOCAB}"):
    inputs.check_ranges(model, [good + 1])
  assert inputs.random_samples(model, 64, 0)[0].max() >= SEQ   # the whole vocabulary drawn
  if stored:
    result = export.convert(model, representative_data=good)
    assert all(r.ok for r in result.verification)


def test_keras_hub_siglip_vocabulary_and_clip_logits():
  keras_hub = pytest.importorskip("keras_hub")
  from keras_hub.src.models.clip import clip_text_encoder  # pylint: disable=g-import-not-at-top
  from keras_hub.src.models.clip import clip_vision_encoder  # pylint: disable=g-import-not-at-top
  from keras_hub.src.models.siglip import siglip_text_encoder  # pylint: disable=g-import-not-at-top
  from keras_hub.src.models.siglip import siglip_vision_encoder  # pylint: disable=g-import-not-at-top
  towers = dict(patch_size=8, hidden_dim=16, num_layers=1, num_heads=2, intermediate_dim=32,
                image_shape=(16, 16, 3))
  text = dict(vocabulary_size=64, embedding_dim=16, hidden_dim=16, num_layers=1,
              num_heads=2, intermediate_dim=32, max_sequence_length=8)
  siglip = keras_hub.models.SigLIPBackbone(
      vision_encoder=siglip_vision_encoder.SigLIPVisionEncoder(**towers),
      text_encoder=siglip_text_encoder.SigLIPTextEncoder(**text))
  names = [t.name for t in siglip.inputs]
  assert {names[k]: v for k, v in inputs.embedding_vocab(siglip).items()} == {
      "token_ids": 64}   # not the 8-row position embedding beside it
  clip = keras_hub.models.CLIPBackbone(
      vision_encoder=clip_vision_encoder.CLIPVisionEncoder(**towers),
      text_encoder=clip_text_encoder.CLIPTextEncoder(**text), projection_dim=8)
  rng = np.random.default_rng(0)
  x = inputs.as_samples(clip, {"images": rng.random((3, 16, 16, 3)),
                               "token_ids": rng.integers(0, 64, (3, 8))})
  dependent = tflite.batch_dependent_outputs(clip, x, tflite._predict(clip, x))  # pylint: disable=protected-access
  assert sorted(name for name, _, _ in dependent) == ["text_logits", "vision_logits"]
  assert all(a == (3, 3) and b == (1, 1) for _, a, b in dependent)


def test_embeddings_read_outside_their_call():
  class TakesRows(keras.layers.Layer):   # the position rows read as a weight: not observable

    def __init__(self, **kwargs):
      super().__init__(**kwargs)
      self.token = keras.layers.Embedding(VOCAB, 4)
      self.position = keras.layers.Embedding(SEQ, 4)

    def build(self, input_shape):
      self.token.build(input_shape)
      self.position.build((1, SEQ))

    def call(self, x):
      return self.token(x) + keras.ops.take(self.position.embeddings,
                                            keras.ops.arange(SEQ), axis=0)

  ids = keras.Input((SEQ,), dtype="int32")
  model = keras.Model(ids, keras.layers.Dense(2)(TakesRows()(ids)))
  # The token Embedding followed the ids: its vocabulary (keras_hub SAM3's box labels,
  # beside a class token whose rows are read as a weight).
  assert inputs.embedding_vocab(model) == {0: VOCAB}

  class TakesById(TakesRows):  # ids only reach a table read as a weight: cannot tell

    def call(self, x):
      return keras.ops.take(self.position.embeddings, x, axis=0)

  model = keras.Model(ids, keras.layers.Dense(2)(TakesById()(ids)))
  assert inputs.embedding_vocab(model) == {0: SEQ}   # never wider than real
