r"""ADMM global vs magnitude global vs TFMOT on ResNet-8 / Fashion-MNIST, per removal ratio.

Seed 001's second experiment (docs/algorithms.md section 2: Lee et al. 2023, one global
removal ratio r, ADMM W/Z/U steps, hard prune, masked fine-tune): the accuracy-vs-ratio
curve and the per-layer kept fraction the global allocation chooses (the paper: global
keeps the early feature layers denser).

Protocol: Fashion-MNIST 28x28x1 resized to 32x32x1 (bilinear, then rounded to 1/255 so
every method, TFMOT included, sees the same uint8 pixels); the first --train_samples
training images and the first --test_samples test images; MLPerf Tiny ResNet-8
(`tfprune.zoo.resnet8`, L2 1e-4). One dense model (Adam --learning_rate, batch
--batch_size, --dense_epochs, seed --seed), then for every ratio r, from the SAME dense
weights and with the same --prune_epochs budget:
  * admm:global: `tfprune.prune(dense, "admm", target_sparsity=r, scope="global")` +
    `method.fit` (ADMM on the first 60% of the epochs, hard prune, masked fine-tune);
    the Z-step interval is chosen so that about --z_steps Z-steps happen; the other
    ADMM arguments come from --admm_kwargs;
  * magnitude:global: gradual magnitude pruning, PolynomialDecay 0 -> r over the first
    60% of the pruning steps, one global threshold;
  * tfmot: `prune_low_magnitude` (uniform per-layer), same schedule, in the TFMOT venv
    (bench/tfmot_runner.py in a subprocess, OMP_NUM_THREADS and the TF thread pools set
    to --threads).
TF runs with --threads intra/inter-op threads (1 by default: the machine is shared).

After every run the rows are rewritten to <output_dir>/admm_ratio.json and .md and both
plots (admm_ratio_accuracy.png, admm_ratio_kept.png) are redrawn, so a run cut off part
way still leaves every finished row.

Full run (bench/RESULTS.md section 11):
  nohup .venv/bin/python bench/admm_ratio_bench.py > bench/results/admm_ratio.log 2>&1 &
Several seeds (one dense model each; mean and min-max per cell), tfprune methods only:
  .venv/bin/python bench/admm_ratio_bench.py --seeds 0,1,2 \
      --methods admm:global,magnitude:global
Structured (channel groups removed until r of the MACs are gone, then shrunk; the
shrunk model is checked against the masked one):
  .venv/bin/python bench/admm_ratio_bench.py --seeds 0,1,2 --ratios 0.5 \
      --methods admm:structured,magnitude:structured --output_dir bench/results/admm_structured
Smoke test (< 1 min of work, writes to bench/out/admm_ratio_fast):
  .venv/bin/python bench/admm_ratio_bench.py --fast
"""
import json
import math
import os
import subprocess
import sys
import time

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # pylint: disable=g-import-not-at-top

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
_TFMOT_VENV_PYTHON = os.path.join(REPO, ".venv-tfmot", "bin", "python")

FLAGS = flags.FLAGS
flags.DEFINE_list("ratios", ["0.9", "0.5", "0.7", "0.8", "0.3"], "Removal ratios (target "
                  "sparsities), RUN in this order (the ends of the curve first, so a run "
                  "cut off still spans it); tables and plots sort them.")
flags.DEFINE_list("methods", ["admm:global", "magnitude:global", "tfmot"],
                  "Methods per ratio: admm:global, magnitude:global, tfmot.")
flags.DEFINE_integer("train_samples", 2000, "First N Fashion-MNIST training images.")
flags.DEFINE_integer("test_samples", 2000, "First N test images (accuracy).")
flags.DEFINE_integer("dense_epochs", 8, "Dense epochs.")
flags.DEFINE_integer("prune_epochs", 3, "Pruning (+ fine-tune) epochs, every method.")
flags.DEFINE_integer("batch_size", 32, "Batch size. Small on purpose: BatchNormalization's "
                     "moving averages (momentum 0.99) need a few hundred steps; at 128 "
                     "(192 dense steps) the dense test accuracy was 49.7% vs 82% train.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate (dense and pruning).")
flags.DEFINE_float("schedule_fraction", 0.6, "Gradual schedules reach r after this "
                   "fraction of the pruning steps; ADMM's phase is the same fraction.")
flags.DEFINE_integer("mask_updates", 12, "Gradual schedules update the masks about this "
                     "many times (frequency = schedule steps / this).")
flags.DEFINE_integer("z_steps", 20, "ADMM Z-steps to aim for (admm_interval = ADMM "
                     "steps / this).")
flags.DEFINE_string("admm_kwargs", '{"rho0": 0.001, "rho_growth": 1.4, "target_ramp": 0.5, '
                    '"penalty": "proximal", "primal_tol": 0.05}',
                    "JSON kwargs for the ADMM method (besides target_sparsity, scope, "
                    "admm_interval), e.g. target_ramp, rho_schedule, primal_tol, penalty. "
                    "Default: the convergent recipe of docs/algorithms.md section 2 "
                    "(issue 28); bench/RESULTS.md section 11 used rho0 0.001 and "
                    "rho_growth 1.4 only.")
flags.DEFINE_integer("seed", 0, "Seed (when --seeds is not given).")
flags.DEFINE_list("seeds", None, "Seeds to loop over (each: its own dense model, trained "
                  "or reused from the work directory, then every ratio and method); "
                  "tables give mean and spread (min-max) over the seeds.")
flags.DEFINE_integer("bn_samples", 1000, "Training images the BatchNormalization "
                     "statistics are re-estimated on before every evaluation (each "
                     "method, TFMOT and dense alike).")
flags.DEFINE_bool("reuse_dense", False, "Load the dense weights a previous run saved in "
                  "the work directory (bench/out/admm_ratio_work/dense.npz) instead of "
                  "training them (same flags assumed).")
flags.DEFINE_integer("threads", 1, "TF intra/inter-op threads (and OMP_NUM_THREADS of "
                     "the TFMOT subprocess).")
flags.DEFINE_string("tfmot_python",
                    _TFMOT_VENV_PYTHON if os.path.exists(_TFMOT_VENV_PYTHON)
                    else sys.executable,
                    "Python with tensorflow-model-optimization + tf-keras: the venv made "
                    "by bench/setup_tfmot.sh, else this one (pip install -e .[bench]).")
flags.DEFINE_bool("fast", False, "Smoke test: 256 train / 256 test images, 1 + 2 epochs, "
                  "ratios 0.5 and 0.9, output in bench/out/admm_ratio_fast.")
flags.DEFINE_string("output_dir", None, "Results directory (default bench/results; "
                    "with --fast bench/out/admm_ratio_fast).")

MODEL = "resnet8"
# `:structured` removes channel groups through the channel graph until r of the MACs are
# gone (`target_macs = 1 - r`), then shrinks; its "sparsity" column is the MACs removed.
METHODS = ("admm:global", "magnitude:global", "admm:structured", "magnitude:structured",
           "tfmot")


def _setup_threads():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
  tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)


def load_data(n_train, n_test):
  """Fashion-MNIST resized to 32x32x1, quantised to 1/255, float32 in [0, 1]."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfprune import data as data_lib  # pylint: disable=g-import-not-at-top
  (x, y), (xt, yt) = data_lib.load("fashion_mnist")
  x, y, xt, yt = x[:n_train], y[:n_train], xt[:n_test], yt[:n_test]

  def resize(images):
    out = [tf.image.resize(images[i:i + 4096], (32, 32)).numpy()
           for i in range(0, len(images), 4096)]
    return np.round(np.clip(np.concatenate(out), 0, 1) * 255).astype(np.uint8)

  return (resize(x), y), (resize(xt), yt)


def accuracy(model, x, y):
  return float(np.mean(np.argmax(model.predict(x, batch_size=500, verbose=0), -1) == y))


def recalibrate_bn(model, x):
  """Sets every BatchNormalization's moving mean / variance to the statistics of `x`.

  One forward pass in training mode with momentum 0 (then restored): every BN layer
  sees the batch statistics its predecessors produce, so the stored statistics are
  consistent through the network. Pruning moves the weights faster than momentum-0.99
  averages follow in a few hundred steps; measured here, without this the hard-pruned
  ADMM model scored 9.7% (chance) at r = 0.9 although it trained to ~60%.
  """
  import keras  # pylint: disable=g-import-not-at-top
  bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
  saved = [l.momentum for l in bns]
  for l in bns:
    l.momentum = 0.0
  try:
    model(x, training=True)
  finally:
    for l, m in zip(bns, saved):
      l.momentum = m


def _kernel_kept(model):
  import tfprune  # pylint: disable=g-import-not-at-top
  rows = tfprune.sparsity_report(model, print_table=False)
  kernels = [r for r in rows if r["weight"] == "kernel"]
  zeros = sum(r["size"] - r["nonzeros"] for r in kernels)
  total = sum(r["size"] for r in kernels)
  return ({f"{r['layer']}/kernel": r["nonzeros"] / r["size"] for r in kernels},
          zeros / max(total, 1))


def steps_of(n_train):
  return math.ceil(n_train / FLAGS.batch_size) * FLAGS.prune_epochs


def run_tfprune(spec, dense_weights, ratio, data):
  """One tfprune method at one ratio from the dense weights; returns a result row."""
  import keras  # pylint: disable=g-import-not-at-top
  import tfprune  # pylint: disable=g-import-not-at-top
  from tfprune import zoo  # pylint: disable=g-import-not-at-top
  (x, y), (xt, yt) = data
  keras.utils.set_random_seed(FLAGS.seed)
  dense = zoo.get(MODEL, input_shape=x.shape[1:], num_classes=10)
  dense.set_weights(dense_weights)
  steps = steps_of(len(x))
  schedule_steps = max(int(FLAGS.schedule_fraction * steps), 1)
  name, _, scope = spec.partition(":")
  kwargs = {"target_sparsity": ratio, "scope": scope or "global"}
  if scope == "structured":  # r is the fraction of the MACs removed (channel groups)
    kwargs["target_macs"] = 1.0 - ratio
  if name == "admm":
    kwargs.update(json.loads(FLAGS.admm_kwargs))
    kwargs.setdefault("admm_fraction", FLAGS.schedule_fraction)
    kwargs.setdefault("admm_interval", max(schedule_steps // FLAGS.z_steps, 1))
  else:
    kwargs["schedule"] = tfprune.PolynomialDecay(
        0.0, ratio, 0, schedule_steps,
        frequency=max(schedule_steps // FLAGS.mask_updates, 1))
  pruned = tfprune.prune(dense, name, **kwargs)
  method = tfprune.get_method(pruned)
  start = time.time()
  method.fit(pruned, x, y, epochs=FLAGS.prune_epochs, batch_size=FLAGS.batch_size,
             optimizer=keras.optimizers.Adam(FLAGS.learning_rate), verbose=0)
  seconds = time.time() - start
  extra = {}
  if scope == "structured":  # shrunk; must compute what the masked model computes
    stripped = tfprune.strip(pruned, shrink=True)
    probe = xt[:64]
    extra["max_abs_err_vs_masked"] = float(np.abs(
        stripped.predict(probe, verbose=0) - pruned.predict(probe, verbose=0)).max())
    from tfprune.shrink import count_params_and_macs  # pylint: disable=g-import-not-at-top
    kept = {}
    achieved = 1.0 - count_params_and_macs(stripped)[1] / count_params_and_macs(dense)[1]
  else:
    stripped = tfprune.strip(pruned)
    kept, achieved = _kernel_kept(stripped)
  raw = accuracy(stripped, xt, yt)
  recalibrate_bn(stripped, x[:FLAGS.bn_samples])
  row = {"method": spec, "ratio": ratio, "accuracy": accuracy(stripped, xt, yt),
         "accuracy_no_bn_recalibration": raw,
         "achieved_sparsity": achieved, "seconds": seconds, "kept_per_layer": kept,
         "kwargs": {k: v for k, v in kwargs.items() if k != "schedule"}, **extra}
  row["seed"] = FLAGS.seed
  if name == "admm":
    rep = method.report()
    row["admm"] = {"z_steps": rep["z_steps"], "admm_steps": rep["admm_steps"],
                   "hard_prune_step": rep["hard_prune_step"],
                   "hard_prune_trigger": rep.get("hard_prune_trigger"),
                   "final_primal_residual": rep["final_primal_residual"],
                   "final_rho": rep["history"][-1]["rho"] if rep["history"] else None,
                   "zstep_seconds_total": rep["zstep_seconds_total"]}
  return row


def run_tfmot(workdir, ratio, n_train, check_dense):
  """TFMOT at one ratio in its own venv (bench/tfmot_runner.py)."""
  if not os.path.exists(FLAGS.tfmot_python):
    raise app.UsageError(f"--tfmot_python={FLAGS.tfmot_python!r} does not exist: run "
                         f"bash bench/setup_tfmot.sh, or drop tfmot from --methods.")
  steps = steps_of(n_train)
  schedule_steps = max(int(FLAGS.schedule_fraction * steps), 1)
  job = {"model": MODEL, "input_shape": [32, 32, 1], "num_classes": 10,
         "weights": _dense_path(workdir), "weights_by_name": True,
         "data": os.path.join(workdir, "data.npz"), "sparsities": [ratio],
         "seed": FLAGS.seed, "batch_size": FLAGS.batch_size,
         "prune_epochs": FLAGS.prune_epochs, "learning_rate": FLAGS.learning_rate,
         "frequency": max(schedule_steps // FLAGS.mask_updates, 1),
         "schedule_fraction": FLAGS.schedule_fraction, "threads": FLAGS.threads,
         "check_dense": check_dense, "bn_samples": FLAGS.bn_samples}
  job_path = os.path.join(workdir, f"tfmot_job_{ratio}_{FLAGS.seed}.json")
  out_path = os.path.join(workdir, f"tfmot_out_{ratio}_{FLAGS.seed}.json")
  with open(job_path, "w") as f:
    json.dump(job, f)
  env = dict(os.environ, TF_USE_LEGACY_KERAS="1", OMP_NUM_THREADS=str(FLAGS.threads))
  subprocess.run([FLAGS.tfmot_python, os.path.join(HERE, "tfmot_runner.py"), job_path,
                  out_path], check=True, env=env)
  with open(out_path) as f:
    out = json.load(f)
  run = out["runs"][0]
  return ({"method": "tfmot", "ratio": ratio, "seed": FLAGS.seed,
           "accuracy": run["accuracy"],
           "accuracy_no_bn_recalibration": run["accuracy_no_bn_recalibration"],
           "achieved_sparsity": run["achieved_sparsity"], "seconds": run["seconds"],
           "kept_per_layer": run["kept_per_layer"]}, out["dense_accuracy"])


def table(rows, ratios, dense_acc):
  methods = [m for m in FLAGS.methods if any(r["method"] == m for r in rows)]
  lines = ["| method | " + " | ".join(f"r = {r}" for r in ratios) + " | mean s / run |",
           "|---|" + "---|" * (len(ratios) + 1)]
  for m in methods:
    cells, secs = [], []
    for ratio in ratios:
      hit = [r for r in rows if r["method"] == m and r["ratio"] == ratio]
      secs += [h["seconds"] for h in hit]
      if not hit:
        cells.append("not run")
      elif len(hit) == 1:
        cells.append(f"{100 * hit[0]['accuracy']:.2f} "
                     f"({100 * hit[0]['accuracy_no_bn_recalibration']:.2f})")
      else:  # several seeds: mean [min-max] (n)
        acc = [100 * h["accuracy"] for h in hit]
        cells.append(f"{np.mean(acc):.2f} [{min(acc):.2f}-{max(acc):.2f}] "
                     f"(n={len(acc)})")
    lines.append(f"| {m} | " + " | ".join(cells) + f" | {np.mean(secs):.0f} |")
  lines.append(f"| dense | " + " | ".join(f"{100 * dense_acc:.2f}" for _ in ratios)
               + " | - |")
  return "\n".join(lines)


def kept_table(rows, ratios):
  """Per-layer kept % of ADMM global and magnitude global at each ratio."""
  layers = []
  for r in rows:
    layers += [k for k in r["kept_per_layer"] if k not in layers]
  out = []
  for m in ("admm:global", "magnitude:global"):
    hits = {r["ratio"]: r for r in rows if r["method"] == m
            and r.get("seed", FLAGS.seed) == rows[0].get("seed", FLAGS.seed)}
    if not hits:
      continue
    done = [ratio for ratio in ratios if ratio in hits]
    out.append(f"{m}, kept % per kernel:\n")
    out.append("| layer | " + " | ".join(f"r = {r}" for r in done) + " |")
    out.append("|---|" + "---|" * len(done))
    for layer in layers:
      out.append(f"| {layer.split('/')[0]} | " + " | ".join(
          f"{100 * hits[r]['kept_per_layer'].get(layer, float('nan')):.1f}"
          for r in done) + " |")
    out.append("")
  return "\n".join(out)


def plot(rows, ratios, dense_acc, out):
  from tfprune import plots  # pylint: disable=g-import-not-at-top
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  series = {}
  for m in FLAGS.methods:
    done = sorted({r["ratio"] for r in rows if r["method"] == m})
    pts = [(ratio, np.mean([100 * r["accuracy"] for r in rows
                            if r["method"] == m and r["ratio"] == ratio]))
           for ratio in done]
    if pts:
      series[m] = ([p[0] for p in pts], [p[1] for p in pts])
  series["dense"] = (list(ratios), [100 * dense_acc] * len(ratios))
  plots.lines(series, os.path.join(out, "admm_ratio_accuracy.png"),
              "removal ratio (global sparsity of conv + dense kernels)",
              "test accuracy (%)", f"ResNet-8 / Fashion-MNIST 32x32x1 "
              f"({FLAGS.train_samples} train, {FLAGS.prune_epochs} pruning epochs)")
  methods = [m for m in FLAGS.methods if any(r["method"] == m for r in rows)]
  if not methods:
    return
  layers = []
  for r in rows:
    layers += [k for k in r["kept_per_layer"] if k not in layers]
  fig, axes = plt.subplots(1, len(methods), figsize=(4.6 * len(methods), 4.2),
                           sharey=True, squeeze=False)
  cmap = plt.get_cmap("viridis")
  for ax, m in zip(axes[0], methods):
    for i, ratio in enumerate(ratios):
      hit = [r for r in rows if r["method"] == m and r["ratio"] == ratio
             and r.get("seed") == rows[0].get("seed")]
      if hit:
        ax.plot(range(len(layers)),
                [100 * hit[0]["kept_per_layer"].get(l, np.nan) for l in layers],
                marker="o", color=cmap(i / max(len(ratios) - 1, 1)), label=f"r = {ratio}")
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels([l.split("/")[0] for l in layers], rotation=60, ha="right",
                       fontsize=7)
    ax.set_title(m, fontsize=9)
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel("kernel weights kept (%)")
  axes[0][-1].legend(fontsize=7)
  fig.suptitle("Per-layer kept fraction (input -> output), ResNet-8 / Fashion-MNIST",
               fontsize=10)
  fig.tight_layout()
  plots.save_figure(fig, os.path.join(out, "admm_ratio_kept.png"))


def _dense_path(workdir):
  """The dense weights of the current seed (seed 0 keeps the historical name)."""
  return os.path.join(workdir, "dense.npz" if FLAGS.seed == 0
                      else f"dense_seed{FLAGS.seed}.npz")


def write(rows, ratios, dense_acc, out, protocol, command, start):
  from tfprune import _io  # pylint: disable=g-import-not-at-top
  _io.atomic_write(os.path.join(out, "admm_ratio.json"), json.dumps(
      {"protocol": protocol, "command": command, "dense_accuracy": dense_acc,
       "rows": rows}, indent=1))
  md = (f"Command: `{command}`\n\nProtocol: {protocol}\n\nTest accuracy % (in brackets: before the BN re-estimation):\n\n"
        f"{table(rows, ratios, dense_acc)}\n\n{kept_table(rows, ratios)}\n"
        f"Wall time so far {time.time() - start:.0f} s.\n")
  _io.atomic_write(os.path.join(out, "admm_ratio.md"), md)
  plot(rows, ratios, dense_acc, out)


def main(argv):
  del argv
  if FLAGS.fast:
    FLAGS.train_samples, FLAGS.test_samples = 256, 256
    FLAGS.dense_epochs, FLAGS.prune_epochs = 1, 2
    FLAGS.ratios = ["0.5", "0.9"]
  order = [float(r) for r in FLAGS.ratios]
  ratios = sorted(order)
  for r in ratios:
    if not 0.0 < r < 1.0:
      raise app.UsageError(f"--ratios: {r} is not a removal ratio in (0, 1).")
  for m in FLAGS.methods:
    if m not in METHODS:
      raise app.UsageError(f"--methods: unknown {m!r}; valid {', '.join(METHODS)}.")
  if "tfmot" in FLAGS.methods and not os.path.exists(FLAGS.tfmot_python):
    raise app.UsageError(f"--tfmot_python={FLAGS.tfmot_python!r} does not exist: run "
                         f"bash bench/setup_tfmot.sh, or drop tfmot from --methods.")
  json.loads(FLAGS.admm_kwargs)
  out = FLAGS.output_dir or (os.path.join(HERE, "out", "admm_ratio_fast") if FLAGS.fast
                             else os.path.join(HERE, "results"))
  workdir = os.path.join(HERE, "out", "admm_ratio_fast_work" if FLAGS.fast
                         else "admm_ratio_work")
  os.makedirs(out, exist_ok=True)
  os.makedirs(workdir, exist_ok=True)
  _setup_threads()
  import keras  # pylint: disable=g-import-not-at-top
  from tfprune import zoo  # pylint: disable=g-import-not-at-top
  start = time.time()
  (x8, y), (xt8, yt) = load_data(FLAGS.train_samples, FLAGS.test_samples)
  np.savez(os.path.join(workdir, "data.npz"), x_train=x8, y_train=y, x_test=xt8,
           y_test=yt)
  data = ((x8.astype(np.float32) / 255.0, y), (xt8.astype(np.float32) / 255.0, yt))
  (x, y), (xt, yt) = data
  print(f"data: {len(x)} train / {len(xt)} test images at {x.shape[1:]} "
        f"({time.time() - start:.0f} s)", flush=True)
  command = "python bench/admm_ratio_bench.py " + " ".join(sys.argv[1:])
  seeds = [int(v) for v in FLAGS.seeds] if FLAGS.seeds else [FLAGS.seed]
  rows, dense_accs = [], []
  for seed in seeds:
    FLAGS.seed = seed
    keras.utils.set_random_seed(FLAGS.seed)
    dense = zoo.get(MODEL, input_shape=x.shape[1:], num_classes=10)
    dense.compile(optimizer=keras.optimizers.Adam(FLAGS.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    dense_path = _dense_path(workdir)
    if FLAGS.reuse_dense and os.path.exists(dense_path):
      saved = np.load(dense_path)
      for l in dense.layers:
        if l.get_weights():
          l.set_weights([saved[f"{l.name}::{i}"] for i in range(len(l.get_weights()))])
      print(f"dense weights reused from {dense_path}", flush=True)
    else:
      dense.fit(x, y, epochs=FLAGS.dense_epochs, batch_size=FLAGS.batch_size, verbose=2)
      np.savez(dense_path, **{f"{l.name}::{i}": w for l in dense.layers
                              for i, w in enumerate(l.get_weights())})
    dense_raw = accuracy(dense, xt, yt)
    dense_weights = dense.get_weights()
    recalibrate_bn(dense, x[:FLAGS.bn_samples])
    dense_accs.append(accuracy(dense, xt, yt))
    dense_acc = float(np.mean(dense_accs))
    print(f"seed {seed}: dense accuracy {dense_accs[-1]:.4f} (before BN re-estimation "
          f"{dense_raw:.4f}; {time.time() - start:.0f} s)", flush=True)
    protocol = (f"ResNet-8 (tfprune.zoo.resnet8, L2 1e-4) on Fashion-MNIST resized to "
                f"32x32x1 (bilinear, uint8-rounded), first {len(x)} training / first "
                f"{len(xt)} test images; dense {FLAGS.dense_epochs} epochs, then per "
                f"ratio {FLAGS.prune_epochs} pruning epochs from the same dense weights, "
                f"Adam {FLAGS.learning_rate}, batch {FLAGS.batch_size}, seeds "
                f"{','.join(map(str, seeds))} (one dense model per seed); "
                f"gradual schedules reach r after {FLAGS.schedule_fraction:.0%} of the "
                f"steps (~{FLAGS.mask_updates} mask updates); ADMM phase "
                f"{FLAGS.schedule_fraction:.0%} of the epochs, ~{FLAGS.z_steps} Z-steps, "
                f"kwargs {FLAGS.admm_kwargs}; {FLAGS.threads} TF thread(s). Sparsity is "
                f"over conv + dense kernels (biases and BN dense). Before every "
                f"evaluation the BatchNormalization statistics are re-estimated on "
                f"{FLAGS.bn_samples} training images (one training-mode pass, momentum "
                f"0), for every method and the dense model. Dense accuracy per seed "
                f"{', '.join(f'{100 * v:.2f}' for v in dense_accs)}% (seed {seed}: "
                f"{100 * dense_raw:.2f}% before re-estimation).")
    checked = False
    for ratio in order:
      for m in FLAGS.methods:
        t0 = time.time()
        if m == "tfmot":
          row, tfmot_dense = run_tfmot(workdir, ratio, len(x), not checked)
          if not checked:
            checked = True
            if abs(tfmot_dense - dense_raw) > 0.002:
              raise RuntimeError(f"TFMOT's copy of the dense ResNet-8 scores "
                                 f"{tfmot_dense:.4f}, ours {dense_raw:.4f}: the weights "
                                 f"did not transfer.")
        else:
          row = run_tfprune(m, dense_weights, ratio, data)
        rows.append(row)
        print(f"seed {seed} {m} @ {ratio}: acc {row['accuracy']:.4f} sparsity "
              f"{row['achieved_sparsity']:.4f} {row.get('admm', '')} "
              f"({time.time() - t0:.0f} s; total {time.time() - start:.0f} s)",
              flush=True)
        write(rows, ratios, dense_acc, out, protocol, command, start)
  print(open(os.path.join(out, "admm_ratio.md")).read())


if __name__ == "__main__":
  app.run(main)
