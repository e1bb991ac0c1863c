"""Pruning across hosts with `tf.distribute.MultiWorkerMirroredStrategy`.

Run the same script on every worker with a `TF_CONFIG` that lists all the workers and
gives each its index (README.md, "Multi-worker", shows two workers on one machine).
Each worker builds and prunes the model inside `strategy.scope()` and runs a custom
`strategy.run` loop (Keras 3's `model.fit` does not take in-memory arrays under this
strategy); `method.on_train_step()` runs outside `strategy.run`, so mask updates happen
once per step in the cross-replica context from the all-reduced weights, and every
worker ends with the same masks. Only the chief (worker 0) writes files.

Usage (per worker):
  TF_CONFIG='{"cluster": {"worker": ["hostA:12345", "hostB:12345"]},
              "task": {"type": "worker", "index": 0}}' \
    python examples/multiworker.py --output_dir=/tmp/multiworker
"""
import argparse
import json
import os

import keras
import numpy as np
import tensorflow as tf

import tfprune


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--output_dir", default=None,
                      help="where the chief saves the stripped model (default: nowhere)")
  parser.add_argument("--samples", type=int, default=4096,
                      help="MNIST training images each worker reads (auto-sharded)")
  parser.add_argument("--epochs", type=int, default=2)
  parser.add_argument("--small", action="store_true",
                      default=bool(os.environ.get("TFPRUNE_EXAMPLES_SMALL")))
  args = parser.parse_args()
  if args.small:
    args.samples, args.epochs = 1024, 1
  if "TF_CONFIG" not in os.environ:
    raise SystemExit("multiworker.py: set TF_CONFIG (the cluster's workers and this "
                     "worker's index); see the usage in this file's docstring.")
  task = json.loads(os.environ["TF_CONFIG"])["task"]

  strategy = tf.distribute.MultiWorkerMirroredStrategy()
  (x, y), _ = tfprune.data.load("mnist")
  x, y = x[:args.samples].reshape(-1, 784), y[:args.samples]
  global_batch = 64 * strategy.num_replicas_in_sync
  with strategy.scope():
    keras.utils.set_random_seed(0)  # the same initial weights on every worker
    model = keras.Sequential([keras.Input((784,)),
                              keras.layers.Dense(300, activation="relu"),
                              keras.layers.Dense(10)])
    pruned = tfprune.prune(model, "magnitude", target_sparsity=0.9, scope="global",
                           schedule=tfprune.PolynomialDecay(0.0, 0.9, 0, 6, frequency=2))
    optimizer = keras.optimizers.Adam(1e-3)
  method = tfprune.get_method(pruned)
  loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum")
  # In-memory data: shard by element (each worker reads all of it, trains on its part).
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = (
      tf.data.experimental.AutoShardPolicy.DATA)
  data = tf.data.Dataset.from_tensor_slices((x, y)).batch(
      global_batch, drop_remainder=True).with_options(options)

  def replica_step(xb, yb):
    with tf.GradientTape() as tape:
      loss = loss_fn(yb, pruned(xb, training=True)) / global_batch
    grads = tape.gradient(loss, pruned.trainable_variables)
    optimizer.apply_gradients(zip(grads, pruned.trainable_variables))

  @tf.function
  def train_step(xb, yb):
    strategy.run(replica_step, args=(xb, yb))

  method.on_train_begin()
  for _ in range(args.epochs):
    for xb, yb in strategy.experimental_distribute_dataset(data):
      method.on_train_step()  # cross-replica: masks computed once, written everywhere
      train_step(xb, yb)
  method.on_train_end()

  rows = tfprune.sparsity_report(pruned, print_table=False)
  sparsity = 1 - sum(r["nonzeros"] for r in rows) / sum(r["size"] for r in rows)
  print(f"worker {task['index']} of {strategy.num_replicas_in_sync}: sparsity "
        f"{sparsity:.3f}")
  if task["index"] == 0 and args.output_dir:  # the chief writes; others would race
    os.makedirs(args.output_dir, exist_ok=True)
    tfprune.strip(pruned).save(os.path.join(args.output_dir, "pruned.keras"))
    print(f"chief wrote {os.path.join(args.output_dir, 'pruned.keras')}")


if __name__ == "__main__":
  main()
