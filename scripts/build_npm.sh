#!/usr/bin/env bash
# Builds the npm package `equivariant` into pkg/: the crate compiled to wasm32 and bound with wasm-bindgen
# (--target web), optimised by wasm-opt, the worker and API from web/ and npm/, the viewer bundled with three.js
# by esbuild, and the shipped weights. `npm pack` in pkg/ makes the tarball.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
ensure_rust_wasm
ensure_wasm_bindgen
ensure_npm
cargo build --release --lib --target wasm32-unknown-unknown --no-default-features
rm -rf pkg
mkdir -p pkg/weights
wasm-bindgen --target web --out-dir pkg --out-name equivariant target/wasm32-unknown-unknown/release/equivariant.wasm
wasm-opt -Oz pkg/equivariant_bg.wasm -o pkg/equivariant_bg.wasm
rm -f pkg/equivariant.d.ts pkg/equivariant_bg.wasm.d.ts # the package's own types are in index.d.ts
cp web/worker.js npm/index.js npm/index.d.ts npm/viewer.d.ts npm/package.json npm/README.md LICENSE pkg/
node_modules/.bin/esbuild npm/viewer.js --bundle --format=esm --minify --target=es2022 --outfile=pkg/viewer.js --log-level=warning
cp weights/edm_qm9_9x128.safetensors weights/manifest.json weights/MODEL_CARD.md pkg/weights/
log "built pkg/ ($(du -sh pkg | cut -f1))"
