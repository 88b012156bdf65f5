#!/usr/bin/env bash
# Installs what the tests need and runs every test: formatting, lints (native and wasm), the Rust unit and
# integration tests (GPU tests on lavapipe), the Python trainer tests, the wasm build, the browser tests of the app
# and of the npm package in headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
ensure_apt chromium chromium
ensure_apt /usr/share/vulkan/icd.d/lvp_icd.x86_64.json mesa-vulkan-drivers libvulkan1
ensure_rust_wasm
ensure_trunk
ensure_wasm_bindgen
ensure_npm
ensure_python

log "cargo fmt --check"
cargo fmt --check
log "clippy (native, all targets)"
cargo clippy --all-targets --release -- -D warnings
log "clippy (wasm32 library)"
cargo clippy --lib --release --target wasm32-unknown-unknown --no-default-features -- -D warnings
log "Rust tests"
cargo test --release
log "Python trainer tests"
python3 -m unittest discover -s training/tests -t training -v
log "weights manifest (SHA-256 the app checks downloads against)"
node scripts/weights_manifest.mjs --check
log "wasm build (trunk)"
trunk build --release
log "browser tests (headless Chromium)"
node tests/browser/run.mjs
log "npm package (build, pack, install, use in Chromium)"
scripts/build_npm.sh
node tests/npm/run.mjs
log "all tests passed"
