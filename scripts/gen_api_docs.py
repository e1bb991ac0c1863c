#!/usr/bin/env python3
"""Builds the HTML API reference from tfprune's docstrings with pdoc, offline.

Usage: python scripts/gen_api_docs.py [OUTPUT_DIR]   (default: docs/api/build)

pdoc (https://pdoc.dev, the `docs` extra; also in `test`) renders every module listed
in MODULES, Google-style docstrings, with an index page and search. Needs tfprune
importable (pdoc imports the modules, so TensorFlow too).
"""
import os
import pathlib
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The public modules; their private submodules and the binaries stay out.
MODULES = (
    "tfprune",
    "tfprune.schedules",
    "tfprune.masks",
    "tfprune.methods",
    "tfprune.callbacks",
    "tfprune.data",
    "tfprune.zoo",
    "tfprune.distribute",
    "tfprune.layerwise",
    "tfprune.structured",
    "tfprune.pqi",
    "tfprune.shrink",
    "tfprune.export",
    "tfprune.compat.tfmot.sparsity.keras",
    "tfprune.compat.tfmot.clustering.keras",
)


def page(output_dir, module):
  """The HTML file pdoc writes for `module` under `output_dir`."""
  return os.path.join(output_dir, *module.split(".")) + ".html"


def build(output_dir, modules=MODULES):
  """Writes the reference into `output_dir`; returns the module pages written."""
  import pdoc  # pylint: disable=g-import-not-at-top
  import pdoc.render  # pylint: disable=g-import-not-at-top
  pdoc.render.configure(docformat="google", show_source=False,
                        footer_text="tfprune API reference")
  # pdoc walks each module's submodules too: the pattern drops all but `modules`.
  only = "!(?!(?:" + "|".join(re.escape(m) for m in modules) + ")$)"
  pdoc.pdoc(*modules, only, output_directory=pathlib.Path(output_dir))
  return [page(output_dir, m) for m in modules]


def undocumented(module_name):
  """Public classes and functions of `module_name` (its `__all__`) with no docstring."""
  import pdoc.doc  # pylint: disable=g-import-not-at-top
  module = pdoc.doc.Module.from_name(module_name)
  return [m.qualname for m in module.members.values()
          if isinstance(m, (pdoc.doc.Class, pdoc.doc.Function)) and not m.docstring]


def main(argv):
  if len(argv) > 2:
    raise SystemExit("usage: python scripts/gen_api_docs.py [OUTPUT_DIR]")
  out = argv[1] if len(argv) == 2 else os.path.join(ROOT, "docs", "api", "build")
  sys.path.insert(0, ROOT)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  paths = build(out)
  print(f"wrote the API reference to {out}: index.html and {len(paths)} module pages")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
