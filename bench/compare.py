r"""tfprune vs TFMOT: the same protocol, the same dense starting weights, one invocation.

Protocol (docs/algorithms.md section 6): train the zoo model dense for --dense_epochs (Adam
--learning_rate, batch --batch_size, seed), save its weights; then for every sparsity:
  * TFMOT `prune_low_magnitude` (uniform per-layer allocation) with PolynomialDecay from 0
    to the sparsity over the first --schedule_fraction of the pruning steps, frequency
    --frequency, --prune_epochs epochs, `strip_pruning` - in a tf_keras SUBPROCESS (TFMOT
    flips the whole process to legacy Keras), starting from the same weights;
  * each tfprune method spec `name[:scope]` through `tfprune.prune` + `method.fit` with the
    same epoch budget (post-training methods: `method.apply` on --calibration_samples
    training images, no retraining).
Writes results.json, results.md (mean and per-seed accuracy, achieved sparsity, seconds,
ratios to TFMOT) and accuracy.png to --output_dir.

Example (the LeNet-300-100 record in bench/RESULTS.md):
  .venv/bin/python bench/compare.py --model=lenet_300_100 --dataset=mnist \
      --sparsities=0.9,0.95,0.98,0.99 --methods=magnitude:layer,magnitude:global
"""
import inspect
import json
import math
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

import tfprune  # pylint: disable=g-import-not-at-top
from tfprune import _io  # pylint: disable=g-import-not-at-top
from tfprune import data as data_lib  # pylint: disable=g-import-not-at-top
from tfprune import plots  # pylint: disable=g-import-not-at-top
from tfprune import zoo  # pylint: disable=g-import-not-at-top

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

FLAGS = flags.FLAGS
flags.DEFINE_enum("model", "lenet_300_100", ["lenet_300_100", "lenet5"], "Zoo model.")
flags.DEFINE_enum("dataset", "mnist", data_lib.NAMES, "Dataset.")
flags.DEFINE_list("sparsities", ["0.9", "0.95", "0.98", "0.99"], "Target sparsities.")
flags.DEFINE_list("methods", ["magnitude:layer", "magnitude:global"],
                  "tfprune method specs name[:scope].")
flags.DEFINE_list("seeds", ["0"], "Seeds (each trains its own dense model).")
flags.DEFINE_integer("dense_epochs", 10, "Dense epochs.")
flags.DEFINE_integer("prune_epochs", 10, "Pruning (+ fine-tune) epochs, the budget.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
flags.DEFINE_integer("frequency", 100, "Mask update frequency (steps).")
flags.DEFINE_float("schedule_fraction", 0.6, "PolynomialDecay reaches the target after "
                   "this fraction of the pruning steps.")
flags.DEFINE_integer("calibration_samples", 10000, "Calibration images for post-training "
                     "methods.")
flags.DEFINE_string("method_kwargs", "{}", "JSON: {method spec: {kwarg: value}}.")
flags.DEFINE_bool("tfmot", True, "Run the TFMOT baseline.")
_TFMOT_VENV_PYTHON = os.path.join(REPO, ".venv-tfmot", "bin", "python")
flags.DEFINE_string("tfmot_python",
                    _TFMOT_VENV_PYTHON if os.path.exists(_TFMOT_VENV_PYTHON)
                    else sys.executable,
                    "Python with tensorflow-model-optimization + tf-keras: the venv made "
                    "by bench/setup_tfmot.sh, else this one (pip install -e .[bench]).")
flags.DEFINE_integer("train_samples", None, "Use only N training samples (smoke tests).")
flags.DEFINE_bool("save_models", False, "Save every stripped model as "
                  "<output_dir>/models/<method>_<sparsity>_seed<seed>.keras, and TFMOT's "
                  "through the stock converter as tfmot_*_{float,int8}.tflite there.")
flags.DEFINE_string("output_dir", None, "Output directory (default "
                    "bench/out/compare_<model>_<dataset>).")


def parse_spec(spec):
  """`name[:scope]` -> (name, scope or None); validated against the registry."""
  name, _, scope = spec.partition(":")
  tfprune.methods.get_method_class(name)
  if scope and scope not in tfprune.masks.SCOPES:
    raise app.UsageError(f"--methods {spec!r}: unknown scope {scope!r}; valid "
                         f"{tfprune.masks.SCOPES}.")
  return name, scope or None


def train_dense(seed, data):
  (x_train, y_train), (x_test, y_test) = data
  keras.utils.set_random_seed(seed)
  model = zoo.get(FLAGS.model, input_shape=x_train.shape[1:],
                  num_classes=int(y_train.max()) + 1)
  model.compile(optimizer=keras.optimizers.Adam(FLAGS.learning_rate),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
  model.fit(x_train, y_train, epochs=FLAGS.dense_epochs, batch_size=FLAGS.batch_size,
            verbose=2)
  return model


def accuracy(model, x, y):
  return float(np.mean(np.argmax(model.predict(x, batch_size=1024, verbose=0), -1) == y))


def achieved_sparsity(model):
  rows = tfprune.sparsity_report(model, print_table=False)
  return tfprune.model.total_sparsity(rows), rows


def run_tfmot(dense, seed, data, workdir, tflite_dir=None):
  """Runs bench/tfmot_runner.py in the TFMOT venv; returns its results dict.

  With `tflite_dir`, the runner also writes each TFMOT model through the stock
  converter (float and int8 .tflite) there.
  """
  if not os.path.exists(FLAGS.tfmot_python):
    raise app.UsageError(f"--tfmot_python={FLAGS.tfmot_python!r} does not exist: run "
                         f"bash bench/setup_tfmot.sh, or pass --notfmot.")
  (x_train, y_train), (x_test, y_test) = data
  weights = os.path.join(workdir, f"dense_seed{seed}.npz")
  np.savez(weights, *dense.get_weights())
  data_path = os.path.join(workdir, "data.npz")
  if not os.path.exists(data_path):
    np.savez(data_path, x_train=np.round(x_train * 255).astype(np.uint8), y_train=y_train,
             x_test=np.round(x_test * 255).astype(np.uint8), y_test=y_test)
  job = {"model": FLAGS.model, "input_shape": list(x_train.shape[1:]),
         "num_classes": int(y_train.max()) + 1, "weights": weights, "data": data_path,
         "sparsities": [float(s) for s in FLAGS.sparsities], "seed": seed,
         "batch_size": FLAGS.batch_size, "prune_epochs": FLAGS.prune_epochs,
         "learning_rate": FLAGS.learning_rate, "frequency": FLAGS.frequency,
         "schedule_fraction": FLAGS.schedule_fraction}
  if tflite_dir:
    os.makedirs(tflite_dir, exist_ok=True)
    job["tflite_dir"] = tflite_dir
  if FLAGS.model == "lenet5":
    job["model_kwargs"] = {"padding": dense.layers[1].get_config()["padding"]}
  job_path = os.path.join(workdir, f"tfmot_job_seed{seed}.json")
  out_path = os.path.join(workdir, f"tfmot_out_seed{seed}.json")
  _io.atomic_write(job_path, json.dumps(job))
  env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
  subprocess.run([FLAGS.tfmot_python, os.path.join(HERE, "tfmot_runner.py"), job_path,
                  out_path], check=True, env=env)
  with open(out_path) as f:
    return json.load(f)


def run_tfprune(spec, dense, sparsity, seed, data, out):
  """Prunes a copy of `dense` with one method spec; returns a result dict."""
  (x_train, y_train), (x_test, y_test) = data
  name, scope = parse_spec(spec)
  cls = tfprune.methods.get_method_class(name)
  params = inspect.signature(cls.__init__).parameters
  kwargs = {"target_sparsity": sparsity}
  if scope:
    kwargs["scope"] = scope
  if "schedule" in params and not cls.post_training:
    steps = math.ceil(len(x_train) / FLAGS.batch_size) * FLAGS.prune_epochs
    kwargs["schedule"] = tfprune.PolynomialDecay(
        0.0, sparsity, 0, max(int(FLAGS.schedule_fraction * steps), 1),
        frequency=FLAGS.frequency)
  kwargs.update(json.loads(FLAGS.method_kwargs).get(spec, {}))
  keras.utils.set_random_seed(seed)
  pruned = tfprune.prune(dense, name, **kwargs)
  method = tfprune.get_method(pruned)
  start = time.time()
  if cls.post_training:
    method.apply(pruned, x_train[:FLAGS.calibration_samples])
  else:
    method.fit(pruned, x_train, y_train, epochs=FLAGS.prune_epochs,
               batch_size=FLAGS.batch_size,
               optimizer=keras.optimizers.Adam(FLAGS.learning_rate), verbose=0)
  seconds = time.time() - start
  stripped = tfprune.strip(pruned)
  achieved, rows = achieved_sparsity(stripped)
  result = {"method": spec, "sparsity": sparsity, "seed": seed,
            "accuracy": accuracy(stripped, x_test, y_test), "achieved_sparsity": achieved,
            "seconds": seconds,
            "kept_per_layer": {f"{r['layer']}/{r['weight']}": 1 - r["sparsity"]
                               for r in rows}}
  result["method_report"] = method.report()
  if FLAGS.save_models:
    name = f"{spec.replace(':', '_')}_{sparsity}_seed{seed}.keras"
    _io.atomic_save_keras(stripped, os.path.join(out, "models", name))
  print(f"{spec} @ {sparsity} seed {seed}: acc {result['accuracy']:.4f} "
        f"(sparsity {achieved:.4f}, {seconds:.1f} s)", flush=True)
  return result


def summarize(results, sparsities):
  """Markdown table: mean accuracy over seeds (and each seed), seconds, ratio to TFMOT."""
  labels = (["tfmot"] if FLAGS.tfmot else []) + list(FLAGS.methods)
  lines = ["| method | " + " | ".join(f"acc @ {s}" for s in sparsities) +
           " | mean s / run | time vs TFMOT |",
           "|---|" + "---|" * (len(sparsities) + 2)]
  tfmot_time = None
  for label in labels:
    cells, times = [], []
    for s in sparsities:
      runs = [r for r in results if r["method"] == label and r["sparsity"] == s]
      accs = [100 * r["accuracy"] for r in runs]
      times += [r["seconds"] for r in runs]
      if not accs:
        cells.append("-")
      elif len(accs) == 1:
        cells.append(f"{accs[0]:.2f}")
      else:
        cells.append(f"{np.mean(accs):.2f} ({'/'.join(f'{a:.2f}' for a in accs)})")
    mean_time = float(np.mean(times)) if times else float("nan")
    if label == "tfmot":
      tfmot_time = mean_time
    ratio = f"{mean_time / tfmot_time:.2f}x" if tfmot_time else "-"
    lines.append(f"| {label} | " + " | ".join(cells) + f" | {mean_time:.1f} | {ratio} |")
  return "\n".join(lines)


def main(argv):
  del argv
  sparsities = [float(s) for s in FLAGS.sparsities]
  for s in sparsities:
    tfprune.masks.validate_sparsity(s, "--sparsities")
  for spec in FLAGS.methods:
    parse_spec(spec)
  out = FLAGS.output_dir or os.path.join(HERE, "out",
                                         f"compare_{FLAGS.model}_{FLAGS.dataset}")
  os.makedirs(out, exist_ok=True)
  data = data_lib.load(FLAGS.dataset)
  if FLAGS.train_samples:
    (xt, yt), test = data
    data = (xt[:FLAGS.train_samples], yt[:FLAGS.train_samples]), test
  results, dense_acc = [], {}
  workdir = tempfile.mkdtemp(prefix="tfprune-compare-")
  start = time.time()
  for seed in [int(s) for s in FLAGS.seeds]:
    dense = train_dense(seed, data)
    dense_acc[seed] = accuracy(dense, data[1][0], data[1][1])
    print(f"seed {seed}: dense accuracy {dense_acc[seed]:.4f}", flush=True)
    if FLAGS.tfmot:
      tfmot = run_tfmot(dense, seed, data, workdir,
                        os.path.join(out, "models") if FLAGS.save_models else None)
      if abs(tfmot["dense_accuracy"] - dense_acc[seed]) > 0.002:
        raise RuntimeError(f"TFMOT's copy of the dense model scores "
                           f"{tfmot['dense_accuracy']:.4f}, ours {dense_acc[seed]:.4f}: "
                           f"the weights did not transfer.")
      results += [{"method": "tfmot", "seed": seed, **r} for r in tfmot["runs"]]
    for spec in FLAGS.methods:
      for s in sparsities:
        results.append(run_tfprune(spec, dense, s, seed, data, out))
  table = summarize(results, sparsities)
  protocol = (f"{FLAGS.model}/{FLAGS.dataset}: {FLAGS.dense_epochs} dense + "
              f"{FLAGS.prune_epochs} pruning epochs, Adam {FLAGS.learning_rate}, batch "
              f"{FLAGS.batch_size}, PolynomialDecay 0 -> s over the first "
              f"{FLAGS.schedule_fraction:.0%} of pruning steps, frequency "
              f"{FLAGS.frequency}, seeds {FLAGS.seeds}, same dense weights for every "
              f"method; dense accuracy "
              f"{', '.join(f'{100 * a:.2f}' for a in dense_acc.values())}%.")
  command = "python bench/compare.py " + " ".join(sys.argv[1:])
  report = (f"Command: `{command}`\n\nProtocol: {protocol}\n\n{table}\n\n"
            f"Total wall time {time.time() - start:.0f} s.\n")
  print(report)
  _io.atomic_write(os.path.join(out, "results.json"), json.dumps(
      {"protocol": protocol, "command": command, "dense_accuracy": dense_acc,
       "results": results}, indent=2))
  _io.atomic_write(os.path.join(out, "results.md"), report)
  series = {}
  for label in (["tfmot"] if FLAGS.tfmot else []) + list(FLAGS.methods):
    means = [np.mean([100 * r["accuracy"] for r in results
                      if r["method"] == label and r["sparsity"] == s] or [np.nan])
             for s in sparsities]
    series[label] = (sparsities, means)
  plots.lines(series, os.path.join(out, "accuracy.png"), "target sparsity",
              "test accuracy (%)", f"{FLAGS.model} / {FLAGS.dataset}")


if __name__ == "__main__":
  app.run(main)
