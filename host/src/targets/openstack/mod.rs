//! An OpenStack pool of servers, as SimpleScaleVM scales one: the pool is the servers carrying
//! a metadata key/value, scaled out by creating servers and in by deleting them, with
//! floating IPs managed for each when asked (`EXTERNAL_ADDRESS_MANAGEMENT`).
//!
//! Nova filters servers by tag on the server side but ignores `?metadata=`, so pool servers are
//! tagged too, listed by tag, and their metadata checked here: a server outside the pool is
//! never touched. BUILD servers count toward the current size, so nothing is created twice.
//! A server in ERROR is not counted: the next scale deletes it (reported in the log) and
//! creates its replacement. Floating IPs carry a description naming the pool; every
//! observation associates one with each ACTIVE server that lacks one and releases those of the
//! pool left without a server (a crash between a delete and its release).
//!
//! OpenStack has no lifecycle hooks, so with `lifecycle:` the host delivers the events itself
//! ([`lifecycle`]): `launch` once a server it created is ACTIVE (it counts but is not ready
//! until the handler continues; ABANDON deletes it), `terminate` before it deletes one. Where
//! each server stands is kept in its metadata, so a restarted host resumes every event.

pub mod api;
pub mod auth;
pub mod instances;
mod lifecycle;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::lifecycle::{DeliveredLifecycleSpec, LifecycleDelivery};
use super::{Observation, Target, TargetError, TargetIdentity};
use crate::contract::model::Replica;
use crate::sandbox::BoxFuture;
pub use api::MAX_RESPONSE_BYTES;
pub(crate) use api::read_capped;
use api::{Api, urlencode};
pub use auth::{Credentials, Session};
pub use instances::{InstanceIdSources, LIFECYCLE_STATE_KEY, NovaInstances, own_instance_id};
use lifecycle::{Lifecycle, Phase};

/// `target.openstack` in the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OpenStackSpec {
    /// The `clouds.yaml` entry to use; absent: the `OS_*` environment variables.
    #[serde(default)]
    pub cloud: Option<String>,
    /// The metadata that marks the pool's servers (SimpleScaleVM's pool key and value).
    pub pool: PoolKey,
    /// Flavor of new servers, by name or id.
    pub flavor: String,
    /// Image of new servers, by name or id.
    pub image: String,
    /// Network of new servers, by name or id; its address is the replica's address.
    pub network: String,
    /// Key pair of new servers.
    #[serde(default)]
    pub key_name: Option<String>,
    /// cloud-init user data of new servers, read from this file at every create.
    #[serde(default)]
    pub user_data_file: Option<PathBuf>,
    /// Name of new servers: `{value}` is the pool's value, `{id}` eight random hex digits
    /// (default `{value}-{id}`).
    #[serde(default = "default_name_template")]
    pub name_template: String,
    /// More metadata on new servers.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The IP version of the replica addresses (4 or 6, default 4).
    #[serde(default = "default_ip_version")]
    pub ip_version: u8,
    /// Manage a floating IP from this external network for every server (by name or id).
    #[serde(default)]
    pub floating_network: Option<String>,
    /// A lifecycle handler the host runs around its own creates (`launch`) and deletes
    /// (`terminate`), as AWS's lifecycle hooks would.
    #[serde(default)]
    pub lifecycle: Option<Box<DeliveredLifecycleSpec>>,
}

/// A metadata key and value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolKey {
    /// The metadata key, e.g. `pool`.
    pub key: String,
    /// Its value, e.g. `web`.
    pub value: String,
}

fn default_name_template() -> String {
    "{value}-{id}".into()
}
fn default_ip_version() -> u8 {
    4
}

/// The most user data Nova accepts, before base64 (65,535 bytes after it).
pub const MAX_USER_DATA_BYTES: u64 = 49_151;

/// One server of the pool as listed.
#[derive(Debug, Clone)]
struct Server {
    id: String,
    name: String,
    status: String,
    created_ms: Option<i64>,
    metadata: BTreeMap<String, String>,
    fixed: Option<String>,
    floating: Option<String>,
    /// Where it stands in the host's lifecycle (always in service without `lifecycle:`).
    phase: Phase,
}

impl Server {
    /// Up, with its launch event (if any) handled.
    fn ready(&self) -> bool {
        self.status == "ACTIVE" && self.phase == Phase::InService
    }
}

/// A connected OpenStack pool.
pub struct OpenStackTarget {
    spec: OpenStackSpec,
    api: Arc<Api>,
    /// The servers as lifecycle events see them.
    instances: Arc<NovaInstances>,
    /// The host's own lifecycle events, with `lifecycle:`.
    lifecycle: Option<Lifecycle>,
    /// Resolved once at connect: flavor, image, network and floating network ids.
    flavor_id: String,
    image_id: String,
    network_id: String,
    network_name: String,
    floating_network_id: Option<String>,
}

impl OpenStackTarget {
    /// Authenticates, resolves the flavor, image and networks by name or id, and checks that
    /// the pool can be listed.
    /// `lifecycle` runs the events of `spec.lifecycle` (the host assembly loads its handler).
    pub async fn connect(
        spec: OpenStackSpec,
        lifecycle: Option<Arc<dyn LifecycleDelivery>>,
    ) -> Result<Self, TargetError> {
        let credentials = match &spec.cloud {
            Some(cloud) => Credentials::from_clouds_yaml(cloud)?,
            None => Credentials::from_environment()?,
        };
        Self::connect_with(spec, credentials, lifecycle).await
    }

    /// [`OpenStackTarget::connect`] with the credentials given.
    pub async fn connect_with(
        spec: OpenStackSpec,
        credentials: Credentials,
        lifecycle: Option<Arc<dyn LifecycleDelivery>>,
    ) -> Result<Self, TargetError> {
        if !matches!(spec.ip_version, 4 | 6) {
            return Err(TargetError::Refused(format!(
                "openstack: ipVersion {} must be 4 or 6",
                spec.ip_version
            )));
        }
        let lifecycle = match (&spec.lifecycle, lifecycle) {
            (None, _) => None,
            (Some(_), Some(delivery)) => Some(Lifecycle::new(delivery)),
            (Some(_), None) => {
                return Err(TargetError::Refused(
                    "openstack: lifecycle: its handler was not loaded".into(),
                ));
            }
        };
        let api = Arc::new(Api::new(credentials)?);
        let mut target = OpenStackTarget {
            // Replaced below, once the network's name (Nova keys addresses by it) is resolved.
            instances: Arc::new(NovaInstances::new(api.clone(), None, spec.ip_version)),
            spec,
            api,
            lifecycle,
            flavor_id: String::new(),
            image_id: String::new(),
            network_id: String::new(),
            network_name: String::new(),
            floating_network_id: None,
        };
        target.flavor_id = target
            .resolve(
                "compute",
                "/flavors",
                "flavors",
                &target.spec.flavor,
                "flavor",
            )
            .await?
            .0;
        target.image_id = target
            .resolve("image", "/v2/images", "images", &target.spec.image, "image")
            .await?
            .0;
        (target.network_id, target.network_name) = target
            .resolve(
                "network",
                "/v2.0/networks",
                "networks",
                &target.spec.network,
                "network",
            )
            .await?;
        if let Some(floating) = target.spec.floating_network.clone() {
            target.floating_network_id = Some(
                target
                    .resolve(
                        "network",
                        "/v2.0/networks",
                        "networks",
                        &floating,
                        "floating network",
                    )
                    .await?
                    .0,
            );
        }
        target.instances = Arc::new(NovaInstances::new(
            target.api.clone(),
            Some(target.network_name.clone()),
            target.spec.ip_version,
        ));
        target.servers().await?;
        Ok(target)
    }

    /// The tag every pool server carries, so the pool is listed server-side.
    fn tag(&self) -> String {
        format!("{}={}", self.spec.pool.key, self.spec.pool.value)
    }

    /// The description of the pool's floating IPs.
    fn floating_description(&self) -> String {
        format!("wasmscaler pool {}", self.tag())
    }

    /// Its Keystone session.
    pub fn session(&self) -> &Session {
        &self.api.session
    }

    /// The id (and name) of a flavor, image or network given by name or id.
    async fn resolve(
        &self,
        service: &str,
        path: &str,
        key: &str,
        wanted: &str,
        what: &str,
    ) -> Result<(String, String), TargetError> {
        // By name on the server side: lists are paged (Glance's first page holds 25 images).
        let by_name = format!("{path}?name={}", urlencode(wanted));
        let list = self
            .api
            .call(
                service,
                reqwest::Method::GET,
                &by_name,
                None,
                &format!("listing {key}"),
            )
            .await?;
        let items = list[key].as_array().cloned().unwrap_or_default();
        let mut found: Vec<&Value> = items
            .iter()
            .filter(|i| i["name"].as_str() == Some(wanted))
            .collect();
        // Not a name: an id, read directly.
        let single;
        if found.is_empty() {
            let item = format!("{path}/{}", urlencode(wanted));
            match self
                .api
                .call(
                    service,
                    reqwest::Method::GET,
                    &item,
                    None,
                    &format!("reading {what} {wanted:?}"),
                )
                .await
            {
                Ok(value) => {
                    // Nova and Neutron wrap the object (`{"flavor": …}`); Glance does not.
                    let singular = key.trim_end_matches('s');
                    single = value.get(singular).cloned().unwrap_or(value);
                    if single["id"].as_str() == Some(wanted) {
                        found.push(&single);
                    }
                }
                Err(TargetError::NotFound(_) | TargetError::Refused(_)) => {}
                Err(e) => return Err(e),
            }
        }
        match found.as_slice() {
            [one] => Ok((
                one["id"].as_str().unwrap_or_default().to_owned(),
                one["name"].as_str().unwrap_or_default().to_owned(),
            )),
            [] => Err(TargetError::Refused(format!(
                "openstack: no {what} {wanted:?}"
            ))),
            _ => Err(TargetError::Refused(format!(
                "openstack: {} {what}s are named {wanted:?}: give its id",
                found.len()
            ))),
        }
    }

    /// The pool's servers: tagged, with the pool's metadata, not being deleted.
    async fn servers(&self) -> Result<Vec<Server>, TargetError> {
        let path = format!("/servers/detail?tags={}", urlencode(&self.tag()));
        let list = self
            .api
            .call(
                "compute",
                reqwest::Method::GET,
                &path,
                None,
                "listing servers",
            )
            .await?;
        let version = if self.spec.ip_version == 6 { 6 } else { 4 };
        let mut servers = Vec::new();
        for s in list["servers"].as_array().into_iter().flatten() {
            let metadata: BTreeMap<String, String> = s["metadata"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect();
            if metadata.get(&self.spec.pool.key) != Some(&self.spec.pool.value) {
                continue;
            }
            let status = s["status"].as_str().unwrap_or("UNKNOWN").to_owned();
            if status == "DELETED" || s["OS-EXT-STS:task_state"].as_str() == Some("deleting") {
                continue;
            }
            let addresses: Vec<&Value> = s["addresses"][&self.network_name]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["version"].as_u64() == Some(version))
                .collect();
            let of_type = |t: &str| {
                addresses
                    .iter()
                    .find(|a| a["OS-EXT-IPS:type"].as_str() == Some(t))
                    .and_then(|a| a["addr"].as_str())
                    .map(str::to_owned)
            };
            let phase = if self.lifecycle.is_some() {
                Phase::of(metadata.get(LIFECYCLE_STATE_KEY).map(String::as_str))
            } else {
                Phase::InService
            };
            servers.push(Server {
                id: s["id"].as_str().unwrap_or_default().to_owned(),
                name: s["name"].as_str().unwrap_or_default().to_owned(),
                status,
                created_ms: s["created"]
                    .as_str()
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                    .map(|t| t.as_millisecond()),
                metadata,
                fixed: of_type("fixed"),
                floating: of_type("floating"),
                phase,
            });
        }
        servers.sort_by(|a, b| a.created_ms.cmp(&b.created_ms).then(a.name.cmp(&b.name)));
        Ok(servers)
    }

    async fn create_server(&self) -> Result<(), TargetError> {
        let id = format!("{:08x}", fastrand::u32(..));
        let name = self
            .spec
            .name_template
            .replace("{value}", &self.spec.pool.value)
            .replace("{id}", &id);
        let mut metadata = self.spec.metadata.clone();
        metadata.insert(self.spec.pool.key.clone(), self.spec.pool.value.clone());
        if self.lifecycle.is_some() {
            // Not ready until its launch event is handled, even across a restart.
            metadata.insert(
                LIFECYCLE_STATE_KEY.to_owned(),
                Phase::Pending.as_str().to_owned(),
            );
        }
        let mut server = json!({
            "name": name,
            "flavorRef": self.flavor_id,
            "imageRef": self.image_id,
            "networks": [{ "uuid": self.network_id }],
            "metadata": metadata,
            "tags": [self.tag()],
        });
        if let Some(key) = &self.spec.key_name {
            server["key_name"] = json!(key);
        }
        if let Some(file) = &self.spec.user_data_file {
            use base64::Engine as _;
            // Nova takes at most 65,535 bytes of base64: 49,151 bytes before encoding.
            let size = std::fs::metadata(file).map(|m| m.len()).map_err(|e| {
                TargetError::Refused(format!("openstack: userDataFile {}: {e}", file.display()))
            })?;
            if size > MAX_USER_DATA_BYTES {
                return Err(TargetError::Refused(format!(
                    "openstack: userDataFile {} is {size} bytes, over Nova's {MAX_USER_DATA_BYTES}",
                    file.display()
                )));
            }
            let data = std::fs::read(file).map_err(|e| {
                TargetError::Refused(format!("openstack: userDataFile {}: {e}", file.display()))
            })?;
            server["user_data"] = json!(base64::engine::general_purpose::STANDARD.encode(data));
        }
        self.api
            .call(
                "compute",
                reqwest::Method::POST,
                "/servers",
                Some(&json!({ "server": server })),
                &format!("creating server {name}"),
            )
            .await?;
        tracing::info!(pool = %self.tag(), server = %name, "server created");
        Ok(())
    }

    async fn delete_server(&self, server: &Server) -> Result<(), TargetError> {
        self.instances.delete(&server.id, &server.name).await?;
        tracing::info!(pool = %self.tag(), server = %server.name, status = %server.status, "server deleted");
        Ok(())
    }

    /// The addresses of the pool's floating IPs, associated or not.
    pub async fn floating_addresses(&self) -> Result<Vec<String>, TargetError> {
        Ok(self
            .floating_ips()
            .await?
            .iter()
            .filter_map(|ip| ip["floating_ip_address"].as_str().map(str::to_owned))
            .collect())
    }

    /// The pool's floating IPs (by their description).
    async fn floating_ips(&self) -> Result<Vec<Value>, TargetError> {
        let path = format!(
            "/v2.0/floatingips?description={}",
            urlencode(&self.floating_description())
        );
        let list = self
            .api
            .call(
                "network",
                reqwest::Method::GET,
                &path,
                None,
                "listing floating IPs",
            )
            .await?;
        Ok(list["floatingips"].as_array().cloned().unwrap_or_default())
    }

    /// Associates a floating IP with every ACTIVE server lacking one, and releases the
    /// pool's floating IPs whose server is gone; says whether it associated any. Failures are
    /// logged by the caller; the next run retries.
    async fn reconcile_floating_ips(&self, servers: &[Server]) -> Result<bool, TargetError> {
        let Some(network) = &self.floating_network_id else {
            return Ok(false);
        };
        let mut associated = false;
        let ips = self.floating_ips().await?;
        let ports = self
            .api
            .call(
                "network",
                reqwest::Method::GET,
                &format!("/v2.0/ports?network_id={}", self.network_id),
                None,
                "listing ports",
            )
            .await?;
        let port_of = |server: &str| {
            ports["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["device_id"].as_str() == Some(server))
                .and_then(|p| p["id"].as_str())
                .map(str::to_owned)
        };
        let live_ports: Vec<String> = servers.iter().filter_map(|s| port_of(&s.id)).collect();
        for ip in &ips {
            let attached = ip["port_id"]
                .as_str()
                .is_some_and(|p| live_ports.iter().any(|l| l == p));
            if !attached && let Some(id) = ip["id"].as_str() {
                self.api
                    .call(
                        "network",
                        reqwest::Method::DELETE,
                        &format!("/v2.0/floatingips/{id}"),
                        None,
                        "releasing a floating IP",
                    )
                    .await?;
                tracing::info!(pool = %self.tag(), address = ip["floating_ip_address"].as_str().unwrap_or(""), "floating IP released");
            }
        }
        for server in servers.iter().filter(|s| s.status == "ACTIVE") {
            let Some(port) = port_of(&server.id) else {
                continue;
            };
            if ips
                .iter()
                .any(|ip| ip["port_id"].as_str() == Some(port.as_str()))
            {
                continue;
            }
            let created = self
                .api
                .call(
                    "network",
                    reqwest::Method::POST,
                    "/v2.0/floatingips",
                    Some(&json!({ "floatingip": {
                        "floating_network_id": network,
                        "port_id": port,
                        "description": self.floating_description(),
                    }})),
                    &format!("allocating a floating IP for {}", server.name),
                )
                .await?;
            tracing::info!(pool = %self.tag(), server = %server.name,
                address = created["floatingip"]["floating_ip_address"].as_str().unwrap_or(""),
                "floating IP associated");
            associated = true;
        }
        Ok(associated)
    }

    fn replica(&self, server: &Server) -> Replica {
        let address = if self.floating_network_id.is_some() {
            server.floating.clone()
        } else {
            server.fixed.clone()
        };
        Replica {
            name: server.name.clone(),
            ready: server.ready(),
            start_time_ms: server.created_ms,
            labels: server.metadata.clone(),
            address,
        }
    }
}

/// Which servers go on a scale-in to `keep`: those named in `remove_first` (in that order),
/// then the ones not ready (BUILD, launch not handled yet), then the newest. Servers in ERROR are not counted here:
/// they are always deleted.
fn removal_order<'a>(servers: &'a [&'a Server], remove_first: &[String]) -> Vec<&'a Server> {
    let mut order: Vec<&Server> = Vec::new();
    for name in remove_first {
        if let Some(s) = servers.iter().find(|s| &s.name == name)
            && !order.iter().any(|o| o.id == s.id)
        {
            order.push(s);
        }
    }
    let mut rest: Vec<&Server> = servers
        .iter()
        .copied()
        .filter(|s| !order.iter().any(|o| o.id == s.id))
        .collect();
    // Not ready first, then newest first.
    rest.sort_by(|a, b| {
        a.ready()
            .cmp(&b.ready())
            .then(b.created_ms.cmp(&a.created_ms))
    });
    order.extend(rest);
    order
}

impl Target for OpenStackTarget {
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // Events left running resume from the servers' metadata at the next start.
            if let Some(lifecycle) = &self.lifecycle {
                lifecycle.stop();
            }
        })
    }

    fn identity(&self) -> TargetIdentity {
        TargetIdentity {
            kind: "openstack".into(),
            name: self.tag(),
            namespace: String::new(),
        }
    }

    fn observe(&self) -> BoxFuture<'_, Result<Observation, TargetError>> {
        Box::pin(async move {
            let mut listed_at = std::time::Instant::now();
            let servers = self.servers().await?;
            let associated = self
                .reconcile_floating_ips(&servers)
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(pool = %self.tag(), "floating IPs: {e}");
                    false
                });
            // An address just associated shows in Nova a moment later: list once more.
            let servers = if associated {
                listed_at = std::time::Instant::now();
                self.servers().await?
            } else {
                servers
            };
            if let Some(lifecycle) = &self.lifecycle {
                lifecycle.resume(self, &servers, listed_at).await;
            }
            let counted: Vec<&Server> = servers.iter().filter(|s| counts(s)).collect();
            Ok(Observation {
                current: u32::try_from(counted.len()).unwrap_or(u32::MAX),
                replicas: counted.iter().map(|s| self.replica(s)).collect(),
                object: crate::contract::model::ObjectJson::default(),
                version: None,
            })
        })
    }

    fn scale<'a>(
        &'a self,
        _observed: &'a Observation,
        replicas: u32,
        remove_first: &'a [String],
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        Box::pin(async move {
            // Read again: what counts is the pool now, not when the run began.
            let listed_at = std::time::Instant::now();
            let servers = self.servers().await?;
            for broken in servers.iter().filter(|s| s.status == "ERROR") {
                tracing::warn!(pool = %self.tag(), server = %broken.name, "server in ERROR: replacing it");
                self.delete_server(broken).await?;
            }
            let counted: Vec<&Server> = servers.iter().filter(|s| counts(s)).collect();
            let current = u32::try_from(counted.len()).unwrap_or(u32::MAX);
            let mut reached = current;
            let partial = |reached: u32, error: TargetError| {
                if reached == current {
                    error
                } else {
                    TargetError::Partial {
                        reached,
                        error: Box::new(error),
                    }
                }
            };
            if replicas > current {
                for _ in current..replicas {
                    self.create_server()
                        .await
                        .map_err(|e| partial(reached, e))?;
                    reached += 1;
                }
            } else if replicas < current {
                let order = removal_order(&counted, remove_first);
                let surplus = usize::try_from(current - replicas).unwrap_or(usize::MAX);
                for server in order.into_iter().take(surplus) {
                    match &self.lifecycle {
                        Some(lifecycle) => lifecycle.terminate(self, server, listed_at).await,
                        None => self.delete_server(server).await,
                    }
                    .map_err(|e| partial(reached, e))?;
                    reached -= 1;
                }
                if let Err(e) = self.reconcile_floating_ips(&self.servers().await?).await {
                    tracing::warn!(pool = %self.tag(), "floating IPs: {e}");
                }
            }
            Ok(())
        })
    }
}

/// Whether a server counts toward the pool's size: not in ERROR (it is replaced) and not
/// terminating (its delete is under way).
fn counts(server: &Server) -> bool {
    server.status != "ERROR" && server.phase != Phase::Terminating
}

/// The factory's entry for `target.openstack`.
pub(crate) async fn connect(
    spec: &OpenStackSpec,
    lifecycle: Option<Arc<dyn LifecycleDelivery>>,
) -> Result<Arc<dyn Target>, TargetError> {
    Ok(Arc::new(
        OpenStackTarget::connect(spec.clone(), lifecycle).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(name: &str, status: &str, created: i64) -> Server {
        Server {
            id: format!("id-{name}"),
            name: name.into(),
            status: status.into(),
            created_ms: Some(created),
            metadata: BTreeMap::new(),
            fixed: None,
            floating: None,
            phase: Phase::InService,
        }
    }

    #[test]
    fn scale_in_takes_the_named_then_the_unready_then_the_newest() {
        let (a, b, c, d) = (
            server("a", "ACTIVE", 1),
            server("b", "BUILD", 2),
            server("c", "ACTIVE", 3),
            server("d", "ACTIVE", 4),
        );
        let all = [&a, &b, &c, &d];
        let names = |order: Vec<&Server>| order.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(removal_order(&all, &[])), ["b", "d", "c", "a"]);
        assert_eq!(
            names(removal_order(
                &all,
                &["a".into(), "nope".into(), "a".into()]
            )),
            ["a", "b", "d", "c"]
        );
    }
}
