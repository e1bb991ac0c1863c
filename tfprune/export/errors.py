"""Named exporter errors (every error class of `tfprune.export`), and turning TFLite
converter failures into them.

* `ExportError`: the model or data cannot be exported as asked (raised before
  conversion where possible).
* `VerificationError`: a converted file disagrees with the Keras model, or fails to run,
  under a targeted runtime.
* `InvalidTFLiteError`: bytes that are not a readable TFLite file (`inspect`), and its
  subclass `MalformedFlatbufferError`: an offset or length out of bounds (`fbverify`).
* `UndecodableSparseTensor`: the converter wrote a sparse layout that does not decode.

The TFLite converter reports an unsupported op as an MLIR diagnostic such as

  loc(callsite(fused["MatrixInverse:", "functional_1/bad_inv_1/MatrixInverse@..."]
  ...)): error: 'tf.MatrixInverse' op is neither a custom op nor a flex op

`converter_error` reads the op names and the TF name scopes out of that text,
maps the scopes back to the Keras layers (TF appends `_1`, `_2` to scope names),
and says what to do (docs/export.md, "Converting Keras 3 models").
"""
import re

_OP = re.compile(r"'tf\.(\w+)' op")
_SELECT = re.compile(r"TF Select ops: ([\w, ]+)")
_SCOPE = re.compile(r'fused\["[^"]*", "([^"@]+)@')
_SUFFIX = re.compile(r"_\d+$")
# Ops seen in converter errors and what they mean for a Keras user.
_HINTS = {
    "TensorListReserve": "a recurrent layer that was not unrolled (give the Input a fixed "
                         "sequence length so the exporter can unroll it)",
    "EagerPyFunc": "tf.py_function / tf.numpy_function (Python code cannot run in TFLite)",
    "PyFunc": "tf.py_function / tf.numpy_function (Python code cannot run in TFLite)",
    "PyFuncStateless": "tf.py_function / tf.numpy_function (Python code cannot run in TFLite)",
}


class ExportError(ValueError):
  """The model cannot be exported as asked; the message says why and what to do."""


class VerificationError(RuntimeError):
  """A converted model disagrees with the Keras model (or fails to run).

  `conversion_at_fault`: the dense conversion of the same graph disagrees as well (the
  converter, not tfprune's sparse encoding).
  """

  def __init__(self, message, conversion_at_fault=False):
    super().__init__(message)
    self.conversion_at_fault = conversion_at_fault


class InvalidTFLiteError(ValueError):
  """The bytes are not a readable TFLite flatbuffer."""


class MalformedFlatbufferError(InvalidTFLiteError):
  """The bytes are not a well-formed TFLite flatbuffer; the message says where."""


class UndecodableSparseTensor(ValueError):
  """A sparse constant in the converter's output whose layout does not decode.

  Seen: with EXPERIMENTAL_SPARSITY the full-int8 converter stores the weights of a
  FULLY_CONNECTED narrower than 16 inputs in 1x16 blocks; that file computes wrong
  outputs (docs/export.md, "Correctness traps").
  """


def _layer_names(model):
  from tfprune import _layers  # pylint: disable=g-import-not-at-top
  return {layer.name: type(layer).__name__ for layer in _layers.all_layers(model)}


def _match_layer(scope, names):
  """Deepest component of a TF name scope that names a Keras layer, or None."""
  found = None
  for part in scope.split("/")[1:]:
    candidates = [part]
    while _SUFFIX.search(candidates[-1]):
      candidates.append(_SUFFIX.sub("", candidates[-1]))
    for c in candidates:
      if c in names:
        found = c
        break
  return found


def failed_ops(message):
  """TF op names a converter message complains about, in order, each once."""
  ops = []
  for m in list(_OP.finditer(message)) + list(_SELECT.finditer(message)):
    for op in m.group(1).split(","):
      op = op.strip()
      if op and op not in ops:
        ops.append(op)
  return ops


def failed_layers(message, model):
  """`[(layer name, class name)]` of the Keras layers named in a converter message."""
  names = _layer_names(model)
  out = []
  for m in _SCOPE.finditer(message):
    name = _match_layer(m.group(1), names)
    if name and (name, names[name]) not in out:
      out.append((name, names[name]))
  return out


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _first_error_line(message, limit=400):
  """The converter's first `error:` line, else the message on one line (ANSI codes removed)."""
  message = _ANSI.sub("", message)
  for line in message.splitlines():
    if "error:" in line:
      return line.split("error:", 1)[1].strip()[:limit]
  text = " ".join(l.strip() for l in message.splitlines() if l.strip())
  return text[:limit] + ("..." if len(text) > limit else "")


def converter_error(exc, model, quantize=None, log=""):
  """An `ExportError` describing a failed conversion of `model`.

  Args:
    exc: the exception the converter (or the SavedModel export before it) raised.
    model: the Keras model being converted (used to name the failing layers).
    quantize: the quantization asked for (named in the message).
    log: captured converter output, searched for op and layer names too.

  Returns:
    An `ExportError` (raise it `from exc`).
  """
  text = f"{exc}\n{log}"
  ops = failed_ops(text)
  layers = failed_layers(text, model)
  where = ", ".join(f"'{n}' ({c})" for n, c in layers) or "(layer not identified)"
  kind = f"quantize={quantize!r}" if quantize else "float"
  if ops:
    hints = [f"{op}: {_HINTS[op]}" for op in ops if op in _HINTS]
    msg = (f"Cannot convert model '{model.name}' ({kind}) to TFLite: layer {where} uses "
           f"TensorFlow op(s) {', '.join(ops)}, which have no TFLite builtin kernel (only the "
           f"Flex delegate would run them, and neither the LiteRT pip package nor TFLite Micro "
           f"has it). ")
    if hints:
      msg += "(" + "; ".join(hints) + ") "
    msg += ("Rewrite that layer with ops TFLite supports (keras.ops / tf ops with a builtin "
            "kernel, see docs/export.md) or move the computation out of the model.")
  else:
    msg = (f"Cannot convert model '{model.name}' ({kind}) to TFLite: "
           f"{type(exc).__name__}: {_first_error_line(str(exc)) or repr(exc)}. Layer(s) named by "
           f"the converter: {where}. If this is an op or dtype TFLite lacks, rewrite that layer "
           f"(see docs/export.md); rerun with verbose=True (--verbosity=1) for the converter log.")
  return ExportError(msg)
