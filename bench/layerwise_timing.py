"""Seconds of the layer-wise methods on the conformance matrix's nets (issue 29 item 3).

The conformance matrix (bench/conformance.py) times a (model, method) pair together with
its exports; this bench times only what the issue's target names: `tfprune.prune` +
`method.apply` of the layer-wise methods, on the same builds and the same inputs as the
matrix (keras.applications with weights=None at 32x32x3 or the zoo models, 50% per
layer, 16 random standard-normal calibration inputs, `calibration_samples=16,
batch_size=16`, cascade). It also checks that the pruned model still depends on its
input (output std over 16 other random inputs, beside the dense model's) and reports the
layer table's statistics and solve seconds.

Run (repo root; one process, nothing else on the machine for the times to count):
  .venv/bin/python bench/layerwise_timing.py --methods=logsum,l0 \
      [--models=resnet50,vgg16,...] [--output=bench/results/layerwise_timing.json]
`--methods` takes logsum, logsum_fast (`fast_search=True`) and l0.
Rows are rewritten after every (model, method) pair, so a run cut off keeps its rows;
`--resume` skips the pairs already in --output.
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

import numpy as np  # pylint: disable=g-import-not-at-top

import conformance  # pylint: disable=g-import-not-at-top  (bench/conformance.py)

TARGET_S = 600.0  # issue 29: logsum and l0 each <= 10 minutes per net


# bench name -> (tfprune method, extra arguments)
METHODS = {"logsum": ("logsum", {}), "logsum_fast": ("logsum", {"fast_search": True}),
           "l0": ("l0", {})}


def time_one(name, bench_method):
  """prune + apply of `bench_method` on conformance net `name`; returns a row."""
  import keras  # pylint: disable=g-import-not-at-top
  import tfprune  # pylint: disable=g-import-not-at-top
  method, extra = METHODS[bench_method]
  keras.utils.set_random_seed(0)
  model = conformance.build(name)
  calib = conformance.data(model, 16, seed=1)[0]
  probe = conformance.data(model, 16, seed=2)[0]
  dense_std = float(np.asarray(model(probe, training=False)).std(axis=0).mean())
  t0 = time.perf_counter()
  pruned = tfprune.prune(model, method, target_sparsity=conformance.SPARSITY,
                         calibration_samples=16, batch_size=16, **extra)
  m = tfprune.get_method(pruned)
  m.apply(pruned, calib, verbose=False)
  seconds = time.perf_counter() - t0
  layers = m.report()["layers"]
  out = np.asarray(pruned(probe, training=False))
  rows = tfprune.sparsity_report(tfprune.strip(pruned), print_table=False)
  return {"model": name, "method": bench_method, "seconds": seconds,
          "stats_seconds": float(sum(r["stats_seconds"] for r in layers)),
          "solve_seconds": float(sum(r["seconds"] for r in layers)),
          "layers": len(layers), "max_solves": max((r.get("solves", 1) for r in layers),
                                                   default=0),
          "sparsity": tfprune.model.total_sparsity(rows),
          "output_std": float(out.std(axis=0).mean()), "dense_output_std": dense_std,
          "met": seconds <= TARGET_S}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--methods", default="logsum,l0")
  p.add_argument("--models", default=",".join(conformance.APP_MODELS))
  p.add_argument("--output", default=os.path.join(HERE, "results", "layerwise_timing.json"))
  p.add_argument("--resume", action="store_true")
  args = p.parse_args(argv)
  all_models = conformance.ZOO_MODELS + conformance.APP_MODELS
  models = [m for m in args.models.split(",") if m]
  for m in models:
    if m not in all_models:
      p.error(f"--models: unknown model {m!r}; valid: {', '.join(all_models)}")
  methods = [m for m in args.methods.split(",") if m]
  for m in methods:
    if m not in METHODS:
      p.error(f"--methods: {m!r} is not one of {', '.join(METHODS)}")
  from tfprune import _io  # pylint: disable=g-import-not-at-top
  rows = []
  if args.resume and os.path.exists(args.output):
    with open(args.output) as f:
      rows = json.load(f)["rows"]
  done = {(r["model"], r["method"]) for r in rows}
  command = "python bench/layerwise_timing.py " + " ".join(sys.argv[1:])
  for name in models:
    for method in methods:
      if (name, method) in done:
        continue
      print(f"== {name} {method}", flush=True)
      row = time_one(name, method)
      row["load_average"] = os.getloadavg()[0]
      rows.append(row)
      print(f"{name} {method}: {row['seconds']:.1f} s (stats {row['stats_seconds']:.1f}, "
            f"solve {row['solve_seconds']:.1f}, max solves {row['max_solves']}), sparsity "
            f"{row['sparsity']:.3f}, output std {row['output_std']:.3g}, load "
            f"{row['load_average']:.1f}", flush=True)
      _io.atomic_write(args.output, json.dumps({"command": command, "rows": rows},
                                               indent=1) + "\n")


if __name__ == "__main__":
  main()
