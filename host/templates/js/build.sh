#!/usr/bin/env bash
# Builds policy.wasm with componentize-js (npm @bytecodealliance/componentize-js 0.23.0; set
# COMPONENTIZE_JS to its path if it is not on PATH).
set -euo pipefail
cd "$(dirname "$0")"
tool="${COMPONENTIZE_JS:-componentize-js}"
command -v "$tool" >/dev/null || {
  echo "componentize-js not found: npm install @bytecodealliance/componentize-js@0.23.0, then set COMPONENTIZE_JS" >&2
  exit 1
}
# -d: leave out the WASI features the policy does not use, so the component imports no
# stdio, random, clocks or HTTP.
"$tool" policy.js --wit wit -n {{name}} -d stdio random clocks http fetch-event -o policy.wasm
