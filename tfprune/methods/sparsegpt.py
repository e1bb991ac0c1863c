"""SparseGPT: one-shot OBS pruning with updates of the remaining weights, layer by layer.

Frantar & Alistarh, "SparseGPT: Massive Language Models Can Be Accurately Pruned in
One-Shot", ICML 2023, arXiv 2301.00774.

On the layer-wise engine's Gram statistics (`tfprune.layerwise`; a layer is `[B, d, m]`,
`d` inputs, `m` outputs: SparseGPT's "rows" are our outputs, its "columns" our inputs):
`H = G + damp I` with `damp = 0.01 * mean(diag G)`, `U` the upper Cholesky factor of
`H^-1`; the inputs are processed in blocks of `blocksize`. At the start of a block the
mask is chosen over the whole block (all outputs, all problems of the layer) as the
lowest `w^2 / U_jj^2`; then, column by column, the pruned weights are zeroed and the
error `(w - q) / U_jj` is spread over the remaining columns of the block by the row
`U_j,j:`, and over the later blocks at its end (lazy batched updates).

Targets (`target=`):
  * `"published"`: the paper's objective, reconstruct the dense weights on the layer's
    inputs, `min ||X W - X W0||` (in cascade mode `X` are the pruned network's inputs,
    so the target outputs are `X_pruned W0`, not the dense network's outputs).
  * `"dense_outputs"`: fit the dense network's outputs on the layer's inputs (what the
    cascade of tfprune's other layer-wise methods fits): first the unpruned least
    squares `W* = H^-1 (C + damp W0)` (the damping pulls toward the trained weights),
    then SparseGPT on `W*` (`||X W - Y||^2 = ||X (W - W*)||^2 + const` for that
    `W*`). In parallel mode (and for the first layer) `C = G W0`, so `W* = W0`: the
    two coincide up to rounding.

There is no engine refit after SparseGPT (`LayerSolver.refit = False`): its updates are
its own reconstruction.

Where this fills gaps in the paper: each block prunes its share of the layer's exact
count (`round(P * i2 / d) - round(P * i1 / d)` of the `P` pruned weights) instead of
`int(numel * sparsity) + 1` ties included; the damping is per problem of the batch
(depthwise channels), raised 10x while `H` does not factor. Computed in float64
(TensorFlow's Cholesky and triangular solve, the column loop in NumPy). The maths is in
docs/algorithms.md section 11.
"""
import numpy as np
import tensorflow as tf

from tfprune import layerwise
from tfprune.methods.base import register_method
from tfprune.methods.layerwise_method import CALIBRATION_SAMPLES
from tfprune.methods.layerwise_method import LayerwiseMethod
from tfprune.methods.logsum import check_range

TARGETS = ("published", "dense_outputs")


def inverse_hessian_factor(gram, percdamp):
  """`(U, H, damp)` for a `[B, d, d]` batch of Gram matrices: `H = G + damp I` with
  `damp = percdamp * mean(diag G)` per problem (floored so that an all-zero problem is
  positive definite, raised 10x, at most 4 times, while `H` does not factor), and `U`
  the upper Cholesky factor of `H^-1` (`H^-1 = U^T U`): one Cholesky factorisation of
  the reversed `H` and one triangular solve, in float64."""
  gram = np.asarray(gram, np.float64)
  mean = np.mean(np.diagonal(gram, axis1=1, axis2=2), axis=1)
  damp = percdamp * np.maximum(mean, 1e-6 * max(float(mean.max()), 1e-30))
  eye = np.eye(gram.shape[1])[None]
  for _ in range(5):
    hessian = gram + damp[:, None, None] * eye
    try:  # J H J = L L^T (J reverses the order) => H^-1 = U^T U with U = J L^-1 J
      chol = tf.linalg.cholesky(np.ascontiguousarray(hessian[:, ::-1, ::-1]))
      inv = tf.linalg.triangular_solve(chol, tf.eye(gram.shape[1], batch_shape=[len(gram)],
                                                    dtype=tf.float64)).numpy()
      if np.all(np.isfinite(inv)):
        return inv[:, ::-1, ::-1], hessian, damp
    except tf.errors.InvalidArgumentError:
      pass
    damp = damp * 10.0
  raise ValueError(f"SparseGPT: the damped Hessian does not factor even with "
                   f"damp={float(damp.max()):g}: raise percdamp or use more calibration "
                   f"samples.")


def block_counts(prune, d, blocksize):
  """Pruned entries per block of inputs: the layer's `prune` split in proportion to the
  block widths, exactly (cumulative rounding)."""
  bounds = list(range(0, d, blocksize)) + [d]
  cum = [(2 * prune * b + d) // (2 * d) for b in bounds]
  return [(i1, i2, cum[j + 1] - cum[j]) for j, (i1, i2) in enumerate(zip(bounds, bounds[1:]))]


def sparsegpt_prune(w, factor, prune, blocksize=128):
  """SparseGPT's column-by-column OBS pruning on `[B, d, m]` weights.

  Args:
    w: `[B, d, m]` weights to prune (the reconstruction target `X w`).
    factor: `[B, d, d]` upper Cholesky factor `U` of `H^-1` (`inverse_hessian_factor`).
    prune: number of entries set to zero over the whole batch.
    blocksize: inputs per block (mask selection and lazy updates).

  Returns:
    `[B, d, m]` float64: exactly `prune` zeros chosen by the algorithm (more only where a
    kept weight is exactly 0), the other weights updated.
  """
  rows = np.swapaxes(np.array(w, np.float64), 1, 2)  # [B, m, d]: SparseGPT's layout
  u = np.asarray(factor, np.float64)
  nb, m, d = rows.shape
  for i1, i2, count in block_counts(int(prune), d, int(blocksize)):
    w1 = rows[:, :, i1:i2].copy()
    u1 = u[:, i1:i2, i1:i2]
    diag = np.diagonal(u1, axis1=1, axis2=2)  # [B, width]
    scores = (w1 ** 2 / diag[:, None, :] ** 2).reshape(-1)
    pruned = np.zeros(scores.shape, bool)
    pruned[np.argsort(scores, kind="stable")[:count]] = True
    pruned = pruned.reshape(w1.shape)
    q1 = np.zeros_like(w1)
    err1 = np.zeros_like(w1)
    for i in range(i2 - i1):
      col = w1[:, :, i]
      q = np.where(pruned[:, :, i], 0.0, col)
      err = (col - q) / diag[:, None, i]
      w1[:, :, i:] -= err[:, :, None] * u1[:, None, i, i:]
      q1[:, :, i] = q
      err1[:, :, i] = err
    rows[:, :, i1:i2] = q1
    rows[:, :, i2:] -= err1 @ u[:, i1:i2, i2:]
  return np.swapaxes(rows, 1, 2)


class SparseGPTSolver(layerwise.LayerSolver):
  """SparseGPT on a `LayerProblem` (scaled units: the mask and the updates do not depend
  on the layer's scaling).

  Args:
    target: `"published"` or `"dense_outputs"` (module docstring).
    blocksize: inputs per block, >= 1.
    percdamp: damping relative to `mean(diag G)`, in (0, 10].
  """

  refit = False

  def __init__(self, target="published", blocksize=128, percdamp=0.01):
    if target not in TARGETS:
      raise ValueError(f"target must be one of {TARGETS}, got {target!r}.")
    if not isinstance(blocksize, (int, np.integer)) or isinstance(blocksize, bool) or (
        blocksize < 1):
      raise ValueError(f"blocksize must be an integer >= 1, got {blocksize!r}.")
    self.target = target
    self.blocksize = int(blocksize)
    self.percdamp = check_range("percdamp", percdamp, 0.0, 10.0, high_open=False)

  def solve(self, problem, k, w_init=None):
    del w_init
    factor, hessian, damp = inverse_hessian_factor(problem.gram, self.percdamp)
    w0 = np.asarray(problem.w0, np.float64)
    if self.target == "dense_outputs":  # W* = H^-1 (C + damp W0), H^-1 = U^T U
      rhs = np.asarray(problem.cross, np.float64) + damp[:, None, None] * w0
      w = np.swapaxes(factor, 1, 2) @ (factor @ rhs)
    else:
      w = w0
    w = sparsegpt_prune(w, factor, w0.size - int(k), self.blocksize)
    return w, {"iterations": w0.shape[1], "solves": 1}


@register_method("sparsegpt")
class SparseGPT(LayerwiseMethod):
  """SparseGPT pruning of a trained model (post-training, no labels, no retraining).

  Args:
    target_sparsity, scope, mode, calibration_samples, batch_size, stats_dtype: see
      `LayerwiseMethod` (`scope="global"`: the engine's allocation of `w^2 diag(G)`).
    target, blocksize, percdamp: see `SparseGPTSolver`.
    **kwargs: the other `LayerwiseMethod` / `MethodCore` arguments
      (`relu_model` must stay False: nothing is refit).
  """

  def __init__(self, target_sparsity=0.9, scope="layer", target="published",
               blocksize=128, percdamp=0.01, mode="cascade",
               calibration_samples=CALIBRATION_SAMPLES, batch_size=256, stats_dtype="float32",
               **kwargs):
    super().__init__(SparseGPTSolver(target=target, blocksize=blocksize,
                                     percdamp=percdamp),
                     target_sparsity=target_sparsity, scope=scope, mode=mode,
                     calibration_samples=calibration_samples, batch_size=batch_size,
                     stats_dtype=stats_dtype, **kwargs)

  def get_config(self):
    config = super().get_config()
    config.update({"target": self.solver.target, "blocksize": self.solver.blocksize,
                   "percdamp": self.solver.percdamp})
    return config
