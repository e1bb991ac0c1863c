r"""L0 benchmark: structured L0 gates + shrink, and L0Projection vs TFMOT, in one run.

1. Structured (`method="l0_gates"`, then `tfprune.strip(shrink=True)`):
   LeNet-300-100 and LeNet-5 on MNIST: dense training (Adam 1e-3, batch 128), gates with a
   unit budget + fine-tune, shrink; accuracy, kept architecture, parameters, MACs, and
   LiteRT latency (1 thread, median of single-sample invokes) of the shrunk vs the
   original dense model.
2. `l0_projection` (layer and global scope) vs TFMOT at the TFMOT protocol
   (docs/algorithms.md section 6) through `bench/compare.py` (TFMOT rerun in its venv).
Writes bench/out/l0/structured.{json,md} (and, with --parts=...,projection, the compare.py
outputs under --projection_out). bench/RESULTS_l0.md is written by hand from these.

  nohup .venv/bin/python bench/l0_bench.py > bench/out/l0_bench.log 2>&1 &
"""
import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

import tfprune  # pylint: disable=g-import-not-at-top
from tfprune import data as data_lib  # pylint: disable=g-import-not-at-top
from tfprune.shrink import count_params_and_macs  # pylint: disable=g-import-not-at-top
from tfprune import zoo  # pylint: disable=g-import-not-at-top

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
FLAGS = flags.FLAGS
flags.DEFINE_list("parts", ["structured"], "What to run: structured, projection.")
flags.DEFINE_list("lenet300_seeds", ["0", "1", "2"], "LeNet-300-100 seeds (own dense each).")
flags.DEFINE_list("lenet5_seeds", ["0", "1"], "LeNet-5 seeds.")
flags.DEFINE_integer("lenet300_dense_epochs", 10, "")
flags.DEFINE_integer("lenet300_gate_epochs", 10, "l0_gates fit budget (gates + fine-tune).")
flags.DEFINE_string("lenet300_kwargs", '{"target_units": {"fc1": 96, "fc2": 32}, '
                    '"gate_fraction": 0.3}',
                    "JSON l0_gates kwargs (unit budget etc.).")
flags.DEFINE_integer("lenet5_dense_epochs", 6, "")
flags.DEFINE_integer("lenet5_gate_epochs", 6, "")
flags.DEFINE_string("lenet5_kwargs", '{"target_units": {"conv1": 8, "conv2": 20, "fc1": 200}, '
                    '"gate_fraction": 0.34}', "JSON l0_gates kwargs for LeNet-5.")
flags.DEFINE_integer("invokes", 2000, "LiteRT single-sample invokes per model.")
flags.DEFINE_string("sparsities", "0.95,0.98,0.99", "Projection sparsities.")
flags.DEFINE_string("out", os.path.join(HERE, "out", "l0"), "")
flags.DEFINE_string("projection_out", os.path.join(HERE, "out", "l0_projection"), "")


def accuracy(model, x, y):
  return float(np.mean(np.argmax(model.predict(x, batch_size=1024, verbose=0), -1) == y))


def litert_latency_us(model, x, invokes):
  """Median microseconds of single-sample invokes (1 thread) and the .tflite size."""
  from ai_edge_litert.interpreter import Interpreter  # pylint: disable=g-import-not-at-top
  flat = tf.lite.TFLiteConverter.from_keras_model(model).convert()
  interp = Interpreter(model_content=flat, num_threads=1)
  interp.allocate_tensors()
  inp = interp.get_input_details()[0]
  out = interp.get_output_details()[0]
  sample = x[:1].astype(np.float32)
  interp.set_tensor(inp["index"], sample)
  interp.invoke()
  np.testing.assert_allclose(interp.get_tensor(out["index"]), model(sample).numpy(),
                             rtol=1e-3, atol=1e-3)
  times = []
  for i in range(invokes):
    interp.set_tensor(inp["index"], x[i % len(x)][None].astype(np.float32))
    t0 = time.perf_counter()
    interp.invoke()
    times.append(time.perf_counter() - t0)
  return float(np.median(times) * 1e6), len(flat)


def architecture(model):
  parts = [str(int(np.prod(model.input_shape[1:])))]
  for layer in model.layers:
    if isinstance(layer, keras.layers.Dense):
      parts.append(str(layer.units))
    elif isinstance(layer, keras.layers.Conv2D):
      parts.append(f"c{layer.filters}")
  return "-".join(parts)


def structured(name, seed, dense_epochs, gate_epochs, kwargs, data):
  (x_train, y_train), (x_test, y_test) = data
  keras.utils.set_random_seed(seed)
  model = zoo.get(name, input_shape=x_train.shape[1:], num_classes=10)
  model.compile(optimizer=keras.optimizers.Adam(1e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
  t0 = time.time()
  model.fit(x_train, y_train, epochs=dense_epochs, batch_size=128, verbose=2)
  dense_acc = accuracy(model, x_test, y_test)
  pruned = tfprune.prune(model, "l0_gates", **kwargs)
  method = tfprune.get_method(pruned)
  method.fit(pruned, x_train, y_train, epochs=gate_epochs, batch_size=128, verbose=2)
  gated_acc = accuracy(pruned, x_test, y_test)
  shrunk = tfprune.strip(pruned, shrink=True)
  seconds = time.time() - t0
  shrunk_acc = accuracy(shrunk, x_test, y_test)
  diff = float(np.max(np.abs(shrunk.predict(x_test[:2000], verbose=0)
                             - pruned.predict(x_test[:2000], verbose=0))))
  os.makedirs(FLAGS.out, exist_ok=True)
  shrunk.save(os.path.join(FLAGS.out, f"{name}_s{seed}_shrunk.keras"))
  params, macs = count_params_and_macs(model)
  sparams, smacs = count_params_and_macs(shrunk)
  lat_dense, size_dense = litert_latency_us(model, x_test, FLAGS.invokes)
  lat_shrunk, size_shrunk = litert_latency_us(shrunk, x_test, FLAGS.invokes)
  row = {"model": name, "seed": seed, "dense_epochs": dense_epochs,
         "gate_epochs": gate_epochs, "l0_gates_kwargs": kwargs, "kept": method.last_kept,
         "dense_arch": architecture(model), "shrunk_arch": architecture(shrunk),
         "dense_acc": dense_acc, "gated_acc": gated_acc, "shrunk_acc": shrunk_acc,
         "max_abs_output_diff": diff, "params": params, "shrunk_params": sparams,
         "param_ratio": sparams / params, "macs": macs, "shrunk_macs": smacs,
         "mac_ratio": smacs / macs, "litert_us_dense": lat_dense,
         "litert_us_shrunk": lat_shrunk, "speedup": lat_dense / lat_shrunk,
         "tflite_bytes_dense": size_dense, "tflite_bytes_shrunk": size_shrunk,
         "seconds": seconds}
  print(json.dumps(row), flush=True)
  return row


def structured_table(rows):
  lines = ["| model | seed | dense arch -> shrunk arch | dense acc | shrunk acc | params | "
           "MACs | LiteRT us dense / shrunk (speedup) | .tflite bytes | max |out diff| |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(
        f"| {r['model']} | {r.get('seed', 0)} | {r['dense_arch']} -> {r['shrunk_arch']} | "
        f"{100 * r['dense_acc']:.2f}% | {100 * r['shrunk_acc']:.2f}% | "
        f"{r['params']:,} -> {r['shrunk_params']:,} ({100 * r['param_ratio']:.1f}%) | "
        f"{r['macs']:,} -> {r['shrunk_macs']:,} ({100 * r['mac_ratio']:.1f}%) | "
        f"{r['litert_us_dense']:.1f} / {r['litert_us_shrunk']:.1f} "
        f"({r['speedup']:.2f}x) | {r['tflite_bytes_dense']:,} -> "
        f"{r['tflite_bytes_shrunk']:,} | {r['max_abs_output_diff']:.1e} |")
  return "\n".join(lines)


def main(argv):
  del argv
  os.makedirs(FLAGS.out, exist_ok=True)
  data = data_lib.load("mnist")
  path = os.path.join(FLAGS.out, "structured.json")
  rows = json.load(open(path)) if os.path.exists(path) else []
  if "structured" in FLAGS.parts:
    rows = []
    jobs = ([("lenet_300_100", int(seed), FLAGS.lenet300_dense_epochs,
              FLAGS.lenet300_gate_epochs, json.loads(FLAGS.lenet300_kwargs))
             for seed in FLAGS.lenet300_seeds] +
            [("lenet5", int(seed), FLAGS.lenet5_dense_epochs, FLAGS.lenet5_gate_epochs,
              json.loads(FLAGS.lenet5_kwargs)) for seed in FLAGS.lenet5_seeds])
    for job in jobs:
      rows.append(structured(*job, data))
      with open(path, "w") as f:
        json.dump(rows, f, indent=1)
  table = structured_table(rows)
  with open(os.path.join(FLAGS.out, "structured.md"), "w") as f:
    f.write(f"Command: `python bench/l0_bench.py {' '.join(sys.argv[1:])}`\n\n{table}\n")
  print(table)
  if "projection" in FLAGS.parts:
    subprocess.run([sys.executable, os.path.join(HERE, "compare.py"),
                    "--model=lenet_300_100", "--dataset=mnist",
                    f"--sparsities={FLAGS.sparsities}",
                    "--methods=l0_projection:layer,l0_projection:global",
                    f"--output_dir={FLAGS.projection_out}"], check=True)

if __name__ == "__main__":
  app.run(main)
