"""Tests for the tfprune-export binary (tfprune/bin/export.py)."""
# bazel-size: large
import json
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


# Runs `tfprune.bin.export.main` once per argv in ONE fresh interpreter (the binary's
# flags clash with tfprune-train's, so not in the test process): the checks that fail
# before anything is converted cost one TensorFlow import instead of one each. Prints a
# JSON list of [exit status, stderr] (or [None, absl's flag error]).
_DRIVER = r"""
import contextlib, io, json, sys
from absl import flags
from tfprune.bin import export
out = []
for argv in json.loads(sys.argv[1]):
  err = io.StringIO()
  try:
    flags.FLAGS(["tfprune-export", *argv])
    with contextlib.redirect_stderr(err):
      code = export.main(["tfprune-export"])
    out.append([code, err.getvalue()])
  except flags.Error as e:
    out.append([None, str(e)])
  finally:
    flags.FLAGS.unparse_flags()
print("RESULTS " + json.dumps(out))
"""


def _run_many(*argvs, tmpdir=None):
  """[(exit status, stderr)] of `main` on each argv (see _DRIVER); nothing else printed."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  if tmpdir:
    env["TMPDIR"] = str(tmpdir)
  proc = subprocess.run([sys.executable, "-c", _DRIVER, json.dumps([list(a) for a in argvs])],
                        capture_output=True, text=True, env=env, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULTS ")]
  assert len(line) == 1, proc.stdout
  return [tuple(r) for r in json.loads(line[0][len("RESULTS "):])]


def _error_line(result):
  """The single ERROR line of a `_run_many` result that must have failed with status 1."""
  code, err = result
  assert code == 1, result
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("ERROR: "), err
  return lines[0]


# What `import tensorflow` itself prints (at `import tfprune`, before the CLI runs).
_TF_IMPORT_NOISE = ("All log messages before absl::InitializeLog", "cudart_stub.cc",
                    "cpu_feature_guard.cc", "To enable the following instructions")


def _ours(text):
  return [l for l in text.strip().splitlines() if not any(n in l for n in _TF_IMPORT_NOISE)]


def _one_paragraph_error(proc):
  """`_error_line` of a whole-binary run, TensorFlow's import lines aside."""
  assert "Traceback" not in proc.stderr, proc.stderr
  return _error_line((proc.returncode, "\n".join(_ours(proc.stderr))))


def test_flag_errors():
  # The whole binary once (absl's own parse error), the rest in one interpreter.
  proc = _run("--quantize=fp16")
  assert proc.returncode != 0 and "--quantize" in proc.stderr
  bad_model, bad_enum = _run_many(["--model=x.h5", "--output=o.tflite"], ["--sparse=magic"])
  assert "--model=x.h5" in _error_line(bad_model)
  assert bad_enum[0] is None and "--sparse" in bad_enum[1]


def test_export_int8_with_calibration_and_c_array(tmp_path, sparse_mlp):
  rng = np.random.default_rng(1)
  model = sparse_mlp(16, density=0.2)
  model.save(tmp_path / "m.keras")
  np.savez(tmp_path / "calib.npz", x=rng.standard_normal((40, 64)).astype(np.float32))
  out = tmp_path / "m.tflite"
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
  # The whole binary once: one ERROR paragraph on stderr, no traceback, nothing written.
  err = _one_paragraph_error(_run(f"--model={saved}", f"--output={out}", "--c_array_name=1-bad"))
  assert "--c_array_name=1-bad" in err and "C identifier" in err
  (tmp_path / "afile").write_text("x")
  (tmp_path / "text.keras").write_text("not a model")
  (tmp_path / "cut.keras").write_bytes(saved.read_bytes()[:200])
  x = np.random.default_rng(0).standard_normal((20, 64)).astype(np.float32)
  x[7, 2] = np.inf
  np.savez(tmp_path / "calib.npz", x=x)
  tmp = tmp_path / "tmp"
  tmp.mkdir()
  errors = [_error_line(r) for r in _run_many(
      [f"--model={saved}", f"--output={tmp_path / 'afile' / 'o.tflite'}"],
      [f"--model={tmp_path / 'text.keras'}", f"--output={out}"],
      [f"--model={tmp_path / 'cut.keras'}", f"--output={out}"],
      [f"--model={saved}", f"--output={out}", "--quantize=int8",
       f"--calibration_data={tmp_path / 'none.npz'}"],
      [f"--model={saved}", f"--output={out}", "--quantize=int8"],
      [f"--model={saved}", f"--output={out}", "--quantize=int8",
       f"--calibration_data={tmp_path / 'calib.npz'}"], tmpdir=tmp)]
  assert "is a file" in errors[0]
  assert "not a Keras .keras archive" in errors[1] and "File not found" not in errors[1]
  assert "truncated" in errors[2]
  assert "none.npz: no such file" in errors[3]
  assert "--calibration_data" in errors[4]
  assert ("calib.npz: array 'x'" in errors[5] and "non-finite" in errors[5]
          and "sample 7" in errors[5])
  assert os.listdir(tmp) == []     # no temporary file left behind
  assert not out.exists()          # every one refused before converting


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
