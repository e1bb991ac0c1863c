"""Checks that the Bazel BUILD file matches the tree, so it cannot rot.

BUILD is written by scripts/gen_build.py; if this test fails after adding, moving or
deleting a module, test or binary, run `python3 scripts/gen_build.py`.
"""
import ast
import importlib.util
import os
import subprocess
import sys

import pytest

# realpath: under `bazel test` this file is a runfiles symlink into the source tree.
ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
REGEN = "run `python3 scripts/gen_build.py` to regenerate BUILD"


def _load_gen_build():
  spec = importlib.util.spec_from_file_location(
      "gen_build", os.path.join(ROOT, "scripts", "gen_build.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


gen_build = _load_gen_build()


def _build_kwargs(path):
  """Returns {name: {attribute: value}} from a BUILD file (Starlark parses as Python)."""
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), filename=path)
  targets = {}
  for stmt in tree.body:
    call = stmt.value
    if call.func.id == "package":
      continue
    kw = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    assert kw["name"] not in targets, f"BUILD: duplicate target {kw['name']!r}"
    targets[kw["name"]] = dict(kw, rule=call.func.id)
  return targets


def _parse_build(path):
  """Returns {name: (rule, srcs, deps, main)} from a BUILD file."""
  return {name: (kw["rule"], kw.get("srcs", []), kw.get("deps", []), kw.get("main"))
          for name, kw in _build_kwargs(path).items()}


def _existing(directory, recursive=True):
  out = set()
  for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, directory)):
    dirnames[:] = [d for d in dirnames if not d.startswith((".", "_"))]
    if not recursive:
      dirnames[:] = []
    out |= {os.path.relpath(os.path.join(dirpath, f), ROOT).replace(os.sep, "/")
            for f in filenames if f.endswith(".py")}
  return out


@pytest.fixture(scope="module")
def rules():
  return _parse_build(os.path.join(ROOT, "BUILD"))


def test_build_is_up_to_date():
  with open(os.path.join(ROOT, "BUILD"), encoding="utf-8") as f:
    current = f.read()
  assert current == gen_build.render(gen_build.discover()), f"BUILD is stale: {REGEN}."


def test_every_module_test_and_binary_has_its_target(rules):
  for path in sorted(_existing("tfprune")):
    parts = path[:-3].split("/")
    if parts[1] == "bin" and parts[-1] != "__init__":
      name, kind = parts[-1], "py_binary"
      if name not in rules or rules[name][0] != kind:
        name = "bin_" + parts[-1]
    else:
      if parts[-1] == "__init__":
        parts = parts[:-1]
      name = "_".join(parts[1:]) or "tfprune"
      kind = "py_library"
    assert name in rules, f"{path}: no target {name!r} in BUILD; {REGEN}."
    rule, srcs, _, main = rules[name]
    assert rule == kind and srcs[0] == path, (name, rules[name])
    if kind == "py_binary":
      assert main == path
  for path in sorted(_existing("tests", recursive=False)):
    stem = os.path.basename(path)[:-3]
    name, kind = (stem, "py_test") if stem.endswith("_test") else ("tests_" + stem,
                                                                   "py_library")
    assert name in rules, f"{path}: no target {name!r} in BUILD; {REGEN}."
    assert rules[name][0] == kind and rules[name][1][0] == path, (name, rules[name])
    if kind == "py_test":  # run by the pytest runner, which gets the file as argument
      assert rules[name][3] == gen_build.TEST_MAIN in rules[name][1], (name, rules[name])


def test_build_names_nothing_that_does_not_exist(rules):
  for name, (_, srcs, deps, _) in rules.items():
    for src in srcs:
      assert os.path.isfile(os.path.join(ROOT, src)), (
          f"BUILD target {name!r} names missing file {src}; {REGEN}.")
    for dep in deps:
      assert dep.startswith(":") and dep[1:] in rules, (name, dep)
  listed = {s for _, srcs, _, _ in rules.values() for s in srcs}
  assert listed == (_existing("tfprune") | _existing("tests", recursive=False)
                    | {gen_build.TEST_MAIN})


def test_every_test_target_depends_on_what_it_imports(rules):
  _, _, deps, _ = rules["build_test"]
  assert deps == [":tests_conftest"] or deps == []
  _, _, deps, _ = rules["data_test"]
  assert ":data" in deps


def _write(root, files):
  for path, text in files.items():
    full = os.path.join(root, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w", encoding="utf-8") as f:
      f.write(text)


def test_generator_on_a_small_tree(tmp_path, monkeypatch):
  _write(tmp_path, {
      "tfprune/__init__.py": '__version__ = "0"\n',
      "tfprune/a.py": "import numpy\nfrom tfprune import b\n",
      "tfprune/b.py": "from . import c\n",
      "tfprune/c.py": "def f():\n  from tfprune import b  # cycle b <-> c\n",
      "tfprune/sub/__init__.py": "",
      "tfprune/sub/d.py": "from ..a import x\nfrom .e import y\n",
      "tfprune/sub/e.py": "",
      "tfprune/bin/__init__.py": "",
      "tfprune/bin/train.py": "from tfprune.sub import d\n",
      "tests/helper.py": "",
      "tests/a_test.py": "import helper\nfrom tfprune import a\n",
      "tests/notes.txt": "",
  })
  monkeypatch.setattr(gen_build, "ROOT", str(tmp_path))
  monkeypatch.setattr(gen_build, "BUILD", str(tmp_path / "BUILD"))
  monkeypatch.setattr(gen_build, "BAZELIGNORE", str(tmp_path / ".bazelignore"))
  assert gen_build.main(["gen_build.py", "--check"]) == 1
  assert gen_build.main(["gen_build.py"]) == 0
  assert gen_build.main(["gen_build.py", "--check"]) == 0
  rules = _parse_build(tmp_path / "BUILD")
  assert sorted(rules) == ["a", "a_test", "b", "bin", "c", "sub", "sub_d", "sub_e",
                           "tests_helper", "tfprune", "train"]
  assert rules["a"] == ("py_library", ["tfprune/a.py"], [":b", ":tfprune"], None)
  # b and c import each other: each carries both sources, neither depends on the other.
  assert rules["b"][1] == ["tfprune/b.py", "tfprune/c.py"]
  assert rules["c"][1] == ["tfprune/c.py", "tfprune/b.py"]
  assert rules["b"][2] == [":tfprune"]
  assert rules["sub_d"][2] == [":a", ":sub", ":sub_e", ":tfprune"]
  assert rules["train"] == ("py_binary", ["tfprune/bin/train.py"],
                            [":bin", ":sub", ":sub_d", ":tfprune"], "tfprune/bin/train.py")
  assert rules["a_test"][0] == "py_test"
  assert rules["a_test"][1] == ["tests/a_test.py", gen_build.TEST_MAIN]
  assert rules["a_test"][2] == [":a", ":tests_helper", ":tfprune"]
  assert rules["a_test"][3] == gen_build.TEST_MAIN
  kw = _build_kwargs(tmp_path / "BUILD")["a_test"]
  assert kw["args"] == ["tests/a_test.py"] and "data" not in kw


def test_a_test_importing_another_test_gets_its_file(tmp_path, monkeypatch):
  _write(tmp_path, {
      "tfprune/__init__.py": "",
      "tfprune/a.py": "",
      "tfprune/b.py": "",
      "tests/a_test.py": "from tfprune import a\n\ndef helper():\n  pass\n",
      "tests/b_test.py": "from tfprune import b\nfrom a_test import helper\n",
  })
  monkeypatch.setattr(gen_build, "ROOT", str(tmp_path))
  monkeypatch.setattr(gen_build, "BUILD", str(tmp_path / "BUILD"))
  monkeypatch.setattr(gen_build, "BAZELIGNORE", str(tmp_path / ".bazelignore"))
  assert gen_build.main(["gen_build.py"]) == 0
  rules = _parse_build(tmp_path / "BUILD")
  # A py_test cannot be a dep: b_test carries a_test's file and a_test's deps.
  assert rules["b_test"][1] == ["tests/b_test.py", "tests/a_test.py", gen_build.TEST_MAIN]
  assert rules["b_test"][2] == [":a", ":b", ":tfprune"]
  assert rules["a_test"][2] == [":a", ":tfprune"]


def test_bazel_data_marker(tmp_path, monkeypatch):
  _write(tmp_path, {
      "tests/testdata/x/a.npz": "", "tests/testdata/x/sub/b.txt": "",
      "tests/testdata/x/__pycache__/c.pyc": "", "README.md": "",
      "tests/a_test.py": "# bazel-data: tests/testdata/x README.md\n",
      "tests/b_test.py": "x = 1\n",
      "tests/c_test.py": "# bazel-data: tests/nothing_here\n",
  })
  monkeypatch.setattr(gen_build, "ROOT", str(tmp_path))
  assert gen_build.test_data("tests/a_test.py") == [
      "README.md", "tests/testdata/x/a.npz", "tests/testdata/x/sub/b.txt"]
  assert gen_build.test_data("tests/b_test.py") == []
  with pytest.raises(SystemExit, match="nothing_here"):
    gen_build.test_data("tests/c_test.py")


def test_bazelignore_is_up_to_date():
  with open(os.path.join(ROOT, ".bazelignore"), encoding="utf-8") as f:
    current = f.read()
  assert current == gen_build.render_bazelignore(), (
      f".bazelignore does not list every virtual environment in the tree (bazel test "
      f"would read the BUILD files TensorFlow's wheel ships): {REGEN}.")


def test_bazelignore_finds_venvs_anywhere(tmp_path, monkeypatch):
  _write(tmp_path, {
      "tfprune/__init__.py": "",
      "venv2/pyvenv.cfg": "home = /usr/bin\n",
      "venv2/lib/python3/site-packages/tensorflow/BUILD": "",
      "bench/env/pyvenv.cfg": "",
      "bench/env/inner/pyvenv.cfg": "",  # inside an ignored venv: not listed again
      "web/node_modules/x/BUILD": "",
      "bench/out/pyvenv.cfg": "",  # below a static entry
  })
  monkeypatch.setattr(gen_build, "ROOT", str(tmp_path))
  ignored = gen_build.ignored_dirs()
  assert {"venv2", "bench/env", "web/node_modules", ".venv", ".git"} <= set(ignored)
  assert "bench/env/inner" not in ignored and "tfprune" not in ignored
  assert ignored == sorted(ignored)


def test_bazelignore_lists_a_real_venv_and_a_symlinked_one(tmp_path, monkeypatch):
  # A venv made by `python -m venv` (pyvenv.cfg at its top), with the BUILD file a
  # TensorFlow wheel ships, and a symlink to another one: Bazel would read both.
  _write(tmp_path, {"tfprune/__init__.py": ""})
  subprocess.run([sys.executable, "-m", "venv", "--without-pip",
                  str(tmp_path / "tools" / "venv-other")], check=True)
  _write(tmp_path, {
      "tools/venv-other/lib/site-packages/tensorflow/BUILD": "cc_library(name = 'x')\n",
      "elsewhere/pyvenv.cfg": "home = /usr/bin\n",
  })
  os.symlink(tmp_path / "elsewhere", tmp_path / "tfprune" / ".venv-linked")
  monkeypatch.setattr(gen_build, "ROOT", str(tmp_path))
  ignored = gen_build.ignored_dirs()
  assert "tools/venv-other" in ignored and "tfprune/.venv-linked" in ignored
  monkeypatch.setattr(gen_build, "BUILD", str(tmp_path / "BUILD"))
  monkeypatch.setattr(gen_build, "BAZELIGNORE", str(tmp_path / ".bazelignore"))
  assert gen_build.main(["gen_build.py"]) == 0
  lines = (tmp_path / ".bazelignore").read_text().splitlines()
  assert "tools/venv-other" in lines and "tfprune/.venv-linked" in lines


def test_test_size_marker(tmp_path, monkeypatch):
  _write(tmp_path, {"tests/a_test.py": "# bazel-size: large\n",
                    "tests/b_test.py": "x = 1\n",
                    "tests/c_test.py": "# bazel-size: huge\n"})
  monkeypatch.setattr(gen_build, "ROOT", str(tmp_path))
  assert gen_build.test_size("tests/a_test.py") == "large"
  assert gen_build.test_size("tests/b_test.py") == "medium"
  with pytest.raises(SystemExit, match="huge"):
    gen_build.test_size("tests/c_test.py")


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
