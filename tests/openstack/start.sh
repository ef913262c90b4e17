#!/usr/bin/env bash
# Starts a real OpenStack on 127.0.0.1 from what install.sh installed: MariaDB, RabbitMQ,
# keystone, placement, glance, neutron (ML2 with the agentless driver) and nova (api,
# conductor, scheduler, compute with Nova's fake virt driver: servers go ACTIVE, nothing
# boots). Everything lives under .cache/openstack/run and is made fresh each start.
# Then it creates what the tests use: a flavor, an image, a private network and a public one
# for floating IPs, and writes .cache/openstack/run/clouds.yaml. stop.sh stops it.
set -euo pipefail
cd "$(dirname "$0")/../.."
here="$PWD/tests/openstack"
root="$PWD/.cache/openstack"
run="$root/run"
venv="$root/venv"
bin="$venv/bin"
say() { echo "openstack: $*" >&2; }

bash "$here/stop.sh" >/dev/null 2>&1 || true
rm -rf "$run" && mkdir -p "$run"/{log,etc,lock,images}
# While this marker exists the tests wait for `ready`; a failed start removes it.
touch "$root/starting"
trap 'rm -f "$root/starting"' EXIT
started=$(date +%s)

# --- MariaDB -----------------------------------------------------------------------------
say "starting MariaDB"
mariadb-install-db --no-defaults --datadir="$run/mysql" --user="$(id -un)" \
  --auth-root-authentication-method=normal >"$run/log/mariadb-install.log" 2>&1
mariadbd --no-defaults --datadir="$run/mysql" --user="$(id -un)" --bind-address=127.0.0.1 \
  --port=3306 --socket="$run/mysql.sock" --pid-file="$run/mysql.pid" \
  --innodb-flush-log-at-trx-commit=0 --skip-log-bin --max-connections=500 \
  >"$run/log/mariadb.log" 2>&1 &
for _ in $(seq 100); do mariadb --no-defaults -S "$run/mysql.sock" -uroot -e 'select 1' >/dev/null 2>&1 && break; sleep 0.2; done
# 'localhost' too: the anonymous 'localhost' user mariadb-install-db makes would win over '%'.
sql="CREATE USER 'openstack'@'%' IDENTIFIED BY 'openstack'; CREATE USER 'openstack'@'localhost' IDENTIFIED BY 'openstack';"
for db in keystone placement glance neutron nova_api nova nova_cell0; do
  sql+="CREATE DATABASE $db; GRANT ALL ON $db.* TO 'openstack'@'%'; GRANT ALL ON $db.* TO 'openstack'@'localhost';"
done
mariadb --no-defaults -S "$run/mysql.sock" -uroot -e "$sql"
db() { echo "mysql+pymysql://openstack:openstack@127.0.0.1:3306/$1?charset=utf8"; }

# --- RabbitMQ ----------------------------------------------------------------------------
say "starting RabbitMQ"
export RABBITMQ_MNESIA_BASE="$run/rabbitmq" RABBITMQ_LOG_BASE="$run/log" \
  RABBITMQ_NODENAME=wasmscaler@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
  RABBITMQ_NODE_PORT=5672 RABBITMQ_DIST_PORT=25672 RABBITMQ_PID_FILE="$run/rabbitmq.pid" \
  RABBITMQ_ENABLED_PLUGINS_FILE="$run/rabbitmq-plugins" ERL_EPMD_ADDRESS=127.0.0.1
echo '[].' > "$run/rabbitmq-plugins"
rabbitmq_server=/usr/lib/rabbitmq/bin/rabbitmq-server
[ -x "$rabbitmq_server" ] || rabbitmq_server=/usr/sbin/rabbitmq-server
"$rabbitmq_server" >"$run/log/rabbitmq.out" 2>&1 &
transport="rabbit://guest:guest@127.0.0.1:5672/"

# --- configuration -----------------------------------------------------------------------
auth_section() { # the keystone_authtoken-style section of service user $1
  cat <<EOT
auth_type = password
auth_url = http://127.0.0.1:5000/v3
www_authenticate_uri = http://127.0.0.1:5000/v3
project_name = service
project_domain_name = Default
user_domain_name = Default
username = $1
password = secret
region_name = RegionOne
EOT
}
mkdir -p "$run/etc"/{keystone,placement,glance,neutron,nova}

cat > "$run/etc/keystone/keystone.conf" <<EOT
[DEFAULT]
log_file = $run/log/keystone.log
[database]
connection = $(db keystone)
[token]
provider = fernet
expiration = ${OPENSTACK_TOKEN_EXPIRATION:-3600}
[fernet_tokens]
key_repository = $run/keystone-fernet
[fernet_receipts]
key_repository = $run/keystone-fernet
[credential]
key_repository = $run/keystone-credential
[identity]
password_hash_rounds = 4
EOT

cat > "$run/etc/placement/placement.conf" <<EOT
[DEFAULT]
log_file = $run/log/placement.log
[placement_database]
connection = $(db placement)
[api]
auth_strategy = keystone
[keystone_authtoken]
$(auth_section placement)
EOT

cat > "$run/etc/glance/glance-api.conf" <<EOT
[DEFAULT]
log_file = $run/log/glance.log
enabled_backends = local:file
[database]
connection = $(db glance)
[keystone_authtoken]
$(auth_section glance)
[paste_deploy]
flavor = keystone
config_file = $venv/etc/glance/glance-api-paste.ini
[glance_store]
default_backend = local
[local]
filesystem_store_datadir = $run/images
[os_glance_staging_store]
filesystem_store_datadir = $run/images/staging
[os_glance_tasks_store]
filesystem_store_datadir = $run/images/tasks
[oslo_concurrency]
lock_path = $run/lock
EOT

cat > "$run/etc/neutron/neutron.conf" <<EOT
[DEFAULT]
log_file = $run/log/neutron.log
api_paste_config = $venv/etc/neutron/api-paste.ini
core_plugin = ml2
service_plugins = router
transport_url = $transport
auth_strategy = keystone
dhcp_agent_notification = false
notify_nova_on_port_status_changes = true
notify_nova_on_port_data_changes = true
api_workers = 1
rpc_workers = 0
[database]
connection = $(db neutron)
[keystone_authtoken]
$(auth_section neutron)
[nova]
$(auth_section nova)
[oslo_concurrency]
lock_path = $run/lock
EOT
cat > "$run/etc/neutron/ml2_conf.ini" <<EOT
[ml2]
type_drivers = flat,vxlan
tenant_network_types = vxlan
mechanism_drivers = agentless
extension_drivers = port_security
[ml2_type_flat]
flat_networks = public
[ml2_type_vxlan]
vni_ranges = 1:1000
EOT

# nova-compute must not see the database options, so they have a file of their own.
cat > "$run/etc/nova/nova.conf" <<EOT
[DEFAULT]
log_dir = $run/log
transport_url = $transport
compute_driver = fake.FakeDriver
my_ip = 127.0.0.1
host = wasmscaler-compute
state_path = $run/nova
instances_path = $run/nova/instances
vif_plugging_is_fatal = false
vif_plugging_timeout = 0
[api]
auth_strategy = keystone
[wsgi]
api_paste_config = $venv/etc/nova/api-paste.ini
[keystone_authtoken]
$(auth_section nova)
# Nova checks every request's token with keystone (no cache): a revoked token is refused at
# once, as the test of token renewal needs. The other services keep their cache.
token_cache_time = -1
[placement]
$(auth_section placement)
[neutron]
$(auth_section neutron)
[glance]
region_name = RegionOne
[service_user]
send_service_user_token = true
$(auth_section nova)
[scheduler]
discover_hosts_in_cells_interval = 2
[oslo_concurrency]
lock_path = $run/lock
[os_region_name]
[cinder]
os_region_name = RegionOne
EOT
cat > "$run/etc/nova/nova-db.conf" <<EOT
[database]
connection = $(db nova)
[api_database]
connection = $(db nova_api)
EOT
cp "$venv/etc/nova/api-paste.ini" "$run/etc/nova/"

# gunicorn parses no arguments (oslo.config would read them): one config file per service.
gunicorn_conf() { # name port wsgi_app
  mkdir -p "$run/$1"
  cat > "$run/$1/gunicorn.conf.py" <<EOT
wsgi_app = "$3"
bind = "127.0.0.1:$2"
workers = 1
threads = 4
timeout = 120
control_socket_disable = True
errorlog = "$run/log/$1-gunicorn.log"
EOT
}
serve() { # name port wsgi_app env...
  local name=$1 port=$2 app=$3; shift 3
  gunicorn_conf "$name" "$port" "$app"
  (cd "$run/$name" && env "$@" "$bin/gunicorn" >"$run/log/$name.out" 2>&1 & echo $! > "$run/$name.pid")
}
wait_http() { # url what
  for _ in $(seq 300); do
    curl -s -o /dev/null "$1" && return 0
    sleep 0.2
  done
  say "$2 did not answer at $1; its logs are in $run/log"; return 1
}

# --- databases ---------------------------------------------------------------------------
say "creating the databases' schemas"
K="--config-file $run/etc/keystone/keystone.conf"
"$bin/keystone-manage" $K db_sync
"$bin/keystone-manage" $K fernet_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
"$bin/keystone-manage" $K credential_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
"$bin/keystone-manage" $K bootstrap --bootstrap-password secret \
  --bootstrap-admin-url http://127.0.0.1:5000/v3/ --bootstrap-internal-url http://127.0.0.1:5000/v3/ \
  --bootstrap-public-url http://127.0.0.1:5000/v3/ --bootstrap-region-id RegionOne >/dev/null
serve keystone 5000 "keystone.wsgi.api:application" OS_KEYSTONE_CONFIG_DIR="$run/etc/keystone"

N="--config-file $run/etc/nova/nova.conf --config-file $run/etc/nova/nova-db.conf"
(
  "$bin/placement-manage" --config-file "$run/etc/placement/placement.conf" db sync
  "$bin/glance-manage" --config-file "$run/etc/glance/glance-api.conf" db_sync >/dev/null 2>&1
  "$bin/neutron-db-manage" --config-file "$run/etc/neutron/neutron.conf" \
    --config-file "$run/etc/neutron/ml2_conf.ini" upgrade heads >/dev/null 2>&1
) &
schemas=$!
"$bin/nova-manage" $N api_db sync
"$bin/nova-manage" $N cell_v2 map_cell0 --database_connection "$(db nova_cell0)"
"$bin/nova-manage" $N cell_v2 create_cell --name cell1 --database_connection "$(db nova)" \
  --transport-url "$transport" >/dev/null
"$bin/nova-manage" $N db sync
wait $schemas

# --- keystone's users, services and endpoints ---------------------------------------------
wait_http http://127.0.0.1:5000/v3 keystone
cat > "$run/clouds.yaml" <<EOT
clouds:
  admin:
    auth:
      auth_url: http://127.0.0.1:5000/v3
      username: admin
      password: secret
      project_name: admin
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    identity_api_version: 3
EOT
export OS_CLIENT_CONFIG_FILE="$run/clouds.yaml"
"$bin/python" "$here/register.py" services

# --- the services ------------------------------------------------------------------------
say "starting placement, glance, neutron and nova"
serve placement 8778 "placement.wsgi.api:application" OS_PLACEMENT_CONFIG_DIR="$run/etc/placement"
serve glance 9292 "glance.wsgi.api:application" OS_GLANCE_CONFIG_DIR="$run/etc/glance"
serve neutron 9696 "neutron.wsgi.api:application" OS_NEUTRON_CONFIG_DIR="$run/etc/neutron" \
  OS_NEUTRON_CONFIG_FILES="neutron.conf;ml2_conf.ini"
serve nova 8774 "nova.wsgi.osapi_compute:application" OS_NOVA_CONFIG_DIR="$run/etc/nova" \
  OS_NOVA_CONFIG_FILES="api-paste.ini;nova.conf;nova-db.conf"
for service in conductor scheduler; do
  "$bin/nova-$service" $N >"$run/log/nova-$service.out" 2>&1 &
  echo $! > "$run/nova-$service.pid"
done
"$bin/nova-compute" --config-file "$run/etc/nova/nova.conf" >"$run/log/nova-compute.out" 2>&1 &
echo $! > "$run/nova-compute.pid"
for url in 8778 9292 9696 8774; do wait_http "http://127.0.0.1:$url/" "the service on port $url"; done

# --- what the tests use --------------------------------------------------------------------
"$bin/python" "$here/register.py" resources "$run"
for _ in $(seq 120); do
  "$bin/nova-manage" $N cell_v2 discover_hosts >/dev/null 2>&1
  "$bin/python" "$here/register.py" compute-ready && break
  sleep 1
done
touch "$run/ready"
say "ready in $(( $(date +%s) - started )) s: OS_CLIENT_CONFIG_FILE=$run/clouds.yaml (cloud admin)"
