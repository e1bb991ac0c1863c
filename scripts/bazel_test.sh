#!/usr/bin/env bash
# Runs the test suite under Bazel, offline: regenerates BUILD and .bazelignore first (a
# virtual environment anywhere in the tree would otherwise break `bazel test //...`,
# since TensorFlow's wheel ships BUILD files), then `bazel test` with the given targets
# (default //...). Extra arguments go to bazel, e.g. `bash scripts/bazel_test.sh
# //:masks_test --test_output=all`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python3 scripts/gen_build.py >/dev/null
if (($# == 0)); then
  set -- //...
fi
exec bazel test "$@"
