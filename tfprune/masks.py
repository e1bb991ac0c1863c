"""Pure mask maths: which weights to keep, given scores, a sparsity and a scope.

Every function here takes non-negative score tensors (usually `|W|`) and returns 0/1
masks of the same shapes, as TensorFlow ops (usable inside `tf.function`). Nothing here
knows about Keras layers.

Scopes (see docs/algorithms.md section 0):
  * `layer`: each tensor keeps `ceil((1 - s) * n)` entries (TFMOT behaviour).
  * `global`: one threshold over all tensors: the top `ceil((1 - s) * N)` scores.
  * `block`: scores pooled (mean) over blocks of `block_size` consecutive entries along
    the kernel's INPUT axis, so that after TFLite's transpose of a Dense kernel to
    `[out, in]` the kept blocks are 1x4 (float) or 1x16 (int8) - the only sparse patterns
    with a fast kernel in LiteRT. Allocation per tensor, or global over blocks.
  * `n:m`: in every group of `m` consecutive entries along the input axis keep the `n`
    largest (e.g. 2:4). The sparsity is `1 - n/m`, whatever was asked.
  * `structured`: whole output units (last axis: Dense neurons, conv filters) ranked by
    their RMS score; per tensor or global allocation. This is the per-tensor fallback:
    pruning methods with `scope="structured"` rank whole channel GROUPS through the
    model's channel dependency graph instead (`tfprune.structured`, docs/structured.md),
    so that `tfprune.strip(model, shrink=True)` can delete them.

Every top-k goes through `tfprune.topk` (radix select, exact). Ties are broken
deterministically: at equal score the entry with the lower flat index
(in the concatenation order for `global`) is kept, so exactly k entries are kept.
"""
import math

import tensorflow as tf

from tfprune import topk as topk_lib

SCOPES = ("layer", "global", "block", "n:m", "structured")
ALLOCATIONS = ("layer", "global")
BLOCK_SIZES = (1, 2, 4, 8, 16, 32)


def validate_sparsity(sparsity, name="sparsity"):
  """Raises ValueError unless `sparsity` is a number in [0, 1)."""
  try:
    value = float(sparsity)
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be a number in [0, 1), got {sparsity!r}.") from None
  if not 0.0 <= value < 1.0 or math.isnan(value):
    raise ValueError(
        f"{name} must be in [0, 1) (the fraction of weights set to zero), got {sparsity!r}.")
  return value


def validate_scope(scope, block_size=4, n=2, m=4, allocation="layer"):
  """Checks a scope and its parameters; raises ValueError naming the valid values."""
  if scope not in SCOPES:
    raise ValueError(f"Unknown scope {scope!r}; valid scopes are {', '.join(SCOPES)}.")
  if allocation not in ALLOCATIONS:
    raise ValueError(f"Unknown allocation {allocation!r}; valid: {', '.join(ALLOCATIONS)}.")
  if scope == "block" and int(block_size) not in BLOCK_SIZES:
    raise ValueError(f"block_size must be one of {BLOCK_SIZES} (4 for float and 16 for int8 "
                     f"LiteRT fast paths), got {block_size!r}.")
  if scope == "n:m" and not (0 < int(n) < int(m)):
    raise ValueError(f"n:m scope needs 0 < n < m (e.g. n=2, m=4), got n={n!r}, m={m!r}.")


def keep_count(size, sparsity):
  """Number of entries to keep: `ceil((1 - sparsity) * size)`, robust to float error.

  Args:
    size: number of entries (Python int or int tensor).
    sparsity: fraction of zeros (float or float tensor) in [0, 1).

  Returns:
    An int32 scalar tensor in [0, size].
  """
  size64 = tf.cast(size, tf.float64)
  # Sparsities arrive as float32 (0.9 -> 0.89999998); round the density to 1e-6 so that
  # the count is the one the user wrote down.
  density = tf.round((1.0 - tf.cast(sparsity, tf.float64)) * 1e6) / 1e6
  keep = tf.math.ceil(density * size64 - 1e-9)
  return tf.cast(tf.clip_by_value(keep, 0.0, size64), tf.int32)


# The one top-k (tfprune/topk.py), re-exported: ties keep the lower flat index.
topk_mask = topk_lib.topk_mask


def input_axis(rank):
  """The Keras kernel's input axis: 0 for a Dense kernel, `rank - 2` for conv kernels."""
  return 0 if rank <= 2 else rank - 2


def _to_groups(scores, group, axis):
  """Moves `axis` last, pads it to a multiple of `group`, splits it into groups.

  Returns (grouped [..., n_groups, group] tensor, permutation, padded length).
  """
  rank = scores.shape.rank
  perm = [d for d in range(rank) if d != axis] + [axis]
  moved = tf.transpose(scores, perm)
  length = moved.shape[-1]
  padded = -(-length // group) * group
  pad = [[0, 0]] * (rank - 1) + [[0, padded - length]]
  moved = tf.pad(moved, pad)
  grouped = tf.reshape(moved, tf.concat([tf.shape(moved)[:-1], [padded // group, group]], 0))
  return grouped, perm, length


def _from_groups(grouped, perm, length):
  """Inverse of `_to_groups` for a tensor of the grouped shape."""
  shape = tf.shape(grouped)
  moved = tf.reshape(grouped, tf.concat([shape[:-2], [shape[-2] * shape[-1]]], 0))
  moved = moved[..., :length]
  inverse = [0] * len(perm)
  for i, p in enumerate(perm):
    inverse[p] = i
  return tf.transpose(moved, inverse)


def block_scores(scores, block_size):
  """Mean score of each block of `block_size` along the input axis, and how to expand.

  Args:
    scores: a score (or weight-shaped) tensor of rank >= 2.
    block_size: block length along the kernel's input axis (`input_axis`).

  Returns:
    `(pooled, expand)`: the pooled block scores and a function mapping a mask of the
    pooled shape back to a mask of `scores`' shape.
  """
  if scores.shape.rank < 2:
    raise ValueError(f"block scope needs a kernel of rank >= 2, got shape {scores.shape}.")
  axis = input_axis(scores.shape.rank)
  grouped, perm, length = _to_groups(scores, block_size, axis)
  pooled = tf.reduce_mean(grouped, axis=-1)

  def expand(block_mask):
    tiled = tf.repeat(block_mask[..., None], block_size, axis=-1)
    return _from_groups(tiled, perm, length)

  return pooled, expand




def _unit_scores(scores):
  """RMS score per output unit (last axis) + how to expand a unit mask back."""
  reduce_axes = list(range(scores.shape.rank - 1))
  if not reduce_axes:
    return scores, lambda unit_mask: unit_mask
  rms = tf.sqrt(tf.reduce_mean(tf.square(scores), axis=reduce_axes))

  def expand(unit_mask):
    return tf.broadcast_to(unit_mask, tf.shape(scores))

  return rms, expand


def nm_mask(scores, n=2, m=4):
  """Keeps the `n` largest of every `m` consecutive entries along the input axis."""
  if scores.shape.rank < 2:
    grouped, perm, length = _to_groups(scores[None], m, 1)
  else:
    grouped, perm, length = _to_groups(scores, m, input_axis(scores.shape.rank))
  order = tf.argsort(grouped, axis=-1, direction="DESCENDING", stable=True)
  ranks = tf.argsort(order, axis=-1, stable=True)
  keep = tf.cast(ranks < n, scores.dtype)
  mask = _from_groups(keep, perm, length)
  return mask[0] if scores.shape.rank < 2 else mask


def _allocate(unit_scores, sparsity, allocation):
  """Top-k over each tensor of unit scores (layer) or over all of them (global)."""
  if allocation == "layer":
    return [topk_lib.topk_mask(s, keep_count(tf.size(s), sparsity)) for s in unit_scores]
  total = tf.add_n([tf.size(s) for s in unit_scores])
  return topk_lib.global_topk_masks(unit_scores, keep_count(total, sparsity))


def compute_masks(scores, sparsity, scope="layer", block_size=4, n=2, m=4,
                  allocation="layer"):
  """Computes 0/1 masks for a list of score tensors.

  Args:
    scores: list of non-negative float tensors (one per prunable weight), e.g. `|W|`.
      Entries already pruned should score 0.
    sparsity: target fraction of zeros in [0, 1) (float or scalar tensor). Ignored by
      `n:m`, whose sparsity is `1 - n/m`.
    scope: one of `SCOPES`.
    block_size: block length along the input axis for `block` scope (4 float, 16 int8).
    n, m: the `n:m` pattern.
    allocation: `layer` (each tensor hits the sparsity) or `global` (one threshold),
      used by the `block` and `structured` scopes. `layer`/`global` scopes imply it.

  Returns:
    A list of masks, same shapes and dtypes as `scores`.
  """
  validate_scope(scope, block_size, n, m, allocation)
  scores = [tf.convert_to_tensor(s) for s in scores]
  if scope == "n:m":
    return [nm_mask(s, n, m) for s in scores]
  if scope in ("layer", "global"):
    return _allocate(scores, sparsity, scope)
  pooler = (lambda s: block_scores(s, block_size)) if scope == "block" else _unit_scores
  pooled, expanders = zip(*[pooler(s) for s in scores])
  unit_masks = _allocate(list(pooled), sparsity, allocation)
  return [expand(u) for expand, u in zip(expanders, unit_masks)]
