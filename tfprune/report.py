"""Reporting: per-weight sparsity and PQ Index of pruned (wrapped) or stripped models.

`sparsity_report` / `format_report` / `total_sparsity` are the tables the training
binary prints; `format_rounds` is SAP's per-round Markdown table; `model_pq_index` / `pq_index_report` measure a model with the PQ Index
maths of `tfprune.pqi` (Diao et al., ICLR 2023; docs/algorithms.md section 5).
"""
from __future__ import annotations

import numpy as np

from tfprune import pqi
from tfprune import registry
from tfprune._layers import all_layers
from tfprune.wrapper import PruneWrapper


def _rows_for(layer):
  """(layer name, variable, effective value, mask) for each prunable weight of a layer."""
  if isinstance(layer, PruneWrapper):
    for w, m, value in zip(layer.prunable_weights, layer.masks, layer.masked_weights()):
      yield layer.layer.name, w, value.numpy(), m.numpy()
  elif registry.is_prunable(layer) and layer.built:
    for w in registry.get_prunable_weights(layer):
      value = w.numpy()
      yield layer.name, w, value, (value != 0).astype(value.dtype)


def effective_weights(model):
  """Yields (layer name, variable, effective value, 0/1 mask) per prunable weight.

  Wrapped layers give `weight * mask` and their mask; plain prunable layers (e.g. a
  stripped model) their values and the nonzero pattern.
  """
  for layer in all_layers(model):
    yield from _rows_for(layer)


def sparsity_report(model, print_table: bool = True, p: float = 0.5,
                    q: float = 1.0) -> list[dict]:
  """Per-weight sparsity of a pruned (wrapped) or stripped model.

  Args:
    model: any Keras model; wrapped layers report their masked weights, plain prunable
      layers their exact zeros.
    print_table: print a table (and a total line).
    p, q: PQ Index parameters (docs/algorithms.md section 5).

  Returns:
    A list of dicts with keys layer, weight, shape, size, nonzeros, sparsity, pq_index
    and dead (True when every entry is zero: the layer is cut off, marked `DEAD` in the
    table).
  """
  rows = []
  for name, w, value, mask in effective_weights(model):
    size = int(value.size)
    nonzeros = int(np.count_nonzero(value))
    rows.append({"layer": name, "weight": w.path.split("/")[-1],
                 "shape": list(value.shape), "size": size, "nonzeros": nonzeros,
                 "sparsity": 1.0 - nonzeros / max(size, 1),
                 "pq_index": float(pqi.pq_index(value, p, q, mask=mask))})
    rows[-1]["dead"] = _is_dead(rows[-1])
  if print_table:
    print(format_report(rows))
  return rows


def total_sparsity(rows):
  """Fraction of zeros over all the weights of `sparsity_report` rows."""
  size = sum(r["size"] for r in rows)
  return 1.0 - sum(r["nonzeros"] for r in rows) / max(size, 1)


def _is_dead(row):
  """A weight with entries, all of them zero: nothing flows through it."""
  return row["size"] > 0 and row["nonzeros"] == 0


def format_report(rows):
  """The text table `sparsity_report` prints."""
  header = f"{'layer':<28}{'weight':<18}{'shape':<20}{'nonzeros':>10}{'size':>10}" \
           f"{'sparsity':>10}{'PQI':>8}"
  lines = [header, "-" * len(header)]
  for r in rows:
    dead = _is_dead(r)
    lines.append(f"{r['layer'][:27]:<28}{r['weight'][:17]:<18}{str(r['shape'])[:19]:<20}"
                 f"{r['nonzeros']:>10}{r['size']:>10}{r['sparsity']:>10.4f}"
                 f"{r['pq_index']:>8.4f}" + ("  DEAD" if dead else ""))
  size = sum(r["size"] for r in rows)
  nonzeros = sum(r["nonzeros"] for r in rows)
  lines.append("-" * len(header))
  lines.append(f"{'total':<66}{nonzeros:>10}{size:>10}{total_sparsity(rows):>10.4f}")
  dead = [f"{r['layer']}/{r['weight']}" for r in rows
          if _is_dead(r)]
  if dead:
    lines.append(f"DEAD (100% sparse: nothing flows through these weights): "
                 f"{', '.join(dead)}")
  return "\n".join(lines)


def _model_rows(model):
  """(layer name, weight name, effective value, mask) for every prunable weight."""
  rows = [(name, w.path.split("/")[-1], value, mask)
          for name, w, value, mask in effective_weights(model)]
  if not rows:
    raise ValueError(f"Model {model.name!r} has no prunable weights to measure.")
  return rows


def model_pq_index(model, p=0.5, q=1.0):
  """Global PQ Index: all prunable weights of `model` (unpruned entries) as one vector.

  Args:
    model: a pruned (wrapped) or plain Keras model; wrapped layers count their mask-ones,
      plain layers their nonzeros.
    p, q: the norms, `0 < p < q`.

  Returns:
    A Python float.
  """
  rows = _model_rows(model)
  values = np.concatenate([r[2].reshape(-1) for r in rows])
  masks = np.concatenate([r[3].reshape(-1) for r in rows])
  return float(pqi.pq_index(values, p, q, mask=masks))


def pq_index_report(model, p=0.5, q=1.0, per_neuron=True):
  """PQ Index of a model at every scope: global, per layer, per neuron.

  Args:
    model: a pruned (wrapped) or plain Keras model.
    p, q: the norms, `0 < p < q`.
    per_neuron: include the per-unit values (NumPy arrays) for each weight.

  Returns:
    A dict: `p`, `q`, `global` (float), `layers`: a list of dicts with keys `layer`,
    `weight`, `size`, `remaining`, `pq_index` (and `neurons`: float32 array per output
    unit, `neuron_mean`, when `per_neuron`).
  """
  pqi.check_pq(p, q)
  rows = _model_rows(model)
  layers = []
  for name, weight, value, mask in rows:
    entry = {"layer": name, "weight": weight, "size": int(value.size),
             "remaining": int(np.count_nonzero(mask)),
             "pq_index": float(pqi.pq_index(value, p, q, mask=mask))}
    if per_neuron:
      neurons = pqi.pq_index_per_unit(value, p, q, mask=mask).numpy()
      entry["neurons"] = neurons
      entry["neuron_mean"] = float(np.mean(neurons)) if neurons.size else 0.0
    layers.append(entry)
  values = np.concatenate([r[2].reshape(-1) for r in rows])
  masks = np.concatenate([r[3].reshape(-1) for r in rows])
  return {"p": float(p), "q": float(q),
          "global": float(pqi.pq_index(values, p, q, mask=masks)), "layers": layers}


def format_rounds(round_log, baseline=None, baseline_name="IMP"):
  """A Markdown table of the per-round records (optionally beside a baseline's)."""
  header = "| round | sparsity | PQI (global) | PQI per layer | pruned next | acc % |"
  sep = "|---:|---:|---:|---|---:|---:|"
  if baseline is not None:
    header += f" {baseline_name} sparsity | {baseline_name} PQI | {baseline_name} acc % |"
    sep += "---:|---:|---:|"
  lines = [header, sep]
  for i, r in enumerate(round_log):
    layers = ", ".join(f"{v:.3f}" for v in r["pq_index_layers"].values())
    acc = "" if r["accuracy"] is None else f"{100 * r['accuracy']:.2f}"
    line = (f"| {r['round']} | {r['sparsity']:.4f} | {r['pq_index']:.4f} | {layers} | "
            f"{r['pruned']} | {acc} |")
    if baseline is not None:
      if i < len(baseline):
        b = baseline[i]
        b_acc = "" if b["accuracy"] is None else f"{100 * b['accuracy']:.2f}"
        line += f" {b['sparsity']:.4f} | {b['pq_index']:.4f} | {b_acc} |"
      else:
        line += " | | |"
    lines.append(line)
  return "\n".join(lines)
