"""Calibration data for the layer-wise engine: ONE set of checks for every path.

`calibration_batches` (single device) and `calibration_dataset` (a `tf.distribute`
strategy) accept the same inputs - an array, an `(x, ...)` tuple / list whose first
entry is the inputs, or a `tf.data.Dataset` of inputs or `(x, y)` pairs - and reject the
same bad data (wrong shape, non-numeric dtype, dict elements, nothing at all) with the
same message, naming the model's input and the expected shape, before any pass over the
data. Labels are ignored. Integer inputs (token ids) keep an integer dtype when the
model's input is integer, everything else becomes float32.
"""
import keras
import numpy as np
import tensorflow as tf


def input_spec(model):
  """The model's single symbolic input (raises a clear error otherwise)."""
  try:
    inputs = model.inputs
  except (AttributeError, ValueError):
    inputs = None
  if not inputs:
    raise ValueError(f"Model {model.name!r} has no symbolic inputs: layer-wise pruning "
                     f"needs a Sequential model with an Input shape or a Functional model.")
  if len(inputs) != 1:
    raise ValueError(f"Model {model.name!r} has {len(inputs)} inputs; layer-wise pruning "
                     f"supports single-input models.")
  return inputs[0]


class _Checker:
  """Shape / dtype checks against a model's input, shared by both paths."""

  def __init__(self, model):
    spec = input_spec(model)
    self.expected = tuple(spec.shape[1:])
    self.where = f"model {model.name!r} input {spec.name!r}"
    dtype = tf.as_dtype(keras.backend.standardize_dtype(spec.dtype))
    self.dtype = dtype if dtype.is_integer else tf.float32

  def element(self, shape, dtype, batched=True):
    """Checks one element's (batch) shape and dtype; returns True if it is unbatched."""
    dtype = tf.as_dtype(dtype)
    if not (dtype.is_floating or dtype.is_integer):
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


def _inputs_only(data, checker):
  """(source, kind): the inputs of `data`, as an array or a dataset of inputs."""
  if isinstance(data, (tuple, list)) and data and not np.isscalar(data[0]):
    data = data[0]
  if isinstance(data, tf.data.Dataset):
    element = data.element_spec
    if isinstance(element, (tuple, list)):
      data = data.map(lambda *e: e[0])
      element = element[0]
    if isinstance(element, dict):
      raise ValueError(f"Calibration dataset yields a dict; {checker.where} expects a "
                       f"tensor of shape (batch,) + {checker.expected}.")
    return data, "dataset"
  if isinstance(data, dict):
    raise ValueError(f"Calibration data is a dict; {checker.where} expects an array of "
                     f"shape (batch,) + {checker.expected}.")
  arr = np.asarray(data)
  if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or
                                 arr.dtype == bool):
    raise ValueError(f"Calibration data for {checker.where} must be numeric, got dtype "
                     f"{arr.dtype}.")
  return arr, "array"


def calibration_batches(data, model, batch_size=256, max_samples=None):
  """Yields input batches from arrays, `(x, y)` tuples or a `tf.data.Dataset`.

  Labels are ignored. Unbatched datasets are batched. At most `max_samples` samples.

  Raises:
    ValueError: the data do not match the model's input shape or are not numeric
      (naming the model's input layer and the expected shape), or are empty.
  """
  checker = _Checker(model)
  source, how = _inputs_only(data, checker)
  if how == "dataset":
    if checker.element(source.element_spec.shape, source.element_spec.dtype):
      source = source.batch(batch_size)
    batches = iter(source)
  else:
    if source.ndim == 0:
      raise ValueError(f"Calibration data for {checker.where} is a scalar; expected "
                       f"(batch,) + {checker.expected}.")
    checker.element((None,) + source.shape[1:], tf.as_dtype(source.dtype))
    batches = (source[i:i + batch_size] for i in range(0, len(source), batch_size))
  seen = 0
  for batch in batches:
    batch = tf.convert_to_tensor(batch)
    checker.element(batch.shape, batch.dtype)
    batch = checker.cast(batch)
    if max_samples is not None:
      batch = batch[:max_samples - seen]
    if batch.shape[0] == 0:
      break
    seen += int(batch.shape[0])
    yield batch
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
    ValueError: as `calibration_batches`, before any pass over the data.
  """
  checker = _Checker(model)
  source, how = _inputs_only(data, checker)
  if how == "array":
    if source.ndim == 0 or len(source) == 0:
      raise ValueError(f"Calibration data for {checker.where} is empty.")
    checker.element((None,) + source.shape[1:], tf.as_dtype(source.dtype))
    if max_samples is not None:
      source = source[:int(max_samples)]
    ds = tf.data.Dataset.from_tensor_slices(source)
  else:
    spec = source.element_spec
    ds = source if checker.element(spec.shape, spec.dtype) else source.unbatch()
    if max_samples is not None:
      ds = ds.take(int(max_samples))
  return ds.map(checker.cast).batch(int(batch_size))


def extractor(model, layers):
  """Sub-model from the model input to the inputs of the top-level `layers`."""
  spec = input_spec(model)
  outputs = []
  for layer in layers:
    try:
      outputs.append(layer.input)
    except (AttributeError, ValueError) as e:
      raise ValueError(f"Layer {layer.name!r} is called more than once or is not "
                       f"connected; layer-wise pruning needs its single input.") from e
  return keras.Model(spec, outputs)
