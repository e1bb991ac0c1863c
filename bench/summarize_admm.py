"""Prints the ADMM benchmark table (markdown) from bench/out/admm_results.jsonl."""
import collections
import json
import sys

path = sys.argv[1] if len(sys.argv) > 1 else "bench/out/admm_results.jsonl"
tag = sys.argv[2] if len(sys.argv) > 2 else "final"
groups = collections.defaultdict(list)
for line in open(path):
  r = json.loads(line)
  if r.get("tag") == tag:
    groups[(r["model"], r["dataset"], r["sparsity"])].append(r)
print("| model / data | sparsity | seeds | dense % | ADMM test % (per seed) | mean % | "
      "wall s (ADMM fit) | Z-step s | kept fraction per layer (seed 0) |")
print("|---|---|---|---|---|---|---|---|---|")
for (model, data, s), rows in sorted(groups.items()):
  accs = [100 * r["test_acc"] for r in rows]
  dense = ", ".join(f"{100 * r['dense_acc']:.2f}" for r in rows)
  kept = ", ".join(f"{k.split('/')[0]} {100 * v:.1f}%" for k, v in rows[0]["kept"].items())
  print(f"| {model} / {data} | {s} | {','.join(str(r['seed']) for r in rows)} | "
        f"{dense} | "
        f"{', '.join(format(a, '.2f') for a in accs)} | {sum(accs) / len(accs):.2f} | "
        f"{sum(r['wall_s'] for r in rows) / len(rows):.0f} | "
        f"{sum(r['zstep_s'] for r in rows) / len(rows):.1f} | {kept} |")
