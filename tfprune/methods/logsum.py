"""Log-sum proximal iteratively reweighted pruning: layer-wise, label-free, retrain-free.

Wang, Yang, Shi, Lin, "A Proximal Iteratively Reweighted Approach for Efficient Network
Sparsification", IEEE Trans. Computers 70(2), 2021, doi 10.1109/TC.2020.3044142.

Each layer solves `min_W F(W) + lambda * sum_ij log(|w_ij| + eps)` on the statistics of
`tfprune.layerwise` (`F(W) = 1/2 tr(W^T G W) - tr(W^T C)`): with `L = lambda_max(G)`,
`omega = lambda / (|W_k| + eps)`, `W_{k+1} = soft(W_k - grad F(W_k) / L, omega / L)`,
stopped when `||W_{k+1} - W_k|| <= eta * max(1, ||W_k||)` (the paper's early
termination). A requested sparsity is met by a warm-started lambda search, then the
top-k support is refit by least squares (what makes it retrain-free).

Where this fills gaps in the paper: the step is taken from a FISTA extrapolation with
function-value restart (plain iteration is 4-10x slower), lambda and eps are in the
layer's scaled units (`W / rms(W0)`, `F / ||Y - b||^2`, see `layerwise.LayerProblem`),
and the global allocation shares one scaled lambda across layers.
"""
import math

import numpy as np
import tensorflow as tf

from tfprune import layerwise
from tfprune import topk
from tfprune.methods.base import register_method
from tfprune.methods.layerwise_method import CALIBRATION_SAMPLES
from tfprune.methods.layerwise_method import LayerwiseMethod


def soft_threshold(z, threshold):
  """Weighted soft threshold `sign(z) * max(|z| - threshold, 0)` (elementwise)."""
  return tf.sign(z) * tf.nn.relu(tf.abs(z) - threshold)


def prox_step(w, grad, lipschitz, lam, eps):
  """One proximal reweighted step from `w` (the paper's update, no extrapolation)."""
  omega = lam / (tf.abs(w) + eps)
  return soft_threshold(w - grad / lipschitz, omega / lipschitz)


@tf.function(reduce_retracing=True)
def logsum_solve(gram, cross, w_init, lipschitz, lam, eps, eta, max_iter,
                 accelerate=True, min_iter=0, factor=None, factor_ridge=0.0):
  """Proximal iteratively reweighted log-sum solver on `[B, d, m]` problems.

  Args:
    gram: `[B, d, d]` float32, `G`.
    cross: `[B, d, m]` float32, `C`.
    w_init: `[B, d, m]` starting point (warm start).
    lipschitz: `[B, 1, 1]` step constants `L >= lambda_max(G)`.
    lam, eps, eta: scalars (lambda > 0 scaled by nothing here; eps > 0; eta > 0).
    max_iter: iteration cap (int scalar).
    accelerate: FISTA extrapolation with restart when the objective increases.
    min_iter: the `eta` rule is not checked before this many iterations (a warm start
      at a new lambda moves slowly at first and would otherwise stop at once).
    factor, factor_ridge: optional low-rank form of `gram`
      (`tfprune.layerwise.LayerProblem.gram_args`).

  Returns:
    `(w, iterations)`.
  """
  lam = tf.cast(lam, gram.dtype)
  eps = tf.cast(eps, gram.dtype)

  def prox(z, w):  # weighted soft threshold: the prox of the l1 majoriser at w
    return soft_threshold(z, lam / (tf.abs(w) + eps) / lipschitz)

  return layerwise.accelerated_prox_solve(
      gram, cross, w_init, lipschitz, prox=prox,
      penalty=lambda w: lam * tf.reduce_sum(tf.math.log(tf.abs(w) + eps)), eta=eta,
      max_iter=max_iter, accelerate=accelerate, min_iter=min_iter, factor=factor,
      factor_ridge=factor_ridge)


def check_range(name, value, low, high, low_open=True, high_open=True):
  """`float(value)` if it lies in the interval, else a ValueError naming `name`."""
  try:
    v = float(value)
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be a number, got {value!r}.") from None
  ok_low = v > low if low_open else v >= low
  ok_high = v < high if high_open else v <= high
  if not (ok_low and ok_high) or math.isnan(v):
    lo_b = "(" if low_open else "["
    hi_b = ")" if high_open else "]"
    raise ValueError(f"{name} must be in {lo_b}{low:g}, {high:g}{hi_b}, got {value!r}.")
  return v


# The lambda search stops once its bracket is this narrow (relative): seen on layers
# with few calibration rows, where nnz falls from above 1.8 k to far below k within
# 1e-6 of lambda (a solve stopped by `eta` while its zeros still drift, against one
# that converged) and the secant spent its remaining solves splitting the gap.
BRACKET_RTOL = 1e-2
# ... and once the search stops changing what the engine keeps, within this relative
# tolerance, while both sides of `k` are known: a new denser solution whose top-k set is
# that of the previous one (the result would not change), or a new sparser solution whose
# count is that of the previous sparser one (the count jumps across the bracket: layers
# with few calibration rows, or a solve stopped by `eta` on a slow drift). Without it the
# search ended at `max_solves` on most layers of ResNet50 at 32x32 and 16 samples
# (bench/RESULTS_layerwise.md, "Solver speed").
SUPPORT_RTOL = 2e-2
# Layers with at most 1/FEW_ROWS_RATIO as many calibration rows as live inputs skip the
# search (`LogSumSolver.few_rows_search`): on every such layer measured the full search
# returned magnitude pruning plus refit, to 4 digits of the held-out error, after 3-4
# solves of up to 4,000 iterations (docs/algorithms.md section 3, "Few rows: no search").
FEW_ROWS_RATIO = 4


def _cannot_reach(k, counts, solves_left):
  """True if the sparse side's counts (oldest first, each below `k`, at lambdas falling
  toward a fixed denser side) will not reach `k` within `solves_left` more solves.

  The secant splits the gap each time, so the count grows by less each solve: it cannot
  reach `k` if its last growth, repeated, falls short, or if its growths shrink
  geometrically and twice the geometric tail falls short.
  """
  growth = counts[-1] - counts[-2]
  gap = k - counts[-1]
  if growth <= 0 or growth * solves_left < gap:
    return True
  if len(counts) < 3 or counts[-2] <= counts[-3]:
    return False
  ratio = growth / (counts[-2] - counts[-3])
  return ratio < 1.0 and 2.0 * growth * ratio / (1.0 - ratio) < gap


def _overlap(a, b, k):
  """Fraction of the `k` entries of mask `a` that mask `b` also keeps."""
  return float(tf.reduce_sum(tf.cast(a, tf.float32) * tf.cast(b, tf.float32))) / max(k, 1)


class LogSumSolver(layerwise.LayerSolver):
  """Log-sum solver plus the warm-started lambda search for a keep count.

  Args:
    eps: log-sum smoothing, relative to the layer's RMS original weight, in (0, 10].
    eta: early-termination tolerance, in (0, 1).
    lam: fixed scaled lambda (> 0); None searches lambda for the target sparsity.
    max_iter: iteration cap per solve.
    search_tol: stop the search once `k <= nnz <= (1 + search_tol) k`.
    max_solves: solve budget of the lambda search per layer (the search usually stops
      earlier: `search_tol`, `BRACKET_RTOL`, `SUPPORT_RTOL`, `_cannot_reach`).
    accelerate: FISTA extrapolation with restart.
    warm_min_iter: iterations a solve runs before the `eta` rule is checked (every
      solve with `fast_search`, else the solves after the first denser one).
    fast_search: every solve runs `warm_min_iter` first and the search stops once the
      kept set is stable (`SUPPORT_RTOL`): about 2x less solver time (ResNet50 at 32x32,
      16 samples: 281 s instead of 540 s), but MobileNetV2-0.35 at 0.5 scored 70.85%
      instead of 72.42% (held-out RMS 0.358 vs 0.334), so it is opt-in
      (docs/algorithms.md section 3, "Stopping the search").
    few_rows_search: False (default): a layer with `FEW_ROWS_RATIO * n <= d` (`n`
      calibration rows, `d` live inputs) keeps its largest trained weights and the engine
      refits them, without a search (what the search returned there, measured); True:
      the lambda search runs on every layer. A fixed `lam` always solves.
  """

  def __init__(self, eps=0.1, eta=1e-3, lam=None, max_iter=5000, search_tol=0.05,
               max_solves=12, accelerate=True, search="secant", chunk=50, path_start=0.25,
               warm_min_iter=100, fast_search=False, few_rows_search=False):
    self.eps = check_range("eps", eps, 0.0, 10.0, high_open=False)
    self.eta = check_range("eta", eta, 0.0, 1.0)
    self.lam = None if lam is None else check_range("lambda", lam, 0.0, math.inf)
    if int(max_iter) < 1 or int(max_solves) < 1:
      raise ValueError(f"max_iter and max_solves must be >= 1, got {max_iter}, "
                       f"{max_solves}.")
    self.max_iter = int(max_iter)
    self.search_tol = check_range("search_tol", search_tol, 0.0, 10.0)
    self.max_solves = int(max_solves)
    self.accelerate = bool(accelerate)
    if search not in ("path", "secant"):
      raise ValueError(f"search must be 'secant' or 'path', got {search!r}.")
    self.search = search
    self.chunk = int(chunk)
    self.path_start = float(path_start)
    self.warm_min_iter = int(warm_min_iter)
    self.fast_search = bool(fast_search)
    self.few_rows_search = bool(few_rows_search)
    self._lam_hint = {}
    self._ratios = []

  def run(self, problem, lam, w_init=None, max_iter=None, min_iter=0):
    """One solve at scaled `lam`; returns `(w, iterations, nnz)`."""
    w_init = problem.w0 if w_init is None else w_init
    max_iter = self.max_iter if max_iter is None else max_iter
    w, it = logsum_solve(problem.gram, problem.cross, w_init, problem.lipschitz,
                         tf.constant(lam, tf.float32), tf.constant(self.eps, tf.float32),
                         tf.constant(self.eta, tf.float32), tf.constant(max_iter),
                         self.accelerate, tf.constant(min_iter), **problem.gram_args())
    return w, int(it), int(tf.math.count_nonzero(w))

  def path(self, problem, k, lam, w_init=None):
    """Continuation: raise lambda every `chunk` iterations while nnz > (1 + tol) k.

    Warm-started chunks of the same solver; lambda grows by `clip(sqrt(nnz / k), 1.05,
    2)` per chunk, then the iterate is run to the `eta` rule at the last lambda. Costs
    about one long solve instead of a dozen (log-sum zeros are sticky, so the path
    tracks the solutions of increasing lambda).
    """
    w = problem.w0 if w_init is None else w_init
    iterations = chunks = 0
    while True:
      w, it, nnz = self.run(problem, lam, w, max_iter=self.chunk)
      iterations += it
      chunks += 1
      converged = it < self.chunk
      if nnz > (1.0 + self.search_tol) * k and iterations < self.max_iter:
        lam *= min(max(math.sqrt(nnz / max(k, 1)), 1.05), 2.0) ** (2 if converged else 1)
      elif converged or iterations >= self.max_iter:
        return w, {"iterations": iterations, "solves": chunks, "lambda": lam}

  def initial_lambda(self, problem, k):
    """Guess from the marginal weight: deleting a weight of scaled size `q` (the k-th
    largest `|w0|`) costs about `q^2 mean(diag G~) / 2` in F~ and saves
    `lam * log(1 + q / eps)` of penalty; equate the two."""
    if problem.name in self._lam_hint:
      return self._lam_hint[problem.name]
    flat = tf.reshape(tf.abs(problem.w0), [-1])
    k = max(1, min(int(k), int(flat.shape[0])))
    q = float(topk.kth_largest([flat], k))
    if q <= 0.0:  # fewer than k nonzero weights (zero inputs): the smallest nonzero one
      nonzero = flat[flat > 0]
      q = float(tf.reduce_min(nonzero)) if int(tf.size(nonzero)) else 1.0
    diag = float(tf.reduce_mean(tf.linalg.diag_part(problem.gram)))
    return max(0.5 * q * q * diag / math.log1p(q / self.eps), 1e-20)

  def solve(self, problem, k, w_init=None):
    d_live = int(np.sum(problem.live))
    if (self.lam is None and not self.few_rows_search and problem.rows is not None
        and FEW_ROWS_RATIO * problem.rows <= d_live):
      return problem.w0, {"iterations": 0, "solves": 0, "lambda": None, "notes": [
          f"{problem.rows} rows for {d_live} inputs: no lambda search (it returns "
          f"magnitude plus refit with this few rows); largest trained weights kept and "
          f"refit (few_rows_search=True searches anyway)"]}
    if self.lam is not None:
      w, it, _ = self.run(problem, self.lam, w_init,
                          min_iter=self.warm_min_iter if self.fast_search else 0)
      return w, {"iterations": it, "solves": 1, "lambda": self.lam}
    hinted = problem.name in self._lam_hint
    guess = self.initial_lambda(problem, k)
    lam = guess if hinted else guess * self._path_ratio()
    if self.search == "path":
      return self.path(problem, k, lam * self.path_start, w_init)
    lo = hi = None  # (lam, w, nnz): lo has nnz >= k (denser), hi has nnz < k
    iterations = solves = 0
    kept = None  # the top-k set of the current `lo` (what the engine would keep)
    cold_lo = False  # `lo` is the first solve, stopped by `eta` before converging
    sparse_counts = []  # nnz of the sparse-side solves since `lo` last changed
    lam *= 0.5
    while solves < self.max_solves:
      start = lo[1] if lo is not None else (problem.w0 if w_init is None else w_init)
      # Every solve runs `warm_min_iter` iterations before the `eta` rule: the gradient
      # vanishes at W0 (C = G W0), so a solve from W0 would otherwise stop after one
      # tiny step and keep almost every weight (the search then returned magnitude
      # pruning plus refit on most layers of a random conv net).
      warm = self.fast_search or lo is not None
      w, it, nnz = self.run(problem, lam, start, min_iter=self.warm_min_iter if warm else 0)
      iterations += it
      solves += 1
      if nnz >= k:
        stable = hi is not None and kept is not None
        lo, kept_prev = (lam, w, nnz), kept
        cold_lo = not warm and it < self.warm_min_iter
        sparse_counts = []
        if nnz <= (1.0 + self.search_tol) * k:
          break
        if self.fast_search:
          kept = topk.topk_mask(layerwise.support_scores(problem, w), k)
        if (self.fast_search and stable
            and _overlap(kept, kept_prev, k) >= 1.0 - SUPPORT_RTOL):
          break  # the kept set is stable: further lambdas in the bracket keep the same
      else:
        if (self.fast_search and lo is not None and hi is not None
            and abs(nnz - hi[2]) <= SUPPORT_RTOL * hi[2]):
          hi = (lam, w, nnz)
          break  # the sparse side's count is stable: it jumps across the bracket
        hi = (lam, w, nnz)
        sparse_counts.append(nnz)
        if (cold_lo and len(sparse_counts) >= 2
            and _cannot_reach(k, sparse_counts, self.max_solves - solves)):
          # Converged solves creep toward the eta-stopped first one from below `k`:
          # the search would end at `max_solves` with this same `lo`
          # (docs/algorithms.md section 3, "The unreachable bracket").
          break
      if lo is not None and hi is not None and hi[0] <= lo[0] * (1.0 + BRACKET_RTOL):
        break  # nnz jumps across a lambda gap this narrow: no lambda in it does better
      lam = self._next_lambda(lo, hi, (1.0 + 0.5 * self.search_tol) * k)
    if lo is None:  # too sparse even at the smallest lambda tried: rank what we have
      lo = hi
    if not hinted:
      self._ratios.append(lo[0] / guess)
    return lo[1], {"iterations": iterations, "solves": solves, "lambda": lo[0]}

  def _path_ratio(self):
    """Reuse of the lambda path across layers: the geometric mean of (lambda found /
    first guess) over the layers solved so far (the guess is biased the same way in the
    layers of one network), 1 for the first layer."""
    if not self._ratios:
      return 1.0
    return float(np.exp(np.mean(np.log(self._ratios[-8:]))))

  @staticmethod
  def _next_lambda(lo, hi, target, slope=0.55):
    """Safeguarded secant on log(nnz) vs log(lambda) (nnz ~ lambda^-slope at first)."""
    if lo is not None and hi is not None:
      a, b = math.log(lo[0]), math.log(hi[0])
      fa, fb = math.log(max(lo[2], 1)), math.log(max(hi[2], 1))
      x = a + (math.log(target) - fa) * (b - a) / (fb - fa) if fb != fa else 0.5 * (a + b)
      x = min(max(x, a + 0.15 * (b - a)), a + 0.85 * (b - a))
      return math.exp(x)
    lam, _, nnz = lo if lo is not None else hi
    factor = (max(nnz, 1) / target) ** (1.0 / slope)
    factor = min(max(factor, 1.25), 8.0) if lo is not None else min(max(factor, 1 / 8), 0.8)
    return lam * factor

  def allocate(self, problems, k_total):
    """Global allocation: one shared scaled lambda; bisection on the total count."""
    guesses = [self.initial_lambda(p, max(1, round(k_total * p.size / sum(
        q.size for q in problems)))) for p in problems]
    lam = float(np.exp(np.mean(np.log(guesses))))
    lo = hi = None
    current = [p.w0 for p in problems]
    for _ in range(self.max_solves):
      warm = self.fast_search or lo is not None
      results = [self.run(p, lam, w, min_iter=self.warm_min_iter if warm else 0)
                 for p, w in zip(problems, current)]
      nnz = sum(r[2] for r in results)
      if nnz >= k_total:
        lo = (lam, results, nnz)
        current = [r[0] for r in results]
        if nnz <= (1.0 + self.search_tol) * k_total:
          break
      else:
        hi = (lam, results, nnz)
        current = [r[0] for r in lo[1]] if lo is not None else [p.w0 for p in problems]
      if hi is None:
        lam *= 4.0
      elif lo is None:
        lam /= 4.0
      else:
        lam = math.sqrt(lo[0] * hi[0])
    best = lo if lo is not None else hi
    counts = np.array([r[2] for r in best[1]], np.float64)
    ks = np.floor(counts * k_total / max(counts.sum(), 1)).astype(int)
    order = np.argsort(-(counts * k_total / max(counts.sum(), 1) - ks))
    for i in order[:k_total - int(ks.sum())]:
      ks[i] += 1
    for p in problems:
      self._lam_hint[p.name] = best[0]
    return [int(min(k, p.size)) for k, p in zip(ks, problems)]


@register_method("logsum")
class LogSum(LayerwiseMethod):
  """Layer-wise log-sum pruning of a trained model (post-training, no labels).

  Args:
    target_sparsity, scope, mode, calibration_samples, batch_size, relu_model,
      relu_passes, stats_dtype: see `LayerwiseMethod` (relu_model default False: the
      paper fits pre-activations).
    eps, eta, lam, max_iter, fast_search, few_rows_search: see `LogSumSolver`.
    **kwargs: `MethodCore` arguments (schedule, ...), unused by this method.
  """

  def __init__(self, target_sparsity=0.9, scope="layer", eps=0.1, eta=1e-3, lam=None,
               max_iter=5000, mode="cascade", calibration_samples=CALIBRATION_SAMPLES,
               batch_size=256, relu_model=False, relu_passes=2, stats_dtype="float32",
               fast_search=False, few_rows_search=False, **kwargs):
    super().__init__(LogSumSolver(eps=eps, eta=eta, lam=lam, max_iter=max_iter,
                                  fast_search=fast_search,
                                  few_rows_search=few_rows_search),
                     target_sparsity=target_sparsity, scope=scope, mode=mode,
                     calibration_samples=calibration_samples, batch_size=batch_size,
                     relu_model=relu_model, relu_passes=relu_passes,
                     stats_dtype=stats_dtype, **kwargs)

  def get_config(self):
    config = super().get_config()
    config.update({"eps": self.solver.eps, "eta": self.solver.eta, "lam": self.solver.lam,
                   "max_iter": self.solver.max_iter, "fast_search": self.solver.fast_search,
                   "few_rows_search": self.solver.few_rows_search})
    return config
