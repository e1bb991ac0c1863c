"""tfprune's import graph has no cycles (imports inside functions included).

The graph is built with `ast` from the sources (nothing is imported): every
`import tfprune.x`, `from tfprune import x`, `from tfprune.x import y` and relative
import, at any depth of the file, is an edge from the importing module to the module it
names (`from tfprune import x` resolves to the submodule `tfprune.x` when there is one,
else to the package; `from tfprune.a import b` to `tfprune.a.b` when that is a module).
Importing a submodule runs its packages' `__init__` first, but those edges are not
counted: a package's `__init__` re-exporting its children is not a cycle of ownership.
"""
# bazel-data: tfprune
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "tfprune"



def _modules():
  """{module name: path} for every .py file of the package."""
  found = {}
  for dirpath, _, files in os.walk(os.path.join(ROOT, PACKAGE)):
    for name in files:
      if not name.endswith(".py"):
        continue
      rel = os.path.relpath(os.path.join(dirpath, name), ROOT)[:-3].split(os.sep)
      if rel[-1] == "__init__":
        rel = rel[:-1]
      found[".".join(rel)] = os.path.join(dirpath, name)
  return found


def _resolve(base, name, modules):
  """The module `base` + `.name` if it exists, else `base` itself."""
  full = f"{base}.{name}" if base else name
  return full if full in modules else base


def import_graph():
  """{module: set of tfprune modules it imports} (self and package edges excluded)."""
  modules = _modules()
  graph = {}
  for module, path in modules.items():
    is_package = path.endswith("__init__.py")
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read(), path)
    edges = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        for alias in node.names:
          if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
            edges.add(alias.name if alias.name in modules else
                      alias.name.rsplit(".", 1)[0])
      elif isinstance(node, ast.ImportFrom):
        if node.level:
          parts = module.split(".")
          base_parts = parts if is_package else parts[:-1]
          base_parts = base_parts[:len(base_parts) - (node.level - 1)]
          base = ".".join(base_parts + ([node.module] if node.module else []))
        else:
          base = node.module or ""
        if not (base == PACKAGE or base.startswith(PACKAGE + ".")):
          continue
        for alias in node.names:
          edges.add(_resolve(base, alias.name, modules))
    edges = {e for e in edges if e in modules and e != module}
    graph[module] = edges
  return graph


def find_cycles(graph):
  """Every elementary cycle found by a DFS, as tuples of modules (first repeated)."""
  cycles, state, stack = [], {}, []

  def visit(node):
    state[node] = 1
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 1:
        cycles.append(tuple(stack[stack.index(nxt):]) + (nxt,))
      elif nxt not in state:
        visit(nxt)
    stack.pop()
    state[node] = 2

  for node in sorted(graph):
    if node not in state:
      visit(node)
  return cycles


def _is_package_reexport(module, target):
  """`tfprune/__init__` (or a subpackage's) importing its own children is no cycle."""
  return target.startswith(module + ".")


def test_the_graph_sees_all_import_forms():
  graph = import_graph()
  assert "tfprune.methods.base" in graph["tfprune.methods.magnitude"]  # from x.y import Z
  assert "tfprune.masks" in graph["tfprune.methods.base"]  # from tfprune import masks as m
  assert "tfprune.callbacks" in graph["tfprune.methods.base"]
  assert "tfprune.export.graph" in graph["tfprune.export.inspect"]
  # imports inside functions count too (tflite.py imports keras lazily, and _layers)
  assert "tfprune._layers" in graph["tfprune.export.tflite"]


def test_cycle_finder_finds_a_planted_cycle():
  assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [
      ("a", "b", "c", "a")]
  assert not find_cycles({"a": {"b"}, "b": set()})


def test_no_import_cycles():
  graph = import_graph()
  # A package's __init__ importing its children is how it re-exports, not a cycle;
  # children importing the package __init__ back (e.g. `import tfprune`) would be.
  graph = {m: {t for t in edges if not _is_package_reexport(m, t)}
           for m, edges in graph.items()}
  cycles = find_cycles(graph)
  assert not cycles, "import cycles in tfprune:\n" + "\n".join(
      " -> ".join(c) for c in cycles)


def test_import_tfprune_does_not_load_data_zoo_or_plots():
  """`import tfprune` loads the pruning API only; data sets, reference models and the
  plots (matplotlib) load on first use (issue 26 item 7)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  code = ("import sys, tfprune\n"
          "print(sorted(m for m in ('tfprune.data', 'tfprune.zoo', 'tfprune.plots')"
          " if m in sys.modules))\n"
          "tfprune.zoo.lenet5\n"
          "print('tfprune.zoo' in sys.modules)\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
  lines = out.stdout.strip().splitlines()
  assert lines[-2:] == ["[]", "True"], out.stdout + out.stderr


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__]))
