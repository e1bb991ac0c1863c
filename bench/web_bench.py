"""Latency of the web demo's models: LiteRT.js in headless Chromium vs LiteRT (Python).

    .venv/bin/python bench/web_bench.py [--repeats=200] [--passes=3] \
        [--screenshot=tflite_demo/web/screenshot.png]

Both run the same files (tflite_demo/web/models, float32 in/out around the int8 graph),
batch 1, one thread, XNNPACK, on the bundled MNIST digits:
  * browser: tflite_demo/web/index.html in headless Chromium (run_headless.mjs,
    puppeteer-core), served from 127.0.0.1; per inference = Tensor from a Float32Array,
    `model.run`, `toTypedArray`, deletes (the page's own loop), and `model.run` alone
    (inputs made beforehand, outputs not read): `repeats` timed passes over the 10
    digits, the mean of the faster half of the passes (a busy machine only adds time);
    the median of `passes` page loads.
    Load = fetch + `loadAndCompile`, the median of the page loads.
  * Python: `ai_edge_litert` Interpreter, 1 thread: invoke only (median, the protocol of
    bench/litert_timing.py) and set_tensor + invoke + get_tensor (timed passes over the
    digits, the mean of the faster half, as in the browser).
Prints a markdown table (bench/RESULTS_demo.md, "Browser (LiteRT.js)").
"""
import functools
import http.server
import json
import os
import platform
import subprocess
import sys
import threading
import time

from absl import app
from absl import flags
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import litert_timing  # pylint: disable=g-import-not-at-top,wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "tflite_demo")
WEB = os.path.join(DEMO, "web")

FLAGS = flags.FLAGS
flags.DEFINE_integer("repeats", 200, "Inferences per digit per page load (browser).")
flags.DEFINE_integer("passes", 3, "Page loads; the median per model is reported.")
flags.DEFINE_string("screenshot", None, "Also save the page's screenshot here (the README "
                    "image is tflite_demo/web/screenshot.png).")
flags.DEFINE_string("chromium", "/usr/bin/chromium", "Chromium executable.")


class _Quiet(http.server.SimpleHTTPRequestHandler):

  def log_message(self, *args):  # pylint: disable=arguments-differ
    pass


def browser_runs(passes, repeats, screenshot):
  """`window.demoResults` of `passes` page loads."""
  httpd = http.server.ThreadingHTTPServer(
      ("127.0.0.1", 0), functools.partial(_Quiet, directory=DEMO))
  threading.Thread(target=httpd.serve_forever, daemon=True).start()
  url = f"http://127.0.0.1:{httpd.server_address[1]}/web/index.html?repeats={repeats}"
  runs = []
  try:
    for i in range(passes):
      cmd = ["node", os.path.join(WEB, "run_headless.mjs"), url, "--timeout=300000",
             f"--chromium={FLAGS.chromium}"]
      if screenshot and i == passes - 1:
        cmd.append(f"--screenshot={os.path.abspath(screenshot)}")
      proc = subprocess.run(cmd, capture_output=True, text=True, cwd=WEB, check=False)
      if proc.returncode:
        raise RuntimeError(f"run_headless.mjs failed: {proc.stdout[-2000:]}{proc.stderr}")
      runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
  finally:
    httpd.shutdown()
    httpd.server_close()
  return runs


def python_us(model_bytes, images, input_shape, repeats):
  """(median invoke-only us, mean set_tensor + invoke + get_tensor us)."""
  from tfprune.export import verify  # pylint: disable=g-import-not-at-top
  invoke = litert_timing.latency_us(model_bytes, xnnpack=True, iters=200, warmup=20)
  interp = verify.make_litert_interpreter(model_bytes, True, num_threads=1)
  inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
  x = images.reshape([-1] + input_shape[1:])
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    for row in x:
      interp.set_tensor(inp["index"], row[None])
      interp.invoke()
      interp.get_tensor(out["index"])
    times.append((time.perf_counter() - start) / len(x))
  return invoke, float(np.mean(np.sort(times)[:max(1, repeats // 2)])) * 1e6


def main(argv):
  del argv
  with open(os.path.join(WEB, "models", "models.json")) as f:
    spec = json.load(f)
  pixels = np.fromfile(os.path.join(WEB, spec["digits"]["file"]), np.uint8)
  images = pixels.reshape(-1, 784).astype(np.float32) / 255
  runs = browser_runs(FLAGS.passes, FLAGS.repeats, FLAGS.screenshot)
  agent = runs[0]["user_agent"]
  print(f"Chromium: {agent}\nPython {platform.python_version()}, "
        f"{FLAGS.passes} page loads x {FLAGS.repeats} x {len(images)} inferences per model\n")
  print("| model | file (bytes) | browser load + compile (ms) | browser (us / inference) | "
        "browser model.run only (us) | Python set + invoke + get (us) | "
        "Python invoke only (us, median) |")
  print("|---|---|---|---|---|---|---|")
  for m in spec["models"]:
    rows = [next(r for r in run["models"] if r["name"] == m["name"]) for run in runs]
    web_us = float(np.median([r["latency_ms"] for r in rows])) * 1000
    run_us = float(np.median([r["run_ms"] for r in rows])) * 1000
    load_ms = float(np.median([r["load_ms"] for r in rows]))
    with open(os.path.join(WEB, m["file"]), "rb") as f:
      data = f.read()
    invoke, call = python_us(data, images, m["input_shape"], FLAGS.repeats)
    print(f"| {m['name']} | {len(data):,} | {load_ms:.1f} | {web_us:.1f} | {run_us:.1f} | "
          f"{call:.1f} | {invoke:.1f} |")


if __name__ == "__main__":
  app.run(main)
