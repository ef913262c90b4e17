#!/usr/bin/env bash
# Stops what start.sh started (leaves .cache/openstack/run for its logs): every process
# recorded, then whatever still listens on the test cloud's loopback ports.
cd "$(dirname "$0")/../.."
run="$PWD/.cache/openstack/run"
ports="3306 5000 5672 8774 8778 9292 9696 25672"
pids=""
for pidfile in "$run"/*.pid; do
  [ -f "$pidfile" ] && pids+=" $(cat "$pidfile")"
done
listeners() {
  for port in $ports; do
    ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2
  done | sort -u
}
pids+=" $(listeners)"
# gunicorn's workers, nova's services and RabbitMQ's Erlang VM go with their parents' group.
[ -n "${pids// }" ] && kill $pids 2>/dev/null
for _ in $(seq 20); do [ -z "$(listeners)" ] && break; sleep 0.25; done
left="$(listeners) $(pgrep -f "$run" || true)"
[ -n "${left// }" ] && kill -9 $left 2>/dev/null
pkill -9 -f "nova-(conductor|scheduler|compute) --config-file $run" 2>/dev/null
pkill -f "wasmscaler@localhost" 2>/dev/null
exit 0
