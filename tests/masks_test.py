"""Tests for tfprune.masks: exact counts per scope, ties, patterns."""
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfprune import masks


def _np(x):
  return np.asarray(x.numpy() if hasattr(x, "numpy") else x)


@pytest.mark.parametrize("size,sparsity,expected", [
    (100, 0.9, 10), (128, 0.8, 26), (10, 0.0, 10), (7, 0.5, 4), (1000, 0.99, 10),
    (300, 0.95, 15)])
def test_keep_count_is_ceil_without_float_noise(size, sparsity, expected):
  assert int(masks.keep_count(size, sparsity)) == expected


def test_topk_mask_exact_k_and_ties_keep_lower_index():
  scores = tf.constant([1.0, 3.0, 3.0, 3.0, 0.5, 2.0])
  mask = _np(masks.topk_mask(scores, 2))
  np.testing.assert_array_equal(mask, [0, 1, 1, 0, 0, 0])
  all_tied = _np(masks.topk_mask(tf.ones([10]), 3))
  np.testing.assert_array_equal(all_tied, [1, 1, 1, 0, 0, 0, 0, 0, 0, 0])


def test_layer_scope_exact_count_per_tensor():
  rng = np.random.default_rng(0)
  scores = [tf.constant(np.abs(rng.normal(size=s)), tf.float32)
            for s in [(30, 20), (20, 10), (3, 3, 4, 8)]]
  out = masks.compute_masks(scores, 0.9, scope="layer")
  for s, m in zip(scores, out):
    m = _np(m)
    assert m.shape == tuple(s.shape)
    assert set(np.unique(m)) <= {0.0, 1.0}
    assert m.sum() == int(np.ceil(0.1 * m.size - 1e-9))
    # The kept entries are the largest ones.
    kept = _np(s)[m == 1]
    dropped = _np(s)[m == 0]
    assert kept.min() >= dropped.max()


def test_global_scope_one_threshold_exact_total():
  a = tf.constant([[10.0, 9.0], [8.0, 7.0]])
  b = tf.constant([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
  # max_pruning_ratio=1.0: the plain threshold, no layer floor (tests/liveness_test.py).
  ma, mb = masks.compute_masks([a, b], 0.6, scope="global", max_pruning_ratio=1.0)
  # 10 entries, keep ceil(0.4 * 10) = 4: all of a, nothing of b.
  np.testing.assert_array_equal(_np(ma), np.ones((2, 2)))
  np.testing.assert_array_equal(_np(mb), np.zeros(6))


def test_global_scope_ties_across_tensors_prefer_first_tensor():
  ma, mb = masks.compute_masks([tf.ones([3]), tf.ones([3])], 0.5, scope="global",
                               max_pruning_ratio=1.0)
  np.testing.assert_array_equal(_np(ma), [1, 1, 1])
  np.testing.assert_array_equal(_np(mb), [0, 0, 0])


@pytest.mark.parametrize("block", [4, 16])
def test_block_scope_blocks_run_along_dense_input_axis(block):
  rng = np.random.default_rng(1)
  kernel = np.abs(rng.normal(size=(64, 12))).astype(np.float32)  # [in, out]
  m = _np(masks.compute_masks([tf.constant(kernel)], 0.75, scope="block",
                              block_size=block)[0])
  blocks = m.reshape(64 // block, block, 12)
  # Every block is all-kept or all-pruned: 1 x block after TFLite's transpose to [out, in].
  assert np.all((blocks.min(axis=1) == blocks.max(axis=1)))
  n_blocks = (64 // block) * 12
  assert blocks[:, 0, :].sum() == int(np.ceil(0.25 * n_blocks - 1e-9))


def test_block_scope_pads_uneven_input_axis_and_conv_uses_cin():
  kernel = tf.constant(np.arange(1, 1 + 3 * 3 * 6 * 2, dtype=np.float32).reshape(3, 3, 6, 2))
  m = _np(masks.compute_masks([kernel], 0.5, scope="block", block_size=4)[0])
  assert m.shape == (3, 3, 6, 2)
  # cin=6 is padded to 8: blocks are cin[0:4] and cin[4:6].
  np.testing.assert_array_equal(m[..., 0:4, :].min(axis=-2), m[..., 0:4, :].max(axis=-2))
  np.testing.assert_array_equal(m[..., 4:6, :].min(axis=-2), m[..., 4:6, :].max(axis=-2))


def test_block_scope_global_allocation():
  a = tf.constant(np.full((8, 2), 5.0, np.float32))
  b = tf.constant(np.full((8, 2), 1.0, np.float32))
  ma, mb = masks.compute_masks([a, b], 0.5, scope="block", block_size=4,
                               allocation="global", max_pruning_ratio=1.0)
  assert _np(ma).sum() == 16 and _np(mb).sum() == 0


def test_nm_scope_two_of_four_along_input_axis():
  rng = np.random.default_rng(2)
  kernel = rng.normal(size=(16, 5)).astype(np.float32)
  m = _np(masks.compute_masks([tf.abs(kernel)], 0.9, scope="n:m", n=2, m=4)[0])
  groups = m.reshape(4, 4, 5)
  np.testing.assert_array_equal(groups.sum(axis=1), np.full((4, 5), 2))
  top2 = np.argsort(-np.abs(kernel).reshape(4, 4, 5), axis=1, kind="stable")[:, :2, :]
  for g in range(4):
    for o in range(5):
      assert set(np.nonzero(groups[g, :, o])[0]) == set(top2[g, :, o])


def test_structured_scope_keeps_whole_output_units():
  kernel = np.ones((10, 6), np.float32) * np.array([1, 5, 2, 6, 3, 4], np.float32)
  m = _np(masks.compute_masks([tf.constant(kernel)], 0.5, scope="structured")[0])
  np.testing.assert_array_equal(m[0], [0, 1, 0, 1, 0, 1])
  assert np.all(m == m[0])


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, "x", float("nan")])
def test_sparsity_outside_range_is_a_clear_error(bad):
  with pytest.raises(ValueError, match=r"\[0, 1\)"):
    masks.validate_sparsity(bad)


def test_unknown_scope_and_bad_parameters():
  with pytest.raises(ValueError, match="valid scopes are layer, global, block"):
    masks.compute_masks([tf.ones([4])], 0.5, scope="rows")
  with pytest.raises(ValueError, match="block_size must be one of"):
    masks.compute_masks([tf.ones([4, 4])], 0.5, scope="block", block_size=3)
  with pytest.raises(ValueError, match="0 < n < m"):
    masks.compute_masks([tf.ones([4, 4])], 0.5, scope="n:m", n=4, m=4)


def test_works_inside_tf_function():
  fn = tf.function(lambda s, sp: masks.compute_masks([s], sp, scope="layer")[0])
  m = _np(fn(tf.range(10, dtype=tf.float32), tf.constant(0.7)))
  np.testing.assert_array_equal(m, [0] * 7 + [1] * 3)


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
