"""`tf.distribute` support: one set of masks for all replicas, all-reduced statistics.

Pruning state (masks, `pruning_step`, ADMM's Z and U, ...) lives in Keras variables of
the `PruneWrapper`s. Created inside `strategy.scope()` they are `MirroredVariable`s:
one copy per replica, kept identical by construction:

  * `PruningCallback` (and `method.on_train_step()` in a custom loop, called OUTSIDE
    `strategy.run`) runs in the cross-replica context: masks / Z / U are computed ONCE
    from the synchronised weights (reading a mirrored variable there gives its primary
    copy) and the assignment writes every replica.
  * Code that must update pruning state from INSIDE a replica step (e.g. an optimizer
    hook that projects the weights after `apply_gradients`) goes through
    `call_in_cross_replica`, a `merge_call`: the replicas hand over to one
    cross-replica computation, so they cannot diverge.
  * Layer-wise statistics (`G = X^T X / n`, `C = X^T (Y - b) / n`) are accumulated per
    replica on its shard of a (distributed) calibration dataset in sync-on-read SUM
    variables; reading them in the cross-replica context is one all-reduce
    (`layer_stats`).

Checkpoints hold one copy of each mirrored variable, so a model trained on R replicas
restores on any other number (see tests/distribute_test.py).

Typical use:

    strategy = tf.distribute.MirroredStrategy()
    with strategy.scope():
      model = make_model()                       # or load it here
      pruned = tfprune.prune(model, "magnitude", target_sparsity=0.9)
      tfprune.get_method(pruned).fit(pruned, x, y, epochs=2, batch_size=256)
"""
import keras
import numpy as np
import tensorflow as tf


# --------------------------------------------------------------------------- context
def _tf_variable(variable):
  """The `tf.Variable` (maybe distributed) behind a Keras variable."""
  return getattr(variable, "value", variable) if isinstance(
      variable, keras.Variable) else variable


def is_distributed(variable):
  """True if `variable` (Keras or TF) is a per-replica `tf.distribute` variable."""
  return isinstance(_tf_variable(variable), tf.distribute.DistributedValues)


def variable_strategy(variable):
  """The strategy a variable was created under (None for a plain variable)."""
  v = _tf_variable(variable)
  if not isinstance(v, tf.distribute.DistributedValues):
    return None
  return getattr(v, "_distribute_strategy", None)


def model_strategy(model):
  """The strategy of `model`'s variables (None if they are plain variables).

  Raises:
    ValueError: the variables come from different strategies.
  """
  found = {}
  for v in model.weights:
    s = variable_strategy(v)
    if s is not None:
      found[id(s)] = s
  if len(found) > 1:
    raise ValueError(f"Model {model.name!r} mixes variables of {len(found)} "
                     f"tf.distribute strategies; build it inside one strategy.scope().")
  return next(iter(found.values()), None)


def check_prune_scope(model):
  """Raises a clear error if `tfprune.prune(model)` would mix strategies.

  `tfprune.prune` clones the model: the wrapper's masks, step counter and slots are
  created where it is called. A model whose variables are mirrored must therefore be
  pruned inside the same `strategy.scope()`.

  Raises:
    ValueError: `model` was built under a strategy that is not the current one.
  """
  strategy = model_strategy(model)
  if strategy is None:
    return
  current = tf.distribute.get_strategy() if tf.distribute.has_strategy() else None
  if current is not strategy:
    raise ValueError(
        f"Model {model.name!r} was built inside a {type(strategy).__name__}.scope(); "
        f"call tfprune.prune(...) inside the same `with strategy.scope():` block so that "
        f"the pruning masks and state are mirrored like the weights.")


def check_method_strategy(method):
  """Raises if a bound method's state is not mirrored like the strategy in use.

  Called before training: a model pruned OUTSIDE `strategy.scope()` but trained under
  a strategy would keep one (unsynchronised) copy of the masks.

  Raises:
    ValueError: the current / model strategy has several replicas but the masks are
      plain variables, or the masks belong to another strategy.
  """
  if not method.wrappers:
    return
  masks = method.masks
  if not masks:
    return
  mask_strategy = variable_strategy(masks[0])
  model = method.model
  strategy = getattr(model, "_distribute_strategy", None) if model is not None else None
  if strategy is None and tf.distribute.has_strategy():
    strategy = tf.distribute.get_strategy()
  if strategy is None or (strategy.num_replicas_in_sync <= 1 and mask_strategy is None):
    return
  if mask_strategy is None:
    raise ValueError(
        f"Model {model.name!r} is trained under {type(strategy).__name__} but its pruning "
        f"masks are not mirrored: call tfprune.prune(...) (or load the pruned model) "
        f"inside `with strategy.scope():`.")
  if mask_strategy is not strategy:
    raise ValueError(f"The pruning masks of model {model.name!r} belong to another "
                     f"tf.distribute strategy than the one training it; prune, compile and "
                     f"fit inside one strategy.scope().")


def in_replica_context():
  """True inside `strategy.run` of a non-default strategy (a replica step)."""
  ctx = tf.distribute.get_replica_context()
  return ctx is not None and tf.distribute.has_strategy() and \
      tf.distribute.get_strategy().num_replicas_in_sync > 1


def call_in_cross_replica(fn, *args, **kwargs):
  """Runs `fn(*args, **kwargs)` once in the cross-replica context.

  Inside a replica step of a multi-replica strategy this is a `merge_call`: every
  replica reaches it, `fn` runs once on the synchronised (mirrored) variables, and its
  variable assignments write all replicas. Elsewhere it simply calls `fn`.
  """
  if not in_replica_context():
    return fn(*args, **kwargs)
  return tf.distribute.get_replica_context().merge_call(
      lambda _strategy: fn(*args, **kwargs))


def to_float(value):
  """A Python float from a number, tensor, Keras or (mirrored) TF variable."""
  v = _tf_variable(value)
  if isinstance(v, tf.distribute.DistributedValues):
    v = v.read_value() if hasattr(v, "read_value") else v.values[0]
  return float(np.asarray(v.numpy() if hasattr(v, "numpy") else v))


# ------------------------------------------------------------------------- checking
def replica_values(variable):
  """NumPy copies of every replica's component of `variable` (one for plain ones)."""
  v = _tf_variable(variable)
  if isinstance(v, tf.distribute.DistributedValues):
    return [np.asarray(c.numpy()) for c in v.values]
  return [np.asarray(v.numpy())]


def replicas_in_sync(variables):
  """Names of the variables whose replica copies differ (empty list: all identical)."""
  out = []
  for var in variables:
    copies = replica_values(var)
    if any(not np.array_equal(copies[0], c) for c in copies[1:]):
      out.append(getattr(var, "path", getattr(var, "name", str(var))))
  return out


# ------------------------------------------------------------------ layer statistics
def _sum_variable(shape, name):
  return tf.Variable(tf.zeros(shape, tf.float64), trainable=False, name=name,
                     synchronization=tf.VariableSynchronization.ON_READ,
                     aggregation=tf.VariableAggregation.SUM)


def _input_batches(data):
  """Maps (x, y) / (x, y, w) elements to x."""
  spec = data.element_spec
  if isinstance(spec, (tuple, list)):
    return data.map(lambda *e: e[0])
  return data


def calibration_dataset(data, batch_size=256, max_samples=None):
  """A batched `tf.data.Dataset` of inputs from arrays, `(x, y)` or a dataset.

  Args:
    data: an array, an `(x, ...)` tuple/list of arrays, or a BATCHED `tf.data.Dataset`
      (of inputs or `(x, y)` pairs; used as is, labels dropped).
    batch_size: GLOBAL batch size for arrays (split over the replicas when distributed).
    max_samples: keep at most this many samples (arrays only).

  Returns:
    A `tf.data.Dataset` of float32 input batches.
  """
  if isinstance(data, tf.data.Dataset):
    return _input_batches(data).map(lambda x: tf.cast(x, tf.float32))
  if isinstance(data, (tuple, list)) and data and not np.isscalar(data[0]):
    data = data[0]
  arr = np.asarray(data)
  if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
    raise ValueError(f"Calibration data must be numeric, got dtype {arr.dtype}.")
  if max_samples is not None:
    arr = arr[:int(max_samples)]
  if len(arr) == 0:
    raise ValueError("Calibration data is empty.")
  return tf.data.Dataset.from_tensor_slices(arr.astype(np.float32)).batch(int(batch_size))


def layer_stats(strategy, model, layers, dataset, stats_dtype="float32", w0=None,
                original_model=None, original_layers=None):
  """All-reduced least-squares statistics of `layers` on a distributed calibration set.

  Each replica accumulates, on its shard of `dataset`, the float64 sums of
  `X^T X`, `X^T (Y - b)`, `||Y - b||^2`, the column sums of `Y - b` and the row count
  (per-batch products in float32, or float64 with `stats_dtype="float64"`, as
  `tfprune.layerwise` does), in sync-on-read SUM variables; reading them is one
  all-reduce. The result equals the single-device `tfprune.layerwise.compute_stats`
  on the same data to float tolerance.

  `X` are the inputs of `layers` in `model`; `Y = X_o W0` with `W0` the layers' kernels
  (or `w0`) and `X_o` the inputs of `original_layers` in `original_model` when given
  (the engine's `cascade` mode: X from the partly pruned network, Y from the original
  one), else `X_o = X` (`parallel` mode).

  Args:
    strategy: a `tf.distribute` strategy (MirroredStrategy, MultiWorkerMirrored...).
    model: a Functional / Sequential model (plain or pruned) containing `layers`.
    layers: layers of `model` (or `PruneWrapper`s) supported by the layer-wise engine.
    dataset: batched `tf.data.Dataset` of inputs (or `(x, y)` pairs) in GLOBAL batches
      (see `calibration_dataset`); it is distributed with
      `strategy.experimental_distribute_dataset`. A `tf.distribute.DistributedDataset`
      is used as is.
    stats_dtype: `float32` or `float64`.
    w0: optional list of `[B, d, m]` original kernels (default: the layers' kernels, or
      those of `original_layers`).
    original_model, original_layers: where `Y` comes from (cascade mode), see above.

  Returns:
    A list of `tfprune.layerwise.LayerStats`, one per layer.
  """
  from tfprune import layerwise  # pylint: disable=g-import-not-at-top
  if not layers:
    raise ValueError("layer_stats needs at least one layer.")
  bad = [l.name for l in layers if not layerwise.is_supported(l)]
  if bad:
    raise ValueError(f"Layers {bad} are not supported by the layer-wise engine "
                     f"({', '.join(layerwise.SUPPORTED_LAYERS)}).")
  if stats_dtype not in ("float32", "float64"):
    raise ValueError(f"stats_dtype must be float32 or float64, got {stats_dtype!r}.")
  if (original_model is None) != (original_layers is None):
    raise ValueError("Pass both original_model and original_layers, or neither.")
  if original_layers is not None and len(original_layers) != len(layers):
    raise ValueError(f"original_layers has {len(original_layers)} layers for "
                     f"{len(layers)} layers.")
  dtype = tf.as_dtype(stats_dtype)
  inners = [layerwise.inner_layer(l) for l in layers]
  if w0 is None:
    sources = inners if original_layers is None else [
        layerwise.inner_layer(l) for l in original_layers]
    w0 = [layerwise.kernel_to_problems(i, keras.ops.convert_to_numpy(i.kernel))
          for i in sources]
  w0 = [np.asarray(w) for w in w0]

  def make_extractor(m, ls):
    inputs = m.inputs[0] if len(m.inputs) == 1 else m.inputs
    return keras.Model(inputs, [l.input for l in ls])

  extractor = make_extractor(model, layers)
  extractor_o = None if original_model is None else make_extractor(original_model,
                                                                   original_layers)
  with strategy.scope():
    acc = []
    for i, w in enumerate(w0):
      b, d, m = w.shape
      acc.append({"gram": _sum_variable([b, d, d], f"gram_{i}"),
                  "cross": _sum_variable([b, d, m], f"cross_{i}"),
                  "y_sq": _sum_variable([], f"y_sq_{i}"),
                  "y_colsum": _sum_variable([b, m], f"y_colsum_{i}"),
                  "n": _sum_variable([], f"n_{i}")})
  w0_consts = [tf.constant(w, dtype) for w in w0]

  def run_extractor(ext, x):
    outs = ext(x, training=False)
    return outs if isinstance(outs, (list, tuple)) else [outs]

  def replica_step(x):
    if isinstance(x, (tuple, list)):  # (x, y) / (x, y, w) elements: labels unused
      x = x[0]
    x = tf.cast(x, tf.float32)
    outs = run_extractor(extractor, x)
    outs_o = outs if extractor_o is None else run_extractor(extractor_o, x)
    for inner, w, a, xin, xin_o in zip(inners, w0_consts, acc, outs, outs_o):
      xp = tf.cast(layerwise.layer_patches(inner, xin), dtype)
      xo = xp if extractor_o is None else tf.cast(layerwise.layer_patches(inner, xin_o),
                                                  dtype)
      y = tf.matmul(xo, w)
      a["gram"].assign_add(tf.cast(tf.matmul(xp, xp, transpose_a=True), tf.float64))
      a["cross"].assign_add(tf.cast(tf.matmul(xp, y, transpose_a=True), tf.float64))
      y64 = tf.cast(y, tf.float64)
      a["y_sq"].assign_add(tf.reduce_sum(y64 ** 2))
      a["y_colsum"].assign_add(tf.reduce_sum(y64, axis=1))
      a["n"].assign_add(tf.cast(tf.shape(xp)[1], tf.float64))

  @tf.function
  def step(x):
    strategy.run(replica_step, args=(x,))

  if isinstance(dataset, tf.distribute.DistributedDataset):
    distributed = dataset
  else:
    if not isinstance(dataset, tf.data.Dataset):
      raise ValueError(f"layer_stats needs a batched tf.data.Dataset (see "
                       f"calibration_dataset), got {type(dataset).__name__}.")
    distributed = strategy.experimental_distribute_dataset(_input_batches(dataset))
  for x in distributed:
    step(x)
  out = []
  for layer, a in zip(layers, acc):
    n = float(a["n"].read_value().numpy())
    if n == 0:
      raise ValueError(f"No calibration rows reached layer {layer.name!r}.")
    out.append(layerwise.LayerStats(
        gram=a["gram"].read_value().numpy() / n, cross=a["cross"].read_value().numpy() / n,
        y_sq=float(a["y_sq"].read_value().numpy()) / n,
        y_colsum=a["y_colsum"].read_value().numpy() / n, n=int(round(n))))
  return out
