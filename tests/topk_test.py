"""Tests for tfprune.topk: radix-select top-k == sort-based top-k, exactly."""
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfprune import masks
from tfprune import topk


def _reference(scores, k):
  """Concatenate + tf.math.top_k (stable: ties keep the lower flat index) + split."""
  flat = tf.concat([tf.reshape(tf.cast(s, tf.float32), [-1]) for s in scores], 0)
  ref = masks.topk_mask(flat, k).numpy()
  return np.split(ref, np.cumsum([int(np.prod(s.shape)) for s in scores])[:-1])


def _random_scores(rng, kind):
  shapes = [tuple(rng.integers(1, 20, size=rng.integers(1, 4)))
            for _ in range(rng.integers(1, 5))]
  out = []
  for shape in shapes:
    a = np.abs(rng.normal(size=shape)).astype(np.float32)
    if kind == "ties":
      a = np.round(a * 2) / 2  # few distinct values: many ties at the threshold
    elif kind == "zeros":
      a[rng.random(shape) < 0.6] = 0.0  # already-pruned weights score 0
    elif kind == "spread":
      a = (a * 10.0 ** rng.integers(-40, 30, size=shape)).astype(np.float32)  # buckets, denormals
    out.append(tf.constant(a))
  return out


@pytest.mark.parametrize("kind", ["plain", "ties", "zeros", "spread"])
def test_global_masks_equal_sorted_top_k(kind):
  rng = np.random.default_rng({"plain": 0, "ties": 1, "zeros": 2, "spread": 3}[kind])
  for _ in range(12):
    scores = _random_scores(rng, kind)
    n = sum(int(np.prod(s.shape)) for s in scores)
    for k in sorted({0, 1, n // 4, n // 2, n - 1, n}):
      got = topk.global_topk_masks(scores, k)
      for g, r, s in zip(got, _reference(scores, k), scores):
        assert g.shape == s.shape and g.dtype == s.dtype
        np.testing.assert_array_equal(g.numpy().ravel(), r)
      assert int(sum(float(tf.reduce_sum(g)) for g in got)) == k


def test_ties_keep_lower_index_and_earlier_tensor():
  a, b = topk.global_topk_masks([tf.ones([3]), tf.ones([3])], 4)
  np.testing.assert_array_equal(a.numpy(), [1, 1, 1])
  np.testing.assert_array_equal(b.numpy(), [1, 0, 0])
  mask = topk.topk_mask(tf.constant([1.0, 3.0, 3.0, 3.0, 0.5, 2.0]), 2)
  np.testing.assert_array_equal(mask.numpy(), [0, 1, 1, 0, 0, 0])


def test_k_out_of_range_is_clipped_and_empty_inputs():
  s = [tf.constant([0.5, 0.2]), tf.constant([[0.1]])]
  assert sum(float(tf.reduce_sum(m)) for m in topk.global_topk_masks(s, 10)) == 3
  assert sum(float(tf.reduce_sum(m)) for m in topk.global_topk_masks(s, -1)) == 0
  assert topk.global_topk_masks([], 3) == []
  empty = topk.global_topk_masks([tf.zeros([0]), tf.constant([2.0, 1.0])], 1)
  assert empty[0].shape == (0,)
  np.testing.assert_array_equal(empty[1].numpy(), [1, 0])


def test_half_precision_scores_match_and_keep_dtype():
  rng = np.random.default_rng(4)
  for dtype in (tf.float16, tf.bfloat16):
    scores = [tf.cast(tf.constant(np.abs(rng.normal(size=(30, 7)))), dtype),
              tf.cast(tf.constant(np.abs(rng.normal(size=(50,)))), dtype)]
    got = topk.global_topk_masks(scores, 77)
    assert got[0].dtype == dtype
    for g, r in zip(got, _reference(scores, 77)):
      np.testing.assert_array_equal(tf.cast(g, tf.float32).numpy().ravel(), r)


def test_float64_falls_back_to_sorted_top_k_with_the_same_tie_rule():
  s = tf.constant([0.3, 0.1, 0.2, 0.3], tf.float64)
  assert not topk.supports(s.dtype)
  np.testing.assert_array_equal(topk.topk_mask(s, 2).numpy(), [1, 0, 0, 1])
  a, b = topk.global_topk_masks([s, tf.constant([0.3, 0.25], tf.float64)], 3)
  np.testing.assert_array_equal(a.numpy(), [1, 0, 0, 1])
  np.testing.assert_array_equal(b.numpy(), [1, 0])
  assert a.dtype == tf.float64
  (m,) = masks.compute_masks([s], 0.5, scope="global")
  np.testing.assert_array_equal(m.numpy(), [1, 0, 0, 1])


def test_masks_uses_the_one_top_k():
  assert masks.topk_mask is topk.topk_mask
  pooled, expand = masks.block_scores(tf.reshape(tf.range(16.0), [8, 2]), 4)
  assert pooled.shape == (2, 2)
  assert expand(tf.ones_like(pooled)).shape == (8, 2)


def test_negative_and_denormal_scores_count_as_zero():
  m = topk.topk_mask(tf.constant([-5.0, 0.0, 1.0, -0.0]), 2)
  np.testing.assert_array_equal(m.numpy(), [1, 0, 1, 0])  # -5 ties with 0: lower index
  m = topk.topk_mask(tf.constant([0.0, 1e-40, 1.0, 2e-38]), 3)
  np.testing.assert_array_equal(m.numpy(), [1, 0, 1, 1])  # 1e-40 is denormal: a 0


def test_graph_mode_with_dynamic_k_and_unknown_shapes():
  fn = tf.function(topk.global_topk_masks,
                   input_signature=[[tf.TensorSpec([None], tf.float32),
                                     tf.TensorSpec([None, None], tf.float32)],
                                    tf.TensorSpec([], tf.int32)])
  rng = np.random.default_rng(5)
  scores = [tf.constant(np.abs(rng.normal(size=40)), tf.float32),
            tf.constant(np.abs(rng.normal(size=(6, 9))), tf.float32)]
  for k in (0, 3, 50, 94):
    for g, r in zip(fn(scores, tf.constant(k)), _reference(scores, k)):
      np.testing.assert_array_equal(g.numpy().ravel(), r)


def test_kth_largest_is_the_exact_threshold():
  rng = np.random.default_rng(6)
  a = np.abs(rng.normal(size=5000)).astype(np.float32)
  b = np.abs(rng.normal(size=(30, 40))).astype(np.float32)
  allv = np.sort(np.concatenate([a, b.ravel()]))[::-1]
  for k in (1, 17, 3000, 6200):
    assert float(topk.kth_largest([a, b], k)) == allv[k - 1]


def test_compute_masks_global_uses_radix_and_matches_top_k_on_a_large_model():
  rng = np.random.default_rng(7)
  scores = [tf.constant(np.abs(rng.normal(size=s)).astype(np.float32))
            for s in [(512, 300), (300, 200), (200, 10)]]
  got = masks.compute_masks(scores, 0.9, scope="global")
  ref = _reference(scores, int(masks.keep_count(sum(int(tf.size(s)) for s in scores), 0.9)))
  for g, r in zip(got, ref):
    np.testing.assert_array_equal(g.numpy().ravel(), r)
  blocks = masks.compute_masks(scores[:2], 0.75, scope="block", block_size=4,
                               allocation="global")
  kept = sum(float(tf.reduce_sum(b)) for b in blocks)
  assert kept == 4 * int(masks.keep_count((512 * 300 + 300 * 200) // 4, 0.75))


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
