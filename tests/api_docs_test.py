"""The API reference builds offline from the docstrings with pdoc (scripts/gen_api_docs.py)."""
# bazel-data: tfprune scripts/gen_api_docs.py
import html
import importlib.util
import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))


def _load():
  spec = importlib.util.spec_from_file_location(
      "gen_api_docs", os.path.join(ROOT, "scripts", "gen_api_docs.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


gen_api_docs = _load()


def _text(path):
  with open(path, encoding="utf-8") as f:
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", "", f.read())))


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("api"))
  paths = gen_api_docs.build(out)
  assert os.path.isfile(os.path.join(out, "index.html"))
  return {m: _text(p) for m, p in zip(gen_api_docs.MODULES, paths)}


def test_every_module_has_a_page(pages):
  assert set(pages) == set(gen_api_docs.MODULES)
  for name, text in pages.items():
    assert name in text


def test_the_public_api_is_documented(pages):
  top = pages["tfprune"]
  for name in ("prune", "strip", "get_method", "sparsity_report", "PruneWrapper",
               "PruningCallback", "PolynomialDecay", "ConstantSparsity", "PrunableLayer"):
    assert re.search(rf"\b(def|class) {name}\b", top), name
  # The real signature, type hints included, and the docstring's Args section.
  assert "prune( model: keras.src.models.model.Model, method: str | PruningMethod" in top
  export = pages["tfprune.export"]
  for name in ("to_tflite", "save_tflite", "convert", "inspect", "c_array",
               "VerificationError"):
    assert re.search(rf"\b(def|class) {name}\b", export), name
  assert "representative_data" in export
  compat = pages["tfprune.compat.tfmot.sparsity.keras"]
  for name in ("prune_low_magnitude", "strip_pruning", "UpdatePruningStep",
               "PruningSummaries", "prune_scope"):
    assert re.search(rf"\b(def|class) {name}\b", compat), name
  for name in ("cluster", "ClusterWrapper"):
    assert re.search(rf"\b(def|class) {name}\b", top), name
  clustering = pages["tfprune.compat.tfmot.clustering.keras"]
  for name in ("cluster_weights", "strip_clustering", "CentroidInitialization",
               "cluster_scope"):
    assert re.search(rf"\b(def|class) {name}\b", clustering), name
  # Private names and third-party re-imports stay out.
  assert not re.search(r"\bdef _", top) and "def keras" not in top


@pytest.mark.parametrize("module", ["tfprune", "tfprune.export",
                                    "tfprune.compat.tfmot.sparsity.keras",
                                    "tfprune.compat.tfmot.clustering.keras"])
def test_public_names_have_docstrings(module):
  missing = gen_api_docs.undocumented(module)
  assert not missing, f"{module}: public names without a docstring: {missing}"


def test_undocumented_finds_a_missing_docstring(tmp_path, monkeypatch):
  (tmp_path / "tfprune_docs_probe.py").write_text(
      '"""Probe."""\n__all__ = ["good", "bad"]\n'
      'def good():\n  """Documented."""\n'
      'def bad():\n  pass\n')
  monkeypatch.syspath_prepend(str(tmp_path))
  assert gen_api_docs.undocumented("tfprune_docs_probe") == ["bad"]


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
