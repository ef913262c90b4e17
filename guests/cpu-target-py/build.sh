#!/usr/bin/env bash
# Builds the Python cpu-target guest: build.sh OUT.wasm
# Needs componentize-py (tests/toolchains/install.sh python puts a pinned one in .cache).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${1:-$here/cpu_target.wasm}"
tool="${COMPONENTIZE_PY:-$repo/.cache/toolchains/python/bin/componentize-py}"
[ -x "$tool" ] || { echo "componentize-py not found at $tool: run tests/toolchains/install.sh python" >&2; exit 1; }
# --stub-wasi: the guest gets no WASI at all, only the wasmscaler:policy imports.
"$tool" -d "$here/wit" -w cpu-target componentize --stub-wasi -p "$here" app -o "$out"
