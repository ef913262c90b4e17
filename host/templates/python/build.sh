#!/usr/bin/env bash
# Builds policy.wasm with componentize-py (PyPI componentize-py 0.25.1; set COMPONENTIZE_PY to
# its path if it is not on PATH).
set -euo pipefail
cd "$(dirname "$0")"
tool="${COMPONENTIZE_PY:-componentize-py}"
command -v "$tool" >/dev/null || {
  echo "componentize-py not found: pip install componentize-py==0.25.1, then set COMPONENTIZE_PY" >&2
  exit 1
}
# --stub-wasi: the policy gets no WASI at all, only the wasmscaler:policy imports.
"$tool" -d wit -w {{name}} componentize --stub-wasi -p . app -o policy.wasm
