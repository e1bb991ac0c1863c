"""Float islands in int8 files (tfprune/export/islands.py, docs/export.md section 13) and
the SavedModel of the inference call (tfprune/_litert.py), on keras_hub backbones built
from their constructors (tiny, random weights, nothing downloaded)."""
# bazel-size: medium
import dataclasses
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # pylint: disable=g-import-not-at-top
import numpy as np
import pytest

from tfprune.export import graph
from tfprune.export import targets
from tfprune.export import tflite
from tfprune.export import verify

pytest.importorskip("keras_hub")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hub_models  # pylint: disable=g-import-not-at-top,wrong-import-position


def _ops(data):
  model = graph.load(data)
  sub = model.subgraphs[0]
  return [(graph.op_name(model, op), graph.type_name(sub.tensors[op.outputs[0]]))
          for op in sub.operators]


@pytest.fixture(scope="module")
def gemma():
  keras.utils.set_random_seed(0)
  model = hub_models.build("GemmaBackbone")
  return model, hub_models.data(model, 8, seed=0)


def test_gemma_int8_keeps_the_mask_and_zero_point_divisions_float(gemma):
  model, x = gemma
  result = tflite.convert(model, quantize="int8", representative_data=x)
  note = next(n for n in result.notes if n.startswith("full int8 failed"))
  assert "an outlier int8 range" in note and "SelectV2" in note and "Softmax" in note
  assert "a DIV by a computed int8 divisor" in note
  ops = _ops(result.flatbuffer)
  assert ("SOFTMAX", "FLOAT32") in ops and ("DIV", "FLOAT32") in ops
  assert ("FULLY_CONNECTED", "INT8") in ops  # int8 everywhere else
  # Checked again here, independently of the exporter's own verification.
  order = [t.name for t in model.inputs]
  ref = np.asarray(model.predict(x, verbose=0), np.float32)
  got, _, _ = verify.run_litert(result.flatbuffer, [x[k] for k in order], xnnpack=False,
                                input_names=order)
  assert np.max(np.abs(got.reshape(ref.shape) - ref)) <= verify.tolerance(ref, "int8")


def test_without_islands_the_same_export_is_refused(gemma, monkeypatch):
  """The islands are what makes the file right: a target without them refuses it."""
  model, x = gemma
  plain = dataclasses.replace(targets.LITERT, float_islands=False)
  monkeypatch.setitem(targets.TARGETS, "litert", plain)
  with pytest.raises(verify.VerificationError, match="disagrees with the Keras model"):
    tflite.convert(model, quantize="int8", representative_data=x)


def test_segformer_exports_its_inference_call():
  """Keras's own `model.export` SavedModel of this backbone computes something else (max
  abs diff 1.1); the exporter's SavedModel of `model(x, training=False)` matches."""
  keras.utils.set_random_seed(0)
  model = hub_models.build("SegFormerBackbone")
  x = hub_models.data(model, 4, seed=0)
  result = tflite.convert(model, representative_data=x)
  x = x if not isinstance(x, dict) else next(iter(x.values()))
  ref = np.asarray(model.predict(x, verbose=0), np.float32)
  got, _, _ = verify.run_litert(result.flatbuffer, x, xnnpack=False)
  assert np.max(np.abs(got.reshape(ref.shape) - ref)) < 1e-4 * (1 + np.max(np.abs(ref)))
