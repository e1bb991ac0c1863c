"""Tests of tfprune-train: flag validation before training (in-process), user data,
reports, atomic output and resume after SIGKILL (subprocess)."""
# bazel-size: large
import json
import os
import signal
import stat
import subprocess
import sys
import time
import zipfile

from absl import app
from absl import flags
import keras
import numpy as np
import pytest

import tfprune
from tfprune.bin import train
from conftest import SLOW  # pylint: disable=g-bad-import-order

_FAST = ("--dataset=digits", "--batch_size=64", "--frequency=5", "--train_samples=256",
         "--calibration_export=16")


def _train(*args, cwd=None, **popen):
  env = dict(os.environ)
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the binary must be quiet on its own
  cmd = [sys.executable, "-m", "tfprune.bin.train", *args]
  if popen:
    return subprocess.Popen(cmd, env=env, cwd=cwd, **popen)
  return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=400)


def _main(*args):
  """Runs train.main in-process with `args` parsed as flags."""
  argv = ["tfprune-train", *args]
  try:
    train.FLAGS(argv)
    return train.main(argv[:1])
  finally:
    train.FLAGS.unparse_flags()


def _usage_error(match, *args):
  start = time.time()
  with pytest.raises(app.UsageError, match=match) as info:
    _main(*args)
  return str(info.value), time.time() - start


# ------------------------------------------------------------ subprocess end to end


def test_binary_end_to_end_on_digits(tmp_path):
  out = tmp_path / "run"
  proc = _train("--dataset=digits", "--model=lenet_300_100", "--method=magnitude",
                "--scope=global", "--target_sparsity=0.8", "--dense_epochs=4",
                "--prune_epochs=3", "--batch_size=64", "--frequency=5",
                f"--output_dir={out}", f"--tensorboard_dir={tmp_path / 'tb'}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stderr == "", proc.stderr[:2000]  # no TF C++ noise
  assert "total" in proc.stdout
  for header in ("=== dense", "=== pruning", "=== strip", "=== export", "=== report"):
    assert header in proc.stdout, header
  for name in ("model.keras", "report.json", "sparsity.png", "calibration.npz"):
    assert (out / name).exists(), name
  assert sorted(os.listdir(out)) == ["calibration.npz", "model.keras", "report.json",
                                     "sparsity.png"]
  assert not (tmp_path / ".run.partial").exists()
  report = json.loads((out / "report.json").read_text())
  assert report["flags"]["method"] == "magnitude"
  assert report["sparsity"] == pytest.approx(0.8, abs=0.002)
  assert report["test_accuracy"] > 0.8 and report["dense_accuracy"] > 0.8
  assert "bn_recalibration" not in report  # no BatchNorm: nothing re-estimated
  assert {"dense_train_s", "prune_s"} <= set(report["timings_s"])
  assert [r["layer"] for r in report["layers"]] == ["fc1", "fc2", "logits"]
  assert [e["epoch"] for e in report["history"]["dense"]] == [0, 1, 2, 3]
  assert len(report["history"]["pruning"]) == 3
  assert {"loss", "accuracy", "val_accuracy"} <= set(report["history"]["pruning"][0])
  assert {"tfprune", "tensorflow", "keras", "numpy", "python"} <= set(report["versions"])
  assert report["files"] == ["calibration.npz", "model.keras", "report.json",
                             "sparsity.png"]
  assert stat.S_IMODE(os.stat(out / "model.keras").st_mode) & 0o044 == 0o044
  with zipfile.ZipFile(out / "model.keras") as z:
    assert not any("optimizer" in n for n in z.namelist())
  model = keras.models.load_model(out / "model.keras")
  assert not tfprune.methods.base.find_wrappers(model)  # stripped
  kernels = [l.kernel.numpy() for l in model.layers if hasattr(l, "kernel")]
  zeros = sum(int(np.sum(k == 0)) for k in kernels) / sum(k.size for k in kernels)
  assert zeros == pytest.approx(0.8, abs=0.002)
  tb = os.listdir(tmp_path / "tb")
  assert {"dense", "pruning"} <= set(tb), tb  # Keras loss/accuracy per phase
  assert np.load(out / "calibration.npz")["x"].shape[1:] == (8, 8, 1)
  # Re-running into the same, now non-empty, directory is refused without --overwrite.
  proc = _train("--dataset=digits", f"--output_dir={out}")
  assert proc.returncode != 0 and "--overwrite" in proc.stderr


def _final_weights(path):
  return keras.models.load_model(path).get_weights()


@pytest.mark.parametrize("method,extra", [pytest.param("magnitude", (), marks=SLOW),
                                          ("admm", ("--admm_epochs=2",))])
def test_sigkill_then_resume_gives_the_uninterrupted_weights(tmp_path, method, extra):
  args = [*_FAST, f"--method={method}", *extra, "--dense_epochs=1", "--prune_epochs=3",
          "--target_sparsity=0.75"]
  whole = _train(*args, f"--output_dir={tmp_path / 'whole'}")
  assert whole.returncode == 0, whole.stderr[-3000:]

  out = tmp_path / "killed"
  proc = _train(*args, f"--output_dir={out}", "--testonly_epoch_delay_s=10",
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  marker = tmp_path / ".killed.partial" / "history_pruning.json"
  deadline = time.time() + 300
  while not marker.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert proc.poll() is None, "the run ended before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not out.exists()  # nothing half-written in place
  assert json.loads(marker.read_text())[-1]["epoch"] == 0  # killed after pruning epoch 1

  resumed = _train(*args, f"--output_dir={out}", "--resume")
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "dense: resumed" in resumed.stdout and "Epoch 2/3" in resumed.stdout
  assert "Epoch 1/3" not in resumed.stdout
  for a, b in zip(_final_weights(tmp_path / "whole" / "model.keras"),
                  _final_weights(out / "model.keras")):
    np.testing.assert_array_equal(a, b)  # bit for bit
  report = json.loads((out / "report.json").read_text())
  assert [e["epoch"] for e in report["history"]["pruning"]] == [0, 1, 2]


# -------------------------------------------------------------- parse-time errors


@pytest.mark.parametrize("flag,message", [
    ("--method=l1", "--method"),
    ("--target_sparsity=1.5", "--target_sparsity must be in [0, 1)"),
    ("--scope=rows", "--scope"),
    ("--dataset=cifar", "--dataset must be one of mnist, fashion_mnist, digits, npz:PATH"),
    ("--dataset=npz:", "--dataset must be one of"),
    ("--block_size=3", "--block_size must be one of"),
    ("--calibration_samples=-5", "calibration_samples"),
    ("--calibration_samples=0", "calibration_samples"),
    ("--calibration_export=-1", "calibration_export"),
    ("--image_size=0x32", "--image_size must be N or HxW"),
    ("--image_size=big", "--image_size must be N or HxW"),
    ("--test_samples=0", "test_samples"),
])
def test_bad_flags_are_rejected_naming_the_flag(flag, message):
  try:
    with pytest.raises(flags.Error, match=message.replace("[", r"\[").replace(")", r"\)")):
      train.FLAGS(["tfprune-train", flag])
  finally:
    train.FLAGS.unparse_flags()


# ------------------------------------------------------ errors before the first epoch


def test_output_dir_under_a_file_fails_at_once(tmp_path):
  (tmp_path / "file").write_text("x")
  text, seconds = _usage_error("--output_dir", *_FAST,
                               f"--output_dir={tmp_path / 'file' / 'run'}")
  assert "is a file" in text
  assert seconds < 5


def test_bad_method_arguments_fail_before_training(tmp_path):
  out = f"--output_dir={tmp_path / 'run'}"
  _usage_error("must look like key=value", *_FAST, "--method_arg=nonsense", out)
  _usage_error("--method_arg 'nonsense' is not an argument of --method=magnitude",
               *_FAST, "--method_arg=nonsense=1", out)
  _usage_error("--method=admm: .*rho0", *_FAST, "--method=admm", "--rho=-1", out)
  _usage_error("--method=magnitude: Unknown scope 'neuron'", *_FAST, "--scope=neuron", out)
  _usage_error("--sap_rounds is not used by --method=magnitude", *_FAST,
               "--sap_rounds=3", out)
  assert not os.path.exists(tmp_path / "run")
  assert not os.path.exists(tmp_path / ".run.partial")  # no debris either


def test_near_one_sparsity_is_refused_naming_the_layers(tmp_path):
  text, _ = _usage_error("--target_sparsity", *_FAST, "--target_sparsity=0.9999999",
                         f"--output_dir={tmp_path / 'run'}")
  assert "fc1/kernel" in text and "fc2/kernel" in text and "logits/kernel" in text
  assert "(keeps 0 of 19200)" in text
  _usage_error("global allocation", *_FAST, "--scope=global",
                         "--target_sparsity=0.99999", f"--output_dir={tmp_path / 'run'}")


def test_sparsity_is_printed_with_enough_digits():
  assert train.format_sparsity(0.9) == "0.9000"
  assert train.format_sparsity(0.99999999) != "1.0000"
  assert float(train.format_sparsity(0.99999999)) < 1.0
  assert float(train.format_sparsity(0.00001)) > 0.0
  assert train.format_sparsity(1.0) == "1.0000"


@pytest.mark.parametrize("content,message", [
    (b"just some text\n", "not a .keras archive"),
    (None, "not a .keras archive"),  # a truncated zip
])
def test_load_model_text_or_truncated_file_names_the_flag(tmp_path, content, message):
  path = tmp_path / "model.keras"
  if content is None:
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10)])
    model.save(path)
    path.write_bytes(path.read_bytes()[:-200])
  else:
    path.write_bytes(content)
  text, _ = _usage_error("--load_model", *_FAST, f"--load_model={path}",
                         f"--output_dir={tmp_path / 'run'}")
  assert message in text and str(path) in text and "File not found" not in text
  _usage_error("--load_model: .*no such file", *_FAST,
               f"--load_model={tmp_path / 'none.keras'}", f"--output_dir={tmp_path / 'r'}")


def test_data_dir_that_does_not_exist_is_an_error(tmp_path):
  _usage_error("--data_dir.*nonexistent.*no such directory", "--dataset=mnist",
               f"--data_dir={tmp_path / 'nonexistent'}", f"--output_dir={tmp_path / 'r'}")


def test_non_empty_output_dir_and_resume_without_a_run(tmp_path):
  (tmp_path / "run").mkdir()
  (tmp_path / "run" / "old.txt").write_text("stale")
  _usage_error("--output_dir: .* is not empty .*old.txt.*--overwrite", *_FAST,
               f"--output_dir={tmp_path / 'run'}")
  _usage_error("--resume: no interrupted run", *_FAST, "--resume",
               f"--output_dir={tmp_path / 'other'}")


# ---------------------------------------------------------------- user data, in-process


def _user_model(input_shape, classes=3):
  inp = keras.Input(input_shape)
  x = keras.layers.Rescaling(1 / 255.0)(inp)
  x = keras.layers.Conv2D(4, 3, activation="relu", name="my_rather_long_conv_layer_name_0")(x)
  x = keras.layers.Flatten()(x)
  out = keras.layers.Dense(classes, name="classifier_head_with_a_long_descriptive_name")(x)
  return keras.Model(inp, out)


def test_npz_dataset_with_own_model_prunes_and_exports(tmp_path, capsys):
  rng = np.random.default_rng(0)
  np.savez(tmp_path / "d.npz", x_train=rng.integers(0, 255, (48, 10, 10, 1)),
           y_train=rng.integers(0, 3, 48), x_test=rng.integers(0, 255, (12, 10, 10, 1)),
           y_test=rng.integers(0, 3, 12))
  _user_model((10, 10, 1)).save(tmp_path / "mine.keras")
  out = tmp_path / "run"
  _main(f"--dataset=npz:{tmp_path / 'd.npz'}", f"--load_model={tmp_path / 'mine.keras'}",
        "--method=magnitude", "--target_sparsity=0.5", "--prune_epochs=1",
        "--batch_size=16", "--frequency=1",
        "--calibration_export=1000", f"--output_dir={out}")
  printed = capsys.readouterr().out
  assert "classifier_head_with_a_long_descriptive_name" in printed  # full names
  assert "--calibration_export=1000 is more than the 48 training inputs" in printed
  report = json.loads((out / "report.json").read_text())
  assert report["calibration_export"] == 48 and report["data"]["input_shape"] == [10, 10, 1]
  assert report["sparsity"] == pytest.approx(0.5, abs=0.02)
  assert np.load(out / "calibration.npz")["x"].shape == (48, 10, 10, 1)
  from tfprune import export  # pylint: disable=g-import-not-at-top
  result = export.convert(keras.models.load_model(out / "model.keras"),
                          representative_data=np.load(out / "calibration.npz")["x"][:8])
  assert result.model_bytes[4:8] == b"TFL3"

  # Shape mismatch between the arrays and the model: named, before training.
  _user_model((12, 12, 1)).save(tmp_path / "other.keras")
  _usage_error(r"--dataset: training inputs are shaped \(10, 10, 1\) but the model's "
               r"input is \(12, 12, 1\)", f"--dataset=npz:{tmp_path / 'd.npz'}",
               f"--load_model={tmp_path / 'other.keras'}", f"--output_dir={tmp_path / 'x'}")
  np.savez(tmp_path / "bad.npz", x_train=np.zeros((4, 10, 10, 1)))
  _usage_error("--dataset: .*missing array", f"--dataset=npz:{tmp_path / 'bad.npz'}",
               f"--output_dir={tmp_path / 'y'}")


def test_images_dataset_with_zoo_model_and_post_training_method(tmp_path):
  for split, n in (("train", 6), ("test", 2)):
    for c, name in enumerate(("circle", "square", "zigzag")):
      d = tmp_path / "imgs" / split / name
      d.mkdir(parents=True)
      for i in range(n):
        img = np.full((20, 24, 3), 60 * c + 5 * i, np.uint8)
        keras.utils.save_img(d / f"{i}.png", img, scale=False)
  out = tmp_path / "run"
  _main(f"--dataset=images:{tmp_path / 'imgs'}", "--model=lenet_300_100", "--method=l0",
        "--dense_epochs=1", "--target_sparsity=0.5", "--batch_size=8",
        "--calibration_samples=5000", "--calibration_export=4", f"--output_dir={out}")
  report = json.loads((out / "report.json").read_text())
  assert report["data"]["input_shape"] == [28, 28, 1]  # the zoo model's input
  assert report["data"]["num_classes"] == 3 and report["data"]["train_samples"] == 18
  assert report["calibration_samples"] == 18  # clamped, and recorded as used
  assert report["sparsity"] == pytest.approx(0.5, abs=0.02)
  x = np.load(out / "calibration.npz")["x"]
  assert x.shape == (4, 28, 28, 1) and x.max() > 1.0  # raw 0-255 values


def test_zoo_input_differs_from_dataset_resizes_and_says_so(tmp_path, capsys):
  model = tfprune.zoo.get("lenet_300_100", input_shape=(12, 12, 1))
  model.save(tmp_path / "small.keras")
  _main(f"--load_model={tmp_path / 'small.keras'}", *_FAST, "--prune_epochs=1",
        f"--output_dir={tmp_path / 'run'}")
  assert "Resizing training images (8, 8) -> (12, 12)" in capsys.readouterr().out


# ---------------------------------------------------------------------------- help


def test_help_lists_the_flags_grouped():
  text = train.grouped_help()
  positions = [text.index(f"{g}:") for g in ("data", "model", "method", "schedule",
                                             "export", "output")]
  assert positions == sorted(positions)
  for flag in ("--dataset", "--load_model", "--target_sparsity", "--prune_epochs",
               "--calibration_export", "--output_dir", "--[no]resume", "--tf_log_level"):
    assert flag in text, flag
  assert text.index("--dataset") < text.index("model:") < text.index("--load_model")
  full = train.FLAGS.get_help()
  for group in ("data", "model", "method", "schedule", "export", "output"):
    assert f"tfprune.train_flags.{group}:" in full
  main_help = train.FLAGS.module_help(train)  # what --help shows for the binary
  assert "--output_dir" in main_help and "--admm_epochs" in main_help



def test_resnet8_on_fashion_mnist_resized_to_32(tmp_path, capsys):
  """ResNet-8 at its MLPerf Tiny 32x32 input on 28x28x1 Fashion-MNIST (resized)."""
  out = tmp_path / "run"
  _main("--model=resnet8", "--dataset=fashion_mnist", "--image_size=32",
        "--train_samples=64", "--test_samples=32", "--batch_size=32", "--frequency=1",
        "--dense_epochs=1", "--prune_epochs=1", "--target_sparsity=0.8", "--scope=global",
        "--calibration_export=8", f"--output_dir={out}")
  text = capsys.readouterr().out
  assert "Resizing training images (28, 28) -> (32, 32)" in text
  report = json.loads((out / "report.json").read_text())
  assert report["data"]["input_shape"] == [32, 32, 1]
  assert report["data"]["resized_from"] == [28, 28]
  assert report["data"]["train_samples"] == 64 and report["data"]["test_samples"] == 32
  model = keras.models.load_model(out / "model.keras")
  assert model.name == "resnet8" and tuple(model.input_shape) == (None, 32, 32, 1)
  rows = tfprune.sparsity_report(model, print_table=False)
  assert abs(tfprune.model.total_sparsity(rows) - 0.8) < 1e-3
  assert np.load(out / "calibration.npz")["x"].shape == (8, 32, 32, 1)
  # BatchNorm statistics re-estimated (default 1024 -> all 64 inputs), both accuracies kept.
  assert "BatchNorm statistics re-estimated on 64 training inputs" in text
  n_bn = sum(isinstance(l, keras.layers.BatchNormalization) for l in model.layers)
  for key in ("dense_bn_recalibration", "bn_recalibration"):
    rec = report[key]
    assert rec["samples"] == 64 and rec["layers"] == n_bn > 0, rec
  assert report["test_accuracy"] == report["bn_recalibration"]["accuracy_after"]


def test_image_size_with_load_model_is_refused(tmp_path):
  tfprune.zoo.get("lenet_300_100", input_shape=(8, 8, 1)).save(tmp_path / "m.keras")
  _usage_error("--image_size: is for zoo models", *_FAST, "--image_size=12",
               f"--load_model={tmp_path / 'm.keras'}", f"--output_dir={tmp_path / 'run'}")

if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
