"""Tests for tfprune.schedules: TFMOT formulas and step semantics."""
import sys

import keras
import numpy as np
import pytest

from tfprune import schedules


def _run(schedule, steps):
  out = [schedule(s) for s in steps]
  return [bool(p) for p, _ in out], [float(s) for _, s in out]


def test_constant_sparsity_prunes_every_frequency_steps_in_range():
  sched = schedules.ConstantSparsity(0.8, begin_step=10, end_step=30, frequency=10)
  prune, sparsity = _run(sched, [0, 9, 10, 11, 20, 30, 40])
  assert prune == [False, False, True, False, True, True, False]
  assert sparsity == pytest.approx([0.8] * 7)


def test_polynomial_decay_matches_zhu_gupta_formula():
  sched = schedules.PolynomialDecay(0.1, 0.9, begin_step=100, end_step=1100, power=3,
                                    frequency=100)
  for step in [0, 100, 350, 600, 1100, 5000]:
    p = min(1.0, max(0.0, (step - 100) / 1000))
    expected = 0.9 + (0.1 - 0.9) * (1 - p) ** 3
    assert float(sched.sparsity(step)) == pytest.approx(expected, abs=1e-6)
  prune, _ = _run(sched, [50, 100, 150, 200, 1100, 1200])
  assert prune == [False, True, False, True, True, False]


def test_polynomial_decay_always_prunes_at_end_step():
  # A short run: end_step 30 is before the first grid step (100) after begin_step 0.
  sched = schedules.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=30, frequency=100)
  prune, sparsity = _run(sched, [0, 29, 30, 31, 100])
  assert prune == [True, False, True, False, False]  # 100 is past end_step
  assert sparsity[2] == pytest.approx(0.8)


def test_schedules_serialize_round_trip():
  for sched in [schedules.ConstantSparsity(0.5, 3, 90, 7),
                schedules.PolynomialDecay(0.0, 0.95, 0, 500, 2, 25)]:
    again = schedules.deserialize(keras.saving.serialize_keras_object(sched))
    assert type(again) is type(sched) and again.get_config() == sched.get_config()
    np.testing.assert_allclose(float(again.sparsity(123)), float(sched.sparsity(123)))


@pytest.mark.parametrize("kwargs,match", [
    (dict(target_sparsity=1.0), "target_sparsity"),
    (dict(target_sparsity=0.5, begin_step=-1), "begin_step"),
    (dict(target_sparsity=0.5, begin_step=10, end_step=5), "end_step"),
    (dict(target_sparsity=0.5, frequency=0), "frequency"),
])
def test_bad_arguments_are_clear_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    schedules.ConstantSparsity(**kwargs)


def test_polynomial_decay_needs_finite_end_and_increasing_sparsity():
  with pytest.raises(ValueError, match="finite end_step"):
    schedules.PolynomialDecay(0.0, 0.9, 0, -1)
  with pytest.raises(ValueError, match="must be >= initial_sparsity"):
    schedules.PolynomialDecay(0.9, 0.5, 0, 10)


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
