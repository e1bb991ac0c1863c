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
from tfprune.export import tflite
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
  # 1x16 blocks of a 2:4 pattern would be larger than dense: kept dense even in "block".
  block = export.convert(sparse_mlp("2:4"), quantize="int8", representative_data=CALIB, sparse="block")
  assert [t.format for t in block.tensors] == ["dense", "dense"]
  assert len(block.model_bytes) == len(result.model_bytes) == result.dense_size


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


# Sizes where a 10%-dense kernel's CSR + DENSIFY (and its per-buffer checksum) is clearly
# smaller than the dense tensor; smaller kernels rightly stay dense.
CONV_LAYERS = {
    "conv2d": ((10, 10, 16), lambda: keras.layers.Conv2D(32, 3)),
    "depthwise": ((10, 10, 16), lambda: keras.layers.DepthwiseConv2D(5, depth_multiplier=8)),
    "conv1d": ((20, 16), lambda: keras.layers.Conv1D(32, 3)),
    "conv2d_transpose": ((5, 5, 16), lambda: keras.layers.Conv2DTranspose(32, 3, strides=2)),
}


def _sparse_conv_model(kind, keep=0.1):
  shape, make = CONV_LAYERS[kind]
  rng = np.random.default_rng(0)
  inp = keras.Input(shape)
  conv = make()
  model = keras.Model(inp, keras.layers.Dense(10)(keras.layers.Flatten()(conv(inp))))
  conv.kernel.assign(conv.kernel.numpy() * (rng.random(conv.kernel.shape) < keep))
  data = rng.standard_normal((16,) + shape).astype(np.float32)
  return model, data, conv.kernel.numpy().size


@pytest.mark.parametrize("kind", sorted(CONV_LAYERS))
def test_int8_conv_weights_sparse_via_densify(kind):
  model, data, size = _sparse_conv_model(kind)
  result = export.convert(model, quantize="int8", representative_data=data)
  conv = [t for t in result.tensors if t.dense_bytes == size]
  assert [t.format for t in conv] == ["csr"]
  assert all(r.ok for r in result.verification)           # XNNPACK on and off
  m = graph.load(result.model_bytes)
  assert "DENSIFY" in {graph.op_name(m, op) for op in m.subgraphs[0].operators}
  assert not export.inspect(result.model_bytes).warnings
  # Dynamic-range: XNNPACK fails to delegate a hybrid conv reading DENSIFY -> stays dense.
  dynamic = export.convert(model, quantize="dynamic", representative_data=data)
  assert all(t.format == "dense" for t in dynamic.tensors if t.dense_bytes == size)
  assert all(r.ok for r in dynamic.verification)


def test_segmented_csr_for_wide_int8_fc():
  rng = np.random.default_rng(1)
  inp = keras.Input((784,))
  dense = keras.layers.Dense(32)
  model = keras.Model(inp, dense(inp))
  dense.kernel.assign(dense.kernel.numpy() * (rng.random((784, 32)) < 0.03))
  data = rng.standard_normal((16, 784)).astype(np.float32)
  result = export.convert(model, quantize="int8", representative_data=data)
  assert all(r.ok for r in result.verification)
  m = graph.load(result.model_bytes)
  sg = m.subgraphs[0]
  names = [graph.op_name(m, op) for op in sg.operators]
  assert names == ["DENSIFY", "RESHAPE", "FULLY_CONNECTED"]
  sparse = [t for t in sg.tensors if t.sparsity is not None]
  assert [list(t.shape) for t in sparse] == [[32, 4, 196]]
  assert result.tensors[0].shape == (32, 784) and result.tensors[0].format == "csr"
  report = export.inspect(result.model_bytes)
  assert not report.warnings
  assert [t.op for t in report.tensors if t.format == "csr"] == ["DENSIFY>FULLY_CONNECTED"]
  # Float keeps plain CSR (XNNPACK's static DENSIFY path; no RESHAPE per invoke).
  flt = graph.load(export.to_tflite(model))
  assert "RESHAPE" not in {graph.op_name(flt, op) for op in flt.subgraphs[0].operators}


def _fc_scales(model_bytes):
  m = graph.load(model_bytes)
  sg = m.subgraphs[0]
  return [len(sg.tensors[op.inputs[1]].quantization.scale) for op in sg.operators
          if graph.op_code(m, op) == graph.BuiltinOperator.FULLY_CONNECTED]


def test_fc_quantization_auto_is_per_tensor_for_sparse_int8(sparse_mlp):
  model = sparse_mlp("random", density=0.2)
  auto = export.convert(model, quantize="int8", representative_data=CALIB)
  assert auto.fc_quantization == "per_tensor"
  assert _fc_scales(auto.model_bytes) == [1, 1]
  per_channel = export.convert(model, quantize="int8", representative_data=CALIB,
                               fc_quantization="per_channel")
  assert per_channel.fc_quantization == "per_channel"
  assert _fc_scales(per_channel.model_bytes) == [64, 16]
  assert len(auto.model_bytes) < len(per_channel.model_bytes) - 24 * 64
  assert export.inspect(auto.model_bytes).metadata["fc_quantization"] == "per_tensor"
  # Dense exports keep the converter's per-channel default.
  off = export.convert(model, quantize="int8", representative_data=CALIB, sparse="off")
  assert off.fc_quantization == "per_channel"


def test_fc_quantization_auto_keeps_per_channel_when_per_tensor_is_lossy(sparse_mlp):
  model = sparse_mlp("random", density=0.2, seed=3)
  layer = model.layers[1]
  k = layer.kernel.numpy()
  k[0, 0] = 200.0 * np.abs(k).max()   # one outlier: per-tensor rounding wipes the rest out
  layer.kernel.assign(k)
  assert tflite.per_tensor_error(k) > tflite.PER_TENSOR_MAX_ERROR
  result = export.convert(model, quantize="int8", representative_data=CALIB)
  assert result.fc_quantization == "per_channel"
  assert tflite.per_tensor_error(np.zeros((3, 3))) == 0.0


@pytest.mark.parametrize("kwargs,match", [
    ({"target": "phone"}, "target must be one of"),
    ({"quantize": "fp16"}, "quantize must be one of"),
    ({"sparse": "magic"}, "sparse must be one of"),
    ({"quantize": "int8"}, "needs representative_data"),
    ({"target": "micro", "quantize": "dynamic"}, "needs quantize='int8'"),
    ({"quantize": "dynamic", "sparse": "csr"}, "sparse='csr' is not valid"),
    ({"micro_sparse_kernel": True}, "only valid with target='micro'"),
    ({"fc_quantization": "per_row"}, "fc_quantization must be one of"),
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


def test_a_new_target_is_one_entry(monkeypatch, sparse_mlp):
  """Issue 26: the converter reads targets as objects, so a new runtime family is one
  `Target` in tfprune/export/targets.py (here: dense int8 only, verified with XNNPACK)."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  from tfprune.export import targets  # pylint: disable=g-import-not-at-top
  npu = dataclasses.replace(targets.LITERT, name="npu", runtime="an int8 NPU",
                            quantizations=("int8",), sparse_tensors=False,
                            verify_runtimes=("xnnpack",))
  monkeypatch.setitem(targets.TARGETS, "npu", npu)
  with pytest.raises(ValueError, match="int8"):
    export.convert(sparse_mlp(16), target="npu")
  result = export.convert(sparse_mlp(16), target="npu", quantize="int8",
                          representative_data=CALIB)
  assert [r.runtime for r in result.verification] == ["xnnpack"]
  assert {t.format for t in result.tensors} == {"dense"}  # no sparse encodings
