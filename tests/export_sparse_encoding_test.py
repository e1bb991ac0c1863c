"""Tests for tfprune.export.sparse_encoding (pure numpy CSR / block codecs)."""
import sys

import numpy as np
import pytest

from tfprune.export import sparse_encoding as se


def _random_sparse(rng, shape, density, dtype=np.float32):
  values = rng.integers(1, 100, size=shape).astype(dtype)
  return values * (rng.random(shape) < density)


@pytest.mark.parametrize("shape", [(5, 8), (3, 4, 16), (64, 64), (1, 1)])
@pytest.mark.parametrize("density", [0.0, 0.1, 0.5, 1.0])
def test_csr_round_trip(shape, density):
  rng = np.random.default_rng(0)
  dense = _random_sparse(rng, shape, density)
  enc = se.encode_csr(dense)
  assert enc.format == "csr"
  # One stored value per nonzero; an all-zero tensor stores one explicit zero.
  assert enc.values.size == max(1, np.count_nonzero(dense))
  np.testing.assert_array_equal(se.decode(enc.values, shape, enc.sparsity), dense)


@pytest.mark.parametrize("block", [4, 16])
@pytest.mark.parametrize("dtype", [np.float32, np.int8])
def test_block_round_trip_with_empty_and_dense_rows(block, dtype):
  rng = np.random.default_rng(1)
  dense = _random_sparse(rng, (12, 4 * block), 0.05, dtype)
  dense[3] = 0                                  # empty row
  dense[5] = rng.integers(1, 100, 4 * block)    # fully dense row
  enc = se.encode_block(dense, block)
  assert enc.format == f"block1x{block}"
  assert enc.values.size % block == 0
  assert se.describe(enc.sparsity) == f"block1x{block}"
  np.testing.assert_array_equal(se.decode(enc.values, dense.shape, enc.sparsity), dense)


@pytest.mark.parametrize("shape,expected", [
    ((4, 16), "uint8"),       # indices < 256, nnz < 256
    ((4, 300), "uint16"),     # column index 299
    ((300, 300), "int32"),    # segments reach 90000 > 65535
])
def test_index_width_by_size(shape, expected):
  dense = np.ones(shape, np.float32)
  enc = se.encode_csr(dense)
  csr = enc.sparsity.dimMetadata[-1]
  widths = {type(csr.arraySegments).__name__, type(csr.arrayIndices).__name__}
  names = {"Uint8VectorT": "uint8", "Uint16VectorT": "uint16", "Int32VectorT": "int32"}
  assert names[type(csr.arraySegments).__name__] == se.index_dtype_for(shape[0] * shape[1])
  assert expected in {names[w] for w in widths}
  np.testing.assert_array_equal(se.decode(enc.values, shape, enc.sparsity), dense)
  assert enc.nbytes == enc.values.nbytes + se.index_bytes(enc.sparsity)


def test_index_dtype_for_limits():
  assert se.index_dtype_for(255) == "uint8"
  assert se.index_dtype_for(256) == "uint16"
  assert se.index_dtype_for(65536) == "int32"
  with pytest.raises(ValueError, match="int32"):
    se.index_dtype_for(2**31)


def test_block_sizes_smaller_than_csr_for_block_masks():
  rng = np.random.default_rng(2)
  mask = np.repeat(rng.random((64, 16)) < 0.1, 4, axis=1)
  dense = rng.standard_normal((64, 64)).astype(np.float32) * mask
  assert se.encode_block(dense, 4).nbytes < se.encode_csr(dense).nbytes


@pytest.mark.parametrize("shape", [(6, 9), (5, 4, 7), (4, 3, 3, 10)])
@pytest.mark.parametrize("density", [0.0, 0.05, 0.4, 1.0])
def test_csf_round_trip_every_sparse_suffix(shape, density):
  rng = np.random.default_rng(3)
  dense = _random_sparse(rng, shape, density, np.int8)
  for first_sparse in range(len(shape)):
    enc = se.encode_csf(dense, first_sparse)
    assert enc.values.size == max(1, np.count_nonzero(dense))  # one value per nonzero
    formats = [d.format for d in enc.sparsity.dimMetadata]
    assert formats == [se.DENSE] * first_sparse + [se.SPARSE_CSR] * (len(shape) - first_sparse)
    assert se.describe(enc.sparsity) == "csr"
    assert enc.nbytes == enc.values.nbytes + se.index_bytes(enc.sparsity)
    np.testing.assert_array_equal(se.decode(enc.values, shape, enc.sparsity), dense)
  assert se.encode_compressed(dense).nbytes == min(
      se.encode_csf(dense, f).nbytes for f in range(len(shape)))


def test_compressed_beats_csr_on_many_empty_rows():
  dense = np.zeros((50, 5, 5, 20), np.int8)   # conv kernel, 40 nonzeros
  dense[np.arange(0, 50, 5), 2, 2, :4] = 7
  assert se.encode_compressed(dense).nbytes < se.encode_csr(dense).nbytes / 4


@pytest.mark.parametrize("cols,segment", [(784, 196), (800, 200), (300, 150), (256, None),
                                          (100, None), (257, None), (2048, 256)])
def test_segment_length(cols, segment):
  assert se.segment_length(cols) == segment


def test_segmented_round_trip_uses_uint8_column_indices():
  rng = np.random.default_rng(4)
  dense = _random_sparse(rng, (30, 784), 0.03, np.int8)
  dense[7] = 0
  enc = se.encode_segmented(dense)
  assert enc.stored_shape == (30, 4, 196)
  assert isinstance(enc.sparsity.dimMetadata[-1].arrayIndices, se.schema.Uint8VectorT)
  back = se.decode(enc.values, enc.stored_shape, enc.sparsity).reshape(dense.shape)
  np.testing.assert_array_equal(back, dense)
  assert enc.nbytes < se.encode_csr(dense).nbytes
  assert se.encode_segmented(dense[:, :256]) is None


def test_bad_inputs_raise_clear_errors():
  with pytest.raises(ValueError, match="divisible by 16"):
    se.encode_block(np.ones((4, 20), np.float32), 16)
  with pytest.raises(ValueError, match="block_size"):
    se.encode_block(np.ones((4, 16), np.float32), 8)
  with pytest.raises(ValueError, match=">= 2 dimensions"):
    se.encode_csr(np.ones(5, np.float32))
  with pytest.raises(ValueError, match=">= 2 dimensions"):
    se.encode_csf(np.ones(5, np.float32), 0)
  with pytest.raises(ValueError, match=r"first_sparse must be in \[0, 1\]"):
    se.encode_csf(np.ones((2, 3), np.float32), 2)
  enc = se.encode_csr(np.ones((4, 4), np.float32))
  with pytest.raises(ValueError, match="values"):
    se.decode(enc.values[:3], (4, 4), enc.sparsity)


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
