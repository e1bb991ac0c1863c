"""Model inputs for calibration and verification: typed, several inputs, finite.

A Keras model may take several inputs, and integer ones (token ids feeding an
`Embedding`) or booleans. The exporter keeps every input's dtype end to end:
representative data is cast to each input's dtype (never to float32), and the
converter keeps integer inputs integer (an int8 model of a token classifier
still takes int32 ids, docs/export.md). Verification inputs come from the
representative data when given, else from a valid range per input: floats
standard normal, booleans random, integers in `[0, input_dim)` of the
`Embedding` they feed (found by walking the Keras graph), else in
`[0, SMALL_INT_RANGE)`.
"""
import numpy as np

from tfprune import _layers
from tfprune.export.errors import ExportError

SMALL_INT_RANGE = 2
_MAX_WALK = 64


def specs(model):
  """`[(name, shape without batch, numpy dtype)]` for each model input, in order."""
  out = []
  for t in model.inputs:
    out.append((t.name, tuple(t.shape[1:]), np.dtype(str(t.dtype))))
  return out


def _kind(dtype):
  if dtype == np.bool_:
    return "bool"
  if np.issubdtype(dtype, np.integer):
    return "int"
  return "float"


def _cast(arr, name, dtype, what):
  """Casts `arr` to an input's dtype; refuses lossy float -> int / bool casts."""
  kind = _kind(dtype)
  if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
    raise ExportError(f"{what} for input '{name}' has dtype {arr.dtype}; expected numbers "
                      f"castable to the input's {dtype.name}.")
  if np.issubdtype(arr.dtype, np.floating):
    bad = ~np.isfinite(arr)
    if bad.any():
      first = int(np.argwhere(bad.reshape(len(arr), -1).any(axis=1))[0][0])
      raise ExportError(
          f"{what} for input '{name}' holds {int(bad.sum())} non-finite values (NaN or Inf), "
          f"the first in sample {first}: int8 calibration crashes the converter on them and "
          f"verification cannot compare NaN. Drop or replace those samples.")
    if kind != "float" and np.any(arr != np.round(arr)):
      raise ExportError(f"{what} for input '{name}' holds non-integer values, but the input "
                        f"is {dtype.name} (token ids?); pass integer arrays.")
  if kind == "bool" and arr.dtype != np.bool_ and np.any((arr != 0) & (arr != 1)):
    raise ExportError(f"{what} for input '{name}' must hold booleans (or 0/1) for a bool input.")
  return arr.astype(dtype)


def as_samples(model, data, what="representative_data"):
  """Normalizes user data to one array `[n, ...]` per model input, in input order.

  Args:
    model: the Keras model.
    data: for a single-input model an array `[n, ...]`, one sample, or a list of
      samples; for several inputs a list/tuple with one array per input (model
      input order) or a dict keyed by input name.
    what: name used in error messages.

  Returns:
    A list of arrays, each cast to its input's dtype.

  Raises:
    ExportError: on a wrong structure, shape, dtype, non-finite values or no samples.
  """
  sp = specs(model)
  names = [n for n, _, _ in sp]
  expected = ", ".join(f"'{n}' [n, {', '.join(map(str, s))}] {d.name}" for n, s, d in sp)
  if isinstance(data, dict):
    missing = [n for n in names if n not in data]
    extra = [k for k in data if k not in names]
    if missing or extra:
      raise ExportError(f"{what} keys {sorted(data)} do not match the model inputs {names} "
                        f"(missing {missing}, unknown {extra}).")
    arrays = [np.asarray(data[n]) for n in names]
  elif len(sp) > 1:
    if not isinstance(data, (list, tuple)) or len(data) != len(sp):
      raise ExportError(f"model '{model.name}' has {len(sp)} inputs; {what} must be a list "
                        f"of {len(sp)} arrays (or a dict by name): {expected}.")
    arrays = [np.asarray(a) for a in data]
  elif isinstance(data, (list, tuple)):
    if len(data) == 1 and np.asarray(data[0]).ndim == len(sp[0][1]) + 1:
      arrays = [np.asarray(data[0])]
    else:
      arrays = [np.stack([np.asarray(a) for a in data])] if len(data) else [np.zeros((0,))]
  else:
    arrays = [np.asarray(data)]
  out = []
  for (name, shape, dtype), arr in zip(sp, arrays):
    if arr.shape == shape and arr.ndim:
      arr = arr[None]
    if arr.ndim != len(shape) + 1 or any(
        s is not None and s != a for s, a in zip(shape, arr.shape[1:])):
      raise ExportError(f"{what} for input '{name}' has shape {arr.shape}; expected "
                        f"[n, {', '.join(map(str, shape))}] (model inputs: {expected}).")
    if len(arr) == 0:
      raise ExportError(f"{what} for input '{name}' is empty (0 samples).")
    out.append(_cast(arr, name, dtype, what))
  if len({len(a) for a in out}) > 1:
    raise ExportError(f"{what} arrays hold different sample counts "
                      f"{[len(a) for a in out]} for inputs {names}.")
  return out


def _inputs_of(op):
  """Every Keras tensor `op` (a layer or op node) was called on, over all its calls."""
  out = []
  for node in getattr(op, "_inbound_nodes", None) or []:
    out.extend(getattr(node, "input_tensors", None) or [])
  if out:
    return out
  try:
    import keras  # pylint: disable=g-import-not-at-top
    return keras.tree.flatten(op.input)
  except (AttributeError, ValueError, RuntimeError):
    return []


def _producer(tensor):
  """(operation, its input tensors for THIS call) of a Keras tensor, or (None, [])."""
  history = getattr(tensor, "_keras_history", None)
  op = getattr(history, "operation", None) if history is not None else None
  if op is None:
    return None, []
  nodes = getattr(op, "_inbound_nodes", None) or []
  index = getattr(history, "node_index", None)
  if index is not None and 0 <= index < len(nodes):
    return op, list(getattr(nodes[index], "input_tensors", None) or [])
  return op, _inputs_of(op)


# Operations that pass token ids through unchanged (they move, select, copy or cast
# ids, never compute new ones): the only ones the vocabulary walk follows. Keras 3 records
# raw `keras.ops` calls as op nodes of these class names; the layers are the
# value-preserving Keras layers. A tensor COMPUTED from an input (positions from
# `ones_like` + `cumsum`, `arange`, arithmetic) is not that input's ids, so an Embedding
# fed by it (a position Embedding) says nothing about the input's vocabulary.
_ID_PRESERVING = frozenset({
    # keras.ops op nodes
    "Cast", "Reshape", "GetItem", "ExpandDims", "Squeeze", "Transpose", "Take",
    "TakeAlongAxis", "StopGradient", "Concatenate", "Stack", "Flip", "Split", "Slice",
    "Tile", "Repeat", "BroadcastTo", "MoveAxis", "Swapaxes", "Ravel", "Roll", "Identity",
    # Keras layers
    "Flatten", "Permute", "RepeatVector", "Cropping1D",
})


def _id_sources(tensor):
  """The tensors whose values `tensor` carries unchanged: where the walk stops.

  Walks back from `tensor` through id-preserving operations only (`_ID_PRESERVING`:
  casts, reshapes, slices, ...) and returns the tensors it stops at: inputs (produced by
  an InputLayer) or tensors computed by any other operation (positions, arithmetic).
  """
  found, stack, seen = [], [tensor], set()
  while stack and len(seen) < _MAX_WALK:
    t = stack.pop()
    if id(t) in seen:
      continue
    seen.add(id(t))
    op, parents = _producer(t)
    if op is None or type(op).__name__ not in _ID_PRESERVING:
      found.append((t, op))
    else:
      stack.extend(parents)
  return found


def _source_inputs(tensor, model_inputs):
  """Indices of model inputs whose values `tensor` carries unchanged."""
  return {k for t, _ in _id_sources(tensor) for k, mi in enumerate(model_inputs)
          if t is mi}


def _reads_an_input(tensor):
  """Whether `tensor` is an input (of any model) passed through id-preserving ops."""
  return any(type(op).__name__ == "InputLayer" for _, op in _id_sources(tensor))


def embedding_vocab(model):
  """`{input index: smallest input_dim}` of the Embeddings each integer input feeds.

  An input's vocabulary is the smallest `input_dim` of the Embeddings that read that
  input's ids directly: through casts, reshapes, slices and the like only, never
  through a computed tensor, so a position Embedding (fed by positions computed from
  the tokens) does not count. When the walk finds no Embedding fed by any input
  (Embeddings inside nested models), every integer input gets the smallest `input_dim`
  of the Embeddings that read an input of their own model directly (of all Embeddings
  when none does).
  """
  import keras  # pylint: disable=g-import-not-at-top
  embeddings = [l for l in _layers.all_layers(model) if isinstance(l, keras.layers.Embedding)]
  vocab = {}
  for emb in embeddings:
    for t in _inputs_of(emb):
      for k in _source_inputs(t, model.inputs):
        vocab[k] = min(vocab.get(k, emb.input_dim), emb.input_dim)
  if embeddings and not vocab:
    direct = [e for e in embeddings
              if any(_reads_an_input(t) for t in _inputs_of(e))] or embeddings
    smallest = min(e.input_dim for e in direct)
    for k, (_, _, dtype) in enumerate(specs(model)):
      if _kind(dtype) == "int":
        vocab.setdefault(k, smallest)
  return vocab


def check_ranges(model, arrays, what="representative_data"):
  """Refuses token ids outside `[0, input_dim)` of the Embedding they feed.

  Raises:
    ExportError: naming the input and the valid range (LiteRT would fail with
      "GATHER index out of bounds").
  """
  vocab = embedding_vocab(model)
  for k, (name, _, dtype) in enumerate(specs(model)):
    if k in vocab and _kind(dtype) == "int":
      lo, hi = int(arrays[k].min()), int(arrays[k].max())
      if lo < 0 or hi >= vocab[k]:
        raise ExportError(f"{what} for input '{name}' holds ids in [{lo}, {hi}], but it feeds "
                          f"an Embedding with input_dim {vocab[k]}: ids must be in "
                          f"[0, {vocab[k]}).")


def random_samples(model, num_samples, seed):
  """Verification inputs drawn from a valid range per input dtype (see module doc)."""
  rng = np.random.default_rng(seed)
  vocab = embedding_vocab(model)
  out = []
  for k, (_, shape, dtype) in enumerate(specs(model)):
    full = (num_samples,) + shape
    kind = _kind(dtype)
    if kind == "bool":
      out.append(rng.random(full) < 0.5)
    elif kind == "int":
      out.append(rng.integers(0, vocab.get(k, SMALL_INT_RANGE), full).astype(dtype))
    else:
      out.append(rng.standard_normal(full).astype(dtype))
  return out
