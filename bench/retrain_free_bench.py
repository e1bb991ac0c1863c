"""Retrain-free pruning bench (issue 29 item 2): magnitude, Wanda, SparseGPT (both
targets), logsum and l0 on the SAME trained models and calibration images, one process.

For each net (`--nets`): train a small dense model (cached in bench/out/), then for each
method, sparsity and scope prune a copy of the SAME dense weights with
`tfprune.prune(model, name, target_sparsity=s, scope=...)` +
`tfprune.get_method(pruned).apply(pruned, calibration_x)` + `tfprune.strip` (magnitude:
one-shot `method.update_masks(s)`, no calibration) on the same `--calibration_samples`
unlabelled training images, no retraining. Reported per run: test accuracy with the
BatchNorm statistics left as trained and (nets with BatchNorm) re-estimated on the
calibration images (`tfprune.layerwise.recalibrate_batchnorm`); the held-out relative
RMS error of the final layer's outputs (logits) against the dense model on
`--heldout_samples` test images; seconds (total, and the layer table's statistics and
solve split where the method has one). A progress line per run; the JSON and markdown
tables are rewritten after every run (a cut-off run keeps its finished rows).

Usage (repo root; writes bench/out/retrain_free_<nets>.json/.md):
  TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python bench/retrain_free_bench.py --fast
  TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python bench/retrain_free_bench.py --nets=lenet_300_100
  TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python bench/retrain_free_bench.py --nets=resnet8
  TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python bench/retrain_free_bench.py --nets=mobilenetv2_035
  TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python bench/retrain_free_bench.py --nets=transformer
Results: bench/RESULTS_layerwise.md, "Retrain-free bench (issue 29 item 2)".
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
import tfprune  # pylint: disable=g-import-not-at-top
from tfprune import data as data_lib
from tfprune import layerwise
from tfprune import zoo

FLAGS = flags.FLAGS
flags.DEFINE_list("nets", ["lenet_300_100", "resnet8"],
                  "lenet_300_100, resnet8, mobilenetv2_035, transformer.")
flags.DEFINE_list("methods", ["magnitude", "wanda", "sparsegpt_published",
                              "sparsegpt_dense_outputs", "logsum", "l0"], "Methods.")
flags.DEFINE_list("sparsities", ["0.5", "0.7"], "Per-layer sparsities (scope=layer).")
flags.DEFINE_list("global_sparsities", ["0.7"], "Sparsities with scope=global.")
flags.DEFINE_integer("calibration_samples", 512, "Unlabelled calibration images.")
flags.DEFINE_integer("heldout_samples", 512, "Test images of the reconstruction error.")
flags.DEFINE_integer("test_samples", 10000, "Test images of the accuracy.")
flags.DEFINE_bool("fast", False, "Smoke run: tiny training, 64 calibration images, "
                  "1000 test images, 0.5 per layer only.")
flags.DEFINE_string("tag", "", "Suffix of the output file names.")
flags.DEFINE_string("out", os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"),
                    "Output directory.")

# name -> (data set, input size, channels, epochs, training images)
NETS = {"lenet_300_100": ("mnist", 28, 1, 4, 20000),
        "resnet8": ("fashion_mnist", 32, 1, 3, 10000),
        "mobilenetv2_035": ("fashion_mnist", 32, 3, 3, 20000),
        # tfprune.zoo.transformer reading the 28 image rows as 28 tokens (no text data
        # set ships with tfprune; this is the "the Transformer")
        "transformer": ("fashion_mnist", 28, 1, 4, 20000)}
# bench name -> (tfprune method name, extra arguments)
METHODS = {"magnitude": ("magnitude", {}),
           "wanda": ("wanda", {}),
           "sparsegpt_published": ("sparsegpt", {"target": "published"}),
           "sparsegpt_dense_outputs": ("sparsegpt", {"target": "dense_outputs"}),
           "logsum": ("logsum", {}),
           "logsum_fast": ("logsum", {"fast_search": True}),
           "l0": ("l0", {})}


def load_data(net):
  name, size, channels, _, n_train = NETS[net]
  (x, y), (xt, yt) = data_lib.load(name)
  if FLAGS.fast:
    n_train = 2000
  x, y = x[:n_train], y[:n_train]
  n_test = 1000 if FLAGS.fast else FLAGS.test_samples
  xt, yt = xt[:n_test], yt[:n_test]
  if size != x.shape[1]:
    x = tf.image.resize(x, (size, size)).numpy()
    xt = tf.image.resize(xt, (size, size)).numpy()
  if channels != x.shape[-1]:
    x, xt = np.tile(x, [1, 1, 1, channels]), np.tile(xt, [1, 1, 1, channels])
  return (x.astype(np.float32), y), (xt.astype(np.float32), yt)


def dense_model(net, train):
  _, size, channels, epochs, n_train = NETS[net]
  if FLAGS.fast:
    epochs, n_train = 1, 2000
  keras.utils.set_random_seed(0)
  if net == "mobilenetv2_035":
    model = keras.applications.MobileNetV2(alpha=0.35, input_shape=(size, size, channels),
                                           weights=None, classes=10,
                                           classifier_activation=None)
    # keras.applications' BN momentum 0.999 leaves the moving statistics near their init
    # after a few hundred steps (bench/layerwise_realnet.py): 0.9 as there.
    for layer in model.layers:
      if isinstance(layer, keras.layers.BatchNormalization):
        layer.momentum = 0.9
  else:
    model = zoo.get(net, input_shape=(size, size, channels), num_classes=10)
  model.compile(optimizer=keras.optimizers.Adam(1e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
  path = os.path.join(FLAGS.out, f"retrain_free_{net}_{epochs}e_{n_train}.weights.h5")
  if os.path.exists(path):
    model.load_weights(path)
    return model, 0.0
  t0 = time.perf_counter()
  model.fit(*train, batch_size=128, epochs=epochs, verbose=2)
  model.save_weights(path)
  return model, time.perf_counter() - t0


def accuracy(model, test):
  logits = model.predict(test[0], batch_size=500, verbose=0)
  return float(np.mean(np.argmax(logits, -1) == test[1]))


def rel_rms(model, x, y_dense):
  y = model.predict(x, batch_size=500, verbose=0)
  return float(np.linalg.norm(y - y_dense) / max(np.linalg.norm(y_dense), 1e-30))


def has_batchnorm(model):
  return any(isinstance(l, keras.layers.BatchNormalization) for l in model.layers)


def copy_of(model):
  clone = keras.models.clone_model(model)
  clone.set_weights(model.get_weights())
  return clone


def kernel_sparsity(model):
  zeros = total = 0
  for layer in model.layers:
    kernel = getattr(layer, "kernel", None)
    if kernel is not None and not isinstance(layer, keras.layers.BatchNormalization):
      k = np.asarray(kernel)
      zeros += int(np.sum(k == 0))
      total += k.size
  return zeros / max(total, 1)


def run_one(model, bench_name, sparsity, scope, calib):
  """Prunes a copy of `model`; returns `(stripped model, info)`."""
  name, kwargs = METHODS[bench_name]
  t0 = time.perf_counter()
  pruned = tfprune.prune(model, name, target_sparsity=sparsity, scope=scope, **kwargs)
  method = tfprune.get_method(pruned)
  info = {}
  if name == "magnitude":
    method.update_masks(sparsity)
  else:
    table = method.apply(pruned, calib, verbose=False)
    info["stats_seconds"] = float(sum(r.get("stats_seconds", 0.0) for r in table))
    info["solve_seconds"] = float(sum(r.get("seconds", 0.0) for r in table))
    info["layers"] = len(table)
    info["solves"] = int(sum(r.get("solves", 0) or 0 for r in table))
  stripped = tfprune.strip(pruned)
  info["seconds"] = time.perf_counter() - t0
  return stripped, info


def write(rows, meta, stem):
  with open(os.path.join(FLAGS.out, stem + ".json"), "w") as f:
    json.dump({"meta": meta, "rows": rows}, f, indent=1)
  lines = ["| net | method | scope | s | kernel sparsity | acc (BN as trained) | "
           "acc (BN re-estimated) | held-out rel. RMS (logits) | stats s | solve s | "
           "total s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
  fmt = lambda v, p: "-" if v is None else f"{v:.{p}f}"
  for r in rows:
    lines.append(
        f"| {r['net']} | {r['method']} | {r['scope']} | {fmt(r['sparsity'], 2)} | "
        f"{fmt(r.get('kernel_sparsity'), 3)} | {fmt(100 * r['acc'], 2)} | "
        f"{fmt(None if r.get('acc_bn') is None else 100 * r['acc_bn'], 2)} | "
        f"{fmt(r.get('heldout_rel_rms'), 4)} | {fmt(r.get('stats_seconds'), 1)} | "
        f"{fmt(r.get('solve_seconds'), 1)} | {fmt(r.get('seconds'), 1)} |")
  with open(os.path.join(FLAGS.out, stem + ".md"), "w") as f:
    f.write("\n".join(lines) + "\n")


def main(_):
  os.makedirs(FLAGS.out, exist_ok=True)
  sparsities = [0.5] if FLAGS.fast else [float(s) for s in FLAGS.sparsities]
  global_sparsities = [] if FLAGS.fast else [float(s) for s in FLAGS.global_sparsities]
  n_calib = 64 if FLAGS.fast else FLAGS.calibration_samples
  stem = ("retrain_free_" + "_".join(FLAGS.nets) + ("_fast" if FLAGS.fast else "")
          + (f"_{FLAGS.tag}" if FLAGS.tag else ""))
  rows, meta = [], {"calibration_samples": n_calib, "heldout_samples": FLAGS.heldout_samples,
                    "fast": FLAGS.fast, "load_before": os.getloadavg()[0], "nets": {}}
  for net in FLAGS.nets:
    train, test = load_data(net)
    model, train_s = dense_model(net, train)
    calib = train[0][:n_calib]
    heldout = test[0][-FLAGS.heldout_samples:]
    y_dense = model.predict(heldout, batch_size=500, verbose=0)
    bn = has_batchnorm(model)
    dense = {"acc": accuracy(model, test), "train_seconds": train_s,
             "train_samples": len(train[1]), "test_samples": len(test[1])}
    if bn:
      recal = copy_of(model)
      layerwise.recalibrate_batchnorm(recal, calib)
      dense["acc_bn"] = accuracy(recal, test)
    meta["nets"][net] = dense
    rows.append({"net": net, "method": "dense", "scope": "-", "sparsity": 0.0,
                 "kernel_sparsity": kernel_sparsity(model), "acc": dense["acc"],
                 "acc_bn": dense.get("acc_bn"), "heldout_rel_rms": 0.0})
    write(rows, meta, stem)
    print(f"{net} dense {100 * dense['acc']:.2f}"
          + (f" (BN re-estimated {100 * dense['acc_bn']:.2f})" if bn else "")
          + f" trained {train_s:.0f}s", flush=True)
    runs = [(s, "layer") for s in sparsities] + [(s, "global") for s in global_sparsities]
    for sparsity, scope in runs:
      for bench_name in FLAGS.methods:
        row = {"net": net, "method": bench_name, "scope": scope, "sparsity": sparsity,
               "acc": None}
        try:
          stripped, info = run_one(model, bench_name, sparsity, scope, calib)
        except Exception as e:  # pylint: disable=broad-except
          row["error"] = f"{type(e).__name__}: {e}"[:300]
          rows.append(row)
          write(rows, meta, stem)
          print(f"{net} {bench_name} {scope} {sparsity}: FAILED {row['error']}", flush=True)
          continue
        row.update(info)
        row["kernel_sparsity"] = kernel_sparsity(stripped)
        row["acc"] = accuracy(stripped, test)
        row["heldout_rel_rms"] = rel_rms(stripped, heldout, y_dense)
        if bn:
          layerwise.recalibrate_batchnorm(stripped, calib)
          row["acc_bn"] = accuracy(stripped, test)
        row["load"] = os.getloadavg()[0]
        rows.append(row)
        write(rows, meta, stem)
        print(f"{net} {bench_name:24s} {scope:6s} s={sparsity:.2f} "
              f"acc {100 * row['acc']:.2f}"
              + (f" (BN re-est. {100 * row['acc_bn']:.2f})" if bn else "")
              + f" rms {row['heldout_rel_rms']:.4f} {row['seconds']:.1f}s"
              + (f" (stats {row['stats_seconds']:.1f}s)" if "stats_seconds" in row else ""),
              flush=True)
  meta["load_after"] = os.getloadavg()[0]
  write(rows, meta, stem)


if __name__ == "__main__":
  app.run(main)
