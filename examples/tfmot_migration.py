"""A TFMOT pruning script on Keras 3: only its import changed.

This is TFMOT's "pruning with Keras" recipe (prune a trained MNIST model to 80% with
`PolynomialDecay`, train with `UpdatePruningStep`, `strip_pruning`), written against
`tensorflow_model_optimization`, with its import changed to
`import tfprune.compat.tfmot as tfmot`. The last step swaps TFMOT's size-only TFLite
conversion for tfprune's exporter, which writes a sparse file and checks it in LiteRT.
See docs/migration.md for what differs.

Usage:
  python examples/tfmot_migration.py --output_dir=/tmp/tfmot [--small]
"""
import argparse
import os

import numpy as np
import tensorflow as tf

# import tensorflow_model_optimization as tfmot
import tfprune.compat.tfmot as tfmot
import tfprune
from tfprune import export


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--output_dir", default="tfmot_migration")
  parser.add_argument("--small", action="store_true",
                      default=bool(os.environ.get("TFPRUNE_EXAMPLES_SMALL")))
  args = parser.parse_args()
  os.makedirs(args.output_dir, exist_ok=True)
  keras = tf.keras  # Keras 3 on TensorFlow >= 2.16

  (train_images, train_labels), (test_images, test_labels) = tfprune.data.load("mnist")
  if args.small:
    train_images, train_labels = train_images[:1024], train_labels[:1024]
  model = keras.Sequential([
      keras.layers.InputLayer(shape=(28, 28, 1)),
      keras.layers.Conv2D(filters=12, kernel_size=(3, 3), activation="relu"),
      keras.layers.MaxPooling2D(pool_size=(2, 2)),
      keras.layers.Flatten(),
      keras.layers.Dense(10),
  ])
  model.compile(optimizer="adam",
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
  model.fit(train_images, train_labels, epochs=1, validation_split=0.1, verbose=2)

  batch_size, epochs, validation_split = 128, 2, 0.1
  num_images = train_images.shape[0] * (1 - validation_split)
  end_step = np.ceil(num_images / batch_size).astype(np.int32) * epochs
  pruning_params = {
      "pruning_schedule": tfmot.sparsity.keras.PolynomialDecay(
          initial_sparsity=0.50, final_sparsity=0.80, begin_step=0, end_step=end_step,
          frequency=max(int(end_step) // 10, 1)),
  }
  model_for_pruning = tfmot.sparsity.keras.prune_low_magnitude(model, **pruning_params)
  model_for_pruning.compile(
      optimizer="adam",
      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
      metrics=["accuracy"])
  callbacks = [tfmot.sparsity.keras.UpdatePruningStep(),
               tfmot.sparsity.keras.PruningSummaries(
                   log_dir=os.path.join(args.output_dir, "logs"))]
  model_for_pruning.fit(train_images, train_labels, batch_size=batch_size, epochs=epochs,
                        validation_split=validation_split, callbacks=callbacks, verbose=2)
  _, accuracy = model_for_pruning.evaluate(test_images, test_labels, verbose=0)
  print(f"pruned test accuracy: {accuracy:.4f}")

  model_for_export = tfmot.sparsity.keras.strip_pruning(model_for_pruning)
  model_for_export.save(os.path.join(args.output_dir, "pruned.keras"))
  tfprune.sparsity_report(model_for_export)
  path = os.path.join(args.output_dir, "pruned.tflite")
  result = export.save_tflite(model_for_export, path, representative_data=test_images[:64])
  print(f"wrote {path}: {len(result.model_bytes)} bytes "
        f"(dense float: {result.dense_size} bytes), verified in LiteRT")


if __name__ == "__main__":
  main()
