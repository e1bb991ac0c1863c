"""THE top-k of tfprune: exact top-k masks, by radix select on the float32 bit patterns.

Public functions, one per need: `topk_mask` (one tensor: per-layer masks, the solvers'
support, IHT's hard threshold), `global_topk_masks` (one threshold over many tensors)
and `kth_largest` (the threshold value itself).

`tf.math.top_k` with a large `k` (keep 10% of 10M weights: k = 1M) sorts on CPU and
costs seconds. Pruning only needs the SET of the k largest scores, i.e. the exact k-th
largest value plus a deterministic rule for ties, and that needs no sort:

  * For non-negative float32 values the int32 bit pattern is monotone (`a < b` iff
    `bits(a) < bits(b)`), so the k-th largest value is found digit by digit on the bits
    (radix select): one 32768-bin histogram of the high 15 bits (`bits >> 16`) over all
    N entries locates the bucket holding the k-th largest; one more histogram of the low
    16 bits over the few entries of that bucket gives the exact threshold `t`. Both
    histograms are `Bincount` ops (one pass over N, multithreaded).
  * Masks are then `bits > t` plus the first `room = k - count(bits > t)` entries equal
    to `t`, in flat order (over the tensors in list order for a global threshold): the
    same exact-k, lower-index-first tie rule as a stable `tf.math.top_k`. The positions
    of the ties come for free from the second pass (they are in the threshold's bucket),
    so the mask is one `bits >= t` pass plus a tiny scatter that drops the excess ties.

Cost: ~6 elementwise passes over N and no sort. The tensors of a global threshold are
concatenated into one flat vector first (`concat_flat`, one copy), so a model with
hundreds of small kernels traces ONE short op chain, not one per tensor; the global
threshold of a model costs about as much as reading its weights a few times. See
bench/RESULTS_distribute.md.

Scores must be non-negative (e.g. `|W|`); negative entries, -0.0 and denormals (below
2**-126, which TensorFlow's CPU kernels flush to zero) count as 0.
float16 / bfloat16 scores are converted to float32 exactly; float64 scores (which the
bit trick does not cover) go through a sorted `tf.math.top_k` with the same tie rule.
"""
import tensorflow as tf

_SHIFT = 16
_HI_BINS = 1 << 15  # bits >> 16 of a non-negative int32 lies in [0, 32767]
_LO_BINS = 1 << 16
_LO_MASK = _LO_BINS - 1
_MIN_NORMAL_BITS = 0x00800000  # bits of the smallest normal float32, 2**-126
SUPPORTED_DTYPES = (tf.float32, tf.float16, tf.bfloat16)
# For this module's and tfprune.masks' public functions: TensorFlow ops whose Python
# control flow only reads static values, so AutoGraph (which converts every function a
# `tf.function` calls) would only add trace time (seconds on models of many layers).
plain_ops = tf.autograph.experimental.do_not_convert


def supports(dtype):
  """True if radix select handles scores of `dtype` exactly (float32/16, bfloat16)."""
  return tf.as_dtype(dtype) in SUPPORTED_DTYPES


def _bincount(values, size):
  """Counts of each value in [0, size) as int64 (raw op: no extra reduction passes)."""
  return tf.raw_ops.Bincount(arr=values, size=size, weights=tf.zeros([0], tf.int64))


def _keys(scores):
  """Flat int32 keys, monotone in the (non-negative) score; see `_MIN_NORMAL_BITS`."""
  flat = tf.reshape(scores, [-1])
  if not supports(flat.dtype):
    raise ValueError(f"Radix top-k supports {[d.name for d in SUPPORTED_DTYPES]} scores, "
                     f"got {flat.dtype.name}.")
  if flat.dtype != tf.float32:
    flat = tf.cast(flat, tf.float32)
  bits = tf.bitcast(flat, tf.int32)
  # Negatives, -0.0 and denormals count as 0: TensorFlow's CPU kernels (top_k included)
  # flush denormals to zero, so they compare equal to 0 there as well.
  return tf.where(bits < _MIN_NORMAL_BITS, tf.zeros_like(bits), bits)


@plain_ops
def concat_flat(scores):
  """The flattened `scores` as ONE vector (float32, float64 if any is float64) + sizes.

  Returns:
    `(flat, sizes)`: sizes are Python ints where every shape is static (else int
    tensors), ready for `tf.split(mask, sizes)`.
  """
  scores = [tf.convert_to_tensor(s) for s in scores]
  dtype = tf.float32 if all(supports(s.dtype) for s in scores) else tf.float64
  flats = [tf.reshape(s, [-1]) for s in scores]
  flats = [f if f.dtype == dtype else tf.cast(f, dtype) for f in flats]
  sizes = [s.shape.num_elements() for s in scores]
  if any(n is None for n in sizes):
    sizes = [tf.size(f) for f in flats]
  flat = flats[0] if len(flats) == 1 else tf.concat(flats, 0)
  return flat, sizes


def _select(keys, k):
  """Radix select: the key of the k-th largest entry of the flat `keys` (1 <= k <= N).

  Returns:
    (threshold key t, number of entries > t, int64 flat positions of the entries equal
    to `t`, in increasing order).
  """
  his = tf.bitwise.right_shift(keys, _SHIFT)
  hist = _bincount(his, _HI_BINS)
  at_least = tf.cumsum(hist, reverse=True)  # at_least[d] = #entries with digit >= d
  d1 = tf.reduce_sum(tf.cast(at_least >= k, tf.int32)) - 1
  above_bucket = at_least[d1] - hist[d1]
  # The few entries of the threshold's bucket, with their positions.
  positions = tf.where(tf.equal(his, d1))[:, 0]
  candidates = tf.gather(keys, positions)
  hist2 = _bincount(tf.bitwise.bitwise_and(candidates, _LO_MASK), _LO_BINS)
  at_least2 = tf.cumsum(hist2, reverse=True)
  d2 = tf.reduce_sum(tf.cast(at_least2 >= k - above_bucket, tf.int32)) - 1
  t = tf.bitwise.bitwise_or(tf.bitwise.left_shift(d1, _SHIFT), d2)
  ties = tf.boolean_mask(positions, tf.equal(candidates, t))
  return t, above_bucket + at_least2[d2] - hist2[d2], ties


@plain_ops
def flat_topk_mask(flat, k):
  """Boolean mask of the flat vector `flat` keeping exactly its `k` largest entries.

  THE exact top-k (ties keep the lower index; `k` clipped to [0, N]); float32 / float16 /
  bfloat16 by radix select, other dtypes by a sorted `tf.math.top_k`. One op chain
  whatever the number of tensors concatenated into `flat` (`concat_flat`).
  """
  flat = tf.reshape(tf.convert_to_tensor(flat), [-1])
  if not supports(flat.dtype):
    return tf.cast(_sorted_topk_mask(flat, k), tf.bool)
  keys = _keys(flat)
  total = tf.size(keys, out_type=tf.int64)
  k = tf.clip_by_value(tf.cast(k, tf.int64), 0, total)

  def select():
    t, n_above, ties = _select(keys, k)
    # `key >= t`, minus the ties after the first `k - n_above` (flat order).
    dropped = ties[k - n_above:]
    return tf.tensor_scatter_nd_update(keys >= t, dropped[:, None],
                                       tf.zeros_like(dropped, tf.bool))

  def trivial():
    return tf.fill(tf.shape(keys), k > 0)

  return tf.cond(tf.logical_and(k > 0, k < total), select, trivial)


@plain_ops
def split_like(flat, sizes, scores):
  """Splits a flat vector (`concat_flat` order) back into tensors shaped and typed like
  `scores`."""
  parts = [flat] if len(scores) == 1 else tf.split(flat, sizes)
  return [tf.reshape(tf.cast(p, s.dtype), tf.shape(s)) for p, s in zip(parts, scores)]


@plain_ops
def global_topk_masks(scores, k):
  """0/1 masks keeping exactly the `k` largest entries over ALL the tensors of `scores`.

  The flattened tensors are concatenated into one vector (`concat_flat`), its top `k`
  kept with ties to the lower flat index (so the earlier tensor wins a tie) by ONE
  radix select (`flat_topk_mask`), and the mask split back.

  Args:
    scores: list of non-negative float tensors (any shapes); float32 / float16 /
      bfloat16 use radix select, other dtypes (float64) one sorted top-k.
    k: number of entries to keep (int or int scalar tensor); clipped to [0, N].

  Returns:
    A list of masks with the shapes and dtypes of `scores`.
  """
  scores = [tf.convert_to_tensor(s) for s in scores]
  if not scores:
    return []
  flat, sizes = concat_flat(scores)
  return split_like(flat_topk_mask(flat, k), sizes, scores)


@plain_ops
def topk_mask(scores, k):
  """0/1 mask of `scores`' shape keeping exactly its `k` largest entries.

  THE per-tensor top-k of tfprune (masks, solvers, IHT's hard threshold): ties keep the
  lower flat index; `k` is clipped to [0, size]. float32 / float16 / bfloat16 scores use
  radix select (no sort; negatives count as 0), other dtypes `tf.math.top_k`.
  """
  scores = tf.convert_to_tensor(scores)
  if not supports(scores.dtype):
    return _sorted_topk_mask(scores, k)
  return global_topk_masks([scores], k)[0]


def _sorted_topk_mask(scores, k):
  """`tf.math.top_k` (a stable sort: ties keep the lower index), for any real dtype."""
  flat = tf.reshape(scores, [-1])
  k = tf.clip_by_value(tf.cast(k, tf.int32), 0, tf.size(flat))
  _, idx = tf.math.top_k(flat, k=k, sorted=False)
  mask = tf.scatter_nd(idx[:, None], tf.ones_like(idx, dtype=scores.dtype), tf.shape(flat))
  return tf.reshape(mask, tf.shape(scores))


@plain_ops
def kth_largest(scores, k):
  """The exact k-th largest value over all the tensors of `scores` (1 <= k <= N).

  Args:
    scores: list of non-negative float32 / float16 / bfloat16 tensors.
    k: int or int scalar tensor in [1, N].

  Returns:
    A float32 scalar: the global magnitude threshold (entries above it are all kept).
  """
  flat, _ = concat_flat(scores)
  t, _, _ = _select(_keys(flat), tf.cast(k, tf.int64))
  return tf.bitcast(t, tf.float32)
