"""SAP benchmark: PQ Index and accuracy per round vs iterative magnitude pruning (IMP).

Diao et al., "Pruning Deep Neural Networks from a Sparsity Perspective", ICLR 2023.
One run, all arms from the same dense LeNet-300-100 (10 epochs on MNIST, seed 0, Adam
1e-3, batch 128; reused from bench/out if there), each `--rounds` pruning rounds of
`--epochs_per_round` epochs (rounds + 1 training phases, round 0 before any pruning):

  * sap:            `tfprune.prune(model, "sap", scope=--scope)` + `method.fit(...)`;
  * imp_layer:      IMP removing, each round, the SAME total count as SAP did, spread
                    over the layers in proportion to their remaining weights (uniform);
  * imp_global:     same counts, one global magnitude threshold;
  * probe_imp_50:   IMP removing 50% of the remaining weights per round (global), run into
                    collapse, to test whether the PQI rule (`sap.pqi_stop_round`) fires
                    near the accuracy collapse;
  * sap_global (with --sap_global): SAP with scope=global.

Writes bench/out/sap/results.json, rounds.md (tables) and sap_rounds.png (the curve).

  TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python bench/sap_bench.py --rounds=10 \
      --epochs_per_round=1 --scope=layer --sap_global
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
from tfprune import plots
from tfprune import report
from tfprune import zoo
from tfprune.methods import sap

FLAGS = flags.FLAGS
flags.DEFINE_integer("rounds", 10, "pruning rounds T")
flags.DEFINE_integer("epochs_per_round", 1, "epochs per round E")
flags.DEFINE_enum("scope", "layer", list(sap.SCOPES), "SAP scope of the main arm")
flags.DEFINE_boolean("sap_global", True, "also run SAP with scope=global")
flags.DEFINE_float("probe_ratio", 0.5, "per-round prune ratio of the collapse probe")
flags.DEFINE_integer("seed", 0, "seed")
flags.DEFINE_integer("dense_epochs", 10, "dense pre-training epochs")
flags.DEFINE_string("out_dir", "bench/out/sap", "output directory")
flags.DEFINE_boolean("rewind", False, "rewind survivors to the dense weights each round")
flags.DEFINE_integer("n_train", None, "smoke runs: first n training examples only")

OUT = os.path.dirname(os.path.abspath(__file__)) + "/out"


class FixedCountIMP(sap.SAP):
  """IMP inside the SAP loop: prunes given totals per round (not registered).

  `counts[t]` weights are removed after round t (an int), or `ratio` of the remaining
  ones; `scope="layer"` spreads the total over layers in proportion to their remaining
  weights, `scope="global"` takes the smallest magnitudes over the whole model.
  """

  def __init__(self, counts=None, ratio=None, **kwargs):
    super().__init__(**kwargs)
    self.counts, self.ratio, self._round = counts, ratio, 0

  def plan_counts(self, groups):
    d = [int(np.sum(m.numpy())) for _, m in groups]
    remaining = sum(d)
    if self.ratio is not None:
      total = int(np.floor(self.ratio * remaining))
    else:
      total = int(self.counts[self._round])
    self._round += 1
    parts = sap.split_counts(min(total, remaining), d)
    return [{"d": np.array([di]), "pq_index": np.zeros(1), "bound": np.zeros(1),
             "count": np.array([c])} for di, c in zip(d, parts)]


def _dense(x, y, xt, yt):
  shared = f"{OUT}/dense_lenet_300_100_mnist_s{FLAGS.seed}_e{FLAGS.dense_epochs}.weights.h5"
  own = f"{FLAGS.out_dir}/dense_s{FLAGS.seed}_e{FLAGS.dense_epochs}.weights.h5"
  keras.utils.set_random_seed(FLAGS.seed)
  model = zoo.lenet_300_100(input_shape=x.shape[1:])
  model.compile(keras.optimizers.Adam(1e-3),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
  for path in (shared, own):
    if os.path.exists(path):
      model.load_weights(path)
      print(f"dense weights from {path}", flush=True)
      break
  else:
    model.fit(x, y, epochs=FLAGS.dense_epochs, batch_size=128, verbose=2)
    model.save_weights(own)
  return model, float(model.evaluate(xt, yt, verbose=0)[1])


def _run(name, dense, method, x, y, xt, yt):
  keras.utils.set_random_seed(FLAGS.seed)
  start = time.time()
  pruned = tfprune.prune(dense, method)
  method.fit(pruned, x, y, epochs=(FLAGS.rounds + 1) * FLAGS.epochs_per_round,
             batch_size=128, validation_data=(xt, yt), verbose=0)
  log = method.round_log
  for r in log:
    r["pq_index_layers"] = {k: float(v) for k, v in r["pq_index_layers"].items()}
  final = float(pruned.evaluate(xt, yt, verbose=0)[1])
  print(f"[{name}] {time.time() - start:.0f}s final sparsity {log[-1]['sparsity']:.4f} "
        f"accuracy {100 * final:.2f}%", flush=True)
  print(report.format_rounds(log), flush=True)
  pqis = [r["pq_index"] for r in log]
  accs = [r["accuracy"] for r in log]
  stop = sap.pqi_stop_round(pqis)
  return {"name": name, "seconds": time.time() - start, "final_accuracy": final,
          "round_log": log, "pqi_stop_round": stop,
          "pqi_chosen_round": None if stop is None else stop - 1,
          "accuracy_drop_round": sap.accuracy_drop_round(accs, 1.0),
          "accuracy_drop_round_vs_round0": next(
              (t for t, a in enumerate(accs) if a < accs[0] - 0.01), None)}


def _sap_kwargs(scope):
  return dict(rounds=FLAGS.rounds, epochs_per_round=FLAGS.epochs_per_round, scope=scope,
              rewind=FLAGS.rewind)


def main(argv):
  del argv
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  (x, y), (xt, yt) = data.subset(data.load("mnist"), n_train=FLAGS.n_train)
  dense, dense_acc = _dense(x, y, xt, yt)
  print(f"dense accuracy {100 * dense_acc:.2f}%", flush=True)
  runs = {}
  runs["sap"] = _run(f"sap_{FLAGS.scope}", dense, sap.SAP(**_sap_kwargs(FLAGS.scope)),
                     x, y, xt, yt)
  counts = [r["pruned"] for r in runs["sap"]["round_log"]]
  print(f"SAP per-round counts {counts}", flush=True)
  runs["imp_layer"] = _run("imp_layer", dense,
                           FixedCountIMP(counts=counts, **_sap_kwargs("layer")), x, y, xt, yt)
  runs["imp_global"] = _run("imp_global", dense,
                            FixedCountIMP(counts=counts, **_sap_kwargs("global")),
                            x, y, xt, yt)
  if FLAGS.sap_global:
    runs["sap_global"] = _run("sap_global", dense, sap.SAP(**_sap_kwargs("global")),
                              x, y, xt, yt)
  runs["probe_imp_50"] = _run(
      f"probe_imp_{int(100 * FLAGS.probe_ratio)}", dense,
      FixedCountIMP(ratio=FLAGS.probe_ratio, **_sap_kwargs("global")), x, y, xt, yt)

  result = {"dense_accuracy": dense_acc, "flags": FLAGS.flag_values_dict(), "runs": runs}
  with open(f"{FLAGS.out_dir}/results.json", "w") as f:
    json.dump(result, f, indent=1, default=float)
  lines = [f"dense accuracy {100 * dense_acc:.2f}%", ""]
  for key, run in runs.items():
    lines += [f"### {run['name']} ({run['seconds']:.0f} s, final accuracy "
              f"{100 * run['final_accuracy']:.2f}%, PQI rule stops at round "
              f"{run['pqi_stop_round']} -> keeps {run['pqi_chosen_round']}, accuracy first "
              f">1pt below best at round {run['accuracy_drop_round']}, below round 0 at "
              f"{run['accuracy_drop_round_vs_round0']})", "",
              report.format_rounds(run["round_log"]), ""]
  lines += ["### SAP vs IMP with the same per-round counts", "",
            report.format_rounds(runs["sap"]["round_log"], runs["imp_layer"]["round_log"],
                              "IMP-layer"), ""]
  with open(f"{FLAGS.out_dir}/rounds.md", "w") as f:
    f.write("\n".join(lines))
  plots.sap_rounds(runs["sap"]["round_log"], f"{FLAGS.out_dir}/sap_rounds.png",
                  baselines={"IMP-layer (same counts)": runs["imp_layer"]["round_log"],
                             "IMP-global (same counts)": runs["imp_global"]["round_log"]},
                  title=f"LeNet-300-100 / MNIST: SAP ({FLAGS.scope}) vs IMP, "
                        f"{FLAGS.rounds} rounds x {FLAGS.epochs_per_round} epoch",
                  stop_round=runs["sap"]["pqi_stop_round"],
                  drop_round=runs["sap"]["accuracy_drop_round"])
  probe = runs["probe_imp_50"]
  plots.sap_rounds(probe["round_log"], f"{FLAGS.out_dir}/probe_rounds.png",
                  title=f"Collapse probe: IMP global {int(100 * FLAGS.probe_ratio)}%/round",
                  stop_round=probe["pqi_stop_round"], drop_round=probe["accuracy_drop_round"],
                  label="IMP-50")
  print("\n".join(lines), flush=True)


if __name__ == "__main__":
  app.run(main)
