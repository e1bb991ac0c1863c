"""The layer-wise driver: finds the prunable kernels, streams their statistics, solves,
refits and writes kernels and masks, one kernel at a time (`prune_layerwise`).

Modes: `parallel` takes every layer's inputs from the original network (one pass over
the calibration data for all layers); `cascade` takes them from the network whose earlier
layers are already pruned (one pass per layer, so that later layers compensate the
earlier ones' errors), while the target `Y` always comes from the original network.

Units: every kernel the engine prunes is a `Unit`: a top-level layer of the model (its
input read from the model's graph by a sub-model), or a kernel layer INSIDE a top-level
layer - the EinsumDense projections of `MultiHeadAttention`, the layer a
`TimeDistributed` wraps, the layers of a nested model, a layer called more than once -
whose inputs are read by running the whole model with a hook on the sublayer
(`stats.capture_inputs`). Layers with a kernel that cannot be posed as a least-squares
problem (recurrent kernels, grouped convolutions, ...) are reported with the reason:
one `skip` line each, never silently.
"""
import dataclasses
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

from tfprune import _layers
from tfprune import masks as masks_lib
from tfprune import registry
from tfprune import topk
from tfprune.layerwise import batchnorm as batchnorm_lib
from tfprune.layerwise import calibration
from tfprune.layerwise import geometry
from tfprune.layerwise import relu as relu_lib
from tfprune.layerwise import solvers
from tfprune.layerwise import stats as stats_lib

MODES = ("parallel", "cascade")
BN_RECALIBRATION = (True, False, "auto")
# bn_recalibration=True in cascade mode: re-estimate the BatchNorm right after each
# pruned layer before the next layer's statistics (True, default), or all of them after
# the solves (False; measured worse, kept for bench/layerwise_realnet.py).
RECALIBRATE_IN_CASCADE = True
ALLOCATIONS = ("layer", "global")


@dataclasses.dataclass
class Unit:
  """One kernel the engine prunes."""
  layer: keras.layers.Layer  # top-level layer of the model being pruned (maybe a wrapper)
  original: keras.layers.Layer  # the same top-level layer in the frozen original copy
  inner: keras.layers.Layer  # the layer holding the kernel (in the pruned model)
  inner_original: keras.layers.Layer  # ... and in the original copy
  nested: bool  # inputs captured by a hook (not a node of the model's graph)
  kernel_shape: tuple
  w0: np.ndarray  # [B, d, m] float64 (times `out_scale`)
  bias: np.ndarray  # [B, m] float64 (times `out_scale`)
  out_scale: np.ndarray = None  # [B, m]: weight of each output in the objective

  @property
  def name(self):
    return self.inner.name

  @property
  def kind(self):
    return geometry.kind(self.inner)


class Report(list):
  """The per-layer rows of `prune_layerwise`; `skipped` lists `(layer, type, reason)`."""

  def __init__(self, rows=(), skipped=()):
    super().__init__(rows)
    self.skipped = list(skipped)
    self.batchnorm = None  # the BatchNorm re-calibration summary (None: not run)


# ----------------------------------------------------------------------- discovery
def find_units(model, original):
  """`(units, skipped)`: the kernels the engine prunes, and why the others are not."""
  units, skipped = [], []

  def add(top, top_o, inner, inner_o, nested):
    variable = geometry.kernel_variable(inner)
    for other in registry.get_prunable_weights(inner):
      if other is not variable:  # e.g. an untied ReversibleEmbedding's output projection
        skipped.append((inner.name, type(inner).__name__,
                        f"its weight {other.path.rsplit('/', 1)[-1]!r} is not fitted "
                        f"layer-wise: left dense"))
    kernel = keras.ops.convert_to_numpy(variable)
    w0 = geometry.kernel_to_problems(inner, kernel).astype(np.float64)
    units.append(Unit(top, top_o, inner, inner_o, nested, kernel.shape, w0,
                      geometry.bias_problems(inner, w0.shape)))

  def visit(top, top_o, inner, inner_o, nested):
    if geometry.kind(inner) is not None and geometry.has_kernel(inner):
      add(top, top_o, inner, inner_o, nested)
      return
    reason = geometry.skip_reason(inner)
    if geometry.is_recurrent(inner):
      skipped.append((inner.name, type(inner).__name__, reason))
      return
    if geometry.has_kernel(inner):
      skipped.append((inner.name, type(inner).__name__, reason))
    for sub, sub_o in zip(_layers.children(inner), _layers.children(inner_o)):
      visit(top, top_o, sub, sub_o, True)

  for layer, layer_o in zip(model.layers, original.layers):
    if isinstance(layer, keras.layers.InputLayer):
      continue
    inner, inner_o = geometry.inner_layer(layer), geometry.inner_layer(layer_o)
    visit(layer, layer_o, inner, inner_o, _layers.call_count(layer) > 1)
  return units, skipped


def _select(units, layers, skipped):
  """Restricts `units` to the names in `layers` (inner or top-level names)."""
  if layers is None:
    return units
  by_name = {}
  for u in units:
    by_name.setdefault(u.inner.name, []).append(u)
    by_name.setdefault(u.layer.name, []).append(u)
  skipped_names = {s[0]: s for s in skipped}
  bad = [n for n in layers if n not in by_name]
  if bad:
    why = [f"{n}: {skipped_names[n][2]}" for n in bad if n in skipped_names]
    raise ValueError(
        f"Cannot prune layers {bad} layer-wise; prunable kernels in this model: "
        f"{[u.name for u in units]} (types {', '.join(geometry.SUPPORTED_LAYERS)})"
        + (f". {'; '.join(why)}" if why else "."))
  wanted = {id(u) for n in layers for u in by_name[n]}
  return [u for u in units if id(u) in wanted]


def _following_batchnorm(layer):
  """The BatchNormalization that alone consumes `layer`'s output on the channel axis."""
  nodes = getattr(layer, "_outbound_nodes", None) or []
  if len(nodes) != 1 or _layers.call_count(layer) != 1:
    return None
  bn = nodes[0].operation
  if not isinstance(bn, keras.layers.BatchNormalization):
    return None
  axis = bn.axis if isinstance(bn.axis, int) else (bn.axis[0] if len(bn.axis) == 1 else None)
  rank = len(layer.output.shape)
  if axis not in (-1, rank - 1) or getattr(geometry.inner_layer(layer), "data_format",
                                           "channels_last") == "channels_first":
    return None
  return bn


def weight_outputs_by_batchnorm(units):
  """Measures each output in the units' objective where it matters: after the
  BatchNormalization that follows the layer (MobileNet, ResNet, EfficientNet, ...).

  Inference BN multiplies output channel j by `s_j = gamma_j / sqrt(var_j + eps)`, so
  the error that reaches the rest of the network is `s_j (z_j - y_j)`. Fitting
  `W S` (S = diag|s|) instead of `W` keeps each column's least-squares solution (columns
  are independent; the refit is invariant) but lets the shared sparsity budget and
  lambda of the layer go to the channels that BN amplifies. The kernel written back is
  the solution divided by `|s|`. Returns the number of units weighted.
  """
  count = 0
  for u in units:
    if u.nested or u.kind not in ("dense", "conv", "depthwise"):
      continue
    bn = _following_batchnorm(u.layer)
    if bn is None:
      continue
    var = keras.ops.convert_to_numpy(bn.moving_variance).astype(np.float64)
    gamma = (keras.ops.convert_to_numpy(bn.gamma).astype(np.float64) if bn.scale
             else np.ones_like(var))
    scale = np.abs(gamma) / np.sqrt(var + bn.epsilon)
    if scale.size != u.w0.shape[0] * u.w0.shape[2]:
      continue
    scale = np.maximum(scale, 1e-6 * max(float(scale.max()), 1e-30))
    scale = scale.reshape(u.w0.shape[0], u.w0.shape[2])
    u.out_scale = scale
    u.w0 = u.w0 * scale[:, None, :]
    u.bias = u.bias * scale
    count += 1
  return count


# -------------------------------------------------------------------------- inputs
INPUTS_BUDGET_BYTES = 256 << 20


class _Inputs:
  """Where each unit's input batches come from.

  Top-level units: ONE compiled function per network (the pruned model and the frozen
  original) returns the inputs of every top-level unit; it is traced once and, since
  pruning only assigns variables, stays valid while kernels change (cascade mode).
  Batches are split so that those inputs stay under `INPUTS_BUDGET_BYTES`. Nested units
  (not graph nodes): the whole model runs eagerly with a hook on the sublayer.
  """

  def __init__(self, model, original, units, batches):
    self.model, self.original, self.batches = model, original, batches
    self.top = [u for u in units if not u.nested]
    self.index = {id(u): i for i, u in enumerate(self.top)}
    self.pruned_any = False  # until a unit is written, the pruned model IS the original
    self._fns = {}

  def _fn(self, pruned):
    if pruned not in self._fns:
      net = self.model if pruned else self.original
      layers = [u.layer if pruned else u.original for u in self.top]
      ext = calibration.extractor(net, layers)
      signature = calibration.signature(net)  # the model's input structure (multi-input)
      fn = tf.function(lambda x: ext(x, training=False), input_signature=[signature],
                       reduce_retracing=True)
      per_sample = sum(4 * int(np.prod([d or 1 for d in l.input.shape[1:]]))
                       for l in layers)
      self._fns[pruned] = [fn, max(1, INPUTS_BUDGET_BYTES // max(per_sample, 1)), ext,
                           signature]
    return self._fns[pruned]

  def _top(self, pruned, x):
    """Yields, per chunk of the batch `x`, the inputs of every top-level unit."""
    entry = self._fn(pruned)
    fn, chunk, ext, signature = entry
    x = calibration.cast(x, signature)
    for start in range(0, calibration.batch_len(x), chunk):
      part = calibration.take(x, start, start + chunk)
      if fn is None:
        outs = ext(part, training=False)
      else:
        try:
          outs = fn(part)
        except (tf.errors.OperatorNotAllowedInGraphError, TypeError, ValueError):
          # A model that cannot be traced at its dynamic input shape (keras_hub
          # DeepLabV3's UpSampling2D sized from its input, RWKV7's time mixing): the
          # extractor runs eagerly (an error of the data itself is raised there again).
          entry[0] = fn = None
          outs = ext(part, training=False)
      yield outs if isinstance(outs, (list, tuple)) else [outs]

  def _nested(self, pruned, unit, x):
    net = self.model if pruned else self.original
    inner = unit.inner if pruned else unit.inner_original
    with stats_lib.capture_inputs([inner]) as seen:
      net(x, training=False)
    return seen[id(inner)]

  def _one(self, pruned, unit, x):
    if unit.nested:
      return self._nested(pruned, unit, x)
    i = self.index[id(unit)]
    return [outs[i] for outs in self._top(pruned, x)]

  def pairs(self, unit, cascade):
    """Yields `(xp, xo)`: the unit's inputs in the pruned / original network."""
    if not cascade or not self.pruned_any:
      for x in self.batches():
        for xo in self._one(False, unit, x):
          yield xo, None
      return
    for x in self.batches():
      xps, xos = self._one(True, unit, x), self._one(False, unit, x)
      if len(xps) != len(xos):
        raise ValueError(f"Layer {unit.name!r} was called {len(xps)} times in the pruned "
                         f"model but {len(xos)} times in the original one.")
      yield from zip(xps, xos)

  def all_original(self, units):
    """Yields per batch (chunk) each unit's list of inputs in the original network."""
    nested = [u for u in units if u.nested]
    for x in self.batches():
      got = {id(u): [] for u in units}
      if self.top:
        for outs in self._top(False, x):
          for u in self.top:
            if id(u) in got:
              got[id(u)].append(outs[self.index[id(u)]])
      if nested:
        with stats_lib.capture_inputs([u.inner_original for u in nested]) as seen:
          self.original(x, training=False)
        got.update({id(u): seen[id(u.inner_original)] for u in nested})
      yield [got[id(u)] for u in units]


# -------------------------------------------------------------------- statistics
def _stats_one(unit, inputs, cascade, stats_dtype):
  acc = stats_lib.accumulator(unit.inner, unit.w0, stats_dtype)
  for xp, xo in inputs.pairs(unit, cascade):
    acc.add(xp, xo)
  return acc.result()


def _stats_all(units, inputs, stats_dtype):
  accs = [stats_lib.accumulator(u.inner, u.w0, stats_dtype) for u in units]
  for per_unit in inputs.all_original(units):
    for acc, xs in zip(accs, per_unit):
      for x in xs:
        acc.add(x)
  return [a.result() for a in accs]


class _Stats:
  """Statistics per unit: single device or all-reduced over a strategy."""

  def __init__(self, model, original, inputs, stats_dtype, strategy, dataset):
    self.model, self.original, self.inputs = model, original, inputs
    self.stats_dtype, self.strategy, self.dataset = stats_dtype, strategy, dataset
    self.seconds = {}

  def _distributable(self, unit):
    return self.strategy is not None and not unit.nested

  def all(self, units):
    """Parallel statistics of all units (one data pass per device path)."""
    t0 = time.perf_counter()
    dist = [u for u in units if self._distributable(u)]
    local = [u for u in units if not self._distributable(u)]
    out = {}
    if dist:
      got = stats_lib.distributed_stats(self.strategy, self.original,
                                        [u.original for u in dist], self.dataset,
                                        self.stats_dtype, w0=[u.w0 for u in dist])
      out.update({id(u): s for u, s in zip(dist, got)})
    if local:
      out.update({id(u): s for u, s in zip(local, _stats_all(local, self.inputs,
                                                             self.stats_dtype))})
    dt = (time.perf_counter() - t0) / max(len(units), 1)
    for u in units:
      self.seconds[id(u)] = dt
    return [out[id(u)] for u in units]

  def one(self, unit, cascade):
    t0 = time.perf_counter()
    if self._distributable(unit):
      cascade = cascade and self.inputs.pruned_any
      (out,) = stats_lib.distributed_stats(
          self.strategy, self.model if cascade else self.original,
          [unit.layer if cascade else unit.original], self.dataset, self.stats_dtype,
          w0=[unit.w0], original_model=self.original if cascade else None,
          original_layers=[unit.original] if cascade else None)
    else:
      out = _stats_one(unit, self.inputs, cascade, self.stats_dtype)
    self.seconds[id(unit)] = time.perf_counter() - t0
    return out


# ------------------------------------------------------------------------- solving
def _solve_least_squares(unit, stats, k_target, solver, refit_ridge, relu_on, pairs,
                         relu_passes, mean_correction):
  """Solver + top-k support + refit (+ ReLU model) for one non-embedding unit."""
  problem, ridge, notes = solvers.make_problem(unit.name, stats, unit.w0)
  nb, _, m = unit.w0.shape
  k = min(k_target, int(problem.live.sum()) * nb * m)
  w, info = solver.solve(problem, k)
  notes.extend(info.get("notes", ()))
  if solver.refit:
    keep = topk.topk_mask(solvers.support_scores(problem, tf.convert_to_tensor(
        w, tf.float32)), k).numpy().astype(bool)
  else:  # the solver's weights are final (LayerSolver.refit): its nonzeros are kept
    w = np.asarray(w)
    keep = w != 0
  support = np.zeros(unit.w0.shape, bool)
  support[:, problem.live] = keep
  w_full = np.zeros(unit.w0.shape)
  w_full[:, problem.live] = np.asarray(w, np.float64) * problem.scale
  err_before = solvers.relative_error(stats, w_full * support, unit.bias)
  gram = stats.gram + (ridge * np.eye(stats.gram.shape[1])[None] if ridge else 0.0)
  factor = solvers.gram_factor(stats) if ridge else None

  def fit(cross, support):  # the few-sample ridge pulls toward W0 (solvers.make_problem)
    return solvers.refit(gram, cross + ridge * unit.w0 if ridge else cross, support,
                         refit_ridge, factor=factor, factor_ridge=ridge)

  if solver.refit:
    w_refit, used = fit(stats.cross, support)
    if used > refit_ridge:
      notes.append(f"singular G_SS: refit ridge raised to {used:g}*mean(diag G)")
  else:  # entries the solver left as trained are written back exactly (no unit round trip)
    w_refit = w_full * support
    same = w == np.asarray(problem.w0)
    w_refit[:, problem.live] = np.where(same & keep, unit.w0[:, problem.live],
                                        w_refit[:, problem.live])
    notes.append(f"{type(solver).__name__}: no refit, no mean correction")
  if relu_on:
    w_refit, support = relu_lib.refine(unit, pairs, fit, w_refit, support, solver,
                                       problem, k, relu_passes)
    notes.append(f"ReLU model ({relu_passes} MM passes)")
  extra = k_target - k
  if extra > 0:  # more to keep than live rows hold: keep dead-row weights by magnitude
    dead = ~problem.live
    kept = topk.topk_mask(tf.constant(np.abs(unit.w0[:, dead]), tf.float32),
                          extra).numpy().astype(bool)
    support[:, dead] = kept
    w_refit[:, dead] = unit.w0[:, dead] * kept
    notes.append(f"{int(dead.sum())} inputs always 0 on the calibration data (e.g. "
                 f"padding): {int(kept.sum())} of their weights kept by magnitude")
  err_after = solvers.relative_error(stats, w_refit, unit.bias)
  shift = None
  if mean_correction and solver.refit and not relu_on and stats.x_colsum is not None:
    # Mean of the residual X W - (Y - b) per output: what a bias shift removes.
    shift = np.einsum("bd,bdm->bm", stats.x_colsum, w_refit) - stats.y_colsum
  err_shifted = err_after if shift is None else solvers.relative_error(
      stats, w_refit, unit.bias, shift=shift)
  return w_refit, support, {"shift": shift, "err_after_shift": err_shifted,
      "d_live": int(problem.live.sum()), "n": stats.n, "err_before_refit": err_before,
      "err_after_refit": err_after, "iterations": int(info.get("iterations", 0)),
      "solves": int(info.get("solves", 1)), "lambda": info.get("lambda"), "notes": notes}


def _solve_unreached(unit, k):
  """A layer the calibration data never reached (keras_hub SAM's `no_mask_embed`, used
  only without a mask prompt): nothing to fit, so its top-k weights by magnitude."""
  support = topk.topk_mask(tf.constant(np.abs(unit.w0), tf.float32), k).numpy().astype(bool)
  return unit.w0 * support, support, {
      "shift": None, "err_after_shift": float("nan"), "d_live": 0, "n": 0,
      "err_before_refit": float("nan"), "err_after_refit": float("nan"), "iterations": 0,
      "solves": 0, "lambda": None,
      "notes": ["no calibration data reached it (the model never called it on this "
                "data): pruned by magnitude"]}


EMBEDDING_SMOOTHING = 1.0


def _solve_embedding(unit, stats, k):
  """Exact solution of the diagonal (lookup) problem: keep the top-k of
  `(count_v + 1) * w_vj^2`, kept entries unchanged.

  With one-hot rows `G = diag(counts) / n`, so the output error of a pruned table is
  `sum_v counts_v ||w0_v - w_v||^2 / n`: deleting entry (v, j) costs
  `counts_v * w0_vj^2`, independently of the others; the top-k of that score with the
  kept entries unchanged is the exact minimiser (the solver and the refit are not
  needed). One pseudo-count (`EMBEDDING_SMOOTHING`) per id keeps ids that the
  calibration data never shows ranked by magnitude instead of all pruned.
  """
  w0 = unit.w0[0]
  weight = stats.counts + EMBEDDING_SMOOTHING
  scores = tf.constant(weight[:, None] * w0 ** 2, tf.float32)
  support = topk.topk_mask(scores, k).numpy().astype(bool)[None]
  w = unit.w0 * support
  seen = stats.counts[:, None]
  total = float(np.sum(seen * w0 ** 2))
  err = float(np.sqrt(np.sum(seen * (w0 - w[0]) ** 2) / max(total, 1e-300)))
  notes = [f"lookup: G = diag(token counts + {EMBEDDING_SMOOTHING:g}), exact top-k"]
  unseen = int(np.sum(stats.counts == 0))
  if unseen:
    notes.append(f"{unseen} ids unseen in calibration (ranked by magnitude)")
  return w, support, {
      "shift": None, "err_after_shift": err, "d_live": int(np.sum(stats.counts > 0)),
      "n": stats.n, "err_before_refit": err,
      "err_after_refit": err, "iterations": 0, "solves": 0, "lambda": None,
      "notes": notes}


def _correct_mean(unit, shift):
  """Removes the mean output shift `shift` (`[B, m]`, in kernel units) of a pruned
  layer: from its bias, else from the moving mean of the BatchNorm that follows it.
  Returns where it went (None: nowhere to put it, e.g. EinsumDense or no bias)."""
  if unit.kind not in ("dense", "conv", "depthwise"):
    return None
  delta = shift.reshape(-1)
  bias = getattr(unit.inner, "bias", None)
  if bias is not None:
    bias.assign((keras.ops.convert_to_numpy(bias) - delta).astype(
        keras.backend.standardize_dtype(bias.dtype)))
    return "the bias"
  bn = None if unit.nested else _following_batchnorm(unit.layer)
  if bn is None or int(np.prod(bn.moving_mean.shape)) != delta.size:
    return None
  mean = keras.ops.convert_to_numpy(bn.moving_mean)
  bn.moving_mean.assign((mean + delta.reshape(mean.shape)).astype(mean.dtype))
  return f"the moving mean of {bn.name!r}"


def _write(unit, kernel, mask):
  """Assigns the pruned kernel and, for a wrapped model, that kernel's mask only."""
  variable = geometry.kernel_variable(unit.inner)
  variable.assign(kernel.astype(keras.backend.standardize_dtype(variable.dtype)))
  layer = unit.layer
  if layer is unit.inner or not hasattr(layer, "set_masks"):
    return
  new = [mask if (w is variable or w.path == variable.path) else
         keras.ops.convert_to_numpy(m) for w, m in zip(layer.prunable_weights, layer.masks)]
  layer.set_masks(new)


# -------------------------------------------------------------------------- report
def _format_row(r, i, total):
  return (f"[{i}/{total}] {r['layer']:<24} {r['type']:<15} {r['shape']:>14} "
          f"sparsity {r['sparsity']:.4f} err {r['err_before_refit']:.4f} -> "
          f"{r['err_after_refit']:.4f} it {r['iterations']:>5} solves {r['solves']:>3} "
          f"{r['seconds']:.2f}s (stats {r['stats_seconds']:.2f}s)")


def format_skip(name, type_name, reason):
  """The line printed for a prunable layer the engine does not prune."""
  return f"skip {name} ({type_name}): {reason}"


def format_table(rows):
  """The per-layer report as a Markdown table."""
  head = ("| layer | kernel | d live | rows n | sparsity | rel. err before refit | "
          "after refit | iterations | solves | solve s | stats s | notes |")
  lines = [head, "|" + "---|" * 12]
  for r in rows:
    lines.append(
        f"| {r['layer']} | {r['shape']} | {r['d_live']} | {r['n']} | {r['sparsity']:.4f} | "
        f"{r['err_before_refit']:.4f} | {r['err_after_refit']:.4f} | {r['iterations']} | "
        f"{r['solves']} | {r['seconds']:.2f} | {r['stats_seconds']:.2f} | "
        f"{'; '.join(r['notes'])} |")
  skipped = getattr(rows, "skipped", [])
  if skipped:
    lines.append("")
    lines.extend(f"- {format_skip(*s)}" for s in skipped)
  return "\n".join(lines)


def _log(line):
  print(line, flush=True)


# ---------------------------------------------------------------------- arguments
def _check_arguments(mode, allocation, stats_dtype, relu_model, relu_passes,
                     bn_recalibration="auto"):
  if not any(bn_recalibration is v or (isinstance(v, str) and bn_recalibration == v)
             for v in BN_RECALIBRATION):
    raise ValueError(f"bn_recalibration must be True, False or 'auto', got "
                     f"{bn_recalibration!r}.")
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
  if allocation not in ALLOCATIONS:
    raise ValueError(f"allocation must be one of {ALLOCATIONS}, got {allocation!r}.")
  if stats_dtype not in stats_lib.STATS_DTYPES:
    raise ValueError(f"stats_dtype must be one of {stats_lib.STATS_DTYPES}, got "
                     f"{stats_dtype!r}.")
  if relu_model not in (True, False, "auto"):
    raise ValueError(f"relu_model must be True, False or 'auto', got {relu_model!r}.")
  if int(relu_passes) < 1:
    raise ValueError(f"relu_passes must be >= 1, got {relu_passes!r}.")


def _targets(units, sparsity):
  if isinstance(sparsity, dict):
    known = {u.inner.name for u in units} | {u.layer.name for u in units}
    unknown = set(sparsity) - known
    if unknown:
      raise ValueError(f"sparsity names unknown layers {sorted(unknown)}; prunable layers "
                       f"are {[u.name for u in units]}.")
    return [masks_lib.validate_sparsity(sparsity.get(u.name, sparsity.get(u.layer.name, 0.0)),
                                        f"sparsity[{u.name!r}]") for u in units]
  s = masks_lib.validate_sparsity(sparsity)
  return [s] * len(units)


def _clone(model):
  """The reference (dense) network: a copy of `model` with its weights."""
  try:
    clone = keras.models.clone_model(model)
  except Exception as e:  # pylint: disable=broad-except (a library layer's config)
    raise ValueError(
        f"Layer-wise pruning needs a copy of model {model.name!r} as its reference "
        f"network, and keras.models.clone_model cannot rebuild it from its layers' "
        f"configs ({type(e).__name__}: {' '.join(str(e).split())[:300]}). Prune such a "
        f"model with a training method (magnitude, ...) or fix that layer's "
        f"get_config().") from e
  clone.set_weights(model.get_weights())
  return clone


def _global_keep(units, all_stats, sparsity, solver, verbose, max_pruning_ratio=None):
  """Per-unit keep counts of the global allocation (embeddings keep their share), each
  at least its layer floor (`tfprune.masks.layer_floor`, `floor_keep_counts`)."""
  ls = [i for i, u in enumerate(units) if u.kind != "embedding" and all_stats[i] is not None]
  problems = {i: solvers.make_problem(units[i].name, all_stats[i], units[i].w0)[0]
              for i in ls}
  keep = {}
  for i, u in enumerate(units):
    if i not in problems:  # embeddings, and layers no calibration data reached
      keep[i] = int(masks_lib.keep_count(u.w0.size, sparsity))
  total = sum(p.size for p in problems.values())
  if problems:
    ks = solver.allocate([problems[i] for i in ls],
                         int(masks_lib.keep_count(total, sparsity)))
    if masks_lib.validate_max_pruning_ratio(max_pruning_ratio) != 1.0:
      floors = masks_lib.layer_floor(
          [np.abs(keras.ops.convert_to_numpy(geometry.kernel_variable(units[i].inner)))
           for i in ls], max_pruning_ratio)
      ks = masks_lib.floor_keep_counts(ks, floors)
    keep.update(dict(zip(ls, ks)))
  if verbose:
    alloc = ", ".join(f"{u.name}={1 - keep[i] / u.w0.size:.3f}" for i, u in enumerate(units))
    _log(f"global allocation of sparsity {sparsity}: {alloc}")
  return [keep[i] for i in range(len(units))]


# -------------------------------------------------------------------------- driver
def prune_layerwise(model, calibration_data, solver, sparsity=0.9, allocation="layer",
                    mode="cascade", layers=None, batch_size=256, max_samples=None,
                    relu_model=False, relu_passes=2, stats_dtype="float32",
                    refit_ridge=1e-8, verbose=True, strategy=None, batchnorm_weighting=True,
                    mean_correction=True, bn_recalibration="auto", max_pruning_ratio=None):
  """Prunes `model` IN PLACE kernel by kernel; returns the per-layer `Report`.

  Args:
    model: a trained Keras model (Sequential with an Input shape, or Functional), plain or
      wrapped by `tfprune.prune` (then kernels AND masks are set).
    calibration_data: unlabelled inputs: an array, `(x, y)` tuple or `tf.data.Dataset`
      (multi-input models: a dict by input name or a list, see `calibration_batches`).
    solver: a `LayerSolver` (with `refit=False` its weights are written as it returns
      them: no refit, no mean correction, `relu_model` must be False).
    sparsity: fraction of zeros, a float or `{layer_name: float}`.
    allocation: `layer` (every layer at `sparsity`) or `global` (`sparsity` over all the
      pruned layers; the solver's `allocate` splits it, each layer keeping at least its
      `tfprune.masks.layer_floor` count).
    max_pruning_ratio: the layer floor of `global` (see `tfprune.masks.layer_floor`;
      None: the path-floor count, 1.0: none).
    mode: `cascade` or `parallel` (see module docstring).
    layers: names of the layers to prune (default: every prunable kernel).
    batch_size: calibration batch size for arrays / unbatched datasets.
    max_samples: use at most this many calibration samples.
    relu_model: `False`, `True` or `"auto"` (layers whose activation is ReLU), see
      `tfprune.layerwise.relu`.
    relu_passes: MM passes for the ReLU model (each streams the calibration data once).
    stats_dtype: `float32` (per-batch products in float32, float64 sums) or `float64`.
    refit_ridge: relative ridge of the refit systems.
    verbose: print one line per pruned kernel (name, type, shape, sparsity, errors,
      time) and one `skip` line per kernel layer that is not pruned, with the reason.
      When False, skipped layers are reported by one warning instead.
    strategy: optional `tf.distribute` strategy: the statistics of top-level layers are
      accumulated per replica on its shard of the calibration data and all-reduced
      (`stats.distributed_stats`); nested kernels and the ReLU passes stay on one device.
    batchnorm_weighting: weight each output channel by the scale of the BatchNorm that
      follows the layer (see `weight_outputs_by_batchnorm`).
    mean_correction: after the refit, remove each output's mean residual on the
      calibration data (bias correction): from the layer's bias, or from the moving mean
      of the BatchNorm that follows a bias-free layer (MobileNet, ResNet). Not with the
      ReLU model, nor with a solver whose `refit` is False. Lowers the layer's error by
      exactly that mean's square.
    bn_recalibration: re-estimate the moving mean / variance of every BatchNormalization
      downstream of a pruned kernel on the calibration inputs run through the pruned
      network (`tfprune.layerwise.batchnorm`; label-free, no weight training): True,
      False or `"auto"` (default: True in `parallel` mode, False in `cascade` mode).
      In `parallel` mode every layer is fit on the dense network's inputs, so the
      drift of the activation statistics accumulates uncorrected and re-calibration
      after the solves removes it (MobileNetV2-0.35: 32.7% -> 64.7%, bench/
      RESULTS_layerwise.md). In `cascade` mode each layer is already fit on the pruned
      network's inputs: re-estimating afterwards changes the inputs later layers were
      fit to (measured worse), so True re-estimates the BatchNorm that directly follows
      a pruned layer right after it is written (the later layers are fit on the
      calibrated network), the others after the solves; it measured no gain over the
      mean correction, hence off by default. One pass over the calibration data per
      re-estimated layer (on one device, also with a `strategy`); a summary line when
      `verbose`. No effect without BatchNormalization.
  Returns:
    A `Report`: a list of dicts, one per pruned kernel (see `format_table`), with the
    skipped layers in `.skipped` and the BatchNorm re-calibration summary in
    `.batchnorm` (see `batchnorm.recalibrate_batchnorm`; None when not run).

  Raises:
    ValueError: bad arguments or calibration data, naming the layer / value at fault,
      before any long work.
  """
  _check_arguments(mode, allocation, stats_dtype, relu_model, relu_passes,
                   bn_recalibration)
  if relu_model is not False and not solver.refit:
    raise ValueError(f"relu_model={relu_model!r} needs a solver that refits; "
                     f"{type(solver).__name__} keeps its own weights (refit=False): use "
                     f"relu_model=False.")
  if bn_recalibration == "auto" and not isinstance(bn_recalibration, bool):
    bn_recalibration = mode == "parallel"
  batches = lambda: calibration.calibration_batches(calibration_data, model, batch_size,
                                                    max_samples)
  next(iter(batches()))  # checks the data (shape, dtype, empty) before any long work
  dataset = None
  if strategy is not None:
    dataset = calibration.calibration_dataset(calibration_data, model, batch_size,
                                              max_samples)
  original = _clone(model)
  units, skipped = find_units(model, original)
  units = _select(units, layers, skipped)
  if batchnorm_weighting:
    weight_outputs_by_batchnorm(units)
  if not units:
    raise ValueError(f"Model {model.name!r} has no layer the layer-wise engine can prune "
                     f"({', '.join(geometry.SUPPORTED_LAYERS)})"
                     + "".join(f"; {format_skip(*s)}" for s in skipped) + ".")
  if verbose:
    for s in skipped:
      _log(format_skip(*s))
  elif skipped:
    warnings.warn("Layer-wise pruning skips: " + "; ".join(format_skip(*s) for s in skipped))
  targets = _targets(units, sparsity)
  inputs = _Inputs(model, original, units, batches)
  stats = _Stats(model, original, inputs, stats_dtype, strategy, dataset)
  all_stats = stats.all(units) if (mode == "parallel" or allocation == "global") else None
  keeps = None
  if allocation == "global":
    keeps = _global_keep(units, all_stats, targets[0], solver, verbose, max_pruning_ratio)
  rows = Report(skipped=skipped)
  recal = batchnorm_lib.Recalibrator(model, batches) if bn_recalibration else None
  if recal is not None and not recal.entries:
    recal = None
  recalibrated = []
  for i, (unit, target) in enumerate(zip(units, targets)):
    cascade = mode == "cascade"
    if all_stats is not None and (not cascade or not inputs.pruned_any):
      s = all_stats[i]
    else:
      s = stats.one(unit, cascade)
    t0 = time.perf_counter()
    k = keeps[i] if keeps is not None else int(masks_lib.keep_count(unit.w0.size, target))
    if s is None:
      w, support, info = _solve_unreached(unit, k)
      if not verbose:
        warnings.warn(f"Layer-wise pruning: layer {unit.name!r}: {info['notes'][0]}.")
    elif unit.kind == "embedding":
      w, support, info = _solve_embedding(unit, s, k)
    else:
      relu_on = relu_lib.is_relu(unit.inner) if relu_model == "auto" else bool(relu_model)
      pairs = lambda unit=unit: inputs.pairs(unit, cascade)
      w, support, info = _solve_least_squares(unit, s, k, solver, refit_ridge, relu_on,
                                              pairs, relu_passes, mean_correction)
    shift = info.pop("shift")
    if unit.out_scale is not None:
      w = w / unit.out_scale[:, None, :]
      shift = None if shift is None else shift / unit.out_scale
      info["notes"].append("outputs weighted by the following BatchNorm's scale")
    err_shifted = info.pop("err_after_shift")
    if shift is not None:
      where = _correct_mean(unit, shift)
      if where:
        info["err_after_refit"] = err_shifted
        info["notes"].append(f"mean output shift removed in {where}")
    kernel = geometry.problems_to_kernel(unit.inner, w, unit.kernel_shape)
    mask = geometry.problems_to_kernel(unit.inner, support,
                                       unit.kernel_shape).astype(np.float32)
    _write(unit, kernel * mask, mask)
    inputs.pruned_any = True
    if recal is not None and mode == "cascade" and RECALIBRATE_IN_CASCADE:
      bn = None if unit.nested else _following_batchnorm(unit.layer)
      if bn is not None and bn.name not in recalibrated:
        recalibrated += recal.run([bn])
        info["notes"].append(f"{bn.name!r} re-calibrated")
    row = {"layer": unit.name, "type": type(unit.inner).__name__,
           "shape": "x".join(map(str, unit.kernel_shape)),
           "sparsity": 1.0 - float(mask.sum()) / mask.size, "target_sparsity": target,
           "seconds": time.perf_counter() - t0,
           "stats_seconds": stats.seconds.get(id(unit), 0.0), **info}
    rows.append(row)
    if verbose:
      _log(_format_row(row, i + 1, len(units)))
  if recal is not None:
    rest = [bn for bn in recal.downstream_of([u.layer for u in units])
            if bn.name not in recalibrated]
    recalibrated += recal.run(rest)
    if recalibrated:
      rows.batchnorm = recal.summary(recalibrated)
      if verbose:
        _log(recal.line(recalibrated))
  return rows
