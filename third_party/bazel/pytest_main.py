"""The `main` of every Bazel `py_test`: runs one test file under pytest.

Usage (as BUILD's generated py_test targets call it): pytest_main.py TEST_FILE [PYTEST_ARGS...]
with TEST_FILE relative to the workspace root, e.g. `tests/masks_test.py`.

Bazel runs a py_test's `main` as `__main__`; going through pytest instead of each test
file's own `if __name__ == "__main__":` block keeps the test files plain pytest modules
and applies tests/conftest.py (quiet TensorFlow, two logical CPU devices, seeds) exactly
as `python -m pytest tests/...` does. The file is run from the runfiles tree, so it sees
only what its target declares (srcs, deps, data). Per-test results go to the JUnit XML
file Bazel asks for ($XML_OUTPUT_FILE), temporary files below $TEST_TMPDIR, and nothing is
written into the source tree (no .pytest_cache, no __pycache__). An editable install of
tfprune in the venv is not used by this process: its modules come from the runfiles.
"""
import os
import sys

PACKAGE = "tfprune"


def _hide_editable_install():
  """Drops the import hook of an editable install of the package (`pip install -e`).

  setuptools' editable finder serves any `tfprune.*` module that the runfiles tree lacks
  from the checkout the venv was installed from, which hides a missing dependency in
  BUILD (or, with a venv shared between checkouts, mixes two versions of the package).
  Without it, a module the target does not declare fails to import, as it should.
  """
  sys.meta_path[:] = [
      finder for finder in sys.meta_path
      if PACKAGE not in getattr(sys.modules.get(getattr(finder, "__module__", "")),
                                "MAPPING", {})
      or not getattr(finder, "__module__", "").startswith("__editable__")]


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
  _hide_editable_install()
  import pytest  # pylint: disable=g-import-not-at-top
  args = [path, "-p", "no:cacheprovider", "-ra"]
  if os.environ.get("XML_OUTPUT_FILE"):
    args.append("--junitxml=" + os.environ["XML_OUTPUT_FILE"])
  if os.environ.get("TEST_TMPDIR"):
    args.append("--basetemp=" + os.path.join(os.environ["TEST_TMPDIR"], "pytest"))
  return int(pytest.main(args + argv[2:]))


if __name__ == "__main__":
  sys.exit(main(sys.argv))
