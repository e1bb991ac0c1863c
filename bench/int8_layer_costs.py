"""Per-layer float vs int8 LiteRT cost of our exports: where the int8 XNNPACK floor is.

Run (from the repo root):
  TF_CPP_MIN_LOG_LEVEL=3 PYTHONPATH=$PWD .venv/bin/python bench/int8_layer_costs.py \
      [--models=resnet8,ds_cnn] [--output=bench/results/int8_layer_costs.md]

Protocol: for each model (untrained, seed 0; ResNet-8 at 32x32x1, DS-CNN at 49x10x1),
`tfprune.structured.latency.LatencyModel` times every costed layer alone, at its full
widths, as a one-layer float model and as a one-layer full-int8 model (int8 inputs and
outputs, LiteRT 1 thread, XNNPACK on; median of single-sample invokes, fastest of 5
alternating rounds, the invoke overhead of an empty model removed), the same measurement
`target_latency` allocates with. Next to each layer: its MACs and its output activation
elements, and the whole-model latency of the float and int8 exports
(`tfprune.export.convert`, bench/litert_timing.py) to compare with the sum of the layers.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/litert_timing.py

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _row_data(model):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tfprune import _layers  # pylint: disable=g-import-not-at-top
  from tfprune.structured import costs as costs_lib  # pylint: disable=g-import-not-at-top
  from tfprune.structured import depgraph  # pylint: disable=g-import-not-at-top
  from tfprune.structured import latency  # pylint: disable=g-import-not-at-top
  graph = depgraph.ChannelGraph(model)
  macs = costs_lib.MacModel(graph.model, graph)
  costs = {p: latency.LatencyModel(graph.model, graph, precision=p, widths=(1.0,))
           for p in ("float", "int8")}
  ops = {op.name: op for op in graph.model.operations}
  rows = []
  for name in costs["float"].layers:
    if name not in costs["int8"].layers:
      continue
    out = ops[name].output.shape
    elements = int(np.prod([d for d in out[1:]]))
    rows.append(dict(layer=name, cls=type(_layers.inner_layer(ops[name])).__name__,
                     channels=int(out[-1]), macs=macs.layer_macs(name)
                     if name in macs.layers else 0, elements=elements,
                     float_us=costs["float"].layer_macs(name),
                     int8_us=costs["int8"].layer_macs(name)))
  import litert_timing  # pylint: disable=g-import-not-at-top  (bench/litert_timing.py)
  from tfprune import export  # pylint: disable=g-import-not-at-top
  calib = np.random.default_rng(0).standard_normal(
      (64,) + tuple(model.input_shape[1:])).astype("float32")
  whole = {p: litert_timing.latency_us(export.convert(
      model, quantize=None if p == "float" else "int8",
      representative_data=calib).model_bytes, True, 200) for p in costs}
  return rows, whole, {p: c.total() for p, c in costs.items()}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", default="resnet8,ds_cnn")
  p.add_argument("--output", default="bench/results/int8_layer_costs.md")
  args = p.parse_args(argv)
  import keras  # pylint: disable=g-import-not-at-top
  from tfprune import _io  # pylint: disable=g-import-not-at-top
  from tfprune import zoo  # pylint: disable=g-import-not-at-top
  shapes = {"resnet8": (32, 32, 1), "ds_cnn": (49, 10, 1)}
  lines = ["# Per-layer float vs int8 LiteRT cost (XNNPACK, 1 thread)", "",
           "Command: `TF_CPP_MIN_LOG_LEVEL=3 PYTHONPATH=$PWD .venv/bin/python "
           "bench/int8_layer_costs.py " + " ".join(sys.argv[1:] if argv is None else argv)
           + "`", "", *[l for l in __doc__.split("Protocol: ")[1].splitlines()], ""]
  for name in args.models.split(","):
    if name not in shapes:
      p.error(f"--models: unknown model {name!r}; valid: {', '.join(shapes)}")
    keras.utils.set_random_seed(0)
    model = zoo.get(name, input_shape=shapes[name], num_classes=10)
    rows, whole, summed = _row_data(model)
    lines += [f"## {name} {shapes[name]}", "",
              f"Whole model: float {whole['float']:.0f} us, int8 {whole['int8']:.0f} us "
              f"(sum of the layers + overhead: float {summed['float']:.0f}, int8 "
              f"{summed['int8']:.0f}).", "",
              "| layer | type | out channels | MACs | out elements | float us | int8 us | "
              "int8 / float | int8 ns per out element | float ns per kMAC |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
      ratio = r["int8_us"] / r["float_us"] if r["float_us"] > 0 else float("nan")
      per_el = 1e3 * r["int8_us"] / r["elements"] if r["elements"] else float("nan")
      per_mac = 1e6 * r["float_us"] / r["macs"] if r["macs"] else float("nan")
      lines.append(f"| {r['layer']} | {r['cls']} | {r['channels']} | {r['macs']:,} | "
                   f"{r['elements']:,} | {r['float_us']:.1f} | {r['int8_us']:.1f} | "
                   f"{ratio:.2f} | {per_el:.2f} | {per_mac:.2f} |")
    lines.append("")
    print("\n".join(lines[-len(rows) - 6:]), flush=True)
  _io.atomic_write(args.output, "\n".join(lines) + "\n")


if __name__ == "__main__":
  main()
