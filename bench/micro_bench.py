"""Flash, MACs and host latency of the tflite_demo/micro models and kernels.

    .venv/bin/python bench/micro_bench.py [--output=bench/RESULTS_demo.md]

Models (all full int8, MNIST 784 -> 10):
  dense   LeNet-300-100-like 784-304-112-10, dense (tflite_demo/android assets)
  shrunk  STAND-IN for the structured-L0 model: dense 784-64-32-10 (micro/shrunk_model_data.cc)
  sparse  the 784-304-112-10 model with 1x16 block-sparse FC weights (micro/sparse_model_data.cc)

Latency: the portable kernels (tflite_demo/micro/sparse_fully_connected.cc, g++ -O2) on
this host, batch 1, one thread, per digit over 1,000 MNIST test digits, fastest of
--repeats passes (the machine is shared). "dense int8 loop" is the reference dense loop
(bit-exact with TFLM's reference FC). MACs: rows x cols for dense weights; stored block
values (16 per kept 1x16 block, zeros inside kept blocks included) for sparse weights.
Code size: the kernel cross-compiled with arm-none-eabi-g++ -mcpu=cortex-m4 -mthumb -Os.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

from absl import app
from absl import flags
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "tflite_demo")
sys.path.insert(0, os.path.join(DEMO, "tools"))
import tflite_fc  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_string("output", None, "Also write the markdown report here.")
flags.DEFINE_integer("repeats", 20, "Timing passes over the 1,000 digits (fastest is kept).")


def m4_code_size(build_dir):
  """(total .text bytes, {function: bytes}) of the Cortex-M4 kernel object, or None."""
  if shutil.which("arm-none-eabi-g++") is None:
    return None
  out = subprocess.run(["make", "-s", "-C", os.path.join(DEMO, "micro"), "cortex-m4",
                        f"BUILD_DIR={build_dir}"], check=True, capture_output=True,
                       text=True).stdout
  total = int(re.search(r"^\s*(\d+)\s+\d+\s+\d+", out, re.M).group(1))
  funcs = {}
  for m in re.finditer(r"^[0-9a-f]+ ([0-9a-f]+) [tT] .*?(\w+)\(", out, re.M):
    funcs[m.group(2)] = funcs.get(m.group(2), 0) + int(m.group(1), 16)
  return total, funcs


def main(argv):
  del argv
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import tfprune.data  # pylint: disable=g-import-not-at-top  (digits only)
  _, (x_test, y_test) = tfprune.data.load("mnist")
  x_test = x_test[:1000].reshape(-1, 784)
  y_test = y_test[:1000]

  models = {
      "dense": open(os.path.join(DEMO, "android", "app", "src", "main", "assets",
                                 "mnist_dense_int8.tflite"), "rb").read(),
      "shrunk": tflite_fc.read_c_array(os.path.join(DEMO, "micro", "shrunk_model_data.cc"))[
          "shrunk_model_data"],
      "sparse": tflite_fc.read_c_array(os.path.join(DEMO, "micro", "sparse_model_data.cc"))[
          "sparse_model_data"],
  }
  with tempfile.TemporaryDirectory() as build:
    kernel = tflite_fc.HostKernel(tflite_fc.build_host_library(build))
    code = m4_code_size(build)
    rows = []
    for name, data in models.items():
      layers = tflite_fc.fc_layers(data)
      l0 = layers[0]
      x = np.clip(np.round(x_test / l0["input_scale"]) + l0["input_zero_point"], -128,
                  127).astype(np.int8)
      chain = kernel.chain(layers)
      acc = float(np.mean(chain(x).argmax(1) == y_test))
      ns = chain.time_ns(x, FLAGS.repeats)
      weights = sum(l["rows"] * l["cols"] for l in layers)
      rows.append((name, len(data), sum(tflite_fc.macs(l) for l in layers), weights, acc, ns,
                   "sparse kernel" if any(l["sparse"] for l in layers) else "dense int8 loop"))
      if name == "sparse":  # the same weights, densified, through the dense loop
        dense_twin = kernel.chain([dict(l, sparse=False, weights=tflite_fc.densify(l))
                                   for l in layers])
        rows.append(("sparse, densified", None, weights, weights,
                     float(np.mean(dense_twin(x).argmax(1) == y_test)),
                     dense_twin.time_ns(x, FLAGS.repeats), "dense int8 loop"))

  kernel_bytes = code[0] if code else None
  lines = ["| model | flash: model bytes | flash: model + FC kernel | MACs / digit | "
           "host latency (us / digit) | kernel run | MNIST acc (1,000) |",
           "|---|---|---|---|---|---|---|"]
  for name, size, macs, _, acc, ns, how in rows:
    if size and how == "sparse kernel" and kernel_bytes:
      total = f"{size + kernel_bytes:,} (+{kernel_bytes:,} ours)"
    elif size:
      total = f"{size:,} + stock TFLM FC"
    else:
      total = "-"
    lines.append(f"| {name} | {f'{size:,}' if size else '-'} | {total} | {macs:,} | "
                 f"{ns / 1000:.1f} | {how} | {acc:.3f} |")
  if code:
    total, funcs = code
    hot = funcs.get("SparseFullyConnected", 0) + funcs.get("MultiplyByQuantizedMultiplier", 0)
    lines += ["", f"Cortex-M4 code (arm-none-eabi-g++ -mcpu=cortex-m4 -mthumb -Os): whole "
              f"kernel file {total} bytes .text; SparseFullyConnected + "
              f"MultiplyByQuantizedMultiplier {hot} bytes; per function: " +
              ", ".join(f"{k} {v}" for k, v in sorted(funcs.items(), key=lambda kv: -kv[1]))]
  report = "\n".join(lines)
  print(report)
  if FLAGS.output:
    with open(FLAGS.output, "w") as f:
      f.write(report + "\n")


if __name__ == "__main__":
  app.run(main)
