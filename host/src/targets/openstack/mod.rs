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

pub mod auth;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Observation, Target, TargetError, TargetIdentity};
use crate::contract::model::Replica;
use crate::sandbox::BoxFuture;
pub use auth::{Credentials, Session};

/// `target.openstack` in the config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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

/// The largest answer read from any OpenStack API (a detailed list of a few thousand servers
/// is a few MiB); a larger one fails the call instead of growing the host's memory.
pub const MAX_RESPONSE_BYTES: usize = 32 << 20;

/// Reads an answer's body up to `cap` bytes; over it, the call fails naming the cap.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
    what: &str,
) -> Result<Vec<u8>, TargetError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| TargetError::Unavailable(format!("openstack: {what}: {e}")))?
    {
        if body.len() + chunk.len() > cap {
            return Err(TargetError::Unavailable(format!(
                "openstack: {what}: the answer is over {cap} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The most user data Nova accepts, before base64 (65,535 bytes after it).
pub const MAX_USER_DATA_BYTES: u64 = 49_151;

/// The compute microversion: tags on create (2.52) and in server lists.
const COMPUTE_MICROVERSION: &str = "2.72";

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
}

/// A connected OpenStack pool.
pub struct OpenStackTarget {
    spec: OpenStackSpec,
    session: Session,
    http: reqwest::Client,
    /// Resolved once at connect: flavor, image, network and floating network ids.
    flavor_id: String,
    image_id: String,
    network_id: String,
    network_name: String,
    floating_network_id: Option<String>,
}

/// The error of a failed call, with OpenStack's own message.
fn call_error(what: &str, status: reqwest::StatusCode, body: &Value) -> TargetError {
    let message = ["message", "detail"]
        .iter()
        .find_map(|k| {
            body.as_object()?
                .values()
                .find_map(|v| v.get(*k))
                .and_then(Value::as_str)
        })
        .or_else(|| body["NeutronError"]["message"].as_str())
        .unwrap_or("")
        .to_owned();
    let text = format!("openstack: {what}: {status} {message}");
    match status.as_u16() {
        404 => TargetError::NotFound(text),
        // Not the engine's conflict (a change since the observation): e.g. no address left.
        400 | 401 | 403 | 413 => TargetError::Refused(text),
        _ => TargetError::Unavailable(text),
    }
}

impl OpenStackTarget {
    /// Authenticates, resolves the flavor, image and networks by name or id, and checks that
    /// the pool can be listed.
    pub async fn connect(spec: OpenStackSpec) -> Result<Self, TargetError> {
        let credentials = match &spec.cloud {
            Some(cloud) => Credentials::from_clouds_yaml(cloud)?,
            None => Credentials::from_environment()?,
        };
        Self::connect_with(spec, credentials).await
    }

    /// [`OpenStackTarget::connect`] with the credentials given.
    pub async fn connect_with(
        spec: OpenStackSpec,
        credentials: Credentials,
    ) -> Result<Self, TargetError> {
        if !matches!(spec.ip_version, 4 | 6) {
            return Err(TargetError::Refused(format!(
                "openstack: ipVersion {} must be 4 or 6",
                spec.ip_version
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| TargetError::Unavailable(format!("openstack: HTTP client: {e}")))?;
        let session = Session::new(credentials, http.clone());
        let mut target = OpenStackTarget {
            spec,
            session,
            http,
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
        &self.session
    }

    /// One call to `service`, renewing the token once if it was refused with 401.
    async fn call(
        &self,
        service: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Value, TargetError> {
        let mut stale: Option<String> = None;
        loop {
            let (token, endpoint) = self.session.token_for(service, stale.as_deref()).await?;
            let mut request = self
                .http
                .request(method.clone(), format!("{endpoint}{path}"))
                .header("X-Auth-Token", &token)
                .header(
                    "OpenStack-API-Version",
                    format!("compute {COMPUTE_MICROVERSION}"),
                );
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request
                .send()
                .await
                .map_err(|e| TargetError::Unavailable(format!("openstack: {what}: {e}")))?;
            let status = response.status();
            if status.as_u16() == 401 && stale.is_none() {
                stale = Some(token);
                continue;
            }
            let body = read_capped(response, MAX_RESPONSE_BYTES, what).await?;
            let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if !status.is_success() {
                return Err(call_error(what, status, &value));
            }
            return Ok(value);
        }
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
        self.call(
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
        match self
            .call(
                "compute",
                reqwest::Method::DELETE,
                &format!("/servers/{}", server.id),
                None,
                &format!("deleting server {}", server.name),
            )
            .await
        {
            Ok(_) | Err(TargetError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
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
                self.call(
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
            ready: server.status == "ACTIVE",
            start_time_ms: server.created_ms,
            labels: server.metadata.clone(),
            address,
        }
    }
}

/// Percent-encodes a query value.
fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Which servers go on a scale-in to `keep`: those named in `remove_first` (in that order),
/// then the ones not ready (BUILD), then the newest. Servers in ERROR are not counted here:
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
        (a.status == "ACTIVE")
            .cmp(&(b.status == "ACTIVE"))
            .then(b.created_ms.cmp(&a.created_ms))
    });
    order.extend(rest);
    order
}

impl Target for OpenStackTarget {
    fn identity(&self) -> TargetIdentity {
        TargetIdentity {
            kind: "openstack".into(),
            name: self.tag(),
            namespace: String::new(),
        }
    }

    fn observe(&self) -> BoxFuture<'_, Result<Observation, TargetError>> {
        Box::pin(async move {
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
                self.servers().await?
            } else {
                servers
            };
            let counted: Vec<&Server> = servers.iter().filter(|s| s.status != "ERROR").collect();
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
            let servers = self.servers().await?;
            for broken in servers.iter().filter(|s| s.status == "ERROR") {
                tracing::warn!(pool = %self.tag(), server = %broken.name, "server in ERROR: replacing it");
                self.delete_server(broken).await?;
            }
            let counted: Vec<&Server> = servers.iter().filter(|s| s.status != "ERROR").collect();
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
                    self.delete_server(server)
                        .await
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

/// The factory's entry for `target.openstack`.
pub(crate) async fn connect(spec: &OpenStackSpec) -> Result<Arc<dyn Target>, TargetError> {
    Ok(Arc::new(OpenStackTarget::connect(spec.clone()).await?))
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

    #[tokio::test]
    async fn an_answer_over_the_cap_fails_the_call_naming_it() {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten().take(2) {
                // The request first: an answer sent before it is one hyper refuses.
                let mut reader = std::io::BufReader::new(&stream);
                let mut line = String::new();
                while std::io::BufRead::read_line(&mut reader, &mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let mut stream = &stream;
                let body = "x".repeat(4096);
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        let get = || reqwest::get(format!("http://{addr}/"));
        let over = read_capped(get().await.expect("get"), 1024, "listing servers").await;
        assert!(
            matches!(&over, Err(TargetError::Unavailable(m)) if m.contains("over 1024 bytes")),
            "{over:?}"
        );
        let within = read_capped(get().await.expect("get"), 8192, "listing servers").await;
        assert_eq!(within.expect("read").len(), 4096);
    }

    #[test]
    fn openstack_errors_keep_their_message_and_map_to_target_errors() {
        let quota = json!({"forbidden": {"code": 403, "message": "Quota exceeded for instances: Requested 1, but already used 3 of 3 instances"}});
        let err = call_error("creating server x", reqwest::StatusCode::FORBIDDEN, &quota);
        assert!(
            matches!(&err, TargetError::Refused(m) if m.contains("Quota exceeded")),
            "{err}"
        );
        let neutron = json!({"NeutronError": {"message": "No more IP addresses available"}});
        let err = call_error("allocating", reqwest::StatusCode::CONFLICT, &neutron);
        assert!(
            matches!(&err, TargetError::Unavailable(m) if m.contains("No more IP")),
            "{err}"
        );
        let err = call_error("listing", reqwest::StatusCode::BAD_GATEWAY, &Value::Null);
        assert!(matches!(err, TargetError::Unavailable(_)));
    }
}
