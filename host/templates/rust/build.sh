#!/usr/bin/env bash
# Builds policy.wasm: the crate for wasm32-wasip2 (`rustup target add wasm32-wasip2` once).
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --target wasm32-wasip2
cp "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/{{crate}}.wasm" policy.wasm
