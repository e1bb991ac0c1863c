"""BatchNorm re-calibration after pruning: label-free, no weight training.

Pruning a kernel changes the distribution of every activation downstream of it, while
inference-mode BatchNormalization keeps normalising with the dense network's moving mean
and variance. Re-estimating those statistics on unlabelled calibration inputs run
through the PRUNED network (AdaBN, Li et al. 2016; "BN tuning" / statistics correction
after post-training compression: Hubara et al., ICML 2021; Frantar & Alistarh,
NeurIPS 2022, OBC) removes that drift; see docs/algorithms.md section 3.

`recalibrate_batchnorm` sets, for each BatchNormalization downstream of a changed layer,

    moving_mean = mean(x),   moving_variance = mean((x - mean(x))^2)   (per channel),

with `x` the layer's input over all calibration samples (and spatial positions) in the
inference-mode pruned network, the BatchNorm layers before it ALREADY re-calibrated:
the statistics are exactly those the calibrated network sees, not a training-mode
approximation. A layer's statistics depend on the BatchNorm layers upstream of it, so
the layers are done in graph order, one pass over the calibration data per step; in
one pass, every pending layer with no pending BatchNorm upstream is finalised (one
layer per pass on a chain such as MobileNetV2). Sums are accumulated in float64 around
the old moving mean (no cancellation in the variance).
"""
import time

import keras
import numpy as np
import tensorflow as tf

from tfprune import _layers
from tfprune.layerwise import calibration
from tfprune.layerwise import stats as stats_lib

BUDGET_BYTES = 256 << 20  # inputs of the pending layers held per chunk of a batch


def _is_bn(layer):
  return isinstance(layer, keras.layers.BatchNormalization)


def batchnorm_layers(model):
  """`[(bn, top, nested)]`: every BatchNormalization of `model` in graph order.

  `top` is the top-level layer of `model` that holds `bn` (`bn` itself when it is a
  node of `model`'s graph); `nested` is True when `bn`'s input must be read by a hook
  (inside a nested model or wrapper, or called more than once).
  """
  found = []

  def visit(layer, top, nested):
    if _is_bn(layer):
      found.append((layer, top, nested or _layers.call_count(layer) != 1))
      return
    for sub in _layers.children(layer):
      visit(sub, top, True)

  for layer in model.layers:
    if not isinstance(layer, keras.layers.InputLayer):
      visit(layer, layer, False)
  return found


def _parents(layer):
  out = []
  for node in getattr(layer, "_inbound_nodes", []) or []:
    for parent in node.parent_nodes:
      if parent.operation is not None:
        out.append(parent.operation)
  return out


def _consumers(layer):
  return [n.operation for n in getattr(layer, "_outbound_nodes", []) or []
          if n.operation is not None]


def downstream(model, layers):
  """Ids of the top-level layers of `model` whose output depends on `layers` (included)."""
  tops = {id(l): l for l in model.layers}
  seen, stack = set(), [l for l in layers if id(l) in tops]
  while stack:
    layer = stack.pop()
    if id(layer) in seen:
      continue
    seen.add(id(layer))
    stack.extend(c for c in _consumers(layer) if id(c) in tops)
  return seen


def _ancestors(layer, cache):
  """Ids of the top-level layers upstream of `layer` in its model's graph."""
  if id(layer) in cache:
    return cache[id(layer)]
  cache[id(layer)] = set()  # cycles cannot occur; guards recursion on odd graphs
  out = set()
  for parent in _parents(layer):
    out.add(id(parent))
    out |= _ancestors(parent, cache)
  cache[id(layer)] = out
  return out


class _Sums:
  """Running float64 per-channel sums of `x - shift` and `(x - shift)^2`."""

  def __init__(self, bn):
    self.bn = bn
    self.shift = keras.ops.convert_to_numpy(bn.moving_mean).astype(np.float64).reshape(-1)
    self.s1 = np.zeros_like(self.shift)
    self.s2 = np.zeros_like(self.shift)
    self.n = 0.0

  def add(self, x):
    x = tf.convert_to_tensor(x)
    axis = self.bn.axis % len(x.shape)
    perm = [a for a in range(len(x.shape)) if a != axis] + [axis]
    flat = tf.reshape(tf.transpose(tf.cast(x, tf.float64), perm), [-1, x.shape[axis]])
    flat = flat - self.shift
    self.s1 += tf.reduce_sum(flat, 0).numpy()
    self.s2 += tf.reduce_sum(flat * flat, 0).numpy()
    self.n += float(flat.shape[0])

  def moments(self):
    if self.n == 0:
      raise ValueError(f"No calibration data reached BatchNormalization {self.bn.name!r}.")
    d = self.s1 / self.n
    return self.shift + d, np.maximum(self.s2 / self.n - d * d, 0.0)


class _Reader:
  """The inputs of pending BatchNorm layers, per calibration batch (chunked)."""

  def __init__(self, model, entries):
    self.model = model
    self.top = [bn for bn, _, nested in entries if not nested]
    self.index = {id(bn): i for i, bn in enumerate(self.top)}
    self._fn = None
    self._chunk = None

  def _compiled(self):
    if self._fn is None:
      ext = calibration.extractor(self.model, self.top)
      signature = calibration.signature(self.model)
      self._fn = tf.function(lambda x: ext(x, training=False), input_signature=[signature],
                             reduce_retracing=True)
      per_sample = sum(4 * int(np.prod([d or 1 for d in bn.input.shape[1:]]))
                       for bn in self.top)
      self._chunk = max(1, BUDGET_BYTES // max(per_sample, 1))
    return self._fn, self._chunk

  def read(self, x, pending):
    """`{id(bn): [input tensors]}` for the `pending` BatchNorm layers on batch `x`."""
    got = {id(bn): [] for bn in pending}
    top = [bn for bn in pending if id(bn) in self.index]
    nested = [bn for bn in pending if id(bn) not in self.index]
    if top:
      fn, chunk = self._compiled()
      xt = calibration.cast(x, fn.input_signature[0])
      for start in range(0, calibration.batch_len(xt), chunk):
        outs = fn(calibration.take(xt, start, start + chunk))
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for bn in top:
          got[id(bn)].append(outs[self.index[id(bn)]])
    if nested:
      with stats_lib.capture_inputs(nested) as seen:
        self.model(x, training=False)
      for bn in nested:
        got[id(bn)].extend(seen[id(bn)])
    return got


class Recalibrator:
  """Re-estimates the moving statistics of chosen BatchNorm layers of one model.

  One compiled function returns the inputs of every BatchNorm node of the model (traced
  once; pruning and re-calibration only assign variables, so it stays valid), nested
  ones are read by hooks. `run(layers)` re-estimates `layers` in graph order.
  """

  def __init__(self, model, batches):
    self.model, self.batches = model, batches
    self.entries = batchnorm_layers(model)
    self.reader = _Reader(model, self.entries)
    self.passes = 0
    self.samples = 0
    self.seconds = 0.0
    self.ratios = {}  # bn name -> median new / old moving variance
    cache = {}
    self.deps = {}
    for i, (bn, top, nested) in enumerate(self.entries):
      # The BatchNorm layers this one's input depends on: for a graph node, those
      # upstream of it; for a nested one (or no graph), conservatively all before it.
      if nested or not _layers.call_count(top):
        self.deps[id(bn)] = {id(e[0]) for e in self.entries[:i]}
      else:
        up = _ancestors(top, cache)
        self.deps[id(bn)] = {id(e[0]) for e in self.entries[:i] if id(e[1]) in up}

  def downstream_of(self, changed):
    """The BatchNorm layers whose input depends on the top-level layers `changed`."""
    hit = downstream(self.model, list(changed))
    return [bn for bn, top, _ in self.entries if id(top) in hit]

  def run(self, layers):
    """Re-estimates `layers` (BatchNorm layers of the model); returns their names."""
    t0 = time.perf_counter()
    wanted = {id(l) for l in layers}
    pending = [bn for bn, _, _ in self.entries if id(bn) in wanted]
    done = [bn.name for bn in pending]
    while pending:
      sums = {id(bn): _Sums(bn) for bn in pending}
      samples = 0
      for x in self.batches():
        samples += calibration.batch_len(x)
        for key, xs in self.reader.read(x, pending).items():
          for t in xs:
            sums[key].add(t)
      self.passes += 1
      self.samples = samples
      pending_ids = {id(bn) for bn in pending}
      ready = [bn for bn in pending if not self.deps[id(bn)] & pending_ids]
      for bn in ready:
        mean, var = sums[id(bn)].moments()
        old = keras.ops.convert_to_numpy(bn.moving_variance).astype(np.float64).reshape(-1)
        dtype = keras.backend.standardize_dtype(bn.moving_mean.dtype)
        bn.moving_mean.assign(mean.reshape(bn.moving_mean.shape).astype(dtype))
        bn.moving_variance.assign(var.reshape(bn.moving_variance.shape).astype(dtype))
        self.ratios[bn.name] = float(np.median(var / np.maximum(old, 1e-30)))
      pending = [bn for bn in pending if all(bn is not r for r in ready)]
    self.seconds += time.perf_counter() - t0
    return done

  def summary(self, names):
    return {"layers": list(names), "passes": self.passes, "seconds": self.seconds,
            "samples": self.samples,
            "variance_ratio": [self.ratios[n] for n in names]}

  def line(self, names):
    """The progress line of a re-calibration of `names`."""
    r = np.array([self.ratios[n] for n in names]) if names else np.ones(1)
    return (f"batchnorm recalibration: {len(names)} BatchNormalization layers on "
            f"{self.samples} calibration samples, {self.passes} passes, "
            f"{self.seconds:.1f}s (new / old moving variance: median {np.median(r):.3f}, "
            f"range {r.min():.3f}-{r.max():.3f})")


def recalibrate_batchnorm(model, calibration_data, changed=None, batch_size=256,
                          max_samples=None, verbose=True):
  """Re-estimates BatchNorm moving statistics on calibration inputs, in place.

  Args:
    model: a Keras model (Functional or Sequential with an Input shape; plain or wrapped
      by `tfprune.prune`), typically just pruned.
    calibration_data: unlabelled inputs: an array, `(x, y)` tuple or `tf.data.Dataset`
      (the same forms and checks as `prune_layerwise`).
    changed: top-level layers whose weights changed (the pruned ones): only the
      BatchNorm layers downstream of them are re-estimated, the others keep their
      statistics. None: every BatchNormalization of the model.
    batch_size: calibration batch size for arrays / unbatched datasets.
    max_samples: use at most this many calibration samples.
    verbose: print one summary line.

  Returns:
    A dict: `layers` (names re-estimated, in graph order), `passes`, `seconds`,
    `samples`, `variance_ratio` (per layer, median over channels of new / old moving
    variance).

  Raises:
    ValueError: bad calibration data (before any pass), or no data reached a layer.
  """
  batches = lambda: calibration.calibration_batches(calibration_data, model, batch_size,
                                                    max_samples)
  next(iter(batches()))  # checks the data before any pass
  rec = Recalibrator(model, batches)
  layers = ([bn for bn, _, _ in rec.entries] if changed is None
            else rec.downstream_of(changed))
  names = rec.run(layers)
  if verbose and names:
    print(rec.line(names), flush=True)
  return rec.summary(names)
