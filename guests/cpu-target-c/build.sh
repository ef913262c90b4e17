#!/usr/bin/env bash
# Builds the C cpu-target guest: build.sh [--core] OUT.wasm
# Compiles cpu_target.c with the committed bindings in gen/ (regen.sh remakes them from wit/)
# using Debian's clang-14, lld-14, wasi-libc and libclang-rt-14-dev-wasm32
# (tests/toolchains/install.sh c installs them). Then wraps the core module into a component
# with `wasm-tools component new` and the WASI preview 1 reactor adapter
# (tests/toolchains/install.sh wasm-tools puts pinned ones in .cache). With --core it stops at
# the core module: the test suite wraps it in-process with the wit-component crate.
set -euo pipefail
core_only=false
if [ "${1:-}" = "--core" ]; then core_only=true; shift; fi
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${1:-$here/cpu_target.wasm}"
tools="$repo/.cache/toolchains"
command -v clang-14 >/dev/null || { echo "clang-14 not found: run tests/toolchains/install.sh c" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
core="$work/core.wasm"; $core_only && core="$out"
# A reactor (a library, no main) for wasm32-wasi against Debian's wasi-libc.
clang-14 --target=wasm32-wasi --sysroot=/usr -mexec-model=reactor -O2 -Wall -Werror \
  -I "$here/gen" -Wl,--strip-all "$here/cpu_target.c" "$here/gen/cpu_target.c" \
  "$here/gen/cpu_target_component_type.o" -o "$core"
$core_only && exit 0
for tool in "$tools/cargo/bin/wasm-tools" "$tools/wasi_snapshot_preview1.reactor.wasm"; do
  [ -e "$tool" ] || { echo "$tool not found: run tests/toolchains/install.sh wasm-tools" >&2; exit 1; }
done
# wasi-libc's start-up imports WASI preview 1; the reactor adapter maps it onto preview 2.
"$tools/cargo/bin/wasm-tools" component new "$core" \
  --adapt "wasi_snapshot_preview1=$tools/wasi_snapshot_preview1.reactor.wasm" -o "$out"
