"""Atomic file writes: a file is either fully written or not there at all."""
import os
import tempfile


def _default_mode():
  umask = os.umask(0)
  os.umask(umask)
  return 0o666 & ~umask


def atomic_write(path, data):
  """Writes `data` (bytes or str) to `path` atomically.

  The bytes go to a temporary file in the same directory, are flushed and fsynced,
  and then renamed over `path`, so readers never see a half-written file.

  Args:
    path: destination file path; its directory is created if missing.
    data: `bytes` or `str` (str is encoded as UTF-8).
  """
  path = os.fspath(path)
  if isinstance(data, str):
    data = data.encode("utf-8")
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=directory)
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, _default_mode())  # mkstemp makes 0600; give the usual 0644-style mode
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def atomic_save_keras(model, path):
  """Saves a Keras model to `path` (.keras) atomically (temp file + rename)."""
  path = os.fspath(path)
  if not path.endswith(".keras"):
    raise ValueError(f"Keras model path must end with '.keras', got {path!r}.")
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".keras", dir=directory)
  os.close(fd)
  try:
    model.save(tmp)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
