"""Regression: sparse int8 DepthwiseConv2D kernels with many channels.

A depthwise kernel is quantized per output channel along its last axis; segmented
CSR (`[..., C/s, s]`) splits that axis, which left 576 scales on a dimension of 3
and LiteRT refused the file. Such kernels must export as plain CSR and run.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # pylint: disable=g-import-not-at-top
import numpy as np

from tfprune import export
from tfprune.export import graph


def test_int8_sparse_depthwise_576_channels_exports_and_runs():
  channels = 576   # > 256 and divisible by 192: segmented CSR would split the scale axis
  rng = np.random.default_rng(0)
  inp = keras.Input((4, 4, channels))
  dw = keras.layers.DepthwiseConv2D(7, padding="same")
  model = keras.Model(inp, dw(inp))
  dw.kernel.assign(dw.kernel.numpy() * (rng.random(dw.kernel.shape) < 0.02))
  data = rng.standard_normal((8, 4, 4, channels)).astype(np.float32)
  result = export.convert(model, quantize="int8", representative_data=data)
  assert [r.ok for r in result.verification] == [True, True]   # XNNPACK on and off
  [kernel] = [t for t in result.tensors if t.shape == (1, 7, 7, channels)]
  assert kernel.format == "csr" and kernel.bytes < kernel.dense_bytes / 4
  m = graph.load(result.model_bytes)
  sg = m.subgraphs[0]
  assert [graph.op_name(m, op) for op in sg.operators] == ["DENSIFY", "DEPTHWISE_CONV_2D"]
  # Every per-axis quantized tensor has one scale per entry of its quantized dimension.
  per_axis = [t for t in sg.tensors
              if t.quantization is not None and t.quantization.scale is not None
              and len(t.quantization.scale) > 1]
  assert len(per_axis) >= 2   # the sparse kernel and the DENSIFY output
  for t in per_axis:
    assert len(t.quantization.scale) == t.shape[t.quantization.quantizedDimension]
