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

Cost: ~6 elementwise passes over N and no sort; the tensors are never concatenated
(histograms of each tensor are summed), so the global threshold of a model costs about
as much as reading its weights a few times. See bench/RESULTS_distribute.md.

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


def _select(keys, his, k):
  """Radix select: the key of the k-th largest entry over all `keys` (1 <= k <= N).

  Returns:
    (threshold key t, number of entries > t, per-tensor int64 flat positions of the
    entries equal to `t`, in increasing order).
  """
  hist = tf.add_n([_bincount(h, _HI_BINS) for h in his])
  at_least = tf.cumsum(hist, reverse=True)  # at_least[d] = #entries with digit >= d
  d1 = tf.reduce_sum(tf.cast(at_least >= k, tf.int32)) - 1
  above_bucket = at_least[d1] - hist[d1]
  # The few entries of the threshold's bucket, with their positions.
  positions = [tf.where(tf.equal(h, d1))[:, 0] for h in his]
  candidates = [tf.gather(key, pos) for key, pos in zip(keys, positions)]
  hist2 = _bincount(tf.bitwise.bitwise_and(tf.concat(candidates, 0), _LO_MASK), _LO_BINS)
  at_least2 = tf.cumsum(hist2, reverse=True)
  d2 = tf.reduce_sum(tf.cast(at_least2 >= k - above_bucket, tf.int32)) - 1
  t = tf.bitwise.bitwise_or(tf.bitwise.left_shift(d1, _SHIFT), d2)
  ties = [tf.boolean_mask(pos, tf.equal(c, t)) for pos, c in zip(positions, candidates)]
  return t, above_bucket + at_least2[d2] - hist2[d2], ties


def _masks_from_threshold(keys, t, room, ties):
  """Boolean flat masks: `key >= t`, minus the ties after the first `room` (flat order)."""
  out, before = [], tf.constant(0, tf.int64)
  for key, tie_pos in zip(keys, ties):
    count = tf.size(tie_pos, out_type=tf.int64)
    keep = tf.clip_by_value(room - before, 0, count)
    dropped = tie_pos[keep:]
    mask = tf.tensor_scatter_nd_update(key >= t, dropped[:, None],
                                       tf.zeros_like(dropped, tf.bool))
    out.append(mask)
    before += count
  return out


def global_topk_masks(scores, k):
  """0/1 masks keeping exactly the `k` largest entries over ALL the tensors of `scores`.

  Equivalent to concatenating the flattened tensors, keeping the top `k` with ties to
  the lower flat index (so the earlier tensor wins a tie), and splitting back - without
  the concatenation or a sort.

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
  if not all(supports(s.dtype) for s in scores):
    return _concatenated_topk_masks(scores, k)
  keys = [_keys(s) for s in scores]
  total = tf.add_n([tf.size(key, out_type=tf.int64) for key in keys])
  k = tf.clip_by_value(tf.cast(k, tf.int64), 0, total)

  def select():
    his = [tf.bitwise.right_shift(key, _SHIFT) for key in keys]
    t, n_above, ties = _select(keys, his, k)
    return _masks_from_threshold(keys, t, k - n_above, ties)

  def trivial():
    return [tf.fill(tf.shape(key), k > 0) for key in keys]

  flat = tf.cond(tf.logical_and(k > 0, k < total), select, trivial)
  return [tf.reshape(tf.cast(m, s.dtype), tf.shape(s)) for m, s in zip(flat, scores)]


def _concatenated_topk_masks(scores, k):
  """Global top-k by concatenation and `tf.math.top_k` (dtypes radix select lacks)."""
  flat = [tf.reshape(s, [-1]) for s in scores]
  sizes = [f.shape[0] if f.shape[0] is not None else tf.size(f) for f in flat]
  mask = _sorted_topk_mask(tf.concat(flat, 0), k)
  return [tf.reshape(p, tf.shape(s)) for p, s in zip(tf.split(mask, sizes), scores)]


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


def kth_largest(scores, k):
  """The exact k-th largest value over all the tensors of `scores` (1 <= k <= N).

  Args:
    scores: list of non-negative float32 / float16 / bfloat16 tensors.
    k: int or int scalar tensor in [1, N].

  Returns:
    A float32 scalar: the global magnitude threshold (entries above it are all kept).
  """
  keys = [_keys(tf.convert_to_tensor(s)) for s in scores]
  his = [tf.bitwise.right_shift(key, _SHIFT) for key in keys]
  t, _, _ = _select(keys, his, tf.cast(k, tf.int64))
  return tf.bitcast(t, tf.float32)
