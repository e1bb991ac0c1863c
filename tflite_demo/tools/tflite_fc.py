"""Reads int8 FULLY_CONNECTED layers out of a .tflite file and runs them through the
demo's portable C++ kernel (host build, loaded with ctypes).

Used by the tests (tests/demo_micro_test.py), the benchmark (bench/micro_bench.py) and
the asset script. Depends on numpy and ai_edge_litert only -- never on tfprune: the demo
consumes exported files, it does not know how they were made.
"""
import ctypes
import os
import re
import subprocess

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.tools import flatbuffer_utils

MICRO_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "micro")

_FC = schema.BuiltinOperator.FULLY_CONNECTED
_INDEX_UNION = {
    schema.SparseIndexVector.Int32Vector: 1,
    schema.SparseIndexVector.Uint16Vector: 2,
    schema.SparseIndexVector.Uint8Vector: 3,
}
_INDEX_DTYPES = {1: np.int32, 2: np.uint16, 3: np.uint8}


def read_c_array(path):
  """Returns the bytes of every `unsigned char NAME[] = {0x.., ...};` array in a C file.

  Args:
    path: a generated model_data.cc.

  Returns:
    dict name -> bytes.
  """
  text = open(path).read()
  arrays = {}
  for m in re.finditer(r"unsigned char\s+(\w+)\[\]\s*=\s*\{([^}]*)\}", text):
    arrays[m.group(1)] = bytes(int(v, 16) for v in re.findall(r"0x([0-9a-fA-F]{2})", m.group(2)))
  return arrays


def _opcode(model, op):
  code = model.operatorCodes[op.opcodeIndex]
  return max(code.builtinCode, code.deprecatedBuiltinCode), code.version


def fc_layers(model_bytes):
  """Parses the FULLY_CONNECTED ops of subgraph 0, in execution order.

  Args:
    model_bytes: a full-int8 .tflite model.

  Returns:
    list of dicts: rows, cols, activation, version, bias (int32 or None), input/output scale and
    zero point, filter_scales (float32, 1 or rows entries), and either `weights`
    ([rows, cols] int8, dense) or the block-sparse arrays `values`, `segments`,
    `indices` with `segments_type` / `indices_type` (1 int32, 2 uint16, 3 uint8).

  Raises:
    ValueError: an FC op is not int8 or its sparse format is not 1x16 blocks.
  """
  model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
  graph = model.subgraphs[0]
  layers = []
  for op in graph.operators:
    code, version = _opcode(model, op)
    if code != _FC:
      continue
    x, w = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]]
    has_bias = len(op.inputs) > 2 and op.inputs[2] >= 0
    y = graph.tensors[op.outputs[0]]
    if not (x.type == w.type == y.type == schema.TensorType.INT8):
      raise ValueError(f"FULLY_CONNECTED {w.name!r} is not full int8")
    rows, cols = (int(d) for d in w.shape)
    data = np.frombuffer(bytes(model.buffers[w.buffer].data), np.int8)
    layer = dict(
        name=w.name.decode() if isinstance(w.name, bytes) else w.name,
        rows=rows, cols=cols, version=version,
        activation=int(op.builtinOptions.fusedActivationFunction),
        bias=(np.frombuffer(bytes(model.buffers[graph.tensors[op.inputs[2]].buffer].data),
                            np.int32).copy() if has_bias else None),
        input_scale=float(x.quantization.scale[0]),
        input_zero_point=int(x.quantization.zeroPoint[0]),
        output_scale=float(y.quantization.scale[0]),
        output_zero_point=int(y.quantization.zeroPoint[0]),
        filter_scales=np.asarray(w.quantization.scale, np.float32),
        filter_zero_points=np.asarray(w.quantization.zeroPoint, np.int64),
        sparse=w.sparsity is not None,
    )
    if w.sparsity is None:
      layer["weights"] = data.reshape(rows, cols).copy()
    else:
      s = w.sparsity
      dims = s.dimMetadata
      if (list(s.traversalOrder) != [0, 1, 2] or list(s.blockMap) != [1] or len(dims) != 3
          or dims[0].format != schema.DimensionType.DENSE or dims[0].denseSize != rows
          or dims[1].format != schema.DimensionType.SPARSE_CSR
          or dims[2].format != schema.DimensionType.DENSE or dims[2].denseSize != 16):
        raise ValueError(f"FULLY_CONNECTED {layer['name']!r}: not the 1x16 block format")
      seg_t = _INDEX_UNION[dims[1].arraySegmentsType]
      idx_t = _INDEX_UNION[dims[1].arrayIndicesType]
      layer.update(
          values=data.copy(),
          segments=np.asarray(dims[1].arraySegments.values, _INDEX_DTYPES[seg_t]),
          indices=np.asarray(dims[1].arrayIndices.values, _INDEX_DTYPES[idx_t]),
          segments_type=seg_t, indices_type=idx_t)
    layers.append(layer)
  return layers


def densify(layer):
  """[rows, cols] int8 weights of a layer (dense or 1x16 block-sparse)."""
  if not layer["sparse"]:
    return layer["weights"]
  rows, cols = layer["rows"], layer["cols"]
  blocks = -(-cols // 16)
  dense = np.zeros((rows, blocks * 16), np.int8)
  seg, idx, vals = layer["segments"], layer["indices"], layer["values"].reshape(-1, 16)
  for r in range(rows):
    for k in range(int(seg[r]), int(seg[r + 1])):
      dense[r, int(idx[k]) * 16:(int(idx[k]) + 1) * 16] = vals[k]
  return dense[:, :cols]


def macs(layer):
  """Multiply-accumulates per sample: stored weights (blocks * 16) or rows * cols."""
  if layer["sparse"]:
    return int(layer["values"].size)
  return layer["rows"] * layer["cols"]


def build_host_library(build_dir, cxx="g++"):
  """Builds libsparse_fc_host.so with the micro Makefile's `host` target.

  Returns:
    path of the shared library.
  """
  os.makedirs(build_dir, exist_ok=True)
  subprocess.run(["make", "-s", "-C", MICRO_DIR, "host", f"BUILD_DIR={os.path.abspath(build_dir)}",
                  f"CXX={cxx}"], check=True, capture_output=True, text=True)
  return os.path.join(os.path.abspath(build_dir), "libsparse_fc_host.so")


class HostKernel:
  """ctypes binding of host_capi.cc."""

  def __init__(self, library_path):
    lib = ctypes.CDLL(library_path)
    p, i32, f32 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_float
    lib.tfp_layer_create.restype = p
    lib.tfp_layer_create.argtypes = [i32, i32, p, i32, i32, p, i32, i32, p, i32, p, f32, i32,
                                     p, i32, f32, i32, i32]
    lib.tfp_layer_destroy.argtypes = [p]
    lib.tfp_layer_quant.restype = i32
    lib.tfp_layer_quant.argtypes = [p, p, p]
    lib.tfp_layer_run.argtypes = [p, p, i32, p]
    lib.tfp_chain_run.argtypes = [p, i32, p, i32, p, i32, p]
    lib.tfp_chain_time_ns.restype = ctypes.c_double
    lib.tfp_chain_time_ns.argtypes = [p, i32, p, i32, p, i32, p, i32]
    self.lib = lib

  def create(self, layer):
    """Returns a `HostLayer` for one parsed layer dict (see `fc_layers`)."""
    return HostLayer(self, layer)

  def chain(self, layers):
    return HostChain(self, [self.create(l) for l in layers])


def _ptr(a):
  return None if a is None else a.ctypes.data


class HostLayer:
  """One FC layer inside the C++ kernel; keeps the numpy arrays it points to alive."""

  def __init__(self, kernel, layer):
    self.kernel, self.layer = kernel, layer
    self._keep = []
    def keep(a, dtype):
      a = np.ascontiguousarray(a, dtype)
      self._keep.append(a)
      return a
    bias = None if layer["bias"] is None else keep(layer["bias"], np.int32)
    scales = keep(layer["filter_scales"], np.float32)
    if layer["sparse"]:
      vals = keep(layer["values"], np.int8)
      seg = keep(layer["segments"], _INDEX_DTYPES[layer["segments_type"]])
      idx = keep(layer["indices"], _INDEX_DTYPES[layer["indices_type"]])
      args = (_ptr(vals), vals.size, layer["segments_type"], _ptr(seg), seg.size,
              layer["indices_type"], _ptr(idx), idx.size)
    else:
      vals = keep(layer["weights"], np.int8)
      args = (_ptr(vals), vals.size, 0, None, 0, 0, None, 0)
    self.handle = kernel.lib.tfp_layer_create(
        layer["rows"], layer["cols"], *args, _ptr(bias), layer["input_scale"],
        layer["input_zero_point"], _ptr(scales), scales.size, layer["output_scale"],
        layer["output_zero_point"], layer["activation"])
    if not self.handle:
      raise ValueError(f"kernel rejected layer {layer['name']!r}")

  def quant(self):
    """(multipliers, shifts) as computed by the C++ QuantizeMultiplier."""
    n = self.layer["filter_scales"].size
    m, s = np.zeros(n, np.int32), np.zeros(n, np.int32)
    self.kernel.lib.tfp_layer_quant(self.handle, _ptr(m), _ptr(s))
    return m, s

  def __call__(self, x):
    x = np.ascontiguousarray(x, np.int8).reshape(-1, self.layer["cols"])
    y = np.zeros((x.shape[0], self.layer["rows"]), np.int8)
    self.kernel.lib.tfp_layer_run(self.handle, _ptr(x), x.shape[0], _ptr(y))
    return y

  def __del__(self):
    if getattr(self, "handle", None):
      self.kernel.lib.tfp_layer_destroy(self.handle)
      self.handle = None


class HostChain:
  """An MLP of HostLayers run sample by sample in C++ (as the MCU would)."""

  def __init__(self, kernel, layers):
    self.kernel, self.layers = kernel, layers
    self._handles = (ctypes.c_void_p * len(layers))(*[l.handle for l in layers])
    self._half = max(l.layer["rows"] for l in layers)
    self._scratch = np.zeros(2 * self._half, np.int8)

  def _io(self, x):
    x = np.ascontiguousarray(x, np.int8).reshape(-1, self.layers[0].layer["cols"])
    return x, np.zeros((x.shape[0], self.layers[-1].layer["rows"]), np.int8)

  def __call__(self, x):
    x, y = self._io(x)
    self.kernel.lib.tfp_chain_run(self._handles, len(self.layers), _ptr(x), x.shape[0],
                                  _ptr(self._scratch), self._half, _ptr(y))
    return y

  def time_ns(self, x, repeats=5):
    """Nanoseconds per sample (batch 1, one thread; fastest of `repeats` passes)."""
    x, y = self._io(x)
    return self.kernel.lib.tfp_chain_time_ns(self._handles, len(self.layers), _ptr(x),
                                             x.shape[0], _ptr(self._scratch), self._half,
                                             _ptr(y), repeats)
