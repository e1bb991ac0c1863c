"""LiteRT latency of dense vs structurally shrunk models (issue 15's latency table).

Protocol, per model: build it (seed 0, untrained weights: latency does not depend on
the values), prune with `scope="structured"` magnitude (group L2, global allocation)
to `--target_macs` of the MACs, one mask update, `tfprune.strip(shrink=True)`, check the
shrunk model equals the masked one (max relative error), export both float and int8
(`tfprune.export.convert`, verified), and time single-sample invokes with 1 thread,
XNNPACK on and off (`bench/litert_timing.py`). Dense and shrunk files are timed
alternately `--repeats` times and the fastest median is kept, which removes most of the
noise of a shared machine. Goal (issue 15): float speed-up >= 0.7 x the MAC ratio.

`--budget=latency`: per model, the same prune twice in one process, once to
`--target_macs` of the MACs and once to `--target_latency` of the latency estimated by
`tfprune.structured.latency.LatencyModel` (a per-layer table measured on this machine's
LiteRT, float, XNNPACK on, before pruning); dense, macs-budget and latency-budget files
are timed alternately. The latency variant's goal: a measured float XNNPACK speed-up of
at least 1 / target_latency.

Usage (repo root):
  TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python bench/structured_latency.py
  TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python bench/structured_latency.py --budget=latency \
      --models=resnet8,mobilenet_v2_035
"""
import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # pylint: disable=g-import-not-at-top
import numpy as np

import litert_timing  # bench/litert_timing.py

MODELS = ("resnet8", "mobilenet_v2_035", "ds_cnn", "transformer")


def build(name):
  """(model, random calibration inputs) for `name`."""
  from tfprune import zoo  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(0)
  rng = np.random.default_rng(0)
  if name == "resnet8":
    model = zoo.get("resnet8", input_shape=(32, 32, 1), num_classes=10)
  elif name == "mobilenet_v2_035":
    model = keras.applications.MobileNetV2(input_shape=(64, 64, 3), alpha=0.35,
                                           weights=None, classes=10)
  elif name == "ds_cnn":
    model = zoo.get("ds_cnn")
  else:
    model = zoo.get("transformer", num_classes=4, vocab_size=64, seq_len=16)
    return model, rng.integers(1, 64, (64, 16)).astype(np.int32)
  return model, rng.standard_normal((64,) + model.input_shape[1:]).astype(np.float32)


def shrink(model, x, target_macs=None, table=None, estimate=None, **budget):
  """(shrunk model, MAC fraction, max relative error vs the masked model).

  `budget`: `target_latency=` (+ `latency_table=`) instead of `target_macs`; with a
  latency `table`, the latency fraction it estimates is appended to `estimate`.
  """
  import tfprune  # pylint: disable=g-import-not-at-top
  if target_macs is not None:
    budget["target_macs"] = target_macs
  pruned = tfprune.prune(model, "magnitude", scope="structured",
                         schedule=tfprune.ConstantSparsity(0.5, 0, frequency=1), **budget)
  method = tfprune.get_method(pruned)
  method.update(0)
  if table is not None:  # the allocation's estimate: latency kept, by the table
    from tfprune.structured import latency  # pylint: disable=g-import-not-at-top
    graph = method.channels.graph
    costs = latency.LatencyModel(graph.model, graph, table=table)
    dense = costs.total()
    for g, u in method.channels.units:
      costs.apply(graph.groups[g].units[u])
    estimate.append(costs.total() / dense)
  return shrunk_and_checked(pruned, model, x)


def shrunk_and_checked(pruned, model, x):
  """`strip(shrink=True)` of `pruned` (made from `model`): (shrunk model, fraction of
  the MACs kept, max relative difference shrunk vs masked on `x`)."""
  import tfprune  # pylint: disable=g-import-not-at-top
  from tfprune import structured  # pylint: disable=g-import-not-at-top
  masked = tfprune.strip(pruned)
  small = tfprune.strip(pruned, shrink=True)
  a = np.asarray(small.predict(x, verbose=0), np.float64)
  b = np.asarray(masked.predict(x, verbose=0), np.float64)
  err = float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))
  total = structured.shrink_report(model, small)[-1]  # the TOTAL row
  return small, total["macs_after"] / total["macs_before"], err


def timings(files, iters, repeats):
  """{(name, precision, xnnpack): fastest median us} over alternating repeats."""
  best = {}
  for _ in range(repeats):
    for key, data in files.items():
      for xnn in (True, False):
        us = litert_timing.latency_us(data, xnn, iters, vocab=64)
        k = key + (xnn,)
        best[k] = min(best.get(k, float("inf")), us)
  return best


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", default=",".join(MODELS))
  p.add_argument("--target_macs", type=float, default=0.5)
  p.add_argument("--iters", type=int, default=200)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--budget", choices=("macs", "latency"), default="macs",
                 help="latency: compare a target_latency prune with the target_macs one")
  p.add_argument("--target_latency", type=float, default=0.5)
  p.add_argument("--round_to", default="1,8",
                 help="--budget=latency: comma-separated round_to values, each run with "
                      "both budgets")
  args = p.parse_args(argv)
  if args.budget == "latency":
    return latency_budget(args)
  from tfprune import export  # pylint: disable=g-import-not-at-top
  lines = ["| model | MACs kept | rel err | precision | XNNPACK dense / shrunk us "
           "(speed-up) | reference kernels dense / shrunk us (speed-up) | goal 0.7 x MAC "
           "ratio (float XNNPACK) |", "|---|---|---|---|---|---|---|"]
  for name in args.models.split(","):
    model, x = build(name)
    small, fraction, err = shrink(model, x, args.target_macs)
    files = {}
    for label, m in (("dense", model), ("shrunk", small)):
      for q in (None, "int8"):
        files[(label, q or "float")] = export.convert(
            m, quantize=q, representative_data=x).model_bytes
    t = timings(files, args.iters, args.repeats)
    for q in ("float", "int8"):
      cells = []
      for xnn in (True, False):
        d, s = t[("dense", q, xnn)], t[("shrunk", q, xnn)]
        cells.append(f"{d:.0f} / {s:.0f} ({d / s:.2f}x)")
      goal = ""
      if q == "float":
        speed = t[("dense", q, True)] / t[("shrunk", q, True)]
        goal = (f"{speed:.2f}x vs {0.7 / fraction:.2f}x: "
                f"{'met' if speed >= 0.7 / fraction else 'MISSED'}")
      lines.append(f"| {name} | {fraction:.1%} | {err:.1e} | {q} | {cells[0]} | "
                   f"{cells[1]} | {goal} |")
    print(lines[-2] + "\n" + lines[-1], flush=True)
  print("\n".join(lines))


def latency_budget(args):
  """Dense vs the target_macs and the target_latency prunes of each model."""
  from tfprune import export  # pylint: disable=g-import-not-at-top
  from tfprune.structured import latency  # pylint: disable=g-import-not-at-top
  lines = ["| model | budget | MACs kept | est. latency kept | rel err | precision | "
           "XNNPACK dense / shrunk us (speed-up) | reference kernels dense / shrunk us "
           "(speed-up) | goal (float XNNPACK) |", "|---|---|---|---|---|---|---|---|---|"]
  for name in args.models.split(","):
    model, x = build(name)
    start = time.time()
    table = latency.measure_table(model, precision="float", verbose=True)
    print(f"{name}: float XNNPACK latency table, {len(table['layers'])} signatures in "
          f"{time.time() - start:.1f} s", flush=True)
    kept, variants = {}, {}
    for r in (int(v) for v in args.round_to.split(",")):
      kept[("macs", r)], kept[("latency", r)] = [], []
      variants[("macs", r)] = shrink(model, x, target_macs=args.target_macs, table=table,
                                     estimate=kept[("macs", r)], round_to=r)
      variants[("latency", r)] = shrink(model, x, target_latency=args.target_latency,
                                        latency_table=table, table=table,
                                        estimate=kept[("latency", r)], round_to=r)
    estimates = {k: v[0] for k, v in kept.items()}
    for label, (small, _, _) in variants.items():
      widths = [int(getattr(l, "filters", None) or getattr(l, "units", None) or 0)
                for l in small.layers if hasattr(l, "kernel") and
                not type(l).__name__.startswith("Depthwise")]
      print(f"{name} {label[0]} round_to={label[1]}: output widths {widths}", flush=True)
    files = {}
    for label, m in [("dense", model)] + [(k, v[0]) for k, v in variants.items()]:
      for q in (None, "int8"):
        files[(label, q or "float")] = export.convert(
            m, quantize=q, representative_data=x).model_bytes
    t = timings(files, args.iters, args.repeats)
    for label, (small, fraction, err) in variants.items():
      for q in ("float", "int8"):
        cells = []
        for xnn in (True, False):
          d, s = t[("dense", q, xnn)], t[(label, q, xnn)]
          cells.append(f"{d:.0f} / {s:.0f} ({d / s:.2f}x)")
        goal = ""
        if q == "float":
          speed = t[("dense", q, True)] / t[(label, q, True)]
          latency_budget = label[0] == "latency"
          want = 1 / args.target_latency if latency_budget else 0.7 / fraction
          what = "1 / target_latency" if latency_budget else "0.7 x MAC ratio"
          goal = (f"{speed:.2f}x vs {want:.2f}x ({what}): "
                  f"{'met' if speed >= want else 'MISSED'}")
        budget = (f"target_latency={args.target_latency}" if label[0] == "latency" else
                  f"target_macs={args.target_macs}") + f", round_to={label[1]}"
        lines.append(f"| {name} | {budget} | {fraction:.1%} | {estimates[label]:.1%} | "
                     f"{err:.1e} | {q} | {cells[0]} | {cells[1]} | {goal} |")
      print("\n".join(lines[-2:]), flush=True)
  print("\n".join(lines))


if __name__ == "__main__":
  sys.exit(main())
