"""Tests for tfprune.methods.admm: projection, Z/U maths, convergence, phases, resume."""
import math
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tfprune import masks as masks_lib
from tfprune import optimizers
from tfprune import plots
from tfprune.methods import admm


def _mlp(seed=0, hidden=16, inputs=12, classes=4):
  keras.utils.set_random_seed(seed)
  return keras.Sequential([keras.Input((inputs,)),
                           keras.layers.Dense(hidden, activation="relu", name="fc1"),
                           keras.layers.Dense(hidden, activation="relu", name="fc2"),
                           keras.layers.Dense(classes, name="logits")])


def _data(n=64, inputs=12, classes=4, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, inputs)).astype("float32")
  y = (np.abs(x[:, :classes]).argmax(axis=1)).astype("int64")
  return x, y


def _compile(model, optimizer=None):
  model.compile(optimizer or keras.optimizers.Adam(1e-2),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])


def _nonzeros(tensors):
  return sum(int(np.count_nonzero(t.numpy() if hasattr(t, "numpy") else t)) for t in tensors)


# ----------------------------------------------------------------- projection
@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.97])
def test_global_projection_keeps_exactly_k(sparsity):
  # max_pruning_ratio=1.0: the plain projection. With ties everywhere the first layer
  # wins them all, and the default layer floor (tests/liveness_test.py) would then keep
  # the others alive, beyond k on this tiny MLP.
  pruned = tfprune.prune(_mlp(), "admm", target_sparsity=sparsity, max_pruning_ratio=1.0)
  method = tfprune.get_method(pruned)
  # Ties everywhere: exactly k must still be kept.
  values = [tf.ones(w.shape) for w in method.weights]
  z, masks = method.project(values)
  n = sum(int(np.prod(w.shape)) for w in method.weights)
  k = math.ceil((1 - sparsity) * n - 1e-9)
  assert _nonzeros(z) == k
  assert sum(int(m.numpy().sum()) for m in masks) == k
  z, _ = method.project([w.value for w in method.weights])
  assert _nonzeros(z) == k
  for zi, w in zip(z, method.weights):  # kept entries keep their value
    kept = zi.numpy() != 0
    np.testing.assert_array_equal(zi.numpy()[kept], w.numpy()[kept])


def test_global_projection_is_one_threshold_over_all_layers():
  pruned = tfprune.prune(_mlp(), "admm", target_sparsity=0.9)
  method = tfprune.get_method(pruned)
  values = [w.value for w in method.weights]
  z, _ = method.project(values)
  kept = np.concatenate([np.abs(v.numpy()[zi.numpy() != 0]) for v, zi in zip(values, z)])
  dropped = np.concatenate([np.abs(v.numpy()[zi.numpy() == 0]) for v, zi in zip(values, z)])
  assert kept.min() >= dropped.max()


def test_layer_projection_keeps_k_per_layer():
  pruned = tfprune.prune(_mlp(), "admm", target_sparsity=0.75, scope="layer")
  method = tfprune.get_method(pruned)
  z, _ = method.project([w.value for w in method.weights])
  for zi, w in zip(z, method.weights):
    assert np.count_nonzero(zi.numpy()) == math.ceil(0.25 * np.prod(w.shape))


@pytest.mark.parametrize("block_size", [4, 16])
def test_block_projection_keeps_whole_input_axis_blocks(block_size):
  keras.utils.set_random_seed(1)
  model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(16, name="a"),
                            keras.layers.Dense(32, name="b")])
  pruned = tfprune.prune(model, "admm", target_sparsity=0.75, scope="block",
                         block_size=block_size)
  method = tfprune.get_method(pruned)
  _, masks = method.project([w.value for w in method.weights])
  blocks = 0
  for m in masks:
    m = m.numpy()  # [in, out]; blocks run along the input axis (axis 0)
    grouped = m.reshape(m.shape[0] // block_size, block_size, m.shape[1])
    assert np.all((grouped.min(axis=1) == grouped.max(axis=1)))
    blocks += int(grouped[:, 0, :].sum())
  total_blocks = (32 * 16 + 16 * 32) // block_size
  assert blocks == math.ceil(0.25 * total_blocks)


# --------------------------------------------------------------- Z/U maths
def test_rho_schedule_closed_form():
  assert admm.rho_at(0, 1e-3, 1.2, 1.0, 50) == pytest.approx(1e-3)
  assert admm.rho_at(49, 1e-3, 1.2, 1.0, 50) == pytest.approx(1e-3)
  assert admm.rho_at(100, 1e-3, 1.2, 1.0, 50) == pytest.approx(1.44e-3)
  assert admm.rho_at(10**6, 1e-3, 1.2, 1.0, 50) == 1.0
  pruned = tfprune.prune(_mlp(), "admm", rho0=1e-3, rho_growth=1.2, admm_interval=50)
  method = tfprune.get_method(pruned)
  for step in (0, 99, 100, 5000):
    assert float(method.rho_tensor(tf.constant(step, tf.int64))) == pytest.approx(
        admm.rho_at(step, 1e-3, 1.2, 1.0, 50), rel=1e-6)


def test_z_u_step_hand_computed():
  model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, use_bias=False)])
  pruned = tfprune.prune(model, "admm", target_sparsity=0.5, rho0=0.1, rho_growth=2.0,
                         rho_max=10.0, admm_interval=1)
  method = tfprune.get_method(pruned)
  w = np.array([[1.0, -3.0], [0.5, 2.0]], "float32")
  u = np.array([[0.5, 0.0], [0.0, -1.0]], "float32")
  method.weights[0].assign(w)
  method.u[0].assign(u)
  method._run_z_step(1)  # pylint: disable=protected-access
  # W + U = [[1.5, -3], [0.5, 1]] -> keep the 2 largest |.|: 1.5 and -3.
  np.testing.assert_allclose(method.z[0].numpy(), [[1.5, -3.0], [0.0, 0.0]])
  # U += W - Z = [[0, 0], [0.5, 1]], then U *= rho(0) / rho(1) = 0.1 / 0.2.
  np.testing.assert_allclose(method.u[0].numpy(), [[0.0, 0.0], [0.25, 0.5]])
  record = method.history[-1]
  assert record["primal_residual"] == pytest.approx(math.sqrt(4.5 / 14.25), rel=1e-6)
  assert record["rho"] == pytest.approx(0.2)
  assert record["kept_fraction"] == {pruned.layers[0].layer.name: 0.5}
  # Penalty = rho/2 ||W - Z + U||^2, with rho of the running step.
  method.weights[0].assign(w)
  pruned.layers[0].pruning_step.assign(2)  # step 1 is running
  expected = 0.5 * 0.2 * np.sum((w - method.z[0].numpy() + method.u[0].numpy()) ** 2)
  assert float(method.regularization(pruned.layers[0])) == pytest.approx(expected, rel=1e-6)


def test_first_z_step_projects_w_and_zeroes_u():
  pruned = tfprune.prune(_mlp(), "admm", target_sparsity=0.8)
  method = tfprune.get_method(pruned)
  method.u[0].assign(tf.ones_like(method.u[0]))
  method.on_train_begin()
  method.on_train_step()
  expected, _ = method.project([w.value for w in method.weights])
  for z, e, u in zip(method.z, expected, method.u):
    np.testing.assert_array_equal(z.numpy(), e.numpy())
    assert not np.any(u.numpy())
  assert int(method.step) == 1


def test_w_converges_to_z_on_convex_problem():
  # f(W) = 1/2 ||W - A||^2 (inputs = identity, MSE sum): convex; ADMM must drive the
  # primal residual ||W - Z|| / ||W|| down and end on a W with exactly k nonzeros.
  method, a = _convex_run(steps=320, stop_at_hard_prune=False, rho_growth=1.3)
  residuals = [h["primal_residual"] for h in method.history]
  assert residuals[-1] < 0.02
  report = method.report()  # no primal_tol: the budget ends the ADMM phase
  assert report["hard_prune_trigger"] == "budget" and report["hard_prune_step"] == 300
  assert report["hard_prune_primal_residual"] == residuals[-1]
  assert residuals[-1] < 0.1 * max(residuals)
  w = method.weights[0].numpy()
  assert np.count_nonzero(w) == 12
  # The support is the 12 largest |A| (the exact solution of this toy problem).
  top = np.argsort(-np.abs(a).ravel(), kind="stable")[:12]
  assert set(np.flatnonzero(w)) == set(top)
  np.testing.assert_allclose(w.ravel()[top], a.ravel()[top], atol=1e-3)


# ------------------------------------------------------------------ phases
def test_fit_phases_masks_stay_zero_during_finetune(tmp_path):
  x, y = _data()
  pruned = tfprune.prune(_mlp(), "admm", target_sparsity=0.8, admm_interval=2,
                         admm_epochs=2, finetune_epochs=2, finetune_lr=5e-3,
                         finetune_schedule="cosine")
  method = tfprune.get_method(pruned)
  snapshots = []

  class Snap(keras.callbacks.Callback):

    def on_epoch_end(self, epoch, logs=None):
      snapshots.append([m.numpy().copy() for m in method.masks])

  history = method.fit(pruned, x, y, epochs=4, batch_size=16, verbose=0,
                       callbacks=[Snap()])
  steps_per_epoch = 4
  assert method.admm_steps == 2 * steps_per_epoch
  assert method.hard_prune_step == 2 * steps_per_epoch
  assert len(history["loss"]) == 4
  # Cosine fine-tune: last of 8 fine-tune steps runs at 5e-3 * (1 + cos(7/8 pi)) / 2.
  assert float(pruned.optimizer.learning_rate) == pytest.approx(
      5e-3 * 0.5 * (1 + math.cos(math.pi * 7 / 8)), rel=1e-5)
  n = sum(int(np.prod(w.shape)) for w in method.weights)
  k = math.ceil(0.2 * n - 1e-9)
  assert all(m.all() for m in snapshots[0])  # dense during ADMM
  assert sum(int(m.sum()) for m in snapshots[2]) == k
  for m2, m3 in zip(snapshots[2], snapshots[3]):  # fine-tune keeps the masks
    np.testing.assert_array_equal(m2, m3)
  for w, m in zip(method.weights, method.masks):
    assert not np.any(w.numpy()[m.numpy() == 0])
  stripped = tfprune.strip(pruned)
  kernels = [l.kernel.numpy() for l in stripped.layers]
  assert sum(int(np.count_nonzero(kk)) for kk in kernels) == k
  # Diagnostics and report.
  diag = method.diagnostics()
  assert diag["sparsity"] == pytest.approx(1 - k / n)
  for key in ("admm/rho", "admm/primal_residual", "admm/dual_residual", "admm/kept/fc1"):
    assert key in diag
  rep = method.report()
  assert rep["z_steps"] == len(rep["history"]) == 1 + 2 * steps_per_epoch // 2
  assert set(rep["kept_fraction"]) == {"fc1/kernel", "fc2/kernel", "logits/kernel"}
  path = plots.kept_fraction(method.report(), str(tmp_path / "kept.png"))
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_split_epochs():
  method = admm.ADMM(0.9)
  assert method.split_epochs(10) == (6, 4)
  assert admm.ADMM(0.9, admm_epochs=7).split_epochs(10) == (7, 3)
  assert admm.ADMM(0.9, finetune_epochs=2).split_epochs(10) == (8, 2)
  with pytest.raises(ValueError, match=r"admm_epochs \(5\) \+ finetune_epochs \(3\)"):
    admm.ADMM(0.9, admm_epochs=5, finetune_epochs=3).split_epochs(10)
  with pytest.raises(ValueError, match="admm_epochs must be in"):
    admm.ADMM(0.9, admm_epochs=12).split_epochs(10)


@pytest.mark.parametrize("extra", [{}, dict(rho_schedule="residual", target_ramp=0.5,
                                            rho0=0.05)], ids=["fixed", "residual_ramp"])
def test_save_load_and_resume_mid_admm_is_identical(tmp_path, extra):
  x, y = _data()
  kwargs = dict(target_sparsity=0.8, admm_interval=3, admm_steps=10, **extra)
  dense = _mlp()

  def run(model, epochs):
    model.fit(x, y, epochs=epochs, batch_size=16, shuffle=False, verbose=0,
              callbacks=[tfprune.PruningCallback()])

  straight = tfprune.prune(dense, "admm", **kwargs)
  _compile(straight)
  run(straight, 4)  # 16 steps: ADMM to step 10, hard prune, fine-tune

  first = tfprune.prune(dense, "admm", **kwargs)
  _compile(first)
  run(first, 1)  # stop after 4 steps, mid-ADMM (a Z-step at 3 happened)
  assert tfprune.get_method(first).in_admm_phase()
  path = str(tmp_path / "mid_admm.keras")
  first.save(path)
  resumed = keras.models.load_model(path)
  method = tfprune.get_method(resumed)
  assert method.admm_steps == 10 and int(method.step) == 4
  np.testing.assert_array_equal(method.u[0].numpy(),
                                tfprune.get_method(first).u[0].numpy())
  assert method.current_rho() == tfprune.get_method(first).current_rho()
  if extra:  # the adapted rho is state: saved and loaded, not recomputed
    assert method.current_rho() != 0.05
  run(resumed, 3)
  for a, b in zip(straight.weights, resumed.weights):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7,
                               err_msg=a.path)
  assert not tfprune.get_method(resumed).in_admm_phase()


# ------------------------------------------------------------ penalty modes
@pytest.mark.parametrize("make_opt", [lambda: keras.optimizers.SGD(0.05, momentum=0.9),
                                      lambda: keras.optimizers.Adam(1e-2)],
                         ids=["sgd", "adam"])
def test_optimizer_wrapper_matches_loss_penalty(make_opt):
  x, y = _data()
  results = []
  for penalty in ("loss", "optimizer"):
    pruned = tfprune.prune(_mlp(), "admm", target_sparsity=0.8, admm_interval=2,
                           rho0=0.05, penalty=penalty)
    method = tfprune.get_method(pruned)
    method.fit(pruned, x, y, epochs=2, batch_size=16, optimizer=make_opt(), verbose=0)
    if penalty == "optimizer":
      assert isinstance(pruned.optimizer, optimizers.ADMM)
    results.append([w.numpy() for w in pruned.weights])
  for a, b in zip(*results):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_penalty_off_after_hard_prune():
  pruned = tfprune.prune(_mlp(), "admm", target_sparsity=0.8, admm_steps=1, rho0=0.5)
  method = tfprune.get_method(pruned)
  method.on_train_begin()
  method.on_train_step()
  pruned(np.zeros((1, 12), "float32"), training=True)
  assert float(tf.add_n(pruned.losses)) > 0
  method.on_train_step()  # step 1 == admm_steps: hard prune
  pruned(np.zeros((1, 12), "float32"), training=True)
  assert float(tf.add_n(pruned.losses)) == 0.0
  assert method.hard_prune_step == 1


def test_manual_hard_prune_without_admm_steps():
  pruned = tfprune.prune(_mlp(), "admm", target_sparsity=0.9)
  method = tfprune.get_method(pruned)
  method.on_train_begin()
  for _ in range(3):
    method.on_train_step()
  method.hard_prune()
  assert not method.in_admm_phase()
  n = sum(int(np.prod(w.shape)) for w in method.weights)
  assert sum(int(m.numpy().sum()) for m in method.masks) == math.ceil(0.1 * n - 1e-9)


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, float("nan"), "x"])
def test_bad_target_sparsity(bad):
  with pytest.raises(ValueError, match=r"target_sparsity must be"):
    admm.ADMM(bad)


def test_k_below_one():
  model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, name="tiny")])
  with pytest.raises(ValueError, match=r"keeps k=0 of 4 weights: k must be >= 1"):
    tfprune.prune(model, "admm", target_sparsity=1 - 1e-12)
  with pytest.raises(ValueError, match=r"k=0 of 4 entries of tiny/kernel"):
    tfprune.prune(model, "admm", target_sparsity=1 - 1e-12, scope="layer")
  tfprune.prune(model, "admm", target_sparsity=0.9999)  # ceil: k = 1 is fine


def test_nothing_prunable():
  model = keras.Sequential([keras.Input((4,)), keras.layers.ReLU()])
  with pytest.raises(ValueError, match="no PruneWrapper layers"):
    admm.ADMM(0.5).bind(model)
  with pytest.raises(ValueError, match="no prunable layers"):
    tfprune.prune(model, "admm")


@pytest.mark.parametrize("kwargs,match", [
    (dict(scope="n:m"), "ADMM supports scopes global, layer, block"),
    (dict(penalty="both"), "penalty must be one of loss, optimizer"),
    (dict(admm_interval=0), "admm_interval must be a positive"),
    (dict(rho0=0.0), "rho0 must be a positive"),
    (dict(rho_growth=0.9), "rho_growth must be >= 1"),
    (dict(rho0=1.0, rho_max=0.1), r"rho_max \(0.1\) must be >= rho0"),
    (dict(admm_fraction=0.0), r"admm_fraction must be in \(0, 1\]"),
    (dict(finetune_schedule="step"), "finetune_schedule must be one of constant, cosine"),
    (dict(rho_schedule="boyd"), "rho_schedule must be one of fixed, residual"),
    (dict(rho_mu=1.0), "rho_mu must be a finite number > 1"),
    (dict(target_ramp=1.5), r"target_ramp must be a fraction .* \[0, 1\]"),
    (dict(primal_tol=0.0), r"primal_tol must be None or in \(0, 1\)"),
])
def test_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    admm.ADMM(0.9, **kwargs)


def test_non_finite_weights_name_step_and_layer():
  pruned = tfprune.prune(_mlp(), "admm", target_sparsity=0.5, admm_interval=2)
  method = tfprune.get_method(pruned)
  method.on_train_begin()
  method.on_train_step()
  method.on_train_step()
  w = method.weights[1]
  w.assign(tf.fill(w.shape, np.nan))
  with pytest.raises(FloatingPointError, match=r"ADMM step 2: non-finite weights in layer"
                                               r"\(s\) fc2 "):
    method.on_train_step()


def test_non_finite_loss_stops_fit(tmp_path):
  x, y = _data()
  x[5:, 0] = np.nan
  pruned = tfprune.prune(_mlp(), "admm", target_sparsity=0.5, admm_interval=100)
  method = tfprune.get_method(pruned)
  path = tmp_path / "model.keras"
  saver = keras.callbacks.ModelCheckpoint(str(path))
  with pytest.raises(FloatingPointError, match=r"non-finite loss nan at step \d+ \(ADMM "
                                               r"phase"):
    method.fit(pruned, x, y, epochs=2, batch_size=16, verbose=0, callbacks=[saver])
  assert not path.exists()


def test_config_round_trip():
  method = admm.ADMM(0.95, scope="block", block_size=16, admm_interval=60, rho0=2e-3,
                     rho_growth=1.25, rho_max=0.5, penalty="optimizer", admm_steps=77,
                     admm_epochs=3, finetune_lr=1e-4, rho_schedule="residual", rho_mu=5.0,
                     rho_tau=1.5, target_ramp=0.4, primal_tol=0.02)
  clone = admm.ADMM.from_config(method.get_config())
  for key, value in (("rho_schedule", "residual"), ("rho_mu", 5.0), ("rho_tau", 1.5),
                     ("target_ramp", 0.4), ("primal_tol", 0.02)):
    assert getattr(clone, key) == value
  assert clone.get_config() == method.get_config()
  assert int(clone._end.numpy()) == 77  # pylint: disable=protected-access


# --------------------------------------------- convergent ADMM (issue 28)
def test_progressive_target_reaches_exactly_k_at_ramp_end():
  pruned = tfprune.prune(_mlp(), "admm", target_sparsity=0.9, admm_interval=2,
                         admm_steps=20, target_ramp=0.5, max_pruning_ratio=1.0)
  method = tfprune.get_method(pruned)
  assert method.ramp_end_step() == 10
  method.on_train_begin()
  for _ in range(11):  # steps 0..10: Z-steps at 0, 2, ..., 10 (no W-steps: W fixed)
    method.on_train_step()
  n = sum(int(np.prod(w.shape)) for w in method.weights)
  ramp = tfprune.PolynomialDecay(0.0, 0.9, 0, 10)
  sparsities = [h["z_sparsity"] for h in method.history]
  assert [h["step"] for h in method.history] == [0, 2, 4, 6, 8, 10]
  np.testing.assert_allclose(sparsities[:-1], [float(ramp.sparsity(s))
                                               for s in (0, 2, 4, 6, 8)], rtol=1e-6)
  assert sparsities[0] == 0.0 and sparsities[-1] == 0.9
  assert np.all(np.diff(sparsities) > 0)
  k = math.ceil(0.1 * n - 1e-9)
  assert _nonzeros(method.z) == k  # exactly k at the end of the ramp ...
  assert method.history[-2]["kept_fraction"]["fc1"] > method.history[-1][
      "kept_fraction"]["fc1"]  # ... and more before it
  with pytest.raises(ValueError, match="target_ramp > 0 .* pass admm_steps"):
    admm.ADMM(0.9, target_ramp=0.5).ramp_end_step()


def test_residual_rho_raises_when_primal_dominates_and_rescales_u():
  model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, use_bias=False)])
  pruned = tfprune.prune(model, "admm", target_sparsity=0.5, rho0=0.1, rho_max=10.0,
                         admm_interval=1, rho_schedule="residual", rho_mu=10.0,
                         rho_tau=2.0, rho_growth=1.5)
  method = tfprune.get_method(pruned)
  assert [v.shape for v in method._rho_variables()] == [()]  # pylint: disable=protected-access
  w = np.array([[1.0, -3.0], [0.5, 2.0]], "float32")
  method.weights[0].assign(w)
  method._run_z_step(0, first=True)  # pylint: disable=protected-access
  assert method.current_rho() == pytest.approx(0.1)
  np.testing.assert_allclose(method.z[0].numpy(), [[0.0, -3.0], [0.0, 2.0]])
  # W-step moved only pruned entries: Z does not change (dual 0), W - Z grows: rho x 2.
  w2 = np.array([[1.5, -3.0], [1.0, 2.0]], "float32")
  method.weights[0].assign(w2)
  method._run_z_step(1)  # pylint: disable=protected-access
  np.testing.assert_allclose(method.z[0].numpy(), [[0.0, -3.0], [0.0, 2.0]])
  assert method.current_rho() == pytest.approx(0.2)
  assert method.history[-1]["rho"] == pytest.approx(0.2)
  # U = (0 + W - Z) * rho_old / rho_new.
  np.testing.assert_allclose(method.u[0].numpy(), [[0.75, 0.0], [0.5, 0.0]])
  # The penalty uses the state rho (running step 2).
  pruned.layers[0].pruning_step.assign(3)
  expected = 0.5 * 0.2 * np.sum((w2 - method.z[0].numpy() + method.u[0].numpy()) ** 2)
  assert float(method.regularization(pruned.layers[0])) == pytest.approx(expected,
                                                                         rel=1e-6)
  # Z jumps to another support while W sits on it: the dual dominates, rho / 2 (>= rho0).
  method.u[0].assign(tf.zeros((2, 2)))
  method.weights[0].assign(np.array([[4.0, 0.0], [-5.0, 0.0]], "float32"))
  method._run_z_step(2)  # pylint: disable=protected-access
  assert method.current_rho() == pytest.approx(0.1)
  method._run_z_step(3)  # pylint: disable=protected-access
  assert method.current_rho() == pytest.approx(0.15)  # in the band: rho_growth


def test_proximal_penalty_moves_w_outside_the_optimizer():
  model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, use_bias=False)])
  pruned = tfprune.prune(model, "admm", target_sparsity=0.5, rho0=0.25, admm_interval=100,
                         penalty="proximal")
  method = tfprune.get_method(pruned)
  assert method.regularization(pruned.layers[0]) is None  # no loss term
  w = np.array([[1.0, -3.0], [0.5, 2.0]], "float32")
  z = np.array([[0.0, -3.0], [0.0, 2.0]], "float32")
  u = np.array([[0.5, 0.0], [0.0, -1.0]], "float32")
  method.weights[0].assign(w)
  method.z[0].assign(z)
  method.u[0].assign(u)
  pruned.layers[0].pruning_step.assign(1)  # no Z-step at step 1
  method.on_train_begin()
  method.on_train_step()
  np.testing.assert_allclose(method.weights[0].numpy(), (w + 0.25 * (z - u)) / 1.25,
                             rtol=1e-6)
  method.set_admm_steps(2)
  method.on_train_step()  # step 2: hard prune, no proximal step
  np.testing.assert_array_equal(method.weights[0].numpy() != 0, method.z[0].numpy() != 0)


def _convex_run(steps=310, stop_at_hard_prune=True, **kwargs):
  """ADMM on f(W) = 1/2 ||W - A||^2 (inputs = identity): (method, A) after `steps` steps
  (or at the hard prune)."""
  rng = np.random.default_rng(0)
  a = rng.normal(size=(8, 6)).astype("float32")
  model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(6, use_bias=False)])
  pruned = tfprune.prune(model, "admm", target_sparsity=0.75, rho0=0.05, rho_max=5.0,
                         admm_interval=10, admm_steps=300, **kwargs)
  method = tfprune.get_method(pruned)
  opt = keras.optimizers.SGD(0.1)
  x = np.eye(8, dtype="float32")
  method.on_train_begin()

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      loss = 0.5 * tf.reduce_sum(tf.square(pruned(x, training=True) - a))
      loss += tf.add_n(pruned.losses) if pruned.losses else 0.0  # none: proximal
    grads = tape.gradient(loss, pruned.trainable_variables)
    opt.apply_gradients(zip(grads, pruned.trainable_variables))

  for _ in range(steps):
    method.on_train_step()
    step()
    if stop_at_hard_prune and method.hard_prune_step is not None:
      break
  method.on_train_end()
  return method, a


@pytest.mark.parametrize("rho_schedule,penalty", [("fixed", "loss"), ("residual", "loss"),
                                                  ("fixed", "proximal")])
def test_tolerance_hard_prunes_before_the_budget(rho_schedule, penalty):
  method, a = _convex_run(rho_growth=1.3, primal_tol=0.05, target_ramp=0.2,
                          rho_schedule=rho_schedule, penalty=penalty)
  report = method.report()
  assert report["hard_prune_trigger"] == "tolerance"
  assert 60 <= report["hard_prune_step"] < 300  # after the ramp, before the budget
  assert report["hard_prune_step"] % 10 == 0
  assert report["hard_prune_primal_residual"] < 0.05
  assert report["hard_prune_primal_residual"] == method.history[-1]["primal_residual"]
  w = method.weights[0].numpy()
  top = np.argsort(-np.abs(a).ravel(), kind="stable")[:12]
  assert np.count_nonzero(w) == 12  # exactly k; the 12th of |A| nearly ties the 13th
  assert len(set(np.flatnonzero(w)) ^ set(top)) <= 2


def test_structured_scope_ramps_and_adapts_rho():
  x, y = _data()
  pruned = tfprune.prune(_mlp(), "admm", scope="structured", target_sparsity=0.5,
                         admm_interval=2, target_ramp=0.5, rho_schedule="residual",
                         rho0=0.05, admm_epochs=2)
  method = tfprune.get_method(pruned)
  method.fit(pruned, x, y, epochs=3, batch_size=16, verbose=0)  # 8 ADMM steps
  sparsities = [h["z_sparsity"] for h in method.history]
  assert sparsities[0] == 0.0 and 0 < sparsities[1] < 0.5 and sparsities[-1] == 0.5
  assert method.report()["hard_prune_trigger"] == "budget"
  assert method.report()["hard_prune_step"] == 8
  assert len({h["rho"] for h in method.history}) > 1  # the residual rule moved rho
  assert method.current_rho() == method.history[-1]["rho"]
  kernel = pruned.layers[0].layer.kernel.numpy()  # whole units of fc1 are pruned
  dead = ~kernel.any(axis=0)
  assert 0 < dead.sum() < kernel.shape[1]


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
