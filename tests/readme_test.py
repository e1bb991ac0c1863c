"""Every code block of README.md (and docs/migration.md) runs as written.

Each ```python block runs in a fresh interpreter, in an empty temporary directory (with
the checkout on PYTHONPATH). Each ```bash block runs from the repository root with the
running interpreter's `bin/` first on PATH (so `python` is the project's interpreter),
except the README's first two commands: `.ci/run` runs the test command, and the main
job is the binaries' own test (tests/train_bin_test.py, tests/export_bin_test.py).
"""
# bazel-size: enormous
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
DOCUMENTS = ("README.md", "docs/migration.md")
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```\s*$", re.M | re.S)
TIMEOUT_S = 600


def blocks(document):
  """[(language, first line number, code)] of every fenced block in `document`."""
  with open(os.path.join(ROOT, document), encoding="utf-8") as f:
    text = f.read()
  found = []
  for match in FENCE.finditer(text):
    line = text.count("\n", 0, match.start()) + 2
    found.append((match.group(1), line, match.group(2)))
  return found


def _cases():
  cases = []
  for document in DOCUMENTS:
    bash_seen = 0
    for language, line, code in blocks(document):
      if language == "bash" and document == "README.md":
        bash_seen += 1
        if bash_seen <= 2:  # the two top commands
          continue
      if language in ("python", "bash"):
        cases.append(pytest.param(language, code, id=f"{document}:{line}:{language}"))
  return cases


def test_the_readme_starts_with_the_two_commands():
  bash = [code for language, _, code in blocks("README.md") if language == "bash"]
  assert "scripts/setup.sh" in bash[0] and "tfprune-train" in bash[0]
  assert bash[1].strip() == (
      "bash scripts/setup.sh && .venv/bin/python -m pytest -q -n 2 --dist loadfile tests")


def test_every_block_has_a_language():
  for document in DOCUMENTS:
    for language, line, _ in blocks(document):
      assert language, f"{document}:{line}: fenced block without a language"


@pytest.mark.parametrize("language,code", _cases())
def test_block_runs(language, code, tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3",
             PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
  if language == "python":
    cmd, cwd = [sys.executable, "-c", code], tmp_path
  else:
    cmd, cwd = ["bash", "-euo", "pipefail", "-c", code], ROOT
  proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                        timeout=TIMEOUT_S)
  assert proc.returncode == 0, (f"exit {proc.returncode}\n--- code:\n{code}\n--- stdout:\n"
                                f"{proc.stdout[-3000:]}\n--- stderr:\n{proc.stderr[-5000:]}")


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
