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
