#!/usr/bin/env bash
# Regenerates the committed C bindings in gen/ from wit/ with the pinned wit-bindgen
# (tests/toolchains/install.sh bindgen), and records which WIT they were made from in
# gen/wit.sha256: the test suite fails when wit/ changes and this was not run.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bindgen="$repo/.cache/toolchains/cargo/bin/wit-bindgen"
[ -x "$bindgen" ] || { echo "$bindgen not found: run tests/toolchains/install.sh bindgen" >&2; exit 1; }
rm -rf "$here/gen" && mkdir -p "$here/gen"
"$bindgen" c "$here/wit" --world cpu-target --out-dir "$here/gen" >/dev/null
# Every WIT file (symlinks followed), sorted by path: its path on one line, then its bytes.
(cd "$here/wit" && find -L . -type f | LC_ALL=C sort | while read -r f; do echo "$f"; cat "$f"; done) \
  | sha256sum | cut -d' ' -f1 > "$here/gen/wit.sha256"
