"""Pruning in your own `tf.GradientTape` training loop (no `model.fit`).

The method object drives the schedule: `on_train_begin()` once, `on_train_step()` before
every optimizer step (it advances the step counter and recomputes the masks on the
schedule's pruning steps, in a `tf.function`), `on_train_end()` at the end (leaves every
pruned weight exactly zero). Here: LeNet-300-100 on MNIST pruned to 90% with a global
magnitude threshold (Zhu & Gupta 2017 schedule), then stripped and exported.

Usage:
  python examples/custom_training_loop.py --output_dir=/tmp/loop [--small]
"""
import argparse
import os

import keras
import tensorflow as tf

import tfprune
from tfprune import export


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--output_dir", default="custom_loop")
  parser.add_argument("--epochs", type=int, default=3)
  parser.add_argument("--small", action="store_true",
                      default=bool(os.environ.get("TFPRUNE_EXAMPLES_SMALL")))
  args = parser.parse_args()
  os.makedirs(args.output_dir, exist_ok=True)
  keras.utils.set_random_seed(0)
  (x, y), (x_test, y_test) = tfprune.data.load("mnist")
  if args.small:
    x, y, args.epochs = x[:2048], y[:2048], 2
  batch = 128
  steps = (len(x) // batch) * args.epochs

  model = tfprune.zoo.lenet_300_100()
  pruned = tfprune.prune(model, "magnitude", target_sparsity=0.9, scope="global",
                         schedule=tfprune.PolynomialDecay(0.0, 0.9, 0, steps // 2,
                                                          frequency=max(steps // 10, 1)))
  optimizer = keras.optimizers.Adam(1e-3)
  loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=0).batch(
      batch, drop_remainder=True)

  @tf.function
  def train_step(xb, yb):
    with tf.GradientTape() as tape:
      loss = loss_fn(yb, pruned(xb, training=True))
      loss += sum(pruned.losses, 0.0)  # a method's penalty, if it has one
    grads = tape.gradient(loss, pruned.trainable_variables)
    optimizer.apply_gradients(zip(grads, pruned.trainable_variables))
    return loss

  method = tfprune.get_method(pruned)
  method.on_train_begin()
  for epoch in range(args.epochs):
    for xb, yb in data:
      method.on_train_step()
      loss = train_step(xb, yb)
    print(f"epoch {epoch + 1}: loss {float(loss):.4f}, "
          f"sparsity {method.diagnostics()['sparsity']:.3f}")
  method.on_train_end()

  final = tfprune.strip(pruned)
  tfprune.sparsity_report(final)
  accuracy = float(keras.metrics.sparse_categorical_accuracy(
      y_test, final.predict(x_test, verbose=0)).numpy().mean())
  print(f"test accuracy: {accuracy:.4f}")
  path = os.path.join(args.output_dir, "lenet_sparse.tflite")
  result = export.save_tflite(final, path, representative_data=x[:64])
  print(f"wrote {path}: {len(result.model_bytes)} bytes (dense: {result.dense_size})")


if __name__ == "__main__":
  main()
