"""Architecture rules that keep the codebase honest (checked on the source, with ast).

* The exporter (tfprune/export/) never imports training code, and training code never
  imports the exporter: an exported model depends only on a plain Keras model.
* The demos (tflite_demo/) never import the tfprune package.
* tfprune/ never imports TFMOT or tf_keras (they flip the process to legacy Keras).
"""
import ast
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PKG = ROOT / "tfprune"


def _imports(path):
  tree = ast.parse(path.read_text(), filename=str(path))
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield alias.name
    elif isinstance(node, ast.ImportFrom) and node.module:
      for alias in node.names:
        yield f"{node.module}.{alias.name}"


def _tfprune_modules(path):
  return {name for name in _imports(path) if name == "tfprune" or name.startswith("tfprune.")}


EXPORT_OK = ("tfprune.export", "tfprune._io", "tfprune._layers", "tfprune._capture",
             "tfprune._liveness", "tfprune._litert")


@pytest.mark.parametrize("path", sorted((PKG / "export").glob("*.py")), ids=lambda p: p.name)
def test_exporter_never_imports_training_code(path):
  bad = {m for m in _tfprune_modules(path) if not m.startswith(EXPORT_OK)}
  assert not bad, f"{path.relative_to(ROOT)} imports training code: {sorted(bad)}"


TRAINING = [p for p in PKG.rglob("*.py")
            if "export" not in p.relative_to(PKG).parts and p.parent.name != "bin"]


@pytest.mark.parametrize("path", sorted(TRAINING), ids=lambda p: str(p.relative_to(PKG)))
def test_training_code_never_imports_the_exporter(path):
  bad = {m for m in _tfprune_modules(path) if m.startswith("tfprune.export")}
  assert not bad, f"{path.relative_to(ROOT)} imports the exporter: {sorted(bad)}"


@pytest.mark.parametrize("path", sorted(PKG.rglob("*.py")), ids=lambda p: str(p.relative_to(PKG)))
def test_package_never_imports_tfmot_or_tf_keras(path):
  bad = {m for m in _imports(path)
         if m.split(".")[0] in ("tensorflow_model_optimization", "tf_keras")}
  assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_demos_never_import_the_package():
  offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "tflite_demo").rglob("*.py")
               if _tfprune_modules(p)]
  assert not offenders, f"demos import tfprune: {offenders}"


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
