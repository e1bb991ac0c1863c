"""Layer-wise, retrain-free pruning on MNIST: logsum vs l0 (IHT) vs one-shot magnitude.

Usage (from the repo root; writes bench/out/layerwise_*.json/png):
  TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python bench/layerwise_bench.py
  TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python bench/layerwise_bench.py --parts=speed
  time TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python bench/layerwise_bench.py --parts=mobilenet
  TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python bench/layerwise_bench.py --parts=finetune \
      --nets=lenet_300_100 --sparsities=0.9,0.95
Dense models are trained once (Adam 1e-3, batch 128; 10 epochs LeNet-300-100, 6 epochs
LeNet-5) and cached in bench/out/. Calibration: the first 10,000 training images; no
labels and no retraining are used by the pruning.
"""
import json
import os
import sys
import time

from absl import app
from absl import flags
import keras
import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tfprune import data as data_lib  # pylint: disable=g-import-not-at-top
from tfprune import layerwise
from tfprune import masks as masks_lib
from tfprune import zoo
from tfprune.methods import l0
from tfprune.methods import logsum

FLAGS = flags.FLAGS
flags.DEFINE_list("nets", ["lenet_300_100", "lenet5"], "Networks.")
flags.DEFINE_list("sparsities", ["0.8", "0.9", "0.95"], "Target sparsities.")
flags.DEFINE_list("parts", ["accuracy", "speed"], "accuracy, speed, finetune, mobilenet.")
flags.DEFINE_list("methods", ["magnitude", "logsum", "l0"], "Methods for accuracy part.")
flags.DEFINE_list("allocations", ["layer", "global"], "Allocations.")
flags.DEFINE_string("mode", "cascade", "cascade or parallel.")
flags.DEFINE_integer("calibration_samples", 10000, "Calibration images.")
flags.DEFINE_string("out", os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"),
                    "Output directory.")

EPOCHS = {"lenet_300_100": 10, "lenet5": 6}


def dense_model(name, data):
  path = os.path.join(FLAGS.out, f"dense_{name}.weights.h5")
  model = zoo.get(name)
  model.compile(optimizer=keras.optimizers.Adam(1e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
  if os.path.exists(path):
    model.load_weights(path)
  else:
    (x, y), _ = data
    keras.utils.set_random_seed(0)
    model.fit(x, y, batch_size=128, epochs=EPOCHS[name], verbose=2)
    model.save_weights(path)
  return model


def accuracy(model, data):
  _, (x, y) = data
  logits = model.predict(x, batch_size=1000, verbose=0)
  return float(np.mean(np.argmax(logits, -1) == y))


def copy_of(model):
  clone = keras.models.clone_model(model)
  clone.set_weights(model.get_weights())
  return clone


def magnitude(model, targets):
  """One-shot magnitude pruning at the given per-layer sparsities, no retraining."""
  pruned = copy_of(model)
  for layer in layerwise.supported_layers(pruned):
    w = layer.kernel.numpy()
    mask = masks_lib.topk_mask(tf.abs(w), masks_lib.keep_count(w.size, targets[layer.name]))
    layer.kernel.assign(w * mask.numpy())
  return pruned


def run_accuracy(name, model, data, results):
  (x, _), _ = data
  cal = x[:FLAGS.calibration_samples]
  dense_acc = accuracy(model, data)
  results.setdefault(name, {})["dense"] = dense_acc
  print(f"== {name}: dense accuracy {dense_acc:.4f}", flush=True)
  for s in map(float, FLAGS.sparsities):
    for alloc in FLAGS.allocations:
      per_layer = None
      for method in [m for m in FLAGS.methods if m != "magnitude"] + (
          ["magnitude"] if "magnitude" in FLAGS.methods else []):
        key = f"{method}/{alloc}/{s}"
        if method == "magnitude":
          if per_layer is None:
            continue
          pruned = magnitude(model, per_layer)
          results[name][key] = {"accuracy": accuracy(pruned, data),
                                "per_layer": per_layer}
          print(f"{name} {key}: acc {results[name][key]['accuracy']:.4f} "
                f"(same per-layer sparsities as logsum)", flush=True)
          continue
        solver = logsum.LogSumSolver() if method == "logsum" else l0.IHTSolver()
        pruned = copy_of(model)
        t0 = time.perf_counter()
        rows = layerwise.prune_layerwise(
            pruned, cal, solver, sparsity=s, allocation=alloc, mode=FLAGS.mode,
            relu_model=(method == "l0" and "auto"), verbose=True)
        total = time.perf_counter() - t0
        acc = accuracy(pruned, data)
        if method == "logsum":
          per_layer = {r["layer"]: r["sparsity"] for r in rows}
        results[name][key] = {"accuracy": acc, "seconds_total": total, "rows": rows}
        print(f"{name} {key}: acc {acc:.4f} total {total:.1f}s\n"
              f"{layerwise.format_table(rows)}", flush=True)
        save(results)


def run_speed(name, model, data, results):
  """Seconds per layer for several eta (paper Fig. 2), logsum at 0.90, parallel stats."""
  (x, _), _ = data
  cal = x[:FLAGS.calibration_samples]
  out = results.setdefault(f"speed/{name}", {})
  for eta in (1e-2, 1e-3, 1e-4):
    pruned = copy_of(model)
    rows = layerwise.prune_layerwise(pruned, cal, logsum.LogSumSolver(eta=eta),
                                     sparsity=0.9, mode="parallel", verbose=True)
    out[str(eta)] = {"accuracy": accuracy(pruned, data), "rows": rows}
    save(results)


def run_finetune(name, model, data, results):
  """logsum (global, cascade) + 1 masked fine-tune epoch vs TFMOT with 1 pruning epoch.

  Same dense weights and the same total epoch count (dense epochs + 1). TFMOT runs in
  its own venv through bench/tfmot_runner.py (a subprocess; never imported here).
  """
  import subprocess  # pylint: disable=g-import-not-at-top
  import tfprune  # pylint: disable=g-import-not-at-top
  (x, y), (xt, yt) = data
  out = results.setdefault(f"finetune/{name}", {})
  sparsities = [float(s) for s in FLAGS.sparsities]
  for s in sparsities:
    pruned = tfprune.prune(model, logsum.LogSum(target_sparsity=s, scope="global"))
    rows = tfprune.get_method(pruned).apply(pruned, x[:FLAGS.calibration_samples])
    before = accuracy(pruned, data)
    pruned.compile(optimizer=keras.optimizers.Adam(1e-3),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    keras.utils.set_random_seed(0)
    pruned.fit(x, y, batch_size=128, epochs=1, verbose=0)
    stripped = tfprune.strip(pruned)
    kernels = [l.kernel.numpy() for l in layerwise.supported_layers(stripped)]
    zeros = sum(int(np.sum(k == 0)) for k in kernels) / sum(k.size for k in kernels)
    out[str(s)] = {"no_finetune": before, "finetune_1": accuracy(stripped, data),
                   "achieved_sparsity": zeros, "per_layer": [r["sparsity"] for r in rows]}
    print(f"finetune {name} {s}: {out[str(s)]}", flush=True)
    save(results)
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  tfmot_python = os.path.join(repo, ".venv-tfmot", "bin", "python")
  if not os.path.exists(tfmot_python):
    return
  npz_w = os.path.join(FLAGS.out, f"layerwise_{name}_dense.npz")
  np.savez(npz_w, *model.get_weights())
  npz_d = os.path.join(FLAGS.out, "layerwise_mnist_uint8.npz")
  if not os.path.exists(npz_d):
    np.savez(npz_d, x_train=np.round(x * 255).astype(np.uint8), y_train=y,
             x_test=np.round(xt * 255).astype(np.uint8), y_test=yt)
  job = {"model": name, "input_shape": [28, 28, 1], "num_classes": 10, "weights": npz_w,
         "data": npz_d, "batch_size": 128, "prune_epochs": 1, "schedule_fraction": 0.6,
         "frequency": 100, "learning_rate": 1e-3, "seed": 0, "sparsities": sparsities}
  job_path = os.path.join(FLAGS.out, f"layerwise_tfmot_job_{name}.json")
  res_path = os.path.join(FLAGS.out, f"layerwise_tfmot_{name}.json")
  with open(job_path, "w") as f:
    json.dump(job, f)
  env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
  runner = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tfmot_runner.py")
  subprocess.run([tfmot_python, runner, job_path, res_path], check=True, env=env)
  with open(res_path) as f:
    out["tfmot_1_epoch"] = json.load(f)
  save(results)


def run_mobilenet(results):
  """Speed on a real net: MobileNetV2(alpha=0.35, 64x64x3, weights=None, classes=10),
  every prunable layer, 64 calibration samples, logsum at 0.5 per layer, cascade."""
  keras.utils.set_random_seed(0)
  model = keras.applications.MobileNetV2(alpha=0.35, input_shape=(64, 64, 3),
                                         weights=None, classes=10)
  cal = np.random.default_rng(0).normal(size=(64, 64, 64, 3)).astype(np.float32)
  load = os.getloadavg()[0]
  t0 = time.perf_counter()
  rows = layerwise.prune_layerwise(model, cal, logsum.LogSumSolver(), sparsity=0.5)
  seconds = time.perf_counter() - t0
  results["mobilenet_v2_035_64"] = {
      "seconds": seconds, "layers": len(rows), "load_before": load,
      "load_after": os.getloadavg()[0],
      "solve_seconds": sum(r["seconds"] for r in rows),
      "stats_seconds": sum(r["stats_seconds"] for r in rows)}
  print(f"mobilenet: {len(rows)} layers in {seconds:.1f}s "
        f"{results['mobilenet_v2_035_64']}", flush=True)


def save(results):
  with open(os.path.join(FLAGS.out, "layerwise_results.json"), "w") as f:
    json.dump(results, f, indent=1, default=str)


def plot(results):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  nets = [k for k in results if k.startswith("speed/")]
  if not nets:
    return
  fig, axes = plt.subplots(1, len(nets), figsize=(5 * len(nets), 3.5))
  axes = np.atleast_1d(axes)
  for ax, key in zip(axes, nets):
    etas = list(results[key])
    layers = [r["layer"] for r in results[key][etas[0]]["rows"]]
    width = 0.8 / len(etas)
    for i, eta in enumerate(etas):
      secs = [r["seconds"] for r in results[key][eta]["rows"]]
      ax.bar(np.arange(len(layers)) + i * width, secs, width, label=f"eta={eta}")
    ax.set_xticks(np.arange(len(layers)) + 0.4 - width / 2, layers)
    ax.set_ylabel("seconds (solve + lambda search + refit)")
    ax.set_title(f"{key.split('/')[1]} @ 0.90, logsum")
    ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(FLAGS.out, "layerwise_time_per_layer.png"), dpi=120)


def write_tables(results):
  """bench/out/layerwise_tables.md: accuracy and per-layer seconds, from the JSON."""
  lines = []
  for name, res in results.items():
    if name.startswith("speed/"):
      lines.append(f"\n### {name}: logsum @0.90 (parallel), seconds per layer by eta\n")
      lines.append("| eta | accuracy | " + " | ".join(
          f"{r['layer']} s (it, solves)" for r in next(iter(res.values()))["rows"]) + " |")
      lines.append("|---" * (2 + len(next(iter(res.values()))["rows"])) + "|")
      for eta, v in res.items():
        lines.append(f"| {eta} | {100 * v['accuracy']:.2f} | " + " | ".join(
            f"{r['seconds']:.2f} ({r['iterations']}, {r['solves']})" for r in v["rows"])
                     + " |")
      continue
    lines.append(f"\n### {name} (dense {100 * res['dense']:.2f}%), no retraining\n")
    lines.append("| sparsity | allocation | magnitude | logsum | l0 (IHT) | logsum s/layer |"
                 " l0 s/layer | logsum per-layer sparsity |")
    lines.append("|---" * 8 + "|")
    for s in FLAGS.sparsities:
      for alloc in FLAGS.allocations:
        get = lambda m, key="accuracy": res.get(f"{m}/{alloc}/{float(s)}", {}).get(key)
        fmt = lambda v: "-" if v is None else f"{100 * v:.2f}"
        secs = lambda m: ", ".join(f"{r['seconds']:.1f}" for r in (get(m, "rows") or []))
        alloc_s = ", ".join(f"{r['sparsity']:.3f}" for r in (get("logsum", "rows") or []))
        lines.append(f"| {s} | {alloc} | {fmt(get('magnitude'))} | {fmt(get('logsum'))} | "
                     f"{fmt(get('l0'))} | {secs('logsum')} | {secs('l0')} | {alloc_s} |")
  with open(os.path.join(FLAGS.out, "layerwise_tables.md"), "w") as f:
    f.write("\n".join(lines) + "\n")


def main(argv):
  del argv
  tf.get_logger().setLevel("ERROR")
  os.makedirs(FLAGS.out, exist_ok=True)
  path = os.path.join(FLAGS.out, "layerwise_results.json")
  results = json.load(open(path)) if os.path.exists(path) else {}
  if "mobilenet" in FLAGS.parts:
    run_mobilenet(results)
    save(results)
    if FLAGS.parts == ["mobilenet"]:
      return
  data = data_lib.load("mnist")
  for name in FLAGS.nets:
    model = dense_model(name, data)
    if "speed" in FLAGS.parts:
      run_speed(name, model, data, results)
    if "accuracy" in FLAGS.parts:
      run_accuracy(name, model, data, results)
    if "finetune" in FLAGS.parts:
      run_finetune(name, model, data, results)
    save(results)
    write_tables(results)
  plot(results)


if __name__ == "__main__":
  app.run(main)
