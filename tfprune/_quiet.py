"""Quiet TensorFlow's C++ start-up logging for the tfprune binaries (before TF loads).

The `tfprune` package imports TensorFlow before any binary's own code runs, and TF
2.21 prints its start-up lines ("All log messages before absl::InitializeLog() ...",
cudart_stub, cpu_feature_guard, cuInit) whatever `TF_CPP_MIN_LOG_LEVEL` says. So for
the binaries (`tfprune-*` console scripts, `python -m tfprune.bin.*`) this module,
imported first by `tfprune/__init__.py`, sets `TF_CPP_MIN_LOG_LEVEL` from
`--tf_log_level` (default quiet = 3) and, when quiet, imports TensorFlow and
initialises its devices with file descriptor 2 pointed at /dev/null.
`--tf_log_level=info|warning|error` brings TF's logs back. Library users
(`import tfprune`) are not affected; an explicit environment variable always wins.
"""
import contextlib
import os
import sys

TF_LOG_LEVELS = {"quiet": "3", "error": "2", "warning": "1", "info": "0"}


def _binary_argv(argv):
  """The arguments after the program if `argv` runs a tfprune binary, else None."""
  if not argv:
    return None
  if os.path.basename(argv[0]).startswith("tfprune-"):
    return argv[1:]
  for i, arg in enumerate(argv[:-1]):
    if arg == "-m" and argv[i + 1].startswith("tfprune.bin."):
      return argv[i + 2:]
  return None


def configure(argv=None):
  """Sets `TF_CPP_MIN_LOG_LEVEL` for a tfprune binary's command line (no-op otherwise)."""
  argv = list(getattr(sys, "orig_argv", sys.argv) if argv is None else argv)
  args = _binary_argv(argv)
  if args is None:
    return None
  level = "quiet"
  for arg in args:
    if arg.startswith("--tf_log_level="):
      level = arg.split("=", 1)[1]
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", TF_LOG_LEVELS.get(level, "3"))
  if level == "quiet" and "tensorflow" not in sys.modules:
    with native_stderr_silenced():
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      tf.config.list_logical_devices()  # device initialisation (cuInit) logs here
  return os.environ["TF_CPP_MIN_LOG_LEVEL"]


@contextlib.contextmanager
def native_stderr_silenced():
  """Points file descriptor 2 at /dev/null (native code's stderr), then restores it."""
  try:
    sys.stderr.flush()
    saved = os.dup(2)
  except (OSError, ValueError):  # no real fd 2 (embedded interpreters): do nothing
    yield
    return
  devnull = os.open(os.devnull, os.O_WRONLY)
  try:
    os.dup2(devnull, 2)
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


configure()
