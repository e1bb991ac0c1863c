"""Tests of tflite_demo/micro's DECODE model: decode_model_data.cc and decode_data.cc.

The bundled model is a DS-CNN pruned unstructured (magnitude) whose conv / FC weights are
stored compressed: TFLite Micro's `TFLM_DECODE` custom operator expands each pruning
bitmask and its kept values right before the op that reads it (docs/export.md, section
11). The `tflite-micro` interpreter (the kernels the app links) must reproduce LiteRT's
golden int8 outputs in decode_data.cc (LiteRT ran the uncompressed file: it has no
DECODE), with the decoded tensors in the arena and in the alternate decompression memory
whose size the generated .cc carries; both must fit the app's buffers (main.cc).
"""
import os
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MICRO = os.path.join(ROOT, "tflite_demo", "micro")
sys.path.insert(0, os.path.join(ROOT, "tflite_demo", "tools"))
import tflite_fc  # pylint: disable=g-import-not-at-top,wrong-import-position

NAME = "decode_model_data"
CONV_FC = {3: "CONV_2D", 4: "DEPTHWISE_CONV_2D", 9: "FULLY_CONNECTED"}  # schema codes
CUSTOM = 32
ITEMSIZE = {0: 4, 2: 4, 4: 8, 7: 2, 9: 1}  # FLOAT32, INT32, INT64, INT16, INT8


def _read(name):
  with open(os.path.join(MICRO, name)) as f:
    return f.read()


def _c_int_array(text, name):
  m = re.search(rf"{name}\[[^\]]*\](?:\[[^\]]*\])?\s*=\s*\{{(.*?)\}};", text, re.S)
  return np.array([int(v) for v in re.findall(r"-?\d+", m.group(1))])


def _c_constant(text, name):
  return int(re.search(rf"\b{name}\s*=\s*(\d+)", text).group(1))


@pytest.fixture(scope="module")
def bundle():
  """(model bytes, alternate decompression bytes, int8 inputs [n, 49, 10, 1], golden)."""
  cc = _read(f"{NAME}.cc")
  model = tflite_fc.read_c_array(os.path.join(MICRO, f"{NAME}.cc"))[NAME]
  assert _c_constant(cc, f"{NAME}_len") == len(model)
  alt = _c_constant(cc, f"{NAME}_alt_decompression_bytes")
  assert f"extern const unsigned int {NAME}_alt_decompression_bytes;" in _read(f"{NAME}.h")
  text, header = _read("decode_data.cc"), _read("decode_data.h")
  n = _c_constant(header, "kNumDecodeSamples")
  classes = _c_constant(header, "kDecodeClasses")
  x = _c_int_array(text, "g_decode_inputs").reshape(n, 49, 10, 1).astype(np.int8)
  golden = _c_int_array(text, "g_decode_expected").reshape(n, classes)
  assert n >= 2 and classes == 12 and len(_c_int_array(text, "g_decode_labels")) == n
  return model, alt, x, golden


def _run(model, x, alt):
  from tflite_micro.python.tflite_micro import runtime  # pylint: disable=g-import-not-at-top
  interp = runtime.Interpreter.from_bytes(bytes(model), arena_size=256 * 1024,
                                          alt_decompression_memory_size=alt)
  out = []
  for row in x:
    interp.set_input(row[None], 0)
    interp.invoke()
    out.append(interp.get_output(0)[0].astype(int))
  return np.stack(out)


def test_weights_are_pruning_bitmasks_decoded_right_before_their_op(bundle):
  from ai_edge_litert.tools import flatbuffer_utils  # pylint: disable=g-import-not-at-top
  model = flatbuffer_utils.convert_bytearray_to_object(bytearray(bundle[0]))
  sg = model.subgraphs[0]
  codes = [model.operatorCodes[op.opcodeIndex] for op in sg.operators]
  def is_decode(code):
    return (max(code.builtinCode, code.deprecatedBuiltinCode) == CUSTOM
            and bytes(code.customCode or b"") == b"TFLM_DECODE")
  decodes = [i for i, c in enumerate(codes) if is_decode(c)]
  consumers = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in codes]
  assert len(decodes) >= 10, "every conv / depthwise / FC weight of the DS-CNN is compressed"
  kept = []
  for i in decodes:
    op, nxt = sg.operators[i], sg.operators[i + 1]
    # TFLM reuses alternate decompression memory from offset 0 for every DECODE: each
    # decoded tensor must be read by the very next op only (a conv or FC), or it is
    # overwritten before use.
    assert consumers[i + 1] in CONV_FC, consumers[i + 1]
    for out in op.outputs:
      readers = [j for j, o in enumerate(sg.operators) if out in list(o.inputs)]
      assert readers == [i + 1]
    for enc, anc, out in zip(op.inputs[0::2], op.inputs[1::2], op.outputs):
      bits = bytes(model.buffers[sg.tensors[enc].buffer].data)
      head = bytes(model.buffers[sg.tensors[anc].buffer].data)
      assert head[:2] == bytes([2, 1]) and head[4] == 1  # PRUNING, DCM v1, pruning v1
      decoded = sg.tensors[out]
      size = int(np.prod(decoded.shape))
      assert len(bits) == -(-size // 8)
      ones = int(np.unpackbits(np.frombuffer(bits, np.uint8))[:size].sum())
      # The 16-byte header, then one value (the tensor's own type) per 1-bit.
      assert len(head) == 16 + ones * ITEMSIZE[decoded.type]
      if len(decoded.shape) > 1:  # the weights (not a bias)
        kept.append(ones / size)
  # Pruned 80% unstructured: at most ~20% of every weight is stored.
  assert kept and max(kept) <= 0.25, kept


def test_tflm_runs_the_compressed_model_like_litert_in_both_memory_modes(bundle):
  model, alt, x, golden = bundle
  in_arena = _run(model, x, 0)
  in_alt = _run(model, x, alt)
  # The decoded weights are the same wherever they live: bit-identical outputs.
  np.testing.assert_array_equal(in_alt, in_arena)
  # Golden = LiteRT on the uncompressed file; TFLM's reference kernels may differ by one
  # int8 step (as for the other DS-CNN), never in the top class.
  assert np.abs(in_arena - golden).max() <= 1
  np.testing.assert_array_equal(in_arena.argmax(1), golden.argmax(1))
  assert len(set(golden.argmax(1))) > 1  # not a dead model


def test_alternate_decompression_size_is_what_tflm_needs_and_fits_the_app(bundle):
  from tfprune.export import verify  # pylint: disable=g-import-not-at-top
  model, alt, _, _ = bundle
  def arena(offered):
    return verify.tflm_arena_bytes(model, arena_size=256 * 1024,
                                   alt_decompression_bytes=offered)["total"]
  in_arena, with_alt = arena(0), arena(alt)
  # The alternate memory keeps the decoded tensors out of the arena ...
  assert with_alt < in_arena
  # ... all of them (more memory saves nothing more), and 16 bytes less is not enough
  # (TFLM then silently puts the largest decoded tensor back into the arena).
  assert arena(1 << 20) == with_alt
  assert arena(alt - 16) > with_alt
  main = _read("main.cc")  # kTensorArenaSize = 32 * 1024; kDecompressionMemorySize = 8 * 1024
  assert in_arena < _c_constant(main, "kTensorArenaSize") * 1024
  assert alt <= _c_constant(main, "kDecompressionMemorySize") * 1024


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
