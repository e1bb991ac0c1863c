"""A real install: build the wheel, install it into a fresh venv, use it from outside the repo.

The fresh venv gets the wheel with `--no-deps`; its dependencies (TensorFlow, Keras,
LiteRT, ...) come from the running interpreter's site-packages through a `.pth` file, so
nothing is downloaded. That directory's own `.pth` files are not processed (a `.pth` line
only appends a path), so an editable install of the checkout there cannot shadow the
wheel: the test checks that `tfprune` is imported from the fresh venv.
"""
# bazel-size: large
import email.parser
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import textwrap
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
SOURCES = ("setup.cfg", "setup.py", "pyproject.toml", "README.md", "LICENSE")
BINARIES = ("tfprune-train", "tfprune-export", "tfprune-inspect")


def _clean_env(**extra):
  """The environment without PYTHONPATH (the checkout must not shadow the wheel)."""
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
  env.update(TF_CPP_MIN_LOG_LEVEL="3", **extra)
  return env


def _run(cmd, cwd, timeout=300, env=None):
  env = _clean_env() if env is None else env
  proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                        env=env)
  assert proc.returncode == 0, (
      f"{' '.join(map(str, cmd))} exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}"
      f"\nstderr:\n{proc.stderr[-3000:]}")
  return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
  """Builds the wheel from a copy of the sources (no build/ or egg-info in the tree)."""
  src = tmp_path_factory.mktemp("src")
  for name in SOURCES:
    shutil.copy(os.path.join(ROOT, name), src / name)
  shutil.copytree(os.path.join(ROOT, "tfprune"), src / "tfprune",
                  ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
  out = tmp_path_factory.mktemp("dist")
  _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
        "--no-index", "-q", "-w", str(out), "."], cwd=src)
  wheels = sorted(out.glob("tfprune-*.whl"))
  assert len(wheels) == 1, wheels
  return wheels[0]


@pytest.fixture(scope="module")
def env_dir(wheel, tmp_path_factory):
  """`python -m venv V && V/bin/pip install --no-deps WHEEL`; dependencies via a .pth."""
  root = tmp_path_factory.mktemp("venv")
  _run([sys.executable, "-m", "venv", str(root)], cwd=root)
  python = root / "bin" / "python"
  purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                  "['purelib'])"], cwd=root).stdout.strip()
  # Install first: with the dependencies visible, pip would see the checkout's own
  # (editable) tfprune there and skip the wheel as "already satisfied".
  _run([str(root / "bin" / "pip"), "install", "--no-deps", "--no-index", "-q",
        str(wheel)], cwd=root)
  deps = [p for p in site.getsitepackages() + [sysconfig.get_paths()["purelib"]]
          if os.path.isdir(p)]
  with open(os.path.join(purelib, "_tfprune_test_deps.pth"), "w", encoding="utf-8") as f:
    f.write("\n".join(dict.fromkeys(deps)) + "\n")
  return root


def test_wheel_ships_license_typing_marker_and_metadata(wheel):
  with zipfile.ZipFile(wheel) as zf:
    names = zf.namelist()
    assert "tfprune/py.typed" in names
    license_files = [n for n in names if n.startswith("tfprune-0.1.0.dist-info/LICENSE")]
    assert license_files, names
    text = zf.read(license_files[0]).decode()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text  # the full text, not a stub
    assert "tfprune/compat/tfmot/__init__.py" in names
    meta = email.parser.Parser().parsestr(
        zf.read("tfprune-0.1.0.dist-info/METADATA").decode())
    entry_points = zf.read("tfprune-0.1.0.dist-info/entry_points.txt").decode()
  requires = meta.get_all("Requires-Dist")
  core = [r for r in requires if "extra ==" not in r]
  assert any(r.startswith("ai-edge-litert") for r in core), requires
  assert meta["License"] == "Apache-2.0"
  assert "License :: OSI Approved :: Apache Software License" in meta.get_all("Classifier")
  assert meta.get_all("Project-URL"), "no project URLs"
  for binary in BINARIES:
    assert binary in entry_points


def test_installed_wheel_exports_a_verified_file_from_outside_the_repo(env_dir, tmp_path):
  script = textwrap.dedent("""\
      import os, sys
      import numpy as np
      import keras
      import tfprune
      from tfprune import export
      assert os.path.realpath(tfprune.__file__).startswith(os.path.realpath(sys.prefix)), (
          tfprune.__file__, sys.prefix)
      keras.utils.set_random_seed(0)
      model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
      kernel = model.layers[0].kernel.numpy()
      kernel[np.abs(kernel) < np.quantile(np.abs(kernel), 0.75)] = 0.0
      model.layers[0].kernel.assign(kernel)
      data = np.random.default_rng(0).normal(size=(16, 8)).astype("float32")
      blob = export.to_tflite(model, representative_data=data)
      assert blob[4:8] == b"TFL3", blob[:8]
      print("OK", len(blob))
      """)
  proc = _run([str(env_dir / "bin" / "python"), "-c", script], cwd=tmp_path)
  assert "OK" in proc.stdout


# A few flags each binary must list under --help (its own, not TensorFlow's).
OWN_FLAGS = {
    "tfprune-train": ["--method", "--target_sparsity", "--output_dir", "--dataset"],
    "tfprune-export": ["--model", "--output", "--quantize", "--target"],
    "tfprune-inspect": ["--[no]strict", "--target"],
}


@pytest.mark.parametrize("binary", BINARIES)
def test_installed_console_scripts_help(env_dir, tmp_path, binary):
  # The console script's __main__ is pip's shim, which defines no flags: absl's own
  # --help printed only `USAGE: ... [flags]` and exited 1 (tests/cli_help_test.py).
  proc = subprocess.run([str(env_dir / "bin" / binary), "--help"], cwd=tmp_path,
                        capture_output=True, text=True, timeout=120, env=_clean_env())
  out = proc.stdout
  assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
  assert f"USAGE: {binary} [flags]" in out, out[-2000:]
  assert out.startswith(f"{binary}:"), out[:200]  # the module docstring
  for flag in OWN_FLAGS[binary]:
    assert flag in out, (flag, out[-3000:])  # its own flags, not only absl's
  assert "--helpfull" in out
  assert "logtostderr" not in out  # absl's flags wait for --helpfull


def test_micro_verification_without_tflite_micro_names_the_install_line(tmp_path):
  script = textwrap.dedent("""\
      import sys
      sys.modules["tflite_micro"] = None  # as if tflite-micro were not installed
      import numpy as np
      import keras
      from tfprune import export
      model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
      data = np.random.default_rng(0).normal(size=(16, 8)).astype("float32")
      try:
        export.to_tflite(model, target="micro", quantize="int8", representative_data=data)
      except ImportError as e:
        print("ERROR:", e)
      """)
  proc = _run([sys.executable, "-c", script], cwd=tmp_path, env=_clean_env(PYTHONPATH=ROOT))
  assert "ERROR:" in proc.stdout and "pip install tflite-micro" in proc.stdout, proc.stdout


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
