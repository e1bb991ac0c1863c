#!/usr/bin/env bash
# Runs the test suite under Bazel, offline: regenerates BUILD and .bazelignore first (a
# virtual environment anywhere in the tree would otherwise break `bazel test //...`,
# since TensorFlow's wheel ships BUILD files), then `bazel test` with the given targets
# (default //..., when no argument is a target). Options go to bazel too, e.g.
# `bash scripts/bazel_test.sh //:masks_test --test_output=all` or
# `bash scripts/bazel_test.sh --local_test_jobs=1`. The venv of scripts/setup.sh runs
# the tests (third_party/bazel/README.md); TFPRUNE_SLOW_TESTS=1 adds the slow variants.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v bazel >/dev/null || {
  echo "bazel_test.sh: bazel not found; install Debian's Bazel 4.2.3 with" \
       "'apt-get install -y bazel-bootstrap' (as root)." >&2
  exit 127
}
python3 scripts/gen_build.py >/dev/null
targets=0
for arg in "$@"; do
  [[ "$arg" == -* ]] || targets=1
done
if ((targets == 0)); then
  set -- "$@" //...
fi
exec bazel test "$@"
