#!/usr/bin/env bash
# Builds the JavaScript cpu-target guest: build.sh OUT.wasm
# Needs componentize-js (tests/toolchains/install.sh js puts a pinned one in .cache).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${1:-$here/cpu_target.wasm}"
tool="${COMPONENTIZE_JS:-$repo/.cache/toolchains/node/node_modules/.bin/componentize-js}"
[ -x "$tool" ] || { echo "componentize-js not found at $tool: run tests/toolchains/install.sh js" >&2; exit 1; }
cd "$here"
# -d: leave out the WASI features the guest does not use, so the component imports no
# stdio, random, clocks or HTTP.
"$tool" cpu-target.js --wit wit -n cpu-target -d stdio random clocks http fetch-event -o "$out"
