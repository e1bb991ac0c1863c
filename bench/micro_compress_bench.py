r"""TFLite Micro flash, arena and time of DECODE-compressed int8 models (issue 27, item 6).

ResNet-8 on Fashion-MNIST 32x32x1 and DS-CNN on synthetic keyword features, full-int8
`target="micro"` exports of: dense; structurally shrunk (`scope="structured"` magnitude
to each of --target_macs of the MACs, `strip(shrink=True)`); unstructured global magnitude
pruned to each of --sparsities (exported with compress "off", "pruning" and "auto");
clustered (`tfprune.cluster(n_clusters=--clusters)`, exported "off", "lut", "auto");
pruned + clustered with `preserve_sparsity=True` ("auto"); shrunk + pruned + clustered
("auto"). Every variant starts from the same dense weights; each compression stage
(structured prune, unstructured prune, cluster) trains --finetune_epochs epochs (so a
two-stage combination has trained twice as long as a one-stage variant: the seconds
column says so); BatchNormalization statistics are re-estimated on --bn_samples
training images before every evaluation and export
(`tfprune.layerwise.recalibrate_batchnorm`).

Per export: flash (file bytes), ratios vs the dense int8 micro file and vs the stock
converter's file (`tf.lite.TFLiteConverter` full-int8 of the dense model, no tfprune,
same calibration data), TFLM arena with decoded tensors in the arena / with alternate
decompression memory (and its size), host TFLM invoke time (reference kernels) of the
compressed vs uncompressed file (`ExportResult.memory`). `convert` verifies every
compressed file in the TFLM interpreter bit-identical to the uncompressed one; here the
compressed file is also run in TFLM on the first --tflm_check test inputs and must give
the uncompressed file's TFLM outputs exactly. Accuracy: the Keras model, and the
uncompressed int8 file run with ai_edge_litert (XNNPACK, batched) over the test subset;
the compressed files' outputs are the uncompressed file's (checked above), so they share
that accuracy. DS-CNN accuracy is on synthetic features (scripts/make_demo_assets.py
`synthetic_kws`), not Speech Commands.

Rows, the markdown and the plot are rewritten after every variant, so a run cut off
part way leaves every finished row.

Full run (bench/RESULTS_micro.md):
  nohup .venv/bin/python bench/micro_compress_bench.py > bench/out/micro_compress.log 2>&1 &
Smoke run (~4 minutes, writes to bench/out/micro_compress_quick):
  .venv/bin/python bench/micro_compress_bench.py --quick
Markdown and plot again from the saved rows:
  .venv/bin/python bench/micro_compress_bench.py --from_json=bench/results/micro_compress.json
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # pylint: disable=g-import-not-at-top

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "scripts"))

MODELS = ("resnet8", "ds_cnn")
TARGET_A_SPARSITY = 0.8     # target (a): an 80%-sparse int8 conv net ...
TARGET_A_RATIO = 0.45       # ... at most 0.45x of its uncompressed micro file
TARGET_B_RATIO = 0.30       # target (b): <= 0.30x of the dense int8 file ...
TARGET_B_POINTS = 1.0       # ... within 1 accuracy point of the dense model


def parse(argv):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", default=",".join(MODELS))
  p.add_argument("--epochs", type=int, default=10, help="dense training epochs")
  p.add_argument("--finetune_epochs", type=int, default=3,
                 help="epochs of every compression stage (prune, shrink, cluster)")
  p.add_argument("--train_samples", type=int, default=3000,
                 help="first N Fashion-MNIST training images")
  p.add_argument("--test_samples", type=int, default=10000,
                 help="first N test images (10000: the whole test set)")
  p.add_argument("--kws_train", type=int, default=1536, help="synthetic KWS train samples")
  p.add_argument("--kws_test", type=int, default=512, help="synthetic KWS test samples")
  p.add_argument("--sparsities", default="0.5,0.75,0.8,0.9",
                 help="unstructured global magnitude sparsities (kernels)")
  p.add_argument("--combo_sparsities", default="0.75,0.8,0.9",
                 help="sparsities of the pruned + clustered and shrunk + pruned + "
                      "clustered rows")
  p.add_argument("--target_macs", default="0.5,0.35",
                 help="MAC budgets of the structured shrink (one shrunk row each, and "
                      "shrunk + pruned + clustered rows from each)")
  p.add_argument("--clusters", type=int, default=16)
  p.add_argument("--batch_size", type=int, default=32)
  p.add_argument("--learning_rate", type=float, default=1e-3)
  p.add_argument("--bn_samples", type=int, default=1000)
  p.add_argument("--calibration", type=int, default=200,
                 help="training inputs used as representative data")
  p.add_argument("--tflm_check", type=int, default=32,
                 help="test inputs the compressed file runs in TFLM vs the uncompressed")
  p.add_argument("--invoke_rounds", type=int, default=3,
                 help="alternating rounds of the invoke timing (compressed, uncompressed; "
                      "least median of 20 invokes); 0: the exporter's single measurement")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--threads", type=int, default=2, help="TF intra/inter-op threads")
  p.add_argument("--quick", action="store_true",
                 help="smoke run: 512/256 images, 1 + 1 epochs, sparsities 0.8, combo "
                      "0.8, target_macs 0.5, output in bench/out/micro_compress_quick")
  p.add_argument("--from_json", default=None,
                 help="only rewrite the markdown and the plot from a saved JSON (e.g. "
                      "bench/results/micro_compress.json)")
  p.add_argument("--output_dir", default=None,
                 help="JSON/markdown/plot directory (default bench/results and bench/)")
  args = p.parse_args(argv)
  if args.quick:
    args.train_samples, args.test_samples, args.kws_train, args.kws_test = 512, 256, 256, 128
    args.epochs, args.finetune_epochs = 1, 1
    args.sparsities, args.combo_sparsities = "0.8", "0.8"
    args.target_macs = "0.5"
    args.bn_samples, args.calibration = 256, 64
  args.sparsities = [float(s) for s in args.sparsities.split(",") if s]
  args.combo_sparsities = [float(s) for s in args.combo_sparsities.split(",") if s]
  args.target_macs = [float(m) for m in args.target_macs.split(",") if m]
  for m in args.target_macs:
    if not 0.0 < m < 1.0:
      p.error(f"--target_macs: {m} is not a MAC fraction in (0, 1)")
  for s in args.sparsities + args.combo_sparsities:
    if not 0.0 < s < 1.0:
      p.error(f"sparsity {s} is not in (0, 1)")
  args.models = [m for m in args.models.split(",") if m]
  for m in args.models:
    if m not in MODELS:
      p.error(f"--models: unknown {m!r}; valid: {', '.join(MODELS)}")
  return args


# ------------------------------------------------------------------- data and models
def fashion_32(n_train, n_test):
  """Fashion-MNIST resized to 32x32x1 (bilinear), rounded to 1/255, float32 in [0, 1]
  (the images of bench/admm_ratio_bench.py, whose absl flags clash with
  scripts/make_demo_assets.py's, so it is not imported here)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfprune import data as data_lib  # pylint: disable=g-import-not-at-top
  (x, y), (xt, yt) = data_lib.load("fashion_mnist")

  def resize(images):
    out = tf.image.resize(images[..., None] if images.ndim == 3 else images, (32, 32))
    return (np.round(np.clip(out.numpy(), 0, 1) * 255) / 255).astype(np.float32)

  return (resize(x[:n_train]), y[:n_train]), (resize(xt[:n_test]), yt[:n_test])


def recalibrate_bn(model, x):
  from tfprune import layerwise  # pylint: disable=g-import-not-at-top
  layerwise.recalibrate_batchnorm(model, x, verbose=False)


def data_for(name, args):
  """((x, y), (xt, yt)) float32 inputs for `name`, and a description."""
  if name == "resnet8":
    (x, y), (xt, yt) = fashion_32(args.train_samples, args.test_samples)
    return ((x, y), (xt, yt),
            f"Fashion-MNIST resized to 32x32x1 (bilinear, uint8-rounded, 1 channel), "
            f"first {len(x)} training / first {len(xt)} test images")
  from make_demo_assets import synthetic_kws  # pylint: disable=g-import-not-at-top
  x, y = synthetic_kws(args.kws_train, args.seed)
  xt, yt = synthetic_kws(args.kws_test, args.seed + 1)
  return ((x, y), (xt, yt), f"synthetic 12-class keyword features 49x10x1 "
          f"(scripts/make_demo_assets.py synthetic_kws), {len(x)} train / {len(xt)} test")


def build(name, x):
  from tfprune import zoo  # pylint: disable=g-import-not-at-top
  classes = 10 if name == "resnet8" else 12
  return zoo.get(name, input_shape=x.shape[1:], num_classes=classes)


def keras_accuracy(model, x, y):
  return float(np.mean(np.argmax(model.predict(x, batch_size=500, verbose=0), -1) == y))


def fit_method(pruned, x, y, args):
  import keras  # pylint: disable=g-import-not-at-top
  import tfprune  # pylint: disable=g-import-not-at-top
  tfprune.get_method(pruned).fit(pruned, x, y, epochs=args.finetune_epochs,
                                 batch_size=args.batch_size,
                                 optimizer=keras.optimizers.Adam(args.learning_rate),
                                 verbose=0)


def prune_unstructured(model, sparsity, x, y, args):
  """Gradual global magnitude pruning to `sparsity` (0 -> s over the first 60% of the
  steps), fine-tuned; the stripped model."""
  import tfprune  # pylint: disable=g-import-not-at-top
  steps = -(-len(x) // args.batch_size) * args.finetune_epochs
  ramp = max(int(0.6 * steps), 1)
  pruned = tfprune.prune(model, "magnitude", target_sparsity=sparsity, scope="global",
                         schedule=tfprune.PolynomialDecay(0.0, sparsity, 0, ramp,
                                                          frequency=max(ramp // 12, 1)))
  fit_method(pruned, x, y, args)
  return tfprune.strip(pruned)


def shrink(model, target_macs, x, y, args):
  """Structured (channel) magnitude pruning to `target_macs`, fine-tuned, shrunk."""
  import tfprune  # pylint: disable=g-import-not-at-top
  pruned = tfprune.prune(model, "magnitude", scope="structured", target_macs=target_macs,
                         allocation="global", target_sparsity=0.5)
  fit_method(pruned, x, y, args)
  return tfprune.strip(pruned, shrink=True)


def cluster(model, x, y, args):
  """Sparsity-preserving clustering, centroids fine-tuned; the stripped model."""
  import keras  # pylint: disable=g-import-not-at-top
  import tfprune  # pylint: disable=g-import-not-at-top
  clustered = tfprune.cluster(model, n_clusters=args.clusters, preserve_sparsity=True,
                              seed=args.seed)
  clustered.compile(optimizer=keras.optimizers.Adam(args.learning_rate),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  clustered.fit(x, y, epochs=args.finetune_epochs, batch_size=args.batch_size, verbose=0)
  return tfprune.strip(clustered)


def kernel_stats(model):
  """(sparsity of conv + dense kernels, max distinct values in one kernel, params)."""
  import tfprune  # pylint: disable=g-import-not-at-top
  rows = [r for r in tfprune.sparsity_report(model, print_table=False) if r["weight"] == "kernel"]
  total = sum(r["size"] for r in rows)
  zeros = sum(r["size"] - r["nonzeros"] for r in rows)
  distinct = 0
  for layer in model.layers:
    k = getattr(layer, "kernel", None)
    if k is not None:
      distinct = max(distinct, int(np.unique(np.asarray(k)).size))
  return zeros / max(total, 1), distinct, int(model.count_params())


def macs_fraction(model, dense):
  from tfprune import structured  # pylint: disable=g-import-not-at-top
  total = structured.shrink_report(dense, model)[-1]
  return total["macs_after"] / total["macs_before"]


# ---------------------------------------------------------------------- exports
def stock_convert(model, x):
  """Plain `tf.lite.TFLiteConverter` full-int8 of `model` (no tfprune): file bytes."""
  import tempfile  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfprune import _capture as capture  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as tmp, capture.captured_output(enabled=True):
    model.export(os.path.join(tmp, "sm"), verbose=False)
    conv = tf.lite.TFLiteConverter.from_saved_model(os.path.join(tmp, "sm"))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x[i:i + 1]] for i in range(len(x)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    return conv.convert()


def litert_accuracy(model_bytes, x, y, batch=250):
  """Top-1 accuracy of an int8 .tflite over (x, y) in ai_edge_litert (batched)."""
  from ai_edge_litert.interpreter import Interpreter  # pylint: disable=g-import-not-at-top
  interp = Interpreter(model_content=bytes(model_bytes), num_threads=1)
  inp = interp.get_input_details()[0]
  interp.resize_tensor_input(inp["index"], (batch,) + x.shape[1:])
  interp.allocate_tensors()
  inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
  scale, zp = inp["quantization"]
  hits = 0
  for i in range(0, len(x), batch):
    chunk = x[i:i + batch]
    q = np.clip(np.round(chunk / scale) + zp, -128, 127).astype(np.int8)
    if len(q) < batch:
      q = np.concatenate([q, np.zeros((batch - len(q),) + q.shape[1:], np.int8)])
    interp.set_tensor(inp["index"], q)
    interp.invoke()
    pred = interp.get_tensor(out["index"])[:len(chunk)].argmax(-1)
    hits += int(np.sum(pred == y[i:i + len(chunk)]))
  return hits / len(x)


def export_row(model, compress, calib):
  """Exports `model` with `compress`: (row of flash / arena / time, file bytes)."""
  from tfprune import export  # pylint: disable=g-import-not-at-top
  t0 = time.time()
  res = export.convert(model, target="micro", quantize="int8", representative_data=calib,
                       compress=compress)
  mem = res.memory
  row = {"compress": compress, "flash": mem.flash_bytes,
         "uncompressed_flash": mem.uncompressed_flash_bytes,
         "arena": mem.arena_bytes, "arena_alt": mem.arena_bytes_alt,
         "alt_bytes": mem.alt_decompression_bytes,
         "uncompressed_arena": mem.uncompressed_arena_bytes,
         "invoke_us": mem.invoke_us, "uncompressed_invoke_us": mem.uncompressed_invoke_us,
         "encodings": {}, "notes": list(res.notes)}
  for t in mem.tensors:
    row["encodings"][t.encoding] = row["encodings"].get(t.encoding, 0) + 1
  # conv/FC weight and bias bytes as stored (encoded + ancillary) vs dense: the share of
  # the file DECODE acts on (the rest: quantization parameters, names, graph)
  row["tensor_bytes"] = sum(t.bytes for t in mem.tensors)
  row["tensor_dense_bytes"] = sum(t.dense_bytes for t in mem.tensors)
  row["export_seconds"] = time.time() - t0
  return row, res.model_bytes


def invoke_us(files, x, rounds):
  """Least median host TFLM invoke time (us) of each file over `rounds` alternating
  rounds (the machine is shared: alternating and taking the least damps the noise)."""
  from tfprune.export import verify  # pylint: disable=g-import-not-at-top
  best = [float("inf")] * len(files)
  for _ in range(rounds):
    for i, data in enumerate(files):
      best[i] = min(best[i], verify.tflm_invoke_us(data, x))
  return best


def tflm_same(compressed, uncompressed, xt):
  """Whether the two files give identical raw TFLM outputs on `xt`."""
  from tfprune.export import verify  # pylint: disable=g-import-not-at-top
  a = verify.run_tflm(compressed, xt)[1]
  b = verify.run_tflm(uncompressed, xt)[1]
  return bool(np.array_equal(a, b))


# ---------------------------------------------------------------------- reporting
def table(rows, stock_bytes, dense_flash):
  head = ("| model | variant | compress | kernel sparsity | max distinct / kernel | "
          "params | flash B | vs dense int8 | vs stock | arena B (decoded in arena) | "
          "arena B (alt memory) + alt B | arena B uncompressed | invoke us (uncompr.) | "
          "Keras acc % | int8 acc % | TFLM == uncompr. | train s | export s |")
  lines = [head, "|" + "---|" * (head.count("|") - 1)]
  for r in rows:
    e = r["export"]
    alt = (f"{e['arena_alt']:,} + {e['alt_bytes']:,}" if e["alt_bytes"]
           else "-")
    acc = lambda v: "-" if v is None else f"{100 * v:.2f}"
    lines.append(
        f"| {r['model']} | {r['variant']} | {e['compress']} | {r['sparsity']:.1%} | "
        f"{r['distinct']} | {r['params']:,} | {e['flash']:,} | "
        f"{e['flash'] / dense_flash[r['model']]:.3f} | "
        f"{e['flash'] / stock_bytes[r['model']]:.3f} | {e['arena']:,} | {alt} | "
        f"{e['uncompressed_arena']:,} | {e['invoke_us']:,.0f} "
        f"({e['uncompressed_invoke_us']:,.0f}) | {acc(r['keras_acc'])} | "
        f"{acc(r['int8_acc'])} | {r['tflm_same']} | {r['train_seconds']:.0f} | "
        f"{e['export_seconds']:.0f} |")
  return "\n".join(lines)


def targets(rows, dense_flash):
  """Markdown lines for targets (a) and (b)."""
  out = []
  a = [r for r in rows if r["export"]["compress"] != "off"
       and abs(r["sparsity"] - TARGET_A_SPARSITY) < 0.03 and "cluster" not in r["variant"]
       and "shrunk" not in r["variant"]]
  for r in a:
    e = r["export"]
    ratio = e["flash"] / e["uncompressed_flash"]
    out.append(f"* (a) {r['model']} {r['variant']} ({r['sparsity']:.1%} sparse kernels), "
               f"compress={e['compress']}: flash {e['flash']:,} / {e['uncompressed_flash']:,} "
               f"= {ratio:.3f}x of the uncompressed micro file (target <= {TARGET_A_RATIO}), "
               f"TFLM outputs identical: {r['tflm_same']} -> "
               f"**{'MET' if ratio <= TARGET_A_RATIO and r['tflm_same'] else 'MISSED'}**"
               + (f"; its conv/FC weights and biases alone: {e['tensor_bytes']:,} / "
                  f"{e['tensor_dense_bytes']:,} = "
                  f"{e['tensor_bytes'] / e['tensor_dense_bytes']:.3f}x" if "tensor_bytes" in e
                  else ""))
  for model in sorted({r["model"] for r in rows if r["model"] == "resnet8"}):
    dense = [r for r in rows if r["model"] == model and r["variant"] == "dense"]
    if not dense or dense[0]["int8_acc"] is None:
      continue
    d_acc = dense[0]["int8_acc"]
    ok = [r for r in rows if r["model"] == model and r["int8_acc"] is not None
          and 100 * (d_acc - r["int8_acc"]) <= TARGET_B_POINTS]
    best = min(ok, key=lambda r: r["export"]["flash"])
    ratio = best["export"]["flash"] / dense_flash[model]
    combined = all(w in best["variant"] for w in ("shrunk", "pruned", "cluster"))
    met = ratio <= TARGET_B_RATIO and combined
    out.append(f"* (b) {model}: smallest int8 flash within {TARGET_B_POINTS:g} point of the "
               f"dense int8 accuracy ({100 * d_acc:.2f}%): {best['variant']} "
               f"compress={best['export']['compress']}, {best['export']['flash']:,} B = "
               f"{ratio:.3f}x of the dense int8 file, int8 accuracy "
               f"{100 * best['int8_acc']:.2f}% (target <= {TARGET_B_RATIO}x, combining "
               f"shrink + pruning + clustering) -> **{'MET' if met else 'MISSED'}**; its "
               f"conv/FC tensors' encodings: "
               + ", ".join(f"{k} {v}" for k, v in sorted(best["export"]["encodings"].items()))
               + ("" if any(k.startswith("lut") for k in best["export"]["encodings"]) else
                  " (no LUT: clustering saved no flash here, the pruning bitmask was smaller "
                  "for every tensor; it added fine-tuning epochs)"))
    combos = [r for r in rows if r["model"] == model and "shrunk" in r["variant"]
              and "cluster" in r["variant"]]
    for r in combos:
      out.append(f"  * tried {r['variant']} compress={r['export']['compress']}: "
                 f"{r['export']['flash'] / dense_flash[model]:.3f}x, int8 accuracy "
                 f"{100 * r['int8_acc']:.2f}% ({100 * (r['int8_acc'] - d_acc):+.2f} points)")
  return "\n".join(out)


def family(variant):
  """'pruned 75% + clustered 16' -> 'pruned + clustered' (the plot's colours)."""
  return " + ".join(part.split(" ")[0] for part in variant.split(" + "))


def plot(rows, dense_flash, path):
  """ResNet-8 flash (x, KiB) vs int8 accuracy (y): per variant its uncompressed file
  (hollow) joined to its smallest compressed file (filled, labelled)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from tfprune import plots  # pylint: disable=g-import-not-at-top
  pts = [r for r in rows if r["model"] == "resnet8" and r["int8_acc"] is not None]
  if not pts:
    return
  fig, ax = plt.subplots(figsize=(9, 5.4))
  families = list(dict.fromkeys(family(r["variant"]) for r in pts))
  cmap = plt.get_cmap("tab10")
  for variant in dict.fromkeys(r["variant"] for r in pts):
    mine = [r for r in pts if r["variant"] == variant]
    color = cmap(families.index(family(variant)) % 10)
    off = [r for r in mine if r["export"]["compress"] == "off"]
    best = min(mine, key=lambda r: r["export"]["flash"])
    modes = "=".join(r["export"]["compress"] for r in mine
                     if r["export"]["flash"] == best["export"]["flash"])
    acc = 100 * best["int8_acc"]
    if off and off[0] is not best:
      ax.plot([off[0]["export"]["flash"] / 1024, best["export"]["flash"] / 1024],
              [100 * off[0]["int8_acc"], acc], color=color, lw=0.8, alpha=0.5)
      ax.scatter(off[0]["export"]["flash"] / 1024, 100 * off[0]["int8_acc"],
                 facecolors="none", edgecolors=[color], s=30)
    ax.scatter(best["export"]["flash"] / 1024, acc, color=color, s=40, zorder=3)
    short = (variant.replace(" MACs", "").replace("shrunk ", "S").replace("pruned ", "P")
             .replace("clustered ", "C").replace(" + ", "+"))
    ax.annotate(f"{short} [{modes}]", (best["export"]["flash"] / 1024, acc),
                fontsize=6, xytext=(4, 2), textcoords="offset points")
  d = [r for r in pts if r["variant"] == "dense"][0]
  ax.axhline(100 * d["int8_acc"] - TARGET_B_POINTS, color="grey", ls=":", lw=1,
             label=f"dense int8 accuracy - {TARGET_B_POINTS:g} point")
  ax.axvline(TARGET_B_RATIO * dense_flash["resnet8"] / 1024, color="red", ls="--", lw=1,
             label=f"{TARGET_B_RATIO}x the dense int8 file")
  for i, fam in enumerate(families):
    ax.scatter([], [], color=cmap(i % 10), label=fam)
  ax.scatter([], [], facecolors="none", edgecolors="k", label="compress=off (same model)")
  ax.set_xlabel("flash (KiB, whole .tflite; filled: smallest DECODE-compressed file)")
  ax.set_ylabel("int8 test accuracy (%)")
  ax.set_title("ResNet-8 / Fashion-MNIST 32x32x1, int8 TFLite Micro: flash vs accuracy\n"
               "(S50% = shrunk to 50% of the MACs, P80% = 80% unstructured sparsity, "
               "C16 = 16 clusters; [compress])", fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="best")
  fig.tight_layout()
  plots.save_figure(fig, path)


def write(state, paths):
  from tfprune import _io  # pylint: disable=g-import-not-at-top
  _io.atomic_write(paths["json"], json.dumps(state, indent=1))
  rows = state["rows"]
  md = [f"Command: `{state['command']}`", "", f"Protocol: {state['protocol']}", "",
        "Dense / stock files:", ""]
  for m, info in state["models"].items():
    md.append(f"* {m}: {info['data']}; dense trained {info['dense_seconds']:.0f} s; "
              f"stock converter file {info['stock_bytes']:,} B (int8 accuracy "
              f"{100 * info['stock_int8_acc']:.2f}%), tfprune dense int8 micro "
              f"file {info['dense_flash']:,} B")
  md += ["", table(rows, {m: i["stock_bytes"] for m, i in state["models"].items()},
                   {m: i["dense_flash"] for m, i in state["models"].items()}), ""]
  if state.get("failures"):
    md += ["Exports that `convert` refused (no file, so no row above):", ""]
    md += [f"* {f['model']} {f['variant']} (compress={f['compress']}, Keras accuracy "
           f"{100 * f['keras_acc']:.2f}%): {f['error']}" for f in state["failures"]]
    md.append("")
  md += ["Targets:", "", targets(rows, {m: i["dense_flash"] for m, i in state["models"].items()}),
         "", f"Wall time so far {state['wall_seconds']:.0f} s."]
  _io.atomic_write(paths["md"], "\n".join(md) + "\n")
  plot(rows, {m: i["dense_flash"] for m, i in state["models"].items()}, paths["png"])


# ---------------------------------------------------------------------- main
def run_model(name, args, state, paths, start):
  import keras  # pylint: disable=g-import-not-at-top
  (x, y), (xt, yt), desc = data_for(name, args)
  calib = x[:args.calibration]
  check = xt[:args.tflm_check]
  print(f"=== {name}: {desc}", flush=True)
  keras.utils.set_random_seed(args.seed)
  dense = build(name, x)
  dense.compile(optimizer=keras.optimizers.Adam(args.learning_rate),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
  t0 = time.time()
  dense.fit(x, y, epochs=args.epochs, batch_size=args.batch_size, verbose=0)
  dense_seconds = time.time() - t0
  recalibrate_bn(dense, x[:args.bn_samples])
  stock = stock_convert(dense, calib)
  info = {"data": desc, "dense_seconds": dense_seconds, "stock_bytes": len(stock),
          "stock_int8_acc": litert_accuracy(stock, xt, yt), "dense_flash": None}
  state["models"][name] = info
  dense_weights = dense.get_weights()
  print(f"--- dense trained {args.epochs} epochs in {dense_seconds:.0f} s; stock file "
        f"{len(stock):,} B", flush=True)

  def fresh():
    m = build(name, x)
    m.set_weights(dense_weights)
    return m

  def record(variant, model, compresses, train_seconds):
    from tfprune.export import errors as export_errors  # pylint: disable=g-import-not-at-top
    recalibrate_bn(model, x[:args.bn_samples])
    sparsity, distinct, params = kernel_stats(model)
    k_acc = keras_accuracy(model, xt, yt)
    base = None
    for c in compresses:
      try:
        e, data = export_row(model, c, calib)
      except (export_errors.ExportError, export_errors.VerificationError) as err:
        # e.g. the int8 file of a badly damaged model refused by the verification
        first = str(err).strip().splitlines()
        state.setdefault("failures", []).append(
            {"model": name, "variant": variant, "compress": c, "keras_acc": k_acc,
             "sparsity": sparsity, "train_seconds": train_seconds,
             "error": f"{type(err).__name__}: " + " / ".join(first[:3])})
        print(f"  {variant:34s} {c:8s} export refused: {type(err).__name__}: "
              f"{first[:2]}", flush=True)
        break  # the uncompressed file comes first: nothing to compare the others with
      if base is None:   # "off" first: the uncompressed file, its accuracy
        base = (data, litert_accuracy(data, xt, yt))
        if variant == "dense" and c == "off":
          info["dense_flash"] = e["flash"]
      same = True if data is base[0] else tflm_same(data, base[0], check)
      if args.invoke_rounds:
        e["invoke_us"], e["uncompressed_invoke_us"] = invoke_us(
            [data, base[0]], check, args.invoke_rounds)
      row = {"model": name, "variant": variant, "sparsity": sparsity, "distinct": distinct,
             "params": params, "keras_acc": k_acc, "int8_acc": base[1] if same else None,
             "tflm_same": same, "train_seconds": train_seconds, "export": e}
      if name == "ds_cnn":
        row["int8_acc_note"] = "synthetic KWS"
      state["rows"].append(row)
      print(f"  {variant:34s} {c:8s} flash {e['flash']:>7,} B "
            f"({e['flash'] / info['dense_flash']:.3f}x dense, "
            f"{e['flash'] / len(stock):.3f}x stock) arena {e['arena']:,}/{e['arena_alt']:,}+"
            f"{e['alt_bytes']:,} invoke {e['invoke_us']:.0f}/{e['uncompressed_invoke_us']:.0f} us "
            f"keras {100 * k_acc:.2f}% int8 {100 * base[1]:.2f}% same={same} "
            f"[{e['export_seconds']:.0f} s export; {time.time() - start:.0f} s total]",
            flush=True)
    state["wall_seconds"] = time.time() - start
    write(state, paths)

  def timed(fn, *a):
    t = time.time()
    out = fn(*a)
    return out, time.time() - t

  print("--- dense", flush=True)
  record("dense", dense, ["off"], dense_seconds)
  shrunk = {}
  for macs in args.target_macs:
    print(f"--- structured shrink to {macs:.0%} of the MACs", flush=True)
    model, sec = timed(shrink, fresh(), macs, x, y, args)
    label = f"shrunk {macs_fraction(model, dense):.0%} MACs"
    shrunk[label] = (model, sec)
    record(label, model, ["off"], sec)
  pruned = {}
  for s in args.sparsities:
    print(f"--- unstructured magnitude {s:.0%}", flush=True)
    pruned[s], sec = timed(prune_unstructured, fresh(), s, x, y, args)
    record(f"pruned {s:.0%}", pruned[s], ["off", "pruning", "auto"], sec)
  print(f"--- clustered {args.clusters}", flush=True)
  clustered, sec = timed(cluster, fresh(), x, y, args)
  record(f"clustered {args.clusters}", clustered, ["off", "lut", "auto"], sec)
  for s in args.combo_sparsities:
    print(f"--- pruned {s:.0%} + clustered {args.clusters}", flush=True)
    base, sec0 = (pruned[s], 0.0) if s in pruned else timed(
        prune_unstructured, fresh(), s, x, y, args)
    both, sec = timed(cluster, base, x, y, args)
    record(f"pruned {s:.0%} + clustered {args.clusters}", both, ["off", "auto"], sec0 + sec)
  for label, (small, s_sec) in shrunk.items():
    for s in args.combo_sparsities:
      name_ = f"{label} + pruned {s:.0%} + clustered {args.clusters}"
      print(f"--- {name_}", flush=True)
      p, sec1 = timed(prune_unstructured, small, s, x, y, args)
      c, sec2 = timed(cluster, p, x, y, args)
      record(name_, c, ["off", "auto"], s_sec + sec1 + sec2)


def main(argv=None):
  args = parse(argv)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.threading.set_intra_op_parallelism_threads(args.threads)
  tf.config.threading.set_inter_op_parallelism_threads(args.threads)
  if args.output_dir or args.quick:
    out = args.output_dir or os.path.join(HERE, "out", "micro_compress_quick")
    os.makedirs(out, exist_ok=True)
    paths = {"json": os.path.join(out, "micro_compress.json"),
             "md": os.path.join(out, "micro_compress.md"),
             "png": os.path.join(out, "micro_compress.png")}
  else:
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    paths = {"json": os.path.join(HERE, "results", "micro_compress.json"),
             "md": os.path.join(HERE, "results", "micro_compress.md"),
             "png": os.path.join(HERE, "micro_compress.png")}
  if args.from_json:
    with open(args.from_json) as f:
      write(json.load(f), paths)
    print(open(paths["md"]).read())
    return
  protocol = (
      f"int8 TFLite Micro exports (`tfprune.export.convert(target='micro', "
      f"quantize='int8', compress=...)`, {args.calibration} training inputs as "
      f"representative data). Dense: {args.epochs} epochs, Adam {args.learning_rate}, "
      f"batch {args.batch_size}, seed {args.seed}. Every variant starts from the dense "
      f"weights; each compression stage trains {args.finetune_epochs} epochs: structured "
      f"magnitude (global allocation) to {', '.join(f'{m:.0%}' for m in args.target_macs)} "
      f"of the MACs + "
      f"strip(shrink=True); unstructured global magnitude pruning (0 -> s over 60% of "
      f"the stage's steps) + strip; tfprune.cluster(n_clusters={args.clusters}, "
      f"preserve_sparsity=True, per-layer centroids, kmeans++) + strip. Combinations "
      f"chain the stages (shrink -> prune -> cluster), so their train seconds add up. "
      f"BatchNormalization statistics re-estimated on {args.bn_samples} training "
      f"inputs before every evaluation/export. Keras accuracy: the float model; int8 "
      f"accuracy: the uncompressed int8 file in ai_edge_litert (XNNPACK) over the whole "
      f"test subset; a compressed file gets that accuracy only when its TFLM outputs on "
      f"the first {args.tflm_check} test inputs equal the uncompressed file's ("
      f"'TFLM == uncompr.'; convert() already checks this on the representative data). "
      f"Stock: tf.lite.TFLiteConverter full-int8 (TFLITE_BUILTINS_INT8, int8 in/out) of "
      f"the dense model, same representative data. Arena: TFLM Python interpreter's "
      f"recording allocator (a slight upper bound, docs/export.md); alt = alternate "
      f"decompression memory. Invoke: host median of 20 TFLM invokes (reference kernels; "
      f"least over {args.invoke_rounds} alternating rounds of the compressed and "
      f"uncompressed file) on a shared 2-core machine ({args.threads} TF threads for "
      f"training).")
  state = {"command": "python bench/micro_compress_bench.py " + " ".join(
      argv if argv is not None else sys.argv[1:]), "protocol": protocol, "models": {},
      "rows": [], "wall_seconds": 0.0, "args": {k: v for k, v in vars(args).items()}}
  start = time.time()
  for name in args.models:
    run_model(name, args, state, paths, start)
  state["wall_seconds"] = time.time() - start
  write(state, paths)
  print(open(paths["md"]).read())


if __name__ == "__main__":
  sys.exit(main())
