"""Pure mask maths: which weights to keep, given scores, a sparsity and a scope.

Every function here takes non-negative score tensors (usually `|W|`) and returns 0/1
masks of the same shapes, as TensorFlow ops (usable inside `tf.function`). Nothing here
knows about Keras layers.

Scopes (see docs/algorithms.md section 0):
  * `layer`: each tensor keeps `ceil((1 - s) * n)` entries (TFMOT behaviour).
  * `global`: one threshold over all tensors: the top `ceil((1 - s) * N)` scores, with
    a per-tensor floor so no layer is emptied (`layer_floor`, `max_pruning_ratio`) and
    optionally LAMP-normalised scores (`global_score="lamp"`); see `global_masks`.
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
GLOBAL_SCORES = ("magnitude", "lamp")
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


@topk_lib.plain_ops
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


def unit_count(shape, scope="layer", block_size=4):
  """How many units one weight of `shape` offers a scope's allocation (`compute_masks`).

  Entries for `layer`, `global` and `n:m` (and scopes of whole entries); blocks of
  `block_size` along the input axis for `block` (kernels of rank >= 2); output units
  (the last axis) for `structured`. With `keep_count` this is the rule that says how
  many units a target keeps.
  """
  shape = tuple(int(d) for d in shape)
  size = math.prod(shape)
  if scope == "block" and len(shape) >= 2:
    axis = input_axis(len(shape))
    return size // shape[axis] * -(-shape[axis] // block_size)
  if scope == "structured" and shape:
    return shape[-1]
  return size


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


@topk_lib.plain_ops
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


@topk_lib.plain_ops
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


def _allocate(unit_scores, sparsity, allocation, max_pruning_ratio=None,
              global_score="magnitude"):
  """Top-k over each tensor of unit scores (layer) or over all of them (global)."""
  if allocation == "layer":
    return [topk_lib.topk_mask(s, keep_count(tf.size(s), sparsity)) for s in unit_scores]
  total = tf.add_n([tf.size(s) for s in unit_scores])
  return global_masks(unit_scores, keep_count(total, sparsity), max_pruning_ratio,
                      global_score)


# ------------------------------------------------------ layer floor and LAMP
def validate_max_pruning_ratio(value):
  """Returns `value` (None or a float in (0, 1]); ValueError otherwise."""
  if value is None:
    return None
  try:
    ratio = float(value)
  except (TypeError, ValueError):
    ratio = math.nan
  if isinstance(value, bool) or math.isnan(ratio) or not 0.0 < ratio <= 1.0:
    raise ValueError(
        f"max_pruning_ratio must be None (default: every layer keeps its path floor, the "
        f"largest weight of each output unit and each input row) or a number in (0, 1] "
        f"(the largest fraction of any one weight tensor a cross-layer allocation may "
        f"remove; 1.0 allows emptying a layer), got {value!r}.")
  return ratio


def validate_global_score(global_score, scope="global", allocation="global"):
  """Checks `global_score`; `lamp` needs an allocation across layers."""
  if global_score not in GLOBAL_SCORES:
    raise ValueError(f"Unknown global_score {global_score!r}; valid: "
                     f"{', '.join(GLOBAL_SCORES)}.")
  across = scope == "global" or (scope in ("block", "structured") and allocation == "global")
  if global_score != "magnitude" and not across:
    raise ValueError(f"global_score={global_score!r} normalises scores to compare layers: "
                     f"it needs an allocation across layers (scope='global', or block / "
                     f"structured with allocation='global'), got scope={scope!r}, "
                     f"allocation={allocation!r}.")
  return global_score


def _tensor_of_entries(sizes, dtype=tf.int32):
  """The index of the tensor of each entry of a `topk.concat_flat` vector (one pass)."""
  sizes = tf.cast(tf.stack(sizes), dtype)
  ends = tf.cumsum(sizes)
  heads = tf.minimum((ends - sizes)[1:], ends[-1])[:, None]  # empty tensors at the end
  bumps = tf.scatter_nd(heads, tf.ones_like(heads[:, 0]), [ends[-1] + 1])
  return tf.cumsum(bumps)[:-1]


def _segment_sums(flat_mask, sizes):
  """Number of true entries of each tensor of a bool `concat_flat` vector (one split,
  one multithreaded sum per tensor: far faster on CPU than a cumsum over N)."""
  parts = [flat_mask] if len(sizes) == 1 else tf.split(flat_mask, sizes)
  return tf.stack([tf.reduce_sum(tf.cast(p, tf.int32)) for p in parts])


def _segment_first_max(flat, segments, count, positions):
  """Bool: the largest entry of each segment of `flat`; the lowest position wins a tie."""
  best = tf.math.unsorted_segment_max(flat, segments, count)
  at_best = tf.equal(flat, tf.gather(best, segments))
  first = tf.math.unsorted_segment_min(
      tf.where(at_best, positions, tf.size(flat, out_type=positions.dtype)), segments, count)
  return tf.equal(positions, tf.gather(first, segments))


def _path_floor(flat, shapes):
  """Bool flat mask (`topk.concat_flat` order of tensors shaped `shapes`): the largest
  entry of every output unit (last axis) and every input row (`input_axis`; rank <= 1:
  the largest entry); the first flat index wins a tie. Vectorised over all the tensors
  (segment ops), so the trace does not grow with their number."""
  sizes, units, rows = [], [], []
  for shape in shapes:
    sizes.append(math.prod(shape))
    rank = len(shape)
    units.append(shape[-1] if rank >= 2 else 1)
    rows.append(shape[input_axis(rank)] if rank >= 2 else 1)
  index = tf.int64 if sum(sizes) >= 2**31 else tf.int32
  tensor = _tensor_of_entries(sizes, index)
  positions = tf.range(sum(sizes), dtype=index)

  def per_entry(values):
    return tf.gather(tf.constant(values, index), tensor)

  local = positions - per_entry([sum(sizes[:i]) for i in range(len(sizes))])
  n_units = per_entry(units)
  unit = per_entry([sum(units[:i]) for i in range(len(units))]) + local % n_units
  row = per_entry([sum(rows[:i]) for i in range(len(rows))]) + (
      local // n_units) % per_entry(rows)
  return tf.logical_or(_segment_first_max(flat, unit, sum(units), positions),
                       _segment_first_max(flat, row, sum(rows), positions))


def _flat_floor(scores, flat, max_pruning_ratio):
  """The `layer_floor` masks of `scores`, as one bool vector (`topk.concat_flat` order)."""
  if max_pruning_ratio is None:
    return _path_floor(flat, [tuple(s.shape) for s in scores])
  floors = [tf.reshape(topk_lib.topk_mask(s, keep_count(tf.size(s), max_pruning_ratio)),
                       [-1]) > 0 for s in scores]
  return floors[0] if len(floors) == 1 else tf.concat(floors, 0)


def _path_trigger(shape):
  """`min(fan_in, fan_out)` of a kernel shape (rank 1: 1): with fewer kept entries a
  tensor has lost both some input rows and some output units. A rank >= 3 kernel with
  one output column (a depthwise kernel) counts its input channels as outputs."""
  if len(shape) == 0:
    return 0
  if len(shape) == 1:
    return 1
  fan_in, fan_out = shape[input_axis(len(shape))], shape[-1]
  if len(shape) >= 3 and fan_out == 1:
    return fan_in
  return min(fan_in, fan_out)


@topk_lib.plain_ops
def layer_floor(scores, max_pruning_ratio=None, masks=True):
  """THE layer floor of an allocation across layers: per tensor, `(floor mask, trigger)`.

  A tensor to which the allocation would give fewer than `trigger` entries keeps its
  floor mask's entries instead (plus what it wins in the allocation): `global_masks`,
  `floor_keep_counts`. Above the trigger the floor changes nothing.

  Args:
    scores: list of non-negative score tensors (weight-shaped, block-pooled or
      per-unit) with static shapes.
    max_pruning_ratio: None (default): the path floor: the largest entry of every
      output unit (last axis) and of every input row (`input_axis`; rank 1: the
      largest entry), at most `fan_in + fan_out` entries, so that every input and every
      output of the layer stays connected (a depthwise kernel: every channel); trigger
      `min(fan_in, fan_out)` (`_path_trigger`). A float r in (0, 1]: the
      `keep_count(n, r)` largest entries, trigger the same count (at most a fraction r
      removed from any tensor); 1.0: no floor.
    masks: False: the triggers only (the masks are None; cheap, no pass over the
      scores).

  Returns:
    A list of `(0/1 mask shaped and typed like the scores, trigger count)` pairs (the
    count an int or an int scalar tensor).
  """
  max_pruning_ratio = validate_max_pruning_ratio(max_pruning_ratio)
  scores = [tf.convert_to_tensor(s) for s in scores]
  if max_pruning_ratio is None:
    triggers = [_path_trigger(tuple(s.shape)) for s in scores]
  else:
    triggers = [keep_count(tf.size(s), max_pruning_ratio) for s in scores]
  if not masks or not scores:
    return [(None, t) for t in triggers]
  flat, sizes = topk_lib.concat_flat(scores)
  floors = topk_lib.split_like(_flat_floor(scores, flat, max_pruning_ratio), sizes, scores)
  return list(zip(floors, triggers))


def floor_keep_counts(keeps, floors):
  """Keep counts of an allocation across layers made by counts (the layer-wise solvers'),
  with the layer floor: a count below its `layer_floor` trigger is raised to the floor
  mask's size; what that adds is taken from the other tensors, none below its trigger,
  in proportion to their margin above it (largest remainders first), so the total
  stays the same unless the floors alone exceed it. Unchanged if none is below its
  trigger.

  Args:
    keeps: per-tensor keep counts (ints).
    floors: `layer_floor(...)` of the same tensors.

  Returns:
    A list of ints.
  """
  keeps = [int(k) for k in keeps]
  sizes = [int(tf.reduce_sum(tf.cast(mask, tf.int64))) for mask, _ in floors]
  triggers = [int(trigger) for _, trigger in floors]
  # A tensor below its trigger rises to its floor; the others give no more than down
  # to their trigger.
  floors = [max(size, trigger) if k < trigger else trigger
            for k, size, trigger in zip(keeps, sizes, triggers)]
  raised = [max(k, f) for k, f in zip(keeps, floors)]
  excess = sum(raised) - sum(keeps)
  if excess <= 0:
    return keeps
  margins = [r - f for r, f in zip(raised, floors)]
  room = sum(margins)
  if room <= 0:
    return raised
  take = min(excess, room)
  exact = [take * m / room for m in margins]
  cut = [min(int(math.floor(e)), m) for e, m in zip(exact, margins)]
  order = sorted(range(len(cut)), key=lambda i: (cut[i] - exact[i], i))
  for i in order:
    if sum(cut) >= take:
      break
    if cut[i] < margins[i]:
      cut[i] += 1
  return [r - c for r, c in zip(raised, cut)]


@topk_lib.plain_ops
def lamp_scores(scores):
  """LAMP scores (Lee et al., ICLR 2021): `w_u^2 / sum_{v >= u} w_v^2` per tensor, with
  the entries of the tensor sorted ascending (the largest entry of each tensor scores
  1). Monotone within a tensor; comparable across tensors of different scales.

  Args:
    scores: list of non-negative score tensors (e.g. `|W|`).

  Returns:
    float32 tensors (float64 for float64 scores) of the same shapes.
  """
  out = []
  for s in scores:
    s = tf.convert_to_tensor(s)
    dtype = tf.float64 if s.dtype == tf.float64 else tf.float32
    flat = tf.square(tf.reshape(tf.cast(s, dtype), [-1]))
    order = tf.argsort(flat, stable=True)
    ranked = tf.gather(flat, order)
    tail = tf.cumsum(ranked, reverse=True)
    lamp = tf.math.divide_no_nan(ranked, tail)
    out.append(tf.reshape(tf.scatter_nd(order[:, None], lamp, tf.shape(flat)),
                          tf.shape(s)))
  return out


@topk_lib.plain_ops
def global_masks(scores, k, max_pruning_ratio=None, global_score="magnitude"):
  """THE allocation across layers: the `k` best entries over all tensors, with the floor.

  Plain global top-k (`tfprune.topk.global_topk_masks`) first; when it leaves a tensor
  below its `layer_floor` trigger, that tensor's floor entries are forced in and the
  rest of `k` goes to the best remaining entries (a second top-k); should that push
  another tensor below its trigger, every tensor's floor is forced (a third). So the
  floor changes nothing where no tensor falls below its trigger, and the total stays
  `k` unless the floors alone exceed it (then the floors win). TensorFlow ops (usable
  in `tf.function`).

  Args:
    scores: list of non-negative score tensors.
    k: entries to keep over all tensors (int or int scalar tensor).
    max_pruning_ratio: see `layer_floor` (1.0: plain global top-k).
    global_score: `magnitude` (the scores as given) or `lamp` (`lamp_scores` first).

  Returns:
    A list of 0/1 masks shaped and typed like `scores`.
  """
  validate_global_score(global_score)
  scores = [tf.convert_to_tensor(s) for s in scores]
  if not scores:
    return []
  originals = scores
  if global_score == "lamp":
    scores = lamp_scores(scores)
  # One flat vector for all the tensors: one top-k / floor op chain, whatever their number.
  flat, sizes = topk_lib.concat_flat(scores)
  mask = topk_lib.flat_topk_mask(flat, k)
  max_pruning_ratio = validate_max_pruning_ratio(max_pruning_ratio)
  if max_pruning_ratio == 1.0:
    return topk_lib.split_like(mask, sizes, originals)
  n = len(scores)
  triggers = tf.stack([tf.cast(t, tf.int32) for _, t in
                       layer_floor(scores, max_pruning_ratio, masks=False)])
  def counts(current):  # entries kept per tensor
    return _segment_sums(current, sizes)

  def forced(force):  # the floor masks are built only here, when a tensor needs them
    floor = _flat_floor(scores, flat, max_pruning_ratio)
    tensor = _tensor_of_entries(sizes)
    big = tf.gather(tf.constant([s.dtype.max for s in scores], flat.dtype), tensor)
    bumped = tf.where(tf.logical_and(tf.gather(force, tensor), floor), big, flat)
    need = tf.reduce_sum(tf.where(force, counts(floor), 0))
    return topk_lib.flat_topk_mask(bumped, tf.maximum(tf.cast(k, tf.int64),
                                                      tf.cast(need, tf.int64)))

  def refine(current, force):  # a new top-k only while some tensor is below its trigger
    still_below = counts(current) < triggers
    force = tf.logical_or(force, still_below)
    return tf.cond(tf.reduce_any(still_below), lambda: forced(force),
                   lambda: tf.identity(current)), force

  none = tf.zeros([n], tf.bool)
  mask, force = refine(mask, none)  # the tensors below their trigger
  mask, force = refine(mask, force)  # ... and those the first pass pushed below
  mask, _ = refine(mask, tf.ones_like(force))  # still some: every tensor's floor
  return topk_lib.split_like(mask, sizes, originals)


@topk_lib.plain_ops
def compute_masks(scores, sparsity, scope="layer", block_size=4, n=2, m=4,
                  allocation="layer", max_pruning_ratio=None, global_score="magnitude"):
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
    max_pruning_ratio: the layer floor of a global allocation (`layer_floor`): None
      keeps every tensor's path floor, a float r in (0, 1] at most a fraction r removed
      from any tensor, 1.0 allows emptying one. Per-layer allocations ignore it.
    global_score: `magnitude` or `lamp` (`lamp_scores`), for global allocations.

  Returns:
    A list of masks, same shapes and dtypes as `scores`.
  """
  validate_scope(scope, block_size, n, m, allocation)
  validate_global_score(global_score, scope, allocation)
  scores = [tf.convert_to_tensor(s) for s in scores]
  if scope == "n:m":
    return [nm_mask(s, n, m) for s in scores]
  if scope in ("layer", "global"):
    return _allocate(scores, sparsity, scope, max_pruning_ratio, global_score)
  pooler = (lambda s: block_scores(s, block_size)) if scope == "block" else _unit_scores
  pooled, expanders = zip(*[pooler(s) for s in scores])
  unit_masks = _allocate(list(pooled), sparsity, allocation, max_pruning_ratio,
                         global_score)
  return [expand(u) for expand, u in zip(expanders, unit_masks)]
