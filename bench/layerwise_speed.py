"""Layer-wise solver speed (issue 29 item 3): old vs new logsum / l0 solver, same process.

Captures each layer's statistics ONCE (parallel mode: inputs from the dense network) on
16 calibration samples and on a separate held-out batch of 16, then runs, back to back on
the same statistics, the solver of a pinned earlier commit (`LEGACY_COMMIT`, loaded from
git) and the current one: solve, top-k support, refit, mean correction (as in
`engine._solve_least_squares`, without the ReLU model). Reports per layer: seconds,
solves, iterations, kept count, relative error on the calibration rows and on the
held-out rows (each with the calibration's mean shift removed).

Usage (pinned to one core; compare only numbers from the same process):
  taskset -c 1 .venv/bin/python bench/layerwise_speed.py --model=resnet50 --top=10
  taskset -c 1 .venv/bin/python bench/layerwise_speed.py --model=resnet8 --method=l0
  taskset -c 1 .venv/bin/python bench/layerwise_speed.py --model=resnet50 \
      --cache=/tmp/r50.pkl --layers=conv5_block1_0_conv,conv4_block1_0_conv
  taskset -c 1 .venv/bin/python bench/layerwise_speed.py --model=resnet50 --full
`--cache` keeps the captured statistics in a pickle (reused when it exists); `--full`
times the whole current method on the model (no old run). Results:
bench/RESULTS_layerwise.md, "Solver speed (issue 29 item 3)".
Models: resnet50 (keras.applications, weights=None, 32x32x3, random normal inputs as in
bench/conformance.py), resnet8 / lenet5 from tfprune.zoo trained a few steps on random
labels ("trained-ish"). `--top=N` times only the N layers that are slowest with the
legacy solver (measured on a first legacy-only pass, or listed with --layers).
"""
import argparse
import os
import pickle
import subprocess
import sys
import time
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

import keras  # pylint: disable=g-import-not-at-top
import numpy as np
import tensorflow as tf

from tfprune import layerwise  # pylint: disable=g-import-not-at-top
from tfprune import topk
from tfprune import zoo
from tfprune.layerwise import engine
from tfprune.layerwise import solvers
from tfprune.methods import l0
from tfprune.methods import logsum

LEGACY_COMMIT = "264c70e255472d2d25af3a09874ed946bb6a42be"  # before issue 29 item 3


def _git_source(path):
  return subprocess.run(["git", "show", f"{LEGACY_COMMIT}:{path}"], cwd=ROOT, check=True,
                        capture_output=True, text=True).stdout


def legacy_modules():
  """The solvers, logsum and l0 modules of `LEGACY_COMMIT` (no method registration),
  written to a temporary folder (AutoGraph needs their source files)."""
  import importlib  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  folder = tempfile.mkdtemp(prefix="tfprune_legacy_")
  sources = {"legacy_solvers": _git_source("tfprune/layerwise/solvers.py")}
  for name in ("logsum", "l0"):
    src = _git_source(f"tfprune/methods/{name}.py")
    src = src.replace("from tfprune import layerwise\n", "import legacy_solvers as layerwise\n")
    src = src.replace(f'@register_method("{name}")\n', "")
    src = src.replace("from tfprune.methods.logsum import check_range",
                      "from legacy_logsum import check_range")
    sources[f"legacy_{name}"] = src
  for mod, src in sources.items():
    with open(os.path.join(folder, f"{mod}.py"), "w") as f:
      f.write(src)
  sys.path.insert(0, folder)
  return {"solvers": importlib.import_module("legacy_solvers"),
          "logsum": importlib.import_module("legacy_logsum"),
          "l0": importlib.import_module("legacy_l0")}


# ---------------------------------------------------------------------------- models
def build(name, seed=0):
  keras.utils.set_random_seed(seed)
  if name == "resnet50":
    model = keras.applications.ResNet50(input_shape=(32, 32, 3), weights=None, classes=10,
                                        classifier_activation=None)
    shape = (32, 32, 3)
  else:
    model = zoo.get(name)
    shape = tuple(model.input_shape[1:])
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((512,) + shape).astype(np.float32)
    y = rng.integers(0, model.output_shape[-1], 512)
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=64, epochs=2, verbose=0)  # a few steps: "trained-ish"
  rng = np.random.default_rng(100 + seed)
  cal = rng.standard_normal((16,) + shape).astype(np.float32)
  held = rng.standard_normal((16,) + shape).astype(np.float32)
  return model, cal, held


def capture(model, x):
  """`(units, stats)` of every prunable layer on inputs `x` (dense network's inputs)."""
  original = engine._clone(model)  # pylint: disable=protected-access
  units, _ = engine.find_units(model, original)
  engine.weight_outputs_by_batchnorm(units)
  batches = lambda: layerwise.calibration_batches(x, model, 16, None)
  inputs = engine._Inputs(model, original, units, batches)  # pylint: disable=protected-access
  st = engine._Stats(model, original, inputs, "float32", None, None)  # pylint: disable=protected-access
  return units, st.all(units)


# -------------------------------------------------------------------------- solving
def held_error(stats, w, bias, shift):
  """Relative error on `stats`' rows of `X W + b - shift` (shift: calibration's)."""
  w = np.asarray(w, np.float64)
  if stats.rows is not None:
    quad = float(np.sum(np.matmul(stats.rows, w) ** 2)) / stats.n
  else:
    quad = float(np.einsum("bdm,bdm->", w, np.matmul(stats.gram, w)))
  err2 = quad - 2.0 * float(np.einsum("bdm,bdm->", w, stats.cross)) + stats.y_sq
  if shift is not None:
    mean_r = np.einsum("bd,bdm->bm", stats.x_colsum, w) - stats.y_colsum
    err2 += -2.0 * float(np.sum(shift * mean_r)) + float(np.sum(shift ** 2))
  y2 = stats.y_sq + 2.0 * float(np.sum(bias * stats.y_colsum)) + float(np.sum(bias ** 2))
  return float(np.sqrt(max(err2, 0.0) / max(y2, 1e-300)))


def solve_layer(solv, solver, unit, stats, held, sparsity=0.5):
  """engine._solve_least_squares without the ReLU model, with a given solvers module."""
  import warnings  # pylint: disable=g-import-not-at-top
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    problem, ridge, _ = solv.make_problem(unit.name, stats, unit.w0)
    t_problem = time.perf_counter() - t0
    nb, _, m = unit.w0.shape
    k = min(int(round(unit.w0.size * (1 - sparsity))), int(problem.live.sum()) * nb * m)
    w, info = solver.solve(problem, k)
    t_solve = time.perf_counter() - t0 - t_problem
    keep = topk.topk_mask(solv.support_scores(problem, tf.convert_to_tensor(
        w, tf.float32)), k).numpy().astype(bool)
    support = np.zeros(unit.w0.shape, bool)
    support[:, problem.live] = keep
    gram = stats.gram + (ridge * np.eye(stats.gram.shape[1])[None] if ridge else 0.0)
    factor = solv.gram_factor(stats) if ridge else None
    cross = stats.cross + ridge * unit.w0 if ridge else stats.cross
    w_refit, _ = solv.refit(gram, cross, support, 1e-8, factor=factor, factor_ridge=ridge)
    seconds = time.perf_counter() - t0
  shift = np.einsum("bd,bdm->bm", stats.x_colsum, w_refit) - stats.y_colsum
  return {"seconds": seconds, "problem_s": t_problem, "solve_s": t_solve,
          "solves": int(info.get("solves", 1)), "iterations": int(info.get("iterations", 0)),
          "kept": int(support.sum()), "k": k,
          "nnz_solver": int(np.count_nonzero(np.asarray(w))),
          "err_cal": held_error(stats, w_refit, unit.bias, shift),
          "err_held": held_error(held, w_refit, unit.bias, shift)}


def make_solvers(method, legacy):
  if method == "logsum":
    return legacy["logsum"].LogSumSolver(), logsum.LogSumSolver(fast_search=True)
  return legacy["l0"].IHTSolver(), l0.IHTSolver()


def full(name, method):
  """Whole-network run of the current `method` (tfprune.prune + apply, cascade, 0.5 per
  layer, 16 calibration samples as bench/conformance.py), with its per-layer report."""
  import tfprune  # pylint: disable=g-import-not-at-top
  model, cal, held = build(name)
  extra = {"fast_search": True} if method == "logsum" else {}
  pruned = tfprune.prune(model, method, target_sparsity=0.5, calibration_samples=16,
                         batch_size=16, **extra)
  t0 = time.perf_counter()
  rows = tfprune.get_method(pruned).apply(pruned, cal, verbose=True)
  total = time.perf_counter() - t0
  solve = sum(r["seconds"] for r in rows) if rows else float("nan")
  stats = sum(r["stats_seconds"] for r in rows) if rows else float("nan")
  out = np.asarray(pruned(held, training=False))
  print(f"# {name} {method}: total {total:.1f}s (solve+refit {solve:.1f}s, statistics "
        f"{stats:.1f}s), output std on held-out {float(np.std(out)):.4g}")


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--model", default="resnet50")
  p.add_argument("--method", default="logsum", choices=["logsum", "l0"])
  p.add_argument("--top", type=int, default=0, help="only the N slowest legacy layers")
  p.add_argument("--layers", default="", help="comma-separated layer names")
  p.add_argument("--which", default="both", choices=["both", "old", "new"])
  p.add_argument("--cache", default="", help="pickle of the captured statistics")
  p.add_argument("--full", action="store_true",
                  help="time the whole method (current code) on --model, cascade mode")
  args = p.parse_args()
  if args.full:
    return full(args.model, args.method)
  legacy = legacy_modules()
  t0 = time.perf_counter()
  if args.cache and os.path.exists(args.cache):
    with open(args.cache, "rb") as f:
      units, stats, held_stats = pickle.load(f)
  else:
    model, cal, held = build(args.model)
    units, stats = capture(model, cal)
    _, held_stats = capture(model, held)
    units = [types.SimpleNamespace(name=u.name, w0=u.w0, bias=u.bias) for u in units]
    if args.cache:
      with open(args.cache, "wb") as f:
        pickle.dump((units, stats, held_stats), f)
  print(f"# statistics of {len(units)} layers x2 in {time.perf_counter() - t0:.1f}s",
        flush=True)
  idx = list(range(len(units)))
  if args.layers:
    names = args.layers.split(",")
    idx = [i for i in idx if units[i].name in names]
  old_solver, new_solver = make_solvers(args.method, legacy)
  if args.top:
    # Rank by the legacy solve time (first pass, legacy only), then re-time both.
    times = []
    for i in idx:
      r = solve_layer(legacy["solvers"], old_solver, units[i], stats[i], held_stats[i])
      times.append((r["seconds"], i))
      print(f"rank {units[i].name} {r['seconds']:.2f}s", flush=True)
    idx = sorted(i for _, i in sorted(times, reverse=True)[:args.top])
  rows, tot = [], {"old": 0.0, "new": 0.0}
  print("| layer | d x m (B) | n | k | old s | new s | speedup | old solves/it | new solves/it "
        "| old kept | new kept | old err cal | new err cal | old err held | new err held |")
  print("|" + "---|" * 15)
  for i in idx:
    u, s, h = units[i], stats[i], held_stats[i]
    res = {}
    for which, solv, solver in (("old", legacy["solvers"], old_solver),
                                ("new", solvers, new_solver)):
      if args.which in (which, "both"):
        res[which] = solve_layer(solv, solver, u, s, h)
        tot[which] += res[which]["seconds"]
    o, n = res.get("old"), res.get("new")
    if o is None or n is None:
      r = o or n
      print(f"| {u.name} | {r['seconds']:.2f}s | {r['solves']}/{r['iterations']} | "
            f"{r['kept']} | {r['err_cal']:.4f} | {r['err_held']:.4f} |", flush=True)
      continue
    rows.append((u.name, o, n))
    print(f"| {u.name} | {u.w0.shape[1]}x{u.w0.shape[2]} ({u.w0.shape[0]}) | {s.n} | "
          f"{o['k']} | {o['seconds']:.2f} | {n['seconds']:.2f} | "
          f"{o['seconds'] / max(n['seconds'], 1e-9):.1f}x | {o['solves']}/{o['iterations']} | "
          f"{n['solves']}/{n['iterations']} | {o['kept']} | {n['kept']} | "
          f"{o['err_cal']:.4f} | {n['err_cal']:.4f} | {o['err_held']:.4f} | "
          f"{n['err_held']:.4f} |", flush=True)
  print(f"# total solver seconds: old {tot['old']:.1f}, new {tot['new']:.1f}")
  if rows:
    worse = [(nm, o["err_held"], n["err_held"]) for nm, o, n in rows
             if n["err_held"] > o["err_held"] * 1.01 + 1e-12]
    print(f"# layers with held-out error worse than 1% relative: {len(worse)} {worse}")


if __name__ == "__main__":
  main()
