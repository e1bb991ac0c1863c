"""LiteRT.js (`@litertjs/core`, the browser runtime): a float interface for int8 files.

LiteRT.js 2.5 passes float32, int32 and uint8 tensors only: a full-int8 file (int8
inputs and outputs, what `convert(..., quantize="int8")` writes) fails to run there with
"Element type INT8 is not supported". `float_io` wraps every int8 input in a QUANTIZE op
and every int8 output in a DEQUANTIZE op: the int8 graph in between is unchanged (same
weights, same kernels), and the float outputs are exactly the int8 outputs dequantized
with their scale and zero point when the float inputs quantize to the int8 inputs.
The web demo (tflite_demo/web) loads such files; tests/demo_web_test.py runs them in
headless Chromium and compares them with LiteRT (Python) and Keras (docs/export.md,
"LiteRT.js").
"""
import copy

from ai_edge_litert import schema_py_generated as schema

from tfprune.export import graph

# QUANTIZE float32 -> int8 is version 1; DEQUANTIZE of int8 needs version 2.
_QUANTIZE_VERSION = 1
_DEQUANTIZE_VERSION = 2


def _float_twin(subgraph, index):
  """Appends a float32 tensor shaped like `subgraph.tensors[index]`, named like it; the
  int8 tensor is renamed `<name>_int8`. Returns the new tensor's index."""
  src = subgraph.tensors[index]
  twin = schema.TensorT()
  twin.shape = copy.copy(src.shape)
  twin.shapeSignature = copy.copy(src.shapeSignature)
  twin.type = schema.TensorType.FLOAT32
  twin.buffer = 0  # the file's empty sentinel buffer: a runtime-filled tensor
  twin.name = src.name
  src.name = f"{graph.tensor_name(src)}_int8".encode()
  subgraph.tensors.append(twin)
  return len(subgraph.tensors) - 1


def float_io(model_bytes):
  """The same int8 model with float32 inputs and outputs (QUANTIZE / DEQUANTIZE added).

  Args:
    model_bytes: a single-subgraph .tflite whose int8 inputs/outputs carry one scale and
      zero point each (a full-int8 file written by `tfprune.export.convert`).

  Returns:
    The new file's bytes. Inputs and outputs keep their names, order and shapes; only
    their dtype becomes float32 (non-int8 ones are left as they are).

  Raises:
    ValueError: the file has several subgraphs, no int8 input or output, or an int8
      input/output without a single (per-tensor) scale.
  """
  model = graph.load(model_bytes)
  if len(model.subgraphs) != 1:
    raise ValueError(f"float_io: expected a single-subgraph .tflite, got "
                     f"{len(model.subgraphs)} subgraphs")
  sg = model.subgraphs[0]
  int8 = schema.TensorType.INT8

  def wrap(positions, code, version, before):
    moved = {}
    for pos, index in enumerate(positions):
      t = sg.tensors[index]
      if t.type != int8:
        continue
      q = t.quantization
      if q is None or q.scale is None or len(q.scale) != 1:
        raise ValueError(f"float_io: int8 tensor '{graph.tensor_name(t)}' needs one "
                         "per-tensor scale and zero point")
      twin = _float_twin(sg, index)
      op = schema.OperatorT()
      op.opcodeIndex = graph.get_opcode_index(model, code, version)
      op.inputs, op.outputs = ([twin], [index]) if before else ([index], [twin])
      if before:
        sg.operators.insert(0, op)
      else:
        sg.operators.append(op)
      positions[pos] = twin
      moved[index] = twin
    return moved

  sg.inputs, sg.outputs = list(sg.inputs), list(sg.outputs)
  moved = wrap(sg.inputs, schema.BuiltinOperator.QUANTIZE, _QUANTIZE_VERSION, True)
  moved.update(wrap(sg.outputs, schema.BuiltinOperator.DEQUANTIZE, _DEQUANTIZE_VERSION,
                    False))
  if not moved:
    raise ValueError("float_io: the file has no int8 input or output (it already has a "
                     "float interface)")
  for sig in model.signatureDefs or []:
    for tmap in list(sig.inputs or []) + list(sig.outputs or []):
      tmap.tensorIndex = moved.get(tmap.tensorIndex, tmap.tensorIndex)
  return graph.dump(model)
