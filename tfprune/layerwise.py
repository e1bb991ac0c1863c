"""Shared engine for layer-wise, label-free, retrain-free pruning (log-sum, l0, ...).

Each prunable layer is pruned on its own so that its response on unlabelled calibration
inputs stays close to the original one (Net-Trim, Aghasi et al. 2017; Wang et al., IEEE
Trans. Computers 70(2) 2021; Phan et al., ICDM 2020). For a layer with inputs `X`
(n x d; im2col patches for a convolution) and original pre-activations `Y = X W0 + b`:

    F(W) = 1/(2n) ||X W + b - Y||_F^2 = 1/2 tr(W^T G W) - tr(W^T C) + const,
    G = X^T X / n,   C = X^T (Y - b) / n,   grad F = G W - C.

The engine streams the calibration data ONCE per layer (once for all layers in
`parallel` mode), accumulating `G`, `C`, `||Y - b||^2 / n` and the column sums of
`Y - b` batch by batch; X is never held in memory. Per batch the products run in
float32 (float64 with `stats_dtype="float64"`) and are summed across batches in
float64 ("compensated" accumulation: only the cross-batch sum, where the error grows,
is in float64). Solvers then cost O(d^2 m) per iteration, independent of n.

Layer kinds: `Dense` (the last input axis; leading axes are samples), `Conv1D` /
`Conv2D` (im2col via `tf.image.extract_patches`: padding valid/same/causal, strides,
dilation, channels_first; `d = kh*kw*cin`), `DepthwiseConv1D` / `DepthwiseConv2D` (one
independent problem per input channel, `d = kh*kw`, `m = depth_multiplier`). A layer's
statistics are held as a batch of problems: `G` is `[B, d, d]`, `C` and `W` are
`[B, d, m]` (`B = 1` except depthwise, where `B = cin`).

Modes: `parallel` takes every layer's inputs from the original network (one pass for
all layers); `cascade` takes them from the network whose earlier layers are already
pruned (one pass per layer), while `Y` always comes from the original network.

Solvers plug in through `LayerSolver` (see `tfprune.methods.logsum` and
`tfprune.methods.l0`); the engine handles statistics, dead inputs (rows with
`diag(G) = 0` are dropped), scaling, the least-squares refit on the chosen support,
the optional ReLU model, writing kernels and masks, and the per-layer report.
"""
import dataclasses
import math
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

from tfprune import masks as masks_lib

L = keras.layers
MODES = ("parallel", "cascade")
ALLOCATIONS = ("layer", "global")
STATS_DTYPES = ("float32", "float64")
_DENSE = (L.Dense,)
_CONV = (L.Conv1D, L.Conv2D)
_DEPTHWISE = (L.DepthwiseConv1D, L.DepthwiseConv2D)
SUPPORTED_LAYERS = ("Dense", "Conv1D", "Conv2D", "DepthwiseConv1D", "DepthwiseConv2D")


# ----------------------------------------------------------------------------- layers
def inner_layer(layer):
  """The layer that holds the kernel: `layer.layer` for a `PruneWrapper`, else `layer`."""
  if hasattr(layer, "masks") and isinstance(getattr(layer, "layer", None), L.Layer):
    return layer.layer
  return layer


def is_supported(layer):
  """True if the layer-wise engine can prune `layer` (or the layer a wrapper holds)."""
  inner = inner_layer(layer)
  if isinstance(inner, _DEPTHWISE):
    return True
  if isinstance(inner, _CONV):
    return getattr(inner, "groups", 1) == 1
  return isinstance(inner, _DENSE)


def supported_layers(model):
  """Top-level layers of `model` the engine prunes, in model order."""
  return [layer for layer in model.layers if is_supported(layer)]


def _kind(inner):
  if isinstance(inner, _DEPTHWISE):
    return "depthwise"
  if isinstance(inner, _CONV):
    return "conv"
  return "dense"


def kernel_to_problems(inner, kernel):
  """Kernel -> `[B, d, m]`: the layout the solvers see (see module docstring)."""
  kernel = np.asarray(kernel)
  kind = _kind(inner)
  if kind == "dense":
    return kernel[None]
  if kind == "conv":
    return kernel.reshape(1, -1, kernel.shape[-1])
  cin, mult = kernel.shape[-2], kernel.shape[-1]
  return np.transpose(kernel.reshape(-1, cin, mult), (1, 0, 2))


def problems_to_kernel(inner, w, kernel_shape):
  """Inverse of `kernel_to_problems`."""
  w = np.asarray(w)
  if _kind(inner) != "depthwise":
    return w.reshape(kernel_shape)
  return np.transpose(w, (1, 0, 2)).reshape(kernel_shape)


def _bias_problems(inner, m_shape):
  """Bias as `[B, m]` (zeros when the layer has none)."""
  b = inner.bias
  if b is None:
    return np.zeros(m_shape)
  return np.asarray(keras.ops.convert_to_numpy(b), np.float64).reshape(m_shape)


def layer_patches(inner, x):
  """The layer's input rows as `[B, N, d]` (im2col for convolutions).

  Args:
    inner: a supported Keras layer (not a wrapper).
    x: a batch of the layer's inputs, as the layer receives them.

  Returns:
    A float tensor `[B, N, d]` such that `patches @ kernel_to_problems(kernel)` equals the
    layer's pre-activation output minus its bias (rows ordered sample, position).
  """
  x = tf.convert_to_tensor(x)
  if not x.dtype.is_floating:
    x = tf.cast(x, tf.float32)
  kind = _kind(inner)
  if kind == "dense":
    return tf.reshape(x, [1, -1, x.shape[-1]])
  rank = len(inner.kernel_size)
  if inner.data_format == "channels_first":
    x = tf.transpose(x, [0] + list(range(2, rank + 2)) + [1])
  ks, st = list(inner.kernel_size), list(inner.strides)
  dil, padding = list(inner.dilation_rate), inner.padding
  if rank == 1:
    if padding == "causal":
      x = tf.pad(x, [[0, 0], [dil[0] * (ks[0] - 1), 0], [0, 0]])
      padding = "valid"
    x = x[:, None]
    ks, st, dil = [1] + ks, [1] + st, [1] + dil
  patches = tf.image.extract_patches(x, sizes=[1] + ks + [1], strides=[1] + st + [1],
                                     rates=[1] + dil + [1], padding=padding.upper())
  depth = patches.shape[-1]
  if kind == "conv":
    return tf.reshape(patches, [1, -1, depth])
  cin = x.shape[-1]
  patches = tf.reshape(patches, [-1, depth // cin, cin])  # (kh*kw, cin) order
  return tf.transpose(patches, [2, 0, 1])


def topk_mask(scores, k):
  """Exact top-k 0/1 mask by bisection on the float bits (fast; for solver loops).

  Same result as `tfprune.masks.topk_mask` (ties keep the lower flat index) for
  non-negative finite `scores`, but costs ~32 counting passes instead of a sort: the
  k-th largest value is found by binary search on the int32 bit pattern, which is
  monotone for non-negative float32.
  """
  flat = tf.reshape(tf.cast(scores, tf.float32), [-1])
  n = tf.size(flat)
  k = tf.clip_by_value(tf.cast(k, tf.int32), 0, n)
  bits = tf.bitcast(flat, tf.int32)
  count_above = lambda t: tf.reduce_sum(tf.cast(bits > t, tf.int32))

  def body(lo, hi):
    mid = lo + (hi - lo) // 2
    small = count_above(mid) < k
    return tf.where(small, lo, mid), tf.where(small, mid, hi)

  _, thr = tf.while_loop(lambda lo, hi: hi - lo > 1, body,
                         (tf.constant(-1, tf.int32), tf.reduce_max(bits)))
  above = bits > thr
  ties = tf.equal(bits, thr)
  room = k - tf.reduce_sum(tf.cast(above, tf.int32))
  keep_ties = tf.logical_and(ties, tf.cumsum(tf.cast(ties, tf.int32)) <= room)
  mask = tf.cast(tf.logical_or(above, keep_ties), scores.dtype)
  mask = tf.where(k >= n, tf.ones_like(mask), mask)
  return tf.reshape(mask, tf.shape(scores))


# ------------------------------------------------------------------------ statistics
@dataclasses.dataclass
class LayerStats:
  """Sufficient statistics of one layer's least-squares problem (all float64, per row).

  Attributes:
    gram: `[B, d, d]`, `X^T X / n`.
    cross: `[B, d, m]`, `X^T (Y - b) / n`.
    y_sq: `||Y - b||_F^2 / n` (scalar).
    y_colsum: `[B, m]`, column sums of `Y - b`, divided by n.
    n: number of rows (samples times output positions).
  """
  gram: np.ndarray
  cross: np.ndarray
  y_sq: float
  y_colsum: np.ndarray
  n: int


class _Accumulator:
  """Running float64 sums of the batch products."""

  def __init__(self, inner, w0, stats_dtype):
    self.inner = inner
    self.w0 = tf.constant(w0, tf.float64 if stats_dtype == "float64" else tf.float32)
    self.dtype = self.w0.dtype
    self.gram = self.cross = self.y_colsum = None
    self.y_sq = 0.0
    self.n = 0
    self._fn = tf.function(self._batch, reduce_retracing=True)

  def _batch(self, xp, xo):
    xp = tf.cast(layer_patches(self.inner, xp), self.dtype)
    xo = xp if xo is None else tf.cast(layer_patches(self.inner, xo), self.dtype)
    y = tf.matmul(xo, self.w0)  # Y - b, from the ORIGINAL inputs and kernel
    gram = tf.matmul(xp, xp, transpose_a=True)
    cross = tf.matmul(xp, y, transpose_a=True)
    return (tf.cast(gram, tf.float64), tf.cast(cross, tf.float64),
            tf.reduce_sum(tf.cast(y, tf.float64) ** 2),
            tf.reduce_sum(tf.cast(y, tf.float64), axis=1), tf.shape(xp)[1])

  def add(self, xp, xo=None):
    gram, cross, y_sq, y_colsum, rows = self._fn(xp, xo)
    if self.gram is None:
      self.gram, self.cross, self.y_colsum = gram.numpy(), cross.numpy(), y_colsum.numpy()
    else:
      self.gram += gram.numpy()
      self.cross += cross.numpy()
      self.y_colsum += y_colsum.numpy()
    self.y_sq += float(y_sq)
    self.n += int(rows)

  def result(self):
    if self.n == 0:
      raise ValueError(f"No calibration rows reached layer {self.inner.name!r}.")
    n = float(self.n)
    return LayerStats(self.gram / n, self.cross / n, self.y_sq / n, self.y_colsum / n,
                      self.n)


class _ReluCross:
  """Streams `C = X^T (T - b) / n` for the ReLU model's majoriser target `T`."""

  def __init__(self, inner, w0, bias, w_cur):
    self.inner = inner
    self.w0 = tf.constant(w0, tf.float32)
    self.bias = tf.constant(bias[:, None, :], tf.float32)
    self.w_cur = tf.constant(w_cur, tf.float32)
    self.cross, self.n = None, 0
    self._fn = tf.function(self._batch, reduce_retracing=True)

  def _batch(self, xp, xo):
    xp = layer_patches(self.inner, xp)
    xo = xp if xo is None else layer_patches(self.inner, xo)
    y = tf.matmul(xo, self.w0) + self.bias  # original pre-activation
    z = tf.matmul(xp, self.w_cur) + self.bias  # current pruned pre-activation
    target = tf.where(y > 0, y, tf.minimum(z, 0.0)) - self.bias
    return tf.cast(tf.matmul(xp, target, transpose_a=True), tf.float64), tf.shape(xp)[1]

  def add(self, xp, xo=None):
    cross, rows = self._fn(xp, xo)
    self.cross = cross.numpy() if self.cross is None else self.cross + cross.numpy()
    self.n += int(rows)

  def result(self):
    return self.cross / float(self.n)


def compute_stats(inner, xs, w0=None, stats_dtype="float32", xs_original=None):
  """`LayerStats` of one layer from an iterable of input batches (test/debug helper).

  Args:
    inner: a supported layer.
    xs: iterable of the layer's input batches (the pruned network's in cascade mode).
    w0: `[B, d, m]` original kernel (default: the layer's kernel).
    stats_dtype: `float32` (float64 cross-batch sums) or `float64`.
    xs_original: iterable of the original network's inputs to the layer (cascade).
  """
  if w0 is None:
    w0 = kernel_to_problems(inner, keras.ops.convert_to_numpy(inner.kernel))
  acc = _Accumulator(inner, w0, stats_dtype)
  if xs_original is None:
    for x in xs:
      acc.add(x)
  else:
    for x, xo in zip(xs, xs_original):
      acc.add(x, xo)
  return acc.result()


# ---------------------------------------------------------------------- calibration
def _input_spec(model):
  try:
    inputs = model.inputs
  except (AttributeError, ValueError):
    inputs = None
  if not inputs:
    raise ValueError(f"Model {model.name!r} has no symbolic inputs: layer-wise pruning "
                     f"needs a Sequential model with an Input shape or a Functional model.")
  if len(inputs) != 1:
    raise ValueError(f"Model {model.name!r} has {len(inputs)} inputs; layer-wise pruning "
                     f"supports single-input models.")
  return inputs[0]


def calibration_batches(data, model, batch_size=256, max_samples=None):
  """Yields float input batches from arrays, `(x, y)` tuples or a `tf.data.Dataset`.

  Labels are ignored. Unbatched datasets are batched. At most `max_samples` samples.

  Raises:
    ValueError: the data do not match the model's input shape or are not numeric
      (naming the model's input layer and the expected shape).
  """
  spec = _input_spec(model)
  expected = tuple(spec.shape[1:])
  where = f"model {model.name!r} input {spec.name!r}"
  if isinstance(data, (tuple, list)) and data and not np.isscalar(data[0]):
    data = data[0]
  if isinstance(data, tf.data.Dataset):
    element = data.element_spec
    if isinstance(element, (tuple, list)):
      data = data.map(lambda *e: e[0])
      element = element[0]
    if isinstance(element, dict):
      raise ValueError(f"Calibration dataset yields a dict; {where} expects a tensor of "
                       f"shape (batch,) + {expected}.")
    if element.shape.rank == len(expected):
      data = data.batch(batch_size)
    source = (b for b in data)
  else:
    arr = np.asarray(data)
    source = (arr[i:i + batch_size] for i in range(0, len(arr), batch_size))
  seen = 0
  for batch in source:
    batch = tf.convert_to_tensor(batch)
    if not (batch.dtype.is_floating or batch.dtype.is_integer):
      raise ValueError(f"Calibration data for {where} must be numeric, got dtype "
                       f"{batch.dtype.name}.")
    shape = tuple(batch.shape[1:])
    if len(shape) != len(expected) or any(
        e is not None and s != e for s, e in zip(shape, expected)):
      raise ValueError(f"Calibration batch of shape {tuple(batch.shape)} does not fit "
                       f"{where}: expected (batch,) + {expected}.")
    if batch.dtype != tf.float32:
      batch = tf.cast(batch, tf.float32)
    if max_samples is not None:
      batch = batch[:max_samples - seen]
    if batch.shape[0] == 0:
      break
    seen += int(batch.shape[0])
    yield batch
    if max_samples is not None and seen >= max_samples:
      break
  if seen == 0:
    raise ValueError(f"Calibration data for {where} is empty.")


def _extractor(model, layers):
  """Sub-model from the model input to the inputs of `layers`."""
  spec = _input_spec(model)
  outputs = []
  for layer in layers:
    try:
      outputs.append(layer.input)
    except (AttributeError, ValueError) as e:
      raise ValueError(f"Layer {layer.name!r} is called more than once or is not "
                       f"connected; layer-wise pruning needs its single input.") from e
  return keras.Model(spec, outputs)


# ------------------------------------------------------------------------- problems
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
                           accelerate=True, min_iter=0, monotone=False):
  """FISTA-style proximal gradient with restart on `F(W) + penalty(W)` (both solvers).

  `F(W) = 1/2 tr(W^T G W) - tr(W^T C)` on `[B, d, m]` problems; one matmul per
  iteration (`G v` by linearity). Every iteration extrapolates, takes the gradient step
  `z = v - (G v - C) / L` and the solver's proximal step `prox(z, w)` (`w`: the current
  iterate, for reweighting); when the objective rises the momentum restarts, and with
  `monotone` the plain (unextrapolated) step is taken instead. Stops when
  `||W_{k+1} - W_k|| <= eta * max(1, ||W_k||)` after at least `min_iter` iterations.

  Returns:
    `(w, iterations)`.
  """
  eta = tf.cast(eta, gram.dtype)
  one = tf.constant(1.0, gram.dtype)

  def objective(w, gw):
    return 0.5 * tf.reduce_sum(w * gw) - tf.reduce_sum(w * cross) + penalty(w)

  gw0 = tf.matmul(gram, w_init)
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
    gw_new = tf.matmul(gram, w_new)
    phi_new = objective(w_new, gw_new)
    worse = phi_new > phi
    if monotone:

      def plain():
        wp = prox(w - (gw - cross) / lipschitz, w)
        gwp = tf.matmul(gram, wp)
        return wp, gwp, objective(wp, gwp)

      w_new, gw_new, phi_new = tf.cond(worse, plain, lambda: (w_new, gw_new, phi_new))
    t_next = tf.where(worse, one, t_next)
    done = tf.logical_and(tf.norm(w_new - w) <= eta * tf.maximum(1.0, tf.norm(w)),
                          i + 1 >= min_iter)
    return i + 1, w_new, w, gw_new, gw, t_next, phi_new, done

  i, w, *_ = tf.while_loop(cond, body, state)
  return w, i


def relative_error(stats, w, bias, cross=None):
  """`||X W + b - Y|| / ||Y||` from the statistics alone (`w` is `[B, d, m]`)."""
  cross = stats.cross if cross is None else cross
  w = np.asarray(w, np.float64)
  quad = np.einsum("bdm,bdm->", w, np.matmul(stats.gram, w))
  err2 = quad - 2.0 * np.einsum("bdm,bdm->", w, cross) + stats.y_sq
  y2 = stats.y_sq + 2.0 * float(np.sum(bias * stats.y_colsum)) + float(np.sum(bias ** 2))
  return math.sqrt(max(err2, 0.0) / max(y2, 1e-300))


def refit(gram, cross, support, ridge=1e-8, max_entries=1 << 22):
  """Least-squares refit on a support: per column `G_SS w_S = C_S`, zeros elsewhere.

  All columns of all problems are solved as batches of padded Cholesky systems of size
  `max |S_j|`, chunked so that a chunk holds about `max_entries` matrix entries.

  Args:
    gram: `[B, d, d]` float64.
    cross: `[B, d, m]` float64.
    support: `[B, d, m]` boolean.
    ridge: relative ridge, `ridge * mean(diag G)` is added to each `G_SS`; raised 1000x
      (up to 1e-2) while a system is numerically singular.
    max_entries: chunk size bound.

  Returns:
    `(w, ridge_used)`: `w` float64 `[B, d, m]`, zero outside the support.
  """
  gram = np.asarray(gram, np.float64)
  cross = np.asarray(cross, np.float64)
  support = np.asarray(support, bool)
  nb, d, m = cross.shape
  out = np.zeros_like(cross)
  counts = support.sum(axis=1)  # [B, m]
  systems = [(b, j) for b in range(nb) for j in range(m) if counts[b, j] > 0]
  if not systems:
    return out, ridge
  scale = float(np.mean(np.diagonal(gram, axis1=1, axis2=2))) or 1.0
  kmax = int(counts.max())
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
    sub = gram[bs[:, None, None], idx[:, :, None], idx[:, None, :]]
    both = valid[:, :, None] & valid[:, None, :]
    eye = np.eye(kmax)[None]
    sub = np.where(both, sub, eye)
    rhs = np.where(valid, cross[bs[:, None], idx, js[:, None]], 0.0)[..., None]
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
        break
      r = min(max(r, 1e-10) * 1000.0, 1e-2)
    ridge_used = max(ridge_used, r)
    sol = np.where(valid, sol, 0.0)
    for s, (b, j) in enumerate(part):
      c = counts[b, j]
      out[b, idx[s, :c], j] = sol[s, :c]
  return out, ridge_used


# -------------------------------------------------------------------------- solvers
class LayerSolver:
  """What a layer-wise method supplies to `prune_layerwise`.

  `solve(problem, k)` returns `(w, info)`: `w` `[B, d_live, m]` (scaled units, at least
  `k` nonzeros where possible) and a dict with at least `iterations` (and optionally
  `solves`, `lambda`). `allocate(problems, k_total)` returns per-layer keep counts for
  the global allocation. The engine then keeps the top `k` of `support_scores` (nonzero
  entries first, by magnitude) and refits.
  """

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
    sizes = [int(s.shape[0]) for s in scores]
    keep = topk_mask(tf.concat(scores, 0), k_total)
    return [int(tf.reduce_sum(part)) for part in tf.split(keep, sizes)]


def support_scores(problem, w):
  """Ranking for the final support: nonzeros of `w` first (by |w|), then zeros by the
  magnitude of a gradient step `|w - grad F~(w) / L|`."""
  z = w - (tf.matmul(problem.gram, w) - problem.cross) / problem.lipschitz
  big = 1.0 + tf.reduce_max(tf.abs(z))
  return tf.where(tf.not_equal(w, 0.0), tf.abs(w) + big, tf.abs(z))


def _make_problem(name, stats, w0, min_ratio=1e-12, few_sample_ridge=1e-3):
  """Scales, drops dead rows and regularises a layer's statistics."""
  diag = np.diagonal(stats.gram, axis1=1, axis2=2)  # [B, d]
  live = np.any(diag > min_ratio * max(float(diag.max()), 1e-300), axis=0)
  if not live.any():
    raise ValueError(f"Layer {name!r}: every input is zero on the calibration data.")
  notes = []
  gram = stats.gram[:, live][:, :, live].copy()
  cross = stats.cross[:, live]
  d_live = int(live.sum())
  ridge = 0.0
  if stats.n < d_live:
    ridge = few_sample_ridge * float(np.mean(np.diagonal(gram, axis1=1, axis2=2)))
    gram += ridge * np.eye(d_live)[None]
    notes.append(f"{stats.n} rows < {d_live} inputs: ridge G += {few_sample_ridge:g}*mean(diag G)*I")
    warnings.warn(f"Layer {name!r}: only {stats.n} calibration rows for {d_live} live "
                  f"inputs; G is rank-deficient, regularised with a ridge of "
                  f"{few_sample_ridge:g} * mean(diag G). Use more calibration samples.")
  w0l = np.asarray(w0, np.float64)[:, live]
  scale = float(np.sqrt(np.mean(w0l ** 2))) or 1.0
  energy = max(stats.y_sq, 1e-30)
  g = tf.constant(gram * (scale ** 2 / energy), tf.float32)
  problem = LayerProblem(
      name=name, gram=g, cross=tf.constant(cross * (scale / energy), tf.float32),
      w0=tf.constant(w0l / scale, tf.float32),
      lipschitz=tf.reshape(power_iteration(g), [-1, 1, 1]), size=int(np.size(w0)),
      live=live, scale=scale, energy=energy)
  return problem, ridge, notes


# ---------------------------------------------------------------------------- engine
@dataclasses.dataclass
class _Entry:
  layer: L.Layer  # in the model being pruned (maybe a wrapper)
  original: L.Layer  # same layer in the frozen original copy
  inner: L.Layer
  kernel_shape: tuple
  w0: np.ndarray  # [B, d, m]
  bias: np.ndarray  # [B, m]


def _clone(model):
  clone = keras.models.clone_model(model)
  clone.set_weights(model.get_weights())
  return clone


def _set_layer(entry, w_kernel, mask):
  inner = entry.inner
  inner.kernel.assign(w_kernel.astype(keras.backend.standardize_dtype(inner.kernel.dtype)))
  layer = entry.layer
  if layer is not inner and hasattr(layer, "set_masks"):
    weights = layer.prunable_weights
    masks = [mask if w is inner.kernel or w.path == inner.kernel.path
             else np.ones(w.shape) for w in weights]
    layer.set_masks(masks)


def _format_row(r):
  return (f"{r['layer']:<22} {r['shape']:>14} sparsity {r['sparsity']:.4f} "
          f"err {r['err_before_refit']:.4f} -> {r['err_after_refit']:.4f} "
          f"it {r['iterations']:>5} solves {r['solves']:>3} "
          f"{r['seconds']:.2f}s (stats {r['stats_seconds']:.2f}s)")


def format_table(rows):
  """The per-layer report as a Markdown table."""
  head = ("| layer | kernel | d live | rows n | sparsity | rel. err before refit | "
          "after refit | iterations | solves | solve s | stats s | notes |")
  lines = [head, "|" + "---|" * 12]
  for r in rows:
    lines.append(
        f"| {r['layer']} | {r['shape']} | {r['d_live']} | {r['n']} | {r['sparsity']:.4f} | "
        f"{r['err_before_refit']:.4f} | {r['err_after_refit']:.4f} | {r['iterations']} | "
        f"{r['solves']} | {r['seconds']:.2f} | {r['stats_seconds']:.2f} | "
        f"{'; '.join(r['notes'])} |")
  return "\n".join(lines)


def _targets(entries, sparsity):
  if isinstance(sparsity, dict):
    unknown = set(sparsity) - {e.inner.name for e in entries} - {e.layer.name for e in entries}
    if unknown:
      raise ValueError(f"sparsity names unknown layers {sorted(unknown)}; prunable layers "
                       f"are {[e.inner.name for e in entries]}.")
    out = []
    for e in entries:
      s = sparsity.get(e.inner.name, sparsity.get(e.layer.name, 0.0))
      out.append(masks_lib.validate_sparsity(s, f"sparsity[{e.inner.name!r}]"))
    return out
  s = masks_lib.validate_sparsity(sparsity)
  return [s] * len(entries)


def prune_layerwise(model, calibration_data, solver, sparsity=0.9, allocation="layer",
                    mode="cascade", layers=None, batch_size=256, max_samples=None,
                    relu_model=False, relu_passes=2, stats_dtype="float32",
                    refit_ridge=1e-8, verbose=True, strategy=None):
  """Prunes `model` IN PLACE layer by layer; returns the per-layer report.

  Args:
    model: a trained Keras model (Sequential with an Input shape, or Functional), plain or
      wrapped by `tfprune.prune` (then kernels AND masks are set).
    calibration_data: unlabelled inputs: an array, `(x, y)` tuple or `tf.data.Dataset`.
    solver: a `LayerSolver`.
    sparsity: fraction of zeros, a float or `{layer_name: float}`.
    allocation: `layer` (every layer at `sparsity`) or `global` (`sparsity` over all the
      pruned layers; the solver's `allocate` splits it).
    mode: `cascade` or `parallel` (see module docstring).
    layers: names of the layers to prune (default: every supported layer).
    batch_size: calibration batch size for arrays / unbatched datasets.
    max_samples: use at most this many calibration samples.
    relu_model: `False`, `True` or `"auto"` (layers whose activation is ReLU). Fit only
      where the original pre-activation is positive and push the others to stay <= 0,
      by `relu_passes` majorise-minimise passes (see `_relu_refine`).
    relu_passes: MM passes for the ReLU model (each streams the calibration data once).
    stats_dtype: `float32` (per-batch products in float32, float64 sums) or `float64`.
    refit_ridge: relative ridge of the refit systems.
    verbose: print one progress line per layer.
    strategy: optional `tf.distribute` strategy: G and C are accumulated per replica on
      its shard of the calibration data and all-reduced (`tfprune.distribute.layer_stats`;
      the ReLU-model passes stay on one device).

  Returns:
    A list of dicts, one per pruned layer (see `format_table`).

  Raises:
    ValueError: bad arguments or calibration data, naming the layer / value at fault.
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
  if allocation not in ALLOCATIONS:
    raise ValueError(f"allocation must be one of {ALLOCATIONS}, got {allocation!r}.")
  if stats_dtype not in STATS_DTYPES:
    raise ValueError(f"stats_dtype must be one of {STATS_DTYPES}, got {stats_dtype!r}.")
  if relu_model not in (True, False, "auto"):
    raise ValueError(f"relu_model must be True, False or 'auto', got {relu_model!r}.")
  if int(relu_passes) < 1:
    raise ValueError(f"relu_passes must be >= 1, got {relu_passes!r}.")
  original = _clone(model)
  chosen = supported_layers(model)
  if layers is not None:
    names = {l.name: l for l in model.layers}
    names.update({inner_layer(l).name: l for l in model.layers})
    missing = [n for n in layers if n not in names]
    bad = [n for n in layers if n in names and not is_supported(names[n])]
    if missing or bad:
      raise ValueError(f"Cannot prune layers {missing + bad} layer-wise; supported layers "
                       f"in this model: {[l.name for l in chosen]} (types "
                       f"{', '.join(SUPPORTED_LAYERS)}).")
    wanted = {names[n].name for n in layers}
    chosen = [l for l in chosen if l.name in wanted]
  if not chosen:
    raise ValueError(f"Model {model.name!r} has no layer the layer-wise engine can prune "
                     f"({', '.join(SUPPORTED_LAYERS)}).")
  index = {id(l): i for i, l in enumerate(model.layers)}
  entries = []
  for layer in chosen:
    inner = inner_layer(layer)
    kernel = keras.ops.convert_to_numpy(inner.kernel)
    w0 = kernel_to_problems(inner, kernel).astype(np.float64)
    entries.append(_Entry(layer, original.layers[index[id(layer)]], inner, kernel.shape,
                          w0, _bias_problems(inner, w0.shape[::2])))
  targets = _targets(entries, sparsity)
  batches = lambda: calibration_batches(calibration_data, model, batch_size, max_samples)

  def relu_on(entry):
    if relu_model == "auto":
      return getattr(entry.inner, "activation", None) is keras.activations.relu
    return bool(relu_model)

  stats_time = {}

  if strategy is not None:
    from tfprune import distribute  # pylint: disable=g-import-not-at-top
    dataset = distribute.calibration_dataset(calibration_data, batch_size, max_samples)
    cascade = lambda entry, *unused: _distributed_stats(entry, original, model, strategy,
                                                        dataset, stats_dtype, stats_time)
  else:
    cascade = _cascade_stats

  def parallel_stats():
    t0 = time.perf_counter()
    if strategy is not None:
      out = distribute.layer_stats(strategy, original, [e.original for e in entries],
                                   dataset, stats_dtype, w0=[e.w0 for e in entries])
      for e in entries:
        stats_time[e.layer.name] = (time.perf_counter() - t0) / len(entries)
      return out
    ext = _extractor(original, [e.original for e in entries])
    accs = [_Accumulator(e.inner, e.w0, stats_dtype) for e in entries]
    for x in batches():
      outs = ext(x)
      outs = outs if isinstance(outs, (list, tuple)) else [outs]
      for acc, o in zip(accs, outs):
        acc.add(o)
    dt = (time.perf_counter() - t0) / len(entries)
    for e in entries:
      stats_time[e.layer.name] = dt
    return [a.result() for a in accs]

  global_keep = {}
  all_stats = parallel_stats() if (mode == "parallel" or allocation == "global") else None
  if allocation == "global":
    problems = [_make_problem(e.inner.name, s, e.w0)[0] for e, s in zip(entries, all_stats)]
    total = sum(p.size for p in problems)
    k_total = int(masks_lib.keep_count(total, targets[0]))
    ks = solver.allocate(problems, k_total)
    targets = [1.0 - k / p.size for k, p in zip(ks, problems)]
    global_keep = dict(zip([e.inner.name for e in entries], ks))
    if verbose:
      alloc = ", ".join(f"{e.inner.name}={t:.3f}" for e, t in zip(entries, targets))
      _log(f"global allocation of sparsity {sparsity}: {alloc}")

  rows = []
  for i, (entry, target) in enumerate(zip(entries, targets)):
    name = entry.inner.name
    if mode == "parallel" or i == 0:
      stats = all_stats[i] if all_stats is not None else cascade(
          entry, original, model, batches, stats_dtype, stats_time)
    else:
      stats = cascade(entry, original, model, batches, stats_dtype, stats_time)
    t0 = time.perf_counter()
    problem, ridge, notes = _make_problem(name, stats, entry.w0)
    k = global_keep.get(name, int(masks_lib.keep_count(problem.size, target)))
    k_live = min(k, int(problem.live.sum()) * entry.w0.shape[0] * entry.w0.shape[2])
    w, info = solver.solve(problem, k_live)
    scores = support_scores(problem, tf.convert_to_tensor(w, tf.float32))
    keep = topk_mask(scores, k_live).numpy().astype(bool)
    full_support = np.zeros(entry.w0.shape, bool)
    full_support[:, problem.live] = keep
    w_full = np.zeros(entry.w0.shape)
    w_full[:, problem.live] = np.asarray(w, np.float64) * problem.scale
    err_before = relative_error(stats, w_full * full_support, entry.bias)
    gram = stats.gram + (ridge * np.eye(stats.gram.shape[1])[None] if ridge else 0.0)
    w_refit, used = refit(gram, stats.cross, full_support, refit_ridge)
    if used > refit_ridge:
      notes.append(f"singular G_SS: refit ridge raised to {used:g}*mean(diag G)")
    if relu_on(entry):
      w_refit, full_support = _relu_refine(entry, original, model, batches, mode, i, gram,
                                           w_refit, full_support, solver, problem, k_live,
                                           relu_passes, refit_ridge)
      notes.append(f"ReLU model ({relu_passes} MM passes)")
    err_after = relative_error(stats, w_refit, entry.bias)
    kernel = problems_to_kernel(entry.inner, w_refit, entry.kernel_shape)
    mask = problems_to_kernel(entry.inner, full_support, entry.kernel_shape).astype(np.float32)
    _set_layer(entry, kernel * mask, mask)
    seconds = time.perf_counter() - t0
    row = {"layer": name, "shape": "x".join(map(str, entry.kernel_shape)),
           "d_live": int(problem.live.sum()), "n": stats.n,
           "sparsity": 1.0 - float(mask.sum()) / mask.size,
           "target_sparsity": target, "err_before_refit": err_before,
           "err_after_refit": err_after, "iterations": int(info.get("iterations", 0)),
           "solves": int(info.get("solves", 1)), "lambda": info.get("lambda"),
           "seconds": seconds, "stats_seconds": stats_time.get(entry.layer.name, 0.0),
           "notes": notes}
    rows.append(row)
    if verbose:
      _log(_format_row(row))
  return rows


def _log(line):
  print(line, flush=True)


def _distributed_stats(entry, original, model, strategy, dataset, stats_dtype, stats_time):
  """Cascade-mode statistics of one layer, all-reduced over `strategy`'s replicas."""
  from tfprune import distribute  # pylint: disable=g-import-not-at-top
  t0 = time.perf_counter()
  (stats,) = distribute.layer_stats(strategy, model, [entry.layer], dataset, stats_dtype,
                                    w0=[entry.w0], original_model=original,
                                    original_layers=[entry.original])
  stats_time[entry.layer.name] = time.perf_counter() - t0
  return stats


def _cascade_stats(entry, original, model, batches, stats_dtype, stats_time):
  t0 = time.perf_counter()
  ext_p = _extractor(model, [entry.layer])
  ext_o = _extractor(original, [entry.original])
  acc = _Accumulator(entry.inner, entry.w0, stats_dtype)
  for x in batches():
    acc.add(ext_p(x), ext_o(x))
  stats_time[entry.layer.name] = time.perf_counter() - t0
  return acc.result()


def _relu_refine(entry, original, model, batches, mode, position, gram, w, support,
                 solver, problem, k, passes, refit_ridge):
  """ReLU model by majorise-minimise on the exact piecewise objective.

  Objective (Phan et al.; Net-Trim): sum over rows/columns where the original
  pre-activation `y > 0` of `(z - y)^2`, plus `max(z, 0)^2` where `y <= 0`
  (`z = x w + b`). At the current `w_k`, `max(z, 0)^2 <= (z - min(z_k, 0))^2` with
  equality at `w_k`, so each pass minimises the ordinary least squares with target
  `T = where(y > 0, y, min(z_k, 0))` - same `G`, new `C`, streamed in one data pass -
  and the objective never increases. Each pass re-runs the solver's support step when
  it has `resolve` (l0: IHT warm-started at `w_k`), then refits.
  """
  ext_p = _extractor(model, [entry.layer])
  ext_o = None if (mode == "parallel" or position == 0) else _extractor(
      original, [entry.original])
  if mode == "parallel":
    ext_p = _extractor(original, [entry.original])
  for _ in range(passes):
    acc = _ReluCross(entry.inner, entry.w0, entry.bias, w)
    for x in batches():
      acc.add(ext_p(x), None if ext_o is None else ext_o(x))
    cross = acc.result()
    if hasattr(solver, "resolve"):
      live = problem.live
      scaled = dataclasses.replace(
          problem, cross=tf.constant(cross[:, live] * (problem.scale / problem.energy),
                                     tf.float32))
      w_new = solver.resolve(scaled, k, tf.constant(w[:, live] / problem.scale, tf.float32))
      keep = topk_mask(support_scores(scaled, w_new), k).numpy().astype(bool)
      support = np.zeros_like(support)
      support[:, live] = keep
    w, _ = refit(gram, cross, support, refit_ridge)
  return w, support
