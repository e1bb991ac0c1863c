"""ADMM pruning with one global removal ratio for the whole model.

Lee, Hwangbo, Yang, Lee, "Compression of Deep-Learning Models Through Global Weight
Pruning Using Alternating Direction Method of Multipliers", Int. J. Computational
Intelligence Systems 16 (2023), doi 10.1007/s44196-023-00202-z (the `global` scope);
per-layer ratios as in ADMM-NN (Zhang et al., ECCV 2018) are the `layer` scope, and
`block` projects onto 1x4 / 1x16 blocks along the kernel input axis (LiteRT fast path).

Problem: `min_W f(W)  s.t.  sum_l ||W_l||_0 <= k`, `k = ceil((1 - r) N)`. Each prunable
weight `W_l` gets an auxiliary `Z_l` and a scaled dual `U_l` (non-trainable wrapper slots
`admm_z` / `admm_u`: saved with the model and in checkpoints). Phases of one run:

  1. ADMM (steps `0 .. admm_steps-1`):
     * W-step, every training step: the user's optimizer minimises
       `f(W) + rho/2 * sum_l ||W_l - Z_l + U_l||_F^2` (squared Frobenius norm), either as
       a loss term (`penalty="loss"`, the default) or as `rho * (W - Z + U)` added to the
       gradient by `ADMMOptimizer` (`penalty="optimizer"`; defined below, exported as
       `tfprune.optimizers.ADMM`), or (`penalty="proximal"`) the user's optimizer
       minimises f alone and every step W moves by the exact proximal step of the
       penalty, `W <- (W + rho (Z - U)) / (1 + rho)`: an adaptive optimizer (Adam) moves a
       weight at most ~lr per step whatever rho is, so under the other two modes W cannot
       reach Z in a short budget (docs/algorithms.md section 2).
     * Z-step, at step 0 and every `admm_interval` steps: `Z = Proj_k(W + U)` (top-k of
       `|W + U|` over ALL layers for `global`); U-step right after: `U += W - Z`.
     * rho at step t (`rho_schedule="fixed"`): `min(rho0 * rho_growth ** (t //
       admm_interval), rho_max)`: derived from the step counter, so the only state is W,
       Z, U and the step. `rho_schedule="residual"` (Boyd et al. 2011, section 3.4.1):
       at each Z-step rho *= rho_tau when ||W - Z|| > rho_mu ||s||, rho /= rho_tau when
       ||s|| > rho_mu ||W - Z|| (s = rho (Z - Z_prev), the dual residual), else (in
       the band) rho *= rho_growth (1.0: Boyd's rule as written, which stalls on this
       nonconvex problem: docs/algorithms.md section 2), within [rho0, rho_max]; rho is
       then state, the scalar wrapper slot `admm_rho`. When rho changes the scaled dual
       is rescaled, `U *= rho_old / rho_new`.
     * `target_ramp > 0` (progressive ADMM, Ye et al. 2018): the Z projection's sparsity
       follows `tfprune.PolynomialDecay(0, r)` (cubic) and reaches r at step
       `ceil(target_ramp * admm_steps)`; afterwards it is r.
  2. Hard prune: a last Z-step, masks = support of Z (exactly k), at step `admm_steps`
     (trigger `budget`), or earlier at the first Z-step after the ramp whose relative
     primal residual ||W - Z|| / ||W|| is below `primal_tol` (trigger `tolerance`: the
     masks are that Z-step's support). `report()` gives the trigger and the residual.
  3. Masked fine-tuning: the wrappers compute with `W * mask`, the penalty is off.

Where the paper is silent this follows docs/algorithms.md section 2: Z/U every 50-100 steps
(not once per epoch), rho0 = 1e-3, growth 1.15-1.3 per Z-step, cap 1.0, U rescaling.
"""
import math
import os
import time

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from tfprune import callbacks as callbacks_lib
from tfprune import masks as masks_lib
from tfprune import optimizer_wrapper
from tfprune import schedules
from tfprune.methods.base import PruningMethod
from tfprune.methods.base import register_method

PENALTIES = ("loss", "optimizer", "proximal")
FINETUNE_SCHEDULES = ("constant", "cosine")
ADMM_SCOPES = ("global", "layer", "block", "structured")
RHO_SCHEDULES = ("fixed", "residual")
_NO_END = np.iinfo(np.int64).max

def rho_at(step, rho0, rho_growth, rho_max, interval):
  """rho in effect at training step `step` (Python float): the closed-form schedule."""
  exponent = max(int(step), 0) // int(interval)
  try:
    value = rho0 * rho_growth ** exponent
  except OverflowError:
    value = math.inf
  return float(min(value, rho_max))


def _layer_name(wrapper):
  return wrapper.layer.name


@register_method("admm")
class ADMM(PruningMethod):
  """ADMM pruning: ADMM phase -> hard prune -> masked fine-tune.

  A phased method: `fit` runs the three phases. Under a plain `model.fit` with
  `PruningCallback` (or a custom loop) the hard prune happens at `admm_steps`, or else
  at train end with a warning that the fine-tune was skipped.

  Args:
    target_sparsity: the global removal ratio r in [0, 1).
    scope: `global` (the paper: one top-k over all prunable weights), `layer` (ADMM-NN:
      each layer keeps ceil((1-r) n_l)) or `block` (blocks of `block_size` along the
      kernel input axis, with `allocation`).
    admm_interval: training steps between Z/U steps (50-100 works; once per epoch does
      not).
    rho0, rho_growth, rho_max: the penalty schedule (see the module docstring).
    rho_schedule: `fixed` (rho0 * rho_growth per Z-step, capped at rho_max) or
      `residual` (residual balancing, Boyd et al. 2011 section 3.4.1, with `rho_mu`,
      `rho_tau`, within [rho0, rho_max]; between the two thresholds rho grows by
      rho_growth, 1.0 for Boyd's rule as written).
    rho_mu, rho_tau: the residual-balancing ratio and factor (Boyd: 10 and 2).
    target_ramp: 0 projects Z onto the target from step 0; in (0, 1] the Z sparsity
      ramps from 0 (cubic, as `PolynomialDecay`) and reaches the target after this
      fraction of the ADMM phase (needs `admm_steps`; `fit` sets it).
    primal_tol: None, or hard-prune early at the first Z-step (after the ramp) whose
      relative primal residual ||W - Z|| / ||W|| is below it; `admm_steps` stays the cap.
    penalty: `loss` (add rho/2 ||W - Z + U||^2 to the model loss), `optimizer` (use
      `tfprune.optimizers.ADMM`, which adds its gradient) or `proximal` (every step,
      `W <- (W + rho (Z - U)) / (1 + rho)` outside the optimizer).
    admm_steps: the step of the hard prune (end of the ADMM phase). `fit` sets it from
      the epoch split; in a custom loop pass it, or call `hard_prune()` yourself.
    admm_epochs, finetune_epochs, admm_fraction: how `fit` splits its epoch budget:
      `admm_epochs` (else `round(admm_fraction * epochs)`, at least 1) of ADMM, the rest
      masked fine-tuning. Giving both epoch counts requires them to sum to `epochs`.
    finetune_lr: learning rate for the fine-tune phase in `fit` (default: unchanged).
    finetune_schedule: `constant` or `cosine` (decay the fine-tune learning rate to 0
      over the fine-tune steps of `fit`).
    block_size, allocation: for `scope="block"` (allocation defaults to global).
    schedule: ignored by ADMM except for serialization compatibility.
    **structured: `max_pruning_ratio`, `global_score`: the layer floor and LAMP of the
      global projection (as in `PruningMethod`; by default no layer's Z is emptied).
      `scope="structured"`: Z is projected onto the top channel GROUPS of the
      channel dependency graph (group L2 of `|W + U|`, global allocation by default:
      the paper's global ratio at channel level), with `round_to`, `min_units`,
      `ignored_layers`, `target_macs`, `target_latency`, `latency_precision`,
      `latency_table`, `criterion` as in `PruningMethod`.
  """

  scopes = ADMM_SCOPES
  phased = True
  compile_update = False  # Z-steps log, time themselves and raise on non-finite weights

  def __init__(self, target_sparsity=0.9, scope="global", admm_interval=100, rho0=1e-3,
               rho_growth=1.2, rho_max=1.0, penalty="loss", admm_steps=None,
               admm_epochs=None, finetune_epochs=None, admm_fraction=0.6, finetune_lr=None,
               finetune_schedule="constant", block_size=4, allocation="global", schedule=None,
               n=2, m=4, rho_schedule="fixed", rho_mu=10.0, rho_tau=2.0, target_ramp=0.0,
               primal_tol=None, **structured):
    if scope not in ADMM_SCOPES:  # (checked first: the message names ADMM's scopes)
      raise ValueError(f"ADMM supports scopes {', '.join(ADMM_SCOPES)}; got {scope!r}.")
    super().__init__(target_sparsity=target_sparsity, scope=scope, schedule=schedule,
                     block_size=block_size, n=n, m=m, allocation=allocation, **structured)
    if int(admm_interval) < 1:
      raise ValueError(f"admm_interval must be a positive number of steps, got "
                       f"{admm_interval!r}.")
    for key, value in (("rho0", rho0), ("rho_max", rho_max)):
      if not (isinstance(value, (int, float)) and 0 < value < math.inf):
        raise ValueError(f"{key} must be a positive finite number, got {value!r}.")
    if not (isinstance(rho_growth, (int, float)) and 1.0 <= rho_growth < math.inf):
      raise ValueError(f"rho_growth must be >= 1 (1.15-1.3 works), got {rho_growth!r}.")
    if rho_max < rho0:
      raise ValueError(f"rho_max ({rho_max}) must be >= rho0 ({rho0}).")
    if penalty not in PENALTIES:
      raise ValueError(f"penalty must be one of {', '.join(PENALTIES)}, got {penalty!r}.")
    if rho_schedule not in RHO_SCHEDULES:
      raise ValueError(f"rho_schedule must be one of {', '.join(RHO_SCHEDULES)}, got "
                       f"{rho_schedule!r}.")
    for key, value in (("rho_mu", rho_mu), ("rho_tau", rho_tau)):
      if not (isinstance(value, (int, float)) and 1.0 < value < math.inf):
        raise ValueError(f"{key} must be a finite number > 1 (Boyd: mu 10, tau 2), got "
                         f"{value!r}.")
    if not (isinstance(target_ramp, (int, float)) and 0.0 <= target_ramp <= 1.0):
      raise ValueError(f"target_ramp must be a fraction of the ADMM phase in [0, 1], got "
                       f"{target_ramp!r}.")
    if primal_tol is not None and not (isinstance(primal_tol, (int, float)) and
                                       0.0 < primal_tol < 1.0):
      raise ValueError(f"primal_tol must be None or in (0, 1) (a relative residual "
                       f"||W - Z|| / ||W||), got {primal_tol!r}.")
    if admm_steps is not None and int(admm_steps) < 0:
      raise ValueError(f"admm_steps must be >= 0, got {admm_steps!r}.")
    for key, value in (("admm_epochs", admm_epochs), ("finetune_epochs", finetune_epochs)):
      if value is not None and int(value) < 0:
        raise ValueError(f"{key} must be >= 0, got {value!r}.")
    if not 0.0 < float(admm_fraction) <= 1.0:
      raise ValueError(f"admm_fraction must be in (0, 1], got {admm_fraction!r}.")
    if finetune_schedule not in FINETUNE_SCHEDULES:
      raise ValueError(f"finetune_schedule must be one of {', '.join(FINETUNE_SCHEDULES)}, "
                       f"got {finetune_schedule!r}.")
    if finetune_lr is not None and not float(finetune_lr) > 0:
      raise ValueError(f"finetune_lr must be > 0, got {finetune_lr!r}.")
    self.admm_interval = int(admm_interval)
    self.rho0, self.rho_growth, self.rho_max = float(rho0), float(rho_growth), float(rho_max)
    self.penalty = penalty
    self.rho_schedule = rho_schedule
    self.rho_mu, self.rho_tau = float(rho_mu), float(rho_tau)
    self.target_ramp = float(target_ramp)
    self.primal_tol = None if primal_tol is None else float(primal_tol)
    self.admm_epochs = None if admm_epochs is None else int(admm_epochs)
    self.finetune_epochs = None if finetune_epochs is None else int(finetune_epochs)
    self.admm_fraction = float(admm_fraction)
    self.finetune_lr = None if finetune_lr is None else float(finetune_lr)
    self.finetune_schedule = finetune_schedule
    self.admm_steps = None
    self._end = tf.Variable(_NO_END, dtype=tf.int64, trainable=False, name="admm_end")
    self.set_admm_steps(admm_steps)
    self.history = []
    self.hard_prune_step = None
    self.hard_prune_trigger = None
    self._fns = {}

  # ----------------------------------------------------------------- state
  def slot_names(self):
    return ("admm_z", "admm_u")

  def scalar_slot_names(self):
    return ("admm_rho",) if self.rho_schedule == "residual" else ()

  def _rho_variables(self):
    return [wr.scalar_slots["admm_rho"] for wr in self.wrappers]

  def current_rho(self):
    """rho of the last Z-step (Python float): the state of `residual`, else closed form."""
    self._require_bound()
    step = int(self.step.numpy()) - 1
    if self.rho_schedule == "residual":
      value = float(self._rho_variables()[0].numpy())
      return value if value > 0 else self.rho0  # 0: before the first Z-step
    return rho_at(step, self.rho0, self.rho_growth, self.rho_max, self.admm_interval)

  def ramp_end_step(self):
    """The step at which the Z sparsity reaches the target (0 without a ramp)."""
    if self.target_ramp <= 0:
      return 0
    if self.admm_steps is None:
      raise ValueError("ADMM target_ramp > 0 ramps over the ADMM phase, whose length is "
                       "unknown: pass admm_steps (method.fit sets it), or target_ramp=0.")
    return max(1, int(math.ceil(self.target_ramp * self.admm_steps)))

  def z_sparsity(self, step):
    """Sparsity of the Z projection at `step`: the target, or on the ramp the cubic
    `PolynomialDecay(0, target)` of tfprune.schedules (Python float)."""
    end = self.ramp_end_step()
    if step >= end:
      return self.target_sparsity
    ramp = schedules.PolynomialDecay(0.0, self.target_sparsity, 0, end)
    return min(float(ramp.sparsity(step)), self.target_sparsity)

  @property
  def z(self):
    return self.slots("admm_z")

  @property
  def u(self):
    return self.slots("admm_u")

  def set_admm_steps(self, admm_steps):
    """Sets the hard-prune step (None: only `hard_prune()` ends the ADMM phase)."""
    self.admm_steps = None if admm_steps is None else int(admm_steps)
    self._end.assign(_NO_END if admm_steps is None else int(admm_steps))

  def bind(self, model):
    super().bind(model)
    self._check_k()
    self._fns = {}
    return self

  def _check_k(self):
    if self.uses_channel_graph:
      return  # bind built the channel graph and refused a model with no prunable group
    sizes = [(f"{_layer_name(wr)}/{w.path.split('/')[-1]}", int(np.prod(w.shape)))
             for wr in self.wrappers for w in wr.prunable_weights]
    if self.scope == "global" or (self.scope == "block" and self.allocation == "global"):
      total = sum(n for _, n in sizes)
      if self.scope == "block":
        total = sum(int(np.prod(s.shape)) for s in self._pooled_shapes())
      k = int(masks_lib.keep_count(total, self.target_sparsity))
      if k < 1:
        raise ValueError(f"ADMM target_sparsity={self.target_sparsity} keeps k={k} of "
                         f"{total} {'blocks' if self.scope == 'block' else 'weights'}: "
                         f"k must be >= 1; lower the sparsity.")
      return
    if self.scope == "block":
      sizes = [(name, int(np.prod(s.shape))) for (name, _), s in
               zip(sizes, self._pooled_shapes())]
    for name, n in sizes:
      k = int(masks_lib.keep_count(n, self.target_sparsity))
      if k < 1:
        raise ValueError(f"ADMM ({self.scope} scope) target_sparsity="
                         f"{self.target_sparsity} keeps k={k} of {n} entries of {name}: "
                         f"k must be >= 1; lower the sparsity or use scope='global'.")

  def _pooled_shapes(self):
    out = []
    for w in self.weights:
      pooled, _ = masks_lib.block_scores(tf.zeros(w.shape, w.dtype),
                                         self.block_size)
      out.append(pooled)
    return out

  # ------------------------------------------------------------- the maths
  def rho_tensor(self, step):
    """rho at `step` as a float32 tensor (same closed form as `rho_at`)."""
    exponent = tf.cast(tf.maximum(step, 0) // self.admm_interval, tf.float64)
    value = self.rho0 * tf.pow(tf.constant(self.rho_growth, tf.float64), exponent)
    return tf.cast(tf.minimum(value, self.rho_max), tf.float32)

  def _current_coefficient(self):
    """rho during the running step (0 after the ADMM phase); graph-safe."""
    step = tf.cast(self.step, tf.int64) - 1  # on_train_step already advanced the counter
    active = tf.cast(step < self._end, tf.float32)
    if self.rho_schedule == "residual":
      return tf.convert_to_tensor(self._rho_variables()[0]) * active
    return self.rho_tensor(step) * active

  def regularization(self, wrapper):
    """`rho/2 * sum ||W - Z + U||_F^2` for one wrapper (penalty='loss', ADMM phase)."""
    if self.penalty != "loss" or "admm_z" not in wrapper.slots:
      return None
    coefficient = self._current_coefficient()
    total = 0.0
    for w, z, u in zip(wrapper.prunable_weights, wrapper.slots["admm_z"],
                       wrapper.slots["admm_u"]):
      diff = tf.cast(w, tf.float32) - tf.cast(z, tf.float32) + tf.cast(u, tf.float32)
      total += tf.reduce_sum(tf.square(diff))
    return 0.5 * coefficient * total

  def penalty_gradients(self):
    """[(variable, rho * (W - Z + U))] for the optimizer wrapper (penalty='optimizer')."""
    self._require_bound()
    coefficient = self._current_coefficient()
    return [(w, tf.cast(coefficient, w.dtype) * (w - z + u))
            for w, z, u in zip(self.weights, self.z, self.u)]

  def _proximal_step(self, rho):
    """`W <- argmin_V rho/2 ||V - Z + U||^2 + 1/2 ||V - W||^2` (penalty='proximal')."""
    for w, z, u in zip(self.weights, self.z, self.u):
      c = tf.cast(rho, w.dtype)
      w.assign((w + c * (z - u)) / (1.0 + c))

  def project(self, values, sparsity=None):
    """Z = Proj_k(values) in this method's scope (at `sparsity`, default the target);
    returns (projected, masks)."""
    if sparsity is None:
      sparsity = self.target_sparsity
    if self.uses_channel_graph:  # NumPy over the channel graph (eager)
      masks = self.structured_masks([np.abs(np.asarray(v)) for v in values],
                                    float(sparsity))
      masks = [tf.constant(m, v.dtype) for m, v in zip(masks, values)]
      return [v * m for v, m in zip(values, masks)], masks
    masks = masks_lib.compute_masks([tf.abs(v) for v in values], sparsity,
                                    scope=self.scope, block_size=self.block_size,
                                    allocation=self.allocation,
                                    max_pruning_ratio=self.max_pruning_ratio,
                                    global_score=self.global_score)
    return [v * m for v, m in zip(values, masks)], masks

  def _z_u_step(self, rho_old, rho_new, sparsity, first, adapt):
    """Z-step + U-step (+ rho update, dual rescale). Returns per-step diagnostics."""
    weights, zs, us = self.weights, self.z, self.u
    finite = tf.stack([tf.reduce_all(tf.math.is_finite(w)) for w in weights])
    targets = [w if first else w + u for w, u in zip(weights, us)]
    new_z, new_masks = self.project(targets, sparsity)
    dz = tf.add_n([tf.reduce_sum(tf.square(n - z)) for n, z in zip(new_z, zs)])
    r = tf.add_n([tf.reduce_sum(tf.square(w - n)) for w, n in zip(weights, new_z)])
    wn = tf.add_n([tf.reduce_sum(tf.square(w)) for w in weights])
    if adapt:  # residual balancing: ||r|| vs ||s|| = rho ||Z - Z_prev||
      primal, dual = tf.sqrt(r), rho_old * tf.sqrt(dz)
      rho_new = tf.where(
          primal > self.rho_mu * dual, tf.minimum(rho_old * self.rho_tau, self.rho_max),
          tf.where(dual > self.rho_mu * primal,
                   tf.maximum(rho_old / self.rho_tau, self.rho0),
                   tf.minimum(rho_old * self.rho_growth, self.rho_max)))
    if self.rho_schedule == "residual":
      for v in self._rho_variables():
        v.assign(rho_new)
    scale = rho_old / rho_new
    for w, z, u, n in zip(weights, zs, us, new_z):
      z.assign(n)
      if first:
        u.assign(tf.zeros_like(u))
      else:
        u.assign((u + w - n) * tf.cast(scale, u.dtype))
    kept = tf.stack([tf.reduce_sum(m) / tf.cast(tf.size(m), m.dtype) for m in new_masks])
    return {"finite": finite, "primal": tf.sqrt(r / tf.maximum(wn, 1e-30)),
            "dual": rho_old * tf.sqrt(dz) / tf.sqrt(tf.maximum(wn, 1e-30)),
            "kept": kept, "masks": new_masks, "rho": rho_new}

  def _fn(self, name, fn):
    if self.uses_channel_graph:
      return fn  # the structured projection is NumPy: run eagerly
    if name not in self._fns:
      self._fns[name] = tf.function(fn)
    return self._fns[name]

  def _run_z_step(self, step, first=False, final=False):
    if self.rho_schedule == "residual":
      rho_old = self.rho0 if first else self.current_rho()
      rho_new = rho_old
    else:
      rho_old = rho_at(step - 1, self.rho0, self.rho_growth, self.rho_max,
                       self.admm_interval)
      rho_new = rho_at(step, self.rho0, self.rho_growth, self.rho_max, self.admm_interval)
    if final:
      rho_new = rho_old
    adapt = self.rho_schedule == "residual" and not (first or final)
    sparsity = self.target_sparsity if final else self.z_sparsity(step)
    start = time.perf_counter()
    fn = self._fn(f"z_step_{first}_{adapt}",
                  lambda a, b, s: self._z_u_step(a, b, s, first, adapt))
    out = fn(tf.constant(rho_old, tf.float32), tf.constant(rho_new, tf.float32),
             tf.constant(sparsity, tf.float32))
    rho_new = float(out["rho"])
    finite = out["finite"].numpy()
    seconds = time.perf_counter() - start
    if not finite.all():
      names = [f"{_layer_name(wr)} ({w.path})" for wr in self.wrappers
               for w in wr.prunable_weights]
      bad = [n for n, ok in zip(names, finite) if not ok]
      raise FloatingPointError(f"ADMM step {step}: non-finite weights in layer(s) "
                               f"{', '.join(bad)}; stopping (lower the learning rate or "
                               f"rho0). The model was left unsaved.")
    layer_names = [_layer_name(wr) for wr in self.wrappers for _ in wr.prunable_weights]
    kept = {n: float(k) for n, k in zip(layer_names, out["kept"].numpy())}
    record = {"step": int(step), "rho": rho_new, "primal_residual": float(out["primal"]),
              "dual_residual": float(out["dual"]), "z_sparsity": float(sparsity),
              "kept_fraction": kept, "seconds": seconds}
    self.history.append(record)
    logging.info("ADMM Z-step at step %d: rho=%.4g primal ||W-Z||/||W||=%.4f dual=%.4g "
                 "kept per layer %s (%.1f ms)", step, rho_new, record["primal_residual"],
                 record["dual_residual"], {k: round(v, 4) for k, v in kept.items()},
                 1e3 * seconds)
    return out

  def hard_prune(self, trigger="manual", z_step=None):
    """Ends the ADMM phase now: last Z-step, masks = support of Z, W *= mask.

    Args:
      trigger: recorded in `report()`: `manual`, `budget` (admm_steps), `tolerance`
        (primal_tol), `train_end` (a plain fit ended in the ADMM phase).
      z_step: the output of a Z-step just run at this step (its support is used);
        default: run the last Z-step now.
    """
    self._require_bound()
    step = int(self.step.numpy())
    out = z_step if z_step is not None else self._run_z_step(step, final=True)
    self.assign_masks(out["masks"])
    self.hard_prune_step = step
    self.hard_prune_trigger = trigger
    if self.admm_steps is None or self.admm_steps > step:
      self.set_admm_steps(step)
    logging.info("ADMM hard prune at step %d (%s): primal ||W-Z||/||W||=%.4f, sparsity "
                 "%.4f", step, trigger, self.history[-1]["primal_residual"],
                 self.diagnostics()["sparsity"])

  def in_admm_phase(self):
    step = int(self.step.numpy())
    return self.admm_steps is None or step < self.admm_steps

  # ------------------------------------------------------------ training
  def update(self, step):
    """Z/U steps on schedule, hard prune at `admm_steps` (eager: `step` is an int)."""
    end = _NO_END if self.admm_steps is None else self.admm_steps
    if step < end:
      if step == 0:
        self._run_z_step(0, first=True)
      elif step % self.admm_interval == 0:
        out = self._run_z_step(step)
        if (self.primal_tol is not None and step >= self.ramp_end_step() and
            self.history[-1]["primal_residual"] < self.primal_tol):
          self.hard_prune(trigger="tolerance", z_step=out)
          return
      if self.penalty == "proximal":
        rho = (self.current_rho() if self.rho_schedule == "residual" else
               rho_at(step, self.rho0, self.rho_growth, self.rho_max, self.admm_interval))
        self._fn("proximal", self._proximal_step)(tf.constant(rho, tf.float32))
    elif step == end and self.hard_prune_step != step:
      self.hard_prune(trigger="budget")

  def optimizer_class(self):
    """`penalty="optimizer"` needs `ADMMOptimizer` (it adds the penalty gradient)."""
    return ADMMOptimizer if self.penalty == "optimizer" else None

  def finish_phases(self):
    """A plain `model.fit` (or custom loop) ended in the ADMM phase.

    Without `admm_steps` nothing else would ever hard-prune: do it now, warning that the
    masked fine-tune was skipped. With `admm_steps` ahead, the run is only paused (a
    later fit resumes it): warn that the model is not pruned yet.
    """
    if self.hard_prune_step is not None:
      return
    step = int(self.step.numpy())
    if self.admm_steps is not None:
      if step <= self.admm_steps:
        logging.warning("ADMM: training ended at step %d, before the hard prune at "
                        "admm_steps=%d: the weights are not pruned yet (train on to reach "
                        "it, or call method.hard_prune()).", step, self.admm_steps)
      return
    logging.warning(
        "ADMM: model.fit ended in the ADMM phase (step %d, no admm_steps): hard-pruning "
        "at train end; the masked fine-tune was skipped. Use method.fit(model, x, y, "
        "epochs=...) for ADMM -> hard prune -> fine-tune, or set admm_steps.", step)
    self.hard_prune(trigger="train_end")

  def diagnostics(self):
    out = super().diagnostics()
    if self.history:
      last = self.history[-1]
      out["admm/rho"] = last["rho"]
      out["admm/primal_residual"] = last["primal_residual"]
      out["admm/dual_residual"] = last["dual_residual"]
      out["admm/z_sparsity"] = last["z_sparsity"]
      out["admm/zstep_seconds_total"] = sum(h["seconds"] for h in self.history)
      for name, kept in last["kept_fraction"].items():
        out[f"admm/kept/{name}"] = kept
    return out

  def write_artifacts(self, output_dir):
    """`kept_fraction.png`: the per-layer allocation the global Z-projection chose."""
    from tfprune import plots  # pylint: disable=g-import-not-at-top (matplotlib: only here)
    return [plots.kept_fraction(self.report(), os.path.join(output_dir,
                                                            "kept_fraction.png"))]

  def report(self):
    """A JSON-ready dict: config, phases, per-Z-step residuals and per-layer allocation."""
    final_kept = {}
    for wr in self.wrappers:
      for w, m in zip(wr.prunable_weights, wr.masks):
        final_kept[f"{_layer_name(wr)}/{w.path.split('/')[-1]}"] = float(
            tf.reduce_mean(tf.cast(m, tf.float32)))
    return {"method": self.name, "config": self.get_config(),
            "admm_steps": self.admm_steps, "hard_prune_step": self.hard_prune_step,
            "hard_prune_trigger": self.hard_prune_trigger,
            "hard_prune_primal_residual": (self.history[-1]["primal_residual"]
                                           if self.hard_prune_step is not None and
                                           self.history else None),
            "z_steps": len(self.history),
            "zstep_seconds_total": float(sum(h["seconds"] for h in self.history)),
            "final_primal_residual": (self.history[-1]["primal_residual"]
                                      if self.history else None),
            "kept_fraction": final_kept, "history": list(self.history),
            "sparsity": self.diagnostics()["sparsity"]}

  # ----------------------------------------------------------------- recipe
  def split_epochs(self, epochs):
    """(admm_epochs, finetune_epochs) for a budget of `epochs`."""
    epochs = int(epochs)
    if epochs < 1:
      raise ValueError(f"ADMM fit needs epochs >= 1, got {epochs}.")
    a, f = self.admm_epochs, self.finetune_epochs
    if a is not None and f is not None and a + f != epochs:
      raise ValueError(f"admm_epochs ({a}) + finetune_epochs ({f}) must equal the epoch "
                       f"budget ({epochs}).")
    if a is None and f is not None:
      a = epochs - f
    if a is None:
      a = max(1, int(round(self.admm_fraction * epochs)))
    if not 0 <= a <= epochs:
      raise ValueError(f"admm_epochs must be in [0, {epochs}] for a budget of {epochs} "
                       f"epochs, got {a}.")
    return a, epochs - a

  def fit(self, model, x, y=None, epochs=1, batch_size=128, optimizer=None, loss=None,
          metrics=("accuracy",), callbacks=(), validation_data=None, verbose=1):
    """ADMM phase -> hard prune -> masked fine-tune, in one `model.fit` of `epochs`.

    The split comes from `admm_epochs` / `finetune_epochs` / `admm_fraction`; the hard
    prune happens at the first step of epoch `admm_epochs`. Other arguments as in
    `PruningMethod.fit`.

    Raises:
      FloatingPointError: non-finite loss or weights during training (step named).
    """
    if model is not self.model:
      self.bind(model)
    admm_epochs, finetune_epochs = self.split_epochs(epochs)
    steps_per_epoch = _steps_per_epoch(x, batch_size)
    start = int(self.step.numpy())
    self.set_admm_steps(start + admm_epochs * steps_per_epoch)
    self.history, self.hard_prune_step, self.hard_prune_trigger = [], None, None
    optimizer = self.prepare_optimizer(optimizer or keras.optimizers.Adam(1e-3))
    model.compile(optimizer=optimizer,
                  loss=loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=list(metrics))
    logging.info("ADMM fit: %d ADMM epochs (%d steps, hard prune at step %d) + %d "
                 "fine-tune epochs, target sparsity %.4f, scope %s", admm_epochs,
                 admm_epochs * steps_per_epoch, self.admm_steps, finetune_epochs,
                 self.target_sparsity, self.scope)
    history = model.fit(x, y, epochs=epochs, batch_size=batch_size,
                        validation_data=validation_data, verbose=verbose,
                        callbacks=[callbacks_lib.PruningCallback(self),
                                   callbacks_lib.FinetuneLearningRate(
                                       admm_epochs, finetune_epochs * steps_per_epoch,
                                       base_lr=self.finetune_lr,
                                       schedule=self.finetune_schedule,
                                       step_fn=lambda: self.step.numpy(),
                                       phase_start_step=self.admm_steps, name="ADMM fit",
                                       phases=("ADMM", "fine-tune"),
                                       hint="the learning rate or rho0"),
                                   *callbacks])
    return dict(history.history)

  def get_config(self):
    config = super().get_config()
    config.update({"admm_interval": self.admm_interval, "rho0": self.rho0,
                   "rho_growth": self.rho_growth, "rho_max": self.rho_max,
                   "penalty": self.penalty, "admm_steps": self.admm_steps,
                   "admm_epochs": self.admm_epochs, "finetune_epochs": self.finetune_epochs,
                   "admm_fraction": self.admm_fraction, "finetune_lr": self.finetune_lr,
                   "finetune_schedule": self.finetune_schedule,
                   "rho_schedule": self.rho_schedule, "rho_mu": self.rho_mu,
                   "rho_tau": self.rho_tau, "target_ramp": self.target_ramp,
                   "primal_tol": self.primal_tol})
    return config


def _steps_per_epoch(x, batch_size):
  """Batches per epoch of `x` (arrays, dict of arrays or a finite tf.data.Dataset)."""
  if isinstance(x, tf.data.Dataset):
    n = int(x.cardinality())
    if n < 0:
      raise ValueError("ADMM fit needs a dataset of known finite cardinality to place the "
                       "hard prune; pass admm_steps and train with PruningCallback instead.")
    return n
  if isinstance(x, dict):
    x = next(iter(x.values()))
  if isinstance(x, (list, tuple)):
    x = x[0]
  if not hasattr(x, "shape"):
    raise ValueError(f"ADMM fit cannot count the batches of a {type(x).__name__}; pass "
                     f"arrays or a tf.data.Dataset.")
  return int(math.ceil(int(x.shape[0]) / int(batch_size)))


# Registered as "tfprune>ADMMOptimizer": "tfprune>ADMM" is the pruning method.
@keras.saving.register_keras_serializable(package="tfprune", name="ADMMOptimizer")
class ADMMOptimizer(optimizer_wrapper.WrappedOptimizer):
  """ADMM W-step as an optimizer wrapper: `grad += rho * (W - Z + U)` on pruned weights.

  The ADMM state (`Z`, `U`, the step from which `rho` follows) lives in the pruned
  model's wrappers; the method that owns it must use `penalty="optimizer"` (else the
  penalty would be counted twice). The optimizer serves one ADMM method: passed as
  `method=`, or attached by `method.on_train_begin(optimizer=...)` (which
  `tfprune.PruningCallback` calls with the compiled optimizer, also after `load_model`).
  Registered as `tfprune>ADMMOptimizer` (`tfprune>ADMM` is the method); also exported as
  `tfprune.optimizers.ADMM`.

  Example (custom loop):

      pruned = tfprune.prune(model, "admm", target_sparsity=0.98, penalty="optimizer",
                             admm_steps=3000)
      method = tfprune.get_method(pruned)
      opt = method.prepare_optimizer(keras.optimizers.Adam(1e-3))
      method.on_train_begin(optimizer=opt)
      for x, y in dataset:
        method.on_train_step()          # Z/U steps, hard prune at admm_steps
        with tf.GradientTape() as tape:
          loss = loss_fn(y, pruned(x, training=True))
        grads = tape.gradient(loss, pruned.trainable_variables)
        opt.apply_gradients(zip(grads, pruned.trainable_variables))
      method.on_train_end()

  Args:
    inner_optimizer: the Keras optimizer doing the update.
    method: optional `tfprune.methods.admm.ADMM` to attach now.
    name: optional name.
  """

  def __init__(self, inner_optimizer, method=None, name=None, **kwargs):
    super().__init__(inner_optimizer, name=name, **kwargs)
    if method is not None:
      self.attach(method)

  def accepts(self, method):
    return isinstance(method, ADMM)

  def attach(self, method):
    if isinstance(method, ADMM) and method.penalty != "optimizer":
      raise ValueError(f"tfprune.optimizers.ADMM adds the ADMM penalty gradient, but the "
                       f"ADMM method of model "
                       f"{getattr(method.model, 'name', None)!r} applies it otherwise "
                       f"(penalty={method.penalty!r}). Use penalty='optimizer' with "
                       f"this optimizer, or a plain optimizer with penalty='loss' or "
                       f"'proximal'.")
    return super().attach(method)

  def transform_gradients(self, grads, variables):
    method = self.require_method()
    terms = {id(var): term for var, term in method.penalty_gradients()}
    out = []
    for g, v in zip(grads, variables):
      term = terms.get(id(v))
      if g is None or term is None:
        out.append(g)
      else:
        out.append(g + tf.cast(term, g.dtype))
    return out
