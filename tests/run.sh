#!/usr/bin/env bash
# Runs every test of the project from a fresh clone: the README's test command, and what CI
# runs (.ci/run). Installs what the tests need that a plain Rust toolchain lacks.
set -euo pipefail
cd "$(dirname "$0")/.."

# rust-toolchain.toml pins the toolchain and lists the wasm32-wasip2 target; rustup installs
# both on first use. Asking for the target explicitly turns a missing one into a clear error.
if command -v rustup >/dev/null 2>&1; then
  rustup target add wasm32-wasip2 >/dev/null
fi
command -v python3 >/dev/null || { echo "python3 is needed for the benchmark baseline (apt-get install python3)" >&2; exit 1; }

# Debian's docker-registry serves the oci:// policy tests; openssl makes the TLS test's
# certificate; DejaVu Sans draws the text of `simulate`'s charts; Prometheus, Redis and webdis
# are what the stock metric sources (guests/sources) are tested against.
packages=()
[ -x /usr/bin/docker-registry ] || packages+=(docker-registry)
[ -x /usr/bin/prometheus ] || packages+=(prometheus)
[ -x /usr/bin/redis-server ] || packages+=(redis-server)
[ -x /usr/bin/webdis ] || packages+=(webdis)
command -v openssl >/dev/null || packages+=(openssl)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || packages+=(fonts-dejavu-core)
if [ ${#packages[@]} -gt 0 ]; then
  echo "installing ${packages[*]} from Debian for the tests" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  apt_install() { $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null; }
  apt_install || { $sudo apt-get update -qq >/dev/null && apt_install; }
fi

# In the background while the tests build, one after the other (both may call apt):
# - the pinned toolchains of the JavaScript, Python and C example guests, moto's server for the
#   AWS tests and the Helm library for the chart's (into .cache/, once). The tests that use them
#   wait while .cache/toolchains/installing exists (wasmscaler_tests::toolchains_ready); its
#   log is .cache/toolchains.log;
# - a real OpenStack on loopback for the openstack target's tests (tests/openstack.rs):
#   installed (once), then started fresh once the tests are built (a minute of its services'
#   Python start-up on both cores would slow the build down more than it saves), stopped when
#   this script ends. The tests wait for it (.cache/openstack/starting, removed by start.sh
#   once it is up, or here if it fails); its log is .cache/openstack/start.log.
# WASMSCALER_TESTS_WITHOUT_OPENSTACK=1 leaves the OpenStack out (neither installed nor started,
# and tests/lanes.py does not run its tests): only to measure what it costs a run, never in CI.
mkdir -p .cache/toolchains .cache/openstack
touch .cache/toolchains/installing .cache/openstack/starting
rm -f .cache/openstack/run/ready .cache/openstack/built
{
  bash tests/toolchains/install.sh all > .cache/toolchains.log 2>&1 \
    || echo "tests/run.sh: installing the toolchains failed; see .cache/toolchains.log" >&2
  rm -f .cache/toolchains/installing
  if [ -n "${WASMSCALER_TESTS_WITHOUT_OPENSTACK:-}" ]; then
    rm -f .cache/openstack/starting
  elif bash tests/openstack/install.sh > .cache/openstack/start.log 2>&1; then
    while [ ! -f .cache/openstack/built ]; do sleep 1; done
    bash tests/openstack/start.sh >> .cache/openstack/start.log 2>&1 || rm -f .cache/openstack/starting
  else
    rm -f .cache/openstack/starting
  fi
} &
installing=$!
trap 'kill $installing 2>/dev/null || true; rm -f .cache/toolchains/installing .cache/openstack/starting; bash tests/openstack/stop.sh' EXIT

# A CI run builds from scratch once: incremental compilation's bookkeeping only costs there,
# and our own crates need only line tables in it (a failure's backtrace keeps its file and
# line): rebuilding the workspace's test binaries measured 67.5-69.4 s against 75.0-75.2 s
# with full debug info. (The dependencies carry none in any build: Cargo.toml.)
if [ -n "${CI:-}" ]; then
  export CARGO_INCREMENTAL=0 CARGO_PROFILE_DEV_DEBUG=line-tables-only
fi

# The Rust guest SDK's helpers (config, the HPA formula, history, JSON paths), natively and
# without the bindings (whose generator would be a native build of its own): the SDK is a crate
# outside the host's workspace. Its bindings are built and run by the template test.
cargo test --quiet --manifest-path guests/sdk/Cargo.toml --no-default-features

# One profile for everything (tests, the CLI binary, benches in test mode): wasmtime and
# cranelift compile once. Built first, so the OpenStack starts beside the first tests; the
# build lists every test binary, and tests/lanes.py runs each once as `cargo test
# --no-fail-fast` would, two lanes side by side and then the timing-sensitive ones alone
# (cargo itself would run them one after the other).
cargo test --workspace --all-targets --no-run --message-format=json-render-diagnostics \
  > .cache/test-binaries.json
touch .cache/openstack/built
python3 tests/lanes.py .cache/test-binaries.json
