"""Tests for tfprune.export.verify: catches the XNNPACK garbage of a sparse FC above v8."""
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


def test_compare_tolerances():
  ref = np.array([[1.0, 2.0]], np.float32)
  assert verify.compare(ref + 1e-5, ref, None).ok
  assert not verify.compare(ref + 0.1, ref, None).ok
  assert not verify.compare(ref * np.nan, ref, "dynamic").ok
  assert verify.compare(ref + 0.05, ref, "dynamic").ok


def test_unknown_runtime():
  with pytest.raises(ValueError, match="Unknown runtime"):
    verify.verify(b"", np.zeros((1, 1)), np.zeros((1, 1)), runtimes=["gpu"])


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
