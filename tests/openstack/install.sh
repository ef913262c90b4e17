#!/usr/bin/env bash
# Installs a real OpenStack for the tests, on this machine only: MariaDB and RabbitMQ from
# Debian (not started by dpkg; start.sh starts them on 127.0.0.1), and keystone, nova,
# placement, glance and neutron from PyPI into .cache/openstack/venv (git-ignored).
# Idempotent: a venv at the pinned versions is left alone. See tests/openstack/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=tests/openstack
root="$PWD/.cache/openstack"
mkdir -p "$root"
say() { echo "openstack: $*" >&2; }

sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
packages=()
command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || packages+=(mariadb-server)
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || [ -x /usr/sbin/rabbitmq-server ] || packages+=(rabbitmq-server)
if [ ${#packages[@]} -gt 0 ]; then
  say "installing ${packages[*]} from Debian"
  # dpkg would start both as system services; the tests start their own on loopback.
  policy=/usr/sbin/policy-rc.d
  had_policy=0; [ -e $policy ] && had_policy=1
  [ $had_policy = 1 ] || { printf '#!/bin/sh\nexit 101\n' | $sudo tee $policy >/dev/null; $sudo chmod +x $policy; }
  apt_install() { $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null; }
  apt_install || { $sudo apt-get update -qq >/dev/null && apt_install; }
  [ $had_policy = 1 ] || $sudo rm -f $policy
fi

# The services and what starts them, pinned by constraints.txt (made with `pip freeze` from
# an install that passed the tests), plus the ML2 driver that binds ports without an agent.
want="$(sha256sum "$here/constraints.txt" "$here/requirements.txt" | sha256sum | cut -c1-16)"
if [ -f "$root/venv.version" ] && [ "$(cat "$root/venv.version")" = "$want" ] && [ -x "$root/venv/bin/keystone-manage" ]; then
  exit 0
fi
say "installing the OpenStack services from PyPI (about a minute with a warm pip cache)"
rm -rf "$root/venv"
python3 -m venv "$root/venv"
"$root/venv/bin/pip" install --quiet --disable-pip-version-check \
  -c "$here/constraints.txt" -r "$here/requirements.txt"
# Built from a copy: setuptools writes build/ and egg-info/ beside the sources it builds.
rm -rf "$root/agentless-ml2" && cp -r "$here/agentless-ml2" "$root/agentless-ml2"
"$root/venv/bin/pip" install --quiet --disable-pip-version-check --no-deps "$root/agentless-ml2"
echo "$want" > "$root/venv.version"
