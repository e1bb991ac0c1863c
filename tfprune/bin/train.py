r"""tfprune-train: train (or load) a dense model, prune it, fine-tune, strip, evaluate.

Writes `<output_dir>/model.keras` (the stripped model), `report.json` (flags, per-layer
sparsity, accuracies, timings, method diagnostics) and `sparsity.png`, and prints the
sparsity table.

Example:
  tfprune-train --model=lenet_300_100 --dataset=mnist --method=magnitude \
      --target_sparsity=0.9 --dense_epochs=2 --prune_epochs=2 --output_dir=runs/lenet
"""
import inspect
import io
import json
import math
import os
import time

from absl import app
from absl import flags
from absl import logging

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

import tfprune  # pylint: disable=g-import-not-at-top
from tfprune import _io  # pylint: disable=g-import-not-at-top
from tfprune import callbacks as callbacks_lib  # pylint: disable=g-import-not-at-top
from tfprune import data as data_lib  # pylint: disable=g-import-not-at-top
from tfprune import masks as masks_lib  # pylint: disable=g-import-not-at-top
from tfprune import plots  # pylint: disable=g-import-not-at-top
from tfprune import zoo  # pylint: disable=g-import-not-at-top
from tfprune.bin import _cli  # pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS

# --- Model and data -------------------------------------------------------------------
flags.DEFINE_enum("model", "lenet_300_100", zoo.NAMES, "Zoo model to train.")
flags.DEFINE_enum("dataset", "mnist", data_lib.NAMES, "Bundled dataset.")
flags.DEFINE_string("data_dir", None, "Directory with the dataset files (else the "
                    "TFPRUNE_DATA_DIR / cache / package sources).")
flags.DEFINE_string("load_model", None, "Start from this trained dense .keras model "
                    "instead of training one (then --dense_epochs is ignored).")

# --- Training -------------------------------------------------------------------------
flags.DEFINE_integer("dense_epochs", 10, "Epochs of dense training.", lower_bound=0)
flags.DEFINE_integer("prune_epochs", 10, "Epochs of pruning + fine-tuning (the method's "
                     "whole budget).", lower_bound=0)
flags.DEFINE_integer("batch_size", 128, "Batch size.", lower_bound=1)
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.", lower_bound=0.0)
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_integer("train_samples", None, "Use only the first N training samples "
                     "(quick runs).", lower_bound=1)

# --- Pruning --------------------------------------------------------------------------
flags.DEFINE_enum("method", "magnitude", tfprune.available_methods(), "Pruning method.")
flags.DEFINE_float("target_sparsity", 0.9, "Final fraction of zero weights, in [0, 1).")
flags.DEFINE_enum("scope", None, masks_lib.SCOPES + ("neuron",),
                  "Mask scope (default: the method's own; magnitude: layer, admm: global; "
                  "sap also takes neuron).")
flags.DEFINE_integer("block_size", 4, "Block length for --scope=block (4 float, 16 int8).")
flags.DEFINE_enum("allocation", None, masks_lib.ALLOCATIONS,
                  "Allocation for block/structured scopes (default: the method's own).")
flags.DEFINE_enum("schedule", "polynomial", ["polynomial", "constant"],
                  "Sparsity schedule for training-time methods.")
flags.DEFINE_float("schedule_fraction", 0.6, "PolynomialDecay reaches the target after "
                   "this fraction of the pruning steps.", lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_integer("frequency", 100, "Steps between mask updates.", lower_bound=1)
flags.DEFINE_integer("finetune_epochs", None, "Masked fine-tuning epochs (ADMM: after the "
                     "hard prune; post-training methods: after pruning, default 0).",
                     lower_bound=0)
flags.DEFINE_bool("shrink", False, "Strip with shrink=True: delete closed units (l0_gates).")
flags.DEFINE_multi_string("method_arg", [], "Extra method argument as key=value (JSON "
                          "value), e.g. --method_arg=rho0=0.001. Repeatable.")

# --- Output ---------------------------------------------------------------------------
flags.DEFINE_string("output_dir", "runs/default", "Where model.keras, report.json and "
                    "sparsity.png go.")
flags.DEFINE_string("tensorboard_dir", None, "TensorBoard log directory (optional).")
flags.DEFINE_integer("calibration_export", 500, "Training inputs written to "
                     "<output_dir>/calibration.npz (key 'x') for tfprune-export's int8 "
                     "calibration and verification.", lower_bound=0)


@flags.validator("target_sparsity", message="--target_sparsity must be in [0, 1).")
def _check_sparsity(value):
  return 0.0 <= value < 1.0


@flags.validator("block_size", message=f"--block_size must be one of "
                 f"{masks_lib.BLOCK_SIZES}.")
def _check_block(value):
  return value in masks_lib.BLOCK_SIZES


# Method-specific flags, passed only to methods whose constructor takes that argument.
METHOD_FLAGS = {}


def method_flag(name, default, help_text, kind="float", kwarg=None, **kwargs):
  """Defines a method-specific flag passed as `kwarg` (default: same name)."""
  define = {"float": flags.DEFINE_float, "int": flags.DEFINE_integer,
            "bool": flags.DEFINE_bool, "string": flags.DEFINE_string}[kind]
  define(name, default, help_text, **kwargs)
  METHOD_FLAGS[name] = kwarg or name


# ADMM (also takes --finetune_epochs).
METHOD_FLAGS["finetune_epochs"] = "finetune_epochs"
method_flag("admm_epochs", None, "ADMM: epochs of the ADMM phase (the rest of "
            "--prune_epochs fine-tunes).", "int", kwarg="admm_epochs")
method_flag("admm_fraction", None, "ADMM: fraction of --prune_epochs spent in the ADMM "
            "phase when --admm_epochs is not given (default 0.6).", kwarg="admm_fraction")
method_flag("rho", None, "ADMM: initial penalty rho0 (1e-4 .. 1e-3).", kwarg="rho0")
method_flag("rho_growth", None, "ADMM: rho multiplier per Z-step.", kwarg="rho_growth")
method_flag("rho_max", None, "ADMM: cap on rho.", kwarg="rho_max")
method_flag("admm_interval", None, "ADMM: steps between Z/U updates.", "int",
            kwarg="admm_interval")
method_flag("admm_penalty", None, "ADMM: 'loss' (penalty in the loss) or 'optimizer' "
            "(gradient term added by tfprune.optimizers.ADMM).", "string", kwarg="penalty")
method_flag("finetune_lr", None, "ADMM: learning rate of the masked fine-tune.",
            kwarg="finetune_lr")
method_flag("finetune_schedule", None, "ADMM: 'constant' or 'cosine' fine-tune LR.",
            "string", kwarg="finetune_schedule")

# SAP (PQ Index-guided adaptive pruning).
method_flag("sap_rounds", None, "SAP: pruning rounds T.", "int", kwarg="rounds")
method_flag("sap_epochs_per_round", None, "SAP: training epochs per round (default: "
            "--prune_epochs split over the rounds).", "int", kwarg="epochs_per_round")
method_flag("pq_p", None, "PQ Index p (0 < p < q).", kwarg="p")
method_flag("pq_q", None, "PQ Index q.", kwarg="q")
method_flag("sap_gamma", None, "SAP: gamma, the pruning-rate multiplier.", kwarg="gamma")
method_flag("sap_beta", None, "SAP: beta, cap on the fraction pruned per round.",
            kwarg="beta")
method_flag("sap_eta_r", None, "SAP: eta_r, the lower-bound slack.", kwarg="eta_r")
method_flag("sap_stop_on_pqi", None, "SAP: stop when PQI turns down again after rising "
            "(the collapse signal); keeps the peak round.", "bool", kwarg="stop_on_pqi")
method_flag("sap_rewind", None, "SAP: rewind to the initial weights each round.", "bool",
            kwarg="rewind")
method_flag("sap_min_accuracy", None, "SAP: stop (keeping the previous round) when "
            "validation accuracy falls below this.", kwarg="min_accuracy")


# Layer-wise, retrain-free methods (logsum, l0); --finetune_epochs fine-tunes after them.
method_flag("calibration_samples", None, "logsum/l0: unlabelled training inputs used as "
            "calibration data (default 10000).", "int", kwarg="calibration_samples")
method_flag("eta", None, "logsum/l0: early-termination tolerance of each layer's solve "
            "(default 1e-3).", kwarg="eta")
method_flag("eps", None, "logsum: epsilon of the log-sum penalty (default 0.1).",
            kwarg="eps")
method_flag("layerwise_mode", None, "logsum/l0: 'cascade' (inputs from the pruned layers "
            "before, default) or 'parallel' (from the original network).", "string",
            kwarg="mode")
method_flag("relu_model", None, "logsum/l0: fit only where the original ReLU output is "
            "positive.", "bool", kwarg="relu_model")


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


def method_kwargs(method_cls, steps_per_epoch, epochs):
  """Keyword arguments for `method_cls` from the flags (validated against its signature)."""
  accepted = dict(inspect.signature(method_cls.__init__).parameters)
  if any(p.kind == p.VAR_KEYWORD for p in accepted.values()):
    # **kwargs go to PruningMethod.__init__: accept exactly its arguments too.
    accepted.update(inspect.signature(tfprune.PruningMethod.__init__).parameters)
  accepted = {k: v for k, v in accepted.items()
              if k != "self" and v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL)}
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
  extra = _parse_method_args(FLAGS.method_arg)
  for key in extra:
    if key not in accepted:
      raise app.UsageError(f"--method_arg {key!r} is not an argument of "
                           f"--method={FLAGS.method}; valid: "
                           f"{sorted(accepted)}.")
  kwargs.update(extra)
  return {k: v for k, v in kwargs.items() if k in accepted}


def _compile(model):
  model.compile(optimizer=keras.optimizers.Adam(FLAGS.learning_rate),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])


def _accuracy(model, x, y):
  logits = model.predict(x, batch_size=1024, verbose=0)
  return float(np.mean(np.argmax(logits, axis=-1) == y))


def _dense_model(x_train, y_train, x_test, y_test, timings):
  if FLAGS.load_model:
    if not os.path.exists(FLAGS.load_model):
      raise app.UsageError(f"--load_model={FLAGS.load_model!r}: no such file.")
    return keras.models.load_model(FLAGS.load_model)
  model = zoo.get(FLAGS.model, input_shape=x_train.shape[1:],
                  num_classes=int(y_train.max()) + 1)
  _compile(model)
  start = time.time()
  if FLAGS.dense_epochs:
    logging.info("Dense training: %d epochs", FLAGS.dense_epochs)
    model.fit(x_train, y_train, epochs=FLAGS.dense_epochs, batch_size=FLAGS.batch_size,
              validation_data=(x_test, y_test), verbose=2)
  timings["dense_train_s"] = time.time() - start
  return model


def run_pruning(dense, x_train, y_train, x_test, y_test, timings, log):
  """Prunes `dense` with the flags' method; returns the pruned (wrapped) model."""
  method_cls = tfprune.methods.get_method_class(FLAGS.method)
  steps_per_epoch = math.ceil(len(x_train) / FLAGS.batch_size)
  kwargs = method_kwargs(method_cls, steps_per_epoch, FLAGS.prune_epochs)
  log["method_kwargs"] = {k: (keras.saving.serialize_keras_object(v)
                              if hasattr(v, "get_config") else v)
                          for k, v in kwargs.items()}
  pruned = tfprune.prune(dense, FLAGS.method, **kwargs)
  method = tfprune.get_method(pruned)
  extra_callbacks = []
  if FLAGS.tensorboard_dir:
    extra_callbacks.append(callbacks_lib.PruningSummaries(FLAGS.tensorboard_dir, method))
  start = time.time()
  if method_cls.post_training:
    method.apply(pruned, x_train)  # uses the method's calibration_samples
    finetune = FLAGS.finetune_epochs or 0
    if finetune:
      _compile(pruned)  # masks stay fixed: the wrapper masks the gradients
      pruned.fit(x_train, y_train, epochs=finetune, batch_size=FLAGS.batch_size,
                 validation_data=(x_test, y_test), verbose=2, callbacks=extra_callbacks)
  else:
    method.fit(pruned, x_train, y_train, epochs=FLAGS.prune_epochs,
               batch_size=FLAGS.batch_size,
               optimizer=keras.optimizers.Adam(FLAGS.learning_rate),
               validation_data=(x_test, y_test), verbose=2, callbacks=extra_callbacks)
  timings["prune_s"] = time.time() - start
  log["diagnostics"] = method.diagnostics()
  log["method_report"] = method.report()
  return pruned, method


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  _parse_method_args(FLAGS.method_arg)  # fail fast, before any training
  keras.utils.set_random_seed(FLAGS.seed)
  timings, log = {}, {"flags": {f.name: f.value for f in FLAGS.get_key_flags_for_module(
      __name__)}}
  (x_train, y_train), (x_test, y_test) = data_lib.load(FLAGS.dataset,
                                                       data_dir=FLAGS.data_dir)
  if FLAGS.train_samples:
    x_train, y_train = x_train[:FLAGS.train_samples], y_train[:FLAGS.train_samples]
  dense = _dense_model(x_train, y_train, x_test, y_test, timings)
  log["dense_accuracy"] = _accuracy(dense, x_test, y_test)
  logging.info("Dense test accuracy: %.4f", log["dense_accuracy"])

  pruned, method = run_pruning(dense, x_train, y_train, x_test, y_test, timings, log)
  final = tfprune.strip(pruned, shrink=FLAGS.shrink)
  log["test_accuracy"] = _accuracy(final, x_test, y_test)
  rows = tfprune.sparsity_report(final, print_table=True)
  log["layers"] = rows
  log["sparsity"] = tfprune.model.total_sparsity(rows)
  log["dense_parameters"] = int(dense.count_params())
  log["parameters"] = int(final.count_params())
  log["nonzero_parameters"] = int(sum(int(np.count_nonzero(w)) for w in final.get_weights()))
  log["timings_s"] = timings

  out = FLAGS.output_dir
  os.makedirs(out, exist_ok=True)
  log["artifacts"] = method.write_artifacts(out)
  _io.atomic_save_keras(final, os.path.join(out, "model.keras"))
  _io.atomic_write(os.path.join(out, "report.json"), json.dumps(log, indent=2, default=str))
  if FLAGS.calibration_export:
    buf = io.BytesIO()
    np.savez_compressed(buf, x=x_train[:FLAGS.calibration_export])
    _io.atomic_write(os.path.join(out, "calibration.npz"), buf.getvalue())
  plots.sparsity_per_layer(rows, os.path.join(out, "sparsity.png"),
                           title=f"{FLAGS.model} / {FLAGS.method} @ {FLAGS.target_sparsity}")
  print(f"parameters {log['dense_parameters']} -> {log['parameters']} "
        f"({log['nonzero_parameters']} nonzero, "
        f"{log['nonzero_parameters'] / max(log['dense_parameters'], 1):.1%} of dense)")
  print(f"dense accuracy {log['dense_accuracy']:.4f} -> pruned accuracy "
        f"{log['test_accuracy']:.4f} at sparsity {log['sparsity']:.4f}; wrote {out}/"
        f"model.keras, report.json, sparsity.png, calibration.npz")


def run():
  """Console-script entry point."""
  _cli.run(main, __name__)


if __name__ == "__main__":
  run()
