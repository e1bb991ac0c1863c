"""Calibration data for the layer-wise engine: ONE set of checks for every path.

`calibration_batches` (single device) and `calibration_dataset` (a `tf.distribute`
strategy) accept the same inputs - an array, an `(x, ...)` tuple / list whose first
entry is the inputs, or a `tf.data.Dataset` of inputs or `(x, y)` pairs - and reject the
same bad data (wrong shape, non-numeric dtype, wrong structure, nothing at all) with the
same message, naming the model's input and the expected shape, before any pass over the
data. Labels are ignored. Integer inputs (token ids) keep an integer dtype when the
model's input is integer, everything else becomes float32.

Multi-input models (keras_hub's text backbones: `token_ids`, `padding_mask`, ...) take
the inputs as a dict keyed by input name (or by the model's own dict keys, any order),
or as a list / tuple with one array per input in `model.inputs` order; a dataset may
yield such dicts / tuples, or `(inputs, y)` pairs. Batches are yielded in the model's own
input structure, so `model(batch)` works. `signature`, `batch_len`, `take` and `cast`
are the structure-aware helpers the engine and the BatchNorm re-calibration use.
"""
import keras
import numpy as np
import tensorflow as tf


def input_tensors(model):
  """The model's symbolic inputs (`model.inputs` order); raises a clear error if none."""
  try:
    inputs = model.inputs
  except (AttributeError, ValueError):
    inputs = None
  if not inputs:
    raise ValueError(f"Model {model.name!r} has no symbolic inputs: layer-wise pruning "
                     f"needs a Sequential model with an Input shape or a Functional model.")
  return list(inputs)


def input_spec(model):
  """The model's single symbolic input (raises a clear error otherwise)."""
  inputs = input_tensors(model)
  if len(inputs) != 1:
    raise ValueError(f"Model {model.name!r} has {len(inputs)} inputs "
                     f"{[t.name for t in inputs]}; use `signature(model)` for all of them.")
  return inputs[0]


def _dtype(tensor):
  dtype = tf.as_dtype(keras.backend.standardize_dtype(tensor.dtype))
  return dtype if (dtype.is_integer or dtype.is_bool) else tf.float32


def _structure(model):
  """The model's input structure (`model.input`; a never-called Sequential: its inputs)."""
  try:
    return model.input
  except (AttributeError, ValueError):
    inputs = input_tensors(model)
    return inputs[0] if len(inputs) == 1 else inputs


def _pack(model, flat):
  """Per-input values (`model.inputs` order) in the model's input structure."""
  struct = _structure(model)
  if isinstance(struct, (dict, list, tuple)):
    return keras.tree.pack_sequence_as(struct, list(flat))
  return flat[0]


def signature(model):
  """`tf.TensorSpec`s (batch None) in the model's input structure, for `tf.function`."""
  return _pack(model, [tf.TensorSpec([None] + list(t.shape[1:]), _dtype(t))
                       for t in input_tensors(model)])


def batch_len(x):
  """The number of samples of a batch (any input structure)."""
  return int(keras.tree.flatten(x)[0].shape[0])


def take(x, start, stop):
  """Samples `start:stop` of a batch (any input structure)."""
  return keras.tree.map_structure(lambda a: a[start:stop], x)


def cast(x, spec):
  """A batch cast to the dtypes of `spec` (from `signature`), structure kept."""
  return keras.tree.map_structure(lambda a, s: a if a.dtype == s.dtype else tf.cast(a, s.dtype),
                                  x, spec)


class _One:
  """Shape / dtype checks against one model input."""

  def __init__(self, model, tensor):
    self.expected = tuple(tensor.shape[1:])
    self.where = f"model {model.name!r} input {tensor.name!r}"
    self.dtype = _dtype(tensor)

  def element(self, shape, dtype, batched=True):
    """Checks one element's (batch) shape and dtype; returns True if it is unbatched."""
    dtype = tf.as_dtype(dtype)
    if not (dtype.is_floating or dtype.is_integer or dtype.is_bool):
      raise ValueError(f"Calibration data for {self.where} must be numeric, got dtype "
                       f"{dtype.name}.")
    shape = tuple(shape)
    if not batched or len(shape) == len(self.expected):
      inner, unbatched = shape, True
    else:
      inner, unbatched = shape[1:], False
    if len(inner) != len(self.expected) or any(
        e is not None and s is not None and s != e for s, e in zip(inner, self.expected)):
      raise ValueError(f"Calibration batch of shape {shape} does not fit {self.where}: "
                       f"expected (batch,) + {self.expected}.")
    return unbatched

  def cast(self, x):
    return x if x.dtype == self.dtype else tf.cast(x, self.dtype)


class _Checker:
  """Structure, shape and dtype checks against a model's inputs, shared by both paths."""

  def __init__(self, model):
    self.model = model
    tensors = input_tensors(model)
    self.parts = [_One(model, t) for t in tensors]
    self.names = [t.name for t in tensors]
    struct = _structure(model)
    keys = {id(v): k for k, v in struct.items()} if isinstance(struct, dict) else {}
    self.keys = [keys.get(id(t), t.name) for t in tensors]
    self.multi = len(tensors) > 1
    first = self.parts[0]
    self.where = first.where
    self.expected = first.expected
    self.layout = ", ".join(f"{k!r}: (batch,) + {p.expected}"
                            for k, p in zip(self.keys, self.parts))

  def _structure_error(self, got):
    return ValueError(
        f"Model {self.model.name!r} has {len(self.parts)} inputs; calibration data must "
        f"be a dict by input name {{{self.layout}}} (any key order), a list / tuple of "
        f"{len(self.parts)} arrays in that order, or a dataset of either (or of (inputs, "
        f"y) pairs); got {got}.")

  def split(self, data):
    """Per-input values (`model.inputs` order) of one structured input value."""
    if not self.multi:
      if isinstance(data, dict):  # keras_hub's style: {"images": x} for one input
        if len(data) == 1 and next(iter(data)) in (self.keys[0], self.names[0]):
          return list(data.values())
        raise ValueError(f"Calibration data is a dict with keys {sorted(map(str, data))}; "
                         f"{self.where} expects a tensor of shape (batch,) + "
                         f"{self.expected} (or a dict with the one key "
                         f"{self.keys[0]!r}).")
      return [data]
    if isinstance(data, dict):
      by = {}
      for key, name in zip(self.keys, self.names):
        by[key] = key if key in data else name
      missing = [k for k in self.keys if by[k] not in data]
      known = set(self.keys) | set(self.names)
      extra = [k for k in data if k not in known]
      if missing or extra:
        raise self._structure_error(f"a dict with keys {sorted(map(str, data))} (missing "
                                    f"{missing}, unknown {extra})")
      return [data[by[k]] for k in self.keys]
    if isinstance(data, (list, tuple)) and len(data) == len(self.parts):
      return list(data)
    what = (f"a {type(data).__name__} of {len(data)}" if isinstance(data, (list, tuple))
            else f"one {type(data).__name__}")
    raise self._structure_error(what)

  def pack(self, flat):
    return _pack(self.model, flat)


def _is_inputs(data, checker):
  """For a multi-input model: whether a list / tuple is the inputs (not `(x, y)`)."""
  return not isinstance(data[0], (dict, list, tuple)) and len(data) == len(checker.parts)


def _inputs_only(data, checker):
  """(flat sources, kind): the inputs of `data` per model input, arrays or one dataset."""
  if isinstance(data, (tuple, list)) and data and not np.isscalar(data[0]):
    if not checker.multi or not _is_inputs(data, checker):
      data = data[0]
  if isinstance(data, tf.data.Dataset):
    element = data.element_spec
    if isinstance(element, (tuple, list)) and not (
        checker.multi and not isinstance(element[0], (dict, tuple, list))
        and len(element) == len(checker.parts)):
      data = data.map(lambda *e: e[0])
      element = element[0]
    if isinstance(element, dict) and not checker.multi:
      raise ValueError(f"Calibration dataset yields a dict; {checker.where} expects a "
                       f"tensor of shape (batch,) + {checker.expected}.")
    if checker.multi:
      checker.split(element)  # structure checked before any pass
    return data, "dataset"
  arrays = []
  for part, arr in zip(checker.parts, checker.split(data)):
    arr = np.asarray(arr)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or
                                   arr.dtype == bool):
      raise ValueError(f"Calibration data for {part.where} must be numeric, got dtype "
                       f"{arr.dtype}.")
    if arr.ndim == 0:
      raise ValueError(f"Calibration data for {part.where} is a scalar; expected "
                       f"(batch,) + {part.expected}.")
    part.element((None,) + arr.shape[1:], tf.as_dtype(arr.dtype))
    arrays.append(arr)
  if len({len(a) for a in arrays}) > 1:
    raise ValueError(f"Calibration data for model {checker.model.name!r} holds different "
                     f"sample counts {[len(a) for a in arrays]} for inputs {checker.keys}.")
  return arrays, "array"


def calibration_batches(data, model, batch_size=256, max_samples=None):
  """Yields input batches from arrays, `(x, y)` tuples or a `tf.data.Dataset`.

  Labels are ignored. Unbatched datasets are batched. At most `max_samples` samples.
  Multi-input models: see the module docstring; batches come in the model's input
  structure.

  Raises:
    ValueError: the data do not match the model's inputs (structure, shape, numeric
      dtype: naming the model's input and the expected shape), or are empty.
  """
  checker = _Checker(model)
  source, how = _inputs_only(data, checker)
  if how == "dataset":
    specs = checker.split(source.element_spec)
    unbatched = [p.element(s.shape, s.dtype) for p, s in zip(checker.parts, specs)]
    if unbatched[0]:
      source = source.batch(batch_size)
    batches = (checker.split(b) for b in iter(source))
  else:
    batches = ([a[i:i + batch_size] for a in source]
               for i in range(0, len(source[0]), batch_size))
  seen = 0
  for flat in batches:
    out = []
    for part, batch in zip(checker.parts, flat):
      batch = tf.convert_to_tensor(batch)
      part.element(batch.shape, batch.dtype)
      batch = part.cast(batch)
      if max_samples is not None:
        batch = batch[:max_samples - seen]
      out.append(batch)
    if out[0].shape[0] == 0:
      break
    seen += int(out[0].shape[0])
    yield checker.pack(out)
    if max_samples is not None and seen >= max_samples:
      break
  if seen == 0:
    raise ValueError(f"Calibration data for {checker.where} is empty.")


def calibration_dataset(data, model, batch_size=256, max_samples=None):
  """A batched `tf.data.Dataset` of checked inputs, for a `tf.distribute` strategy.

  Same inputs and checks as `calibration_batches` (the strategy path must not accept
  data the single-device path rejects); batches are GLOBAL (split over the replicas).

  Args:
    data: an array, an `(x, ...)` tuple / list of arrays, or a `tf.data.Dataset` of
      inputs or `(x, y)` pairs (batched or not).
    model: the model whose input the data must fit.
    batch_size: global batch size for arrays and unbatched datasets.
    max_samples: keep at most this many samples.

  Returns:
    A `tf.data.Dataset` of input batches (float32, or the model's integer dtype).

  Raises:
    ValueError: as `calibration_batches`, before any pass over the data; a model with
      several inputs (the strategy path reads one input tensor per batch: prune it on a
      single device).
  """
  checker = _Checker(model)
  source, how = _inputs_only(data, checker)
  if checker.multi:
    raise ValueError(f"Model {model.name!r} has {len(checker.parts)} inputs: layer-wise "
                     f"pruning under a tf.distribute strategy supports single-input models; "
                     f"prune it without `strategy` (single device).")
  part = checker.parts[0]
  if how == "array":
    source = source[0]
    if len(source) == 0:
      raise ValueError(f"Calibration data for {checker.where} is empty.")
    if max_samples is not None:
      source = source[:int(max_samples)]
    ds = tf.data.Dataset.from_tensor_slices(source)
  else:
    spec = source.element_spec
    ds = source if part.element(spec.shape, spec.dtype) else source.unbatch()
    if max_samples is not None:
      ds = ds.take(int(max_samples))
  return ds.map(part.cast).batch(int(batch_size))


def extractor(model, layers):
  """Sub-model from the model inputs (its own structure) to the inputs of `layers`."""
  input_tensors(model)
  outputs = []
  for layer in layers:
    try:
      outputs.append(layer.input)
    except (AttributeError, ValueError) as e:
      raise ValueError(f"Layer {layer.name!r} is called more than once or is not "
                       f"connected; layer-wise pruning needs its single input.") from e
  return keras.Model(_structure(model), outputs)
