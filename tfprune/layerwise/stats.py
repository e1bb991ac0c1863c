"""Streaming least-squares statistics of a layer, on one device or over a strategy.

For a layer with input rows `X` (n x d, see `geometry.layer_patches`) and original
pre-activations `Y - b = X_o W0`:

    G = X^T X / n,   C = X^T (Y - b) / n,   ||Y - b||^2 / n,   colsum(Y - b) / n.

X is not held in memory once it has more rows than columns (then `G` is the smaller
object); while `n < d` the single-device `Accumulator` also keeps the rows, so that the
solvers can use `G = X^T X / n` as a rank-`n` factor (`LayerStats.rows`). Batch products
run in float32 (float64 with
`stats_dtype="float64"`) and are summed across batches in float64 ("compensated"
accumulation: only the cross-batch sum, where the error grows, is in float64). The same
per-batch products (`batch_products`) serve the single-device `Accumulator` and the
`tf.distribute` pass `distributed_stats`, which sums them per replica in sync-on-read
variables and all-reduces them once.

An `Embedding` is a lookup, i.e. a product with one-hot rows, so its `G` is diagonal:
the token counts of the calibration ids (`EmbeddingStats`); no `[V, V]` matrix is formed.
"""
import contextlib
import dataclasses

import keras
import numpy as np
import tensorflow as tf

from tfprune.layerwise import geometry

STATS_DTYPES = ("float32", "float64")


@dataclasses.dataclass
class LayerStats:
  """Sufficient statistics of one layer's least-squares problem (all float64, per row).

  Attributes:
    gram: `[B, d, d]`, `X^T X / n`.
    cross: `[B, d, m]`, `X^T (Y - b) / n`.
    y_sq: `||Y - b||_F^2 / n` (scalar).
    y_colsum: `[B, m]`, column sums of `Y - b`, divided by n.
    n: number of rows (samples times output positions).
    x_colsum: `[B, d]`, column sums of `X`, divided by n (None if not collected).
    rows: `[B, n, d]` float64, the rows of `X` themselves when `n < d` (so that
      `G = rows^T rows / n`), else None (and always None from `distributed_stats`).
  """
  gram: np.ndarray
  cross: np.ndarray
  y_sq: float
  y_colsum: np.ndarray
  n: int
  x_colsum: np.ndarray = None
  rows: np.ndarray = None


@dataclasses.dataclass
class EmbeddingStats:
  """Statistics of an `Embedding` lookup: `G = diag(counts) / n` (one-hot rows).

  Attributes:
    counts: `[V]` float64, how often each id occurs in the calibration inputs.
    n: number of looked-up ids.
  """
  counts: np.ndarray
  n: int


def batch_products(inner, w0, xp, xo=None, dtype=tf.float32):
  """One batch's float64 `(X^T X, X^T (Y - b), ||Y - b||^2, colsum(Y - b), rows,
  colsum(X))`.

  Args:
    inner: a supported (non-embedding) layer.
    w0: `[B, d, m]` original kernel, a tensor of `dtype`.
    xp: the batch of the layer's inputs (the pruned network's in cascade mode).
    xo: the same batch's inputs in the original network (None: `xo = xp`).
    dtype: dtype of the per-batch products.
  """
  xp = tf.cast(geometry.layer_patches(inner, xp), dtype)
  xo = xp if xo is None else tf.cast(geometry.layer_patches(inner, xo), dtype)
  y = tf.matmul(xo, w0)  # Y - b, from the ORIGINAL inputs and kernel
  y64 = tf.cast(y, tf.float64)
  return (tf.cast(tf.matmul(xp, xp, transpose_a=True), tf.float64),
          tf.cast(tf.matmul(xp, y, transpose_a=True), tf.float64),
          tf.reduce_sum(y64 ** 2), tf.reduce_sum(y64, axis=1),
          tf.cast(tf.shape(xp)[1], tf.float64),
          tf.reduce_sum(tf.cast(xp, tf.float64), axis=1))


def token_counts(inner, ids):
  """`[V]` float64 counts of the ids of one batch (ids outside [0, V) are dropped)."""
  vocab = int(inner.input_dim)
  ids = tf.reshape(tf.cast(ids, tf.int32), [-1])
  ids = tf.boolean_mask(ids, tf.logical_and(ids >= 0, ids < vocab))
  return tf.cast(tf.math.bincount(ids, minlength=vocab, maxlength=vocab), tf.float64)


class Accumulator:
  """Running float64 sums of `batch_products` for one layer, and its rows while `n < d`."""

  def __init__(self, inner, w0, stats_dtype="float32"):
    self.inner = inner
    self.w0 = tf.constant(w0, tf.as_dtype(stats_dtype))
    self.sums = None
    self.rows = []

  def add(self, xp, xo=None):
    # Eager: a handful of large ops per batch, nothing to gain from tracing per layer.
    out = [t.numpy() for t in batch_products(self.inner, self.w0, xp, xo, self.w0.dtype)]
    self.sums = out if self.sums is None else [a + b for a, b in zip(self.sums, out)]
    if self.rows is not None:
      if self.sums[4] < self.w0.shape[1]:
        patches = tf.cast(geometry.layer_patches(self.inner, xp), self.w0.dtype)
        self.rows.append(tf.cast(patches, tf.float64).numpy())
      else:
        self.rows = None  # as many rows as inputs: G is the smaller object

  def result(self):
    if self.sums is None or self.sums[4] == 0:
      return None  # never called on the calibration data (`engine`: pruned by magnitude)
    gram, cross, y_sq, y_colsum, n, x_colsum = self.sums
    rows = np.concatenate(self.rows, axis=1) if self.rows else None
    return LayerStats(gram / n, cross / n, float(y_sq) / n, y_colsum / n, int(n),
                      x_colsum / n, rows)


class EmbeddingAccumulator:
  """Running token counts of one `Embedding` layer."""

  def __init__(self, inner, w0=None, stats_dtype="float32"):
    del w0, stats_dtype
    self.inner = inner
    self.counts = np.zeros(int(inner.input_dim))
    self.n = 0

  def add(self, xp, xo=None):
    del xo  # the ids are the same in the pruned and the original network
    self.counts += token_counts(self.inner, xp).numpy()
    self.n += int(np.prod(xp.shape))

  def result(self):
    if self.n == 0:
      return None  # never called on the calibration data
    return EmbeddingStats(self.counts.copy(), self.n)


def accumulator(inner, w0, stats_dtype="float32"):
  """The accumulator for `inner`'s kind (`Accumulator` or `EmbeddingAccumulator`)."""
  if geometry.kind(inner) == "embedding":
    return EmbeddingAccumulator(inner)
  return Accumulator(inner, w0, stats_dtype)


def compute_stats(inner, xs, w0=None, stats_dtype="float32", xs_original=None):
  """Statistics of one layer from an iterable of its input batches.

  Args:
    inner: a supported layer.
    xs: iterable of the layer's input batches (the pruned network's in cascade mode).
    w0: `[B, d, m]` original kernel (default: the layer's kernel).
    stats_dtype: `float32` (float64 cross-batch sums) or `float64`.
    xs_original: iterable of the original network's inputs to the layer (cascade).
  """
  if w0 is None:
    w0 = geometry.kernel_to_problems(
        inner, keras.ops.convert_to_numpy(geometry.kernel_variable(inner)))
  acc = accumulator(inner, w0, stats_dtype)
  pairs = ((x, None) for x in xs) if xs_original is None else zip(xs, xs_original)
  for x, xo in pairs:
    acc.add(x, xo)
  return acc.result()


# -------------------------------------------------------------- nested layers
@contextlib.contextmanager
def capture_inputs(layers):
  """Records the first positional input of every call of `layers` while active.

  For layers that are not nodes of the model's graph (e.g. the EinsumDense projections
  inside `MultiHeadAttention`): the engine runs the whole model and reads what each
  sublayer received. Yields a dict `id(layer) -> list of tensors`.
  """
  seen = {id(l): [] for l in layers}
  hooked = []
  try:
    for layer in layers:
      original = layer.call

      def call(*args, _original=original, _key=id(layer), **kwargs):
        seen[_key].append(args[0] if args else next(iter(kwargs.values())))
        return _original(*args, **kwargs)

      layer.call = call
      hooked.append(layer)
    yield seen
  finally:
    for layer in hooked:
      del layer.call


# ------------------------------------------------------------------ distributed
def _sum_variable(shape, name):
  return tf.Variable(tf.zeros(shape, tf.float64), trainable=False, name=name,
                     synchronization=tf.VariableSynchronization.ON_READ,
                     aggregation=tf.VariableAggregation.SUM)


def distributed_stats(strategy, model, layers, dataset, stats_dtype="float32", w0=None,
                      original_model=None, original_layers=None):
  """All-reduced statistics of top-level `layers` on a distributed calibration set.

  Each replica accumulates `batch_products` (or token counts) on its shard of
  `dataset` in sync-on-read SUM variables; reading them is one all-reduce. The result
  equals `compute_stats` on the same data to float tolerance.

  `X` are the inputs of `layers` in `model`; `Y = X_o W0` with `X_o` the inputs of
  `original_layers` in `original_model` when given (cascade mode), else `X_o = X`.

  Args:
    strategy: a `tf.distribute` strategy (MirroredStrategy, MultiWorkerMirrored...).
    model: a Functional / Sequential model (plain or pruned) containing `layers`.
    layers: top-level layers of `model` (or `PruneWrapper`s) the engine supports.
    dataset: batched `tf.data.Dataset` of inputs in GLOBAL batches (from
      `tfprune.layerwise.calibration_dataset`, which checks them) or a
      `tf.distribute.DistributedDataset`.
    stats_dtype: `float32` or `float64`.
    w0: optional list of `[B, d, m]` original kernels (default: the layers' kernels, or
      those of `original_layers`).
    original_model, original_layers: where `Y` comes from (cascade mode), see above.

  Returns:
    A list of `LayerStats` / `EmbeddingStats`, one per layer.
  """
  if not layers:
    raise ValueError("distributed_stats needs at least one layer.")
  bad = [l.name for l in layers if not geometry.is_supported(l)]
  if bad:
    raise ValueError(f"Layers {bad} are not supported by the layer-wise engine "
                     f"({', '.join(geometry.SUPPORTED_LAYERS)}).")
  if stats_dtype not in STATS_DTYPES:
    raise ValueError(f"stats_dtype must be one of {STATS_DTYPES}, got {stats_dtype!r}.")
  if (original_model is None) != (original_layers is None):
    raise ValueError("Pass both original_model and original_layers, or neither.")
  if original_layers is not None and len(original_layers) != len(layers):
    raise ValueError(f"original_layers has {len(original_layers)} layers for "
                     f"{len(layers)} layers.")
  dtype = tf.as_dtype(stats_dtype)
  inners = [geometry.inner_layer(l) for l in layers]
  if w0 is None:
    sources = inners if original_layers is None else [
        geometry.inner_layer(l) for l in original_layers]
    w0 = [geometry.kernel_to_problems(i, keras.ops.convert_to_numpy(
        geometry.kernel_variable(i))) for i in sources]
  w0 = [np.asarray(w) for w in w0]

  def make_extractor(m, ls):
    return keras.Model(m.inputs[0] if len(m.inputs) == 1 else m.inputs,
                       [l.input for l in ls])

  extractor = make_extractor(model, layers)
  extractor_o = None if original_model is None else make_extractor(original_model,
                                                                   original_layers)
  with strategy.scope():
    acc = []
    for i, (inner, w) in enumerate(zip(inners, w0)):
      if geometry.kind(inner) == "embedding":
        acc.append({"counts": _sum_variable([int(inner.input_dim)], f"counts_{i}"),
                    "n": _sum_variable([], f"n_{i}")})
        continue
      b, d, m = w.shape
      acc.append({"gram": _sum_variable([b, d, d], f"gram_{i}"),
                  "cross": _sum_variable([b, d, m], f"cross_{i}"),
                  "y_sq": _sum_variable([], f"y_sq_{i}"),
                  "y_colsum": _sum_variable([b, m], f"y_colsum_{i}"),
                  "n": _sum_variable([], f"n_{i}"),
                  "x_colsum": _sum_variable([b, d], f"x_colsum_{i}")})
  w0_consts = [tf.constant(w, dtype) for w in w0]

  def run(ext, x):
    outs = ext(x, training=False)
    return outs if isinstance(outs, (list, tuple)) else [outs]

  def replica_step(x):
    if isinstance(x, (tuple, list)):  # (x, y) elements of a dataset used as is
      x = x[0]
    outs = run(extractor, x)
    outs_o = [None] * len(outs) if extractor_o is None else run(extractor_o, x)
    for inner, w, a, xin, xin_o in zip(inners, w0_consts, acc, outs, outs_o):
      if "counts" in a:
        a["counts"].assign_add(token_counts(inner, xin))
        a["n"].assign_add(tf.cast(tf.size(xin), tf.float64))
        continue
      for key, value in zip(("gram", "cross", "y_sq", "y_colsum", "n", "x_colsum"),
                            batch_products(inner, w, xin, xin_o, dtype)):
        a[key].assign_add(value)

  @tf.function
  def step(x):
    strategy.run(replica_step, args=(x,))

  if isinstance(dataset, tf.distribute.DistributedDataset):
    distributed = dataset
  elif isinstance(dataset, tf.data.Dataset):
    distributed = strategy.experimental_distribute_dataset(dataset)
  else:
    raise ValueError(f"distributed_stats needs a batched tf.data.Dataset (see "
                     f"tfprune.layerwise.calibration_dataset), got "
                     f"{type(dataset).__name__}.")
  for x in distributed:
    step(x)
  out = []
  for layer, a in zip(layers, acc):
    read = {k: v.read_value().numpy() for k, v in a.items()}
    n = float(read["n"])
    if n == 0:
      out.append(None)  # never called on the calibration data
      continue
    if "counts" in read:
      out.append(EmbeddingStats(read["counts"], int(round(n))))
      continue
    out.append(LayerStats(gram=read["gram"] / n, cross=read["cross"] / n,
                          y_sq=float(read["y_sq"]) / n, y_colsum=read["y_colsum"] / n,
                          n=int(round(n)), x_colsum=read["x_colsum"] / n))
  return out
