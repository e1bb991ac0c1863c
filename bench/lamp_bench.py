"""LAMP vs plain global magnitude (with and without the layer floor) on LeNet-300-100.

Lee et al., "Layer-adaptive sparsity for the magnitude-based pruning", ICLR 2021: the
LAMP score `w_u^2 / sum_{v >= u} w_v^2` (within a layer, sorted ascending) makes a
global threshold scale-aware (docs/algorithms.md, "Layer floor and LAMP").

A dense LeNet-300-100 is trained once on MNIST; then, for each target sparsity and each
allocation (`global` with `max_pruning_ratio=1.0`: the plain threshold; `global`: with the
default layer floor; `lamp`: `global_score="lamp"` with the floor), a copy is pruned at
step 0 and fine-tuned with the mask fixed. Reported: test accuracy right after pruning
(one-shot) and after fine-tuning, the per-layer sparsities and the total. The same is
run on a "mixed-scale" copy of the dense model: the first Dense layer's kernel and bias
scaled by 0.01 and the second Dense kernel by 100 (the same function, since ReLU is
positively homogeneous), as a stand-in for layers of different weight scales (patch
embeddings, stems).

    TF_CPP_MIN_LOG_LEVEL=3 TFPRUNE_OFFLINE=1 .venv/bin/python bench/lamp_bench.py \
        [--train 20000] [--epochs 2] [--finetune 1] [--out bench/out/lamp.json]
"""
import argparse
import json
import os
import time

import keras
import numpy as np

import tfprune

SPARSITIES = (0.9, 0.95, 0.98)
VARIANTS = {
    "global (no floor)": dict(scope="global", max_pruning_ratio=1.0),
    "global + floor": dict(scope="global"),
    "lamp + floor": dict(scope="global", global_score="lamp"),
}


def _compile(model, optimizer=None):
  model.compile(optimizer or keras.optimizers.Adam(1e-3),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])


def _accuracy(model, x, y):
  logits = model.predict(x, batch_size=1000, verbose=0)
  return float(np.mean(np.argmax(logits, -1) == y))


def _mixed_scale(weights):
  """Scales Dense 1 (kernel and bias) by 0.01 and Dense 2's kernel by 100."""
  w = [np.array(v) for v in weights]
  w[0] *= 0.01
  w[1] *= 0.01
  w[2] *= 100.0
  return w


def run_one(weights, variant, sparsity, data, finetune, batch):
  (x, y), (xt, yt) = data
  model = tfprune.zoo.lenet_300_100()
  model.set_weights(weights)
  pruned = tfprune.prune(model, "magnitude", target_sparsity=sparsity,
                         schedule=tfprune.ConstantSparsity(sparsity, 0, frequency=10 ** 9),
                         **VARIANTS[variant])
  method = tfprune.get_method(pruned)
  method.update_masks(sparsity)  # the one-shot masks (step 0 of the schedule)
  one_shot = _accuracy(pruned, xt, yt)
  _compile(pruned, method.prepare_optimizer(keras.optimizers.Adam(1e-3)))
  pruned.fit(x, y, epochs=finetune, batch_size=batch, verbose=0,
             callbacks=[tfprune.PruningCallback()])
  rows = tfprune.sparsity_report(pruned, print_table=False)
  return {"variant": variant, "target": sparsity, "one_shot_acc": one_shot,
          "finetuned_acc": _accuracy(pruned, xt, yt),
          "total_sparsity": tfprune.report.total_sparsity(rows),
          "layers": {r["layer"]: round(r["sparsity"], 4) for r in rows},
          "dead": [r["layer"] for r in rows if r["dead"]]}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--train", type=int, default=20000)
  parser.add_argument("--epochs", type=int, default=2)
  parser.add_argument("--finetune", type=int, default=1)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--out", default="bench/out/lamp.json")
  args = parser.parse_args()
  keras.utils.set_random_seed(0)
  (x, y), (xt, yt) = tfprune.data.load("mnist")
  x, y = x[:args.train], y[:args.train]
  data = ((x, y), (xt, yt))
  t0 = time.time()
  dense = tfprune.zoo.lenet_300_100()
  _compile(dense)
  dense.fit(x, y, epochs=args.epochs, batch_size=args.batch, verbose=0)
  base = dense.get_weights()
  results = {"dense_acc": _accuracy(dense, xt, yt), "runs": {}}
  mixed = keras.models.clone_model(dense)
  mixed.set_weights(_mixed_scale(base))
  results["mixed_dense_acc"] = _accuracy(mixed, xt, yt)
  print(f"dense {results['dense_acc']:.4f}, mixed-scale dense "
        f"{results['mixed_dense_acc']:.4f}")
  for model_name, weights in (("lenet_300_100", base), ("mixed_scale", _mixed_scale(base))):
    runs = results["runs"].setdefault(model_name, [])
    for sparsity in SPARSITIES:
      for variant in VARIANTS:
        keras.utils.set_random_seed(0)
        r = run_one(weights, variant, sparsity, data, args.finetune, args.batch)
        runs.append(r)
        print(f"{model_name:14s} s={sparsity:.2f} {variant:18s} one-shot "
              f"{r['one_shot_acc']:.4f} fine-tuned {r['finetuned_acc']:.4f} total "
              f"{r['total_sparsity']:.4f} layers {r['layers']} dead {r['dead']}",
              flush=True)
  results["seconds"] = time.time() - t0
  results["args"] = vars(args)
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(results, f, indent=1)
  print(f"wrote {args.out} ({results['seconds']:.0f} s)")


if __name__ == "__main__":
  main()
