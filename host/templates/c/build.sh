#!/usr/bin/env bash
# Builds policy.wasm: policy.c and the bindings in gen/ compiled for wasm32-wasi with clang
# (Debian: clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32; set CC for another clang),
# then made a component by `wasmscaler componentize` (WASMSCALER names the binary if it is not
# on PATH). gen/ holds wit-bindgen's C bindings of wit/world.wit (world cpu-target); after
# changing the world, regenerate them: `wit-bindgen c wit --world cpu-target --out-dir gen`.
set -euo pipefail
cd "$(dirname "$0")"
cc="${CC:-clang-14}"
command -v "$cc" >/dev/null || { echo "$cc not found: apt-get install clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32" >&2; exit 1; }
# A reactor (a library, no main) for wasm32-wasi against Debian's wasi-libc.
"$cc" --target=wasm32-wasi --sysroot=/usr -mexec-model=reactor -O2 -Wall -Werror \
  -I gen -Wl,--strip-all policy.c gen/cpu_target.c gen/cpu_target_component_type.o -o core.wasm
"${WASMSCALER:-wasmscaler}" componentize core.wasm --out policy.wasm
rm core.wasm
