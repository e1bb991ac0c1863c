"""Stand-alone ADMM benchmark (interim, until bench/compare.py runs every method).

Trains (or reloads) the dense model, then runs `tfprune.prune(model, "admm", **kwargs)` +
`method.fit(...)` with the TFMOT protocol (Adam 1e-3, batch 128) and appends one JSON line
per run to bench/out/admm_results.jsonl.

  python bench/admm_bench.py --model=lenet_300_100 --dataset=mnist --sparsity=0.99 \
      --seeds=0,1,2 --dense_epochs=10 --prune_epochs=10 \
      --kwargs='{"admm_epochs": 6, "admm_interval": 50, "rho_growth": 1.2}'
"""
import json
import os
import time

from absl import app
from absl import flags
import keras
import numpy as np

import tfprune
from tfprune import data
from tfprune import zoo
from tfprune.methods import admm

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "lenet_300_100", "zoo model name")
flags.DEFINE_string("dataset", "mnist", "data set")
flags.DEFINE_list("sparsity", ["0.98"], "target sparsities")
flags.DEFINE_list("seeds", ["0"], "seeds")
flags.DEFINE_integer("dense_epochs", 10, "dense epochs")
flags.DEFINE_integer("prune_epochs", 10, "ADMM + fine-tune epochs")
flags.DEFINE_string("kwargs", "{}", "JSON method kwargs")
flags.DEFINE_string("out", "bench/out/admm_results.jsonl", "results file")
flags.DEFINE_string("tag", "", "free-form tag stored with the result")
flags.DEFINE_float("distill_alpha", 0.0, "Tried and not adopted: train ADMM + fine-tune on "
                   "(1 - a) * one-hot + a * softmax(dense teacher logits) (distillation at "
                   "T = 1); 0 = plain labels.")

OUT = os.path.dirname(os.path.abspath(__file__)) + "/out"


def _compile(model):
  model.compile(keras.optimizers.Adam(1e-3),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])


def dense_model(name, dataset, seed, epochs, x, y, xt, yt):
  path = f"{OUT}/dense_{name}_{dataset}_s{seed}_e{epochs}.weights.h5"
  keras.utils.set_random_seed(seed)
  model = zoo.get(name, input_shape=x.shape[1:])
  _compile(model)
  if os.path.exists(path):
    model.load_weights(path)
  else:
    model.fit(x, y, epochs=epochs, batch_size=128, verbose=2)
    model.save_weights(path)
  return model, float(model.evaluate(xt, yt, verbose=0)[1])


def main(argv):
  del argv
  (x, y), (xt, yt) = data.load(FLAGS.dataset)
  kwargs = json.loads(FLAGS.kwargs)
  for seed in [int(s) for s in FLAGS.seeds]:
    for sparsity in [float(s) for s in FLAGS.sparsity]:
      dense, dense_acc = dense_model(FLAGS.model, FLAGS.dataset, seed, FLAGS.dense_epochs,
                                     x, y, xt, yt)
      targets, loss, val = y, None, (xt, yt)
      if FLAGS.distill_alpha:
        teacher = keras.ops.softmax(dense.predict(x, batch_size=1024, verbose=0), -1)
        onehot = np.eye(int(y.max()) + 1, dtype=np.float32)
        targets = ((1 - FLAGS.distill_alpha) * onehot[y]
                   + FLAGS.distill_alpha * keras.ops.convert_to_numpy(teacher))
        loss = keras.losses.CategoricalCrossentropy(from_logits=True)
        val = (xt, onehot[yt])
      keras.utils.set_random_seed(seed + 1000)
      pruned = tfprune.prune(dense, "admm", target_sparsity=sparsity, **kwargs)
      method = tfprune.get_method(pruned)
      start = time.time()
      method.fit(pruned, x, targets, epochs=FLAGS.prune_epochs, batch_size=128, loss=loss,
                 validation_data=val, verbose=2)
      wall = time.time() - start
      stripped = tfprune.strip(pruned)
      _compile(stripped)
      acc = float(stripped.evaluate(xt, yt, verbose=0)[1])
      rep = method.report()
      row = {"model": FLAGS.model, "dataset": FLAGS.dataset, "seed": seed,
             "sparsity": sparsity, "kwargs": kwargs, "dense_acc": dense_acc,
             "test_acc": acc, "wall_s": wall, "zstep_s": rep["zstep_seconds_total"],
             "z_steps": rep["z_steps"], "final_primal": rep["final_primal_residual"],
             "kept": rep["kept_fraction"], "real_sparsity": rep["sparsity"],
             "tag": FLAGS.tag, "distill_alpha": FLAGS.distill_alpha}
      print(json.dumps(row), flush=True)
      with open(FLAGS.out, "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
  app.run(main)
