#!/usr/bin/env bash
# Builds the policy, then runs it once with `wasmscaler eval` on the sample context: three pods
# at 90 %, 80 % and 100 % of their CPU request against a 50 % target must give 6 replicas
# (ceil(3 × 90 / 50)). WASMSCALER names the binary if it is not on PATH.
set -euo pipefail
cd "$(dirname "$0")"
bash build.sh
out=$("${WASMSCALER:-wasmscaler}" eval --policy policy.wasm --context context.json \
  --pod-metrics pod-metrics.json)
echo "$out"
if ! grep -q '"targetReplicas": 6' <<<"$out"; then
  echo "test.sh: expected 6 replicas" >&2
  exit 1
fi
echo "test.sh: ok"
