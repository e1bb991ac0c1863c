"""The API reference builds offline from the docstrings (scripts/gen_api_docs.py)."""
# bazel-data: tfprune
import importlib.util
import os
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


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
  out = tmp_path_factory.mktemp("api")
  paths = gen_api_docs.build(str(out))
  return {os.path.basename(p)[:-3]: open(p, encoding="utf-8").read() for p in paths}


def test_every_module_has_a_page_and_the_index_links_it(pages):
  assert set(pages) == {"index", *gen_api_docs.MODULES}
  for name in gen_api_docs.MODULES:
    assert f"]({name}.md)" in pages["index"]


def test_the_public_api_is_documented(pages):
  top = pages["tfprune"]
  for name in ("prune", "strip", "get_method", "sparsity_report", "PruneWrapper",
               "PruningCallback", "PolynomialDecay", "ConstantSparsity", "PrunableLayer"):
    assert f"## {name}\n" in top, name
  assert "prune(model: 'keras.Model', method: 'str | base.PruningMethod' = 'magnitude'" in top  # the real signature (with its type hints)
  export = pages["tfprune.export"]
  for name in ("to_tflite", "save_tflite", "inspect", "c_array", "VerificationError"):
    assert f"## {name}\n" in export, name
  assert "representative_data" in export
  compat = pages["tfprune.compat.tfmot.sparsity.keras"]
  for name in ("prune_low_magnitude", "strip_pruning", "UpdatePruningStep",
               "PruningSummaries", "prune_scope"):
    assert f"## {name}\n" in compat, name
  # Private names and third-party re-imports stay out.
  assert "## _" not in top and "## keras" not in top and "## np\n" not in top


@pytest.mark.parametrize("module", ["tfprune", "tfprune.export",
                                    "tfprune.compat.tfmot.sparsity.keras"])
def test_public_names_have_docstrings(pages, module):
  body = pages[module]
  missing = [chunk.split("\n", 1)[0] for chunk in body.split("\n## ")[1:]
             if "(no docstring)" in chunk.split("\n### ", 1)[0]]
  assert not missing, f"{module}: public names without a docstring: {missing}"


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
