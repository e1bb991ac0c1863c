"""Matplotlib figures people would rather look at than tables (PNG, headless)."""
import io

import matplotlib

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


def sparsity_per_layer(rows, path, title="Per-layer sparsity"):
  """Bar chart of the kept fraction per prunable weight (rows of `sparsity_report`)."""
  labels = [f"{r['layer']}/{r['weight']}" for r in rows]
  kept = [1.0 - r["sparsity"] for r in rows]
  fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(rows) + 2), 3.5))
  bars = ax.bar(range(len(rows)), kept, color="tab:blue")
  for bar, r in zip(bars, rows):
    ax.annotate(f"{r['nonzeros']}/{r['size']}", (bar.get_x() + bar.get_width() / 2,
                                                 bar.get_height()),
                ha="center", va="bottom", fontsize=7)
  ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right", fontsize=8)
  ax.set_ylabel("kept fraction (1 - sparsity)")
  ax.set_ylim(0, min(1.05, max(kept + [0.05]) * 1.25))
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
