"""Tests for tfprune.export.c_array: the generated .cc compiles with g++ and holds the bytes."""
import os
import shutil
import subprocess
import sys

import pytest

from tfprune.export import c_array  # the function (re-exported)

MAIN = r"""
#include <cstdint>
#include <cstdio>
#include "g_model.h"
int main() {
  if (reinterpret_cast<std::uintptr_t>(g_model) % 16 != 0) return 3;
  fwrite(g_model, 1, g_model_len, stdout);
  return 0;
}
"""


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_compiles_and_holds_same_bytes(tmp_path):
  data = bytes(range(256)) * 3 + b"TFL3tail"
  src = tmp_path / "model.tflite"
  src.write_bytes(data)
  cc, h = c_array(src, "g_model", output_dir=tmp_path / "gen")
  assert os.path.basename(cc) == "g_model.cc" and os.path.basename(h) == "g_model.h"
  assert "alignas(16) const unsigned char g_model[]" in open(cc).read()
  (tmp_path / "main.cc").write_text(MAIN)
  exe = tmp_path / "a.out"
  subprocess.run(["g++", "-std=c++17", "-Wall", "-Werror", "-I", str(tmp_path / "gen"),
                  str(tmp_path / "main.cc"), cc, "-o", str(exe)], check=True, timeout=120)
  out = subprocess.run([str(exe)], capture_output=True, check=True, timeout=30).stdout
  assert out == data


def test_bad_name_and_empty_file(tmp_path):
  src = tmp_path / "m.tflite"
  src.write_bytes(b"x")
  with pytest.raises(ValueError, match="C identifier"):
    c_array(src, "1bad-name")
  src.write_bytes(b"")
  with pytest.raises(ValueError, match="empty"):
    c_array(src, "g_model")


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
