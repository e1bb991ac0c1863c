"""Tests for tfprune.export.tflite: every emitted format runs correctly in LiteRT
with XNNPACK on and off, micro models run in TFLite Micro."""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # pylint: disable=g-import-not-at-top
import numpy as np
import pytest

from tfprune import export
from tfprune.export import graph
from tfprune.export import verify

RNG = np.random.default_rng(0)
CALIB = RNG.standard_normal((32, 64)).astype(np.float32)


def _fc_versions(model_bytes):
  m = graph.load(model_bytes)
  sg = m.subgraphs[0]
  out = []
  for op in sg.operators:
    if graph.op_code(m, op) == graph.BuiltinOperator.FULLY_CONNECTED:
      w = sg.tensors[op.inputs[1]]
      out.append((w.sparsity is not None, graph.op_version(m, op)))
  return out


@pytest.mark.parametrize("pattern,quantize,sparse,formats", [
    (4, None, "auto", {"block1x4"}),
    ("random", None, "auto", {"csr"}),
    ("random", None, "csr", {"csr"}),
    (16, "dynamic", "auto", {"block1x16"}),
    (16, "int8", "auto", {"block1x16"}),
    ("random", "int8", "auto", {"csr"}),
    (4, "int8", "block", {"block1x16"}),
    (4, None, "off", {"dense"}),
])
def test_formats_verified_xnnpack_on_and_off(pattern, quantize, sparse, formats, sparse_mlp):
  model = sparse_mlp(pattern)
  result = export.convert(model, quantize=quantize, sparse=sparse, representative_data=CALIB)
  assert {t.format for t in result.tensors} == formats
  assert [r.runtime for r in result.verification] == ["xnnpack", "builtin"]
  assert all(r.ok for r in result.verification)
  # Independent re-check of the returned bytes in both configurations.
  ref = np.asarray(model(CALIB[:8]))
  for xnn in (True, False):
    y, _, _ = verify.run_litert(result.model_bytes, CALIB[:8], xnnpack=xnn)
    assert np.max(np.abs(y - ref)) <= verify.tolerance(ref, quantize, 0.05 if quantize == "int8" else None)
  if sparse != "off":
    assert len(result.model_bytes) < result.dense_size
  # Every FC reading sparse weights directly is version 8; no DENSIFY feeds int8 ops
  # except FC v8.
  for is_sparse, version in _fc_versions(result.model_bytes):
    if is_sparse:
      assert version == 8
  assert not export.inspect(result.model_bytes).warnings


def test_auto_keeps_2_of_4_int8_dense(sparse_mlp):
  result = export.convert(sparse_mlp("2:4"), quantize="int8", representative_data=CALIB)
  assert [t.format for t in result.tensors] == ["dense", "dense"]
  block = export.convert(sparse_mlp("2:4"), quantize="int8", representative_data=CALIB, sparse="block")
  assert len(block.model_bytes) > len(result.model_bytes)


def test_micro_dense_runs_in_tflm(sparse_mlp):
  model = sparse_mlp(16)
  result = export.convert(model, target="micro", quantize="int8", representative_data=CALIB)
  assert [r.runtime for r in result.verification] == ["xnnpack", "builtin", "tflm"]
  m = graph.load(result.model_bytes)
  assert all(t.sparsity is None for t in m.subgraphs[0].tensors)
  assert "DENSIFY" not in {graph.op_name(m, op) for op in m.subgraphs[0].operators}
  y_tflm, raw_tflm = verify.run_tflm(result.model_bytes, CALIB[:4])
  _, raw_litert, _ = verify.run_litert(result.model_bytes, CALIB[:4], xnnpack=False)
  assert np.max(np.abs(raw_tflm.astype(int) - raw_litert.astype(int))) <= 1


def test_micro_sparse_kernel_uses_1x16_and_metadata(sparse_mlp):
  result = export.convert(sparse_mlp(16), target="micro", quantize="int8", representative_data=CALIB,
                          micro_sparse_kernel=True)
  assert {t.format for t in result.tensors} == {"block1x16"}
  report = export.inspect(result.model_bytes)
  assert report.metadata["target"] == "micro" and report.metadata["micro_sparse_kernel"]
  assert not report.warnings


def test_structurally_shrunk_model_goes_through_micro_unchanged():
  inp = keras.Input((64,))
  model = keras.Model(inp, keras.layers.Dense(10)(keras.layers.Dense(24, activation="relu")(inp)))
  result = export.convert(model, target="micro", quantize="int8", representative_data=CALIB)
  assert [t.format for t in result.tensors] == ["dense", "dense"]


@pytest.mark.parametrize("kwargs,match", [
    ({"target": "phone"}, "target must be one of"),
    ({"quantize": "fp16"}, "quantize must be one of"),
    ({"sparse": "magic"}, "sparse must be one of"),
    ({"quantize": "int8"}, "needs representative_data"),
    ({"target": "micro", "quantize": "dynamic"}, "needs quantize='int8'"),
    ({"quantize": "dynamic", "sparse": "csr"}, "sparse='csr' is not valid"),
    ({"micro_sparse_kernel": True}, "only valid with target='micro'"),
])
def test_bad_arguments(kwargs, match, sparse_mlp):
  with pytest.raises(ValueError, match=match):
    export.to_tflite(sparse_mlp(4), **kwargs)


def test_save_tflite_writes_file(tmp_path, sparse_mlp):
  path = tmp_path / "m.tflite"
  result = export.save_tflite(sparse_mlp(4), path)
  assert path.read_bytes() == result.model_bytes


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
