"""keras_hub conformance: every keras_hub backbone class x tfprune's steps, checked
independently of tfprune.

Run (from the repo root):
  nice -n 10 .venv/bin/python bench/hub_conformance.py [--models=BertBackbone,...]
      [--steps=global,liveness,...] [--resume] [--redo=...] [--timeout=300]
      [--small_only=logsum,int8 --small_params=200000] [--output=bench/RESULTS_hub.md]
      [--rows_json=...] [--merge=other_rows.json,...] [--report_only]

Every `keras_hub.models.*Backbone` class is listed. Those with a tiny offline config in
tests/hub_models.py (the table shared with tests/keras_hub_test.py: random weights, no
preset, nothing downloaded) run in their own subprocess with a timeout, so a crash or hang
costs one row; each finished model is appended to --rows_json (--resume skips the
(model, step) pairs already there; --merge adds the rows of other processes' files).

Steps, per model (x: random inputs in the backbone's own structure, dict of
token_ids / padding_mask / images / ...; y: random targets of the output structure):
  global      prune magnitude, scope=global, 0.8 -> fit 2 steps (MSE on every float
              output, PruningCallback) -> strip. Checked: strip(pruned)(x) equals the
              masked pruned model's output.
  liveness    on the stripped global model: every float output that depends on the input
              in the original model still does (two different inputs, outputs different
              by more than 1e-5 of their peak: float32 rounding does not count),
              and no kernel / embedding that was nonzero before is 100% zero.
  structured  prune magnitude, scope=structured, 0.5 -> fit 2 steps -> strip(masked) vs
              strip(shrink=True): max |difference| over every output (<= 1e-4 relative).
  saveload    the pruned (wrapped) and the stripped global model through .keras save /
              load_model: outputs equal (<= 1e-5).
  logsum      prune logsum 0.5 (layer-wise) -> method.apply(pruned, calibration x) ->
              strip: liveness as above, and sparsity >= 0.3 over the kernels (rank >= 2)
              that tfprune's warnings ("stay dense": `unpruned_weights`; the layer-wise
              "skips") do not name.
  layer       (not in the default run; tests/keras_hub_test.py) prune magnitude,
              scope=layer, 0.5 -> fit 2 steps -> strip: liveness and a sparsity in
              [0.3, 0.7].
  float / dynamic / int8
              tfprune.export.convert(stripped global model, quantize=...,
              representative_data=x: the calibration and verification inputs, and what
              fixes None sequence dimensions); the file is then run independently through
              ai_edge_litert's Interpreter and compared with the Keras model: relative RMS
              error (RMS of the difference over the RMS of the Keras output around its
              mean, or 1e-3 of its peak if larger) <= 1e-3 float, 0.1 dynamic, 0.3 int8,
              and the file's output must depend on its input.
Statuses: PASS; refused (a ValueError / NotImplementedError raised by tfprune's own code:
the message's first line is the reason; or the exporter's verification refusing a
file whose error the dense conversion of the same graph shows too, i.e. the converter's
8-bit rounding, after float islands for int8, or its float graph); FAIL (any other
exception, or any other tfprune verification error); SILENT (tfprune returned without error but an independent check
above found the result wrong); upstream (the check fails on the unpruned keras_hub model
too, e.g. a save / load that keras_hub itself does not round-trip); skip (the step it
needs failed).
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # pylint: disable=g-import-not-at-top

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
sys.path.insert(0, os.path.join(_ROOT, "tests"))  # tests/hub_models.py: the config table

import hub_models  # pylint: disable=g-import-not-at-top,wrong-import-position

STEPS = ("global", "liveness", "structured", "saveload", "logsum", "float", "dynamic",
         "int8")
EXTRA_STEPS = ("layer",)  # not in the default run (tests/keras_hub_test.py uses it)
N_TRAIN = 8
TOL = {"float": 1e-3, "dynamic": 0.1, "int8": 0.3}
SMALL_PARAMS = 50_000  # --small_only steps run only on models below this size


class Silent(Exception):
  """tfprune returned without error, but an independent check found the result wrong."""


class Harness(Exception):
  """This script could not check the result (not a tfprune verdict)."""


class Upstream(Exception):
  """The check fails on the unpruned keras_hub model as well: not tfprune's doing."""


def first_line(e):
  text = f"{type(e).__name__}: {e}".strip().splitlines()
  line = text[0] if text else type(e).__name__
  if line.endswith(":") and len(text) > 1:  # keras "Exception encountered ...:" headers
    line += " " + " ".join(t.strip() for t in text[1:4] if t.strip())
  return line[:240].replace("|", "/")


def classify(e):
  """`(status, reason)` of an exception raised by a step."""
  if isinstance(e, Silent):
    return "SILENT", str(e)[:300].replace("|", "/")
  if isinstance(e, Harness):
    return "harness", str(e)[:300].replace("|", "/")
  if isinstance(e, Upstream):
    return "upstream", str(e)[:300].replace("|", "/")
  tb = traceback.extract_tb(e.__traceback__)
  own = bool(tb) and f"{os.sep}tfprune{os.sep}" in tb[-1].filename
  verification = type(e).__name__ == "VerificationError"
  if own and isinstance(e, (ValueError, NotImplementedError)) and not verification:
    return "refused", first_line(e)
  if verification and getattr(e, "conversion_at_fault", False):
    # The exporter refused to write a file that misses Keras, the dense conversion of the
    # same graph missing as much: the converter's 8-bit rounding (float islands tried for
    # int8) or its float graph, not tfprune's encoding.
    misses = [l.strip() for l in str(e).splitlines() if "max abs diff" in l]
    miss = (misses or [""])[-1]  # the last file's (after float islands for int8)
    what = ("quantization" if "converter's quantization" in str(e) else
            "float graph (it computes differently from Keras)")
    return "refused", (f"file refused by the exporter's verification: the converter's own "
                       f"{what} misses Keras (the dense conversion too): {miss}"
                       )[:240].replace("|", "/")
  where = f" (at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno})" if tb else ""
  return "FAIL", first_line(e) + where


# ---------------------------------------------------------------------------- checks

def outputs(model, x):
  return hub_models.flat_outputs(model(x, training=False))


def float_idx(ys):
  return [i for i, y in enumerate(ys) if np.issubdtype(y.dtype, np.floating)]


def max_diff(a, b):
  return max((float(np.max(np.abs(u.astype(np.float64) - v))) if u.size else 0.0)
             for u, v in zip(a, b))


def peak(ys):
  return max(float(np.max(np.abs(y))) if y.size else 0.0 for y in ys)


def dependent_outputs(model, xa, xb):
  """Indices of float outputs that differ between inputs xa and xb by more than float32
  rounding of their peak (D-FINE's near-uniform attention maps differ by 1e-7 at peak
  0.25; an untrained MobileNet's outputs are all below 1e-3)."""
  ya, yb = outputs(model, xa), outputs(model, xb)
  return {i for i in float_idx(ya) if np.max(np.abs(ya[i] - yb[i])) > 1e-5 * peak([ya[i]])}


_KERNEL_NAMES = ("kernel", "depthwise_kernel", "pointwise_kernel", "embeddings",
                 "_kernel", "bias_kernel")


def dead_kernels(before, after):
  """Kernel-like weights nonzero in `before` and 100% zero in `after`, paired in order
  (auto-named sublayers get new names in a copy) or, if the lists differ, by path."""
  def kernels(m):
    return [w for w in m.weights if w.path.split("/")[-1].endswith(_KERNEL_NAMES)]

  b, a = kernels(before), kernels(after)
  if len(a) == len(b) and all(u.shape == v.shape for u, v in zip(a, b)):
    pairs = zip(b, a)
  else:
    by_path = {w.path: w for w in b}
    pairs = [(by_path[w.path], w) for w in a if w.path in by_path]
  return [w.path for w0, w in pairs
          if np.any(np.asarray(w0)) and not np.any(np.asarray(w))]


def check_alive(original, model, xa, xb, what):
  live0 = dependent_outputs(original, xa, xb)
  lost = live0 - dependent_outputs(model, xa, xb)
  dead = dead_kernels(original, model)
  if lost or dead:
    raise Silent(f"{what}: " + (f"output(s) {sorted(lost)} no longer depend on the input"
                                if lost else "")
                 + ("; " if lost and dead else "")
                 + (f"{len(dead)} kernel(s) 100% zero: {', '.join(dead[:4])}" if dead
                    else ""))
  return dict(live_outputs=len(live0))


class NoLoss(np.ndarray):
  """A placeholder target (zeros, batch first) for an output trained without a loss."""


def targets(model, x, seed=3):
  """Random float targets of the outputs' shapes; `NoLoss` zeros (no loss) for integer
  outputs (Moonshine's attention mask) and for outputs that do not lead with the batch
  (SAM's batch-1 positional embeddings, D-FINE's per-decoder-layer stacks): Keras wants a
  target per output, and fit splits every target into batches."""
  rng = np.random.default_rng(seed)
  y = model(x, training=False)
  import keras  # pylint: disable=g-import-not-at-top
  n = len(keras.tree.flatten(x)[0])

  def one(v):
    v = np.asarray(v)
    if not np.issubdtype(v.dtype, np.floating) or not v.ndim or v.shape[0] != n:
      return np.zeros((n,) + v.shape[1:], np.float32).view(NoLoss)
    return rng.standard_normal(v.shape).astype(np.float32)

  if isinstance(y, dict):  # (D-FINE nests tuples of per-layer tensors in its dict)
    return {k: keras.tree.map_structure(one, v) for k, v in y.items()}
  if isinstance(y, (list, tuple)):
    return [keras.tree.map_structure(one, v) for v in y]
  return one(y)


def fit(pruned, x, y, eager=False):
  import keras  # pylint: disable=g-import-not-at-top
  import tfprune  # pylint: disable=g-import-not-at-top
  method = tfprune.get_method(pruned)

  def loss_for(v):
    return None if v is None or isinstance(v, NoLoss) else "mse"

  def losses(v):  # a nested output: one loss per leaf
    return loss_for(v) if not isinstance(v, (list, tuple)) else type(v)(
        keras.tree.map_structure(loss_for, list(v)))

  loss = ({k: losses(v) for k, v in y.items()} if isinstance(y, dict) else
          [losses(v) for v in y] if isinstance(y, list) else "mse")
  if isinstance(y, dict):
    y = {k: v for k, v in y.items() if v is not None}
    loss = {k: v for k, v in loss.items() if v is not None}
  pruned.compile(optimizer=method.prepare_optimizer(keras.optimizers.SGD(1e-3)), loss=loss,
                 metrics=[], run_eagerly=eager)  # (keras_hub tasks add accuracy on "auto")
  # two steps of the whole batch (CLIP-style outputs are batch x batch)
  pruned.fit(x, y, epochs=2, batch_size=N_TRAIN, verbose=0,
             callbacks=[tfprune.PruningCallback()])


def tflite_run(model_bytes, keras_model, x):
  """Runs a .tflite file on every sample of `x` with ai_edge_litert; the outputs as a
  list of float arrays (batch first), matched to nothing yet."""
  from ai_edge_litert import interpreter as litert  # pylint: disable=g-import-not-at-top
  it = litert.Interpreter(model_content=model_bytes)
  ins = it.get_input_details()
  names = [t.name.split(":")[0] for t in keras_model.inputs]
  xs = (x if isinstance(x, dict) else dict(zip(names, x if isinstance(x, list) else [x])))

  def pick(detail):
    if len(xs) == 1:
      return next(iter(xs.values()))
    cands = [k for k in xs if detail["name"].endswith(k) or f"_{k}:" in detail["name"]
             or detail["name"].split(":")[0].endswith(k)]
    if not cands:  # the longest match: "decoder_token_ids" over "token_ids"
      raise Harness(f"cannot map tflite input {detail['name']!r} to {list(xs)}")
    return xs[max(cands, key=len)]

  n = len(next(iter(xs.values())))
  per_out = None
  # A file exported at a fixed batch (outputs that mix samples, e.g. CLIP's logits:
  # ExportResult.fixed_batch) takes exactly that many samples per invoke.
  sig = ins[0].get("shape_signature")
  step = 1 if sig is None or not len(sig) or sig[0] == -1 else int(ins[0]["shape"][0])
  for s in range(0, n, step):
    for d in ins:
      v = pick(d)[s:s + step]
      if tuple(d["shape"]) != v.shape:
        it.resize_tensor_input(d["index"], v.shape)
    it.allocate_tensors()
    for d in it.get_input_details():
      v = pick(d)[s:s + step]
      scale, zp = d["quantization"]
      if d["dtype"] in (np.int8, np.uint8) and np.issubdtype(v.dtype, np.floating) and scale:
        v = np.clip(np.round(v / scale + zp), np.iinfo(d["dtype"]).min,
                    np.iinfo(d["dtype"]).max)
      it.set_tensor(d["index"], v.astype(d["dtype"]))
    it.invoke()
    outs = []
    for d in it.get_output_details():
      o = it.get_tensor(d["index"]).astype(np.float64)
      scale, zp = d["quantization"]
      if d["dtype"] in (np.int8, np.uint8) and scale:
        o = (o - zp) * scale
      outs.append(o)
    per_out = [[] for _ in outs] if per_out is None else per_out
    for i, o in enumerate(outs):
      per_out[i].append(o)
  return [np.concatenate(p, axis=0) for p in per_out]


def rel_rms(a, b):
  """RMS of a - b over the spread of b (its RMS around its mean, at least 1e-3 of its
  peak: BASNet's near-constant sigmoid maps vary by 8e-5 at 0.5, less than float32
  rounding differences between kernels reach)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  spread = max(np.sqrt(np.mean((b - b.mean()) ** 2)), 1e-3 * np.max(np.abs(b))) + 1e-12
  return float(np.sqrt(np.mean((a - b) ** 2)) / spread)


def check_file(model_bytes, model, x, xb, kind):
  """Independent check of an exported file against Keras; returns details."""
  ks = outputs(model, x)
  ts = tflite_run(model_bytes, model, x)
  errs = []
  for i in float_idx(ks):
    same = [t for t in ts if t.shape == ks[i].shape]
    if not same:
      raise Silent(f"{kind}: Keras output {i} {ks[i].shape} has no same-shaped output in "
                   f"the file ({[t.shape for t in ts]})")
    errs.append(min(rel_rms(t, ks[i]) for t in same))
  err = max(errs) if errs else 0.0
  if err > TOL[kind]:
    raise Silent(f"{kind}: file disagrees with Keras: relative RMS error {err:.3g} > "
                 f"{TOL[kind]}")
  tb = tflite_run(model_bytes, model, xb)
  if all(np.array_equal(a, b) for a, b in zip(ts, tb)):
    raise Silent(f"{kind}: the exported file's output does not depend on its input")
  return dict(rel_rms=err, bytes=len(model_bytes))


# ---------------------------------------------------------------------------- steps

def run_model(name, steps, small_only=(), small_params=SMALL_PARAMS, eager=False):
  """Runs `steps` on backbone `name`; returns {step: row}.

  `eager`: train with run_eagerly=True (faster on tiny models: no tracing).
  """
  import keras  # pylint: disable=g-import-not-at-top
  import tfprune  # pylint: disable=g-import-not-at-top
  from tfprune import export  # pylint: disable=g-import-not-at-top
  res = {}
  keras.utils.set_random_seed(0)
  t0 = time.time()
  try:
    model = hub_models.build(name)
    x = hub_models.data(model, N_TRAIN, seed=0)
    xb = hub_models.data(model, N_TRAIN, seed=1)
    y = targets(model, x)
  except Exception as e:  # pylint: disable=broad-except
    return {"build": dict(status="not buildable", reason=first_line(e))}
  params = model.count_params()
  res["build"] = dict(status="PASS", params=params, seconds=time.time() - t0,
                      inputs=sorted(model.input) if isinstance(model.input, dict)
                      else len(model.inputs))
  state = {}

  def step(key, fn, needs=()):
    if key not in steps:
      return
    missing = [n for n in needs if n not in state]
    if missing:
      res[key] = dict(status="skip", reason=f"needs {'/'.join(missing)}, which did not "
                                            f"pass")
      return
    if key in small_only and params > small_params:
      res[key] = dict(status="skip", reason=f"not run: {params} params > {small_params} "
                                            f"(--small_only)")
      return
    t = time.time()
    keras.utils.set_random_seed(0)
    try:
      details = fn() or {}
      res[key] = dict(status="PASS", **details)
    except Exception as e:  # pylint: disable=broad-except
      status, reason = classify(e)
      res[key] = dict(status=status, reason=reason,
                      trace="".join(traceback.format_exception(e))[-1500:])
    res[key]["seconds"] = round(time.time() - t, 1)
    print(f"  {name} {key}: {res[key]['status']} {res[key].get('reason', '')}", flush=True)

  def do_global():
    pruned = tfprune.prune(model, "magnitude", target_sparsity=0.8, scope="global")
    d0 = max_diff(outputs(pruned, x), outputs(model, x))
    if d0 > 1e-4 * (1 + peak(outputs(model, x))):
      raise Silent(f"prune: the wrapped model differs from the original before training "
                   f"(max diff {d0:.3g})")
    fit(pruned, x, y, eager)
    stripped = tfprune.strip(pruned)
    masked = outputs(pruned, x)
    d = max_diff(outputs(stripped, x), masked)
    if d > 1e-4 * (1 + peak(masked)):
      raise Silent(f"strip: stripped model differs from the masked one (max diff {d:.3g})")
    rows = tfprune.sparsity_report(stripped, print_table=False)
    state["global"] = (pruned, stripped)
    return dict(sparsity=round(float(tfprune.model.total_sparsity(rows)), 3),
                strip_diff=d)

  def do_liveness():
    return check_alive(model, state["global"][1], x, xb, "global 0.8")

  def do_structured():
    pruned = tfprune.prune(model, "magnitude", target_sparsity=0.5, scope="structured")
    fit(pruned, x, y, eager)
    masked = tfprune.strip(pruned)
    shrunk = tfprune.strip(pruned, shrink=True)
    ym, ys = outputs(masked, x), outputs(shrunk, x)
    if [a.shape for a in ym] != [a.shape for a in ys]:
      raise Silent(f"shrunk output shapes {[a.shape for a in ys]} != masked "
                   f"{[a.shape for a in ym]}")
    d = max_diff(ys, ym)
    if d > 1e-4 * (1 + peak(ym)):
      raise Silent(f"strip(shrink=True) differs from strip(masked): max diff {d:.3g} "
                   f"(output peak {peak(ym):.3g})")
    return dict(shrink_diff=d, params_masked=masked.count_params(),
                params_shrunk=shrunk.count_params())

  def do_layer():
    pruned = tfprune.prune(model, "magnitude", target_sparsity=0.5, scope="layer")
    fit(pruned, x, y, eager)
    stripped = tfprune.strip(pruned)
    sp = float(tfprune.model.total_sparsity(
        tfprune.sparsity_report(stripped, print_table=False)))
    alive = check_alive(model, stripped, x, xb, "layer 0.5")
    if not 0.3 <= sp <= 0.7:
      raise Silent(f"layer scope 0.5 returned a model at sparsity {sp:.3f}")
    return dict(alive, sparsity=round(sp, 3))

  def do_saveload():
    pruned, stripped = state["global"]
    out = {}

    def plain_roundtrip(tmp):
      """The same save / load of the unpruned model, trained the same way: (the exception
      it raises or None, max |loaded - saved|, its tolerance)."""
      keras.utils.set_random_seed(0)
      plain = hub_models.build(name)
      plain.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse")
      plain.fit(x, y, epochs=2, batch_size=N_TRAIN, verbose=0)
      path = os.path.join(tmp, "plain.keras")
      try:
        plain.save(path)
        loaded = keras.models.load_model(path)
      except Exception as e:  # pylint: disable=broad-except
        return e, None, None
      ys = outputs(plain, x)
      return None, max_diff(outputs(loaded, x), ys), 1e-5 * (1 + peak(ys))

    with tempfile.TemporaryDirectory() as tmp:
      for label, m in (("pruned", pruned), ("stripped", stripped)):
        path = os.path.join(tmp, f"{label}.keras")
        try:
          m.save(path)
          loaded = keras.models.load_model(path)
        except Exception as e:  # pylint: disable=broad-except
          e0, _, _ = plain_roundtrip(tmp)
          if e0 is not None and type(e0) is type(e):
            raise Upstream(f"{label} model: {first_line(e)[:130]}; the unpruned keras_hub "
                           f"model fails the same way ({first_line(e0)[:110]})") from e
          raise
        d = max_diff(outputs(loaded, x), outputs(m, x))
        if d > 1e-5 * (1 + peak(outputs(m, x))):
          e0, d0, tol0 = plain_roundtrip(tmp)
          if e0 is not None or d0 > tol0:
            raise Upstream(f"{label} model: loaded != saved (max diff {d:.3g}); the "
                           f"unpruned keras_hub model trained the same way "
                           + (f"fails to save / load ({first_line(e0)})" if e0 is not None
                              else f"differs too (max diff {d0:.3g})"))
          raise Silent(f"{label} model: loaded != saved (max diff {d:.3g})")
        out[f"{label}_diff"] = d
    return out

  def do_logsum():
    pruned = tfprune.prune(model, "logsum", target_sparsity=0.5, calibration_samples=16,
                           batch_size=16)
    table = tfprune.get_method(pruned).apply(pruned, hub_models.data(model, 16, seed=2),
                                             verbose=False)
    stripped = tfprune.strip(pruned)
    # Over the kernels (rank >= 2) that tfprune did not declare dense with a reason: in
    # its `unpruned_weights` warning (DINOV2's 4097-row position table, a raw variable)
    # or in the layer-wise engine's "skips" warning (`table.skipped`: MoE experts).
    # (matched by their last two path parts: auto-numbered sublayers renumber in a copy)
    declared = {"/".join(p.split("/")[-2:]) for p, _ in tfprune.model.unpruned_weights(pruned)}
    skipped = {name for name, _, _ in getattr(table, "skipped", ())}
    kernels = [np.asarray(w) for w in stripped.trainable_weights
               if len(w.shape) >= 2 and "/".join(w.path.split("/")[-2:]) not in declared
               and not set(w.path.split("/")) & skipped]
    sp = 1.0 - sum(int(np.count_nonzero(k)) for k in kernels) / max(
        sum(k.size for k in kernels), 1)
    alive = check_alive(model, stripped, x, xb, "logsum 0.5")
    if sp < 0.3:
      raise Silent(f"logsum 0.5 returned a model at sparsity {sp:.3f} over the kernels it "
                   f"did not declare dense")
    return dict(alive, sparsity=round(sp, 3), declared_dense=len(declared) + len(skipped))

  def do_export(kind):
    def fn():
      stripped = state["global"][1]
      r = export.convert(stripped, quantize=None if kind == "float" else kind,
                         representative_data=x)
      return dict(check_file(r.flatbuffer, stripped, x, xb, kind),
                  notes=" ".join(r.notes)[:200])
    return fn

  step("layer", do_layer)
  step("global", do_global)
  step("liveness", do_liveness, needs=("global",))
  step("structured", do_structured)
  step("saveload", do_saveload, needs=("global",))
  step("logsum", do_logsum)
  for kind in ("float", "dynamic", "int8"):
    step(kind, do_export(kind), needs=("global",))
  return res


# ---------------------------------------------------------------------------- driver

def child(args):
  steps = [s for s in args.steps.split(",") if s]
  small = [s for s in args.small_only.split(",") if s]
  res = run_model(args.child, steps, small, args.small_params)
  with open(args.child_out, "w") as f:
    json.dump(res, f)


def finished_steps(stdout, name, steps, unfinished):
  """The row of a child that did not write one: the steps its output says finished, the
  first other one `unfinished`, the rest skipped."""
  row, first = {"build": dict(status="PASS")}, True
  for s in steps:
    tag = f" {name} {s}: "
    hit = [l for l in stdout.splitlines() if tag in l]
    if hit:
      st, _, why = hit[-1].split(tag, 1)[1].partition(" ")
      row[s] = dict(status=st, reason=why)
    elif first:
      row[s], first = dict(unfinished), False
    else:
      row[s] = dict(status="skip", reason="not reached (the process ended in an earlier "
                                          "step)")
  return row


CELL = {"PASS": "PASS", "refused": "refused", "FAIL": "**FAIL**", "SILENT": "**SILENT**",
        "upstream": "upstream", "harness": "harness error",
        "skip": "skip", "timeout": "**FAIL** (timeout)"}


def write_md(path, rows, all_names, steps, cmd, done, commands=(), notes=()):
  """Writes the results table; `commands`: every command whose rows are in `rows`."""
  import keras_hub  # pylint: disable=g-import-not-at-top
  from tfprune import _io  # pylint: disable=g-import-not-at-top
  counts = {}
  for r in rows.values():
    for s in steps:
      st = r.get(s, {}).get("status")
      if st:
        counts[st] = counts.get(st, 0) + 1
  silent = counts.get("SILENT", 0)
  not_run = sum(1 for r in rows.values() if r.get("build", {}).get("status") == "PASS"
                for s in steps if s not in r)
  built = [n for n in all_names if rows.get(n, {}).get("build", {}).get("status") == "PASS"]
  unbuilt = [n for n in all_names if n in rows and n not in built]
  missing = [n for n in all_names if n not in rows]
  full_pass = [n for n in built if all(rows[n].get(s, {}).get("status") == "PASS"
                                       for s in steps)]
  lines = [
      "# keras_hub conformance", "",
      *([f"Commands (rows of every sitting, merged by --resume / --merge):", "",
         *[f"- `{c}`" for c in commands], ""] if commands else [f"Command: `{cmd}`", ""]),
      f"Machine: {platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs, shared), "
      f"Python {platform.python_version()}, keras_hub {keras_hub.__version__}. Date (UTC): "
      f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}"
      f"{'' if done else ' (run in progress)'}.", "",
      f"{len([n for n in all_names if n not in hub_models.EXTRA])} backbone classes in "
      f"keras_hub.models, plus {', '.join(n for n in all_names if n in hub_models.EXTRA)} "
      f"(a keras_hub task model, a guide-style custom layer); {len(built)} built tiny "
      f"offline and ran; {len(unbuilt)} not buildable offline (reasons below)"
      + (f"; {len(missing)} not run yet: {', '.join(missing)}" if missing else "") + ".", "",
      f"Step counts (model x step): PASS {counts.get('PASS', 0)}, refused "
      f"{counts.get('refused', 0)}, FAIL {counts.get('FAIL', 0) + counts.get('timeout', 0)}"
      f" (of which the model's timeout: {counts.get('timeout', 0)}), SILENT {silent}, "
      f"upstream {counts.get('upstream', 0)} (the unpruned keras_hub model fails the same "
      f"check), harness error {counts.get('harness', 0)} (this script could not check), "
      f"skip {counts.get('skip', 0)} (a step it needs did not pass, or "
      f"--small_only), not "
      f"run {not_run}. **SILENT rows: {silent}**. Models passing every step: "
      f"{len(full_pass)}" + (f" ({', '.join(full_pass)})" if full_pass else "") + ".", "",
      *[f"{n}" for n in notes], *([""] if notes else []),
      "## Protocol", "", "```",
      *[l.rstrip() for l in __doc__.split("Steps, per model")[1].splitlines()], "```", "",
      "## Results", "",
      "| model | params | " + " | ".join(steps) + " | seconds |",
      "|---|---:|" + "---|" * len(steps) + "---:|",
  ]
  for n in built:
    r = rows[n]
    cells = [CELL.get(r.get(s, {}).get("status", ""), r.get(s, {}).get("status", ""))
             or "not run" for s in steps]
    secs = sum(v.get("seconds", 0) for v in r.values() if isinstance(v, dict))
    lines.append(f"| {n} | {r['build'].get('params', '')} | " + " | ".join(cells)
                 + f" | {secs:.0f} |")
  lines += ["", "## Reasons (every step that is not PASS)", "",
            "| model | step | status | reason |", "|---|---|---|---|"]
  for n in built:
    for s in steps:
      v = rows[n].get(s, {})
      if v.get("status") not in (None, "PASS"):
        lines.append(f"| {n} | {s} | {v['status']} | {v.get('reason', '')} |")
  lines += ["", "## Not buildable offline", "", "| model | reason |", "|---|---|"]
  for n in unbuilt:
    lines.append(f"| {n} | {rows[n]['build'].get('reason', '')} |")
  _io.atomic_write(path, "\n".join(lines) + "\n")


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", default="", help="comma list of backbone class names "
                 "(default: every keras_hub.models.*Backbone)")
  p.add_argument("--steps", default=",".join(STEPS), help=f"comma list of {STEPS}")
  p.add_argument("--small_only", default="", help=f"steps run only on models under "
                 f"{SMALL_PARAMS} parameters (e.g. logsum,int8)")
  p.add_argument("--small_params", type=int, default=SMALL_PARAMS, help="the size limit "
                 "of --small_only")
  p.add_argument("--timeout", type=int, default=300, help="seconds per model")
  p.add_argument("--output", default="bench/RESULTS_hub.md")
  p.add_argument("--rows_json", default="bench/results/hub_rows.json")
  p.add_argument("--resume", action="store_true", help="keep the rows of --rows_json and "
                 "run only the (model, step) pairs missing there")
  p.add_argument("--redo", default="", help="with --resume: models run again")
  p.add_argument("--merge", default="", help="comma list of other rows files (e.g. of a "
                 "second process on other steps) whose (model, step) rows missing from "
                 "--rows_json are added to it first")
  p.add_argument("--report_only", action="store_true", help="only (re)write --output from "
                 "--rows_json (after --merge)")
  p.add_argument("--child", default="", help=argparse.SUPPRESS)
  p.add_argument("--child_out", default="", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  steps = [s for s in args.steps.split(",") if s]
  for s in steps:
    if s not in STEPS + EXTRA_STEPS:
      p.error(f"--steps: unknown step {s!r}; valid: {', '.join(STEPS + EXTRA_STEPS)}")
  if args.child:
    return child(args)
  from tfprune import _io  # pylint: disable=g-import-not-at-top
  all_names = hub_models.names() + sorted(hub_models.EXTRA)  # (a task model, a guide layer)
  models = [m for m in args.models.split(",") if m] or all_names
  for m in models:
    if m not in all_names:
      p.error(f"--models: unknown backbone {m!r}; valid: {', '.join(all_names)}")
  rows = {}
  if args.resume and os.path.exists(args.rows_json):
    with open(args.rows_json) as f:
      rows = json.load(f)["rows"]
    for m in args.redo.split(","):
      rows.pop(m, None)
  for other in [f for f in args.merge.split(",") if f]:
    with open(other) as f:
      for name, row in json.load(f)["rows"].items():
        mine = rows.setdefault(name, {})
        for k, v in row.items():
          if mine.get(k, {}).get("status") in (None, "timeout"):
            mine[k] = v  # a finished result of another sitting replaces a timeout
  if args.merge:
    _io.atomic_write(args.rows_json, json.dumps({"rows": rows}, indent=1) + "\n")
  cmd = "nice -n 10 .venv/bin/python bench/hub_conformance.py " + " ".join(
      sys.argv[1:] if argv is None else argv)
  table_names = all_names if not args.models else [
      n for n in all_names if n in models or n in rows]
  if args.report_only:
    meta = {}
    if os.path.exists(args.rows_json):
      with open(args.rows_json) as f:
        meta = json.load(f)
    write_md(args.output, rows, table_names, steps, cmd, True,
             meta.get("commands", ()), meta.get("notes", ()))
    return
  for name in models:
    old = rows.get(name, {})
    todo = [s for s in steps if s not in old]  # --resume: only the steps not measured
    if old and (not todo or old.get("build", {}).get("status") != "PASS"):
      continue
    # the steps that work on the global model need it (measured again, not recorded)
    run_steps = (["global"] if "global" not in todo and set(todo) & {
        "liveness", "saveload", "float", "dynamic", "int8"} else []) + todo
    t0 = time.time()
    if name in hub_models.NOT_BUILDABLE:  # no subprocess needed to say so
      rows[name] = {"build": dict(status="not buildable",
                                  reason=f"not buildable offline: "
                                         f"{hub_models.NOT_BUILDABLE[name]}")}
      _io.atomic_write(args.rows_json, json.dumps({"rows": rows}, indent=1) + "\n")
      continue
    print(f"{name} ...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
      out = os.path.join(tmp, "row.json")
      proc = [sys.executable, os.path.abspath(__file__), f"--child={name}",
              f"--child_out={out}", f"--steps={','.join(run_steps)}",
              f"--small_only={args.small_only}", f"--small_params={args.small_params}"]
      try:
        r = subprocess.run(proc, timeout=args.timeout, capture_output=True, text=True,
                           cwd=_ROOT)
        if os.path.exists(out):
          with open(out) as f:
            row = json.load(f)
        else:  # the child crashed: the steps it printed stand, the next one crashed
          row = finished_steps(r.stdout, name, run_steps, dict(
              status="FAIL", reason=f"the process crashed (rc {r.returncode}, "
                                    f"{'SIGSEGV' if r.returncode == -11 else 'no row'}) "
                                    f"during this step"))
        sys.stdout.write(r.stdout[-3000:])
      except subprocess.TimeoutExpired as e:
        done_lines = (e.stdout or b"").decode(errors="replace") if isinstance(
            e.stdout, bytes) else (e.stdout or "")
        row = finished_steps(done_lines, name, run_steps, dict(
            status="timeout", reason=f"model timed out after {args.timeout} s before this "
                                     f"step finished"))
    row["build"]["wall"] = round(time.time() - t0, 1) + old.get("build", {}).get("wall", 0)
    rows[name] = dict(old, **{k: v for k, v in row.items() if k in todo or k == "build"})
    print(f"{name}: " + ", ".join(f"{s}={row.get(s, {}).get('status', '-')}" for s in steps)
          + f" ({time.time() - t0:.0f} s)", flush=True)
    _io.atomic_write(args.rows_json, json.dumps({"rows": rows}, indent=1) + "\n")
    write_md(args.output, rows, table_names, steps, cmd, False)
  write_md(args.output, rows, table_names, steps, cmd, True)


if __name__ == "__main__":
  main()
