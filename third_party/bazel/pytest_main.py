"""The `main` of every Bazel `py_test`: runs one test file under pytest.

Usage (as BUILD's generated py_test targets call it): pytest_main.py TEST_FILE [PYTEST_ARGS...]
with TEST_FILE relative to the workspace root, e.g. `tests/masks_test.py`.

Bazel runs a py_test's `main` as `__main__`; going through pytest instead of each test
file's own `if __name__ == "__main__":` block keeps the test files plain pytest modules
and applies tests/conftest.py (quiet TensorFlow, two logical CPU devices, seeds) exactly
as `python -m pytest tests/...` does. The file is run from the runfiles tree, so it sees
only what its target declares (srcs, deps, data). Per-test results go to the JUnit XML
file Bazel asks for ($XML_OUTPUT_FILE), temporary files below $TEST_TMPDIR, and nothing is
written into the source tree (no .pytest_cache, no __pycache__).
"""
import os
import sys


def main(argv):
  if len(argv) < 2:
    print("usage: pytest_main.py TEST_FILE [PYTEST_ARGS...] (TEST_FILE relative to the "
          "workspace root, e.g. tests/masks_test.py)", file=sys.stderr)
    return 2
  path = argv[1]
  srcdir, workspace = os.environ.get("TEST_SRCDIR"), os.environ.get("TEST_WORKSPACE")
  if srcdir and workspace and not os.path.isabs(path):
    path = os.path.join(srcdir, workspace, path)
  if not os.path.isfile(path):
    print(f"pytest_main.py: test file {path} not found (is it in the target's srcs?)",
          file=sys.stderr)
    return 2
  sys.dont_write_bytecode = True  # runfiles are symlinks into the source tree
  import pytest  # pylint: disable=g-import-not-at-top
  args = [path, "-p", "no:cacheprovider", "-ra"]
  if os.environ.get("XML_OUTPUT_FILE"):
    args.append("--junitxml=" + os.environ["XML_OUTPUT_FILE"])
  if os.environ.get("TEST_TMPDIR"):
    args.append("--basetemp=" + os.path.join(os.environ["TEST_TMPDIR"], "pytest"))
  return int(pytest.main(args + argv[2:]))


if __name__ == "__main__":
  sys.exit(main(sys.argv))
