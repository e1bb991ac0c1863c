"""TFLite Micro DECODE compression (tfprune.export, compress=): encoders, the verified
export, the memory report, inspect, c_array and the CLI.

Every compressed file is run in the `tflite-micro` interpreter (its DECODE kernels) and
must give exactly the uncompressed file's int8 outputs.
"""
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

pytest.importorskip("tflite_micro")

from tfprune.export import c_array  # pylint: disable=g-bad-import-order  (the function)
from tfprune.export import graph
from tfprune.export import inspect_tflite
from tfprune.export import micro_compress
from tfprune.export import targets
from tfprune.export import tflite
from tfprune.export import verify


def _prune(model, sparsity, seed=0):
  """Zeroes the smallest `sparsity` share of every conv/FC kernel (like tfprune.strip)."""
  del seed
  for layer in model.layers:
    for v in layer.trainable_weights:
      if len(v.shape) > 1:
        w = v.numpy()
        w[np.abs(w) < np.quantile(np.abs(w), sparsity)] = 0
        v.assign(w)
  return model


def _cluster(model, levels=12):
  """Snaps every conv/FC kernel to `levels` values per output channel (incl. zero)."""
  for layer in model.layers:
    for v in layer.trainable_weights:
      if len(v.shape) > 1:
        w = v.numpy()
        axis = len(w.shape) - 1
        peak = np.max(np.abs(w), axis=tuple(range(axis)), keepdims=True)
        step = peak / (levels // 2)
        v.assign(np.round(w / step) * step)
  return model


def _conv_net(seed=0, width=48):
  keras.utils.set_random_seed(seed)
  inp = keras.Input((20, 20, 3))
  x = keras.layers.Conv2D(width, 3, activation="relu")(inp)
  x = keras.layers.DepthwiseConv2D(3, activation="relu")(x)
  x = keras.layers.Conv2D(2 * width, 1, activation="relu")(x)
  x = keras.layers.MaxPooling2D(2)(x)
  x = keras.layers.Conv2D(2 * width, 3, strides=2, activation="relu")(x)
  x = keras.layers.GlobalAveragePooling2D()(x)
  x = keras.layers.Dense(64, activation="relu")(x)
  return keras.Model(inp, keras.layers.Dense(10)(x))


def _data(shape=(20, 20, 3), n=24, seed=1):
  return np.random.default_rng(seed).normal(size=(n,) + shape).astype(np.float32)


@pytest.fixture(scope="module")
def sparse_net():
  return _prune(_conv_net(), 0.8)


@pytest.fixture(scope="module")
def exports(sparse_net):
  """The 80%-sparse net exported for TFLM uncompressed and with compress="pruning"."""
  x = _data()
  return x, {c: tflite.convert(sparse_net, target="micro", quantize="int8",
                               representative_data=x, compress=c) for c in ("off", "pruning")}


# --- encoders ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float32])
@pytest.mark.parametrize("shape,axis", [((6, 3, 3, 4), 0), ((1, 3, 3, 8), 3), ((10, 24), None),
                                        ((7,), None)])
def test_encoders_round_trip(dtype, shape, axis):
  rng = np.random.default_rng(0)
  v = rng.integers(-4, 5, size=shape).astype(dtype)
  v.flat[0] = 0
  zp = np.zeros(())
  e = micro_compress.encode_pruning(v, zp)
  assert e.kind == "pruning" and e.ancillary[0] == micro_compress.DECODE_PRUNING
  assert len(e.encoded) == -(-v.size // 8)
  assert np.array_equal(micro_compress.decode(e.encoded, e.ancillary, shape, dtype, zp), v)
  e = micro_compress.encode_lut(v, axis)
  parts = [v] if axis is None else list(np.moveaxis(v, axis, 0))
  bits = max(1, (max(len(np.unique(p)) for p in parts) - 1).bit_length())
  assert e.kind == f"lut{bits}" and e.ancillary[0] == micro_compress.DECODE_LUT
  assert len(e.encoded) == -(-v.size * bits // 8)
  assert np.array_equal(micro_compress.decode(e.encoded, e.ancillary, shape, dtype, 0, axis), v)


def test_pruning_bit_layout_and_channel_zero_points():
  """MSB first, 1 = next kept value; 0-bits decode to their channel's zero point."""
  v = np.array([[5, 0, 0, 7, 0, 0, 0, 0, 9], [3, 3, 1, 3, 3, 3, 3, 3, 3]], np.int8)
  zp = np.array([[0], [3]])
  e = micro_compress.encode_pruning(v, zp)
  assert e.encoded == bytes([0b10010000, 0b10010000, 0b00000000])   # 18 bits, padded
  assert e.ancillary[:5] == bytes([2, 1, 0, 0, 1]) and e.ancillary[16:] == bytes([5, 7, 9, 1])
  assert np.array_equal(micro_compress.decode(e.encoded, e.ancillary, v.shape, np.int8, zp), v)
  assert micro_compress.encode_pruning(np.ones((4,), np.int8), 0) is None   # nothing pruned


def test_lut_limits():
  v = np.arange(200, dtype=np.int16).reshape(2, 100)
  assert micro_compress.encode_lut(v, None) is None           # 200 values > 2^7
  assert micro_compress.encode_lut(v, 0).kind == "lut7"       # 100 per channel
  with pytest.raises(ValueError, match="DECODE type"):
    micro_compress.describe(bytes([1, 1]) + bytes(14))        # Huffman: not ours


# --- the verified export -----------------------------------------------------------------

def test_pruning_export_is_smaller_and_bit_identical(exports):
  x, by_mode = exports
  off, res = by_mode["off"], by_mode["pruning"]
  mem = res.memory
  assert mem.uncompressed_flash_bytes == len(off.model_bytes)
  assert mem.flash_bytes == len(res.model_bytes)
  # The target: an 80%-sparse int8 conv net at <= 0.45x of the uncompressed file.
  assert len(res.model_bytes) <= 0.45 * len(off.model_bytes), mem.table()
  kinds = {t.name: t.encoding for t in mem.tensors}
  assert sum(k == "pruning" for k in kinds.values()) >= 5, kinds
  # Independently of convert's own check: identical int8 outputs in TFLM.
  a = verify.run_tflm(off.model_bytes, x)[1]
  b = verify.run_tflm(res.model_bytes, x)[1]
  assert np.array_equal(a, b)
  b_alt = verify.run_tflm(res.model_bytes, x, alt_decompression_bytes=mem.alt_decompression_bytes)
  assert np.array_equal(a, b_alt[1])
  assert any(r.runtime == "tflm-decode" and r.ok for r in res.verification)
  assert res.compress == "pruning" and not res.notes


def test_memory_report_alt_size_is_what_tflm_needs(exports):
  _, by_mode = exports
  mem = by_mode["pruning"].memory
  assert mem.alt_decompression_bytes > 0 and mem.alt_decompression_bytes % 16 == 0
  assert mem.arena_bytes_alt < mem.arena_bytes
  assert mem.invoke_us > 0 and mem.uncompressed_invoke_us > 0
  # The largest decoded FC/conv weights (+ bias) of one op: with half of it TFLM puts
  # that op's decoded weights back into the arena.
  model = by_mode["pruning"].model_bytes
  short = verify.tflm_arena_bytes(model, alt_decompression_bytes=mem.alt_decompression_bytes // 2)
  assert short["total"] > mem.arena_bytes_alt
  text = mem.table()
  assert "pruning" in text and "alternate decompression memory" in text


def test_lut_export_of_clustered_weights():
  model = _cluster(_conv_net(seed=2), levels=12)
  x = _data(seed=3)
  off = tflite.convert(model, target="micro", quantize="int8", representative_data=x)
  lut = tflite.convert(model, target="micro", quantize="int8", representative_data=x,
                       compress="lut")
  # Small tensors stay dense (per-channel tables + DECODE bookkeeping outweigh them).
  kernels = [t for t in lut.memory.tensors if t.dense_bytes >= 4096]
  assert len(kernels) >= 3, lut.memory.table()
  assert all(t.encoding in ("lut3", "lut4") for t in kernels), lut.memory.table()
  assert len(lut.model_bytes) < 0.7 * len(off.model_bytes)
  assert np.array_equal(verify.run_tflm(off.model_bytes, x)[1],
                        verify.run_tflm(lut.model_bytes, x)[1])


def test_auto_takes_the_smallest_per_tensor():
  model = _prune(_cluster(_conv_net(seed=4)), 0.6)
  x = _data(seed=5)
  sizes = {c: tflite.convert(model, target="micro", quantize="int8", representative_data=x,
                             compress=c) for c in micro_compress.COMPRESS_MODES}
  auto = len(sizes["auto"].model_bytes)
  assert auto <= min(len(sizes[c].model_bytes) for c in ("off", "pruning", "lut"))
  for t in sizes["auto"].memory.tensors:
    assert t.bytes <= t.dense_bytes


def test_transpose_conv_and_separable_conv():
  keras.utils.set_random_seed(7)
  inp = keras.Input((12, 12, 4))
  x = keras.layers.SeparableConv2D(32, 3, activation="relu")(inp)
  x = keras.layers.Conv2DTranspose(32, 3, strides=2, activation="relu")(x)
  model = _prune(keras.Model(inp, keras.layers.Conv2D(8, 1)(x)), 0.85)
  x = _data((12, 12, 4), n=8)
  res = tflite.convert(model, target="micro", quantize="int8", representative_data=x,
                       compress="pruning")
  ops = {t.op for t in res.memory.tensors if t.encoding == "pruning"}
  assert "TRANSPOSE_CONV" in ops, res.memory.table()
  assert res.memory.flash_bytes < res.memory.uncompressed_flash_bytes


def test_dense_model_is_left_alone_with_a_note():
  model = _conv_net(seed=6)
  for layer in model.layers:   # no zero biases either
    for v in layer.trainable_weights:
      if len(v.shape) == 1:
        v.assign(np.random.default_rng(0).normal(size=v.shape).astype(np.float32) * 0.1)
  res = tflite.convert(model, target="micro", quantize="int8", representative_data=_data(),
                       compress="pruning")
  assert all(t.encoding == "dense" for t in res.memory.tensors)
  assert not any(micro_compress.is_decode(graph.load(res.model_bytes), op)
                 for op in graph.load(res.model_bytes).subgraphs[0].operators)
  assert any("compressed nothing" in n for n in res.notes)


def test_a_wrong_encoding_fails_verification(sparse_net, monkeypatch):
  real = micro_compress.encode_pruning

  def flipped(values, zero_point):
    e = real(values, zero_point)
    if e is not None:   # one kept value's bits changed: TFLM decodes a different weight
      anc = bytearray(e.ancillary)
      anc[-1] ^= 0x40
      e = micro_compress.Encoded(e.kind, e.encoded, bytes(anc))
    return e

  monkeypatch.setattr(micro_compress, "encode_pruning", flipped)
  with pytest.raises(verify.VerificationError, match="compressed"):
    tflite.convert(sparse_net, target="micro", quantize="int8", representative_data=_data(),
                   compress="pruning")


def test_keras_applications_mobilenet():
  keras.utils.set_random_seed(0)
  # classifier_activation=None: an untrained softmax head has logits too flat for TFLM
  # (refused, see the next test).
  model = _prune(keras.applications.MobileNet(input_shape=(32, 32, 3), alpha=0.25,
                                              weights=None, classes=10,
                                              classifier_activation=None), 0.75)
  x = _data((32, 32, 3), n=4)
  res = tflite.convert(model, target="micro", quantize="int8", representative_data=x,
                       compress="auto", num_verify_samples=2)
  assert res.memory.flash_bytes < 0.75 * res.memory.uncompressed_flash_bytes
  assert sum(t.encoding != "dense" for t in res.memory.tensors) >= 10


def test_untrained_softmax_head_is_refused_not_aborted():
  """TFLM aborts the process at Prepare of an int8 SOFTMAX with a tiny input scale."""
  keras.utils.set_random_seed(0)
  inp = keras.Input((8,))
  logits = keras.layers.Dense(4, kernel_initializer=keras.initializers.RandomNormal(stddev=1e-9),
                              use_bias=False)(inp)
  model = keras.Model(inp, keras.layers.Softmax()(logits))
  with pytest.raises(verify.VerificationError, match="SOFTMAX"):
    tflite.convert(model, target="micro", quantize="int8", representative_data=_data((8,)))


def test_cli_messages_name_the_flags():
  """The CLI validates with the same rule as the API, naming flags (tfprune-export)."""
  with pytest.raises(ValueError, match="--compress=pruning is only valid with --target=micro"):
    targets.LITERT.check(None, "auto", False, "pruning", cli=True)
  with pytest.raises(ValueError, match="--target=micro needs --quantize=int8"):
    targets.MICRO.check(None, "auto", False, "off", cli=True)
  with pytest.raises(ValueError, match="--compress=lut and --micro_sparse_kernel cannot"):
    targets.MICRO.check("int8", "auto", True, "lut", cli=True)


def test_argument_errors(sparse_net):
  x = _data(n=4)
  with pytest.raises(ValueError, match="compress must be one of"):
    tflite.convert(sparse_net, target="micro", quantize="int8", representative_data=x,
                   compress="zip")
  with pytest.raises(ValueError, match="only valid with target='micro'"):
    tflite.convert(sparse_net, target="litert", compress="pruning")
  with pytest.raises(ValueError, match="cannot be combined"):
    tflite.convert(sparse_net, target="micro", quantize="int8", representative_data=x,
                   compress="pruning", micro_sparse_kernel=True)


# --- inspect, c_array, CLI ---------------------------------------------------------------

def test_inspect_and_c_array(exports, tmp_path):
  _, by_mode = exports
  res = by_mode["pruning"]
  path = res.save(str(tmp_path / "m.tflite"))
  rep = inspect_tflite(path)
  assert rep.checksum == "ok" and not rep.warnings
  decoded = [t for t in rep.tensors if t.format == "decode:pruning"]
  assert len(decoded) == sum(t.encoding == "pruning" for t in res.memory.tensors)
  kernels = {t.name: t for t in decoded if len(t.shape) > 1}
  for t in res.tensors:   # nonzeros read back through the decoder equal the exporter's
    if t.name in kernels:
      assert kernels[t.name].nonzeros == t.nonzeros and kernels[t.name].shape == tuple(t.shape)
  assert not any(t.dtype == "UINT8" for t in rep.tensors)   # encoded/ancillary not listed
  assert any("DECODE" in w for w in inspect_tflite(path, target="litert").warnings)
  cc, h = c_array(path, "g_model", output_dir=str(tmp_path))
  alt = res.memory.alt_decompression_bytes
  assert f"g_model_alt_decompression_bytes = {alt};" in open(cc).read()
  assert "g_model_alt_decompression_bytes" in open(h).read()
  plain = by_mode["off"]
  cc, _ = c_array(plain.save(str(tmp_path / "p.tflite")), "g_plain", output_dir=str(tmp_path))
  assert "alt_decompression" not in open(cc).read()


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "tfprune.bin.export", *args],
                        capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))


def test_cli_compress(sparse_net, tmp_path):
  model = str(tmp_path / "m.keras")
  sparse_net.save(model)
  np.savez(tmp_path / "x.npz", x=_data())
  out = tmp_path / "o.tflite"
  ok = _cli(f"--model={model}", "--target=micro", "--quantize=int8", "--compress=auto",
            f"--calibration_data={tmp_path / 'x.npz'}", f"--output={out}")
  assert ok.returncode == 0, ok.stderr
  assert "decode:pruning" in ok.stdout and "alternate decompression memory" in ok.stdout
  assert "verified tflm-decode" in ok.stdout and out.exists()


def test_export_inspect_runs_the_inspect_binary():
  """`tfprune-export inspect FILE` is `tfprune-inspect FILE` (its own process and flags)."""
  from tfprune.bin import _cli  # pylint: disable=g-import-not-at-top
  assert _cli.subcommand_argv(["tfprune-export", "inspect", "m.tflite", "--strict"], "inspect",
                              "tfprune.bin.inspect") == [
                                  sys.executable, "-m", "tfprune.bin.inspect", "m.tflite",
                                  "--strict"]
  assert _cli.subcommand_argv(["tfprune-export", "--model=m.keras"], "inspect",
                              "tfprune.bin.inspect") is None
