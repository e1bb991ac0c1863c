"""Solvers' common ground: the scaled layer problem, FISTA / prox iteration, refit.

A layer's statistics (`tfprune.layerwise.stats`) become a `LayerProblem` in scaled units
(`make_problem`): weights relative to the layer's RMS original weight, the objective
relative to the layer's output energy, so that hyper-parameters (lambda, eps, eta) mean
the same in every layer. `accelerated_prox_solve` is the iteration shared by log-sum
(Wang et al., IEEE Trans. Computers 70(2) 2021) and IHT (Phan et al., ICDM 2020); a
`LayerSolver` returns a candidate `W`, the engine keeps the top-k of `support_scores`
and `refit`s the support by least squares (what makes the result retrain-free).
The maths is in docs/algorithms.md sections 3 (log-sum) and 4 (l0).

Few calibration rows (`n < d`, common in the deep layers of a real net at small input):
`G` has rank `n`, and the statistics keep the rows `X`. Then `G W` is computed as
`F^T (F W) + rho W` (`F = X / sqrt(n)`, `rho` the few-sample ridge) whenever `2 n < d`,
and the refit solves each column by the Woodbury identity on an `n x n` system when that
is cheaper than the `|S| x |S|` Cholesky (docs/algorithms.md, "Few calibration rows").
Same maths, same result to float rounding.
"""
import dataclasses
import math
import warnings

import numpy as np
import tensorflow as tf

from tfprune import topk


@dataclasses.dataclass
class LayerProblem:
  """One layer's scaled problem, as handed to a `LayerSolver`.

  The solver sees `W~ = W / scale` and `F~ = F / energy` (`energy = ||Y - b||^2 / n`), so
  its hyper-parameters (lambda, eps) mean the same thing in every layer: `2 F~ + 1` is
  the relative squared output error and `eps` is relative to the RMS original weight.
  Rows with `diag(G) = 0` in every problem of the batch are dropped (`live`).

  Attributes:
    name: layer name.
    gram, cross, w0: float32 tensors `[B, d_live, d_live]`, `[B, d_live, m]`,
      `[B, d_live, m]`, in scaled units.
    lipschitz: `[B, 1, 1]` float32, largest eigenvalue of each scaled `G` (power iteration).
    size: total number of kernel entries (dead rows included).
    live: boolean `[d]`.
    scale, energy: the scalings.
    ridge: the few-sample ridge `rho` in scaled units (0 when `n >= d_live`): `gram`
      holds `G + rho I` and `cross` holds `C + rho W0`, a prior that pulls the weights
      the calibration rows do not determine toward the trained ones, not toward 0.
    factor: when not None, `[B, n, d_live]` float32 `F` with `gram = F^T F + ridge * I`
      (scaled units, `n < d_live / 2`): solvers multiply by `G` through it
      (`gram_matmul`).
    rows: the number of calibration rows `n` behind `gram` (None: unknown).
  """
  name: str
  gram: tf.Tensor
  cross: tf.Tensor
  w0: tf.Tensor
  lipschitz: tf.Tensor
  size: int
  live: np.ndarray
  scale: float
  energy: float
  ridge: float = 0.0
  factor: tf.Tensor = None
  rows: int = None

  def gram_args(self):
    """Keyword arguments of the solvers' `tf.function`s for `gram_matmul`."""
    return {"factor": self.factor, "factor_ridge": tf.constant(self.ridge, tf.float32)}

  def scaled_cross(self, cross):
    """`C~` of an unscaled `[B, d, m]` cross product (all rows), prior term included."""
    return tf.constant(cross[:, self.live] * (self.scale / self.energy), tf.float32) + (
        self.ridge * self.w0)


def gram_matmul(gram, w, factor=None, factor_ridge=0.0):
  """`G w`: `gram @ w`, or `F^T (F w) + factor_ridge * w` when a factor is given."""
  if factor is None:
    return tf.matmul(gram, w)
  return tf.matmul(factor, tf.matmul(factor, w), transpose_a=True) + factor_ridge * w


@tf.function(reduce_retracing=True)
def power_iteration(gram, iterations=100):
  """Largest eigenvalue of each symmetric PSD matrix in `gram` (`[B, d, d]`) -> `[B]`.

  Deterministic start (ones plus a fixed stateless perturbation); returns the Rayleigh
  quotient times 1.02, a safe upper estimate for a step size of 1/L.
  """
  shape = tf.shape(gram)
  v = tf.ones([shape[0], shape[1], 1], gram.dtype) + 0.1 * tf.random.stateless_normal(
      [shape[0], shape[1], 1], seed=[7, 11], dtype=gram.dtype)
  v /= tf.norm(v, axis=1, keepdims=True)
  for _ in tf.range(iterations):
    v = tf.matmul(gram, v)
    v /= tf.maximum(tf.norm(v, axis=1, keepdims=True), 1e-30)
  rayleigh = tf.reduce_sum(v * tf.matmul(gram, v), axis=[1, 2])
  return rayleigh * 1.02


def accelerated_prox_solve(gram, cross, w_init, lipschitz, prox, penalty, eta, max_iter,
                           accelerate=True, min_iter=0, monotone=False, factor=None,
                           factor_ridge=0.0):
  """FISTA-style proximal gradient with restart on `F(W) + penalty(W)` (both solvers).

  `F(W) = 1/2 tr(W^T G W) - tr(W^T C)` on `[B, d, m]` problems; one matmul per
  iteration (`G v` by linearity). Every iteration extrapolates, takes the gradient step
  `z = v - (G v - C) / L` and the solver's proximal step `prox(z, w)` (`w`: the current
  iterate, for reweighting); when the objective rises the momentum restarts, and with
  `monotone` the plain (unextrapolated) step is taken instead. Stops when
  `||W_{k+1} - W_k|| <= eta * max(1, ||W_k||)` after at least `min_iter` iterations.
  `factor`, `factor_ridge`: see `gram_matmul` (`LayerProblem.gram_args`).

  Returns:
    `(w, iterations)`.
  """
  eta = tf.cast(eta, gram.dtype)
  one = tf.constant(1.0, gram.dtype)

  def objective(w, gw):
    return 0.5 * tf.reduce_sum(w * gw) - tf.reduce_sum(w * cross) + penalty(w)

  def matmul(w):
    return gram_matmul(gram, w, factor, factor_ridge)

  gw0 = matmul(w_init)
  state = (tf.constant(0), w_init, w_init, gw0, gw0, one, objective(w_init, gw0),
           tf.constant(False))

  def cond(i, w, w_prev, gw, gw_prev, t, phi, done):
    del w, w_prev, gw, gw_prev, t, phi
    return tf.logical_and(i < max_iter, tf.logical_not(done))

  def body(i, w, w_prev, gw, gw_prev, t, phi, done):
    del done
    t_next = 0.5 * (1.0 + tf.sqrt(1.0 + 4.0 * t * t))
    beta = (t - 1.0) / t_next if accelerate else tf.constant(0.0, gram.dtype)
    v = w + beta * (w - w_prev)
    gv = gw + beta * (gw - gw_prev)
    w_new = prox(v - (gv - cross) / lipschitz, w)
    gw_new = matmul(w_new)
    phi_new = objective(w_new, gw_new)
    worse = phi_new > phi
    if monotone:

      def plain():
        wp = prox(w - (gw - cross) / lipschitz, w)
        gwp = matmul(wp)
        return wp, gwp, objective(wp, gwp)

      w_new, gw_new, phi_new = tf.cond(worse, plain, lambda: (w_new, gw_new, phi_new))
    t_next = tf.where(worse, one, t_next)
    done = tf.logical_and(tf.norm(w_new - w) <= eta * tf.maximum(1.0, tf.norm(w)),
                          i + 1 >= min_iter)
    return i + 1, w_new, w, gw_new, gw, t_next, phi_new, done

  i, w, *_ = tf.while_loop(cond, body, state)
  return w, i


def relative_error(stats, w, bias, cross=None, shift=None):
  """`||X W + b - Y|| / ||Y||` from the statistics alone (`w` is `[B, d, m]`).

  With `shift` (`[B, m]`, the mean residual per output), the error after subtracting
  it from every row: the squared error drops by exactly `sum(shift^2)` per row.
  """
  cross = stats.cross if cross is None else cross
  w = np.asarray(w, np.float64)
  if stats.rows is not None:  # ||X W||^2 / n, cheaper than W^T G W when n < d
    quad = float(np.sum(np.matmul(stats.rows, w) ** 2)) / stats.n
  else:
    quad = np.einsum("bdm,bdm->", w, np.matmul(stats.gram, w))
  err2 = quad - 2.0 * np.einsum("bdm,bdm->", w, cross) + stats.y_sq
  if shift is not None:
    err2 -= float(np.sum(np.asarray(shift) ** 2))
  y2 = stats.y_sq + 2.0 * float(np.sum(bias * stats.y_colsum)) + float(np.sum(bias ** 2))
  return math.sqrt(max(err2, 0.0) / max(y2, 1e-300))


def _woodbury_cheaper(rank, kmax):
  """True if `n x n` Woodbury solves cost less than `kmax x kmax` Cholesky solves."""
  return rank * rank * (kmax + rank / 3.0) < kmax ** 3 / 3.0


def refit(gram, cross, support, ridge=1e-8, max_entries=1 << 22, factor=None,
          factor_ridge=0.0):
  """Least-squares refit on a support: per column `G_SS w_S = C_S`, zeros elsewhere.

  All columns of all problems are solved as batches of padded systems of size
  `max |S_j|`, chunked so that a chunk holds about `max_entries` matrix entries. With a
  factor (`G = F^T F + factor_ridge * I`, `F` `[B, n, d]`, `factor_ridge > 0`) and
  `n` small against `|S|`, each column is solved on `n x n` by the Woodbury identity:
  `w_S = (c - A^T (rho I + A A^T)^{-1} A c) / rho` with `A = F_S`, `rho = factor_ridge +
  ridge * mean(diag G)`; the same solution, without forming `G_SS`.

  Args:
    gram: `[B, d, d]` float64.
    cross: `[B, d, m]` float64.
    support: `[B, d, m]` boolean.
    ridge: relative ridge, `ridge * mean(diag G)` is added to each `G_SS`; raised 1000x
      (up to 1e-2) while a system is numerically singular.
    max_entries: chunk size bound.
    factor, factor_ridge: optional factor of `gram` (see above).

  Returns:
    `(w, ridge_used)`: `w` float64 `[B, d, m]`, zero outside the support.
  """
  gram = np.asarray(gram, np.float64)
  cross = np.asarray(cross, np.float64)
  support = np.asarray(support, bool)
  nb, _, m = cross.shape
  out = np.zeros_like(cross)
  counts = support.sum(axis=1)  # [B, m]
  systems = [(b, j) for b in range(nb) for j in range(m) if counts[b, j] > 0]
  if not systems:
    return out, ridge
  scale = float(np.mean(np.diagonal(gram, axis1=1, axis2=2))) or 1.0
  kmax = int(counts.max())
  low_rank = (factor is not None and factor_ridge > 0
              and _woodbury_cheaper(factor.shape[1], kmax))
  if low_rank:
    rank = factor.shape[1]
    chunk = max(1, max_entries // (rank * (kmax + rank)))
  else:
    chunk = max(1, max_entries // (kmax * kmax))
  ridge_used = ridge
  for start in range(0, len(systems), chunk):
    part = systems[start:start + chunk]
    bs = np.array([b for b, _ in part])
    js = np.array([j for _, j in part])
    idx = np.zeros((len(part), kmax), np.int64)
    valid = np.zeros((len(part), kmax), bool)
    for s, (b, j) in enumerate(part):
      rows = np.flatnonzero(support[b, :, j])
      idx[s, :rows.size] = rows
      valid[s, :rows.size] = True
    rhs = np.where(valid, cross[bs[:, None], idx, js[:, None]], 0.0)[..., None]
    if low_rank:
      sol = _woodbury_solve(np.asarray(factor, np.float64), bs, idx, valid, rhs,
                            factor_ridge + ridge * scale)
    else:
      sol, r = _cholesky_solve(gram, bs, idx, valid, rhs, ridge, scale)
      ridge_used = max(ridge_used, r)
    sol = np.where(valid, sol, 0.0)
    for s, (b, j) in enumerate(part):
      c = counts[b, j]
      out[b, idx[s, :c], j] = sol[s, :c]
  return out, ridge_used


def _cholesky_solve(gram, bs, idx, valid, rhs, ridge, scale):
  """Padded `G_SS w = c` systems by Cholesky; the ridge grows while one is singular."""
  kmax = idx.shape[1]
  sub = gram[bs[:, None, None], idx[:, :, None], idx[:, None, :]]
  both = valid[:, :, None] & valid[:, None, :]
  eye = np.eye(kmax)[None]
  sub = np.where(both, sub, eye)
  r = ridge
  while True:
    a = sub + (r * scale) * eye * valid[:, :, None]
    try:
      chol = tf.linalg.cholesky(a)
      sol = tf.linalg.cholesky_solve(chol, rhs).numpy()[..., 0]
      ok = np.all(np.isfinite(sol))
    except tf.errors.InvalidArgumentError:
      ok = False
    if ok or r >= 1e-2:
      return sol, r
    r = min(max(r, 1e-10) * 1000.0, 1e-2)


def _woodbury_solve(factor, bs, idx, valid, rhs, rho):
  """Padded `(A^T A + rho I) w = c` systems with `A = F[b][:, S]`, on `n x n`."""
  n = factor.shape[1]
  a = factor[bs[:, None, None], np.arange(n)[None, :, None], idx[:, None, :]]  # [S, n, k]
  a = np.where(valid[:, None, :], a, 0.0)
  small = np.matmul(a, np.swapaxes(a, 1, 2)) + rho * np.eye(a.shape[1])[None]
  chol = tf.linalg.cholesky(small)
  u = tf.linalg.cholesky_solve(chol, np.matmul(a, rhs)).numpy()
  return ((rhs - np.matmul(np.swapaxes(a, 1, 2), u)) / rho)[..., 0]


# -------------------------------------------------------------------------- solvers
class LayerSolver:
  """What a layer-wise method supplies to `prune_layerwise`.

  `solve(problem, k)` returns `(w, info)`: `w` `[B, d_live, m]` (scaled units, at least
  `k` nonzeros where possible) and a dict with at least `iterations` (and optionally
  `solves`, `lambda`, and `notes` for the layer table). `allocate(problems, k_total)`
  returns per-layer keep counts for the global allocation. The engine then keeps the
  top `k` of `support_scores` (nonzero entries first, by magnitude) and refits.

  Attributes:
    refit: True (default): the engine keeps the top `k` of the solver's `w` and refits
      them by least squares (then removes the mean output shift). False: the solver's
      `w` is final (Wanda keeps the trained weights, SparseGPT its own updates): its
      nonzeros are the support (their count may differ from `k`), entries equal to
      `problem.w0` are written as the trained weights exactly, and there is no refit,
      mean correction or ReLU model.
  """

  refit = True

  def solve(self, problem, k, w_init=None):
    raise NotImplementedError

  def allocate(self, problems, k_total):
    """Default global allocation: top `k_total` of `w~^2 diag(G~)` over all layers.

    `w~^2 diag(G~)` is the relative squared output error caused by deleting one weight
    alone (the diagonal of the layer's error Hessian), comparable across layers.
    """
    scores = []
    for p in problems:
      diag = tf.linalg.diag_part(p.gram)[..., None]
      scores.append(tf.reshape(p.w0 ** 2 * diag, [-1]))
    return [int(tf.reduce_sum(m)) for m in topk.global_topk_masks(scores, k_total)]


def support_scores(problem, w):
  """Ranking for the final support: nonzeros of `w` first (by |w|), then zeros by the
  magnitude of a gradient step `|w - grad F~(w) / L|`."""
  gw = gram_matmul(problem.gram, w, problem.factor, problem.ridge)
  z = w - (gw - problem.cross) / problem.lipschitz
  big = 1.0 + tf.reduce_max(tf.abs(z))
  return tf.where(tf.not_equal(w, 0.0), tf.abs(w) + big, tf.abs(z))


def _lipschitz(g, factor=None, factor_ridge=0.0):
  """`[B, 1, 1]` step constants, floored so that an all-zero problem of a batch (a
  depthwise channel whose input is dead on the calibration data) gets a finite step.
  With a factor, `lambda_max(F^T F + rho I) = lambda_max(F F^T) + rho`, on `n x n`."""
  if factor is not None:
    g = tf.matmul(factor, factor, transpose_b=True) + factor_ridge * tf.eye(
        factor.shape[1], dtype=factor.dtype)[None]
  lip = power_iteration(g).numpy().astype(np.float64)
  floor = max(float(lip.max()) * 1e-6, 1e-30)
  return tf.constant(np.maximum(lip, floor).reshape(-1, 1, 1), tf.float32)


def make_problem(name, stats, w0, min_ratio=1e-12, few_sample_ridge=1e-3):
  """Scales, drops dead rows and regularises a layer's statistics.

  With fewer rows than live inputs, `G` is rank-deficient: `rho = few_sample_ridge *
  mean(diag G)` is added to `G` and `rho W0` to `C` (Tikhonov toward the trained
  weights: what the rows do not determine stays as trained; docs/algorithms.md, "Few
  calibration rows").

  Returns:
    `(problem, ridge, notes)`: the `LayerProblem`, the absolute ridge `rho` (0 when
    there are at least as many rows as live inputs), and notes for the report.
  """
  diag = np.diagonal(stats.gram, axis1=1, axis2=2)  # [B, d]
  live = np.any(diag > min_ratio * max(float(diag.max()), 1e-300), axis=0)
  if not live.any():
    raise ValueError(f"Layer {name!r}: every input is zero on the calibration data.")
  notes = []
  gram = stats.gram[:, live][:, :, live].copy()
  d_live = int(live.sum())
  ridge = 0.0
  if stats.n < d_live:
    ridge = few_sample_ridge * float(np.mean(np.diagonal(gram, axis1=1, axis2=2)))
    gram += ridge * np.eye(d_live)[None]
    notes.append(f"{stats.n} rows < {d_live} inputs: ridge {few_sample_ridge:g}*mean(diag G) "
                 f"toward the trained weights")
    warnings.warn(f"Layer {name!r}: only {stats.n} calibration rows for {d_live} live "
                  f"inputs; G is rank-deficient, regularised with a ridge of "
                  f"{few_sample_ridge:g} * mean(diag G) toward the trained weights. Use "
                  f"more calibration samples.")
  w0l = np.asarray(w0, np.float64)[:, live]
  scale = float(np.sqrt(np.mean(w0l ** 2))) or 1.0
  energy = max(stats.y_sq, 1e-30)
  unit = scale ** 2 / energy
  g = tf.constant(gram * unit, tf.float32)
  factor = None
  rows = gram_factor(stats)
  if rows is not None and ridge > 0 and 2 * rows.shape[1] < d_live:
    factor = tf.constant(rows[:, :, live] * math.sqrt(unit), tf.float32)
    notes.append(f"G used as its rank-{rows.shape[1]} factor")
  problem = LayerProblem(
      name=name, gram=g, cross=None, w0=tf.constant(w0l / scale, tf.float32),
      lipschitz=_lipschitz(g, factor, ridge * unit), size=int(np.size(w0)),
      live=live, scale=scale, energy=energy, ridge=ridge * unit, factor=factor,
      rows=int(stats.n))
  problem.cross = problem.scaled_cross(stats.cross)
  return problem, ridge, notes


def gram_factor(stats):
  """`F = X / sqrt(n)` (`[B, n, d]` float64, `G = F^T F`) when the statistics hold the
  rows, else None."""
  if stats.rows is None:
    return None
  return stats.rows / math.sqrt(stats.n)


