"""Pure-numpy encoders/decoders for TFLite's sparse tensor format.

TFLite stores a sparse tensor as a flat `values` buffer plus `SparsityParameters`
(schema.fbs): a `traversal_order` over the tensor's dimensions followed by its
block dimensions, a `block_map` saying which original dimension each block
dimension splits, and one `DimensionMetadata` per traversed dimension, either
DENSE (`dense_size`) or SPARSE_CSR (`array_segments`, `array_indices`).

This module builds and reads those parameters with the flatbuffer object API
(`ai_edge_litert.schema_py_generated`), but holds no TFLite graph logic: it only
maps dense numpy arrays to (values, parameters) and back.

Two families of encodings are written, the ones LiteRT kernels understand:

* Compressed (read through a DENSIFY op; one stored value per nonzero):
  - CSR: every dimension DENSE except the last, which is SPARSE_CSR. For a 2-D
    `[rows, cols]` tensor this is classic CSR.
  - CSF (`encode_csf`): a suffix of the dimensions SPARSE_CSR (a sparse level
    lists which children of each stored parent hold a nonzero).
  - Segmented CSR (`encode_segmented`): the tensor stored as `[..., cols / s, s]`
    with `s` <= 256, so column indices fit in uint8 when `cols` > 256; the graph
    reshapes the DENSIFY output back. (LiteRT reads block dimensions only when
    they are DENSE, so splitting has to be a real reshape.)
  `encode_compressed` tries these layouts and keeps the smallest.
* Block 1xB: a 2-D `[rows, cols]` tensor split into `1 x B` blocks along the
  last dimension (TFLite's FULLY_CONNECTED weights are `[out, in]`, so blocks run
  along the Keras kernel's input axis). Dimensions: DENSE rows, SPARSE_CSR over
  block columns, DENSE block of B. Every block holding any nonzero is stored
  whole. B = 4 is LiteRT's fast float path, B = 16 its fast int8 path.
"""
import dataclasses

import numpy as np

from ai_edge_litert import schema_py_generated as schema

DENSE = schema.DimensionType.DENSE
SPARSE_CSR = schema.DimensionType.SPARSE_CSR

_INDEX_TYPES = (
    # (max value, union type, vector class, numpy dtype, name)
    (np.iinfo(np.uint8).max, schema.SparseIndexVector.Uint8Vector,
     schema.Uint8VectorT, np.uint8, "uint8"),
    (np.iinfo(np.uint16).max, schema.SparseIndexVector.Uint16Vector,
     schema.Uint16VectorT, np.uint16, "uint16"),
    (np.iinfo(np.int32).max, schema.SparseIndexVector.Int32Vector,
     schema.Int32VectorT, np.int32, "int32"),
)

BLOCK_SIZES = (4, 16)


def _keep_one(mask):
  """`mask` with its first element set when it selects nothing.

  An all-zero tensor then stores one explicit zero: an empty values buffer
  makes TFLite treat the tensor as non-constant, and DENSIFY / a sparse FC read
  uninitialised memory (NaN), with XNNPACK on and off.
  """
  if mask.size and not mask.any():
    mask = mask.copy()
    mask.reshape(-1)[0] = True
  return mask


@dataclasses.dataclass
class Encoded:
  """A dense tensor encoded in TFLite's sparse format.

  Attributes:
    values: 1-D numpy array of the stored values (the tensor's buffer data).
    sparsity: `schema.SparsityParametersT` describing the layout.
    format: "csr" or "block1x4" / "block1x16".
    nbytes: bytes this encoding costs in the file (values + index arrays).
    stored_shape: shape the sparse tensor must be stored with, when it differs
      from the dense tensor's (segmented CSR); None otherwise.
  """
  values: np.ndarray
  sparsity: object
  format: str
  nbytes: int
  stored_shape: tuple = None


def index_dtype_for(max_value):
  """Returns the narrowest TFLite index type name holding `max_value`.

  Args:
    max_value: largest index or segment value that must be stored.

  Returns:
    One of "uint8", "uint16", "int32".

  Raises:
    ValueError: if `max_value` does not fit in int32.
  """
  for limit, _, _, _, name in _INDEX_TYPES:
    if max_value <= limit:
      return name
  raise ValueError(f"Sparse index value {max_value} does not fit in int32.")


def _index_vector(array):
  """Wraps an integer array in the narrowest SparseIndexVector union member."""
  array = np.asarray(array, dtype=np.int64)
  max_value = int(array.max()) if array.size else 0
  for limit, union_type, cls, dtype, _ in _INDEX_TYPES:
    if max_value <= limit:
      vec = cls()
      vec.values = array.astype(dtype)
      return union_type, vec, array.size * np.dtype(dtype).itemsize
  raise ValueError(f"Sparse index value {max_value} does not fit in int32.")


def _dense_dim(size):
  dim = schema.DimensionMetadataT()
  dim.format = DENSE
  dim.denseSize = int(size)
  return dim


def _csr_dim(segments, indices):
  dim = schema.DimensionMetadataT()
  dim.format = SPARSE_CSR
  dim.arraySegmentsType, dim.arraySegments, seg_bytes = _index_vector(segments)
  dim.arrayIndicesType, dim.arrayIndices, idx_bytes = _index_vector(indices)
  return dim, seg_bytes + idx_bytes


def encode_csr(dense):
  """Encodes an N-D array (N >= 2) as CSR over its last dimension.

  Args:
    dense: numpy array with at least 2 dimensions.

  Returns:
    An `Encoded` with one stored value per nonzero (one explicit zero for an
    all-zero tensor).

  Raises:
    ValueError: if `dense` has fewer than 2 dimensions.
  """
  dense = np.asarray(dense)
  if dense.ndim < 2:
    raise ValueError(f"CSR needs a tensor with >= 2 dimensions, got shape {dense.shape}.")
  rows = int(np.prod(dense.shape[:-1]))
  mat = dense.reshape(rows, dense.shape[-1])
  nz = _keep_one(mat != 0)
  segments = np.concatenate([[0], np.cumsum(nz.sum(axis=1))])
  _, cols = np.nonzero(nz)
  values = mat[nz]
  sp = schema.SparsityParametersT()
  sp.traversalOrder = list(range(dense.ndim))
  sp.blockMap = []
  dims = [_dense_dim(s) for s in dense.shape[:-1]]
  csr, idx_bytes = _csr_dim(segments, cols)
  sp.dimMetadata = dims + [csr]
  return Encoded(values, sp, "csr", values.nbytes + idx_bytes)


def encode_csf(dense, first_sparse):
  """Encodes an N-D array as compressed sparse fibres, one stored value per nonzero.

  Levels before `first_sparse` are DENSE, the rest SPARSE_CSR: a sparse level
  stores, for each stored position of the level above, the indices of the
  children whose sub-array holds a nonzero. `first_sparse = N - 1` is CSR.

  Args:
    dense: numpy array with at least 2 dimensions.
    first_sparse: index of the first SPARSE_CSR level (0 .. N - 1).

  Returns:
    An `Encoded` with format "csr".

  Raises:
    ValueError: on fewer than 2 dimensions or `first_sparse` out of range.
  """
  arr = np.asarray(dense)
  if arr.ndim < 2:
    raise ValueError(f"CSF needs a tensor with >= 2 dimensions, got shape {arr.shape}.")
  shape = list(arr.shape)
  if not 0 <= first_sparse < len(shape):
    raise ValueError(f"first_sparse must be in [0, {len(shape) - 1}], got {first_sparse}.")
  # has_nz[l]: whether the sub-array under each prefix of length l + 1 holds a nonzero.
  has_nz = [None] * len(shape)
  acc = _keep_one(arr != 0)
  for level in range(len(shape) - 1, -1, -1):
    has_nz[level] = acc.reshape(-1)
    acc = acc.any(axis=-1)
  positions = np.zeros(1, np.int64)
  dims, idx_bytes = [], 0
  for level, size in enumerate(shape):
    children = positions[:, None] * size + np.arange(size)[None, :]
    if level < first_sparse:
      positions = children.reshape(-1)
      dims.append(_dense_dim(size))
      continue
    keep = has_nz[level][children]
    segments = np.concatenate([[0], np.cumsum(keep.sum(axis=1))])
    _, indices = np.nonzero(keep)
    positions = children[keep]
    dim, nbytes = _csr_dim(segments, indices)
    dims.append(dim)
    idx_bytes += nbytes
  values = arr.reshape(-1)[positions]
  sp = schema.SparsityParametersT()
  sp.traversalOrder = list(range(len(shape)))
  sp.blockMap = []
  sp.dimMetadata = dims
  return Encoded(values, sp, "csr", values.nbytes + idx_bytes)


def segment_length(cols):
  """Largest divisor of `cols` that is <= 256 (uint8 column indices), or None.

  None when `cols` <= 256 (indices already fit in uint8) or no divisor >= 16
  exists (the segment pointers would cost more than uint8 indices save).
  """
  limit = np.iinfo(np.uint8).max + 1
  if cols <= limit:
    return None
  return next((s for s in range(limit, 15, -1) if cols % s == 0), None)


def encode_segmented(dense):
  """CSR of `dense` stored as `[..., cols / s, s]` (see `segment_length`), or None.

  Args:
    dense: numpy array with at least 2 dimensions.

  Returns:
    An `Encoded` whose `stored_shape` is the segmented shape (the reader must
    reshape the densified tensor back to `dense.shape`), or None when the last
    dimension has no suitable segment length.
  """
  dense = np.asarray(dense)
  seg = segment_length(dense.shape[-1])
  if seg is None:
    return None
  stored = dense.shape[:-1] + (dense.shape[-1] // seg, seg)
  enc = encode_csf(dense.reshape(stored), len(stored) - 1)
  enc.stored_shape = stored
  return enc


def encode_compressed(dense):
  """The smallest one-value-per-nonzero encoding of `dense` with `dense`'s shape.

  Tries CSR and every CSF sparse suffix of the dimensions, keeps the fewest bytes.

  Args:
    dense: numpy array with at least 2 dimensions.

  Returns:
    An `Encoded` with format "csr".
  """
  dense = np.asarray(dense)
  best = encode_csr(dense)
  for first_sparse in range(dense.ndim - 1):
    enc = encode_csf(dense, first_sparse)
    if enc.nbytes < best.nbytes:
      best = enc
  return best


def encode_block(dense, block_size):
  """Encodes a 2-D `[rows, cols]` array in 1 x `block_size` blocks.

  Args:
    dense: 2-D numpy array; `cols` must be divisible by `block_size`.
    block_size: 4 or 16.

  Returns:
    An `Encoded` storing every block that holds a nonzero.

  Raises:
    ValueError: on a non-2-D array, a bad block size, or `cols` not divisible.
  """
  dense = np.asarray(dense)
  if block_size not in BLOCK_SIZES:
    raise ValueError(f"block_size must be one of {BLOCK_SIZES}, got {block_size}.")
  if dense.ndim != 2:
    raise ValueError(f"Block encoding needs a 2-D tensor, got shape {dense.shape}.")
  rows, cols = dense.shape
  if cols % block_size:
    raise ValueError(
        f"Block encoding 1x{block_size} needs the last dimension divisible by "
        f"{block_size}, got shape {dense.shape}.")
  blocks = dense.reshape(rows, cols // block_size, block_size)
  keep = _keep_one(np.any(blocks != 0, axis=2))
  segments = np.concatenate([[0], np.cumsum(keep.sum(axis=1))])
  _, bcols = np.nonzero(keep)
  values = blocks[keep].reshape(-1)
  sp = schema.SparsityParametersT()
  sp.traversalOrder = [0, 1, 2]
  sp.blockMap = [1]
  csr, idx_bytes = _csr_dim(segments, bcols)
  sp.dimMetadata = [_dense_dim(rows), csr, _dense_dim(block_size)]
  return Encoded(values, sp, f"block1x{block_size}", values.nbytes + idx_bytes)


def _vector_values(vec):
  if vec is None:
    return np.zeros(0, np.int64)
  return np.asarray(vec.values, dtype=np.int64)


def describe(sparsity):
  """Names a sparse layout: "csr", "block1xB", or a generic description.

  Args:
    sparsity: `schema.SparsityParametersT`.

  Returns:
    A short string.
  """
  block_map = list(sparsity.blockMap or [])
  dims = sparsity.dimMetadata or []
  if not block_map or any(d.format == SPARSE_CSR for d in dims[len(dims) - len(block_map):]):
    # No block dimensions, or sparse ones (segmented CSF): one value per nonzero.
    return "csr" if any(d.format == SPARSE_CSR for d in dims) else "dense-layout"
  sizes = "x".join(str(d.denseSize) for d in dims[len(dims) - len(block_map):])
  if block_map == [1] and len(dims) == 3:
    return f"block1x{dims[2].denseSize}"
  return f"block(map={block_map},size={sizes})"


def index_bytes(sparsity):
  """Bytes taken by the index arrays of `sparsity`."""
  total = 0
  for dim in sparsity.dimMetadata or []:
    for vec in (dim.arraySegments, dim.arrayIndices):
      if vec is not None:
        total += np.asarray(vec.values).nbytes
  return total


def decode(values, shape, sparsity):
  """Decodes TFLite sparse `values` back to a dense array.

  Handles any traversal order and block map (the general TFLite format), fully
  vectorised.

  Args:
    values: 1-D numpy array of stored values.
    shape: the tensor's dense shape.
    sparsity: `schema.SparsityParametersT`.

  Returns:
    Dense numpy array of `shape` and `values.dtype`.

  Raises:
    ValueError: if the parameters are inconsistent with `shape` or `values`.
  """
  shape = [int(s) for s in shape]
  rank = len(shape)
  order = list(sparsity.traversalOrder or [])
  block_map = list(sparsity.blockMap or [])
  dims = list(sparsity.dimMetadata or [])
  n_levels = rank + len(block_map)
  if len(order) != n_levels or len(dims) != n_levels or sorted(order) != list(range(n_levels)):
    raise ValueError(
        f"Inconsistent sparsity parameters for shape {shape}: traversal_order "
        f"{order}, block_map {block_map}, {len(dims)} dim_metadata entries.")
  # Size of each expanded dimension (original dims hold the number of blocks).
  exp_size = [0] * n_levels
  for level, d in enumerate(order):
    if dims[level].format == DENSE:
      exp_size[d] = dims[level].denseSize
  block_sizes = {}
  for k, orig in enumerate(block_map):
    block_sizes[orig] = exp_size[rank + k]
  for d in range(rank):
    bs = block_sizes.get(d, 1)
    if bs <= 0 or shape[d] % bs:
      raise ValueError(f"Block size {bs} does not divide dimension {d} of shape {shape}.")
    if exp_size[d] == 0:
      exp_size[d] = shape[d] // bs
  positions = np.zeros(1, np.int64)
  coords = np.zeros((0, 1), np.int64)
  for level, d in enumerate(order):
    dim = dims[level]
    if dim.format == DENSE:
      n = dim.denseSize
      positions = (positions[:, None] * n + np.arange(n)[None, :]).reshape(-1)
      coords = np.concatenate(
          [np.repeat(coords, n, axis=1), np.tile(np.arange(n), coords.shape[1])[None, :]],
          axis=0)
    else:
      segments = _vector_values(dim.arraySegments)
      indices = _vector_values(dim.arrayIndices)
      if positions.size and positions.max() + 1 >= segments.size:
        raise ValueError(f"array_segments too short at level {level} for shape {shape}.")
      starts, ends = segments[positions], segments[positions + 1]
      counts = ends - starts
      if np.any(counts < 0) or (ends.size and ends.max() > indices.size):
        raise ValueError(f"Corrupt array_segments at level {level} for shape {shape}.")
      total = int(counts.sum())
      owner = np.repeat(np.arange(positions.size), counts)
      offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
      new_pos = starts[owner] + offsets
      coords = np.concatenate([coords[:, owner], indices[new_pos][None, :]], axis=0)
      positions = new_pos
  values = np.asarray(values).reshape(-1)
  if positions.size and positions.max() >= values.size:
    raise ValueError(
        f"Sparse tensor of shape {shape} needs {positions.max() + 1} values, "
        f"buffer holds {values.size}.")
  # coords rows follow traversal order; map to original coordinates.
  by_dim = {d: coords[level] for level, d in enumerate(order)}
  full = []
  for d in range(rank):
    c = by_dim[d]
    if d in block_sizes:
      k = block_map.index(d)
      c = c * block_sizes[d] + by_dim[rank + k]
    if c.size and c.max() >= shape[d]:
      raise ValueError(f"Sparse index {c.max()} out of range for dimension {d} of {shape}.")
    full.append(c)
  out = np.zeros(shape, dtype=values.dtype)
  if positions.size:
    out[tuple(full)] = values[positions]
  return out

