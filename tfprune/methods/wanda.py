"""Wanda: pruning by weights and activations, per output, without any weight update.

Sun, Liu, Bair, Kolter, "A Simple and Effective Pruning Approach for Large Language
Models", ICLR 2024, arXiv 2306.11695.

Each weight is scored `|W_ij| * ||X_j||_2` (input `j`, output `i`; `||X_j||^2 = n G_jj`
from the layer-wise engine's Gram statistics, `tfprune.layerwise`), and the scores are
compared PER OUTPUT: every output unit keeps the same number of its inputs, the
highest-scored ones. The kept weights are exactly the trained ones (the solver sets
`LayerSolver.refit = False`: no least-squares refit, no mean correction).

Where this fills gaps in the paper: a layer's keep count `k` (per layer, or from the
engine's global allocation) becomes `round(k / outputs)` per output, at least 1 while
`k > 0` (so no output is cut off); ties keep the lower input index; the per-output count
is over the inputs that are live on the calibration data (dead inputs score 0). The
maths is in docs/algorithms.md section 11.
"""
import numpy as np

from tfprune import layerwise
from tfprune.methods.base import register_method
from tfprune.methods.layerwise_method import CALIBRATION_SAMPLES
from tfprune.methods.layerwise_method import LayerwiseMethod


def wanda_scores(problem):
  """`|W0| * ||X_j||` of a `LayerProblem` (`[B, d_live, m]` float64, scaled units: the
  scale is the same for the whole layer, so the ranking is Wanda's)."""
  gram = np.asarray(problem.gram, np.float64)
  sq = np.diagonal(gram, axis1=1, axis2=2) - problem.ridge  # G~ holds G + rho I
  return np.abs(np.asarray(problem.w0, np.float64)) * np.sqrt(np.maximum(sq, 0.0))[..., None]


def per_output_mask(scores, keep):
  """Boolean mask keeping the `keep` highest `scores` of each output (axis 1 of
  `[B, d, m]`), ties to the lower index."""
  order = np.argsort(-scores, axis=1, kind="stable")[:, :keep]
  mask = np.zeros(scores.shape, bool)
  np.put_along_axis(mask, order, True, axis=1)
  return mask


class WandaSolver(layerwise.LayerSolver):
  """Wanda's per-output top-k of `|W| * ||X||`; the kept weights stay as trained."""

  refit = False

  def solve(self, problem, k, w_init=None):
    del w_init
    nb, d, m = problem.w0.shape
    keep = int(np.floor(k / (nb * m) + 0.5))
    keep = min(d, max(keep, 1 if k > 0 else 0))
    mask = per_output_mask(wanda_scores(problem), keep)
    w = np.asarray(problem.w0) * mask
    return w, {"iterations": 0, "solves": 1}


@register_method("wanda")
class Wanda(LayerwiseMethod):
  """Wanda pruning of a trained model (post-training, no labels, no weight update).

  Args:
    target_sparsity, scope, mode, calibration_samples, batch_size, stats_dtype: see
      `LayerwiseMethod` (`scope="global"`: the engine's allocation of `w^2 diag(G)`,
      then Wanda per output within each layer).
    **kwargs: the other `LayerwiseMethod` / `MethodCore` arguments
      (`relu_model` must stay False: nothing is refit).
  """

  def __init__(self, target_sparsity=0.9, scope="layer", mode="cascade",
               calibration_samples=CALIBRATION_SAMPLES, batch_size=256, stats_dtype="float32",
               **kwargs):
    super().__init__(WandaSolver(), target_sparsity=target_sparsity, scope=scope,
                     mode=mode, calibration_samples=calibration_samples,
                     batch_size=batch_size, stats_dtype=stats_dtype, **kwargs)
