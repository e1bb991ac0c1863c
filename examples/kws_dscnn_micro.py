"""A keyword-spotting DS-CNN (49x10x1 MFCC input) pruned and deployed to TFLite Micro.

The DS-CNN shape of the "Hello Edge" keyword-spotting models (Zhang et al. 2017): a
10x4 stride-2 convolution, four depthwise-separable blocks, average pooling and a
12-way classifier, on 49 frames x 10 MFCC coefficients. No speech data set ships with
tfprune, so this trains on synthetic MFCC-like features whose class is encoded in a
few frequency bands: enough to check the whole path, not a keyword model.

Steps: train, prune the 1x1 convolutions and the classifier to 50% with gradual
magnitude pruning (Zhu & Gupta 2017), strip, export full-int8 for TFLite Micro (dense
int8 weights: TFLM ignores sparsity, docs/export.md section 5), verified in the TFLM
interpreter (`pip install tflite-micro`) against the Keras model, and write the
.tflite file plus a C array for the firmware.

Usage:
  python examples/kws_dscnn_micro.py --output_dir=/tmp/kws [--small]
"""
import argparse
import os

import keras
import numpy as np

import tfprune
from tfprune import export

NUM_CLASSES = 12  # "yes", "no", ..., silence, unknown
INPUT_SHAPE = (49, 10, 1)


def ds_cnn(filters=64):
  """DS-CNN-S: conv 10x4/2 + 4 x (depthwise 3x3 + pointwise 1x1) + avg pool + dense."""
  L = keras.layers
  inputs = keras.Input(INPUT_SHAPE, name="mfcc")
  x = L.Conv2D(filters, (10, 4), strides=(2, 2), padding="same", use_bias=False)(inputs)
  x = L.ReLU()(L.BatchNormalization()(x))
  for i in range(4):
    x = L.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"dw{i}")(x)
    x = L.ReLU()(L.BatchNormalization()(x))
    x = L.Conv2D(filters, 1, use_bias=False, name=f"pw{i}")(x)
    x = L.ReLU()(L.BatchNormalization()(x))
  x = L.GlobalAveragePooling2D()(x)
  outputs = L.Dense(NUM_CLASSES, name="logits")(x)
  return keras.Model(inputs, outputs, name="ds_cnn")


def synthetic_mfcc(n, seed):
  """MFCC-like features: class c raises coefficient c % 10 in a band of frames."""
  rng = np.random.default_rng(seed)
  y = rng.integers(0, NUM_CLASSES, size=n)
  x = rng.normal(0.0, 1.0, size=(n,) + INPUT_SHAPE).astype("float32")
  for i, c in enumerate(y):
    start = 4 * (c // 10) + 10
    x[i, start:start + 20, c % 10, 0] += 2.5
  return x, y


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--output_dir", default="kws_micro")
  parser.add_argument("--train_samples", type=int, default=4096)
  parser.add_argument("--epochs", type=int, default=4, help="dense and pruning epochs each")
  parser.add_argument("--small", action="store_true",
                      default=bool(os.environ.get("TFPRUNE_EXAMPLES_SMALL")))
  args = parser.parse_args()
  if args.small:
    args.train_samples, args.epochs = 512, 1
  os.makedirs(args.output_dir, exist_ok=True)
  keras.utils.set_random_seed(0)
  x, y = synthetic_mfcc(args.train_samples, seed=0)
  x_test, y_test = synthetic_mfcc(512, seed=1)

  model = ds_cnn(filters=32 if args.small else 64)
  loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  model.compile("adam", loss, metrics=["accuracy"])
  model.fit(x, y, batch_size=64, epochs=args.epochs, verbose=2)

  steps = int(np.ceil(len(x) / 64)) * args.epochs
  prunable = [f"pw{i}" for i in range(4)] + ["logits"]
  pruned = tfprune.prune(
      model, "magnitude", layers=prunable, target_sparsity=0.5,
      schedule=tfprune.PolynomialDecay(0.0, 0.5, 0, max(steps // 2, 1),
                                       frequency=max(steps // 8, 1)))
  pruned.compile("adam", loss, metrics=["accuracy"])
  pruned.fit(x, y, batch_size=64, epochs=args.epochs, verbose=2,
             callbacks=[tfprune.PruningCallback()])
  final = tfprune.strip(pruned)
  tfprune.sparsity_report(final)
  final.compile(loss=loss, metrics=["accuracy"])
  print(f"pruned Keras accuracy: {final.evaluate(x_test, y_test, verbose=0)[1]:.4f}")

  path = os.path.join(args.output_dir, "ds_cnn_int8.tflite")
  result = export.save_tflite(final, path, target="micro", quantize="int8",
                              representative_data=x[:128])
  for r in result.verification:
    print(f"verified {r.runtime}: max abs diff {r.max_abs_diff:.3g}")
  sources = export.c_array(path, "g_ds_cnn_model")
  print(f"wrote {path} ({len(result.model_bytes)} bytes) and {' '.join(sources)}")


if __name__ == "__main__":
  main()
