"""Per-layer parameters and MACs of a model, before and after a structured shrink."""
from tfprune import _layers
from tfprune.structured import costs
from tfprune.structured import depgraph


def layer_costs(model):
  """{layer name: (parameters, MACs per sample)} for every layer with weights.

  MACs count Dense / Conv / Depthwise / Separable / EinsumDense / MultiHeadAttention
  layers (the `tfprune.structured.costs.MacModel` formulas); other layers count 0.
  """
  out = {}
  for op in depgraph.as_functional(model).operations:
    layer = _layers.inner_layer(op)
    if not getattr(layer, "weights", None):  # op nodes (`x[:, 0]`, `x + 1`) hold none
      continue
    params = sum(_size(w) for w in layer.weights)
    cost = costs.layer_cost(op, layer)
    out[getattr(layer, "name", op.name)] = (params, int(cost({})) if cost else 0)
  return out


def _size(variable):
  size = 1
  for d in variable.shape:
    size *= int(d)
  return size


def shrink_report(before, after):
  """Rows {layer, params_before, params_after, macs_before, macs_after} + a total row.

  Args:
    before: the model before the shrink (plain or pruned).
    after: the shrunk model.
  """
  a, b = layer_costs(before), layer_costs(after)
  rows = []
  for name, (p0, m0) in a.items():
    p1, m1 = b.get(name, (0, 0))
    rows.append({"layer": name, "params_before": p0, "params_after": p1,
                 "macs_before": m0, "macs_after": m1})
  rows.append({"layer": "TOTAL", "params_before": sum(r["params_before"] for r in rows),
               "params_after": sum(r["params_after"] for r in rows),
               "macs_before": sum(r["macs_before"] for r in rows),
               "macs_after": sum(r["macs_after"] for r in rows)})
  return rows


def format_shrink_report(rows):
  """The rows of `shrink_report` as a fixed-width text table."""
  width = max(12, max(len(r["layer"]) for r in rows) + 2)
  lines = [f"{'layer':<{width}}{'params':>12}{'->':>4}{'':>10}{'MACs':>14}{'->':>4}"
           f"{'':>12}{'MACs %':>8}"]
  for r in rows:
    pct = 100.0 * r["macs_after"] / r["macs_before"] if r["macs_before"] else 100.0
    lines.append(f"{r['layer']:<{width}}{r['params_before']:>12,}{'->':>4}"
                 f"{r['params_after']:>10,}{r['macs_before']:>14,}{'->':>4}"
                 f"{r['macs_after']:>12,}{pct:>7.1f}%")
  return "\n".join(lines)
