r"""tfprune-train: train (or load) a dense model, prune it, fine-tune, strip, evaluate.

Writes `<output_dir>/model.keras` (the stripped model, mode 0644, without optimizer state
unless --save_optimizer), `report.json` (flags, per-layer sparsity, accuracies, per-epoch
history per phase, timings, versions, method diagnostics), `sparsity.png` and
`calibration.npz`, and prints the sparsity table.

Every flag, path and method argument is checked before the first epoch. The run is
written into `<parent>/.<name>.partial` (checkpointed every epoch) and renamed to
`--output_dir` only when complete; `--resume` continues a killed run from its last
epoch checkpoint (docs/algorithms.md section 0 for the mask maths).

Example:
  tfprune-train --model=lenet_300_100 --dataset=mnist --method=magnitude \
      --target_sparsity=0.9 --dense_epochs=2 --prune_epochs=2 --output_dir=runs/lenet
  tfprune-train --load_model=my.keras --dataset=npz:my_data.npz --method=admm \
      --target_sparsity=0.8 --prune_epochs=4 --output_dir=runs/mine
"""
import io
import json
import math
import os
import platform
import shutil
import sys
import time
import warnings
import zipfile

from absl import app
from absl import flags
import keras
import numpy as np
import tensorflow as tf

import tfprune
from tfprune import _io
from tfprune import _layers
from tfprune import callbacks as callbacks_lib
from tfprune import data as data_lib
from tfprune import layerwise
from tfprune import plots
from tfprune import structured
from tfprune import zoo
from tfprune import train_flags
from tfprune.train_flags import model as model_flags
from tfprune.methods import base as methods_base
from tfprune.train_flags.method import METHOD_FLAGS
from tfprune.bin import _cli

FLAGS = flags.FLAGS
for _group in train_flags.GROUPS:
  flags.adopt_module_key_flags(_group)

# Phases, in order; each has its own data-order stream and checkpoint directory.
PHASES = ("dense", "pruning", "fine-tune", "strip", "export", "report")
# Flags that may differ between a killed run and its --resume.
_RESUME_FREE_FLAGS = ("resume", "overwrite", "tf_log_level", "testonly_epoch_delay_s",
                      "tensorboard_dir")


def grouped_help():
  """tfprune-train's flags, grouped (data, model, method, schedule, export, output)."""
  parts = []
  for group in train_flags.GROUPS:
    title = group.__name__.rsplit(".", 1)[-1]
    body = FLAGS.module_help(group).split("\n", 2)[-1]
    parts.append(f"{title}: {group.__doc__.splitlines()[0].split(': ', 1)[-1]}\n{body}")
  return "\n\n".join(parts)


def _fail(flag, message):
  raise app.UsageError(f"--{flag}: {message}" if flag else message)


def _phase(name, detail=""):
  print(f"\n=== {name}{': ' + detail if detail else ''} ===", flush=True)


def _say(message):
  print(message, flush=True)


# ------------------------------------------------------------------ method arguments


def _parse_method_args(values):
  parsed = {}
  for item in values:
    if "=" not in item:
      raise app.UsageError(f"--method_arg={item!r} must look like key=value.")
    key, raw = item.split("=", 1)
    try:
      parsed[key] = json.loads(raw)
    except json.JSONDecodeError:
      parsed[key] = raw
  return parsed


def method_kwargs(method_cls, steps_per_epoch, epochs, calibration_samples=None):
  """Keyword arguments for `method_cls` from the flags (validated against the arguments
  its constructor takes, `tfprune.methods.base.method_arguments`)."""
  accepted = methods_base.method_arguments(method_cls)
  kwargs = {"target_sparsity": FLAGS.target_sparsity, "block_size": FLAGS.block_size}
  for name in ("scope", "allocation"):
    if FLAGS[name].value is not None:
      kwargs[name] = FLAGS[name].value
  if "schedule" in accepted and not method_cls.post_training:
    end = max(int(FLAGS.schedule_fraction * steps_per_epoch * epochs), 1)
    kwargs["schedule"] = (
        tfprune.PolynomialDecay(0.0, FLAGS.target_sparsity, 0, end,
                                frequency=FLAGS.frequency)
        if FLAGS.schedule == "polynomial" else
        tfprune.ConstantSparsity(FLAGS.target_sparsity, 0, frequency=FLAGS.frequency))
  for flag_name, kwarg in METHOD_FLAGS.items():
    if flag_name == "finetune_epochs" and method_cls.post_training:
      continue  # the binary fine-tunes post-training methods itself
    if FLAGS[flag_name].present or (FLAGS[flag_name].value is not None and
                                    kwarg in accepted):
      if kwarg not in accepted:
        raise app.UsageError(f"--{flag_name} is not used by --method={FLAGS.method}; its "
                             f"arguments are {sorted(accepted)}.")
      kwargs[kwarg] = FLAGS[flag_name].value
  if calibration_samples is not None and "calibration_samples" in accepted:
    kwargs["calibration_samples"] = calibration_samples
  extra = _parse_method_args(FLAGS.method_arg)
  for key in extra:
    if key not in accepted:
      raise app.UsageError(f"--method_arg {key!r} is not an argument of "
                           f"--method={FLAGS.method}; valid: "
                           f"{sorted(accepted)}.")
  kwargs.update(extra)
  return {k: v for k, v in kwargs.items() if k in accepted}


# ------------------------------------------------------------------ validation


def _first_existing_parent(path):
  parent = path
  while not os.path.lexists(parent):
    up = os.path.dirname(parent)
    if up == parent:
      break
    parent = up
  return parent


def _check_creatable_dir(flag, path):
  """Raises UsageError naming `flag` unless `path` is (or can be made) a writable dir."""
  path = os.path.abspath(os.path.expanduser(path))
  if os.path.lexists(path) and not os.path.isdir(path):
    _fail(flag, f"{path} exists and is not a directory.")
  parent = _first_existing_parent(path)
  if not os.path.isdir(parent):
    _fail(flag, f"cannot create {path}: {parent} is a file, not a directory.")
  if not os.access(parent, os.W_OK | os.X_OK):
    _fail(flag, f"cannot create or write {path}: {parent} is not writable.")
  return path


def partial_dir(output_dir):
  """The temporary sibling directory a run is written into before the final rename."""
  output_dir = os.path.abspath(os.path.expanduser(output_dir))
  return os.path.join(os.path.dirname(output_dir), f".{os.path.basename(output_dir)}"
                      f".partial")


def _run_flags():
  return {f.name: f.value for f in FLAGS.get_key_flags_for_module(sys.modules[__name__])}


def _prepare_output():
  """Validates --output_dir / --overwrite / --resume; returns (output_dir, partial)."""
  out = _check_creatable_dir("output_dir", FLAGS.output_dir)
  if os.path.basename(out) in ("", ".", ".."):
    _fail("output_dir", f"{FLAGS.output_dir!r} must name a directory of its own.")
  partial = partial_dir(out)
  if os.path.isdir(out) and os.listdir(out) and not FLAGS.overwrite:
    _fail("output_dir", f"{out} is not empty ({', '.join(sorted(os.listdir(out))[:6])}"
          f"{', ...' if len(os.listdir(out)) > 6 else ''}); pass --overwrite to replace "
          f"it, or choose another directory.")
  state_path = os.path.join(partial, "state.json")
  if FLAGS.resume:
    if not os.path.isfile(state_path):
      _fail("resume", f"no interrupted run to resume: {state_path} does not exist.")
    with open(state_path) as f:
      saved = json.load(f)["flags"]
    now = _run_flags()
    changed = sorted(k for k in set(saved) | set(now)
                     if k not in _RESUME_FREE_FLAGS and saved.get(k) != now.get(k))
    if changed:
      _fail("resume", "the interrupted run used other values for " + ", ".join(
          f"--{k} (was {saved.get(k)!r}, now {now.get(k)!r})" for k in changed)
            + "; rerun with the same flags, or with --overwrite to start over.")
  elif os.path.lexists(partial):
    if not FLAGS.overwrite:
      _fail("output_dir", f"an interrupted run of {out} left {partial}: pass --resume to "
            f"continue it, or --overwrite to discard it.")
    shutil.rmtree(partial)
  os.makedirs(partial, exist_ok=True)
  if not FLAGS.resume:
    _io.atomic_write(state_path, json.dumps({"flags": _run_flags(), "done": []},
                                            default=str))
  return out, partial


def _check_keras_file(flag, path):
  """A clear error naming `flag` unless `path` is a complete .keras (zip) archive."""
  if not os.path.exists(path):
    _fail(flag, f"{path}: no such file.")
  if os.path.isdir(path):
    _fail(flag, f"{path} is a directory; expected a .keras file (model.save('x.keras')).")
  if not path.endswith(".keras"):
    _fail(flag, f"{path}: expected a Keras 3 .keras file (a legacy .h5 or SavedModel "
          f"must be converted: keras.models.load_model(...).save('model.keras')).")
  if not zipfile.is_zipfile(path):
    _fail(flag, f"{path} is not a .keras archive (not a zip file: truncated, or not "
          f"written by model.save).")
  try:
    with zipfile.ZipFile(path) as z:
      names = z.namelist()
      bad = z.testzip()
  except (zipfile.BadZipFile, OSError, EOFError) as e:
    _fail(flag, f"{path} is a corrupt .keras archive ({e}).")
  if bad is not None:
    _fail(flag, f"{path} is a corrupt .keras archive (CRC error in {bad}).")
  if "config.json" not in names:
    _fail(flag, f"{path} is a zip file but not a .keras model (no config.json; it has "
          f"{', '.join(names[:5])}).")


def _load_keras(flag, path):
  _check_keras_file(flag, path)
  try:
    return keras.models.load_model(path)
  except Exception as e:  # pylint: disable=broad-except
    _fail(flag, f"{path} could not be loaded: {type(e).__name__}: {e}")


def _input_shape(model):
  shape = model.input_shape
  if isinstance(shape, list):
    _fail("load_model", f"the model has {len(shape)} inputs; tfprune-train needs one.")
  return tuple(shape[1:])


def _fit_to_input(x, shape, split, may_resize):
  """Resizes images `x` to the model's input `shape` (h, w, c) when they differ."""
  if tuple(x.shape[1:]) == tuple(shape):
    return x
  if not may_resize or len(shape) != 3 or x.ndim != 4 or None in shape:
    _fail("dataset", f"{split} inputs are shaped {tuple(x.shape[1:])} but the model's "
          f"input is {tuple(shape)}.")
  if x.shape[-1] != shape[-1]:
    _fail("dataset", f"{split} images have {x.shape[-1]} channel(s) but the model's "
          f"input {tuple(shape)} has {shape[-1]}.")
  _say(f"Resizing {split} images {tuple(x.shape[1:3])} -> {tuple(shape[:2])} "
       f"(tf.image.resize, bilinear) to match the model's input {tuple(shape)}.")
  out = [tf.image.resize(x[i:i + 4096], shape[:2]).numpy() for i in range(0, len(x), 4096)]
  return np.concatenate(out).astype(np.float32)


def _load_data(model_shape, image_size=None):
  """The data set of --dataset, fitted to `model_shape` (None: the data's own).

  `image_size` (h, w) of --image_size sets the size images:DIR are decoded at; the
  other data sets are resized by the caller (after --train_samples).
  """
  spec = FLAGS.dataset
  kind, _, path = spec.partition(":")
  if kind in ("npz", "images") and FLAGS.data_dir:
    _fail("data_dir", f"is for the bundled data sets; --dataset={spec} names its own "
          f"location.")
  try:
    if kind == "npz":
      (x, y), (xt, yt) = data_lib.load_npz(path)
      may_resize = False
    elif kind == "images":
      shape = model_shape or zoo.get(FLAGS.model).input_shape[1:]
      if image_size and len(shape) == 3:
        shape = tuple(image_size) + tuple(shape[2:])
      if len(shape) != 3:
        _fail("dataset", f"images need a model with an image input (h, w, c), got "
              f"{tuple(shape)}.")
      ((x, y), (xt, yt)), classes = data_lib.load_image_dir(path, shape[:2], shape[2])
      _say(f"Loaded {len(x)} + {len(xt)} images of {len(classes)} classes from {path} "
           f"at {shape[0]}x{shape[1]}x{shape[2]} (raw 0-255 values).")
      may_resize = False
    else:
      if FLAGS.data_dir and not os.path.isdir(FLAGS.data_dir):
        _fail("data_dir", f"{FLAGS.data_dir}: no such directory.")
      (x, y), (xt, yt) = data_lib.load(spec, data_dir=FLAGS.data_dir)
      may_resize = True
  except (data_lib.DataError, data_lib.CorruptDataError) as e:
    _fail("data_dir" if FLAGS.data_dir else "dataset", str(e))
  if model_shape is not None:
    x = _fit_to_input(x, model_shape, "training", may_resize)
    xt = _fit_to_input(xt, model_shape, "test", may_resize)
  return (x, y), (xt, yt)


def format_sparsity(value):
  """Sparsity with enough digits that a value below 1 never prints as 1 (or as 0.9)."""
  text = f"{value:.4f}"
  digits = 4
  while digits < 12 and value != round(value, digits) and (
      float(text) >= 1.0 or (value > 0 and float(text) == 0.0)):
    digits += 2
    text = f"{value:.{digits}f}"
  return text


# ------------------------------------------------------------------ training pieces


def _compile(model):
  model.compile(optimizer=keras.optimizers.Adam(FLAGS.learning_rate),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])


def _accuracy(model, x, y):
  logits = model.predict(x, batch_size=1024, verbose=0)
  return float(np.mean(np.argmax(logits, axis=-1) == y))


def _recalibrated_accuracy(model, x_train, x_test, y_test, log, key):
  """Test accuracy of `model` after `--bn_recalibration_samples` BN re-estimation.

  With BatchNormalization and N > 0, the moving statistics are re-estimated in place
  on the first N training inputs (docs/algorithms.md section 3); `log[key]` records
  the accuracy before and after and the layers re-estimated.
  """
  n = min(FLAGS.bn_recalibration_samples, len(x_train))
  if n == 0 or not any(isinstance(l, keras.layers.BatchNormalization)
                       for l in _layers.all_layers(model)):
    return _accuracy(model, x_test, y_test)
  before = _accuracy(model, x_test, y_test)
  summary = layerwise.recalibrate_batchnorm(model, x_train[:n], verbose=True)
  after = _accuracy(model, x_test, y_test)
  log[key] = {"samples": n, "layers": len(summary["layers"]),
              "accuracy_before": before, "accuracy_after": after}
  _say(f"BatchNorm statistics re-estimated on {n} training inputs "
       f"({len(summary['layers'])} layers): test accuracy {before:.4f} -> {after:.4f}")
  return after


class EpochData:
  """Training batches whose order depends only on (seed, phase, epoch).

  Keras reshuffles arrays with a stateful op, so a resumed process would see another
  order than the killed one; here each epoch's permutation is
  `stateless_shuffle(seed=[seed * 8 + phase, epoch])`, with the epoch set by
  `callback()` at every epoch start, so a resumed epoch sees exactly the batches the
  uninterrupted run saw.
  """

  def __init__(self, x, y, batch_size, seed, phase):
    self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    n = len(x)
    xs, ys = tf.constant(x), tf.constant(y)
    key = tf.constant(int(seed) * 8 + int(phase), tf.int64)
    epoch = self.epoch

    def order(_):
      return tf.random.experimental.stateless_shuffle(
          tf.range(n, dtype=tf.int64), seed=tf.stack([key, epoch.read_value()]))

    batches = tf.data.Dataset.from_tensors(0).map(order).flat_map(
        lambda idx: tf.data.Dataset.from_tensor_slices(idx).batch(batch_size))
    self.dataset = batches.map(lambda i: (tf.gather(xs, i), tf.gather(ys, i))).apply(
        tf.data.experimental.assert_cardinality(math.ceil(n / batch_size)))

  def callback(self):
    data = self

    class _SetEpoch(keras.callbacks.Callback):

      def on_epoch_begin(self, epoch, logs=None):
        data.epoch.assign(epoch)

    return _SetEpoch()


class _HistoryLog(keras.callbacks.Callback):
  """Per-epoch logs of one phase, kept in a JSON file that survives a resume."""

  def __init__(self, path, delay_s=0.0):
    super().__init__()
    self.path = path
    self.delay_s = delay_s
    self.epochs = []
    if os.path.isfile(path):
      with open(path) as f:
        self.epochs = json.load(f)

  def on_epoch_end(self, epoch, logs=None):
    row = {"epoch": int(epoch)}
    row.update({k: float(v) for k, v in (logs or {}).items()
                if np.ndim(v) == 0 and not isinstance(v, str)})
    self.epochs = [r for r in self.epochs if r["epoch"] < epoch] + [row]
    _io.atomic_write(self.path, json.dumps(self.epochs))
    if self.delay_s:
      time.sleep(self.delay_s)


class _Run:
  """State of one run: its partial directory, phase bookkeeping, history."""

  def __init__(self, partial):
    self.partial = partial
    self.state_path = os.path.join(partial, "state.json")
    with open(self.state_path) as f:
      self.state = json.load(f)
    self.history = {}

  def done(self, phase):
    return phase in self.state["done"]

  def mark(self, phase):
    self.state["done"].append(phase)
    _io.atomic_write(self.state_path, json.dumps(self.state, default=str))

  def callbacks(self, phase, checkpoint=True):
    """BackupAndRestore (epoch checkpoints), the history log, TensorBoard."""
    tag = phase.replace("-", "_")
    log = _HistoryLog(os.path.join(self.partial, f"history_{tag}.json"),
                      FLAGS.testonly_epoch_delay_s)
    self.history[phase] = log
    cbs = []
    if checkpoint:
      cbs.append(keras.callbacks.BackupAndRestore(
          os.path.join(self.partial, "checkpoints", tag), delete_checkpoint=False))
    cbs.append(log)  # after the checkpoint: an epoch logged is an epoch saved
    if FLAGS.tensorboard_dir:
      cbs.append(keras.callbacks.TensorBoard(os.path.join(FLAGS.tensorboard_dir, tag),
                                             write_graph=False, profile_batch=0))
    return cbs


def _reseed(phase):
  keras.utils.set_random_seed(FLAGS.seed * len(PHASES) + PHASES.index(phase))


def _dense_phase(run, skeleton, data, timings):
  (x_train, y_train), (x_test, y_test) = data
  if FLAGS.load_model:
    _phase("dense", f"loaded {FLAGS.load_model} (no dense training)")
    return skeleton
  dense_path = os.path.join(run.partial, "dense.keras")
  if run.done("dense"):
    _phase("dense", f"resumed: trained model from {dense_path}")
    return keras.models.load_model(dense_path)
  _phase("dense", f"{FLAGS.dense_epochs} epochs of {FLAGS.model}")
  _reseed("dense")
  model = skeleton
  _compile(model)
  start = time.time()
  if FLAGS.dense_epochs:
    order = EpochData(x_train, y_train, FLAGS.batch_size, FLAGS.seed, 0)
    model.fit(order.dataset, epochs=FLAGS.dense_epochs, validation_data=(x_test, y_test),
              verbose=2, callbacks=[order.callback(), *run.callbacks("dense")])
  timings["dense_train_s"] = time.time() - start
  _io.atomic_save_keras(model, dense_path, include_optimizer=False)
  run.mark("dense")
  return model


def run_pruning(run, dense, data, kwargs, timings, log):
  """Prunes `dense` with the flags' method; returns the pruned (wrapped) model."""
  (x_train, y_train), (x_test, y_test) = data
  method_cls = tfprune.methods.get_method_class(FLAGS.method)
  _reseed("pruning")
  pruned = tfprune.prune(dense, FLAGS.method, **kwargs)
  method = tfprune.get_method(pruned)
  extra = []
  if FLAGS.tensorboard_dir:
    extra.append(callbacks_lib.PruningSummaries(
        method=method, log_dir=os.path.join(FLAGS.tensorboard_dir, "pruning")))
  start = time.time()
  if method_cls.post_training:
    _phase("pruning", f"{FLAGS.method} (post-training: method.apply) to "
           f"{format_sparsity(FLAGS.target_sparsity)}")
    method.apply(pruned, x_train)  # uses the method's calibration_samples
    finetune = FLAGS.finetune_epochs or 0
    if finetune:
      _phase("fine-tune", f"{finetune} masked epochs")
      _reseed("fine-tune")
      _compile(pruned)  # masks stay fixed: the wrapper masks the gradients
      order = EpochData(x_train, y_train, FLAGS.batch_size, FLAGS.seed, 2)
      pruned.fit(order.dataset, epochs=finetune, validation_data=(x_test, y_test),
                 verbose=2, callbacks=[order.callback(), *run.callbacks("fine-tune"),
                                       *extra])
  else:
    _phase("pruning", f"{FLAGS.method}, {FLAGS.prune_epochs} epochs to "
           f"{format_sparsity(FLAGS.target_sparsity)} (scope {method.scope})")
    # A single `model.fit` resumes exactly from an epoch checkpoint; a method with several
    # fits (`multi_fit`: sap rounds, l0_gates gate + tune) restarts the pruning phase.
    exact = not method.multi_fit
    if exact:
      order = EpochData(x_train, y_train, FLAGS.batch_size, FLAGS.seed, 1)
      x, y, batch_size = order.dataset, None, None
      extra = [order.callback(), *extra]
    else:
      x, y, batch_size = x_train, y_train, FLAGS.batch_size
    method.fit(pruned, x, y, epochs=FLAGS.prune_epochs, batch_size=batch_size,
               optimizer=keras.optimizers.Adam(FLAGS.learning_rate),
               validation_data=(x_test, y_test), verbose=2,
               callbacks=[*run.callbacks("pruning", checkpoint=exact), *extra])
  timings["prune_s"] = time.time() - start
  log["diagnostics"] = method.diagnostics()
  log["method_report"] = method.report()
  return pruned, method


def print_table(rows):
  """The per-weight sparsity table, full layer names (no truncation)."""
  headers = ("layer", "weight", "shape", "nonzeros", "size", "sparsity", "PQI")
  table = [(r["layer"], r["weight"], str(r["shape"]), str(r["nonzeros"]), str(r["size"]),
            format_sparsity(r["sparsity"]), f"{r['pq_index']:.4f}") for r in rows]
  nonzeros = sum(r["nonzeros"] for r in rows)
  size = sum(r["size"] for r in rows)
  total = ("total", "", "", str(nonzeros), str(size),
           format_sparsity(tfprune.model.total_sparsity(rows)), "")
  widths = [max(len(row[i]) for row in [headers, *table, total]) for i in range(7)]

  def line(row):
    return "  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                     for i, (c, w) in enumerate(zip(row, widths))).rstrip()

  rule = "-" * len(line(headers))
  print("\n".join([line(headers), rule, *map(line, table), rule, line(total)]))


def versions():
  """Versions of the software that made a run (for report.json)."""
  out = {"tfprune": tfprune.__version__, "tensorflow": tf.__version__,
         "keras": keras.__version__, "numpy": np.__version__,
         "python": platform.python_version()}
  try:
    from importlib import metadata
    out["ai_edge_litert"] = metadata.version("ai-edge-litert")
  except Exception:  # pylint: disable=broad-except
    out["ai_edge_litert"] = None
  return out


# ------------------------------------------------------------------ main


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if FLAGS.tf_log_level != "quiet":
    tf.get_logger().setLevel({"error": "ERROR", "warning": "WARNING",
                              "info": "INFO"}[FLAGS.tf_log_level])
  else:
    tf.get_logger().setLevel("ERROR")
  # EpochData is a tf.data.Dataset that shuffles itself (resumable order).
  warnings.filterwarnings("ignore", message=".*shuffle=True. was passed.*")
  started = time.time()
  _parse_method_args(FLAGS.method_arg)
  if FLAGS.tensorboard_dir:
    _check_creatable_dir("tensorboard_dir", FLAGS.tensorboard_dir)
  if FLAGS.load_model:
    _check_keras_file("load_model", FLAGS.load_model)
  method_cls = tfprune.methods.get_method_class(FLAGS.method)
  out, partial = _prepare_output()
  try:
    return _main(out, partial, method_cls, started)
  except BaseException:
    # Keep checkpoints for --resume; drop a run that never trained an epoch.
    if not os.path.isdir(os.path.join(partial, "checkpoints")) and not os.path.isfile(
        os.path.join(partial, "dense.keras")):
      shutil.rmtree(partial, ignore_errors=True)
    raise


def _main(out, partial, method_cls, started):
  """The run, phase by phase; everything that can fail is checked before the first
  epoch (data, model, method arguments, a target that would empty a layer)."""
  timings = {}
  log = {"flags": _run_flags(), "versions": versions()}
  run = _Run(partial)
  _reseed("dense")
  skeleton, data = _prepare_data(log)
  (x_train, _), (x_test, y_test) = data
  calibration = _calibration_counts(method_cls, len(x_train), log)
  kwargs = _check_method(method_cls, skeleton, len(x_train), calibration, log)

  dense = _dense_phase(run, skeleton, data, timings)
  log["dense_accuracy"] = _recalibrated_accuracy(dense, x_train, x_test, y_test, log,
                                                 "dense_bn_recalibration")
  _say(f"dense test accuracy {log['dense_accuracy']:.4f}")
  pruned, method = run_pruning(run, dense, data, kwargs, timings, log)
  final, rows = _strip_phase(dense, pruned, data, log)
  written = _export_phase(out, partial, final, method, rows, x_train, log)
  _report_phase(out, partial, run, log, timings, started, written)
  return 0


def _prepare_data(log):
  """The model to prune (--load_model, or the --model zoo model built for the data) and
  the data set fitted to it (--dataset, --image_size, --train/test_samples).

  Returns:
    (skeleton model, ((x_train, y_train), (x_test, y_test))); `log["data"]` is set.
  """
  image_size = model_flags.parse_image_size(FLAGS.image_size)
  if image_size and FLAGS.load_model:
    _fail("image_size", f"is for zoo models; with --load_model={FLAGS.load_model} the "
          f"loaded model's input decides the size (the data is resized to it).")
  if FLAGS.load_model:
    skeleton = _load_keras("load_model", FLAGS.load_model)
    model_shape = _input_shape(skeleton)
  else:
    skeleton, model_shape = None, None
  (x_train, y_train), (x_test, y_test) = _load_data(model_shape, image_size)
  if FLAGS.train_samples:
    x_train, y_train = x_train[:FLAGS.train_samples], y_train[:FLAGS.train_samples]
  if FLAGS.test_samples:
    x_test, y_test = x_test[:FLAGS.test_samples], y_test[:FLAGS.test_samples]
  resized_from = None
  if image_size:
    if x_train.ndim != 4:
      _fail("image_size", f"needs images (n, h, w, c); --dataset={FLAGS.dataset} holds "
            f"inputs shaped {tuple(x_train.shape[1:])}.")
    if tuple(x_train.shape[1:3]) != tuple(image_size):
      resized_from = list(x_train.shape[1:3])
    shape = tuple(image_size) + (x_train.shape[-1],)
    x_train = _fit_to_input(x_train, shape, "training", True)
    x_test = _fit_to_input(x_test, shape, "test", True)
  num_classes = int(max(y_train.max(), y_test.max())) + 1
  if skeleton is None:
    skeleton = zoo.get(FLAGS.model, input_shape=x_train.shape[1:],
                       num_classes=num_classes)
  else:
    units = skeleton.output_shape[-1] if not isinstance(skeleton.output_shape,
                                                        list) else None
    if units is not None and units < num_classes:
      _fail("load_model", f"the model has {units} outputs but the labels of "
            f"--dataset={FLAGS.dataset} go up to {num_classes - 1}.")
  log["data"] = {"dataset": FLAGS.dataset, "train_samples": int(len(x_train)),
                 "test_samples": int(len(x_test)), "input_shape": list(x_train.shape[1:]),
                 "num_classes": num_classes}
  if resized_from:
    log["data"]["resized_from"] = resized_from
  return skeleton, ((x_train, y_train), (x_test, y_test))


def _calibration_counts(method_cls, n_train, log):
  """The calibration samples a post-training method gets (--calibration_samples, else
  the class's own `calibration_samples`, at most `n_train`) and the count written to
  calibration.npz (`log["calibration_export"]`). Returns the first (None: default)."""
  calibration = None
  if FLAGS.calibration_samples is not None:
    calibration = FLAGS.calibration_samples
    if calibration > n_train:
      _say(f"--calibration_samples={calibration} is more than the {n_train} training "
           f"inputs: using {n_train}.")
      calibration = n_train
  elif method_cls.post_training:
    default = getattr(method_cls, "calibration_samples", None)
    if isinstance(default, int):
      calibration = min(default, n_train)
  calibration_export = min(FLAGS.calibration_export, n_train)
  if calibration_export < FLAGS.calibration_export:
    _say(f"--calibration_export={FLAGS.calibration_export} is more than the "
         f"{n_train} training inputs: writing {calibration_export}.")
  log["calibration_samples"] = calibration if method_cls.post_training else None
  log["calibration_export"] = calibration_export
  return calibration


def _check_method(method_cls, skeleton, n_train, calibration, log):
  """The method's keyword arguments from the flags, checked by constructing and binding
  it on `skeleton` and by the library's empty-layer rule
  (`tfprune.methods.base.empty_weights`); `log["method_kwargs"]` is set."""
  steps_per_epoch = math.ceil(n_train / FLAGS.batch_size)
  try:
    kwargs = method_kwargs(method_cls, steps_per_epoch, FLAGS.prune_epochs, calibration)
    probe = tfprune.prune(skeleton, FLAGS.method, **kwargs)  # constructs + binds the method
  except (ValueError, TypeError) as e:
    raise app.UsageError(f"--method={FLAGS.method}: {e}") from e
  dead, detail = methods_base.empty_weights(tfprune.get_method(probe))
  if dead:
    _fail("target_sparsity", f"{FLAGS.target_sparsity!r} would leave no weight in "
          f"{', '.join(dead)} ({detail}); every prunable layer needs at least one weight. "
          f"Lower --target_sparsity (or use --method_arg=layer_sparsity=... for those "
          f"layers).")
  del probe
  log["method_kwargs"] = {k: (keras.saving.serialize_keras_object(v)
                              if hasattr(v, "get_config") else v) for k, v in kwargs.items()}
  return kwargs


def _strip_phase(dense, pruned, data, log):
  """Strips (and with --shrink shrinks) `pruned`; its accuracy and sparsity table.

  Returns:
    (the stripped model, the `tfprune.sparsity_report` rows).
  """
  (x_train, _), (x_test, y_test) = data
  _phase("strip", "removing wrappers" + (" and closed units" if FLAGS.shrink else ""))
  final = tfprune.strip(pruned, shrink=FLAGS.shrink)
  if FLAGS.shrink:
    shrink_rows = structured.shrink_report(dense, final)
    _say("parameters and MACs per layer, before -> after the shrink:\n"
         + structured.format_shrink_report(shrink_rows))
    log["shrink"] = shrink_rows
  log["test_accuracy"] = _recalibrated_accuracy(final, x_train, x_test, y_test, log,
                                                "bn_recalibration")
  rows = tfprune.sparsity_report(final, print_table=False)
  print_table(rows)
  log["layers"] = rows
  log["sparsity"] = tfprune.model.total_sparsity(rows)
  log["dense_parameters"] = int(dense.count_params())
  log["parameters"] = int(final.count_params())
  log["nonzero_parameters"] = int(sum(int(np.count_nonzero(w)) for w in final.get_weights()))
  return final, rows


def _export_phase(out, partial, final, method, rows, x_train, log):
  """Writes the method's artifacts, model.keras, calibration.npz and sparsity.png into
  `partial`; returns their paths relative to it."""
  _phase("export", f"writing {out}")
  written = []
  artifacts = method.write_artifacts(partial)
  log["artifacts"] = [os.path.join(out, os.path.relpath(a, partial)) for a in artifacts]
  written += [os.path.relpath(a, partial) for a in artifacts]
  _io.atomic_save_keras(final, os.path.join(partial, "model.keras"),
                        include_optimizer=FLAGS.save_optimizer)
  written.append("model.keras")
  calibration_export = log["calibration_export"]
  if calibration_export:
    buf = io.BytesIO()
    np.savez_compressed(buf, x=x_train[:calibration_export])
    _io.atomic_write(os.path.join(partial, "calibration.npz"), buf.getvalue())
    written.append("calibration.npz")
  plots.sparsity_per_layer(rows, os.path.join(partial, "sparsity.png"),
                           title=f"{FLAGS.model if not FLAGS.load_model else FLAGS.load_model}"
                           f" / {FLAGS.method}",
                           target=FLAGS.target_sparsity)
  written.append("sparsity.png")
  return written


def _report_phase(out, partial, run, log, timings, started, written):
  """Writes report.json, drops the resume state and moves `partial` to `out`."""
  _phase("report")
  log["history"] = {phase: h.epochs for phase, h in run.history.items()}
  timings["total_s"] = time.time() - started
  log["timings_s"] = timings
  log["files"] = sorted(written + ["report.json"])
  _io.atomic_write(os.path.join(partial, "report.json"),
                   json.dumps(log, indent=2, default=str))
  written.append("report.json")
  for name in os.listdir(partial):  # checkpoints, state and histories are not output
    if name in ("checkpoints", "state.json", "dense.keras") or name.startswith("history_"):
      path = os.path.join(partial, name)
      shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
  _io.atomic_replace_dir(partial, out)
  print(f"parameters {log['dense_parameters']} -> {log['parameters']} "
        f"({log['nonzero_parameters']} nonzero, "
        f"{log['nonzero_parameters'] / max(log['dense_parameters'], 1):.1%} of dense)")
  print(f"dense accuracy {log['dense_accuracy']:.4f} -> pruned accuracy "
        f"{log['test_accuracy']:.4f} at sparsity {format_sparsity(log['sparsity'])}; "
        f"wrote {out}/: {', '.join(sorted(written))}")


def run():
  """Console-script entry point."""
  _cli.run(main, __name__)


if __name__ == "__main__":
  run()
