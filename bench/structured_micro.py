"""TFLite Micro flash and arena of dense vs structurally shrunk models (issue 15).

Protocol, per model (zoo `ds_cnn` 49x10x1, 12 classes; zoo `resnet8` at MLPerf Tiny's
32x32x3, 10 classes): build it (seed 0), prune with `scope="structured"` magnitude
(group L2; `--allocations`: global across groups, the default, and per layer) to
`--target_macs` of the MACs, `--steps` training steps
on random inputs and labels (the masks are set at step 0 and kept: the weights are
effectively untrained, which does not change sizes), `tfprune.strip(shrink=True)`,
check the shrunk model equals the masked one (max relative error), then export dense
and shrunk with `tfprune.export.convert(target="micro", quantize="int8")` (verified
against Keras in LiteRT and TFLM) and, on `--samples` random inputs:

* run each file in the real TFLM interpreter (the `tflite-micro` Python package) and
  in LiteRT (builtin reference kernels, XNNPACK off) and report the max abs diff of
  the int8 outputs in quantization steps;
* flash = the .tflite size in bytes; arena = TFLM's "Arena allocation total" (the
  interpreter's `arena_used_bytes()`), `tfprune.export.verify.tflm_arena_bytes`.

The Python interpreter's recording allocator keeps its own bookkeeping in the arena: on
the demo's shrunk MLP / DS-CNN it reports 3,184 / 18,528 bytes where the C++ demo app
(stock `MicroAllocator`) prints 2,864 / 18,256, so the arena numbers here are upper
bounds by ~300 bytes.

Usage (repo root):
  TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python bench/structured_micro.py
"""
import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # pylint: disable=g-import-not-at-top
import numpy as np

import structured_latency  # bench/structured_latency.py

MODELS = ("ds_cnn", "resnet8")


def build(name):
  """(model, random float inputs [64, ...]) for `name` (seed 0)."""
  from tfprune import zoo  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(0)
  if name == "resnet8":
    model = zoo.get("resnet8", input_shape=(32, 32, 3), num_classes=10)
  elif name == "ds_cnn":
    model = zoo.get("ds_cnn")
  else:
    raise ValueError(f"--models: unknown model {name!r}; valid: {', '.join(MODELS)}.")
  rng = np.random.default_rng(0)
  return model, rng.standard_normal((64,) + model.input_shape[1:]).astype(np.float32)


def shrink(model, x, target_macs, steps, allocation="global"):
  """(shrunk model, MAC fraction, params before / after, max rel error vs masked)."""
  import tfprune  # pylint: disable=g-import-not-at-top
  pruned = tfprune.prune(model, "magnitude", scope="structured", target_macs=target_macs,
                         allocation=allocation,
                         schedule=tfprune.ConstantSparsity(0.5, 0, frequency=1))
  classes = int(model.output_shape[-1])
  y = np.random.default_rng(1).integers(0, classes, len(x))
  n = min(len(x), 16 * steps)
  tfprune.get_method(pruned).fit(pruned, x[:n], y[:n], batch_size=16, epochs=1, verbose=0)
  small, mac_fraction, err = structured_latency.shrunk_and_checked(pruned, model, x)
  return small, mac_fraction, model.count_params(), small.count_params(), err


def micro_numbers(model, x, samples):
  """Exports int8 micro; returns {flash, arena, steps (TFLM vs LiteRT), agree}."""
  from tfprune import export  # pylint: disable=g-import-not-at-top
  from tfprune.export import verify  # pylint: disable=g-import-not-at-top
  data = export.convert(model, target="micro", quantize="int8",
                        representative_data=x).model_bytes
  xs = x[:samples]
  _, tflm = verify.run_tflm(data, xs)
  _, litert, _ = verify.run_litert(data, xs, xnnpack=False)
  steps = int(np.abs(tflm.astype(np.int32) - litert.astype(np.int32)).max())
  agree = float(np.mean(tflm.argmax(-1) == litert.argmax(-1)))
  return {"flash": len(data), "arena": verify.tflm_arena_bytes(data), "steps": steps,
          "agree": agree}


def widths(model):
  """'conv1 64, dw1 64, ...': output channels of every conv / dense layer."""
  out = []
  for layer in model.layers:
    n = getattr(layer, "filters", None) or getattr(layer, "units", None)
    if n is None and type(layer).__name__ == "DepthwiseConv2D":
      n = int(layer.kernel.shape[2]) * layer.depth_multiplier
    if n:
      out.append(f"{layer.name} {n}")
  return ", ".join(out)


def row(lines, notes, name, model, x, d, allocation, args):
  """Appends one table row (and the shrunk widths note) for `allocation`."""
  small, fraction, p_dense, p_small, err = shrink(
      model, x, args.target_macs, args.steps, allocation)
  s = micro_numbers(small, x, args.samples)
  lines.append(
      f"| {name} {'x'.join(str(v) for v in model.input_shape[1:])} | {allocation} | "
      f"{fraction:.1%} | "
      f"{p_dense:,} / {p_small:,} | {err:.1e} | {d['flash']:,} / {s['flash']:,} "
      f"({s['flash'] / d['flash']:.2f}) | {d['arena']['total']:,} / {s['arena']['total']:,} "
      f"({s['arena']['total'] / d['arena']['total']:.2f}) | {d['arena']['head']:,} / "
      f"{s['arena']['head']:,} | {d['arena']['tail']:,} / {s['arena']['tail']:,} | "
      f"{d['steps']} / {s['steps']} | "
      f"{d['agree']:.2f} / {s['agree']:.2f} |")
  notes.append(f"* {name} ({allocation}) shrunk widths: {widths(small)}")


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", default=",".join(MODELS))
  p.add_argument("--target_macs", type=float, default=0.5)
  p.add_argument("--allocations", default="global,layer",
                 help="channel allocations to shrink with (one row each)")
  p.add_argument("--steps", type=int, default=2, help="training steps after pruning")
  p.add_argument("--samples", type=int, default=32, help="inputs run in TFLM and LiteRT")
  args = p.parse_args(argv)
  lines = ["| model | allocation | MACs kept | params dense / shrunk | "
           "rel err (shrunk vs masked) | flash dense / shrunk bytes (ratio) | "
           "TFLM arena dense / shrunk bytes (ratio) | "
           "arena head (activations) dense / shrunk | arena tail (persistent) dense / shrunk | "
           "TFLM vs LiteRT max abs diff, int8 steps (dense / shrunk) | argmax agreement "
           "(dense / shrunk) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
  notes = []
  for name in args.models.split(","):
    model, x = build(name)
    d = micro_numbers(model, x, args.samples)
    for allocation in args.allocations.split(","):
      row(lines, notes, name, model, x, d, allocation, args)
    print("\n".join(lines[-2:]), flush=True)
  print("\n".join(lines + [""] + notes))


if __name__ == "__main__":
  sys.exit(main())
