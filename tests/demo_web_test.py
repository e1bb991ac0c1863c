"""Tests of tflite_demo/web: tfprune-exported models in LiteRT.js, in headless Chromium.

The page (index.html + demo.js) is served from 127.0.0.1 and driven by
tflite_demo/web/run_headless.mjs (puppeteer-core, the system Chromium). Every model it
loads must give LiteRT's (Python) outputs for the same file, and the Keras model's:
the shrunk CNN's float logits within the exporter's int8 tolerance
(`tfprune.export.verify.compare`), the Android MLPs' recorded Keras predictions. The
browser test is skipped only when Chromium, Node or the npm packages are missing
(`bash scripts/setup.sh` installs them).
"""
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

from tfprune.export import litertjs
from tfprune.export import verify

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "tflite_demo")
WEB = os.path.join(DEMO, "web")
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
NODE = shutil.which("node")
NODE_MODULES = os.path.join(WEB, "node_modules")


def _missing():
  """Why the browser test cannot run here ('' when it can)."""
  if not os.path.exists(CHROMIUM):
    return "Chromium is not installed (Debian: apt-get install chromium; or bash scripts/setup.sh)"
  if NODE is None:
    return "node is not installed (Debian: apt-get install nodejs npm)"
  for pkg in ("puppeteer-core", os.path.join("@litertjs", "core"),
              os.path.join("@litertjs", "wasm-utils")):
    if not os.path.isdir(os.path.join(NODE_MODULES, pkg)):
      return f"tflite_demo/web/node_modules/{pkg} is missing (run: cd tflite_demo/web && npm ci)"
  return ""


@pytest.fixture(scope="module")
def spec():
  with open(os.path.join(WEB, "models", "models.json")) as f:
    return json.load(f)


@pytest.fixture(scope="module")
def images(spec):
  d = spec["digits"]
  pixels = np.fromfile(os.path.join(WEB, d["file"]), np.uint8)
  assert pixels.size == d["count"] * 784
  return pixels.reshape(d["count"], 784).astype(np.float32) / 255


def _web_bytes(model):
  with open(os.path.join(WEB, model["file"]), "rb") as f:
    return f.read()


def _litert(model, images, xnnpack=True):
  x = images.reshape([-1] + model["input_shape"][1:])
  return verify.run_litert(_web_bytes(model), x, xnnpack=xnnpack)[0]


def test_web_models_are_the_android_files_with_a_float_interface(spec):
  by_name = {m["name"]: m for m in spec["models"]}
  assert set(by_name) == {"dense", "sparse", "shrunk_cnn"}
  for name in ("dense", "sparse"):
    m = by_name[name]
    with open(os.path.join(WEB, m["int8_source"]), "rb") as f:
      int8_bytes = f.read()
    # Regenerated with the Android assets (scripts/make_demo_assets.py), never stale.
    assert litertjs.float_io(int8_bytes) == _web_bytes(m), name


@pytest.mark.parametrize("name", ["dense", "sparse"])
def test_float_io_gives_the_int8_outputs_exactly(spec, images, name):
  m = next(m for m in spec["models"] if m["name"] == name)
  with open(os.path.join(WEB, m["int8_source"]), "rb") as f:
    int8_bytes = f.read()
  for xnnpack in (True, False):
    _, raw, detail = verify.run_litert(int8_bytes, images, xnnpack=xnnpack)
    out = _litert(m, images, xnnpack)
    assert detail["dtype"] == np.int8 and out.dtype == np.float32
    scale, zero = detail["quantization"]
    assert scale == pytest.approx(m["output_scale"])
    # DEQUANTIZE of the same int8 outputs (float rounding of scale * q aside).
    np.testing.assert_array_equal(np.round(out / scale) + zero, raw)
  assert len(set(out.argmax(1))) > 5  # alive: the digits get different classes


def test_float_io_rejects_a_float_interface(spec):
  with pytest.raises(ValueError, match="already has a float interface"):
    litertjs.float_io(_web_bytes(spec["models"][0]))


def test_shrunk_cnn_matches_keras_in_litert(spec, images):
  m = next(m for m in spec["models"] if m["name"] == "shrunk_cnn")
  keras_out = np.array(m["keras_outputs"], np.float32)
  res = verify.compare(_litert(m, images), keras_out, "int8", m["output_scale"])
  assert res.ok, res


class _QuietHandler(http.server.SimpleHTTPRequestHandler):

  def log_message(self, *args):  # pylint: disable=arguments-differ
    pass


@pytest.fixture(scope="module")
def server():
  """Serves tflite_demo/ on 127.0.0.1 (a random free port) from a thread."""
  handler = functools.partial(_QuietHandler, directory=DEMO)
  httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  yield f"http://127.0.0.1:{httpd.server_address[1]}"
  httpd.shutdown()
  httpd.server_close()


def run_page(base_url, repeats, screenshot=None, timeout_s=60):
  """Runs the demo page in headless Chromium; returns `window.demoResults`."""
  cmd = [NODE, os.path.join(WEB, "run_headless.mjs"),
         f"{base_url}/web/index.html?repeats={repeats}", f"--timeout={timeout_s * 1000}",
         f"--chromium={CHROMIUM}"]
  if screenshot:
    cmd.append(f"--screenshot={screenshot}")
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s + 30,
                        cwd=WEB, check=False)
  assert proc.stdout.strip(), f"run_headless.mjs failed ({proc.returncode}): {proc.stderr}"
  results = json.loads(proc.stdout.strip().splitlines()[-1])
  assert proc.returncode == 0 and results["ok"], results.get("error") or proc.stderr
  return results


@pytest.mark.skipif(bool(_missing()), reason=_missing())
def test_page_runs_every_model_in_chromium_like_litert_and_keras(server, spec, images, tmp_path):
  shot = tmp_path / "screenshot.png"
  results = run_page(server, repeats=2, screenshot=str(shot))
  assert not results["page_errors"], results["page_errors"]
  # Nothing from a CDN: every request goes to the local server (or is inline data).
  remote = [u for u in results["requests"] if not u.startswith((server, "data:"))]
  assert not remote, remote
  got = {r["name"]: r for r in results["models"]}
  assert list(got) == [m["name"] for m in spec["models"]]
  for m in spec["models"]:
    r = got[m["name"]]
    out = np.array(r["outputs"], np.float32)
    ref = _litert(m, images)  # LiteRT (Python, XNNPACK) on the same file
    assert out.shape == ref.shape == (len(images), 10), m["name"]
    # Same int8 kernels (XNNPACK): at most one output step apart (seen: identical).
    steps = np.abs(out - ref).max() / m["output_scale"]
    assert steps <= 1.001, f"{m['name']}: browser vs LiteRT Python differ by {steps:.2f} steps"
    assert np.ptp(out, axis=0).max() > 0, f"{m['name']}: outputs independent of the input"
    np.testing.assert_array_equal(out.argmax(1), m["keras_predictions"], err_msg=m["name"])
    if "keras_outputs" in m:
      res = verify.compare(out, np.array(m["keras_outputs"], np.float32), "int8",
                           m["output_scale"], runtime="litertjs")
      assert res.ok, res
    assert r["bytes"] == os.path.getsize(os.path.join(WEB, m["file"]))
    assert r["load_ms"] > 0 and 0 < r["run_ms"] and r["inferences"] == 2 * len(images)
  png = shot.read_bytes()
  assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000  # table, charts, digits


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
