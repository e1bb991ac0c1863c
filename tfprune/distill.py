"""Knowledge distillation as a Keras loss (Hinton, Vinyals, Dean, "Distilling the
Knowledge in a Neural Network", 2015), usable by any recipe.

A recipe that distils packs each target row as `[label, teacher logits...]`
(`pack_targets`), so a plain `model.fit(x, packed)` trains with `DistillationLoss`:
`(1 - alpha) * CE(label, logits) + alpha * T^2 * KL(softmax(t / T) || softmax(logits / T))`.
`PackedAccuracy` is the accuracy on the label column. Registered names are those of
tfprune 0.1 (`tfprune>DistillationLoss`, `tfprune>PackedAccuracy`).
"""
import keras
import numpy as np
import tensorflow as tf


def pack_targets(labels, teacher_logits):
  """`[label, teacher logits...]` rows: how a recipe passes both to `DistillationLoss`."""
  labels = np.asarray(labels).reshape(-1, 1).astype(np.float32)
  return np.concatenate([labels, np.asarray(teacher_logits, np.float32)], axis=1)


@keras.saving.register_keras_serializable(package="tfprune")
class DistillationLoss(keras.losses.Loss):
  """CE on the label column + `T^2 * KL` to the teacher logits (the other columns)."""

  def __init__(self, alpha=0.5, temperature=4.0, name="l0_distillation", **kwargs):
    super().__init__(name=name, **kwargs)
    self.alpha, self.temperature = float(alpha), float(temperature)

  def call(self, y_true, y_pred):
    labels = tf.cast(y_true[:, 0], tf.int32)
    teacher = tf.cast(y_true[:, 1:], y_pred.dtype)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=y_pred)
    t = self.temperature
    p_teacher = tf.nn.softmax(teacher / t)
    kl = tf.reduce_sum(p_teacher * (tf.nn.log_softmax(teacher / t)
                                    - tf.nn.log_softmax(y_pred / t)), axis=-1)
    return (1.0 - self.alpha) * ce + self.alpha * t * t * kl

  def get_config(self):
    return {**super().get_config(), "alpha": self.alpha, "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="tfprune")
class PackedAccuracy(keras.metrics.MeanMetricWrapper):
  """Accuracy against the label column of packed `[label, teacher logits...]` targets."""

  def __init__(self, name="accuracy", dtype=None):
    super().__init__(fn=_packed_accuracy, name=name, dtype=dtype)

  def get_config(self):
    return {"name": self.name, "dtype": self.dtype}


def _packed_accuracy(y_true, y_pred):
  labels = tf.cast(y_true[:, 0], tf.int64)
  return tf.cast(tf.equal(tf.argmax(y_pred, axis=-1), labels), tf.float32)
