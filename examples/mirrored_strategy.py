"""Pruning under `tf.distribute.MirroredStrategy` (every local GPU, or CPUs).

Build and prune inside `strategy.scope()`: the masks, the step counter and the
per-weight state are then mirrored like the weights, and mask updates run once, in the
cross-replica context, from the synchronised weights. `method.fit` enters the
strategy's scope itself. Without GPUs, `--cpus=2` splits the CPU into two logical
devices so that two replicas really run (as in tfprune's own distribute tests).

Usage:
  python examples/mirrored_strategy.py --cpus=2 --output_dir=/tmp/mirrored [--small]
"""
import argparse
import os

import keras
import tensorflow as tf

import tfprune


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--output_dir", default="mirrored")
  parser.add_argument("--cpus", type=int, default=2,
                      help="logical CPU devices to split the CPU into when there is no GPU")
  parser.add_argument("--method", default="magnitude", choices=tfprune.available_methods())
  parser.add_argument("--epochs", type=int, default=3)
  parser.add_argument("--small", action="store_true",
                      default=bool(os.environ.get("TFPRUNE_EXAMPLES_SMALL")))
  args = parser.parse_args()

  if not tf.config.list_physical_devices("GPU") and args.cpus > 1:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * args.cpus)
    devices = [f"/cpu:{i}" for i in range(args.cpus)]
  else:
    devices = None  # every local GPU
  strategy = tf.distribute.MirroredStrategy(devices)
  print(f"replicas in sync: {strategy.num_replicas_in_sync}")

  (x, y), (x_test, y_test) = tfprune.data.load("mnist")
  x, x_test = x.reshape(-1, 784), x_test.reshape(-1, 784)
  if args.small:
    x, y, args.epochs = x[:4096], y[:4096], 2
  global_batch = 64 * strategy.num_replicas_in_sync

  with strategy.scope():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((784,)),
                              keras.layers.Dense(300, activation="relu"),
                              keras.layers.Dense(100, activation="relu"),
                              keras.layers.Dense(10)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=global_batch, epochs=1, verbose=2)
    pruned = tfprune.prune(model, args.method, target_sparsity=0.9, scope="global")
  method = tfprune.get_method(pruned)
  # batch_size is the GLOBAL batch: each replica gets batch_size / replicas.
  method.fit(pruned, x, y, epochs=args.epochs, batch_size=global_batch, verbose=2)

  final = tfprune.strip(pruned)
  tfprune.sparsity_report(final)
  accuracy = float(keras.metrics.sparse_categorical_accuracy(
      y_test, final.predict(x_test, verbose=0)).numpy().mean())
  print(f"test accuracy: {accuracy:.4f}")
  os.makedirs(args.output_dir, exist_ok=True)
  final.save(os.path.join(args.output_dir, "pruned.keras"))


if __name__ == "__main__":
  main()
