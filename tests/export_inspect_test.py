"""Tests for tfprune.export.inspect and the tfprune-inspect binary."""
import json
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # pylint: disable=g-import-not-at-top
import numpy as np
import pytest

from ai_edge_litert import schema_py_generated as schema
from tfprune import export
from tfprune.export import fbverify
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


def _kernel_span(data):
  """(start, length, name) of the largest constant buffer in the file and its tensor's name."""
  root = schema.Model.GetRootAs(data, 0)
  best = None
  for i in range(root.BuffersLength()):
    span = graph.buffer_data_span(data, i)
    if span and (best is None or span[1] > best[1][1]):
      best = (i, span)
  sg = root.Subgraphs(0)
  names = [graph.text(sg.Tensors(t).Name()) for t in range(sg.TensorsLength())
           if sg.Tensors(t).Buffer() == best[0]]
  return best[0], best[1][0], names[0]


def test_good_file_checksum_ok(sparse_file):
  report = export.inspect(sparse_file)
  assert report.checksum == "ok" and report.corruption == []
  assert "checksum ok" in report.format_table()
  assert set(report.metadata["crc32"]) == {"buffers", "file"}


def test_flipped_weight_byte_is_reported(sparse_file):
  data = bytearray(open(sparse_file, "rb").read())
  index, start, name = _kernel_span(bytes(data))
  data[start + 5] ^= 0x10
  report = export.inspect(bytes(data))
  assert report.checksum == "mismatch"
  assert report.corruption == [s for s in report.corruption
                               if s.startswith(f"checksum mismatch in buffer {index} ")]
  assert len(report.corruption) == 1 and f"(tensor '{name}')" in report.corruption[0]
  assert "CORRUPT: checksum mismatch in buffer" in report.format_table()


def test_changed_table_byte_is_reported(sparse_file):
  data = bytearray(open(sparse_file, "rb").read())
  tensor = schema.Model.GetRootAs(bytes(data), 0).Subgraphs(0).Tensors(0)
  name_at = tensor._tab.Vector(tensor._tab.Offset(10))  # pylint: disable=protected-access
  data[name_at] ^= 0x01                                # a tensor name: not in any buffer
  report = export.inspect(bytes(data))
  assert report.checksum == "mismatch"
  assert len(report.corruption) == 1 and "outside the weight buffers" in report.corruption[0]


def test_stock_converter_file_has_no_checksum_note():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  inp = keras.Input((8,))
  data = tf.lite.TFLiteConverter.from_keras_model(
      keras.Model(inp, keras.layers.Dense(4)(inp))).convert()
  report = export.inspect(data)
  assert report.checksum == "absent" and report.corruption == [] and report.metadata == {}
  assert "no tfprune checksum" in report.format_table()


def test_checksum_costs_few_bytes(sparse_file):
  data = open(sparse_file, "rb").read()
  meta = export.inspect(data).metadata
  nbuf = schema.Model.GetRootAs(data, 0).BuffersLength()
  cost = len(json.dumps({"crc32": meta["crc32"]}, separators=(",", ":")))
  assert cost <= 40 + 6 * nbuf, (cost, nbuf)   # 4 bytes per buffer, base64, plus framing


def _mutated(sparse_file, fn):
  m = graph.load(open(sparse_file, "rb").read())
  fn(m)
  return graph.dump(m)


def test_non_utf8_names_do_not_leak_unicode_errors(sparse_file):
  def rename(m):
    for md in m.metadata:
      md.name = b"\xff" + (md.name if isinstance(md.name, bytes) else md.name.encode())
    m.subgraphs[0].tensors[1].name = b"t\xff"
    m.operatorCodes[0].builtinCode = m.operatorCodes[0].deprecatedBuiltinCode = (
        graph.BuiltinOperator.CUSTOM)
    m.operatorCodes[0].customCode = b"op\xfe"
  report = export.inspect(_mutated(sparse_file, rename))
  assert report.checksum == "absent"                      # our metadata name no longer matches
  assert "t\ufffd" in [t.name for t in report.tensors]
  assert "CUSTOM(op\ufffd) v8" in report.ops


def test_operator_without_inputs_or_outputs(sparse_file):
  def strip_io(m):
    m.subgraphs[0].operators[0].inputs = None
    m.subgraphs[0].operators[-1].outputs = []
  report = export.inspect(_mutated(sparse_file, strip_io))
  assert len(report.ops) == len(graph.load(open(sparse_file, "rb").read()).subgraphs[0].operators)


def test_dangling_tensor_index_is_invalid(sparse_file):
  def dangle(m):
    m.subgraphs[0].operators[0].inputs[0] = -7
  with pytest.raises(export.InvalidTFLiteError, match="operator #0 uses tensor -7"):
    export.inspect(_mutated(sparse_file, dangle))


def test_densify_reshape_cycle_terminates(sparse_file):
  def cycle(m):
    sg = m.subgraphs[0]
    kernel = [i for i, t in enumerate(sg.tensors) if t.sparsity is not None][0]
    sg.tensors.append(schema.TensorT())
    x = len(sg.tensors) - 1
    for code, inputs in ((graph.BuiltinOperator.DENSIFY, [kernel]),
                         (graph.BuiltinOperator.RESHAPE, [x])):
      op = schema.OperatorT()
      op.opcodeIndex = graph.get_opcode_index(m, code, 1)
      op.inputs, op.outputs = inputs, [x]               # RESHAPE writes its own input
      sg.operators.append(op)
  report = export.inspect(_mutated(sparse_file, cycle))
  assert "DENSIFY v1" in report.ops and "RESHAPE v1" in report.ops


def test_verifier_layout_covers_the_schema():
  layout = fbverify.layout()
  assert not [(t, f) for t, fields in layout.items() for f in fields if f[1] == "unknown"]
  assert (16, "table", "SparsityParameters", "Sparsity") in layout["Tensor"]
  union = [a for _, k, a, name in layout["Operator"] if name == "BuiltinOptions"][0]
  assert union[1][schema.BuiltinOptions.FullyConnectedOptions] == "FullyConnectedOptions"


def test_verifier_rejects_out_of_range_vtable(sparse_file):
  data = bytearray(open(sparse_file, "rb").read())
  root = int.from_bytes(data[:4], "little")
  data[root:root + 4] = (-len(data)).to_bytes(4, "little", signed=True)  # vtable past the end
  with pytest.raises(export.InvalidTFLiteError, match="Model vtable|uint16"):
    export.inspect(bytes(data))


def test_binary_exits_3_on_corrupt_file(sparse_file, tmp_path, capsys):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from tfprune.bin import inspect as inspect_bin  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  data = bytearray(open(sparse_file, "rb").read())
  _, start, _ = _kernel_span(bytes(data))
  data[start] ^= 0xFF
  bad = tmp_path / "corrupt.tflite"
  bad.write_bytes(bytes(data))
  assert inspect_bin.main(["tfprune-inspect", str(sparse_file), str(bad)]) == 3
  err = capsys.readouterr().err
  assert "corrupt.tflite: corrupt file: checksum mismatch in buffer" in err
  assert inspect_bin.main(["tfprune-inspect", str(bad), str(tmp_path / "missing.tflite")]) == 1


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
