"""Generic `tf.distribute` helpers: one set of masks for all replicas.

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
  * The layer-wise engine's all-reduced statistics live with the engine
    (`tfprune.layerwise.distributed_stats`); this module knows nothing about it.

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


def check_prune_scope(model, what="tfprune.prune"):
  """Raises a clear error if `tfprune.prune(model)` (or `what`: `tfprune.cluster`) would
  mix strategies.

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
        f"call {what}(...) inside the same `with strategy.scope():` block so that "
        f"the wrappers' masks and state are mirrored like the weights.")


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
