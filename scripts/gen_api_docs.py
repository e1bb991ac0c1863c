#!/usr/bin/env python3
"""Builds the API reference (Markdown) from tfprune's docstrings, offline.

Usage: python scripts/gen_api_docs.py [OUTPUT_DIR]   (default: docs/api/build)

Writes `index.md` and one page per public module (`tfprune.md`, `tfprune.export.md`,
...): every public function and class with its signature and docstring, and each
class's public methods and properties. "Public" means listed in the module's `__all__`,
or else not starting with `_` and defined in tfprune (so re-exports like
`tfprune.prune` appear, and `keras` or `np` do not). Needs tfprune importable (it imports
the modules, so TensorFlow too); standard library otherwise.
"""
import importlib
import inspect
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = (
    "tfprune",
    "tfprune.schedules",
    "tfprune.masks",
    "tfprune.methods",
    "tfprune.callbacks",
    "tfprune.data",
    "tfprune.zoo",
    "tfprune.distribute",
    "tfprune.pqi",
    "tfprune.shrink",
    "tfprune.export",
    "tfprune.compat.tfmot.sparsity.keras",
)


def _is_ours(obj):
  module = getattr(obj, "__module__", None) or ""
  return module == "tfprune" or module.startswith("tfprune.")


def public_names(module):
  """The names `module` offers its users, in order."""
  if hasattr(module, "__all__"):
    return list(module.__all__)
  names = []
  for name, obj in vars(module).items():
    if name.startswith("_") or inspect.ismodule(obj):
      continue
    if (inspect.isclass(obj) or inspect.isfunction(obj)) and _is_ours(obj):
      names.append(name)
  return sorted(names, key=str.lower)


def _signature(obj):
  try:
    return str(inspect.signature(obj))
  except (TypeError, ValueError):
    return "(...)"


def _doc(obj):
  return inspect.getdoc(obj) or "(no docstring)"


def _members(cls):
  """Public methods and properties defined by `cls` or its tfprune bases."""
  out = []
  for name, member in inspect.getmembers(cls):
    if name.startswith("_") and name != "__call__":
      continue
    owner = next((k for k in cls.__mro__ if name in vars(k)), None)
    if owner is None or not _is_ours(owner):
      continue
    raw = vars(owner)[name]
    if isinstance(raw, property):
      out.append((name, "property", "", inspect.getdoc(raw) or ""))
    elif inspect.isfunction(member) or isinstance(raw, (classmethod, staticmethod)):
      doc = inspect.cleandoc(member.__doc__) if member.__doc__ else ""
      out.append((name, "method", _signature(member), doc))
  return out


def render_module(name):
  module = importlib.import_module(name)
  lines = [f"# `{name}`", "", _doc(module), ""]
  names = public_names(module)
  if names:
    lines += ["## Contents", ""] + [f"- [`{n}`](#{n.lower()})" for n in names] + [""]
  for n in names:
    obj = getattr(module, n)
    if inspect.isclass(obj):
      bases = ", ".join(b.__name__ for b in obj.__bases__ if b is not object)
      lines += [f"## {n}", "", f"```python\nclass {n}({bases})\n```", "",
                f"Constructor: `{n}{_signature(obj)}`", "", _doc(obj), ""]
      for member, kind, sig, doc in _members(obj):
        head = f"### `{n}.{member}{sig}`" if kind == "method" else (
            f"### `{n}.{member}` (property)")
        lines += [head, ""] + ([doc, ""] if doc else [])
    elif callable(obj):
      lines += [f"## {n}", "", f"```python\n{n}{_signature(obj)}\n```", "", _doc(obj), ""]
    else:
      lines += [f"## {n}", "", f"`{n} = {obj!r}`", ""]
  return "\n".join(lines).rstrip() + "\n"


def build(output_dir, modules=MODULES):
  """Writes the reference into `output_dir`; returns the paths written."""
  os.makedirs(output_dir, exist_ok=True)
  written = []
  index = ["# tfprune API reference", "",
           "Generated from the docstrings by `scripts/gen_api_docs.py`.", ""]
  for name in modules:
    path = os.path.join(output_dir, f"{name}.md")
    text = render_module(name)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
      f.write(text)
    os.replace(path + ".tmp", path)
    written.append(path)
    summary = text.split("\n")[2].strip() if len(text.split("\n")) > 2 else ""
    index.append(f"- [`{name}`]({name}.md): {summary}")
  index_path = os.path.join(output_dir, "index.md")
  with open(index_path, "w", encoding="utf-8") as f:
    f.write("\n".join(index) + "\n")
  return [index_path] + written


def main(argv):
  if len(argv) > 2:
    raise SystemExit("usage: python scripts/gen_api_docs.py [OUTPUT_DIR]")
  out = argv[1] if len(argv) == 2 else os.path.join(ROOT, "docs", "api", "build")
  sys.path.insert(0, ROOT)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  paths = build(out)
  print(f"wrote {len(paths)} pages to {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
