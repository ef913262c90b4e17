#!/usr/bin/env bash
# The local demo, end to end, no cluster: builds the capacity guest and the host, starts the
# load generator, and runs wasmscaler on python worker replicas for DURATION (default 60s).
# Watch the log: replicas go up while the load runs and back down after it.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v python3 >/dev/null || { echo "the demo's workers need python3" >&2; exit 1; }
echo "building the capacity guest and the host (the first time: minutes; see the README)..."
cargo build --release --quiet --target wasm32-wasip2 --manifest-path guests/capacity/Cargo.toml --target-dir target/guests
# The dev profile: what the host's speed rests on (wasmtime, cranelift, tokio, hyper) is
# optimized there too (Cargo.toml), the rest is not, so it builds in a fraction of a release
# build's time. The demo scales local processes, so the Kubernetes and AWS client stacks are
# left out (`--no-default-features`); DEMO_FEATURES=default builds the full host instead.
if [ "${DEMO_FEATURES:-local}" = default ]; then
  cargo build --quiet -p wasmscaler
else
  cargo build --quiet -p wasmscaler --no-default-features
fi
python3 guests/demo/loadgen.py --base-port 9100 --ports 6 --clients 10 --start 5 --busy 25 &
loadgen=$!
trap 'kill $loadgen 2>/dev/null || true' EXIT
RUST_LOG="${RUST_LOG:-info,wasmscaler::guest=warn}" \
  target/debug/wasmscaler run --config guests/demo/wasmscaler.yaml --duration "${DURATION:-60s}"
