"""Prune a keras.applications model on Fashion-MNIST and deploy it to LiteRT.

MobileNetV2 (alpha 0.35, built from scratch: `weights=None`, nothing is downloaded) at
32x32x3, trained on Fashion-MNIST (resized, grey repeated to three channels), pruned to
50% with gradual magnitude pruning (Zhu & Gupta 2017) in the `layer` scope, stripped,
and exported to a full-int8 .tflite file that tfprune checks in LiteRT with XNNPACK on
and off against the Keras model.

Usage:
  python examples/applications_fashion_mnist.py --output_dir=/tmp/mnv2 [--small]

`--small` (or TFPRUNE_EXAMPLES_SMALL=1) trains on 128 images for one epoch, eagerly (a
traced MobileNetV2 training step costs more than the two steps it would run): a smoke
test, not a useful model. The defaults (10,000 images, 3 + 3 epochs) take a few
minutes on a laptop CPU.
"""
import argparse
import os

import keras
import numpy as np
import tensorflow as tf

import tfprune
from tfprune import export


def load_fashion_mnist(num_train, num_test):
  """Fashion-MNIST as 32x32x3 floats in [0, 1] (no download: see scripts/setup.sh)."""
  (x, y), (x_test, y_test) = tfprune.data.load("fashion_mnist")
  def prepare(images):
    images = tf.image.resize(images, (32, 32)).numpy()
    return np.repeat(images, 3, axis=-1)
  return (prepare(x[:num_train]), y[:num_train]), (prepare(x_test[:num_test]),
                                                   y_test[:num_test])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--output_dir", default="mobilenetv2_fashion")
  parser.add_argument("--train_samples", type=int, default=10_000)
  parser.add_argument("--epochs", type=int, default=3, help="dense and pruning epochs each")
  parser.add_argument("--sparsity", type=float, default=0.5)
  parser.add_argument("--small", action="store_true",
                      default=bool(os.environ.get("TFPRUNE_EXAMPLES_SMALL")))
  args = parser.parse_args()
  if args.small:
    args.train_samples, args.epochs = 128, 1
  os.makedirs(args.output_dir, exist_ok=True)
  keras.utils.set_random_seed(0)

  (x, y), (x_test, y_test) = load_fashion_mnist(args.train_samples,
                                                 256 if args.small else 1000)
  base = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35,
                                        weights=None, classes=10,
                                        classifier_activation=None)
  loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  # XLA compiles MobileNetV2 for minutes, and tracing its step takes longer than a few
  # eager steps: a smoke run does neither.
  jit, eager = not args.small, args.small
  base.compile("adam", loss, metrics=["accuracy"], jit_compile=jit, run_eagerly=eager)
  base.fit(x, y, batch_size=64, epochs=args.epochs, verbose=2)

  steps = int(np.ceil(len(x) / 64)) * args.epochs
  pruned = tfprune.prune(
      base, "magnitude", target_sparsity=args.sparsity,
      schedule=tfprune.PolynomialDecay(0.0, args.sparsity, 0, max(steps // 2, 1),
                                       frequency=max(steps // 8, 1)))
  pruned.compile("adam", loss, metrics=["accuracy"], jit_compile=jit, run_eagerly=eager)
  pruned.fit(x, y, batch_size=64, epochs=args.epochs, verbose=2,
             callbacks=[tfprune.PruningCallback()])
  final = tfprune.strip(pruned)
  rows = tfprune.sparsity_report(final)  # prints the per-layer table
  final.compile(loss=loss, metrics=["accuracy"], jit_compile=jit, run_eagerly=eager)
  _, accuracy = final.evaluate(x_test, y_test, verbose=0)
  pruned_size = sum(r["size"] for r in rows)
  pruned_nonzeros = sum(r["nonzeros"] for r in rows)
  print(f"pruned Keras model: test accuracy {accuracy:.4f}, "
        f"{1 - pruned_nonzeros / pruned_size:.1%} of the pruned weights are zero")

  path = os.path.join(args.output_dir, "mobilenetv2_int8.tflite")
  result = export.save_tflite(final, path, quantize="int8", representative_data=x[:64])
  for r in result.verification:
    print(f"verified {r.runtime}: max abs diff {r.max_abs_diff:.3g}")
  print(f"wrote {path}: {len(result.model_bytes)} bytes (dense int8: "
        f"{result.dense_size} bytes)")


if __name__ == "__main__":
  main()
