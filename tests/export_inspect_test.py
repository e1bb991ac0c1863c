"""Tests for tfprune.export.inspect and the tfprune-inspect binary."""
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # pylint: disable=g-import-not-at-top
import numpy as np
import pytest

from tfprune import export
from tfprune.export import graph
from tfprune.export import sparsify


@pytest.fixture(scope="module")
def sparse_file(tmp_path_factory, sparse_mlp):
  model = sparse_mlp(4, density=0.1)
  path = tmp_path_factory.mktemp("inspect") / "m.tflite"
  export.save_tflite(model, path)
  return path


def test_good_file_report(sparse_file):
  report = export.inspect(sparse_file)
  assert report.file_bytes == os.path.getsize(sparse_file)
  assert [t.format for t in report.tensors if len(t.shape) == 2] == ["block1x4", "block1x4"]
  kernel = [t for t in report.tensors if t.shape == (64, 64)][0]
  assert kernel.op == "FULLY_CONNECTED" and kernel.dtype == "FLOAT32"
  assert 0 < kernel.nonzeros < 64 * 64 * 0.2
  assert kernel.bytes < 64 * 64 * 4 * 0.2
  assert report.warnings == []
  assert "no known-broken patterns" in report.format_table()


def _rewrite(path, fn):
  m = graph.load(open(path, "rb").read())
  fn(m)
  return graph.dump(m)


def test_warns_on_sparse_fc_above_version_8(sparse_file):
  def bump(m):
    for oc in m.operatorCodes:
      if graph.builtin_code(oc) == graph.BuiltinOperator.FULLY_CONNECTED:
        oc.version = 12
  warnings = export.inspect(_rewrite(sparse_file, bump)).warnings
  assert any("version 12" in w and "XNNPACK" in w for w in warnings)


def test_warns_on_sparse_tensors_in_micro_model(sparse_file):
  warnings = export.inspect(sparse_file, target="micro").warnings
  assert any("TFLite Micro" in w for w in warnings)


def test_warns_on_densify_feeding_int8_op():
  rng = np.random.default_rng(0)
  inp = keras.Input((64,))
  model = keras.Model(inp, keras.layers.Dense(16)(inp))
  model.layers[1].kernel.assign(model.layers[1].kernel.numpy() * (rng.random((64, 16)) > 0.9))
  data = export.to_tflite(model, quantize="int8", representative_data=rng.standard_normal((8, 64)))
  m = graph.load(data)
  assert any(graph.op_name(m, op) == "DENSIFY" for op in m.subgraphs[0].operators)
  assert export.inspect(data).warnings == []         # our FC v8 retag makes it safe
  for op in m.subgraphs[0].operators:
    if graph.op_name(m, op) == "FULLY_CONNECTED":
      graph.set_op_version(m, op, 4)                 # what the stock converter writes
  warnings = export.inspect(graph.dump(m)).warnings
  assert any("DENSIFY" in w and "failed to delegate" in w for w in warnings)


@pytest.mark.parametrize("cut", [0.5, 0.9, 0.1])
def test_truncated_files_give_clear_error(sparse_file, cut):
  data = open(sparse_file, "rb").read()
  with pytest.raises(export.InvalidTFLiteError, match="truncated or corrupt|too short"):
    export.inspect(data[: int(len(data) * cut)])


@pytest.mark.parametrize("data", [b"", b"garbage" * 20, b"\x00" * 4 + b"TFL3" + b"\xff" * 64,
                                  bytes(np.random.default_rng(3).integers(0, 256, 5000, np.uint8))])
def test_garbage_gives_clear_error(data):
  with pytest.raises(export.InvalidTFLiteError):
    export.inspect(data)


def test_missing_file(tmp_path):
  with pytest.raises(export.InvalidTFLiteError, match="cannot read"):
    export.inspect(tmp_path / "nope.tflite")


def test_binary(sparse_file, tmp_path):
  bad = tmp_path / "bad.tflite"
  bad.write_bytes(open(sparse_file, "rb").read()[:300])
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  cmd = [sys.executable, "-m", "tfprune.bin.inspect", str(sparse_file), str(bad)]
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
  assert proc.returncode == 1
  assert "block1x4" in proc.stdout
  assert "bad.tflite" in proc.stderr and "truncated" in proc.stderr


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
