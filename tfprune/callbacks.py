"""`model.fit` integration: `PruningCallback` drives a method every batch.

`PruningCallback` is the method's driver in `model.fit` (`on_train_begin` /
`on_train_step` / `on_train_end`, see `tfprune.methods.base`); `PruningSummaries` only
writes TensorBoard scalars, for recipes that drive the method themselves
(`PruningMethod.fit`). Both take `(method=None, log_dir=None)`.
`FinetuneLearningRate` is the learning-rate schedule of a recipe's fine-tune phase.
"""
import math
import os
import warnings

import keras
import tensorflow as tf

from tfprune import distribute
from tfprune import report
from tfprune import wrapper as wrapper_lib


def _method_and_dir(method, log_dir, who):
  """Accepts the pre-0.2 `PruningSummaries(log_dir, method)` order with a warning."""
  if isinstance(method, (str, os.PathLike)) and not isinstance(log_dir, (str, os.PathLike)):
    warnings.warn(f"{who}(log_dir, method) is the old argument order; use "
                  f"{who}(method=..., log_dir=...).", DeprecationWarning, stacklevel=3)
    method, log_dir = log_dir, method
  if method is not None and not hasattr(method, "diagnostics"):
    raise ValueError(f"{who}: method must be a tfprune PruningMethod or None, got "
                     f"{type(method).__name__}.")
  return method, log_dir


def _check_driven(method):
  """A post-training method has no training driver: refuse it, naming the fix."""
  if getattr(method, "post_training", False):
    raise ValueError(f"Method {method.name!r} prunes after training: call "
                     f"method.apply(model, calibration_data) instead of training with it "
                     f"(tfprune.PruningCallback drives training-time methods; a model it "
                     f"pruned is fine-tuned with a plain model.fit, masks fixed).")
  return method


class PruningCallback(keras.callbacks.Callback):
  """Drives the model's pruning method each batch; logs sparsity and diagnostics.

  Args:
    method: the model's `PruningMethod`; default `tfprune.get_method(model)`.
    log_dir: optional TensorBoard directory: per-layer sparsity and the method's
      diagnostics are written as scalars at every epoch end.

  It calls `method.on_train_begin(optimizer=model.optimizer)` (which attaches an
  optimizer wrapper the method needs, also one reloaded from a `.keras` file),
  `method.on_train_step()` before every batch and `method.on_train_end()`.

  `model.fit(..., steps_per_execution=k)` with k > 1 calls batch hooks every k steps, so
  the schedule would advance k times slower: this callback refuses it.
  """

  def __init__(self, method=None, log_dir=None):
    super().__init__()
    method, log_dir = _method_and_dir(method, log_dir, "PruningCallback")
    if method is not None:
      _check_driven(method)
    self._explicit_method = method
    self.method = method
    self.log_dir = log_dir
    self._writer = None

  def on_train_begin(self, logs=None):
    if self._explicit_method is not None:
      self.method = self._explicit_method.bind(self.model)
    else:
      self.method = _check_driven(wrapper_lib.get_method(self.model))
    spe = getattr(self.model, "steps_per_execution", 1)
    if int(spe if not hasattr(spe, "numpy") else spe.numpy()) != 1:
      raise ValueError("PruningCallback needs steps_per_execution=1 in model.compile (the "
                       "schedule advances once per batch).")
    distribute.check_method_strategy(self.method)
    self.method.on_train_begin(optimizer=getattr(self.model, "optimizer", None))
    if self.log_dir and self._writer is None:
      self._writer = tf.summary.create_file_writer(self.log_dir)

  def on_train_batch_begin(self, batch, logs=None):
    self.method.on_train_step()

  def on_epoch_end(self, epoch, logs=None):
    diagnostics = self.method.diagnostics()
    if logs is not None:
      logs.update({f"pruning/{k}": v for k, v in diagnostics.items()})
    if self._writer is not None:
      write_summaries(self._writer, self.model, diagnostics, epoch)

  def on_train_end(self, logs=None):
    self.method.on_train_end()
    if self._writer is not None:
      self._writer.flush()


class PruningSummaries(keras.callbacks.Callback):
  """TensorBoard scalars only (per-layer sparsity, PQ index, method diagnostics) per epoch.

  For recipes whose own `fit` already drives the method (`PruningMethod.fit`).

  Args:
    method: the model's `PruningMethod`; default `tfprune.get_method(model)`.
    log_dir: the TensorBoard directory (required).
  """

  def __init__(self, method=None, log_dir=None):
    super().__init__()
    method, log_dir = _method_and_dir(method, log_dir, "PruningSummaries")
    if not log_dir:
      raise ValueError("PruningSummaries needs log_dir=<TensorBoard directory>.")
    self.method = method
    self.log_dir = log_dir
    self._writer = tf.summary.create_file_writer(log_dir)

  def on_epoch_end(self, epoch, logs=None):
    method = self.method if self.method is not None else wrapper_lib.get_method(self.model)
    write_summaries(self._writer, self.model, method.diagnostics(), epoch)

  def on_train_end(self, logs=None):
    self._writer.flush()


class FinetuneLearningRate(keras.callbacks.Callback):
  """A recipe's fine-tune phase: set its learning rate, optionally cosine-decayed.

  From epoch `start_epoch` on, the optimizer's learning rate is `base_lr` (default: the
  rate in effect then); with `schedule="cosine"` it decays to 0 over `steps` steps.
  Also stops training on a non-finite loss, naming the step and phase.

  Args:
    start_epoch: first epoch of the fine-tune phase.
    steps: length of the fine-tune phase in steps (cosine decay).
    base_lr: the fine-tune learning rate (None: unchanged).
    schedule: `constant` or `cosine`.
    step_fn: returns the current global training step (for the cosine position and
      the error message); default the optimizer's iteration counter.
    phase_start_step: global step at which the fine-tune phase starts.
    name: what to call the training in the error message.
    phases: names of the (first, fine-tune) phases for the error message.
    hint: what to lower, for the error message.
  """

  def __init__(self, start_epoch, steps, base_lr=None, schedule="constant", step_fn=None,
               phase_start_step=0, name="fit", phases=("pruning", "fine-tune"),
               hint="the learning rate"):
    super().__init__()
    self.start_epoch = int(start_epoch)
    self.steps = max(int(steps), 1)
    self.lr = base_lr
    self.schedule = schedule
    self.step_fn = step_fn
    self.phase_start_step = int(phase_start_step)
    self.name = name
    self.phases = tuple(phases)
    self.hint = hint
    self.base_lr = None

  def _step(self):
    if self.step_fn is not None:
      return int(self.step_fn())
    return int(self.model.optimizer.iterations.numpy())

  def on_epoch_begin(self, epoch, logs=None):
    if epoch == self.start_epoch:
      self.base_lr = (self.lr if self.lr is not None
                      else distribute.to_float(self.model.optimizer.learning_rate))
      self.model.optimizer.learning_rate = self.base_lr

  def on_train_batch_begin(self, batch, logs=None):
    if self.base_lr is None or self.schedule != "cosine":
      return
    t = self._step() - 1 - self.phase_start_step  # fine-tune step
    frac = min(max(t, 0) / self.steps, 1.0)
    self.model.optimizer.learning_rate = self.base_lr * 0.5 * (1 + math.cos(math.pi * frac))

  def on_train_batch_end(self, batch, logs=None):
    loss = (logs or {}).get("loss")
    if loss is not None and not math.isfinite(float(loss)):
      step = self._step() - 1
      phase = self.phases[1] if step >= self.phase_start_step else self.phases[0]
      raise FloatingPointError(f"{self.name}: non-finite loss {loss} at step {step} "
                               f"({phase} phase, batch {batch}); stopping before any model "
                               f"is written (lower {self.hint}).")


def write_summaries(writer, model, diagnostics, step):
  """Per-layer sparsity + method diagnostics as TensorBoard scalars."""
  rows = report.sparsity_report(model, print_table=False)
  with writer.as_default(step=step):
    for row in rows:
      tf.summary.scalar(f"sparsity/{row['layer']}/{row['weight']}", row["sparsity"])
      tf.summary.scalar(f"pq_index/{row['layer']}/{row['weight']}", row["pq_index"])
    for key, value in diagnostics.items():
      tf.summary.scalar(f"pruning/{key}", value)
