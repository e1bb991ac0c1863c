"""Exporter robustness: all-zero tensors in every encoding, never a sparse file larger
than dense, named converter errors, non-finite data refused before conversion,
temporary directories removed, quiet conversion, one primary entry point."""
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # pylint: disable=g-import-not-at-top
import numpy as np
import pytest
import tensorflow as tf

from tfprune import export
from tfprune.export import graph
from tfprune.export import sparse_encoding
from tfprune.export import sparsify
from tfprune.export import tflite
from tfprune.export import verify


@pytest.mark.parametrize("encode", [
    sparse_encoding.encode_csr,
    lambda d: sparse_encoding.encode_csf(d, 0),
    lambda d: sparse_encoding.encode_csf(d, 1),
    sparse_encoding.encode_compressed,
    lambda d: sparse_encoding.encode_block(d.reshape(d.shape[0], -1), 4),
    lambda d: sparse_encoding.encode_block(d.reshape(d.shape[0], -1), 16),
    lambda d: sparse_encoding.encode_segmented(d.reshape(d.shape[0], -1)),
], ids=["csr", "csf0", "csf1", "compressed", "block4", "block16", "segmented"])
def test_all_zero_tensor_stores_one_explicit_zero(encode):
  dense = np.zeros((4, 8, 64), np.float32)        # segmented: 512 columns -> 2 x 256
  enc = encode(dense)
  assert enc.values.size >= 1 and not enc.values.any()
  shape = enc.stored_shape or (dense.shape if "block" not in enc.format else (4, 512))
  assert not sparse_encoding.decode(enc.values, shape, enc.sparsity).any()


def _zero_model(kind):
  """(model, data, quantize, sparse, kernel size) with one all-zero kernel.

  The model also adds the channel mean of its input to the layer's output, so it stays
  alive: the exporter refuses a model whose output does not depend on its input
  (tfprune.DeadModelError), and this test is about encoding the all-zero kernel.
  """
  rng = np.random.default_rng(0)
  shapes = {"conv_1x1": (8, 8, 3), "conv": (8, 8, 16), "depthwise": (8, 8, 16),
            "fc_block4": (64,), "fc_int8": (64,), "fc_segmented": (520,), "conv_int8": (8, 8, 16)}
  layer = {"conv_1x1": lambda: keras.layers.Conv2D(8, 1),
           "conv": lambda: keras.layers.Conv2D(32, 3, padding="same"),
           "depthwise": lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=4,
                                                             padding="same"),
           "conv_int8": lambda: keras.layers.Conv2D(32, 3, padding="same"),
           "fc_block4": lambda: keras.layers.Dense(32),
           "fc_int8": lambda: keras.layers.Dense(32),
           "fc_segmented": lambda: keras.layers.Dense(32)}[kind]()
  inp = keras.Input(shapes[kind])
  live = keras.ops.mean(inp, axis=-1, keepdims=True)
  model = keras.Model(inp, layer(inp) + live)
  layer.kernel.assign(np.zeros(layer.kernel.shape))
  layer.bias.assign(rng.standard_normal(layer.bias.shape))
  quantize = "int8" if kind in ("fc_int8", "fc_segmented", "conv_int8") else None
  sparse = "block" if kind in ("fc_block4", "fc_int8") else "auto"
  data = rng.standard_normal((16,) + shapes[kind]).astype(np.float32)
  return model, data, quantize, sparse, int(np.prod(layer.kernel.shape))


@pytest.mark.parametrize("kind,fmt", [
    ("conv_1x1", "dense"),       # the repro: too small to be worth encoding
    ("conv", "csr"), ("depthwise", "csr"), ("conv_int8", "csr"),
    ("fc_block4", "block1x4"), ("fc_int8", "block1x16"), ("fc_segmented", "csr"),
])
def test_all_zero_kernels_export_and_verify(kind, fmt, monkeypatch):
  model, data, quantize, sparse, size = _zero_model(kind)
  if kind == "fc_segmented":   # 520 columns: no 1x16 blocks; segmented never smallest for
    # all zeros, so make it look free to test it
    monkeypatch.setattr(sparsify, "RESHAPE_OVERHEAD", -10 ** 6)
  result = export.convert(model, quantize=quantize, sparse=sparse, representative_data=data)
  assert [t.format for t in result.tensors if t.dense_bytes in (size, 4 * size)] == [fmt]
  assert [r.runtime for r in result.verification] == ["xnnpack", "builtin"]
  ref = np.asarray(model(data[:4]))
  for xnn in (True, False):
    y, _, detail = verify.run_litert(result.flatbuffer, data[:4], xnnpack=xnn)
    assert np.all(np.isfinite(y))
    assert np.max(np.abs(y - ref)) <= verify.tolerance(ref, quantize, detail["quantization"][0] or None)
  if kind == "fc_segmented":
    m = graph.load(result.flatbuffer)
    assert "RESHAPE" in {graph.op_name(m, op) for op in m.subgraphs[0].operators}


def test_never_writes_a_sparse_file_larger_than_dense(monkeypatch, sparse_mlp):
  model = sparse_mlp("random", density=0.9)
  # Make every encoding look free so the per-tensor guard lets them through:
  # the whole-file guard must still keep the dense conversion.
  monkeypatch.setattr(sparsify, "DENSIFY_OVERHEAD", -10 ** 6)
  result = export.convert(model)
  assert result.dense_fallback
  assert len(result.flatbuffer) <= result.dense_size
  assert {t.format for t in result.tensors} == {"dense"}
  assert any("dense file" in n for n in result.notes) and "note: wrote the dense" in result.summary()
  m = graph.load(result.flatbuffer)
  assert all(t.sparsity is None for t in m.subgraphs[0].tensors)
  assert result.dense_size == len(result.flatbuffer)
  assert export.inspect(result.flatbuffer).metadata["sparse"] == "auto"
  monkeypatch.undo()
  normal = export.convert(model)
  assert not normal.dense_fallback and len(normal.flatbuffer) <= normal.dense_size


def test_block_mode_keeps_a_tensor_dense_when_blocks_are_larger(sparse_mlp):
  model = sparse_mlp("2:4")
  calib = np.random.default_rng(0).standard_normal((32, 64)).astype(np.float32)
  block = export.convert(model, quantize="int8", representative_data=calib, sparse="block")
  assert [t.format for t in block.tensors] == ["dense", "dense"]
  assert len(block.flatbuffer) <= block.dense_size


def test_converter_sparse_layout_that_does_not_decode_is_converted_again(monkeypatch):
  # The full-int8 converter packs a narrow FC's two nonzero rows ([4, 8]) into one
  # 1x16 block: a layout that does not fit the shape, and a file whose outputs for
  # the other rows are wrong. The exporter must convert again without that pass.
  keras.utils.set_random_seed(0)
  i = keras.Input((8,))
  model = keras.Model(i, keras.layers.Dense(4, name="out")(keras.layers.Dense(8)(i)))
  kernel = model.get_layer("out").kernel
  kernel.assign(np.where(np.arange(4)[None, :] < 2, kernel.numpy(), 0.0))
  data = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)
  passes = []
  run = tflite._run_converter
  monkeypatch.setattr(tflite, "_run_converter",
                      lambda *a, **k: passes.append(k["sparsity"]) or run(*a, **k))
  result = export.convert(model, quantize="int8", representative_data=data)
  assert passes == [True, False]
  assert any("without the converter's sparsity pass" in n and "[4, 8]" in n
             for n in result.notes)
  assert [r.runtime for r in result.verification] == ["xnnpack", "builtin"]
  with pytest.raises(sparsify.UndecodableSparseTensor, match=r"\[4, 8\].*block1x16"):
    sparsify.densify_model(graph.load(run(model, "int8", [data], sparsity=True)[0]))


def _lambda_model(fn, name):
  inp = keras.Input((3, 3))
  return keras.Model(inp, keras.layers.Flatten()(
      keras.layers.Lambda(fn, output_shape=(3, 3), name=name)(inp)))


@pytest.mark.parametrize("fn,name,op", [
    (tf.linalg.inv, "bad_inv", "MatrixInverse"),
    (lambda t: tf.ensure_shape(tf.py_function(lambda z: z * 2, [t], tf.float32), [None, 3, 3]),
     "bad_py", "py_function"),
])
def test_converter_errors_are_named(fn, name, op, tmp_path, monkeypatch, capfd):
  monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
  model = _lambda_model(fn, name)
  with pytest.raises(export.ExportError) as err:
    export.convert(model)
  msg = str(err.value)
  assert isinstance(err.value, ValueError)
  assert f"'{name}' (Lambda)" in msg and op in msg
  assert "Rewrite that layer" in msg or "rewrite that layer" in msg
  assert "\n" not in msg.strip()                      # one paragraph
  assert os.listdir(tmp_path) == []                   # no SavedModel left behind
  out, errout = capfd.readouterr()
  assert "Saved artifact" not in out and len(errout.splitlines()) <= 3


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_non_finite_calibration_refused_before_conversion(bad, monkeypatch, sparse_mlp):
  def no_converter(*a, **k):
    raise AssertionError("the converter must not run")

  monkeypatch.setattr(tflite, "_run_converter", no_converter)
  data = np.random.default_rng(0).standard_normal((16, 64)).astype(np.float32)
  data[5, 3] = bad
  if np.isnan(bad):
    data[:] = np.nan
  with pytest.raises(export.ExportError, match=r"non-finite values .* sample (5|0)"):
    export.convert(sparse_mlp(4), quantize="int8", representative_data=data)
  with pytest.raises(export.ExportError, match="non-finite"):     # verification data too
    export.convert(sparse_mlp(4), representative_data=data)


def test_model_with_nan_weights_refused_before_conversion(monkeypatch, sparse_mlp):
  monkeypatch.setattr(tflite, "_run_converter", lambda *a, **k: 1 / 0)
  model = sparse_mlp(4)
  k = model.layers[1].kernel.numpy()
  k[0, 0] = np.nan
  model.layers[1].kernel.assign(k)
  with pytest.raises(export.ExportError, match="itself outputs NaN"):
    export.convert(model)


def test_success_is_quiet_and_leaves_no_temp_dir(tmp_path, monkeypatch, capfd, sparse_mlp):
  monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
  capfd.readouterr()
  result = export.convert(sparse_mlp(4))
  out, err = capfd.readouterr()
  assert out == "" and len(err.splitlines()) <= 2, (out, err)
  assert os.listdir(tmp_path) == []
  assert all(r.ok for r in result.verification)
  export.convert(sparse_mlp(4), verbose=True)     # verbose: the SavedModel lines come back
  assert "Saved artifact" in capfd.readouterr().out


def test_entry_points(tmp_path, sparse_mlp):
  model = sparse_mlp(4)
  result = export.convert(model)
  assert isinstance(result, export.ExportResult) and result.flatbuffer is result.model_bytes
  path = result.save(tmp_path / "a.tflite")
  assert (tmp_path / "a.tflite").read_bytes() == result.flatbuffer and path == tmp_path / "a.tflite"
  assert export.to_tflite(model) == result.flatbuffer           # alias: bytes
  saved = export.save_tflite(model, tmp_path / "b.tflite")      # alias: writes, returns result
  assert isinstance(saved, export.ExportResult)
  assert export.inspect_tflite is export.inspect and callable(export.inspect)
  assert export.write_c_array is export.c_array
  from tfprune.export.inspect import InvalidTFLiteError  # pylint: disable=g-import-not-at-top
  assert InvalidTFLiteError is export.InvalidTFLiteError
  assert export.inspect(tmp_path / "a.tflite").metadata["target"] == "litert"


def test_size_table_keeps_full_tensor_names():
  name = "functional/very_long_layer_name_for_a_block/dense_kernel/MatMul;bias"
  report = sparsify.TensorReport(name, "FULLY_CONNECTED", (4, 4), "FLOAT32", "dense", 16, 64, 64)
  result = tflite.ExportResult(b"x" * 100, [report], [], 100, "litert", None, "auto", "per_channel")
  assert name in result.size_table()


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
