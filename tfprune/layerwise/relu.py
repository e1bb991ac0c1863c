"""The ReLU model of layer-wise pruning, by majorise-minimise (Phan et al., ICDM 2020;
Net-Trim, Aghasi et al. 2017).

Objective: over rows / columns where the original pre-activation `y > 0`, `(z - y)^2`;
where `y <= 0`, `max(z, 0)^2` (`z = x w + b`, the pruned pre-activation): a pruned unit
may be anything where the original ReLU output is 0, as long as it stays <= 0. At the
current `w_k`, `max(z, 0)^2 <= (z - min(z_k, 0))^2` with equality at `w_k`, so each pass
minimises ordinary least squares with the target `T = where(y > 0, y, min(z_k, 0))` -
the same `G`, a new `C`, streamed in one data pass - and the objective never increases.
Each pass re-runs the solver's support step when it has `resolve` (l0: IHT warm-started
at `w_k`), then refits.
"""
import dataclasses

import keras
import numpy as np
import tensorflow as tf

from tfprune import topk
from tfprune.layerwise import geometry
from tfprune.layerwise import solvers


def relu_cross_products(inner, w0, bias, w_cur, xp, xo=None):
  """One batch's float64 `(X^T (T - b), rows)` for the majoriser target `T`."""
  xp = geometry.layer_patches(inner, xp)
  xo = xp if xo is None else geometry.layer_patches(inner, xo)
  y = tf.matmul(xo, w0) + bias  # original pre-activation
  z = tf.matmul(xp, w_cur) + bias  # current pruned pre-activation
  target = tf.where(y > 0, y, tf.minimum(z, 0.0)) - bias
  return tf.cast(tf.matmul(xp, target, transpose_a=True), tf.float64), tf.shape(xp)[1]


def is_relu(inner):
  """True if the layer's own activation is ReLU (for `relu_model="auto"`)."""
  return getattr(inner, "activation", None) is keras.activations.relu


def refine(unit, pairs, fit, w, support, solver, problem, k, passes):
  """Runs `passes` MM passes from the refit `w` (`[B, d, m]` float64, on `support`).

  Args:
    unit: the engine's unit (needs `inner`, `w0`, `bias`).
    pairs: a callable returning an iterable of `(xp, xo)` input batches of the layer.
    fit: `fit(cross, support) -> (w, ridge)`, the least-squares refit on the layer's
      (ridged) Gram matrix (`tfprune.layerwise.solvers.refit`).
    w, support: the refit solution and its support.
    solver: the `LayerSolver` (its `resolve`, if any, re-selects the support).
    problem: the scaled `LayerProblem` of the layer.
    k: keep count over the live rows.
    passes: number of MM passes.

  Returns:
    `(w, support)` after the last pass.
  """
  w0 = tf.constant(unit.w0, tf.float32)
  bias = tf.constant(unit.bias[:, None, :], tf.float32)
  for _ in range(passes):
    w_cur = tf.constant(w, tf.float32)
    cross, rows = None, 0
    for xp, xo in pairs():
      c, n = relu_cross_products(unit.inner, w0, bias, w_cur, xp, xo)
      cross = c.numpy() if cross is None else cross + c.numpy()
      rows += int(n)
    cross = cross / float(rows)
    if hasattr(solver, "resolve"):
      live = problem.live
      scaled = dataclasses.replace(problem, cross=problem.scaled_cross(cross))
      w_new = solver.resolve(scaled, k, tf.constant(w[:, live] / problem.scale, tf.float32))
      keep = topk.topk_mask(solvers.support_scores(scaled, w_new), k).numpy().astype(bool)
      support = np.zeros_like(support)
      support[:, live] = keep
    w, _ = fit(cross, support)
  return w, support
