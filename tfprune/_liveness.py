"""The liveness check: a model's outputs must still depend on its inputs.

Pruning can empty a whole layer (every kernel entry zero), after which the model
computes a constant: a silently dead model. `check_alive` feeds two different random
inputs and raises `DeadModelError`, naming the weights that are entirely zero, when
every (float) output is the same for both. `tfprune.strip` and the exporter call it
(docs/export.md, "Liveness check"); it depends on Keras only, so both sides import it.
"""
import warnings

import keras
import numpy as np

from tfprune import _layers

PROBE_BATCH = 2
NONE_DIM = 8  # a None (dynamic) non-batch dimension of an input is probed at this size
NONE_DIM_IMAGE = 32  # ... and of a rank-4+ input (images: room for strides)


class DeadModelError(ValueError):
  """The model's outputs do not depend on its inputs (e.g. a layer pruned to zero)."""


def zero_weights(model):
  """Paths of the trainable weights of rank >= 2 (kernels, embeddings) that are all zero."""
  out, seen = [], set()
  for w in model.trainable_weights:
    if id(w) in seen or len(w.shape) < 2 or not int(np.prod(w.shape)):
      continue
    seen.add(id(w))
    if not np.any(keras.ops.convert_to_numpy(w)):
      out.append(getattr(w, "path", None) or w.name)
  return out


def probe_inputs(model, seed, batch=None):
  """Random inputs of batch `batch` (default `PROBE_BATCH`) in the structure of
  `model.input`.

  Float inputs: standard normal; integer inputs: ids in `[0, input_dim)` of the
  Embedding they feed (`_layers.embedding_vocab`, the exporter's rule), else in [0, 2)
  (inputs named like a mask: ones); bool inputs: True.
  Returns None when the model has no symbolic inputs (nothing to probe).
  """
  try:
    struct = model.input
  except (AttributeError, ValueError):
    # A Sequential model has no `input` until called, but has `inputs` once built.
    inputs = list(getattr(model, "inputs", None) or [])
    if not inputs:
      return None
    struct = inputs[0] if len(inputs) == 1 else inputs
  rng = np.random.default_rng(seed)
  by_input = _layers.embedding_vocab(model)
  vocab = {id(t): by_input[k] for k, t in enumerate(model.inputs) if k in by_input}
  arrays = []
  for t in keras.tree.flatten(struct):
    rank = len(t.shape)
    fill = NONE_DIM_IMAGE if rank >= 4 else NONE_DIM
    shape = (batch or PROBE_BATCH,) + tuple(fill if d is None else int(d)
                                            for d in t.shape[1:])
    dtype = np.dtype(keras.backend.standardize_dtype(t.dtype))
    name = str(getattr(t, "name", "")).lower()
    if dtype == np.bool_:
      arrays.append(np.ones(shape, np.bool_))
    elif np.issubdtype(dtype, np.integer):
      arrays.append(np.ones(shape, dtype) if "mask" in name else
                    rng.integers(0, vocab.get(id(t), 2), shape).astype(dtype))
    else:
      arrays.append(rng.standard_normal(shape).astype(dtype))
  return keras.tree.pack_sequence_as(struct, arrays)


def _outputs(model, x):
  flat = [np.asarray(keras.ops.convert_to_numpy(y)) for y in
          keras.tree.flatten(model(x, training=False))]
  floats = [y for y in flat if np.issubdtype(y.dtype, np.floating)]
  return floats or flat  # integer / bool outputs (argmax) only when nothing else


def check_alive(model, where="tfprune"):
  """Raises `DeadModelError` when `model`'s outputs are the same for two random inputs
  and some of its kernels are entirely zero (a layer pruned away).

  Two forward passes on `probe_inputs` (batch `PROBE_BATCH`, inference mode). Float
  outputs are compared exactly (any difference at all means alive); integer outputs only
  when there is no float one. Identical outputs with no all-zero kernel (a model that
  was constant before pruning, e.g. an untrained deep network) only warn; so do probes
  that cannot run. A model without symbolic inputs is not probed.

  Args:
    model: a built Keras model (plain or pruned).
    where: the caller, for the message (`tfprune.strip`, `tfprune.export`).

  Raises:
    DeadModelError: naming the weights that are entirely zero (found by scanning the
      weights) and what to do.
  """
  a, b = probe_inputs(model, 0), probe_inputs(model, 1)
  if a is None:
    return
  try:
    ya, yb = _outputs(model, a), _outputs(model, b)
  except Exception as e:  # pylint: disable=broad-except
    # The probes could not run (e.g. a dynamic dimension probed at a size the model
    # does not accept): say so, and leave the model's own errors to its real inputs.
    warnings.warn(f"{where}: liveness check skipped for model {model.name!r}: random "
                  f"probe inputs could not run through it ({type(e).__name__}: "
                  f"{str(e)[:200]}).")
    return
  if not all(np.all(np.isfinite(y)) for y in ya + yb if y.dtype.kind == "f"):
    return  # NaN / Inf outputs: the callers' own finiteness checks name that problem
  if any(p.shape != q.shape or not np.array_equal(p, q) for p, q in zip(ya, yb)):
    return
  zeros = zero_weights(model)
  if not zeros:
    # No weight was emptied: the model computes a constant by itself (e.g. an untrained
    # deep network whose softmax saturates to exactly uniform); nothing to blame on
    # pruning, so say so without refusing it.
    warnings.warn(f"{where}: model {model.name!r} gives identical outputs for two "
                  f"different random inputs, but none of its kernels is entirely zero "
                  f"(an untrained or saturated model?); not refused.")
    return
  cause = f"these weights are entirely zero: {', '.join(zeros)}"
  raise DeadModelError(
      f"{where}: model {model.name!r} is dead: its outputs are identical for two "
      f"different inputs (they no longer depend on the input); {cause}. Prune with the "
      f"default layer floor (max_pruning_ratio=None, or a ratio below 1.0), a lower "
      f"target_sparsity, or global_score='lamp' (docs/algorithms.md, 'Layer floor and "
      f"LAMP').")
