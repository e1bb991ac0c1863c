#!/usr/bin/env bash
# Creates .venv-tfmot: the TFMOT baseline's own environment (tf_keras + TFMOT 0.8.1).
# TFMOT pins absl-py~=1.2 and needs legacy Keras (tf-keras), so it gets its own venv; the
# benchmarks start it as a subprocess (bench/tfmot_runner.py). Idempotent.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${TFMOT_VENV:-.venv-tfmot}"
[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
if ! "$VENV/bin/python" -c "import tensorflow_model_optimization, tf_keras" 2>/dev/null; then
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
      "tensorflow==2.21.*" "tf-keras==2.21.*" "tensorflow-model-optimization==0.8.1"
fi
echo "setup_tfmot.sh: ok ($VENV)" >&2
