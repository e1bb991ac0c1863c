"""Tests of tflite_demo/android: the assets the Kotlin app reads.

The app cannot be built here (no Android SDK / Maven). What it depends on is tested:
the .tflite assets are valid, verified models whose input/output names, shapes and
dtypes match model_spec.json (which the Kotlin code reads), every JSON key the Kotlin
code reads exists, and the models' predictions on the bundled digits match the Keras
models they were exported from (recorded in model_spec.json at export time).
"""
import json
import os
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ANDROID = os.path.join(ROOT, "tflite_demo", "android")
ASSETS = os.path.join(ANDROID, "app", "src", "main", "assets")
KOTLIN = os.path.join(ANDROID, "app", "src", "main", "java", "org", "tfprune", "demo")
sys.path.insert(0, os.path.join(ROOT, "tflite_demo", "tools"))
import tflite_fc  # pylint: disable=g-import-not-at-top,wrong-import-position

MAX_BYTES = {"sparse": 100_000, "dense": 300_000}


@pytest.fixture(scope="module")
def spec():
  with open(os.path.join(ASSETS, "model_spec.json")) as f:
    return json.load(f)


@pytest.fixture(scope="module")
def digits(spec):
  d = spec["digits"]
  data = np.fromfile(os.path.join(ASSETS, d["file"]), np.uint8)
  assert data.size == d["count"] * d["height"] * d["width"]
  return data.reshape(d["count"], d["height"] * d["width"])


def _kotlin_source():
  return "\n".join(open(os.path.join(KOTLIN, f)).read() for f in sorted(os.listdir(KOTLIN))
                   if f.endswith(".kt"))


def _run(model_bytes, x, xnnpack):
  from ai_edge_litert import interpreter as litert  # pylint: disable=g-import-not-at-top
  kind = (litert.OpResolverType.AUTO if xnnpack else
          litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
  it = litert.Interpreter(model_content=model_bytes, experimental_op_resolver_type=kind)
  it.allocate_tensors()
  inp, out = it.get_input_details()[0], it.get_output_details()[0]
  result = []
  for row in x:  # batch 1, as the app runs it
    it.set_tensor(inp["index"], row.reshape(inp["shape"]))
    it.invoke()
    result.append(it.get_tensor(out["index"]).reshape(-1).copy())
  return np.stack(result), inp, out


def test_kotlin_reads_only_keys_the_spec_has(spec):
  src = _kotlin_source()
  assert re.search(r'SPEC_ASSET = "model_spec.json"', src)
  model = spec["models"]["sparse"]
  known = set(spec) | set(spec["digits"]) | set(model) | set(model["input"]) | set(spec["models"])
  used = set(re.findall(r'\.(?:getString|getInt|getDouble|getJSONObject|getJSONArray)\("(\w+)"\)',
                        src))
  assert {"sparse", "dense", "input", "output", "scale", "zero_point", "file"} <= used
  assert used <= known, used - known
  for m in spec["models"].values():
    assert set(m["input"]) == set(model["input"]) and set(m["output"]) == set(model["input"])


def test_gradle_layout_matches_litert_samples():
  gradle = open(os.path.join(ANDROID, "app", "build.gradle.kts")).read()
  catalog = open(os.path.join(ANDROID, "gradle", "libs.versions.toml")).read()
  assert 'noCompress += "tflite"' in gradle and "libs.litert" in gradle
  assert 'group = "com.google.ai.edge.litert"' in catalog
  assert os.path.exists(os.path.join(ANDROID, "settings.gradle.kts"))
  assert os.path.exists(os.path.join(ANDROID, "app", "src", "main", "AndroidManifest.xml"))


@pytest.mark.parametrize("name", ["sparse", "dense"])
def test_asset_model_matches_spec_and_keras(spec, digits, name):
  m = spec["models"][name]
  path = os.path.join(ASSETS, m["file"])
  model_bytes = open(path, "rb").read()
  assert 0 < len(model_bytes) <= MAX_BYTES[name]
  layers = tflite_fc.fc_layers(model_bytes)  # full int8 FULLY_CONNECTED chain
  if name == "sparse":
    assert all(l["sparse"] and l["version"] == 8 for l in layers)  # XNNPACK-safe 1x16
  else:
    assert not any(l["sparse"] for l in layers)
  x_float = digits.astype(np.float32) / 255
  scale, zp = m["input"]["scale"], m["input"]["zero_point"]
  x = np.clip(np.round(x_float / scale) + zp, -128, 127).astype(np.int8)  # as the Kotlin code
  outputs = {}
  for xnnpack in (True, False):
    out, inp_d, out_d = _run(model_bytes, x, xnnpack)
    outputs[xnnpack] = out
    for d, s in ((inp_d, m["input"]), (out_d, m["output"])):
      assert d["name"] == s["name"]
      assert list(d["shape"]) == s["shape"]
      assert np.dtype(d["dtype"]).name == s["dtype"] == "int8"
      assert d["quantization"] == pytest.approx((s["scale"], s["zero_point"]))
  assert m["input"]["shape"] == [1, digits.shape[1]] and m["output"]["shape"] == [1, 10]
  np.testing.assert_array_equal(outputs[True].argmax(1), outputs[False].argmax(1))
  np.testing.assert_array_equal(outputs[False].argmax(1), m["keras_predictions"])
  assert np.mean(outputs[False].argmax(1) == np.array(spec["digits"]["labels"])) >= 0.9


def test_sparse_asset_is_smaller_than_dense(spec):
  size = {n: os.path.getsize(os.path.join(ASSETS, m["file"])) for n, m in spec["models"].items()}
  assert size["sparse"] * 3 < size["dense"]


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
