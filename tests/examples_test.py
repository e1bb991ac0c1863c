"""Every script in examples/ runs end to end at its `--small` size.

Each runs in its own interpreter, from an empty temporary directory, as a user would run
it from a checkout; the assertions check what it says it did (verified exports, the
sparsity reached, the files written). The examples use only public names.
"""
# bazel-size: enormous
import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
TIMEOUT_S = 900

# example -> (extra flags, strings its output must contain, files it must write)
EXPECTED = {
    "applications_fashion_mnist.py": (
        [], ["verified xnnpack", "verified builtin", "mobilenetv2_int8.tflite"],
        ["mobilenetv2_int8.tflite"]),
    "kws_dscnn_micro.py": (
        [], ["verified tflm", "g_ds_cnn_model"],
        ["ds_cnn_int8.tflite", "g_ds_cnn_model.cc", "g_ds_cnn_model.h"]),
    "tfmot_migration.py": (
        [], ["pruned test accuracy", "verified in LiteRT"], ["pruned.keras", "pruned.tflite"]),
    "custom_training_loop.py": (
        [], ["sparsity 0.900", "lenet_sparse.tflite"], ["lenet_sparse.tflite"]),
    "mirrored_strategy.py": (["--cpus=2"], ["replicas in sync: 2", "test accuracy"],
                             ["pruned.keras"]),
}


# Run by tests/readme_test.py (README's "Multi-worker" block starts two workers).
RUN_BY_README = ("multiworker.py",)


def _examples():
  return sorted(n for n in os.listdir(EXAMPLES) if n.endswith(".py"))


def test_every_example_is_tested():
  assert _examples() == sorted(set(EXPECTED) | set(RUN_BY_README))
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    readme = f.read()
  for name in RUN_BY_README:
    assert f"python examples/{name}" in readme


@pytest.mark.parametrize("name", sorted(set(EXPECTED) | set(RUN_BY_README)))
def test_examples_import_only_public_names(name):
  with open(os.path.join(EXAMPLES, name), encoding="utf-8") as f:
    tree = ast.parse(f.read())
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      names = [f"{node.module}.{a.name}" for a in node.names]
    elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and (
        node.value.id == "tfprune"):
      names = [f"tfprune.{node.attr}"]
    else:
      continue
    for dotted in names:
      if dotted.startswith("tfprune"):
        assert not any(part.startswith("_") for part in dotted.split(".")), (name, dotted)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs_small(name, tmp_path):
  flags, expected, files = EXPECTED[name]
  out_dir = tmp_path / "out"
  cmd = [sys.executable, os.path.join(EXAMPLES, name), "--small",
         f"--output_dir={out_dir}"] + flags
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                        timeout=TIMEOUT_S)
  out = proc.stdout + proc.stderr
  assert proc.returncode == 0, out[-6000:]
  for text in expected:
    assert text in out, (text, out[-4000:])
  for f in files:
    assert (out_dir / f).is_file(), (f, sorted(os.listdir(out_dir)))


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
