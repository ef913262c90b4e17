#!/usr/bin/env bash
# Builds the C cpu-target guest: build.sh OUT.wasm
# Needs wit-bindgen and wasm-tools (tests/toolchains/install.sh c puts pinned ones in .cache)
# and Debian's clang-14, lld-14, wasi-libc and libclang-rt-14-dev-wasm32 (the same script
# installs them).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${1:-$here/cpu_target.wasm}"
tools="$repo/.cache/toolchains"
for tool in "$tools/cargo/bin/wit-bindgen" "$tools/cargo/bin/wasm-tools" "$(command -v clang-14 || echo clang-14)"; do
  [ -x "$tool" ] || { echo "$tool not found: run tests/toolchains/install.sh c" >&2; exit 1; }
done
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/gen"
"$tools/cargo/bin/wit-bindgen" c "$here/wit" --world cpu-target --out-dir "$work/gen" \
  >"$work/bindgen.log" 2>&1 || { cat "$work/bindgen.log" >&2; exit 1; }
cp "$here/cpu_target.c" "$work/"
# A reactor (a library, no main) for wasm32-wasi against Debian's wasi-libc.
clang-14 --target=wasm32-wasi --sysroot=/usr -mexec-model=reactor -O2 -Wall -Werror \
  -Wl,--strip-all "$work/cpu_target.c" "$work/gen/cpu_target.c" \
  "$work/gen/cpu_target_component_type.o" -o "$work/core.wasm"
# wasi-libc's start-up imports WASI preview 1; the reactor adapter maps it onto preview 2.
"$tools/cargo/bin/wasm-tools" component new "$work/core.wasm" \
  --adapt "wasi_snapshot_preview1=$tools/wasi_snapshot_preview1.reactor.wasm" -o "$out"
