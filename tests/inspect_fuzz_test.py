"""Fuzz test: `inspect` is total over arbitrary bytes and never passes a corrupt file.

Thousands of seeded, deterministic mutations (byte and bit flips, hostile 32-bit
offsets and 16-bit vtable entries, truncations, insertions, deletions) of small
files exported by tfprune and of a stock converter file. For every mutant,
`inspect` must return a report or raise `InvalidTFLiteError` (never its
last-resort "tfprune bug" wrapper), within a time bound; a mutant of a tfprune
file that still parses must never have checksum "ok".
"""
import os
import struct
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # pylint: disable=g-import-not-at-top
import numpy as np
import pytest

from tfprune import export

MUTANTS_PER_FILE = 1500
MAX_SECONDS_PER_CASE = 1.0  # CPU seconds of this process: immune to other load
HOSTILE_U32 = (0, 1, 3, 4, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFFFC, 0x10000)
HOSTILE_U16 = (0, 1, 2, 3, 0xFFFF, 0x8000, 0xFFFE)


def _conv_model():
  rng = np.random.default_rng(1)
  inp = keras.Input((8, 8, 2))
  x = keras.layers.Conv2D(8, 3, activation="relu")(inp)
  x = keras.layers.Flatten()(x)
  model = keras.Model(inp, keras.layers.Dense(4)(x))
  for layer in model.layers:
    if hasattr(layer, "kernel"):
      k = layer.kernel.numpy()
      layer.kernel.assign(k * (rng.random(k.shape) > 0.8))
  return model


@pytest.fixture(scope="module")
def seeds(sparse_mlp):
  """name -> (bytes, has tfprune metadata): small valid files of each kind we write."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  mlp = sparse_mlp(4, out=8, density=0.2)
  conv = _conv_model()
  stock = tf.lite.TFLiteConverter.from_keras_model(mlp).convert()
  return {
      "float_block": (export.to_tflite(mlp, num_verify_samples=2), True),
      "int8_conv": (export.to_tflite(
          conv, quantize="int8", num_verify_samples=2,
          representative_data=rng.standard_normal((4, 8, 8, 2)).astype(np.float32)), True),
      "stock_converter": (bytes(stock), False),
  }


def _mutants(data, seed):
  """Deterministic list of (description, mutated bytes)."""
  rng = np.random.default_rng(seed)
  n = len(data)
  out = []
  for k in range(MUTANTS_PER_FILE):
    b = bytearray(data)
    kind = k % 8
    pos = int(rng.integers(0, n))
    if kind == 0:
      b[pos] = (b[pos] + int(rng.integers(1, 256))) % 256
      what = f"byte {pos} changed"
    elif kind == 1:
      bit = int(rng.integers(0, 8))
      b[pos] ^= 1 << bit
      what = f"bit {bit} of byte {pos} flipped"
    elif kind == 2:
      pos -= pos % 4
      value = int(rng.choice(HOSTILE_U32)) if rng.random() < 0.7 else int(rng.integers(0, n + 64))
      b[pos:pos + 4] = struct.pack("<I", value)[:len(b) - pos]
      what = f"u32 at {pos} set to {value:#x}"
    elif kind == 3:
      pos -= pos % 2
      value = int(rng.choice(HOSTILE_U16)) if rng.random() < 0.7 else int(rng.integers(0, 256))
      b[pos:pos + 2] = struct.pack("<H", value)[:len(b) - pos]
      what = f"u16 at {pos} set to {value:#x}"
    elif kind == 4:
      del b[pos:]
      what = f"truncated to {pos} bytes"
    elif kind == 5:
      count = int(rng.integers(1, 17))
      b[pos:pos] = rng.integers(0, 256, count, np.uint8).tobytes()
      what = f"{count} random bytes inserted at {pos}"
    elif kind == 6:
      count = int(rng.integers(1, 17))
      del b[pos:pos + count]
      what = f"{count} bytes deleted at {pos}"
    else:
      for _ in range(4):
        p = int(rng.integers(0, n))
        b[p] = int(rng.integers(0, 256))
      what = "4 random bytes overwritten"
    if bytes(b) != data:
      out.append((what, bytes(b)))
  return out


@pytest.mark.parametrize("name", ["float_block", "int8_conv", "stock_converter"])
def test_inspect_is_total_on_mutants(seeds, name):
  data, tfprune_file = seeds[name]
  original = export.inspect(data)
  assert original.checksum == ("ok" if tfprune_file else "absent")
  counts = {"report": 0, "invalid": 0, "mismatch": 0}
  slowest = 0.0
  for what, mutant in _mutants(data, seed=len(data)):
    start = time.process_time()
    try:
      report = export.inspect(mutant)
    except export.InvalidTFLiteError as e:
      assert "tfprune bug" not in str(e), f"{name}, {what}: {e}"
      counts["invalid"] += 1
    except Exception as e:  # pylint: disable=broad-except
      pytest.fail(f"{name}, {what}: inspect raised {type(e).__name__}: {e}")
    else:
      counts["report"] += 1
      report.format_table()
      if tfprune_file:
        assert report.checksum != "ok", f"{name}, {what}: corrupt file passes its checksum"
        counts["mismatch"] += report.checksum == "mismatch"
    slowest = max(slowest, time.process_time() - start)
  assert slowest < MAX_SECONDS_PER_CASE, f"{name}: slowest mutant took {slowest:.2f} s"
  # The mutations reach both outcomes: parse errors and reports of a readable file.
  assert counts["invalid"] > 50 and counts["report"] > 50, counts
  if tfprune_file:
    assert counts["mismatch"] >= 0.9 * counts["report"], counts


def test_hostile_lengths_are_refused_quickly(seeds):
  """Every 32-bit word set to a huge value: refused fast (CPU time), no huge allocation."""
  data, _ = seeds["float_block"]
  start = time.process_time()
  for pos in range(0, len(data) - 4, 4):
    b = bytearray(data)
    b[pos:pos + 4] = struct.pack("<I", 0x7FFFFFF0)
    try:
      export.inspect(bytes(b))
    except export.InvalidTFLiteError as e:
      assert "tfprune bug" not in str(e), f"u32 at {pos}: {e}"
  assert time.process_time() - start < 20


def test_shared_offsets_cannot_amplify_work():
  """3000 subgraph offsets to one subgraph of 3000 offsets to one tensor: 9M tables to unpack."""
  import flatbuffers  # pylint: disable=g-import-not-at-top
  from ai_edge_litert import schema_py_generated as schema  # pylint: disable=g-import-not-at-top
  n = 3000
  b = flatbuffers.Builder(0)
  schema.TensorStart(b)
  tensor = schema.TensorEnd(b)
  schema.SubGraphStartTensorsVector(b, n)
  for _ in range(n):
    b.PrependUOffsetTRelative(tensor)
  tensors = b.EndVector()
  schema.SubGraphStart(b)
  schema.SubGraphAddTensors(b, tensors)
  subgraph = schema.SubGraphEnd(b)
  schema.ModelStartSubgraphsVector(b, n)
  for _ in range(n):
    b.PrependUOffsetTRelative(subgraph)
  subgraphs = b.EndVector()
  schema.ModelStart(b)
  schema.ModelAddSubgraphs(b, subgraphs)
  b.Finish(schema.ModelEnd(b), file_identifier=b"TFL3")
  data = bytes(b.Output())
  assert len(data) < 30000
  start = time.process_time()
  with pytest.raises(export.InvalidTFLiteError, match="Model.Subgraphs.*more than a file of"):
    export.inspect(data)
  assert time.process_time() - start < 1


if __name__ == "__main__":
  import sys  # pylint: disable=g-import-not-at-top
  sys.exit(pytest.main([__file__]))
