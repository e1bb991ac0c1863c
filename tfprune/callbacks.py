"""`model.fit` integration: `PruningCallback` drives a method's schedule every batch."""
import keras
import tensorflow as tf

from tfprune import distribute
from tfprune import model as model_lib


class PruningCallback(keras.callbacks.Callback):
  """Advances the pruning schedule each batch; logs sparsity and method diagnostics.

  Args:
    method: the model's `PruningMethod`; default `tfprune.get_method(model)`.
    log_dir: optional TensorBoard directory: per-layer sparsity and the method's
      diagnostics are written as scalars at every epoch end.

  `model.fit(..., steps_per_execution=k)` with k > 1 calls batch hooks every k steps, so
  the schedule would advance k times slower: this callback refuses it.
  """

  def __init__(self, method=None, log_dir=None):
    super().__init__()
    self._explicit_method = method
    self.method = method
    self.log_dir = log_dir
    self._writer = None

  def on_train_begin(self, logs=None):
    if self._explicit_method is not None:
      self.method = self._explicit_method.bind(self.model)
    else:
      self.method = model_lib.get_method(self.model)
    spe = getattr(self.model, "steps_per_execution", 1)
    if int(spe if not hasattr(spe, "numpy") else spe.numpy()) != 1:
      raise ValueError("PruningCallback needs steps_per_execution=1 in model.compile (the "
                       "schedule advances once per batch).")
    distribute.check_method_strategy(self.method)
    self.method.on_train_begin()
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

  For recipes whose own `fit` already drives the schedule (`PruningMethod.fit`).
  """

  def __init__(self, log_dir, method):
    super().__init__()
    self.method = method
    self._writer = tf.summary.create_file_writer(log_dir)

  def on_epoch_end(self, epoch, logs=None):
    write_summaries(self._writer, self.model, self.method.diagnostics(), epoch)

  def on_train_end(self, logs=None):
    self._writer.flush()


def write_summaries(writer, model, diagnostics, step):
  """Per-layer sparsity + method diagnostics as TensorBoard scalars."""
  rows = model_lib.sparsity_report(model, print_table=False)
  with writer.as_default(step=step):
    for row in rows:
      tf.summary.scalar(f"sparsity/{row['layer']}/{row['weight']}", row["sparsity"])
      tf.summary.scalar(f"pq_index/{row['layer']}/{row['weight']}", row["pq_index"])
    for key, value in diagnostics.items():
      tf.summary.scalar(f"pruning/{key}", value)
