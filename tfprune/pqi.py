"""PQ Index: how sparse (how compressible) is a weight vector, a neuron, a layer, a model?

Diao et al., "Pruning Deep Neural Networks from a Sparsity Perspective", ICLR 2023
(docs/algorithms.md section 5):

    I_pq(w) = 1 - d ** (1/q - 1/p) * ||w||_p / ||w||_q,   0 < p < q,

0 for a flat vector, `1 - d ** (1/q - 1/p)` (its maximum) for a 1-sparse one; larger =
sparser. It is scale invariant and grows when small entries are removed. The paper's
bound on how many weights a vector needs (`retained_bound`) turns it into a pruning rule
(`tfprune.methods.sap`).

Scopes, all as TensorFlow ops on the effective weights `W * mask`, counting only the
unpruned entries (`d` = number of mask-ones):
  * `pq_index(w)`: one tensor (or any vector);
  * `pq_index_per_unit(w)`: one value per output unit (last axis: Dense neurons, conv
    filters), the paper's "neuron" scope;
  * model-level values (`tfprune.model_pq_index`, `tfprune.pq_index_report`) live in
    `tfprune.report`, which knows about models; this module is pure maths.

Gap filled here: the all-zero vector (0/0 in the formula) is given the maximum value, the
limit of ever sparser vectors; the empty vector (everything pruned) gets 0. Computed in
float64 after scaling by max |w| (the index is scale invariant), so tiny tensors neither
underflow nor give NaN.
"""
import numpy as np
import tensorflow as tf


def check_pq(p, q):
  """Raises ValueError unless 0 < p < q (the PQ Index is defined only then)."""
  try:
    ok = 0 < float(p) < float(q)
  except (TypeError, ValueError):
    ok = False
  if not ok:
    raise ValueError(f"PQ index needs 0 < p < q (defaults p=0.5, q=1.0), got p={p!r}, "
                     f"q={q!r}.")


def pq_columns(a, d, p, q):
  """PQ Index of every column of `a`.

  Args:
    a: float64 [n, units] of |w|, pruned entries already 0.
    d: float64 [units], the number of unpruned entries per column.
    p, q: the norms.

  Returns:
    float64 [units].
  """
  amax = tf.maximum(tf.reduce_max(tf.concat([a, tf.zeros_like(a[:1])], 0), axis=0), 0.0)
  nonzero = amax > 0
  scaled = a / tf.where(nonzero, amax, tf.ones_like(amax))[None, :]
  norm_p = tf.pow(tf.reduce_sum(tf.pow(scaled, p), axis=0), 1.0 / p)
  norm_q = tf.pow(tf.reduce_sum(tf.pow(scaled, q), axis=0), 1.0 / q)
  ratio = tf.where(nonzero, norm_p / tf.where(nonzero, norm_q, tf.ones_like(norm_q)),
                   tf.ones_like(norm_p))
  value = 1.0 - tf.pow(tf.maximum(d, 1.0), 1.0 / q - 1.0 / p) * ratio
  # Mathematically >= 0 (||w||_p >= d^(1/p - 1/q) ||w||_q is Hölder's inequality).
  return tf.where(d > 0, tf.clip_by_value(value, 0.0, 1.0), tf.zeros_like(value))


def _as_columns(w, mask, per_unit):
  """(|w| * mask as float64 [n, units], d [units]) for a tensor and an optional mask."""
  w = tf.cast(tf.convert_to_tensor(w), tf.float64)
  if mask is None:
    keep = tf.ones_like(w)
  else:
    mask = tf.convert_to_tensor(mask)
    keep = mask if mask.dtype == tf.bool else tf.not_equal(mask, tf.zeros_like(mask))
    keep = tf.cast(keep, tf.float64)
    keep = tf.broadcast_to(keep, tf.shape(w))
  if per_unit and w.shape.rank >= 2:
    units = tf.shape(w)[-1]
    a = tf.reshape(tf.abs(w) * keep, [-1, units])
    keep = tf.reshape(keep, [-1, units])
  else:
    a = tf.reshape(tf.abs(w) * keep, [-1, 1])
    keep = tf.reshape(keep, [-1, 1])
  return a, tf.reduce_sum(keep, axis=0)


def pq_index(w, p=0.5, q=1.0, mask=None):
  """PQ Index of the entries of `w` (all of them, or those where `mask` is nonzero).

  Args:
    w: a tensor (or array) of any shape, flattened.
    p, q: the norms, `0 < p < q`.
    mask: optional tensor of `w`'s shape; only entries with mask != 0 count (d is their
      number), e.g. the weights that survive pruning.

  Returns:
    A float32 scalar tensor in [0, 1).

  Raises:
    ValueError: unless 0 < p < q.
  """
  check_pq(p, q)
  a, d = _as_columns(w, mask, per_unit=False)
  return tf.cast(pq_columns(a, d, float(p), float(q))[0], tf.float32)


def pq_index_per_unit(w, p=0.5, q=1.0, mask=None):
  """PQ Index of each output unit of a kernel (the paper's "neuron" scope).

  A unit is a slice along the last axis: a column of a Dense kernel `[in, out]`, a
  filter of a conv kernel `[kh, kw, cin, cout]`. A rank-0/1 tensor is one unit.

  Args:
    w: the kernel.
    p, q: the norms, `0 < p < q`.
    mask: optional 0/1 mask of `w`'s shape (pruned entries do not count).

  Returns:
    A float32 tensor `[units]`.

  Raises:
    ValueError: unless 0 < p < q.
  """
  check_pq(p, q)
  a, d = _as_columns(w, mask, per_unit=True)
  return tf.cast(pq_columns(a, d, float(p), float(q)), tf.float32)


def retained_bound(d, index, p=0.5, q=1.0, eta_r=0.0):
  """The paper's lower bound on the weights a vector needs: `r`.

  `r = d * (1 + eta_r) ** (-q / (q - p)) * (1 - I) ** (q * p / (q - p))`.

  Args:
    d: number of remaining weights (scalar or tensor).
    index: their PQ Index `I` (same shape as `d`).
    p, q: the PQ Index's norms.
    eta_r: the tolerance `eta_r >= 0` (larger = smaller bound = more pruning).

  Returns:
    float64 tensor of `d`'s shape (not rounded).

  Raises:
    ValueError: unless 0 < p < q and eta_r > -1.
  """
  check_pq(p, q)
  if not float(eta_r) > -1.0:
    raise ValueError(f"eta_r must be > -1 (default 0), got {eta_r!r}.")
  p, q = float(p), float(q)
  d = tf.cast(d, tf.float64)
  index = tf.clip_by_value(tf.cast(index, tf.float64), 0.0, 1.0)
  return (d * (1.0 + float(eta_r)) ** (-q / (q - p)) *
          tf.pow(1.0 - index, q * p / (q - p)))
