#!/usr/bin/env bash
# Installs whatever is missing (wasm target, trunk, wasm-bindgen-cli, npm tools) and serves the app
# on the shipped weights at http://127.0.0.1:8080 (extra arguments go to `trunk serve`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
ensure_rust_wasm
ensure_trunk
ensure_wasm_bindgen
ensure_npm
log "serving on http://127.0.0.1:8080"
exec trunk serve --release "$@"
