"""Tests of tflite_demo/micro: the portable sparse FULLY_CONNECTED kernel on the host.

The kernel (tflite_demo/micro/sparse_fully_connected.cc) is built with the machine's C++
compiler into a shared library and fed the weights and quantisation parameters read from
.tflite files; its int8 outputs must be bit-exact with LiteRT (XNNPACK off). The shrunk
dense model must give the same predictions in the TFLite Micro interpreter as in LiteRT,
and so must the structurally shrunk keyword-spotting DS-CNN (kws_model_data.cc) on the
bundled feature frames (kws_data.cc), within one int8 step of LiteRT's golden outputs.
"""
import os
import re
import shutil
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MICRO = os.path.join(ROOT, "tflite_demo", "micro")
sys.path.insert(0, os.path.join(ROOT, "tflite_demo", "tools"))
import tflite_fc  # pylint: disable=g-import-not-at-top,wrong-import-position

NUM_DIGITS = 1000


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
  return tflite_fc.HostKernel(tflite_fc.build_host_library(tmp_path_factory.mktemp("build")))


@pytest.fixture(scope="module")
def mnist_test():
  import tfprune.data  # pylint: disable=g-import-not-at-top
  _, (x, y) = tfprune.data.load("mnist")
  return x[:NUM_DIGITS].reshape(-1, 784).astype(np.float32), y[:NUM_DIGITS]


def _model(name):
  arrays = tflite_fc.read_c_array(os.path.join(MICRO, f"{name}.cc"))
  data = arrays[name]
  assert re.search(rf"{name}_len = {len(data)};", open(os.path.join(MICRO, f"{name}.cc")).read())
  return data


def _quantize(layers, x):
  l0 = layers[0]
  return np.clip(np.round(x / l0["input_scale"]) + l0["input_zero_point"], -128,
                 127).astype(np.int8)


def _litert(model_bytes, x_int8, xnnpack=False, all_tensors=False):
  """Runs a batch through LiteRT; returns (output, interpreter)."""
  from ai_edge_litert import interpreter as litert  # pylint: disable=g-import-not-at-top
  kind = (litert.OpResolverType.AUTO if xnnpack else
          litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
  it = litert.Interpreter(model_content=bytes(model_bytes), experimental_op_resolver_type=kind,
                          experimental_preserve_all_tensors=all_tensors)
  inp = it.get_input_details()[0]["index"]
  it.resize_tensor_input(inp, list(x_int8.shape))
  it.allocate_tensors()
  it.set_tensor(inp, x_int8)
  it.invoke()
  return it.get_tensor(it.get_output_details()[0]["index"]), it


def test_sparse_mlp_bit_exact_with_litert_on_mnist(kernel, mnist_test):
  model = _model("sparse_model_data")
  layers = tflite_fc.fc_layers(model)
  assert [l["sparse"] for l in layers] == [True, True, True]
  assert all(l["version"] == 8 for l in layers)  # XNNPACK must skip sparse FCs
  x = _quantize(layers, mnist_test[0])
  ours = kernel.chain(layers)(x)
  ref, it = _litert(model, x, all_tensors=True)
  np.testing.assert_array_equal(ours, ref)
  # Every layer's int8 output, not only the logits.
  from ai_edge_litert.tools import flatbuffer_utils  # pylint: disable=g-import-not-at-top
  graph = flatbuffer_utils.convert_bytearray_to_object(bytearray(model)).subgraphs[0]
  h = x
  for layer, op in zip(layers, graph.operators):
    h = kernel.create(layer)(h)
    np.testing.assert_array_equal(h, it.get_tensor(op.outputs[0]))
  assert np.mean(ours.argmax(1) == mnist_test[1]) > 0.95


def _single_layer(cols, rows, per_channel, activation, rng):
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  model = keras.Sequential([keras.Input((cols,)), keras.layers.Dense(rows, activation=activation)])
  blocks = -(-cols // 16)
  keep = np.repeat(rng.random((blocks, rows)) < 0.2, 16, axis=0)[:cols]  # Keras [in, out]
  kernel = rng.normal(0, 0.2, (cols, rows)).astype(np.float32) * keep
  model.layers[0].set_weights([kernel, rng.normal(0, 0.5, rows).astype(np.float32)])
  calib = rng.random((64, cols)).astype(np.float32)
  conv = tf.lite.TFLiteConverter.from_keras_model(model)
  conv.optimizations = [tf.lite.Optimize.DEFAULT, tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
  conv.representative_dataset = lambda: ([calib[i:i + 1]] for i in range(len(calib)))
  conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
  conv.inference_input_type = tf.int8
  conv.inference_output_type = tf.int8
  conv._experimental_disable_per_channel_quantization_for_dense_layers = not per_channel  # pylint: disable=protected-access
  return conv.convert()


@pytest.mark.parametrize("cols,per_channel,activation", [
    (784, True, "relu"),    # the MNIST first layer, per-channel scales
    (784, False, None),     # per-tensor requantisation
    (100, True, None),      # 100 % 16 != 0: padded last block
])
def test_single_fc_layer_bit_exact_with_litert(kernel, mnist_test, cols, per_channel,
                                               activation):
  rng = np.random.default_rng(cols + per_channel)
  model = _single_layer(cols, 48, per_channel, activation, rng)
  (layer,) = tflite_fc.fc_layers(model)
  assert layer["sparse"]
  assert layer["filter_scales"].size == (48 if per_channel else 1)
  x_float = mnist_test[0] if cols == 784 else rng.random((NUM_DIGITS, cols)).astype(np.float32)
  x = _quantize([layer], x_float)
  ref, _ = _litert(model, x)
  ours = kernel.create(layer)(x)
  np.testing.assert_array_equal(ours, ref)
  # The sparse weights densified give the same result through the dense loop.
  dense = dict(layer, sparse=False, weights=tflite_fc.densify(layer))
  np.testing.assert_array_equal(kernel.create(dense)(x), ref)


def test_shrunk_model_tflm_matches_litert(kernel, mnist_test):
  from tflite_micro.python.tflite_micro import runtime  # pylint: disable=g-import-not-at-top
  model = _model("shrunk_model_data")
  layers = tflite_fc.fc_layers(model)
  assert not any(l["sparse"] for l in layers)
  x = _quantize(layers, mnist_test[0])
  litert_out, _ = _litert(model, x)
  micro = runtime.Interpreter.from_bytes(bytes(model))
  micro_out = []
  for row in x:
    micro.set_input(row[None], 0)
    micro.invoke()
    micro_out.append(micro.get_output(0)[0].copy())
  micro_out = np.stack(micro_out)
  np.testing.assert_array_equal(micro_out.argmax(1), litert_out.argmax(1))
  # Our dense int8 loop is TFLM's reference arithmetic, bit for bit.
  np.testing.assert_array_equal(kernel.chain(layers)(x), micro_out)
  assert np.mean(micro_out.argmax(1) == mnist_test[1]) > 0.93


def test_bundled_digits_and_golden_predictions(kernel):
  text = open(os.path.join(MICRO, "digits_data.cc")).read()
  def array(name):
    m = re.search(rf"{name}\[[^\]]*\](?:\[[^\]]*\])?\s*=\s*\{{(.*?)\}};", text, re.S)
    return np.array([int(v) for v in re.findall(r"\d+", m.group(1))])
  pixels = array("g_digit_pixels").reshape(-1, 784)
  labels = array("g_digit_labels")
  assert len(pixels) == len(labels) >= 10 and pixels.max() > 200
  for name, golden in (("sparse_model_data", "g_expected_sparse"),
                       ("shrunk_model_data", "g_expected_shrunk")):
    model = _model(name)
    layers = tflite_fc.fc_layers(model)
    x = _quantize(layers, pixels.astype(np.float32) / 255)
    np.testing.assert_array_equal(_litert(model, x)[0].argmax(1), array(golden))
    np.testing.assert_array_equal(kernel.chain(layers)(x).argmax(1), array(golden))


def _c_int_array(text, name):
  m = re.search(rf"{name}\[[^\]]*\](?:\[[^\]]*\])?\s*=\s*\{{(.*?)\}};", text, re.S)
  return np.array([int(v) for v in re.findall(r"-?\d+", m.group(1))])


def test_kws_shrunk_ds_cnn_tflm_matches_litert():
  from ai_edge_litert.tools import flatbuffer_utils  # pylint: disable=g-import-not-at-top
  from tflite_micro.python.tflite_micro import runtime  # pylint: disable=g-import-not-at-top
  from tfprune.export import verify  # pylint: disable=g-import-not-at-top
  model = _model("kws_model_data")
  text = open(os.path.join(MICRO, "kws_data.cc")).read()
  header = open(os.path.join(MICRO, "kws_data.h")).read()
  n = int(re.search(r"kNumKwsSamples = (\d+);", header).group(1))
  classes = int(re.search(r"kKwsClasses = (\d+);", header).group(1))
  x = _c_int_array(text, "g_kws_inputs").reshape(n, 49, 10, 1).astype(np.int8)
  golden = _c_int_array(text, "g_kws_expected").reshape(n, classes)
  assert n >= 2 and classes == 12 and len(_c_int_array(text, "g_kws_labels")) == n
  # A DS-CNN on stock conv kernels, shrunk: every layer narrower than the reference 64.
  graph = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
  codes = [graph.operatorCodes[op.opcodeIndex] for op in graph.subgraphs[0].operators]
  ops = {max(c.builtinCode, c.deprecatedBuiltinCode) for c in codes}
  assert {3, 4} <= ops  # CONV_2D, DEPTHWISE_CONV_2D (the TFLite schema's codes)
  assert all(t.sparsity is None for t in graph.subgraphs[0].tensors)
  widths = [int(t.shape[-1]) for t in graph.subgraphs[0].tensors
            if t.shape is not None and len(t.shape) == 4 and t.shape[1] == 25]
  assert widths and max(widths) < 64, widths
  # The golden outputs are LiteRT's; TFLM (the interpreter the app uses) agrees.
  litert_out, _ = _litert(model, x)
  np.testing.assert_array_equal(litert_out, golden)
  micro = runtime.Interpreter.from_bytes(bytes(model))
  for row, want in zip(x, golden):
    micro.set_input(row[None], 0)
    micro.invoke()
    got = micro.get_output(0)[0].astype(int)
    assert np.abs(got - want).max() <= 1, (got, want)
    assert got.argmax() == want.argmax()
  # It fits the app's 32 KiB arena.
  assert verify.tflm_arena_bytes(model)["total"] < 32 * 1024


def test_kernel_rejects_corrupt_sparse_structure(kernel):
  (layer,) = tflite_fc.fc_layers(_single_layer(64, 8, True, None, np.random.default_rng(1)))
  bad = dict(layer, indices=np.full_like(layer["indices"], 200))  # block column out of range
  with pytest.raises(ValueError):
    kernel.create(bad)
  bad = dict(layer, segments=layer["segments"][::-1].copy())  # not monotonic
  with pytest.raises(ValueError):
    kernel.create(bad)


@pytest.mark.skipif(shutil.which("arm-none-eabi-g++") is None,
                    reason="arm-none-eabi-g++ not installed (apt-get install gcc-arm-none-eabi)")
def test_cortex_m4_cross_compile(tmp_path):
  out = subprocess.run(["make", "-s", "-C", MICRO, "cortex-m4", f"BUILD_DIR={tmp_path}"],
                       check=True, capture_output=True, text=True).stdout
  text = int(re.search(r"^\s*(\d+)\s+(\d+)\s+(\d+)", out, re.M).group(1))
  assert 0 < text < 4096, out


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
