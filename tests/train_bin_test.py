"""End-to-end test of tfprune-train on the bundled `digits` data (seconds)."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import tfprune


def _train(*args, cwd=None):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run([sys.executable, "-m", "tfprune.bin.train", *args],
                        capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_binary_end_to_end_on_digits(tmp_path):
  out = tmp_path / "run"
  proc = _train("--dataset=digits", "--model=lenet_300_100", "--method=magnitude",
                "--scope=global", "--target_sparsity=0.8", "--dense_epochs=4",
                "--prune_epochs=3", "--batch_size=64", "--frequency=5",
                f"--output_dir={out}", f"--tensorboard_dir={tmp_path / 'tb'}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "sparsity" in proc.stdout and "total" in proc.stdout
  for name in ("model.keras", "report.json", "sparsity.png", "calibration.npz"):
    assert (out / name).exists(), name
  report = json.loads((out / "report.json").read_text())
  assert report["flags"]["method"] == "magnitude"
  assert report["sparsity"] == pytest.approx(0.8, abs=0.002)
  assert report["test_accuracy"] > 0.8 and report["dense_accuracy"] > 0.8
  assert {"dense_train_s", "prune_s"} <= set(report["timings_s"])
  assert [r["layer"] for r in report["layers"]] == ["fc1", "fc2", "logits"]
  model = keras.models.load_model(out / "model.keras")
  assert not tfprune.methods.base.find_wrappers(model)  # stripped
  kernels = [l.kernel.numpy() for l in model.layers if hasattr(l, "kernel")]
  zeros = sum(int(np.sum(k == 0)) for k in kernels) / sum(k.size for k in kernels)
  assert zeros == pytest.approx(0.8, abs=0.002)
  assert os.listdir(tmp_path / "tb")  # TensorBoard events were written
  assert np.load(out / "calibration.npz")["x"].shape[1:] == (8, 8, 1)


@pytest.mark.parametrize("flag,message", [
    ("--method=l1", "--method"),
    ("--target_sparsity=1.5", "--target_sparsity must be in [0, 1)"),
    ("--scope=rows", "--scope"),
    ("--dataset=cifar", "--dataset"),
    ("--block_size=3", "--block_size must be one of"),
])
def test_bad_flags_are_rejected_naming_the_flag(flag, message):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from tfprune.bin import train  # pylint: disable=g-import-not-at-top
  try:
    with pytest.raises(flags.Error, match=message.replace("[", r"\[").replace(")", r"\)")):
      train.FLAGS(["tfprune-train", flag])
  finally:
    train.FLAGS.unparse_flags()


def test_bad_method_arg_fails_before_training(tmp_path):
  proc = _train("--method_arg=nonsense", "--dataset=digits", f"--output_dir={tmp_path}")
  assert proc.returncode != 0
  assert "must look like key=value" in proc.stdout + proc.stderr
  assert "val_accuracy" not in proc.stdout + proc.stderr  # nothing was trained
  assert not (tmp_path / "model.keras").exists()


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
