"""Movement pruning vs gradual magnitude pruning, same dense start, same schedule.

Models: LeNet-300-100 (`tfprune.zoo`) and a small Transformer encoder classifier built
here (MNIST rows as 28 tokens of 28 pixels -> Dense(d) + learned positions -> N blocks
of MultiHeadAttention + FFN, pre-norm -> mean pool -> Dense(10)); every Dense kernel and
attention kernel is pruned. Protocol: train dense, then prune each method from a copy of
the SAME dense weights with `method.fit` (Adam, cubic PolynomialDecay from 0 to the
target over the first `schedule_fraction` of the pruning steps, masks every `frequency`
steps, layer scope), report test accuracy of the stripped model.

    PYTHONPATH=. python bench/movement_bench.py --models=lenet,transformer \
      --sparsities=0.9,0.97 --dense_epochs=3 --prune_epochs=3 --out=bench/results/movement.json
"""
import json
import os
import time

from absl import app
from absl import flags
import keras
import numpy as np

import tfprune
from tfprune import _io
from tfprune import data
from tfprune import zoo

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["lenet", "transformer"], "lenet and/or transformer")
flags.DEFINE_list("sparsities", ["0.9"], "target sparsities")
flags.DEFINE_list("methods", ["magnitude", "movement"], "methods to compare")
flags.DEFINE_integer("dense_epochs", 3, "dense training epochs")
flags.DEFINE_integer("prune_epochs", 3, "pruning + fine-tuning epochs")
flags.DEFINE_integer("batch_size", 128, "batch size")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate (dense and pruning)")
flags.DEFINE_float("schedule_fraction", 0.6, "the target is reached after this fraction")
flags.DEFINE_integer("frequency", 100, "steps between mask updates")
flags.DEFINE_integer("n_train", None, "use the first n training examples only")
flags.DEFINE_integer("d_model", 64, "transformer width")
flags.DEFINE_integer("blocks", 2, "transformer encoder blocks")
flags.DEFINE_integer("seed", 0, "seed")
flags.DEFINE_string("out", None, "optional JSON output path")


class AddPositions(keras.layers.Layer):
  """Adds a learned position embedding `[tokens, d]` (a layer, so cloning works)."""

  def build(self, input_shape):
    self.table = self.add_weight(name="table", shape=tuple(input_shape[1:]),
                                 initializer="random_normal")

  def call(self, x):
    return x + self.table[None]


def transformer(d_model=64, blocks=2, heads=4, ffn=128, tokens=28, features=28,
                classes=10):
  """A pre-norm Transformer encoder over the rows of a 28x28 image."""
  inp = keras.Input((tokens, features, 1))
  x = keras.layers.Reshape((tokens, features))(inp)
  x = keras.layers.Dense(d_model, name="embed")(x)
  x = AddPositions(name="positions")(x)
  for b in range(blocks):
    h = keras.layers.LayerNormalization(name=f"ln{b}a")(x)
    h = keras.layers.MultiHeadAttention(heads, d_model // heads, name=f"attn{b}")(h, h)
    x = keras.layers.Add()([x, h])
    h = keras.layers.LayerNormalization(name=f"ln{b}b")(x)
    h = keras.layers.Dense(ffn, activation="gelu", name=f"ffn{b}_in")(h)
    x = keras.layers.Add()([x, keras.layers.Dense(d_model, name=f"ffn{b}_out")(h)])
  x = keras.layers.LayerNormalization(name="ln_out")(x)
  x = keras.layers.GlobalAveragePooling1D()(x)
  return keras.Model(inp, keras.layers.Dense(classes, name="logits")(x))


def _compile(model):
  model.compile(keras.optimizers.Adam(FLAGS.learning_rate),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])


def _accuracy(model, x, y):
  return float(np.mean(np.argmax(model.predict(x, batch_size=1024, verbose=0), -1) == y))


def run_model(name, x, y, xt, yt):
  keras.utils.set_random_seed(FLAGS.seed)
  dense = (zoo.get("lenet_300_100", input_shape=x.shape[1:]) if name == "lenet"
           else transformer(FLAGS.d_model, FLAGS.blocks))
  _compile(dense)
  start = time.time()
  dense.fit(x, y, epochs=FLAGS.dense_epochs, batch_size=FLAGS.batch_size, verbose=2)
  rows = [{"model": name, "method": "dense", "sparsity": 0.0,
           "accuracy": _accuracy(dense, xt, yt), "seconds": time.time() - start}]
  print(rows[-1], flush=True)
  steps = int(np.ceil(len(x) / FLAGS.batch_size)) * FLAGS.prune_epochs
  end = max(1, int(FLAGS.schedule_fraction * steps))
  for target in [float(s) for s in FLAGS.sparsities]:
    for method_name in FLAGS.methods:
      keras.utils.set_random_seed(FLAGS.seed)
      schedule = tfprune.PolynomialDecay(0.0, target, 0, end, power=3,
                                         frequency=FLAGS.frequency)
      pruned = tfprune.prune(dense, method_name, target_sparsity=target, schedule=schedule)
      method = tfprune.get_method(pruned)
      start = time.time()
      method.fit(pruned, x, y, epochs=FLAGS.prune_epochs, batch_size=FLAGS.batch_size,
                 optimizer=keras.optimizers.Adam(FLAGS.learning_rate), verbose=2)
      stripped = tfprune.strip(pruned)
      report = tfprune.sparsity_report(stripped, print_table=False)
      rows.append({"model": name, "method": method_name, "target": target,
                   "sparsity": tfprune.report.total_sparsity(report),
                   "accuracy": _accuracy(stripped, xt, yt),
                   "seconds": time.time() - start})
      print(rows[-1], flush=True)
  return rows


def main(argv):
  del argv
  (x, y), (xt, yt) = data.load("mnist")
  if FLAGS.n_train:
    x, y = x[:FLAGS.n_train], y[:FLAGS.n_train]
  rows = []
  for name in FLAGS.models:
    if name not in ("lenet", "transformer"):
      raise app.UsageError(f"--models: unknown model {name!r}; valid: lenet, transformer.")
    rows += run_model(name, x, y, xt, yt)
  print("| model | method | target | sparsity | test acc % | prune s |")
  print("|---|---|---:|---:|---:|---:|")
  for r in rows:
    print(f"| {r['model']} | {r['method']} | {r.get('target', 0.0):.2f} | "
          f"{r['sparsity']:.4f} | {100 * r['accuracy']:.2f} | {r['seconds']:.0f} |")
  if FLAGS.out:
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    _io.atomic_write(FLAGS.out, json.dumps({"flags": FLAGS.flag_values_dict(),
                                            "rows": rows}, indent=2, default=str))


if __name__ == "__main__":
  app.run(main)
