#!/usr/bin/env bash
# Regenerates app/src/main/assets (and ../micro's model/digit data) with tfprune-export.
# Run from the repository root with tfprune installed (e.g. .venv).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-.venv/bin/python}"
TF_CPP_MIN_LOG_LEVEL=3 "$PYTHON" scripts/make_demo_assets.py "$@"
