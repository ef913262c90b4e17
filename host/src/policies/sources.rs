//! Turns a [`PolicyRef`] into a loaded component: reads the file, fetches the pinned URL,
//! pulls the OCI artifact or opens the upload, checks the digest, and hands the bytes to the
//! sandbox, whose compiled cache is shared by every autoscaler running the same content.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::copies::LocalCopies;
use super::reference::PolicyRef;
use super::store::{PolicyError, PolicyStore, StoreQuota};
use crate::sandbox::{GuestComponent, Sandbox, SandboxError, glob_match};

/// Which references a host accepts: in cluster mode the operator's bound on what a
/// namespace's `WasmAutoscaler` may name. The default accepts everything (the config file's
/// author is the operator).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SourceRules {
    /// Directories `file:` references must lie in, checked after symbolic links are
    /// resolved; `None` accepts any file, an empty list none.
    pub file_dirs: Option<Vec<PathBuf>>,
    /// Registries (`host` or `host:port`, `*` matching any run of characters) `oci://`
    /// references may pull from.
    pub oci_registries: Vec<String>,
    /// Hosts (`host` or `host:port`, with `*`) `https://` references may fetch from.
    pub url_hosts: Vec<String>,
    /// Whether `policy:NAME` references to uploads may be used.
    pub uploads: bool,
}

impl Default for SourceRules {
    fn default() -> Self {
        SourceRules {
            file_dirs: None,
            oci_registries: vec!["*".into()],
            url_hosts: vec!["*".into()],
            uploads: true,
        }
    }
}

/// A policy reference the source rules refuse; the message names the reference (credentials
/// hidden) and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotPermitted {
    /// `sources.fileDirs` is empty.
    #[error("{reference}: file references are not allowed (sources.fileDirs is empty)")]
    NoFileDirs {
        /// The reference.
        reference: String,
    },
    /// The path is not under any of `sources.fileDirs`.
    #[error("{reference}: not under a directory of sources.fileDirs ({dirs})")]
    OutsideFileDirs {
        /// The reference.
        reference: String,
        /// The allowed directories, comma-separated.
        dirs: String,
    },
    /// The path resolves (through symbolic links) outside `sources.fileDirs`.
    #[error("{reference}: resolves to {real}, outside sources.fileDirs")]
    ResolvesOutside {
        /// The reference.
        reference: String,
        /// Where it resolves to.
        real: String,
    },
    /// The URL's host is not in `sources.urlHosts`.
    #[error("{reference}: host {host} is not in sources.urlHosts")]
    UrlHost {
        /// The reference.
        reference: String,
        /// Its host (and port).
        host: String,
    },
    /// The URL names an address the host never fetches from.
    #[error("{reference}: {why}")]
    DeniedAddress {
        /// The reference.
        reference: String,
        /// Which denied network.
        why: crate::sandbox::UrlRefusal,
    },
    /// The image's registry is not in `sources.ociRegistries`.
    #[error("{reference}: registry {registry} is not in sources.ociRegistries")]
    OciRegistry {
        /// The reference.
        reference: String,
        /// Its registry.
        registry: String,
    },
    /// `sources.uploads` is false.
    #[error("{reference}: uploaded policies are not allowed (sources.uploads is false)")]
    Uploads {
        /// The reference.
        reference: String,
    },
}

impl NotPermitted {
    /// The rule that refused, as written in config (`sources.fileDirs`, ...).
    pub fn rule(&self) -> &'static str {
        match self {
            NotPermitted::NoFileDirs { .. }
            | NotPermitted::OutsideFileDirs { .. }
            | NotPermitted::ResolvesOutside { .. } => "sources.fileDirs",
            NotPermitted::UrlHost { .. } => "sources.urlHosts",
            NotPermitted::DeniedAddress { .. } => "sandbox.httpDenyNetworks",
            NotPermitted::OciRegistry { .. } => "sources.ociRegistries",
            NotPermitted::Uploads { .. } => "sources.uploads",
        }
    }
}

impl SourceRules {
    /// Checks what can be checked without touching the source; the error names the rule.
    /// (`file:` references are checked again when read, with links resolved.)
    pub(crate) fn permits(&self, reference: &PolicyRef) -> Result<(), NotPermitted> {
        let host_in = |hosts: &[String], host: &str| {
            hosts
                .iter()
                .any(|h| glob_match(h.as_bytes(), host.as_bytes()))
        };
        match reference {
            PolicyRef::File(path) => match &self.file_dirs {
                None => Ok(()),
                Some(dirs) if dirs.iter().any(|d| lexically_under(path, d)) => Ok(()),
                Some(dirs) if dirs.is_empty() => Err(NotPermitted::NoFileDirs {
                    reference: reference.to_string(),
                }),
                Some(dirs) => Err(NotPermitted::OutsideFileDirs {
                    reference: reference.to_string(),
                    dirs: dirs
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                }),
            },
            PolicyRef::Url { url, .. } => {
                let host = url::Url::parse(url)
                    .ok()
                    .and_then(|u| {
                        let host = u.host_str()?.to_owned();
                        Some(match u.port() {
                            Some(port) => format!("{host}:{port}"),
                            None => host,
                        })
                    })
                    .unwrap_or_default();
                if host_in(&self.url_hosts, &host) {
                    Ok(())
                } else {
                    Err(NotPermitted::UrlHost {
                        reference: reference.to_string(),
                        host,
                    })
                }
            }
            PolicyRef::Oci(image) => {
                let registry = image.split('/').next().unwrap_or_default();
                if image.contains('/') && host_in(&self.oci_registries, registry) {
                    Ok(())
                } else {
                    Err(NotPermitted::OciRegistry {
                        reference: reference.to_string(),
                        registry: registry.to_owned(),
                    })
                }
            }
            PolicyRef::Uploaded { .. } if self.uploads => Ok(()),
            PolicyRef::Uploaded { .. } => Err(NotPermitted::Uploads {
                reference: reference.to_string(),
            }),
        }
    }
}

/// `path` is `dir` or below it, by components (no `..` escapes: a path with `..` is never
/// lexically under anything).
fn lexically_under(path: &Path, dir: &Path) -> bool {
    !path
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
        && path.starts_with(dir)
}

/// The media types accepted for the component layer of an OCI artifact: the CNCF wasm
/// artifact layout, the older wasm-to-oci one (used by Kubewarden) and plain `application/wasm`.
pub const OCI_LAYER_MEDIA_TYPES: [&str; 3] = [
    oci_client::manifest::WASM_LAYER_MEDIA_TYPE,
    "application/vnd.module.wasm.content.layer.v1+wasm",
    "application/wasm",
];

/// How policies are fetched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct FetchConfig {
    /// Registries reached over plain HTTP (`host` or `host:port`), e.g. one on loopback or
    /// inside the cluster. Every other registry is reached over HTTPS.
    pub insecure_registries: Vec<String>,
    /// Timeout of one fetch or pull, in milliseconds.
    pub timeout_ms: u64,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            insecure_registries: Vec::new(),
            timeout_ms: 30_000,
        }
    }
}

/// Why a policy could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The fetch failed.
    #[error("fetching {reference}: {message}")]
    Fetch {
        /// What was fetched.
        reference: String,
        /// Why it failed.
        message: String,
    },
    /// The content is not the pinned content.
    #[error("{reference}: content has sha256 {actual}, but the reference pins {expected}")]
    DigestMismatch {
        /// The reference.
        reference: String,
        /// The pinned digest.
        expected: String,
        /// The digest of what arrived.
        actual: String,
    },
    /// The content is larger than the sandbox accepts.
    #[error("{reference}: larger than the {limit}-byte limit")]
    TooLarge {
        /// The reference.
        reference: String,
        /// The limit.
        limit: u64,
    },
    /// An uploaded policy was named but this host keeps no uploads.
    #[error("{0}: this host has no policy store (uploads need a state directory)")]
    NoStore(String),
    /// The upload store failed.
    #[error(transparent)]
    Store(#[from] PolicyError),
    /// The host's source rules do not allow this reference.
    #[error(transparent)]
    NotAllowed(NotPermitted),
    /// The content is not a usable component.
    #[error("{reference}: {source}")]
    Invalid {
        /// The reference.
        reference: String,
        /// Why.
        source: SandboxError,
    },
}

/// Resolves and loads policy references.
pub struct PolicySources {
    sandbox: Arc<Sandbox>,
    uploads: Option<Arc<PolicyStore>>,
    http: reqwest::Client,
    oci: oci_client::Client,
    rules: SourceRules,
    copies: Option<LocalCopies>,
}

impl PolicySources {
    /// Sources loading into `sandbox`.
    pub fn new(sandbox: Arc<Sandbox>, config: &FetchConfig) -> Result<Self, SourceError> {
        let timeout = Duration::from_millis(config.timeout_ms);
        // A tenant names the URL: it must not make the host fetch from metadata services or
        // link-local addresses either (names are checked as resolved, literals in `fetch`).
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .dns_resolver(sandbox.denied_networks().resolver())
            .build()
            .map_err(|e| SourceError::Fetch {
                reference: "HTTP client".into(),
                message: e.to_string(),
            })?;
        let protocol = if config.insecure_registries.is_empty() {
            oci_client::client::ClientProtocol::Https
        } else {
            oci_client::client::ClientProtocol::HttpsExcept(config.insecure_registries.clone())
        };
        let oci = oci_client::Client::new(oci_client::client::ClientConfig {
            protocol,
            read_timeout: Some(timeout),
            connect_timeout: Some(Duration::from_secs(10)),
            ..Default::default()
        });
        Ok(PolicySources {
            sandbox,
            uploads: None,
            http,
            oci,
            rules: SourceRules::default(),
            copies: None,
        })
    }

    /// Accepts only what `rules` allow.
    pub fn with_rules(mut self, rules: SourceRules) -> Self {
        self.rules = rules;
        self
    }

    /// The rules references are checked against.
    pub fn rules(&self) -> &SourceRules {
        &self.rules
    }

    /// Keeps a last-good copy of every fetched `https://` and `oci://` policy in `dir`:
    /// digest-pinned ones are served from it without a fetch, the others when their source
    /// is down. A source outage then never stops a restart or a spec edit.
    pub fn with_local_copies(mut self, dir: impl Into<PathBuf>) -> Result<Self, SourceError> {
        let dir = dir.into();
        self.copies = Some(LocalCopies::open(&dir).map_err(|source| SourceError::File {
            path: dir.display().to_string(),
            source,
        })?);
        Ok(self)
    }

    /// Resolves `policy:NAME` references in a store kept in `dir` (created if missing), which
    /// accepts uploads up to the sandbox's component size limit, within `quota`.
    pub(crate) fn with_upload_dir(
        self,
        dir: impl Into<PathBuf>,
        quota: StoreQuota,
    ) -> Result<Self, SourceError> {
        let store = PolicyStore::open(
            dir,
            self.sandbox.clone(),
            self.sandbox.max_component_bytes(),
        )?
        .with_quota(quota);
        Ok(self.with_uploads(Arc::new(store)))
    }

    /// Resolves `policy:NAME` references in `store`.
    pub fn with_uploads(mut self, store: Arc<PolicyStore>) -> Self {
        self.uploads = Some(store);
        self
    }

    /// The upload store, if any.
    pub fn uploads(&self) -> Option<&Arc<PolicyStore>> {
        self.uploads.as_ref()
    }

    /// The sandbox components are loaded into.
    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.sandbox
    }

    /// Loads the component `reference` names, under this host's rules.
    pub async fn load(&self, reference: &PolicyRef) -> Result<Arc<GuestComponent>, SourceError> {
        self.load_under(reference, &self.rules).await
    }

    /// Loads the component `reference` names under `rules` (in cluster mode, the bounds of
    /// the resource's namespace).
    pub(crate) async fn load_under(
        &self,
        reference: &PolicyRef,
        rules: &SourceRules,
    ) -> Result<Arc<GuestComponent>, SourceError> {
        let bytes = self.fetch_under(reference, rules).await?;
        self.sandbox
            .load(bytes)
            .await
            .map(|loaded| loaded.component)
            .map_err(|source| SourceError::Invalid {
                reference: reference.to_string(),
                source,
            })
    }

    /// The bytes `reference` names, digest-checked where it pins one.
    pub async fn fetch(&self, reference: &PolicyRef) -> Result<Vec<u8>, SourceError> {
        self.fetch_under(reference, &self.rules).await
    }

    async fn fetch_under(
        &self,
        reference: &PolicyRef,
        rules: &SourceRules,
    ) -> Result<Vec<u8>, SourceError> {
        rules.permits(reference).map_err(SourceError::NotAllowed)?;
        let Some(copies) = self
            .copies
            .as_ref()
            .filter(|_| LocalCopies::keeps(reference))
        else {
            return self.fetch_from_source(reference, rules).await;
        };
        if is_pinned(reference)
            && let Some(bytes) = copies.get(reference)
        {
            return Ok(bytes);
        }
        match self.fetch_from_source(reference, rules).await {
            Ok(bytes) => {
                if let Err(error) = copies.put(reference, &bytes) {
                    tracing::warn!(%reference, %error, "cannot keep a local copy of the policy");
                }
                Ok(bytes)
            }
            Err(error @ SourceError::Fetch { .. }) => match copies.get(reference) {
                Some(bytes) => {
                    tracing::warn!(%reference, %error, "source unavailable; using the last-good local copy");
                    Ok(bytes)
                }
                None => Err(error),
            },
            Err(error) => Err(error),
        }
    }

    async fn fetch_from_source(
        &self,
        reference: &PolicyRef,
        rules: &SourceRules,
    ) -> Result<Vec<u8>, SourceError> {
        let limit = self.sandbox.max_component_bytes();
        match reference {
            PolicyRef::File(path) => {
                if let Some(dirs) = &rules.file_dirs {
                    check_resolved_under(reference, path, dirs).await?;
                }
                read_file(path, limit).await
            }
            PolicyRef::Url { url, sha256 } => {
                let bytes = self.get_url(reference, url).await?;
                check_digest(reference, sha256, &bytes)?;
                Ok(bytes)
            }
            PolicyRef::Oci(image) => self.pull(reference, image).await,
            PolicyRef::Uploaded { name, sha256 } => {
                let store = self
                    .uploads
                    .as_ref()
                    .ok_or_else(|| SourceError::NoStore(reference.to_string()))?;
                let record = store.get(name)?;
                if let Some(pinned) = sha256 {
                    check_digest_hex(reference, pinned, &record.sha256)?;
                }
                let bytes = read_file(&store.blob_path(&record.sha256), limit).await?;
                check_digest(reference, &record.sha256, &bytes)?;
                Ok(bytes)
            }
        }
    }

    async fn get_url(&self, reference: &PolicyRef, url: &str) -> Result<Vec<u8>, SourceError> {
        let failed = |message: String| SourceError::Fetch {
            reference: reference.to_string(),
            message,
        };
        if let Ok(parsed) = url::Url::parse(url) {
            self.sandbox
                .denied_networks()
                .check_literal(&parsed)
                .map_err(|why| {
                    SourceError::NotAllowed(NotPermitted::DeniedAddress {
                        reference: reference.to_string(),
                        why,
                    })
                })?;
        }
        let response = self
            .http
            .get(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| failed(e.to_string()))?;
        let limit = self.sandbox.max_component_bytes();
        let too_large = || SourceError::TooLarge {
            reference: reference.to_string(),
            limit,
        };
        if response.content_length().is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        // Streamed with a running cap, so a lying or absent Content-Length cannot make the
        // host buffer more than the limit.
        let mut bytes = Vec::new();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| failed(e.to_string()))?;
            if (bytes.len() + chunk.len()) as u64 > limit {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }

    async fn pull(&self, reference: &PolicyRef, image: &str) -> Result<Vec<u8>, SourceError> {
        let failed = |message: String| SourceError::Fetch {
            reference: reference.to_string(),
            message,
        };
        let parsed: oci_client::Reference = image.parse().map_err(|e| failed(format!("{e}")))?;
        let auth = oci_client::secrets::RegistryAuth::Anonymous;
        let (manifest, _) = self
            .oci
            .pull_image_manifest(&parsed, &auth)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let mut layers = manifest
            .layers
            .iter()
            .filter(|l| OCI_LAYER_MEDIA_TYPES.contains(&l.media_type.as_str()));
        let (Some(layer), None) = (layers.next(), layers.next()) else {
            return Err(failed(
                "the artifact must have exactly one component layer".into(),
            ));
        };
        // The manifest states the layer's size: refuse before downloading anything, then
        // stream with a running cap in case the registry sends more than it said.
        let limit = self.sandbox.max_component_bytes();
        let too_large = || SourceError::TooLarge {
            reference: reference.to_string(),
            limit,
        };
        if u64::try_from(layer.size).map_or(true, |size| size > limit) {
            return Err(too_large());
        }
        let mut stream = self
            .oci
            .pull_blob_stream(&parsed, layer)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| failed(e.to_string()))?;
            if (bytes.len() + chunk.len()) as u64 > limit {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        // The blob stream does not check the digest: the manifest pins it, so check here.
        let actual = format!("sha256:{}", hex::encode(crate::sandbox::sha256(&bytes)));
        if !layer.digest.eq_ignore_ascii_case(&actual) {
            return Err(failed(format!(
                "layer content has {actual}, but the manifest pins {}",
                layer.digest
            )));
        }
        Ok(bytes)
    }
}

/// Whether the reference names fixed content, so a local copy is as good as the source.
fn is_pinned(reference: &PolicyRef) -> bool {
    match reference {
        PolicyRef::Url { .. } => true,
        PolicyRef::Oci(image) => image.contains("@sha256:"),
        _ => false,
    }
}

/// Refuses a file whose real location (links resolved) is outside `dirs`.
async fn check_resolved_under(
    reference: &PolicyRef,
    path: &Path,
    dirs: &[PathBuf],
) -> Result<(), SourceError> {
    let real = tokio::fs::canonicalize(path)
        .await
        .map_err(|source| SourceError::File {
            path: path.display().to_string(),
            source,
        })?;
    for dir in dirs {
        if let Ok(dir) = tokio::fs::canonicalize(dir).await
            && real.starts_with(&dir)
        {
            return Ok(());
        }
    }
    Err(SourceError::NotAllowed(NotPermitted::ResolvesOutside {
        reference: reference.to_string(),
        real: real.display().to_string(),
    }))
}

/// Reads a regular file of at most `limit` bytes. Devices, pipes and directories are refused
/// before reading (`/dev/zero` never ends), and the read stops at the limit even if the file
/// grows meanwhile.
async fn read_file(path: &Path, limit: u64) -> Result<Vec<u8>, SourceError> {
    // One blocking task for the whole read: tokio's `File` hands every small read of
    // `read_to_end` to the blocking pool on its own, and a controller starting 10,000
    // resources spent more time in those hand-offs than in reading.
    let owned = path.to_owned();
    let read = tokio::task::spawn_blocking(move || read_file_blocking(&owned, limit))
        .await
        .map_err(|e| SourceError::File {
            path: path.display().to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
    read?.ok_or_else(|| SourceError::TooLarge {
        reference: path.display().to_string(),
        limit,
    })
}

/// The file's bytes, or `None` when it is larger than `limit`.
fn read_file_blocking(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, SourceError> {
    use std::io::Read;
    let error = |source| SourceError::File {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(error)?;
    let metadata = file.metadata().map_err(error)?;
    if !metadata.is_file() {
        return Err(error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    if metadata.len() > limit {
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    // The size can change between the check and the read: never more than `limit` + 1.
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(error)?;
    if bytes.len() as u64 > limit {
        return Ok(None);
    }
    Ok(Some(bytes))
}

fn check_digest(reference: &PolicyRef, expected: &str, bytes: &[u8]) -> Result<(), SourceError> {
    check_digest_hex(
        reference,
        expected,
        &hex::encode(crate::sandbox::sha256(bytes)),
    )
}

fn check_digest_hex(
    reference: &PolicyRef,
    expected: &str,
    actual: &str,
) -> Result<(), SourceError> {
    if expected.eq_ignore_ascii_case(actual) {
        Ok(())
    } else {
        Err(SourceError::DigestMismatch {
            reference: reference.to_string(),
            expected: expected.to_owned(),
            actual: actual.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_names_the_reference_and_its_rule() {
        let rules = SourceRules {
            file_dirs: Some(vec![PathBuf::from("/policies")]),
            oci_registries: vec!["registry.example".into()],
            url_hosts: vec!["*.example".into()],
            uploads: false,
        };
        let refused = |text: &str| {
            let reference: PolicyRef = PolicyRef::parse(text).expect("a reference");
            rules.permits(&reference).expect_err("refused")
        };
        for (text, rule, detail) in [
            ("file:/etc/p.wasm", "sources.fileDirs", "/policies"),
            (
                "oci://other.example/p:1",
                "sources.ociRegistries",
                "other.example",
            ),
            (
                "https://evil.test/p.wasm@sha256:0000000000000000000000000000000000000000000000000000000000000000",
                "sources.urlHosts",
                "evil.test",
            ),
            ("policy:p", "sources.uploads", "false"),
        ] {
            let error = refused(text);
            assert_eq!(error.rule(), rule, "{error}");
            let message = error.to_string();
            assert!(
                message.contains(rule) && message.contains(detail),
                "{message}"
            );
        }
        assert!(
            rules
                .permits(&PolicyRef::parse("file:/policies/p.wasm").expect("a reference"))
                .is_ok()
        );
        let none = SourceRules {
            file_dirs: Some(Vec::new()),
            ..SourceRules::default()
        };
        let error = none
            .permits(&PolicyRef::parse("file:/policies/p.wasm").expect("a reference"))
            .expect_err("no directory allowed");
        assert!(matches!(error, NotPermitted::NoFileDirs { .. }), "{error}");
    }
}
