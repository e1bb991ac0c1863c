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
  """Text written to fds 1 and 2 inside a `captured_output` block (after it ends).

  Attributes:
    stdout: what went to fd 1.
    stderr: what went to fd 2.
    text: both (stdout first).
  """

  def __init__(self):
    self.stdout = ""
    self.stderr = ""

  @property
  def text(self):
    return self.stdout + self.stderr

  def tail(self, lines=40):
    """The last `lines` lines of the captured text."""
    return "\n".join(self.text.rstrip().splitlines()[-lines:])


def _flush():
  for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
    try:
      stream.flush()
    except (AttributeError, ValueError, OSError):
      pass


class _Redirect:
  """Points fds 1 and 2 at temporary files until `stop()`; fills a `Captured`."""

  def __init__(self):
    self.captured = Captured()
    _flush()
    self._files = [tempfile.TemporaryFile(mode="w+b"), tempfile.TemporaryFile(mode="w+b")]
    self._saved = [os.dup(1), os.dup(2)]
    os.dup2(self._files[0].fileno(), 1)
    os.dup2(self._files[1].fileno(), 2)
    self._active = True

  def stop(self):
    """Restores fds 1 and 2 (idempotent) and returns the `Captured`."""
    if self._active:
      self._active = False
      _flush()
      os.dup2(self._saved[0], 1)
      os.dup2(self._saved[1], 2)
      texts = []
      for fd, f in zip(self._saved, self._files):
        os.close(fd)
        f.seek(0)
        texts.append(f.read().decode("utf-8", "replace"))
        f.close()
      self.captured.stdout, self.captured.stderr = texts
    return self.captured


def start_capture():
  """Starts capturing fds 1 and 2 now; call `.stop()` on the result to end it."""
  return _Redirect()


@contextlib.contextmanager
def captured_output(enabled=True):
  """Context manager redirecting fds 1 and 2 into a `Captured` it yields.

  Args:
    enabled: False to leave the output alone (the yielded `Captured` stays empty).

  Yields:
    A `Captured` whose text is filled when the block exits (also on error).
  """
  if not enabled:
    yield Captured()
    return
  redirect = _Redirect()
  try:
    yield redirect.captured
  finally:
    redirect.stop()
