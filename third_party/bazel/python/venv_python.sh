#!/bin/bash
# The Python interpreter for `bazel test`: the virtual environment scripts/setup.sh made,
# ${TFPRUNE_VENV:-.venv} (relative to the repository root unless absolute; .bazelrc
# passes TFPRUNE_VENV through). Bazel runs this file through a runfiles symlink;
# resolving it finds the source tree, and so the venv, wherever the checkout lives.
root="$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../../.."
venv="${TFPRUNE_VENV:-.venv}"
[[ "$venv" == /* ]] || venv="$root/$venv"
python="$venv/bin/python"
if [[ ! -x "$python" ]]; then
  echo "venv_python.sh: $python not found; run 'bash scripts/setup.sh' first" \
       "(or set TFPRUNE_VENV to the virtual environment it made)." >&2
  exit 127
fi
exec "$python" "$@"
