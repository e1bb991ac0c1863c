"""Matplotlib figures people would rather look at than tables (PNG, headless).

The figures of the methods live here, not in the algorithm files: `kept_fraction`
(ADMM's per-layer allocation), `sap_rounds` (SAP's PQ Index / accuracy per round).
"""
import io

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from tfprune import _io  # pylint: disable=g-import-not-at-top


def save_figure(fig, path):
  """Writes `fig` as a PNG to `path` atomically and closes it."""
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
  plt.close(fig)
  _io.atomic_write(path, buf.getvalue())
  return path


def sparsity_per_layer(rows, path, title="Per-layer sparsity", target=None):
  """Bar chart of the sparsity (fraction of zeros) per prunable weight.

  Args:
    rows: rows of `tfprune.sparsity_report` (layer, weight, size, nonzeros, sparsity).
    path: PNG path (written atomically).
    title: figure title.
    target: optional target sparsity, drawn as a dashed horizontal line.

  Returns:
    `path`.
  """
  labels = [f"{r['layer']}/{r['weight']}" for r in rows]
  sparsity = [r["sparsity"] for r in rows]
  fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(rows) + 2), 3.8))
  bars = ax.bar(range(len(rows)), sparsity, color="tab:blue", label="sparsity")
  for bar, r in zip(bars, rows):
    ax.annotate(f"{r['nonzeros']}/{r['size']} kept", (bar.get_x() + bar.get_width() / 2,
                                                      bar.get_height()),
                ha="center", va="bottom", fontsize=7)
  if target is not None:
    ax.axhline(float(target), color="tab:red", linestyle="--", linewidth=1,
               label=f"target {float(target):g}")
    ax.legend(fontsize=8, loc="lower right")
  ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right", fontsize=8)
  ax.set_xlabel("layer / weight")
  ax.set_ylabel("sparsity (fraction of zero weights)")
  ax.set_ylim(0, 1.1)
  ax.set_title(title)
  return save_figure(fig, path)


def lines(series, path, xlabel, ylabel, title, logy=False):
  """Line plot of `{label: (xs, ys)}` series."""
  fig, ax = plt.subplots(figsize=(6, 4))
  for label, (xs, ys) in series.items():
    ax.plot(xs, ys, marker="o", label=label)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if logy:
    ax.set_yscale("log")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return save_figure(fig, path)


def kept_fraction(source, path, title=None):
  """Writes a PNG bar chart of the fraction of weights kept per layer.

  Args:
    source: a method's `report()` dict with a `kept_fraction` entry (ADMM), or a dict
      {layer: kept fraction}.
    path: output PNG path.
    title: optional title.

  Returns:
    `path`.
  """
  kept = source.get("kept_fraction", source) if isinstance(source, dict) else None
  if not isinstance(kept, dict) or not kept:
    raise ValueError("kept_fraction needs a report() dict with 'kept_fraction' (e.g. "
                     "ADMM's) or a dict {layer: kept fraction}.")
  names, values = list(kept), [float(v) for v in kept.values()]
  fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(names)), 3.5))
  bars = ax.bar(range(len(names)), values, color="tab:blue")
  for bar, v in zip(bars, values):
    ax.text(bar.get_x() + bar.get_width() / 2, v, f"{100 * v:.1f}%", ha="center",
            va="bottom", fontsize=8)
  ax.set_xticks(range(len(names)))
  ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
  ax.set_ylabel("fraction of weights kept")
  ax.set_ylim(0, min(1.0, max(values) * 1.25 + 1e-3))
  ax.set_title(title or "Per-layer kept fraction chosen by the allocation")
  fig.tight_layout()
  save_figure(fig, path)
  return path


def sap_rounds(round_log, path, baselines=None, title=None, stop_round=None,
                drop_round=None, label="SAP"):
  """Writes the paper's central figure: PQI and accuracy vs round, as a PNG.

  Args:
    round_log: `SAP.round_log` (a list of per-round dicts).
    path: output PNG path.
    baselines: optional {name: round_log} drawn beside (e.g. magnitude pruning).
    title: figure title.
    stop_round: round where a stop rule fired (vertical line).
    drop_round: round where accuracy first dropped (vertical line).
    label: name of the main curve.

  Returns:
    `path`.
  """
  if not round_log:
    raise ValueError("plot_rounds needs at least one round record (run SAP.fit first).")
  fig, (ax_pqi, ax_acc) = plt.subplots(2, 1, figsize=(7.5, 6.5), sharex=True)
  rounds = [r["round"] for r in round_log]
  ax_pqi.plot(rounds, [r["pq_index"] for r in round_log], "o-", color="C0",
              label=f"{label} global PQI")
  for i, key in enumerate(round_log[0]["pq_index_layers"]):
    ax_pqi.plot(rounds, [r["pq_index_layers"].get(key, np.nan) for r in round_log], "--",
                color=f"C{i + 2}", alpha=0.7, lw=1, label=f"{label} {key.split('/')[0]}")
  accs = [np.nan if r["accuracy"] is None else 100 * r["accuracy"] for r in round_log]
  ax_acc.plot(rounds, accs, "o-", color="C0", label=label)
  for j, (name, log) in enumerate((baselines or {}).items()):
    b_rounds = [r["round"] for r in log]
    ax_pqi.plot(b_rounds, [r["pq_index"] for r in log], "s:", color=f"C{j + 6}",
                label=f"{name} global PQI")
    ax_acc.plot(b_rounds, [np.nan if r["accuracy"] is None else 100 * r["accuracy"]
                           for r in log], "s:", color=f"C{j + 6}", label=name)
  for ax in (ax_pqi, ax_acc):
    if stop_round is not None:
      ax.axvline(stop_round, color="red", ls="--", lw=1)
    if drop_round is not None:
      ax.axvline(drop_round, color="black", ls=":", lw=1)
    ax.grid(alpha=0.3)
  all_pqi = [r["pq_index"] for r in round_log if r["pq_index"] > 0]
  if all_pqi and max(all_pqi) > 5 * min(all_pqi):
    ax_pqi.set_yscale("log")  # the late rise is small next to the first rounds' fall
  ax_pqi.set_ylabel("PQ Index")
  ax_acc.set_ylabel("accuracy (%)")
  ax_acc.set_xlabel(f"round ({label} sparsity below)")
  ax_acc.set_xticks(rounds)
  ax_acc.set_xticklabels([f"{r['round']}\n{100 * r['sparsity']:.1f}%" for r in round_log],
                         fontsize=7)
  ax_pqi.legend(fontsize=7)
  ax_acc.legend(fontsize=7)
  notes = []
  if stop_round is not None:
    notes.append(f"red: PQI stop (round {stop_round})")
  if drop_round is not None:
    notes.append(f"black: accuracy drop >1pt (round {drop_round})")
  fig.suptitle((title or "SAP: PQ Index and accuracy per round") +
               (("\n" + "; ".join(notes)) if notes else ""), fontsize=10)
  fig.tight_layout()
  return save_figure(fig, path)
