#!/usr/bin/env bash
# Shared set-up steps: each installs a tool only when it is missing or has the wrong version.
# Sourced by scripts/serve.sh and scripts/test.sh.

TRUNK_VERSION=0.21.14
WASM_BINDGEN_VERSION=0.2.130

export PATH="$PWD/node_modules/.bin:$HOME/.cargo/bin:$PATH"

log() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root to run: $*"; return 1; fi
}

ensure_apt() { # ensure_apt <command-or-file> <package>...
  local probe=$1; shift
  if command -v "$probe" >/dev/null 2>&1 || [ -e "$probe" ]; then return 0; fi
  log "installing $* (apt)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

ensure_rust_wasm() {
  if ! rustup target list --installed 2>/dev/null | grep -q wasm32-unknown-unknown; then
    log "adding the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown
  fi
}

ensure_trunk() {
  if ! trunk --version 2>/dev/null | grep -q "$TRUNK_VERSION"; then
    log "installing trunk $TRUNK_VERSION (about 10-15 minutes on 2 cores, once)"
    cargo install --locked trunk --version "$TRUNK_VERSION"
  fi
}

ensure_wasm_bindgen() {
  if ! wasm-bindgen --version 2>/dev/null | grep -q "$WASM_BINDGEN_VERSION"; then
    log "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION"
    # not --locked: its lockfile pins a crate version the registry mirror lacks
    cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
  fi
}

ensure_npm() {
  if [ ! -x node_modules/.bin/wasm-opt ] || [ ! -x node_modules/.bin/esbuild ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    log "installing npm packages (wasm-opt, esbuild, three, playwright-core)"
    npm ci --no-audit --no-fund
  fi
}

ensure_python() {
  if ! python3 -c "import torch, safetensors, numpy" 2>/dev/null; then
    log "installing the training requirements (PyTorch; a large download, once)"
    python3 -m pip install -q -r training/requirements.txt
  fi
}
