"""Conformance: the architectures edge engineers deploy, end to end.

Every model goes through prune -> fit (1-2 eager steps on tiny random data) -> strip ->
`.keras` save/load -> export, each export verified by the exporter itself with XNNPACK on
and off (and TFLite Micro for target="micro"); the test asserts the `ExportResult` says so
and re-checks the file against the reloaded Keras model.

Matrix (`_CASES`; a failure names model x method x export): magnitude (global) on every
model, admm (global) and logsum (layer-wise) on a Latin-square subset; see the comment
at `_CASES` for what the ~3 minute budget left out (bench/conformance.py runs the full
matrix). Random weights (`weights=None`) and tiny inputs.
"""
# bazel-size: large
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # pylint: disable=g-import-not-at-top
import numpy as np
import pytest

import tfprune
from tfprune import export
from tfprune import zoo
from tfprune.export import verify
from conftest import SLOW  # pylint: disable=g-bad-import-order

NUM_CLASSES = 4
VOCAB, SEQ = 40, 12
N_TRAIN = 8
SPARSITY = 0.5


def _lstm_text():
  tok = keras.Input((SEQ,), dtype="int32", name="tokens")
  x = keras.layers.Embedding(VOCAB, 8, mask_zero=True, name="embed")(tok)
  x = keras.layers.LSTM(8, name="lstm")(x)
  return keras.Model(tok, keras.layers.Dense(NUM_CLASSES, name="logits")(x), name="lstm_text")


_MODELS = {
    "mobilenet_v2_035": lambda: keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=NUM_CLASSES,
        classifier_activation=None),
    # 32x32 is the smallest input MobileNetV3 accepts; hard-swish puts raw op nodes
    # (x + 3, x * ...) in the graph.
    "mobilenet_v3_small": lambda: keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), weights=None, classes=NUM_CLASSES,
        classifier_activation=None),
    "ds_cnn": lambda: zoo.get("ds_cnn", num_classes=NUM_CLASSES),
    "resnet8": lambda: zoo.get("resnet8", input_shape=(16, 16, 3), num_classes=NUM_CLASSES),
    "transformer": lambda: zoo.get("transformer", num_classes=NUM_CLASSES, vocab_size=VOCAB,
                                   seq_len=SEQ, embed_dim=16, num_heads=2, ff_dim=32),
    "lstm_text": _lstm_text,
}
_EXPORTS = {"float": ("litert", None), "dynamic": ("litert", "dynamic"),
            "int8": ("litert", "int8"), "micro": ("micro", "int8")}


# The cases, chosen for a ~3 minute budget on 2 cores (a MobileNet export costs ~15 s
# there, logsum's layer-wise solve on a MobileNet ~1-2 min, so those are in the bench):
#   magnitude: every model but MobileNetV2 (its admm case covers it); every export on the
#     small models (micro for the MCU models), int8 on MobileNetV3Small (op nodes).
#   admm, logsum: a Latin square over (model, export) so that each method meets every
#     export kind and each model meets a different kind per method; admm skips
#     MobileNetV3Small and logsum both MobileNets (bench/conformance.py runs them).
# Measured: 8.2 min for 26 cases with 3 MobileNet cases on 2 cores loaded by other jobs
# (each MobileNet case ~72 s there), hence two MobileNet cases.
_CASES = [
    ("mobilenet_v3_small", "magnitude", "int8"),
    *[(n, "magnitude", k) for n in ("ds_cnn", "resnet8")
      for k in ("float", "dynamic", "int8", "micro")],
    *[(n, "magnitude", k) for n in ("transformer", "lstm_text")
      for k in ("float", "dynamic", "int8")],
    ("mobilenet_v2_035", "admm", "float"),
    ("ds_cnn", "admm", "micro"),
    ("resnet8", "admm", "int8"),
    ("transformer", "admm", "dynamic"),
    ("lstm_text", "admm", "float"),
    ("ds_cnn", "logsum", "dynamic"),
    ("resnet8", "logsum", "micro"),
    ("transformer", "logsum", "float"),
    ("lstm_text", "logsum", "dynamic"),
]
# Known failures: run, the error asserted, then marked xfail (a fix makes the case fail
# until it moves out of here).
_XFAIL = {}


def _data(model, n, seed=0):
  rng = np.random.default_rng(seed)
  shape = (n,) + tuple(model.input_shape[1:])
  if keras.backend.standardize_dtype(model.inputs[0].dtype) == "int32":
    x = rng.integers(1, VOCAB, size=shape).astype(np.int32)
    x[:, -3:] = 0   # padding that the Embedding mask hides
  else:
    x = rng.standard_normal(shape).astype(np.float32)
  return x, np.arange(n) % NUM_CLASSES


def _kernel_sparsity(model):
  return tfprune.model.total_sparsity(tfprune.sparsity_report(model, print_table=False))


def _compile(model):
  model.compile(optimizer=keras.optimizers.SGD(1e-3), run_eagerly=True,
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))


def _prune_and_fit(name, method):
  """Returns (stripped model reloaded from .keras, x) after prune/fit/strip/save/load."""
  keras.utils.set_random_seed(0)
  model = _MODELS[name]()
  x, y = _data(model, N_TRAIN)
  if method == "magnitude":
    pruned = tfprune.prune(model, "magnitude", target_sparsity=SPARSITY, scope="global")
    np.testing.assert_allclose(pruned(x), model(x), rtol=1e-5, atol=1e-5)
    _compile(pruned)
    history = pruned.fit(x, y, epochs=1, batch_size=N_TRAIN, verbose=0,
                         callbacks=[tfprune.PruningCallback()])
  elif method == "admm":
    # Plain fit: ADMM steps, hard prune at train end (the fine-tune phase is skipped).
    pruned = tfprune.prune(model, "admm", target_sparsity=SPARSITY, admm_interval=1)
    _compile(pruned)
    history = pruned.fit(x, y, epochs=1, batch_size=N_TRAIN // 2, verbose=0,
                         callbacks=[tfprune.PruningCallback()])
  else:
    pruned = tfprune.prune(model, "logsum", target_sparsity=SPARSITY, calibration_samples=16,
                           batch_size=16)
    rows = tfprune.get_method(pruned).apply(pruned, _data(model, 16, seed=1)[0],
                                            verbose=False)
    assert rows, f"logsum pruned no layer of {name}"
    _compile(pruned)  # masks fixed: a plain masked fine-tune step
    history = pruned.fit(x, y, epochs=1, batch_size=N_TRAIN, verbose=0)
  assert np.isfinite(history.history["loss"][-1])
  stripped = tfprune.strip(pruned)
  np.testing.assert_allclose(stripped(x), pruned(x), rtol=1e-4, atol=1e-5)
  sparsity = _kernel_sparsity(stripped)
  if method == "logsum":  # layer-wise: skipped layers (LSTM kernels) stay dense
    assert 0.05 < sparsity <= SPARSITY + 0.02, sparsity
  else:
    assert sparsity == pytest.approx(SPARSITY, abs=0.01)
  return stripped, x


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
  """Cache of (model, method) -> reloaded stripped model, built once per pair."""
  cache = {}

  def get(name, method):
    if (name, method) not in cache:
      stripped, x = _prune_and_fit(name, method)
      path = str(tmp_path_factory.mktemp(f"{name}_{method}") / "stripped.keras")
      stripped.save(path)
      loaded = keras.models.load_model(path)
      np.testing.assert_allclose(loaded(x), stripped(x), rtol=1e-6, atol=1e-6)
      cache[(name, method)] = (loaded, x)
    return cache[(name, method)]

  return get


# The keras.applications cases cost 1-2 minutes each on 2 cores: the default suite keeps
# MobileNetV3Small (op nodes, hard-swish) and runs MobileNetV2 with TFPRUNE_SLOW_TESTS=1.
_SLOW_CASES = {("mobilenet_v2_035", "admm", "float")}


@pytest.mark.parametrize("name,method,kind",
                         [pytest.param(*c, marks=SLOW) if c in _SLOW_CASES else c
                          for c in _CASES],
                         ids=[f"{n}-{m}-{k}" for n, m, k in _CASES])
def test_prune_fit_strip_save_load_export(pipeline, name, method, kind):
  loaded, x = pipeline(name, method)
  target, quantize = _EXPORTS[kind]
  kwargs = dict(target=target, quantize=quantize,
                representative_data=x if quantize == "int8" else None)
  if (name, kind) in _XFAIL:  # still failing as described (a fix makes this test fail)
    with pytest.raises(export.ExportError, match="feeds an Embedding with input_dim"):
      export.convert(loaded, **kwargs)
    pytest.xfail(_XFAIL[(name, kind)])
  if name == "lstm_text" and quantize == "int8":
    # Full-int8 quantizes the unrolled LSTM state at every step: the exporter must refuse
    # the file and say what to use instead (docs/export.md) unless it is within tolerance.
    try:
      result = export.convert(loaded, **kwargs)
    except verify.VerificationError as e:
      assert "quantize='dynamic'" in str(e), str(e)
      return
  else:
    result = export.convert(loaded, **kwargs)
  if name == "lstm_text":
    assert any("unrolled" in n for n in result.notes), result.notes
  runtimes = [r.runtime for r in result.verification]
  assert runtimes[:2] == ["xnnpack", "builtin"], runtimes
  if target == "micro":
    assert "tflm" in runtimes, runtimes
  assert all(r.ok for r in result.verification)
  assert len(result.flatbuffer) <= result.dense_size  # never larger than dense
  # Independent re-check of the bytes against the reloaded Keras model.
  ref = np.asarray(loaded(x[:4]))
  y, _, detail = verify.run_litert(result.flatbuffer, [x[:4]], xnnpack=False,
                                   input_names=[t.name for t in loaded.inputs])
  tol = verify.tolerance(ref, quantize, detail["quantization"][0] or None)
  assert np.max(np.abs(np.asarray(y) - ref)) <= tol


def test_matrix_covers_every_model_method_and_export():
  assert {n for n, _, _ in _CASES} == set(_MODELS)
  for method in ("admm", "logsum"):
    kinds = [k for _, m, k in _CASES if m == method]
    assert set(kinds) >= {"float", "dynamic", "micro"}, (method, kinds)
  for name in _MODELS:
    per_method = [k for n, m, k in _CASES if n == name and m != "magnitude"]
    assert len(per_method) == len(set(per_method)), (name, per_method)
  assert len(_CASES) == len(set(_CASES))


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
