"""TFMOT baseline, run in its OWN process and venv (tf_keras; TF_USE_LEGACY_KERAS=1).

Never imported by tfprune: `bench/compare.py` starts it as a subprocess with the python of
a venv that has `tensorflow-model-optimization` + `tf-keras` (see bench/README.md), and
hands it a JSON job file. It rebuilds the same architecture in tf_keras, loads the SAME
dense weights (an .npz in layer order), and for each sparsity runs
`prune_low_magnitude` with PolynomialDecay + `UpdatePruningStep`, strips, evaluates, and
writes one JSON result per sparsity. With "tflite_dir" in the job it also writes each
stripped model through the stock converter, the way TFMOT's guide deploys it
(EXPERIMENTAL_SPARSITY; float, and full int8 calibrated on 200 training images), as
tfmot_<model>_<sparsity>_seed<seed>_{float,int8}.tflite for bench/export_bench.py.

Usage: TF_USE_LEGACY_KERAS=1 python bench/tfmot_runner.py JOB.json OUT.json
"""
import json
import math
import os
import sys
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top
import tensorflow_model_optimization as tfmot  # pylint: disable=g-import-not-at-top
import tf_keras as keras  # pylint: disable=g-import-not-at-top

L = keras.layers


def lenet_300_100(input_shape, num_classes):
  inp = keras.Input(input_shape)
  h = L.Flatten()(inp)
  h = L.Dense(300, activation="relu")(h)
  h = L.Dense(100, activation="relu")(h)
  return keras.Model(inp, L.Dense(num_classes)(h))


def lenet5(input_shape, num_classes, padding="valid"):
  """Caffe LeNet-5 as in tfprune.zoo: no activation after the convolutions."""
  inp = keras.Input(input_shape)
  h = L.Conv2D(20, 5, padding=padding)(inp)
  h = L.MaxPooling2D(2)(h)
  h = L.Conv2D(50, 5, padding=padding)(h)
  h = L.MaxPooling2D(2)(h)
  h = L.Flatten()(h)
  h = L.Dense(500, activation="relu")(h)
  return keras.Model(inp, L.Dense(num_classes)(h))


def resnet8(input_shape, num_classes, weight_decay=1e-4):
  """MLPerf Tiny ResNet-8 as in tfprune.zoo (same layer names, so weights load by name)."""
  reg = keras.regularizers.l2(weight_decay) if weight_decay else None

  def conv(filters, kernel, stride, name):
    return L.Conv2D(filters, kernel, strides=stride, padding="same",
                    kernel_initializer="he_normal", kernel_regularizer=reg, name=name)

  inp = keras.Input(input_shape, name="image")
  x = conv(16, 3, 1, "conv1")(inp)
  x = L.BatchNormalization(name="bn1")(x)
  x = L.Activation("relu", name="relu1")(x)
  for stack, filters in enumerate((16, 32, 64), start=1):
    stride = 1 if stack == 1 else 2
    y = conv(filters, 3, stride, f"stack{stack}_conv1")(x)
    y = L.BatchNormalization(name=f"stack{stack}_bn1")(y)
    y = L.Activation("relu", name=f"stack{stack}_relu1")(y)
    y = conv(filters, 3, 1, f"stack{stack}_conv2")(y)
    y = L.BatchNormalization(name=f"stack{stack}_bn2")(y)
    if stack > 1:
      x = conv(filters, 1, 2, f"stack{stack}_shortcut")(x)
    x = L.Add(name=f"stack{stack}_add")([x, y])
    x = L.Activation("relu", name=f"stack{stack}_relu")(x)
  x = L.AveragePooling2D(pool_size=int(min(x.shape[1:3])), name="pool")(x)
  x = L.Flatten(name="flatten")(x)
  out = L.Dense(num_classes, kernel_initializer="he_normal", name="logits")(x)
  return keras.Model(inp, out, name="resnet8")


MODELS = {"lenet_300_100": lenet_300_100, "lenet5": lenet5, "resnet8": resnet8}


def _load_by_name(model, weights):
  """Loads npz arrays keyed "<layer name>::<index>" (graphs whose layer order differs)."""
  by_layer = {}
  for key in weights.files:
    layer, _, index = key.rpartition("::")
    by_layer.setdefault(layer, {})[int(index)] = weights[key]
  for layer in model.layers:
    expected = layer.get_weights()
    values = by_layer.pop(layer.name, {})
    if len(values) != len(expected):
      raise ValueError(f"Layer {layer.name!r}: the tf_keras model has {len(expected)} "
                       f"weights, the dense weights file {len(values)}.")
    values = [values[i] for i in range(len(values))]
    for v, e in zip(values, expected):
      if v.shape != e.shape:
        raise ValueError(f"Layer {layer.name!r}: weight shape {v.shape}, tf_keras "
                         f"expects {e.shape}.")
    if values:
      layer.set_weights(values)
  if by_layer:
    raise ValueError(f"Dense weights for layers the tf_keras model lacks: "
                     f"{sorted(by_layer)}.")


def build(job):
  model = MODELS[job["model"]](tuple(job["input_shape"]), job["num_classes"],
                               **job.get("model_kwargs", {}))
  weights = np.load(job["weights"])
  if job.get("weights_by_name"):
    _load_by_name(model, weights)
    return model
  values = [weights[f"arr_{i}"] for i in range(len(weights.files))]
  shapes = [tuple(w.shape) for w in model.get_weights()]
  got = [tuple(v.shape) for v in values]
  if shapes != got:
    raise ValueError(f"Dense weights do not fit the tf_keras {job['model']}: expected "
                     f"shapes {shapes}, got {got}.")
  model.set_weights(values)
  return model


def recalibrate_bn(model, x):
  """BN moving statistics := those of `x` (one training-mode pass at momentum 0)."""
  bns = [l for l in model.layers if isinstance(l, L.BatchNormalization)]
  saved = [l.momentum for l in bns]
  for l in bns:
    l.momentum = 0.0
  try:
    model(x, training=True)
  finally:
    for l, m in zip(bns, saved):
      l.momentum = m


def accuracy(model, x, y):
  return float(np.mean(np.argmax(model.predict(x, batch_size=1024, verbose=0), -1) == y))


def stock_tflite(model, quantize, calibration):
  """The stock converter's sparse TFLite file for a stripped TFMOT model."""
  converter = tf.lite.TFLiteConverter.from_keras_model(model)
  converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
  if quantize == "int8":
    converter.optimizations.append(tf.lite.Optimize.DEFAULT)
    converter.representative_dataset = lambda: ([x[None]] for x in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
  return converter.convert()


def save_tflite(job, stripped, sparsity, calibration):
  for quantize in ("float", "int8"):
    name = f"tfmot_{job['model']}_{sparsity}_seed{job['seed']}_{quantize}.tflite"
    path = os.path.join(job["tflite_dir"], name)
    with open(path + ".tmp", "wb") as f:
      f.write(stock_tflite(stripped, quantize, calibration))
    os.replace(path + ".tmp", path)


def main(job_path, out_path):
  with open(job_path) as f:
    job = json.load(f)
  if job.get("threads"):
    tf.config.threading.set_intra_op_parallelism_threads(int(job["threads"]))
    tf.config.threading.set_inter_op_parallelism_threads(int(job["threads"]))
  data = np.load(job["data"])
  x_train = data["x_train"].astype("float32") / 255.0
  x_test = data["x_test"].astype("float32") / 255.0
  y_train, y_test = data["y_train"], data["y_test"]
  steps = math.ceil(len(x_train) / job["batch_size"]) * job["prune_epochs"]
  results = {"dense_accuracy": (accuracy(build(job), x_test, y_test)
                                if job.get("check_dense", True) else None), "runs": []}
  for sparsity in job["sparsities"]:
    keras.utils.set_random_seed(job["seed"])
    tf.random.set_seed(job["seed"])
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=sparsity, begin_step=0,
        end_step=max(int(job["schedule_fraction"] * steps), 1),
        frequency=job["frequency"])
    pruned = tfmot.sparsity.keras.prune_low_magnitude(build(job), pruning_schedule=schedule)
    pruned.compile(optimizer=keras.optimizers.Adam(job["learning_rate"]),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   metrics=["accuracy"])
    start = time.time()
    pruned.fit(x_train, y_train, epochs=job["prune_epochs"], batch_size=job["batch_size"],
               verbose=0, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    seconds = time.time() - start
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    kernels = [w for w in stripped.get_weights() if w.ndim > 1]
    zeros = sum(int(np.sum(w == 0)) for w in kernels)
    total = sum(w.size for w in kernels)
    kept = {f"{layer.name}/kernel": float(np.mean(layer.get_weights()[0] != 0))
            for layer in stripped.layers
            if hasattr(layer, "kernel") and layer.get_weights()[0].ndim > 1}
    raw = accuracy(stripped, x_test, y_test)
    if job.get("bn_samples"):
      recalibrate_bn(stripped, x_train[:job["bn_samples"]])
    results["runs"].append({"sparsity": sparsity, "accuracy": accuracy(stripped, x_test,
                                                                        y_test),
                            "accuracy_no_bn_recalibration": raw,
                            "achieved_sparsity": zeros / total, "seconds": seconds,
                            "kept_per_layer": kept})
    if job.get("tflite_dir"):
      save_tflite(job, stripped, sparsity, x_train[:200])
    print(f"tfmot sparsity {sparsity}: {results['runs'][-1]}", flush=True)
  with open(out_path + ".tmp", "w") as f:
    json.dump(results, f)
  os.replace(out_path + ".tmp", out_path)


if __name__ == "__main__":
  if len(sys.argv) != 3:
    sys.exit("usage: tfmot_runner.py JOB.json OUT.json")
  main(sys.argv[1], sys.argv[2])
