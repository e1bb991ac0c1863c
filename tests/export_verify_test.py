"""Tests for tfprune.export.verify: catches the XNNPACK garbage of a sparse FC above v8;
measures the TFLM arena."""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

from tfprune import export
from tfprune.export import graph
from tfprune.export import verify


def test_sparse_fc_above_version_8_is_caught_and_named(sparse_mlp):
  model = sparse_mlp(16, out=32, density=0.2)
  good = export.to_tflite(model, quantize="dynamic")
  m = graph.load(good)
  for oc in m.operatorCodes:
    if graph.builtin_code(oc) == graph.BuiltinOperator.FULLY_CONNECTED:
      oc.version = 12   # what the stock converter emits for dynamic-range FC
  bad = graph.dump(m)
  x = np.random.default_rng(1).standard_normal((4, 64)).astype(np.float32)
  ref = np.asarray(model(x))
  # XNNPACK off is fine, XNNPACK on is garbage: verify must name it.
  assert verify.verify(bad, ref, x, "dynamic", runtimes=["builtin"])[0].ok
  with pytest.raises(verify.VerificationError) as err:
    verify.verify(bad, ref, x, "dynamic")
  msg = str(err.value)
  assert "LiteRT with XNNPACK" in msg
  assert "FULLY_CONNECTED (op #0, version 12)" in msg
  assert "sparse tensor" in msg


def test_error_says_when_the_dense_conversion_disagrees_too(sparse_mlp):
  # Every op of the sparse file matches the dense conversion, and the dense conversion
  # itself misses the reference: the message must blame the conversion, not the sparsity.
  model = sparse_mlp(16, out=32, density=0.2)
  result = export.convert(model, quantize="dynamic")
  x = np.random.default_rng(1).standard_normal((4, 64)).astype(np.float32)
  off = np.asarray(model(x)) + 10.0
  with pytest.raises(verify.VerificationError) as err:
    verify.verify(result.flatbuffer, off, x, "dynamic",
                  reference_bytes=export.convert(model, quantize="dynamic", sparse="off").flatbuffer)
  msg = str(err.value)
  assert "dense conversion of the same graph disagrees with Keras as well" in msg
  assert "quantization, not tfprune's sparse encoding" in msg
  assert "ops reading sparse weights" not in msg and "first differing op" not in msg
  with pytest.raises(verify.VerificationError) as err:   # no dense reference: suspects
    verify.verify(result.flatbuffer, off, x, "dynamic")
  assert "dense conversion" not in str(err.value)


def test_compare_tolerances():
  ref = np.array([[1.0, 2.0]], np.float32)
  assert verify.compare(ref + 1e-5, ref, None).ok
  assert not verify.compare(ref + 0.1, ref, None).ok
  assert not verify.compare(ref * np.nan, ref, "dynamic").ok
  assert verify.compare(ref + 0.05, ref, "dynamic").ok


def test_int8_argmax_counts_only_samples_an_int8_output_can_decide():
  rng = np.random.default_rng(3)
  ref = rng.standard_normal((8, 4)).astype(np.float32)
  swapped = ref[:, ::-1].copy()   # every argmax moves
  res = verify.compare(swapped, ref, "int8", output_scale=1e-3)
  assert not res.ok and res.argmax_agreement == 0.0
  # Nearly tied logits (an untrained model): margins below two output steps are rounding.
  tied = np.full((8, 4), 0.02, np.float32) + rng.uniform(0, 1e-4, (8, 4)).astype(np.float32)
  near = tied + rng.uniform(-5e-5, 5e-5, (8, 4)).astype(np.float32)
  assert np.mean(near.argmax(1) == tied.argmax(1)) < 0.75   # the old rule failed this
  res = verify.compare(near, tied, "int8", output_scale=1e-4)
  assert res.ok and res.argmax_agreement is None
  # Float outputs (no output scale): the resolution is the reference's range / 255.
  assert verify.compare(near, tied, "int8").ok
  # Mixed: the decisive samples are the ones judged.
  mixed = np.concatenate([tied, ref])
  got = np.concatenate([near, swapped])
  res = verify.compare(got, mixed, "int8", output_scale=1e-3)
  assert res.argmax_agreement == 0.0 and not res.ok


def test_error_names_the_argmax_miss_when_the_diff_is_within_tolerance(monkeypatch,
                                                                       sparse_mlp):
  model = sparse_mlp(16, out=32, density=0.2)
  data = export.to_tflite(model)
  x = np.random.default_rng(1).standard_normal((4, 64)).astype(np.float32)
  ref = np.asarray(model(x))
  miss = verify.RuntimeResult("xnnpack", False, 1e-5, 1e-3, 0.25)
  monkeypatch.setattr(verify, "compare", lambda *a, **k: miss)
  with pytest.raises(verify.VerificationError) as err:
    verify.verify(data, ref, x, "int8", runtimes=["xnnpack"])
  msg = str(err.value)
  assert "argmax agreement 0.25 < 0.75" in msg and "within tolerance" in msg
  assert "> tolerance" not in msg


def test_tflm_arena_bytes_grows_with_the_activations():
  import keras  # pylint: disable=g-import-not-at-top
  pytest.importorskip("tflite_micro")
  rng = np.random.default_rng(2)
  sizes = {}
  for width in (4, 32):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((12, 12, 1)),
                              keras.layers.Conv2D(width, 3, padding="same", activation="relu"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    x = rng.standard_normal((16, 12, 12, 1)).astype(np.float32)
    data = export.convert(model, target="micro", quantize="int8",
                          representative_data=x).model_bytes
    sizes[width] = verify.tflm_arena_bytes(data)
    assert sizes[width]["total"] == sizes[width]["head"] + sizes[width]["tail"]
  # The conv output (12 x 12 x width int8) lives in the non-persistent head.
  assert sizes[32]["head"] - sizes[4]["head"] >= 12 * 12 * (32 - 4)
  assert 0 < sizes[4]["total"] < sizes[32]["total"] < 64 * 1024


def test_unknown_runtime():
  with pytest.raises(ValueError, match="Unknown runtime"):
    verify.verify(b"", np.zeros((1, 1)), np.zeros((1, 1)), runtimes=["gpu"])


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
