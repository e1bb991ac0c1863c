"""keras_hub conformance (fast subset): models tfprune did not design, end to end.

Tiny keras_hub backbones built from their constructors (random weights, no presets,
nothing downloaded; configs in tests/hub_models.py, shared with
bench/hub_conformance.py, which runs every backbone class) and a guide-style custom
layer, through prune (layer / global / structured scope), 2 training steps, strip,
liveness, exact shrink, .keras save / load and export verified independently with
ai_edge_litert (float everywhere; dynamic and int8 on one model each; the layer scope
on three models).

Each (model, step) is one test: PASS only if tfprune neither raised nor returned a
result that the bench's independent checks (bench/hub_conformance.py: outputs still
depend on inputs, no kernel emptied, shrunk == masked, loaded == saved, file == Keras)
find wrong. A refusal is a failure here: issue 25 asks for every step on these models.
"""
# bazel-size: large
# bazel-data: bench/hub_conformance.py
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # pylint: disable=g-import-not-at-top
import numpy as np
import pytest

from tfprune import export

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import hub_conformance as hc  # pylint: disable=g-import-not-at-top,wrong-import-position
import hub_models  # pylint: disable=g-import-not-at-top,wrong-import-position,g-bad-import-order

pytest.importorskip("keras_hub")

MODELS = ("BertBackbone", "DistilBertBackbone", "GemmaBackbone", "ResNetBackbone",
          "MobileNetBackbone", "EfficientNetBackbone", "CSPNetBackbone", "ViTBackbone",
          "GuideCustomLayer", "BertTextClassifier")
STEPS = ("global", "liveness", "structured", "saveload", "float")
# Each fit costs seconds (tracing the mask update), so the layer scope and the quantized
# exports run on a few models only (bench/hub_conformance.py runs the exports on every
# backbone; the layer scope with --steps=layer).
EXTRA = {"BertBackbone": ("dynamic",), "ResNetBackbone": ("layer", "int8"),
         "DistilBertBackbone": ("layer",), "GuideCustomLayer": ("layer",)}
# Known gaps, each a strict xfail so that the fix shows up (issue 25 stays open on them).
KNOWN_GAPS = {}
CASES = [pytest.param(m, s, id=f"{m}-{s}", marks=(
             [pytest.mark.xfail(strict=True, reason=KNOWN_GAPS[(m, s)])]
             if (m, s) in KNOWN_GAPS else []))
         for m in MODELS for s in STEPS + EXTRA.get(m, ())]

_RESULTS = {}


def _run(name):
  """Every step of `name`, run once per session (the steps share the pruned model)."""
  if name not in _RESULTS:
    _RESULTS[name] = hc.run_model(name, STEPS + EXTRA.get(name, ()), eager=True)
  return _RESULTS[name]


@pytest.mark.parametrize("name,step", CASES)
def test_step(name, step):
  res = _run(name)
  assert res["build"]["status"] == "PASS", res["build"].get("reason")
  row = res[step]
  assert row["status"] == "PASS", (
      f"{name} {step}: {row['status']}: {row.get('reason', '')}\n{row.get('trace', '')}")


def test_liveness_check_finds_a_dead_model():
  """The independent check the suite relies on fails on an emptied kernel."""
  model = hub_models.guide_custom_layer()
  dead = keras.models.clone_model(model)
  dead.set_weights(model.get_weights())
  dead.get_layer("stem").kernel.assign(np.zeros((12, 16), np.float32))
  x, xb = hub_models.data(model, 4, seed=0), hub_models.data(model, 4, seed=1)
  hc.check_alive(model, model, x, xb, "original")
  with pytest.raises(hc.Silent, match="no longer depend.*100% zero"):
    hc.check_alive(model, dead, x, xb, "dead")


def test_file_check_finds_a_wrong_file():
  """The independent file check fails when the file and the Keras model disagree."""
  inp = keras.Input((6,))
  model = keras.Model(inp, keras.layers.Dense(3)(inp))
  x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
  xb = x[::-1].copy()
  data = export.convert(model).flatbuffer
  assert hc.check_file(data, model, x, xb, "float")["rel_rms"] < 1e-5
  model.layers[1].kernel.assign(model.layers[1].kernel * 1.1)
  with pytest.raises(hc.Silent, match="disagrees"):
    hc.check_file(data, model, x, xb, "float")


def test_every_backbone_class_is_listed():
  """The shared table covers every keras_hub backbone: built tiny or a stated reason."""
  names = hub_models.names()
  assert len(names) >= 70
  for n in names:
    assert n in hub_models.NOT_BUILDABLE or n in hub_models.COMPOSITE or (
        hub_models._kw(n) is not None), n  # pylint: disable=protected-access
