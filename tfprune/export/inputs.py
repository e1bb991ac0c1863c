"""Model inputs for calibration and verification: typed, several inputs, finite.

A Keras model may take several inputs, and integer ones (token ids feeding an
`Embedding`) or booleans. The exporter keeps every input's dtype end to end:
representative data is cast to each input's dtype (never to float32), and the
converter keeps integer inputs integer (an int8 model of a token classifier
still takes int32 ids, docs/export.md). Verification inputs come from the
representative data when given, else from a valid range per input: floats
standard normal, booleans random, integers in `[0, input_dim)` of the
`Embedding` they feed (found per input by walking the Keras graph, nested models
included), else in `[0, SMALL_INT_RANGE)` (a padding mask: 0 / 1). `resolve_shapes`
fixes dynamic (None) dimensions from `input_shapes=` or the representative data.
"""
import numpy as np

from tfprune import _layers
from tfprune.export.errors import ExportError

SMALL_INT_RANGE = 2
# The vocabulary walk is shared with the liveness probes (tfprune/_layers.py).
embedding_vocab = _layers.embedding_vocab


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


def _shape_arg(value, name, spec_shape):
  """One entry of `input_shapes`, validated against the input's own shape."""
  try:
    shape = tuple(value)
  except TypeError:
    shape = None
  if shape is None or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool)
                              and d > 0 for d in shape):
    raise ExportError(f"input_shapes for input '{name}' must be a tuple of positive ints "
                      f"(the shape without the batch dimension), got {value!r}.")
  shape = tuple(int(d) for d in shape)
  if len(shape) != len(spec_shape) or any(
      s is not None and s != d for s, d in zip(spec_shape, shape)):
    raise ExportError(f"input_shapes for input '{name}' is {shape}, but the input has shape "
                      f"{spec_shape} (batch left out): give the same rank and keep the "
                      f"fixed dimensions, replacing only the None ones.")
  return shape


def resolve_shapes(model, samples=None, input_shapes=None):
  """Every input's full shape (batch left out) for conversion, and what was fixed.

  TFLite needs a fixed shape; a `None` non-batch dimension (a text model's sequence
  length) is taken from `input_shapes` when given, else from the samples (the
  representative data). A converted file then takes exactly that length.

  Args:
    model: the Keras model.
    samples: arrays from `as_samples` (or None).
    input_shapes: None; a dict `{input name: shape}`; a list with one shape per input
      (model input order); or, for a single input, one shape. Shapes leave the batch
      dimension out.

  Returns:
    `(shapes, notes)`: one tuple per input, and one sentence per input whose dynamic
    dimensions were fixed.

  Raises:
    ExportError: naming the input, on an invalid `input_shapes` entry, samples that do
      not have that shape, or a dimension that stays dynamic.
  """
  sp = specs(model)
  names = [n for n, _, _ in sp]
  given = [None] * len(sp)
  if input_shapes is not None:
    if not isinstance(input_shapes, (dict, list, tuple)):
      raise ExportError(f"input_shapes must be a dict by input name or a list with one shape "
                        f"per input {names}, got {input_shapes!r}.")
    if isinstance(input_shapes, dict):
      unknown = [k for k in input_shapes if k not in names]
      if unknown:
        raise ExportError(f"input_shapes names {unknown}, not inputs of model "
                          f"'{model.name}' (its inputs: {names}).")
      given = [input_shapes.get(n) for n in names]
    elif len(sp) == 1 and not (len(input_shapes) and isinstance(input_shapes[0], (list, tuple))):
      given = [input_shapes]
    elif isinstance(input_shapes, (list, tuple)) and len(input_shapes) == len(sp):
      given = list(input_shapes)
    else:
      raise ExportError(f"input_shapes must be a dict by input name or a list with one shape "
                        f"per input {names}, got {input_shapes!r}.")
  given = [None if g is None else _shape_arg(g, name, shape)   # every entry checked first
           for g, (name, shape, _) in zip(given, sp)]
  shapes, notes = [], []
  for k, (name, shape, _) in enumerate(sp):
    fixed, source = shape, None
    if given[k] is not None:
      fixed, source = given[k], "input_shapes"
    if samples is not None:
      got = tuple(samples[k].shape[1:])
      if source is not None and got != fixed:
        raise ExportError(f"representative_data for input '{name}' has shape [n, "
                          f"{', '.join(map(str, got))}], but input_shapes gives {fixed}.")
      if source is None and None in shape:
        fixed, source = got, "the representative data"
    if None in fixed:
      raise ExportError(
          f"model '{model.name}' input '{name}' has shape {shape} (batch left out): TFLite "
          f"needs every dimension but the batch fixed. Pass input_shapes={{'{name}': "
          f"{tuple(8 if d is None else d for d in shape)}}} (e.g. the padded sequence "
          f"length), or representative_data of that shape.")
    if None in shape:
      notes.append(f"fixed the dynamic dimension(s) of input '{name}' {shape} to {fixed} "
                   f"from {source}: the file takes exactly that shape")
    shapes.append(fixed)
  return shapes, notes


def random_samples(model, num_samples, seed, shapes=None):
  """Verification inputs drawn from a valid range per input dtype (see module doc);
  `shapes` (from `resolve_shapes`) replaces the inputs' own, dynamic ones."""
  rng = np.random.default_rng(seed)
  vocab = embedding_vocab(model)
  out = []
  for k, (_, shape, dtype) in enumerate(specs(model)):
    shape = shape if shapes is None else tuple(shapes[k])
    full = (num_samples,) + shape
    kind = _kind(dtype)
    if kind == "bool":
      out.append(rng.random(full) < 0.5)
    elif kind == "int":
      out.append(rng.integers(0, vocab.get(k, SMALL_INT_RANGE), full).astype(dtype))
    else:
      out.append(rng.standard_normal(full).astype(dtype))
  return out
