"""PQ Index: how sparse (how compressible) is a weight vector?

Diao et al., "Pruning Deep Neural Networks from a Sparsity Perspective", ICLR 2023:
`I_pq(w) = 1 - d ** (1/q - 1/p) * ||w||_p / ||w||_q` for `0 < p < q`; 0 for a flat vector,
`1 - d ** (1/q - 1/p)` (its maximum) for a 1-sparse one; larger = sparser.
Gap filled here: the all-zero vector (0/0 in the formula) is given the maximum value, the
limit of ever sparser vectors; the empty vector gets 0. Computed in float64 after scaling
by max |w| (the index is scale-invariant), so tiny tensors neither underflow nor NaN.
"""
import tensorflow as tf


def _check_pq(p, q):
  if not 0 < float(p) < float(q):
    raise ValueError(f"PQ index needs 0 < p < q (defaults p=0.5, q=1.0), got p={p!r}, "
                     f"q={q!r}.")


def pq_index(w, p=0.5, q=1.0, mask=None):
  """PQ Index of the entries of `w` (all of them, or those where `mask` is nonzero).

  Args:
    w: a tensor of any shape (flattened).
    p, q: the norms, `0 < p < q`.
    mask: optional tensor of `w`'s shape; only entries with mask != 0 count (d is their
      number), e.g. the weights that survive pruning.

  Returns:
    A float32 scalar tensor in [0, 1).
  """
  _check_pq(p, q)
  a = tf.abs(tf.reshape(tf.cast(w, tf.float64), [-1]))
  if mask is not None:
    a = tf.boolean_mask(a, tf.reshape(tf.not_equal(mask, 0), [-1]))
  d = tf.cast(tf.size(a), tf.float64)
  exponent = 1.0 / q - 1.0 / p
  amax = tf.reduce_max(tf.concat([a, tf.zeros([1], tf.float64)], 0))
  scaled = a / tf.where(amax > 0, amax, tf.ones_like(amax))
  norm_p = tf.pow(tf.reduce_sum(tf.pow(scaled, p)), 1.0 / p)
  norm_q = tf.pow(tf.reduce_sum(tf.pow(scaled, q)), 1.0 / q)
  ratio = tf.where(amax > 0, norm_p / tf.where(norm_q > 0, norm_q, 1.0), 1.0)
  value = 1.0 - tf.pow(tf.maximum(d, 1.0), exponent) * ratio
  value = tf.where(d > 0, value, tf.zeros_like(value))
  return tf.cast(value, tf.float32)
