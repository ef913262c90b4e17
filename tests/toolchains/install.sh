#!/usr/bin/env bash
# Installs the pinned guest toolchains for the JavaScript, Python and C example guests into
# .cache/toolchains, moto's server into .cache/moto and the Helm library into .cache/helm (all
# git-ignored). Idempotent: a
# toolchain already at its pinned version is left alone.
# Usage: tests/toolchains/install.sh [all|c|js|python|moto|helm|wasm-tools|bindgen]
# `all` is what the tests need; wasm-tools and bindgen are for building guests by hand.
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$PWD/.cache/toolchains"
mkdir -p "$root"

WASM_TOOLS_VERSION=1.263.0          # crates.io
WIT_BINDGEN_VERSION=0.63.0          # crates.io, wit-bindgen-cli with only the C generator
COMPONENTIZE_JS_VERSION=0.23.0      # npm @bytecodealliance/componentize-js (engine bundled; no AOT)
COMPONENTIZE_PY_VERSION=0.25.1      # PyPI componentize-py
MOTO_VERSION=5.2.5                  # PyPI moto[server]: AWS APIs on loopback for tests/aws.rs
HELM_SDK_VERSION=0.2.2              # PyPI helm-python-sdk: Helm's Go SDK (v4) to lint and render the chart
ADAPTER_VERSION=48.0.8              # crates.io wasi-preview1-component-adapter-provider (= wasmtime)
C_PACKAGES=(clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32)   # Debian

say() { echo "toolchains: $*" >&2; }

stamp_ok() { [ -f "$root/$1.version" ] && [ "$(cat "$root/$1.version")" = "$2" ]; }
stamp() { echo "$2" > "$root/$1.version"; }

cargo_tool() { # name crate version features...
  local name=$1 crate=$2 version=$3; shift 3
  if stamp_ok "$name" "$version" && [ -x "$root/cargo/bin/$name" ]; then return; fi
  say "building $crate $version (a few minutes, once)"
  cargo install --quiet --locked --root "$root/cargo" "$crate@$version" "$@"
  stamp "$name" "$version"
}

install_wasm_tools() {
  cargo_tool wasm-tools wasm-tools "$WASM_TOOLS_VERSION" \
    --no-default-features --features component,parse,print,validate,metadata
  # The WASI preview1 reactor adapter, for wrapping a C guest's core module by hand.
  if ! stamp_ok adapter "$ADAPTER_VERSION"; then
    say "fetching the WASI preview1 reactor adapter $ADAPTER_VERSION"
    local tmp; tmp=$(mktemp -d)
    mkdir -p "$tmp/src" && touch "$tmp/src/lib.rs"
    printf '[package]\nname="fetch-adapter"\nversion="0.0.0"\nedition="2021"\n[dependencies]\nwasi-preview1-component-adapter-provider="=%s"\n' \
      "$ADAPTER_VERSION" > "$tmp/Cargo.toml"
    cargo fetch --quiet --manifest-path "$tmp/Cargo.toml"
    local src
    src=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -path "*wasi-preview1-component-adapter-provider-$ADAPTER_VERSION/artefacts/wasi_snapshot_preview1.reactor.wasm" | head -1)
    [ -n "$src" ] || { say "the adapter is not in the fetched crate"; exit 1; }
    cp "$src" "$root/wasi_snapshot_preview1.reactor.wasm"
    rm -rf "$tmp"
    stamp adapter "$ADAPTER_VERSION"
  fi
}

# Only to regenerate guests/cpu-target-c/gen after a WIT change (guests/cpu-target-c/regen.sh).
install_bindgen() {
  cargo_tool wit-bindgen wit-bindgen-cli "$WIT_BINDGEN_VERSION" --no-default-features --features c
}

# What the test suite needs for the C guest: Debian's clang and wasi-libc. The bindings are
# committed and the test suite wraps the core module in-process (wit-component), so neither
# wit-bindgen nor wasm-tools is built.
install_c() {
  local missing=()
  for p in "${C_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]} from Debian"
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    apt_install() { $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }
    apt_install || { $sudo apt-get update -qq >/dev/null && apt_install; }
  fi
}

install_js() {
  command -v npm >/dev/null || { say "npm is needed for the JavaScript guest (apt-get install npm)"; exit 1; }
  if stamp_ok componentize-js "$COMPONENTIZE_JS_VERSION" && [ -x "$root/node/node_modules/.bin/componentize-js" ]; then return; fi
  say "installing @bytecodealliance/componentize-js $COMPONENTIZE_JS_VERSION from npm"
  mkdir -p "$root/node"
  npm install --silent --no-audit --no-fund --prefix "$root/node" \
    "@bytecodealliance/componentize-js@$COMPONENTIZE_JS_VERSION" >/dev/null
  stamp componentize-js "$COMPONENTIZE_JS_VERSION"
}

# A PyPI package pinned in a venv of its own: pip_venv NAME DIR EXECUTABLE REQUIREMENT
pip_venv() {
  local name=$1 dir=$2 exe=$3 requirement=$4
  if stamp_ok "$name" "${requirement#*==}" && [ -x "$dir/bin/$exe" ]; then return; fi
  say "installing $requirement from PyPI"
  python3 -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check "$requirement"
  stamp "$name" "${requirement#*==}"
}

install_python() {
  pip_venv componentize-py "$root/python" componentize-py "componentize-py==$COMPONENTIZE_PY_VERSION"
}

install_moto() {
  pip_venv moto "$root/../moto" moto_server "moto[server]==$MOTO_VERSION"
}

install_helm() {
  pip_venv helm "$root/../helm" python "helm-python-sdk==$HELM_SDK_VERSION"
}

case "${1:-all}" in
  all) install_c; install_js; install_python; install_moto; install_helm ;;
  moto) install_moto ;;
  helm) install_helm ;;
  wasm-tools) install_wasm_tools ;;
  bindgen) install_bindgen ;;
  c) install_c ;;
  js) install_js ;;
  python) install_python ;;
  *) say "unknown toolchain $1 (all, c, js, python, moto, helm, wasm-tools, bindgen)"; exit 2 ;;
esac
