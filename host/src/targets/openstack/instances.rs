//! Nova servers as lifecycle events see them ([`InstanceStore`]): the server read by id, its
//! handler state kept in its metadata. Also how an instance finds its own id (config drive or
//! metadata service), for `wasmscaler agent`.
//!
//! Nova refuses `/` in a metadata key (keys match `[a-zA-Z0-9-_:. ]{1,255}`), so the host's
//! keys `wasmscaler.dev/NAME` are stored as `wasmscaler.dev:NAME` and read back as the host
//! names them; values are at most 255 characters (a longer state fails the step that set it).

use std::collections::BTreeMap;

use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};

use super::api::Api;
use crate::contract::lifecycle_model::Instance;
use crate::sandbox::BoxFuture;
use crate::targets::TargetError;
use crate::targets::lifecycle::{InstanceStore, StoreError};

const HOST_PREFIX: &str = "wasmscaler.dev/";
const NOVA_PREFIX: &str = "wasmscaler.dev:";

/// The metadata key of a server's place in the host's lifecycle (`Pending:Wait`,
/// `InService`, `Terminating:Wait`), set only when the pool has a `lifecycle:` handler.
pub const LIFECYCLE_STATE_KEY: &str = "wasmscaler.dev:lifecycle-state";

/// The Nova metadata key of a host key.
pub(super) fn nova_key(key: &str) -> String {
    match key.strip_prefix(HOST_PREFIX) {
        Some(name) => format!("{NOVA_PREFIX}{name}"),
        None => key.to_owned(),
    }
}

/// The host key of a Nova metadata key.
pub(super) fn host_key(key: &str) -> String {
    match key.strip_prefix(NOVA_PREFIX) {
        Some(name) => format!("{HOST_PREFIX}{name}"),
        None => key.to_owned(),
    }
}

/// Percent-encodes a path segment (a metadata key may hold a space or a colon).
fn urlencode_path(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// Servers of one cloud, read and tagged by id.
pub struct NovaInstances {
    api: Arc<Api>,
    /// The network whose fixed address is the instance's (any network when absent).
    network: Option<String>,
    ip_version: u8,
}

impl NovaInstances {
    /// Servers read through `api`; the address is the fixed one on `network` (any network
    /// when `None`) of `ip_version`.
    pub fn new(api: Arc<Api>, network: Option<String>, ip_version: u8) -> Self {
        NovaInstances {
            api,
            network,
            ip_version,
        }
    }

    /// Sets metadata keys of a server (Nova's names), one `PUT` per key: each is
    /// idempotent, so a call sent again sets the same thing, and the rest is left as it is.
    pub(super) async fn set_metadata(
        &self,
        id: &str,
        entries: &[(&str, &str)],
    ) -> Result<(), TargetError> {
        for (key, value) in entries {
            self.api
                .call(
                    "compute",
                    reqwest::Method::PUT,
                    &format!(
                        "/servers/{}/metadata/{}",
                        urlencode_path(id),
                        urlencode_path(key)
                    ),
                    Some(&json!({ "meta": { *key: value } })),
                    &format!("setting {key} of server {id}"),
                )
                .await?;
        }
        Ok(())
    }

    /// Deletes a server; one already gone is not an error.
    pub(super) async fn delete(&self, id: &str, name: &str) -> Result<(), TargetError> {
        match self
            .api
            .call(
                "compute",
                reqwest::Method::DELETE,
                &format!("/servers/{}", urlencode_path(id)),
                None,
                &format!("deleting server {name}"),
            )
            .await
        {
            Ok(_) | Err(TargetError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The server as JSON.
    async fn server(&self, id: &str) -> Result<Value, TargetError> {
        let found = self
            .api
            .call(
                "compute",
                reqwest::Method::GET,
                &format!("/servers/{}", urlencode_path(id)),
                None,
                &format!("reading server {id}"),
            )
            .await?;
        Ok(found["server"].clone())
    }

    /// The instance an event describes, from the server's JSON.
    fn describe(&self, server: &Value, id: &str, group: &str) -> Instance {
        let tags: BTreeMap<String, String> = server["metadata"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((host_key(k), v.as_str()?.to_owned())))
            .collect();
        let lifecycle_state = server["metadata"][LIFECYCLE_STATE_KEY]
            .as_str()
            .unwrap_or("InService")
            .to_owned();
        let version = u64::from(self.ip_version);
        let private_address = server["addresses"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(network, _)| self.network.as_ref().is_none_or(|n| n == *network))
            .flat_map(|(_, addresses)| addresses.as_array().into_iter().flatten())
            .find(|a| {
                a["version"].as_u64() == Some(version)
                    && a["OS-EXT-IPS:type"].as_str() == Some("fixed")
            })
            .and_then(|a| a["addr"].as_str())
            .map(str::to_owned);
        Instance {
            id: id.to_owned(),
            group: group.to_owned(),
            lifecycle_state,
            health: if server["status"].as_str() == Some("ERROR") {
                "Unhealthy".into()
            } else {
                "Healthy".into()
            },
            launch_time_ms: server["created"]
                .as_str()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map(|t| t.as_millisecond()),
            private_address,
            tags,
        }
    }
}

impl InstanceStore for NovaInstances {
    fn instance<'a>(&'a self, id: &'a str, group: &'a str) -> BoxFuture<'a, Instance> {
        Box::pin(async move {
            match self.server(id).await {
                Ok(server) => self.describe(&server, id, group),
                Err(error) => {
                    tracing::warn!(instance = %id, %error, "reading the server failed");
                    Instance {
                        id: id.to_owned(),
                        group: group.to_owned(),
                        ..Instance::default()
                    }
                }
            }
        })
    }

    fn tag_instance<'a>(
        &'a self,
        id: &'a str,
        tags: &'a [(&'a str, &'a str)],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let keys: Vec<String> = tags.iter().map(|(k, _)| nova_key(k)).collect();
            let entries: Vec<(&str, &str)> = keys
                .iter()
                .zip(tags)
                .map(|(k, (_, v))| (k.as_str(), *v))
                .collect();
            self.set_metadata(id, &entries)
                .await
                .map_err(|e| StoreError(e.to_string()))
        })
    }
}

/// The largest `meta_data.json` read, from the config drive or the metadata service (Nova's is
/// a few KiB: the instance's metadata, keys and files' index).
pub const MAX_METADATA_BYTES: usize = 1 << 20;

/// Where an OpenStack instance's own id is read.
#[derive(Debug, Clone)]
pub struct InstanceIdSources<'a> {
    /// A mounted config drive (its `openstack/latest/meta_data.json`), read first.
    pub config_drive: &'a Path,
    /// The metadata service, asked when the config drive is not there.
    pub metadata_url: &'a str,
}

/// This instance's id: the `uuid` of `meta_data.json`, from the config drive if it is
/// mounted, else from the metadata service (never through a proxy: it answers only on the
/// instance's own link).
pub async fn own_instance_id(sources: InstanceIdSources<'_>) -> Result<String, TargetError> {
    let on_drive = sources.config_drive.join("openstack/latest/meta_data.json");
    let (document, from) = if on_drive.is_file() {
        let unreadable = |e: &dyn std::fmt::Display| {
            TargetError::Unavailable(format!("config drive {}: {e}", on_drive.display()))
        };
        let size = std::fs::metadata(&on_drive)
            .map_err(|e| unreadable(&e))?
            .len();
        if size > MAX_METADATA_BYTES as u64 {
            return Err(unreadable(&format!(
                "{size} bytes, over {MAX_METADATA_BYTES}"
            )));
        }
        let bytes = std::fs::read(&on_drive).map_err(|e| unreadable(&e))?;
        (bytes, on_drive.display().to_string())
    } else {
        let url = format!(
            "{}/openstack/latest/meta_data.json",
            sources.metadata_url.trim_end_matches('/')
        );
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .no_proxy()
            .build()
            .map_err(|e| TargetError::Unavailable(format!("metadata service: {e}")))?;
        let answer = http
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| {
                TargetError::Unavailable(format!(
                    "no config drive at {} and the metadata service {url}: {e}",
                    sources.config_drive.display()
                ))
            })?;
        let bytes =
            super::api::read_capped(answer, MAX_METADATA_BYTES, "the metadata service").await?;
        (bytes, url)
    };
    let parsed: Value = serde_json::from_slice(&document)
        .map_err(|e| TargetError::Unavailable(format!("{from}: not JSON: {e}")))?;
    parsed["uuid"]
        .as_str()
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| TargetError::Unavailable(format!("{from}: no \"uuid\"")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_keys_are_stored_without_a_slash_and_read_back() {
        let key = crate::hooks::state_tag(crate::contract::lifecycle_model::Transition::Launch);
        assert_eq!(nova_key(&key), "wasmscaler.dev:launch-state");
        assert_eq!(host_key(&nova_key(&key)), key);
        assert_eq!(nova_key("pool"), "pool");
        assert_eq!(host_key("team:a"), "team:a");
    }

    #[tokio::test]
    async fn the_config_drive_is_read_before_the_metadata_service() {
        let drive = tempfile::tempdir().expect("tempdir");
        let nowhere = "http://127.0.0.1:9";
        let sources = InstanceIdSources {
            config_drive: drive.path(),
            metadata_url: nowhere,
        };
        let missing = own_instance_id(sources.clone()).await;
        assert!(
            matches!(&missing, Err(TargetError::Unavailable(m)) if m.contains("no config drive") && m.contains("127.0.0.1:9")),
            "{missing:?}"
        );
        let dir = drive.path().join("openstack/latest");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("meta_data.json"), r#"{"name":"x"}"#).expect("write");
        let no_uuid = own_instance_id(sources.clone()).await;
        assert!(
            matches!(&no_uuid, Err(TargetError::Unavailable(m)) if m.contains("no \"uuid\"")),
            "{no_uuid:?}"
        );
        std::fs::write(dir.join("meta_data.json"), r#"{"uuid":"4b1c-9"}"#).expect("write");
        assert_eq!(
            own_instance_id(sources.clone()).await.expect("id"),
            "4b1c-9"
        );
        let huge = format!(
            r#"{{"uuid":"x","pad":"{}"}}"#,
            " ".repeat(MAX_METADATA_BYTES)
        );
        std::fs::write(dir.join("meta_data.json"), huge).expect("write");
        let over = own_instance_id(sources).await;
        assert!(
            matches!(&over, Err(TargetError::Unavailable(m)) if m.contains(&format!("over {MAX_METADATA_BYTES}"))),
            "{over:?}"
        );
    }
}
