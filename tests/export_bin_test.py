"""Tests for the tfprune-export binary (tfprune/bin/export.py)."""
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

from tfprune import export


def _run(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run([sys.executable, "-m", "tfprune.bin.export", *args],
                        capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("args,match", [
    (["--model=x.h5", "--output=o.tflite"], "--model=x.h5"),
    (["--quantize=fp16"], "--quantize"),
    (["--sparse=magic"], "--sparse"),
])
def test_flag_errors(args, match):
  proc = _run(*args)
  assert proc.returncode != 0
  assert match in proc.stderr


def test_export_int8_with_calibration_and_c_array(tmp_path, sparse_mlp):
  rng = np.random.default_rng(1)
  model = sparse_mlp(16, density=0.2)
  model.save(tmp_path / "m.keras")
  np.savez(tmp_path / "calib.npz", x=rng.standard_normal((40, 64)).astype(np.float32))
  out = tmp_path / "m.tflite"
  missing = _run(f"--model={tmp_path / 'm.keras'}", f"--output={out}", "--quantize=int8")
  assert missing.returncode == 1 and "--calibration_data" in missing.stderr
  proc = _run(f"--model={tmp_path / 'm.keras'}", f"--output={out}", "--quantize=int8",
              f"--calibration_data={tmp_path / 'calib.npz'}", "--representative_samples=20",
              "--c_array_name=g_model")
  assert proc.returncode == 0, proc.stderr
  assert "block1x16" in proc.stdout and "verified xnnpack" in proc.stdout
  assert "verified builtin" in proc.stdout
  assert (tmp_path / "g_model.cc").exists() and (tmp_path / "g_model.h").exists()
  assert not export.inspect(out).warnings


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
