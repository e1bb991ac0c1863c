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


def atomic_save_keras(model, path, include_optimizer=True):
  """Saves a Keras model to `path` (.keras) atomically (temp file + rename).

  The file gets the usual umask-derived mode (0644 under umask 022), not mkstemp's 0600.

  Args:
    model: the Keras model.
    path: destination, must end with `.keras`.
    include_optimizer: False saves the model as if it were not compiled: no optimizer
      state (Adam's slots triple the file) and no compile config, so `load_model`
      returns an uncompiled model (compile it to train further).
  """
  path = os.fspath(path)
  if not path.endswith(".keras"):
    raise ValueError(f"Keras model path must end with '.keras', got {path!r}.")
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".keras", dir=directory)
  os.close(fd)
  optimizer = getattr(model, "optimizer", None)
  compiled = getattr(model, "compiled", False)
  strip_optimizer = not include_optimizer and (optimizer is not None or compiled)
  try:
    if strip_optimizer:
      model.optimizer, model.compiled = None, False
    try:
      model.save(tmp)
    finally:
      if strip_optimizer:
        model.optimizer, model.compiled = optimizer, compiled
    os.chmod(tmp, _default_mode())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def atomic_replace_dir(src, dst):
  """Moves the complete directory `src` to `dst`, replacing an existing `dst`.

  `src` and `dst` must be on the same file system (siblings). An existing `dst` is
  first renamed aside and deleted only after `src` is in place, so at every moment
  `dst` is either the old complete directory or the new one.
  """
  import shutil  # pylint: disable=g-import-not-at-top
  src, dst = os.fspath(src), os.fspath(dst)
  old = None
  if os.path.lexists(dst):
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(dst)}.old-",
                           dir=os.path.dirname(os.path.abspath(dst)))
    os.rmdir(old)
    os.replace(dst, old)
  try:
    os.replace(src, dst)
  except BaseException:
    if old is not None:
      os.replace(old, dst)
    raise
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)
