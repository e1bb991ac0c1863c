"""Global magnitude threshold at scale: tf.math.top_k vs radix select (tfprune.topk).

For N = 1M, 10M, 50M weights (split over MLP-like tensors), times in the same process:
  * `top_k`: the previous global path of `tfprune.masks` (concatenate the |W|, top_k
    with k = ceil((1 - s) N), scatter the kept indices into a mask, split back);
  * `radix`: `tfprune.topk.global_topk_masks` (histogram radix select on the float32
    bits, no concatenation, no sort);
checks that both give identical masks with exactly k ones, then times one training step
of a ~10M-weight MLP, the global-magnitude mask update of that MLP
(`method.update_masks` at a pruning step) and its ADMM Z/U step (global projection,
residuals, Z and U assignment), to express them as fractions of a training step.

    TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python bench/threshold_bench.py \
        [--sizes 1,10,50] [--sparsity 0.9] [--reps 3] [--out bench/out/threshold.json]
"""
import argparse
import json
import os
import time

import numpy as np
import tensorflow as tf

from tfprune import masks as masks_lib
from tfprune import topk


def _split(n):
  """MLP-like tensor sizes summing to n: 40% / 45% / 14% / rest."""
  parts = [int(n * 0.40), int(n * 0.45), int(n * 0.14)]
  parts.append(n - sum(parts))
  return parts


@tf.function(jit_compile=False)
def _topk_masks(scores, k):
  flat = tf.concat([tf.reshape(s, [-1]) for s in scores], 0)
  _, idx = tf.math.top_k(flat, k=k, sorted=False)
  mask = tf.scatter_nd(idx[:, None], tf.ones_like(idx, dtype=flat.dtype), tf.shape(flat))
  return tf.split(mask, [int(tf.size(s)) for s in scores])


@tf.function(jit_compile=False)
def _radix_masks(scores, k):
  return topk.global_topk_masks(scores, k)


def _time(fn, reps):
  fn()  # trace + warm up
  best = float("inf")
  for _ in range(reps):
    start = time.perf_counter()
    out = fn()
    _ = [o.numpy() for o in out] if isinstance(out, (list, tuple)) else out.numpy()
    best = min(best, time.perf_counter() - start)
  return best


def bench_threshold(n_millions, sparsity, reps, topk_reps):
  n = int(n_millions * 1_000_000)
  rng = np.random.default_rng(0)
  scores = [tf.constant(np.abs(rng.standard_normal(p, dtype=np.float32)))
            for p in _split(n)]
  k = int(masks_lib.keep_count(n, sparsity))
  t_radix = _time(lambda: _radix_masks(scores, k), reps)
  t_topk = _time(lambda: _topk_masks(scores, k), topk_reps)
  a = np.concatenate([m.numpy() for m in _radix_masks(scores, k)])
  b = np.concatenate([m.numpy() for m in _topk_masks(scores, k)])
  assert np.array_equal(a, b), "radix and top_k masks differ"
  assert int(a.sum()) == k
  return {"n": n, "k": k, "topk_s": t_topk, "radix_s": t_radix,
          "speedup": t_topk / t_radix}


def bench_mlp(sparsity, reps):
  """One Adam training step of a ~10M-weight MLP and its global mask update."""
  import keras  # pylint: disable=g-import-not-at-top
  import tfprune  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(0)
  model = keras.Sequential([keras.Input((1024,)), keras.layers.Dense(3072, activation="relu"),
                            keras.layers.Dense(2304, activation="relu"),
                            keras.layers.Dense(10)])
  pruned = tfprune.prune(model, "magnitude", target_sparsity=sparsity, scope="global")
  method = tfprune.get_method(pruned)
  n = sum(int(np.prod(w.shape)) for w in method.weights)
  pruned.compile(optimizer=keras.optimizers.Adam(1e-3),
                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  x = np.random.default_rng(0).normal(size=(128, 1024)).astype("float32")
  y = np.zeros(128, "int32")
  pruned.train_on_batch(x, y)
  steps = []
  for _ in range(reps):
    start = time.perf_counter()
    pruned.train_on_batch(x, y)
    steps.append(time.perf_counter() - start)
  update = tf.function(lambda: method.update_masks(sparsity))
  update()
  ups = []
  for _ in range(reps):
    start = time.perf_counter()
    update()
    _ = method.masks[0].numpy()
    ups.append(time.perf_counter() - start)
  admm_pruned = tfprune.prune(model, "admm", target_sparsity=sparsity, scope="global")
  admm = tfprune.get_method(admm_pruned)
  admm._run_z_step(0, first=True)  # pylint: disable=protected-access
  zs = []
  for i in range(reps + 1):
    admm._run_z_step(100 * (i + 1))  # pylint: disable=protected-access
    zs.append(admm.history[-1]["seconds"])
  return {"n": n, "batch": 128, "train_step_s": min(steps), "mask_update_s": min(ups),
          "admm_z_step_s": min(zs[1:])}


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--sizes", default="1,10,50", help="N in millions, comma-separated")
  parser.add_argument("--sparsity", type=float, default=0.9)
  parser.add_argument("--reps", type=int, default=3)
  parser.add_argument("--topk_reps", type=int, default=1)
  parser.add_argument("--skip_mlp", action="store_true")
  parser.add_argument("--out", default="bench/out/threshold.json")
  args = parser.parse_args()
  results = {"sparsity": args.sparsity, "cpus": os.cpu_count(),
             "loadavg_start": os.getloadavg(), "threshold": []}
  for size in [v for v in args.sizes.split(",") if v]:
    row = bench_threshold(float(size), args.sparsity, args.reps, args.topk_reps)
    results["threshold"].append(row)
    print(f"N={row['n']:>11,d} k={row['k']:>10,d}  top_k {row['topk_s']:8.3f} s  "
          f"radix {row['radix_s']:7.3f} s  speedup x{row['speedup']:.1f}", flush=True)
  if not args.skip_mlp:
    mlp = bench_mlp(args.sparsity, args.reps)
    results["mlp"] = mlp
    ten = [r for r in results["threshold"] if abs(r["n"] - 10_000_000) < 1]
    if ten:
      mlp["radix_threshold_fraction_of_step"] = ten[0]["radix_s"] / mlp["train_step_s"]
      mlp["topk_threshold_fraction_of_step"] = ten[0]["topk_s"] / mlp["train_step_s"]
    print(f"MLP {mlp['n']:,d} weights: train step (batch 128, Adam) "
          f"{mlp['train_step_s']:.3f} s; global mask update {mlp['mask_update_s']:.3f} s; "
          f"ADMM Z/U step {mlp['admm_z_step_s']:.3f} s",
          flush=True)
  results["loadavg_end"] = os.getloadavg()
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(results, f, indent=1)
  print(json.dumps(results, indent=1))


if __name__ == "__main__":
  main()
