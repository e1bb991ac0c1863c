#!/usr/bin/env bash
# Creates .venv-torch: the Torch-Pruning baseline's own environment (PyTorch CPU +
# torch-pruning 1.6), so PyTorch never shares a process with TensorFlow. The structured
# benchmark starts bench/torch_pruning_runner.py in it as a subprocess. Idempotent.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${TORCH_VENV:-.venv-torch}"
[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
if ! "$VENV/bin/python" -c "import torch, torch_pruning" 2>/dev/null; then
  # torch==2.13.0 is the CPU build (a plain "torch" may resolve to a multi-GB CUDA build).
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
      "torch==2.13.0" "torch-pruning==1.6.*" numpy
fi
echo "setup_torch_pruning.sh: ok ($VENV)" >&2
