"""Reductions over spatial axes with keepdims export and verify (float and int8).

Keras' TF `ops.add` turns `a + b` into `bias_add` when, at the concrete batch size, `b`
squeezes to one dimension equal to `a`'s channel count: at the verification batch (8)
`conv (8, H, W, 8) + mean(x, axis=(1, 2, 3), keepdims=True) (8, 1, 1, 1)` added sample
i's mean to channel i, so the eager Keras reference was wrong and a correct file was
refused. The exporter computes the reference at an unknown batch size, as it exports.
Every file is also checked against numpy, independently of Keras.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest

from tfprune import export
from tfprune.export import verify

# name: (input shape, reduction of the input, numpy twin, num_verify_samples)
CASES = {
    # The model: batch 8 == 8 conv channels.
    "mean_all": ((8, 8, 3), lambda t: keras.ops.mean(t, axis=(1, 2, 3), keepdims=True),
                 lambda x: x.mean(axis=(1, 2, 3), keepdims=True), 8),
    "sum_spatial": ((8, 8, 1), lambda t: keras.ops.sum(t, axis=(1, 2), keepdims=True),
                    lambda x: x.sum(axis=(1, 2), keepdims=True), 8),
    "max_spatial": ((8, 8, 1), lambda t: keras.ops.max(t, axis=(1, 2), keepdims=True),
                    lambda x: x.max(axis=(1, 2), keepdims=True), 8),
    "gap_keepdims": ((8, 8, 1), keras.layers.GlobalAveragePooling2D(keepdims=True),
                     lambda x: x.mean(axis=(1, 2), keepdims=True), 8),
    # (1, 8, 1, 1) at batch 1 squeezes to the channel count too: one sample at a time is
    # no way out.
    "mean_rows_batch1": ((8, 8, 3), lambda t: keras.ops.mean(t, axis=(2, 3), keepdims=True),
                         lambda x: x.mean(axis=(2, 3), keepdims=True), 1),
}


def _model(shape, reduce):
  inp = keras.Input(shape)
  conv = keras.layers.Conv2D(8, 1)
  return keras.Model(inp, conv(inp) + reduce(inp)), conv


def _numpy(x, conv, twin):
  kernel, bias = (np.asarray(w) for w in conv.get_weights())
  return np.einsum("nhwc,co->nhwo", x, kernel[0, 0]) + bias + twin(x)


@pytest.mark.parametrize("quantize", [None, "int8"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_spatial_reduction_with_keepdims_exports(name, quantize):
  shape, reduce, twin, n = CASES[name]
  if quantize and n == 1:
    pytest.skip("the batch-1 case is covered in float")
  model, conv = _model(shape, reduce)
  x = np.random.default_rng(0).standard_normal((64,) + shape).astype(np.float32)
  result = export.convert(model, quantize=quantize, sparse="off", num_verify_samples=n,
                          representative_data=x if quantize else None)
  assert all(r.ok for r in result.verification)
  want = _numpy(x[:8], conv, twin)
  got, _, detail = verify.run_litert(result.flatbuffer, x[:8])
  tol = verify.tolerance(want, quantize, detail["quantization"][0] or None)
  assert np.max(np.abs(got.reshape(want.shape) - want)) <= tol


def test_float_miss_far_above_rounding_is_not_blamed_on_an_untrained_model():
  model, _ = _model(*CASES["mean_all"][:2])
  x = np.random.default_rng(1).standard_normal((4, 8, 8, 3)).astype(np.float32)
  flat = export.convert(model, sparse="off").flatbuffer
  ref = np.asarray(model(x))
  off = ref + 0.05 * np.max(np.abs(ref))   # 5% of the peak: no float32 rounding does that
  with pytest.raises(verify.VerificationError) as err:
    verify.verify(flat, off, x, reference_bytes=flat)
  msg = str(err.value)
  assert "more than float32 rounding differences between kernels usually reach" in msg
  assert "use a trained model:" not in msg
  near = ref + 3e-3 * np.max(np.abs(ref))   # small: large activations can explain it
  with pytest.raises(verify.VerificationError) as err:
    verify.verify(flat, near, x, reference_bytes=flat)
  assert "use a trained model: very large activations" in str(err.value)
