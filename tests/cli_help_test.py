"""`--help` of the binaries as the installed console scripts run them.

A console script's `__main__` is pip's shim (`from tfprune.bin.train import run;
sys.exit(run())`), which defines no flags: absl's own `--help` then printed only
`USAGE: ... [flags]` and exited 1. tests/install_test.py runs `--help` of every real
script of an installed wheel; the subprocesses below reproduce the shim for the rest.
"""
import os
import subprocess
import sys
import types

from absl import flags
import pytest

from tfprune.bin import _cli

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
SHIM = ("import re, sys\nfrom tfprune.bin.{b} import run\n"
        "sys.argv = ['tfprune-{b}'] + sys.argv[1:]\nsys.exit(run())\n")
def _shim(binary, *args, cwd):
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run([sys.executable, "-c", SHIM.format(b=binary), *args], cwd=cwd,
                        env=env, capture_output=True, text=True, timeout=240)


def test_helpfull_lists_every_flag_and_exits_0(tmp_path):
  proc = _shim("inspect", "--helpfull", cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "--[no]strict:" in proc.stdout and "--[no]logtostderr:" in proc.stdout  # absl's too


def test_other_arguments_still_reach_absl(tmp_path):
  proc = _shim("inspect", cwd=tmp_path)  # no file: a usage error, status 1
  assert proc.returncode == 1
  assert "Give at least one .tflite file" in proc.stdout + proc.stderr
  proc = _shim("inspect", "--", "--help", cwd=tmp_path)  # after `--`: a file name
  assert proc.returncode == 1 and "--help" in proc.stdout + proc.stderr


def test_wanted_parses_like_absl():
  assert _cli._wanted(["p", "--help"], _cli.HELP)  # pylint: disable=protected-access
  assert _cli._wanted(["p", "-?"], _cli.HELP)  # pylint: disable=protected-access
  assert _cli._wanted(["p", "--helpfull=true"], _cli.HELPFULL)  # pylint: disable=protected-access
  assert not _cli._wanted(["p", "--helpfull"], _cli.HELP)  # pylint: disable=protected-access
  assert not _cli._wanted(["p", "--", "--help"], _cli.HELP)  # pylint: disable=protected-access
  assert not _cli._wanted(["p", "--help=false"], _cli.HELP)  # pylint: disable=protected-access


def test_flag_groups_order_the_help_text():
  values = flags.FlagValues()
  module = types.ModuleType("fake_binary", "fake-binary: does things.\n\nMore text.\n")
  flags.DEFINE_string("dataset", "mnist", "Data set.", flag_values=values,
                      module_name="fake_binary")
  flags.DEFINE_enum("method", "magnitude", ["magnitude", "admm"], "Method.",
                    flag_values=values, module_name="fake_binary")
  flags.DEFINE_bool("quiet", False, "Less output.", flag_values=values,
                    module_name="fake_binary")
  flags.DEFINE_integer("elsewhere", 1, "Not ours.", flag_values=values,
                       module_name="other_module")
  module.FLAG_GROUPS = {"data": ["dataset"], "method": ["method"]}
  text = _cli.help_text(module, flag_values=values)
  assert text.startswith("fake-binary: does things.")
  data, method, other = (text.index(s) for s in ("data flags:", "method flags:",
                                                  "other flags:"))
  assert data < text.index("--dataset:") < method < text.index("--method:") < other
  assert other < text.index("--[no]quiet:")
  assert "<magnitude|admm>" in text and "(default: 'mnist')" in text
  assert "--elsewhere" not in text
  assert "--elsewhere" in _cli.help_text(module, full=True, flag_values=values)


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
