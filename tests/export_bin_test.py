"""Tests for the tfprune-export binary (tfprune/bin/export.py)."""
# bazel-size: large
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

from tfprune import export


def _run(*args, quiet_env=True):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  if not quiet_env:
    env.pop("TF_CPP_MIN_LOG_LEVEL")      # what a user's shell has: the CLI must be quiet itself
  return subprocess.run([sys.executable, "-m", "tfprune.bin.export", *args],
                        capture_output=True, text=True, env=env, timeout=300)


# What `import tensorflow` itself prints (at `import tfprune`, before the CLI runs).
_TF_IMPORT_NOISE = ("All log messages before absl::InitializeLog", "cudart_stub.cc",
                    "cpu_feature_guard.cc", "To enable the following instructions")


def _ours(text):
  return [l for l in text.strip().splitlines() if not any(n in l for n in _TF_IMPORT_NOISE)]


def _one_paragraph_error(proc):
  assert proc.returncode == 1, (proc.stdout, proc.stderr)
  lines = _ours(proc.stderr)
  assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
  assert lines[0].startswith("ERROR: ")
  return lines[0]


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


@pytest.fixture(name="saved")
def _saved(tmp_path, sparse_mlp):
  model = sparse_mlp(4)
  model.save(tmp_path / "m.keras")
  return tmp_path / "m.keras"


def test_bad_paths_and_names_fail_before_converting(tmp_path, saved):
  out = tmp_path / "m.tflite"
  err = _one_paragraph_error(_run(f"--model={saved}", f"--output={out}", "--c_array_name=1-bad"))
  assert "--c_array_name=1-bad" in err and "C identifier" in err
  assert not out.exists()                                   # validated before converting
  (tmp_path / "afile").write_text("x")
  err = _one_paragraph_error(_run(f"--model={saved}", f"--output={tmp_path / 'afile' / 'o.tflite'}"))
  assert "is a file" in err
  (tmp_path / "text.keras").write_text("not a model")
  err = _one_paragraph_error(_run(f"--model={tmp_path / 'text.keras'}", f"--output={out}"))
  assert "not a Keras .keras archive" in err and "File not found" not in err
  (tmp_path / "cut.keras").write_bytes(saved.read_bytes()[:200])
  err = _one_paragraph_error(_run(f"--model={tmp_path / 'cut.keras'}", f"--output={out}"))
  assert "truncated" in err
  err = _one_paragraph_error(_run(f"--model={saved}", f"--output={out}", "--quantize=int8",
                                  f"--calibration_data={tmp_path / 'none.npz'}"))
  assert "none.npz: no such file" in err
  assert not out.exists()


def test_non_finite_calibration_named_and_no_temp_left(tmp_path, saved):
  x = np.random.default_rng(0).standard_normal((20, 64)).astype(np.float32)
  x[7, 2] = np.inf
  np.savez(tmp_path / "calib.npz", x=x)
  tmp = tmp_path / "tmp"
  tmp.mkdir()
  env_tmp = dict(os.environ, TMPDIR=str(tmp), TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.run([sys.executable, "-m", "tfprune.bin.export", f"--model={saved}",
                         f"--output={tmp_path / 'o.tflite'}", "--quantize=int8",
                         f"--calibration_data={tmp_path / 'calib.npz'}"],
                        capture_output=True, text=True, env=env_tmp, timeout=300)
  err = _one_paragraph_error(proc)
  assert "calib.npz: array 'x'" in err and "non-finite" in err and "sample 7" in err
  assert os.listdir(tmp) == []


def test_export_error_is_one_paragraph(tmp_path):
  import keras  # pylint: disable=g-import-not-at-top
  tok = keras.Input((None,), dtype="int32")
  x = keras.layers.Embedding(20, 4)(tok)
  keras.Model(tok, keras.layers.GRU(3, name="my_gru")(x)).save(tmp_path / "gru.keras")
  err = _one_paragraph_error(_run(f"--model={tmp_path / 'gru.keras'}",
                                  f"--output={tmp_path / 'o.tflite'}"))
  assert "'my_gru' (GRU) has a dynamic time dimension" in err and "Nothing written" in err


def test_normal_export_is_quiet(tmp_path, saved):
  out = tmp_path / "m.tflite"
  proc = _run(f"--model={saved}", f"--output={out}", quiet_env=False)
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.strip().splitlines()
  # header, 2 tensors, file line, 2 verified lines, wrote line: nothing else.
  assert len(lines) == 7, proc.stdout
  assert "Saved artifact" not in proc.stdout
  assert _ours(proc.stderr) == [], proc.stderr    # was 13 lines on stdout, 33 on stderr
  verbose = _run(f"--model={saved}", f"--output={out}", "--verbosity=1", quiet_env=False)
  assert verbose.returncode == 0 and "Saved artifact" in verbose.stdout


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
