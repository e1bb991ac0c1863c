"""Silences TensorFlow's C++ / SavedModel output at the file-descriptor level.

The converter and `model.export` print tens of lines to fd 1 and fd 2 from C++
(absl logging, MLIR diagnostics) and Python; `sys.stdout` redirection does not
catch the C++ part. `captured_output` points fds 1 and 2 at a temporary file
while the block runs and hands the text back, so the exporter shows it only on
failure or when asked (`verbose=True`).
"""
import contextlib
import os
import sys
import tempfile


class Captured:
  """Text written to fds 1 and 2 inside a `captured_output` block (after it ends)."""

  def __init__(self):
    self.text = ""

  def tail(self, lines=40):
    """The last `lines` lines of the captured text."""
    return "\n".join(self.text.rstrip().splitlines()[-lines:])


def _flush():
  for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
    try:
      stream.flush()
    except (AttributeError, ValueError, OSError):
      pass


@contextlib.contextmanager
def captured_output(enabled=True):
  """Context manager redirecting fds 1 and 2 into a `Captured` it yields.

  Args:
    enabled: False to leave the output alone (the yielded `Captured` stays empty).

  Yields:
    A `Captured` whose `text` is filled when the block exits (also on error).
  """
  captured = Captured()
  if not enabled:
    yield captured
    return
  _flush()
  with tempfile.TemporaryFile(mode="w+b") as tmp:
    saved = [os.dup(1), os.dup(2)]
    try:
      os.dup2(tmp.fileno(), 1)
      os.dup2(tmp.fileno(), 2)
      yield captured
    finally:
      _flush()
      os.dup2(saved[0], 1)
      os.dup2(saved[1], 2)
      for fd in saved:
        os.close(fd)
      tmp.seek(0)
      captured.text = tmp.read().decode("utf-8", "replace")
