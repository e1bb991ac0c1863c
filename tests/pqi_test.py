"""Tests for tfprune.pqi (PQ Index, Diao et al., ICLR 2023) against a NumPy reference."""
import sys

import keras
import numpy as np
import pytest

import tfprune
from tfprune import pqi

L = keras.layers


def _reference(w, p, q):
  """The paper's formula, literally, in float64 NumPy (non-degenerate vectors only)."""
  a = np.abs(np.asarray(w, np.float64)).reshape(-1)
  d = a.size
  norm_p = np.sum(a ** p) ** (1 / p)
  norm_q = np.sum(a ** q) ** (1 / q)
  return 1.0 - d ** (1 / q - 1 / p) * norm_p / norm_q


@pytest.mark.parametrize("p,q", [(0.5, 1.0), (1.0, 2.0), (0.25, 3.0)])
@pytest.mark.parametrize("shape", [(7,), (13, 5), (3, 3, 2, 4)])
def test_matches_numpy_reference(p, q, shape):
  w = np.random.default_rng(1).normal(size=shape)
  np.testing.assert_allclose(float(tfprune.pq_index(w, p, q)), _reference(w, p, q),
                             rtol=1e-5, atol=1e-6)


def test_mask_counts_only_unpruned_entries():
  rng = np.random.default_rng(2)
  w = rng.normal(size=(20, 6))
  mask = rng.random((20, 6)) > 0.4
  np.testing.assert_allclose(float(pqi.pq_index(w, mask=mask)), _reference(w[mask], 0.5, 1),
                             rtol=1e-5)
  # Pruned entries with any value do not change it.
  w2 = np.where(mask, w, 123.0)
  np.testing.assert_allclose(float(pqi.pq_index(w2, mask=mask)),
                             float(pqi.pq_index(w, mask=mask)), rtol=1e-6)


@pytest.mark.parametrize("p,q", [(0.5, 1.0), (1.0, 2.0)])
@pytest.mark.parametrize("d", [1, 2, 10, 1000])
def test_bounds_flat_is_zero_one_sparse_is_max(p, q, d):
  flat = np.full(d, -0.37)
  assert float(pqi.pq_index(flat, p, q)) == pytest.approx(0.0, abs=1e-6)
  one_sparse = np.zeros(d)
  one_sparse[d // 2] = 5.0
  top = 1.0 - d ** (1 / q - 1 / p)
  assert float(pqi.pq_index(one_sparse, p, q)) == pytest.approx(top, abs=1e-6)
  if d > 2:
    rand = np.random.default_rng(d).normal(size=d)
    assert 0.0 < float(pqi.pq_index(rand, p, q)) < top


def test_degenerate_inputs_are_defined():
  # All-zero: the maximum (limit of ever sparser vectors); empty: 0; never NaN.
  assert float(pqi.pq_index(np.zeros(10))) == pytest.approx(1 - 10 ** -1, abs=1e-6)
  assert float(pqi.pq_index(np.zeros(0))) == 0.0
  assert float(pqi.pq_index(np.ones(4), mask=np.zeros(4))) == 0.0
  for tiny in (1e-30, 1e-45, 1e-300):
    value = float(pqi.pq_index(np.array([tiny, 2 * tiny, 0.0, tiny])))
    assert np.isfinite(value)
    assert value == pytest.approx(_reference([1, 2, 0, 1], 0.5, 1), abs=1e-5)
  units = pqi.pq_index_per_unit(np.zeros((3, 2)), mask=np.array([[1, 0]] * 3)).numpy()
  assert np.all(np.isfinite(units))
  np.testing.assert_allclose(units, [1 - 3 ** -1, 0.0], atol=1e-6)


@pytest.mark.parametrize("scale", [1e-20, 1e-3, 3.0, 1e20])
def test_scale_invariance(scale):
  w = np.random.default_rng(3).normal(size=200).astype(np.float32)
  assert float(pqi.pq_index(w * np.float32(scale))) == pytest.approx(
      float(pqi.pq_index(w)), abs=1e-5)


def test_monotone_when_zeroing_small_weights():
  # Zeroing the smallest entries (same dimension d) never lowers the index.
  w = np.random.default_rng(4).normal(size=300)
  order = np.argsort(np.abs(w))
  values = []
  for k in range(0, 300, 10):
    v = w.copy()
    v[order[:k]] = 0.0
    values.append(float(pqi.pq_index(v)))
  assert all(b >= a - 1e-6 for a, b in zip(values, values[1:]))
  assert values[-1] > values[0] + 0.5


def test_dropping_entries_from_d_is_not_monotone():
  # Documented behaviour: with a mask, d shrinks too; [1, eps] -> [1] goes max -> 0.
  assert float(pqi.pq_index([1.0, 1e-12])) == pytest.approx(0.5, abs=1e-4)
  assert float(pqi.pq_index([1.0, 1e-12], mask=[1, 0])) == 0.0


def test_per_unit_matches_columns_and_filters():
  rng = np.random.default_rng(5)
  dense = rng.normal(size=(30, 4))
  np.testing.assert_allclose(pqi.pq_index_per_unit(dense).numpy(),
                             [_reference(dense[:, j], 0.5, 1) for j in range(4)], rtol=1e-5)
  conv = rng.normal(size=(3, 3, 2, 5))
  np.testing.assert_allclose(pqi.pq_index_per_unit(conv, 1.0, 2.0).numpy(),
                             [_reference(conv[..., j], 1, 2) for j in range(5)], rtol=1e-5)
  assert pqi.pq_index_per_unit(rng.normal(size=7)).shape == (1,)


@pytest.mark.parametrize("d,index,p,q,eta,expected", [
    (100, 0.2, 0.5, 1.0, 0.0, 80.0),          # exponent qp/(q-p) = 1
    (100, 0.2, 0.5, 1.0, 1.0, 100 * 0.25 * 0.8),  # (1 + eta)^(-q/(q-p)) = 2^-2
    (100, 0.5, 1.0, 2.0, 0.0, 25.0),          # exponent 2
    (64, 0.0, 0.5, 1.0, 0.0, 64.0),           # flat: keep everything
    (10, 1.0, 0.5, 1.0, 0.0, 0.0),
])
def test_retained_bound_hand_cases(d, index, p, q, eta, expected):
  assert float(pqi.retained_bound(d, index, p, q, eta)) == pytest.approx(expected)


def test_model_scopes_match_sparsity_report():
  inp = keras.Input((6,))
  out = L.Dense(3, name="b")(L.Dense(5, name="a")(inp))
  model = keras.Model(inp, out)
  pruned = tfprune.prune(model, "magnitude", target_sparsity=0.5)
  tfprune.get_method(pruned).update_masks(0.5)
  report = tfprune.pq_index_report(pruned)
  rows = tfprune.sparsity_report(pruned, print_table=False)
  assert [r["pq_index"] for r in rows] == pytest.approx(
      [layer["pq_index"] for layer in report["layers"]], abs=1e-6)
  kernels = [model.get_layer(n).kernel.numpy() for n in ("a", "b")]
  masks = [wr.masks[0].numpy() for wr in tfprune.methods.base.find_wrappers(pruned)]
  flat = np.concatenate([k.reshape(-1) for k in kernels])
  flat_mask = np.concatenate([m.reshape(-1) for m in masks])
  expected = _reference(flat[flat_mask > 0], 0.5, 1)
  assert report["global"] == pytest.approx(expected, abs=1e-5)
  assert tfprune.model_pq_index(pruned) == pytest.approx(expected, abs=1e-5)
  assert report["layers"][0]["neurons"].shape == (5,)
  assert report["layers"][0]["remaining"] == int(masks[0].sum())
  # A plain (stripped) model gives the same numbers: its zeros are the pruned weights.
  assert tfprune.model_pq_index(tfprune.strip(pruned)) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("p,q", [(1.0, 1.0), (2.0, 1.0), (0.0, 1.0), (-1.0, 2.0), ("a", 1)])
def test_invalid_pq_raise(p, q):
  with pytest.raises(ValueError, match="0 < p < q"):
    pqi.pq_index(np.ones(3), p, q)


def test_model_without_prunable_weights_raises():
  inp = keras.Input((4,))
  model = keras.Model(inp, L.ReLU()(inp))
  with pytest.raises(ValueError, match="no prunable weights"):
    tfprune.model_pq_index(model)


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
