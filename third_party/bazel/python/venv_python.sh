#!/bin/bash
# The Python interpreter for `bazel test`: the repository's .venv (created by
# scripts/setup.sh). Bazel runs this file through a runfiles symlink; resolving it finds
# the source tree, and so the venv, wherever the checkout lives.
here="$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"
python="$here/../../../.venv/bin/python"
if [[ ! -x "$python" ]]; then
  echo "venv_python.sh: $python not found; run 'bash scripts/setup.sh' first." >&2
  exit 127
fi
exec "$python" "$@"
