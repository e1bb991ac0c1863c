"""Layer-wise l0-constrained pruning by iterative hard thresholding (post-training).

Phan, Nguyen, Nguyen, Kalagnanam, "Pruning Deep Neural Networks with l0-constrained
Optimization", ICDM 2020, doi 10.1109/ICDM50108.2020.00152.

Each layer solves `min_W ||X W + b - Y||^2  s.t.  ||W||_0 <= k` on the statistics of
`tfprune.layerwise`: `W <- H_k(W - (G W - C) / L)` (`H_k` keeps exactly the k largest
magnitudes, ties to the lower flat index), started from `H_k(W0)`, stopped by the same
`eta` rule as log-sum, then a least-squares refit on the support.

ReLU model (`relu_model=True` or `"auto"`): fit only the entries where the original
pre-activation is positive and penalise positive pruned pre-activations elsewhere. What
is implemented is the EXACT piecewise objective minimised by majorise-minimise
(`tfprune.layerwise.relu`): each pass streams the data once to build the target
`T = where(y > 0, y, min(z_k, 0))`, re-runs IHT warm-started at the current solution and
refits; the objective never increases. G stays the full `X^T X / n` (no per-column G).

Where this fills gaps in the paper: IHT uses FISTA-style extrapolation with a
monotone restart (a plain IHT step is taken whenever the extrapolated one increases the
objective); the global allocation ranks `w^2 diag(G)` (relative output error of
deleting one weight) across layers; the ReLU model uses the MM scheme above.
"""
import tensorflow as tf

from tfprune import layerwise
from tfprune import topk
from tfprune.methods.base import register_method
from tfprune.methods.layerwise_method import CALIBRATION_SAMPLES
from tfprune.methods.layerwise_method import LayerwiseMethod
from tfprune.methods.logsum import check_range


def hard_threshold(w, k):
  """`H_k`: keeps exactly the `k` largest `|w|` over the whole tensor, zeroes the rest."""
  return w * tf.cast(topk.topk_mask(tf.abs(w), k), w.dtype)


@tf.function(reduce_retracing=True)
def iht_solve(gram, cross, w_init, lipschitz, k, eta, max_iter, accelerate=True,
              factor=None, factor_ridge=0.0):
  """Iterative hard thresholding on `[B, d, m]` problems (`k` counts over all of them).

  Args:
    gram, cross, w_init, lipschitz: as in `tfprune.methods.logsum.logsum_solve`.
    k: number of weights kept (int scalar).
    eta: early termination, `||W_{k+1} - W_k|| <= eta * max(1, ||W_k||)`.
    max_iter: iteration cap.
    accelerate: extrapolate, falling back to the plain step when it does not descend.
    factor, factor_ridge: optional low-rank form of `gram`, as in `logsum_solve`.

  Returns:
    `(w, iterations)`, `w` with exactly `min(k, size)` entries kept (some may be 0).
  """
  return layerwise.accelerated_prox_solve(
      gram, cross, hard_threshold(w_init, k), lipschitz,
      prox=lambda z, w: hard_threshold(z, k), penalty=lambda w: 0.0, eta=eta,
      max_iter=max_iter, accelerate=accelerate, monotone=True, factor=factor,
      factor_ridge=factor_ridge)


class IHTSolver(layerwise.LayerSolver):
  """IHT for a keep count `k` (layer-wise l0).

  Args:
    eta: early-termination tolerance in (0, 1).
    max_iter: iteration cap.
    accelerate: extrapolation with monotone restart.
  """

  def __init__(self, eta=1e-3, max_iter=1000, accelerate=True):
    self.eta = check_range("eta", eta, 0.0, 1.0)
    if int(max_iter) < 1:
      raise ValueError(f"max_iter must be >= 1, got {max_iter!r}.")
    self.max_iter = int(max_iter)
    self.accelerate = bool(accelerate)

  def resolve(self, problem, k, w_init):
    w, _ = iht_solve(problem.gram, problem.cross, w_init, problem.lipschitz,
                     tf.constant(int(k)), tf.constant(self.eta, tf.float32),
                     tf.constant(self.max_iter), self.accelerate, **problem.gram_args())
    return w

  def solve(self, problem, k, w_init=None):
    w_init = problem.w0 if w_init is None else w_init
    w, it = iht_solve(problem.gram, problem.cross, w_init, problem.lipschitz,
                      tf.constant(int(k)), tf.constant(self.eta, tf.float32),
                      tf.constant(self.max_iter), self.accelerate, **problem.gram_args())
    return w, {"iterations": int(it), "solves": 1}


@register_method("l0")
class L0(LayerwiseMethod):
  """Layer-wise l0-constrained pruning (IHT + refit) of a trained model.

  Args:
    target_sparsity, scope, mode, calibration_samples, batch_size, relu_passes,
      stats_dtype: see `LayerwiseMethod`.
    eta, max_iter: see `IHTSolver`.
    relu_model: `"auto"` (default: layers with a ReLU activation), True or False.
    **kwargs: `MethodCore` arguments, unused by this method.
  """

  def __init__(self, target_sparsity=0.9, scope="layer", eta=1e-3, max_iter=1000,
               mode="cascade", calibration_samples=CALIBRATION_SAMPLES, batch_size=256,
               relu_model="auto", relu_passes=2, stats_dtype="float32", **kwargs):
    super().__init__(IHTSolver(eta=eta, max_iter=max_iter),
                     target_sparsity=target_sparsity, scope=scope, mode=mode,
                     calibration_samples=calibration_samples, batch_size=batch_size,
                     relu_model=relu_model, relu_passes=relu_passes,
                     stats_dtype=stats_dtype, **kwargs)

  def get_config(self):
    config = super().get_config()
    config.update({"eta": self.solver.eta, "max_iter": self.solver.max_iter})
    return config
