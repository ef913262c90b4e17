//! Turns a [`PolicyRef`] into a loaded component: reads the file, fetches the pinned URL,
//! pulls the OCI artifact or opens the upload, checks the digest, and hands the bytes to the
//! sandbox, whose compiled cache is shared by every autoscaler running the same content.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::reference::PolicyRef;
use super::store::{PolicyError, PolicyStore};
use crate::sandbox::{GuestComponent, Sandbox, SandboxError};

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
}

impl PolicySources {
    /// Sources loading into `sandbox`.
    pub fn new(sandbox: Arc<Sandbox>, config: &FetchConfig) -> Result<Self, SourceError> {
        let timeout = Duration::from_millis(config.timeout_ms);
        let http = reqwest::Client::builder()
            .timeout(timeout)
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
        })
    }

    /// Resolves `policy:NAME` references in a store kept in `dir` (created if missing), which
    /// accepts uploads up to the sandbox's component size limit.
    pub fn with_upload_dir(self, dir: impl Into<PathBuf>) -> Result<Self, SourceError> {
        let store = PolicyStore::open(
            dir,
            self.sandbox.clone(),
            self.sandbox.max_component_bytes(),
        )?;
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

    /// Loads the component `reference` names.
    pub async fn load(&self, reference: &PolicyRef) -> Result<Arc<GuestComponent>, SourceError> {
        let bytes = self.fetch(reference).await?;
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
        match reference {
            PolicyRef::File(path) => read_file(path).await,
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
                let bytes = read_file(&store.blob_path(&record.sha256)).await?;
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
        let data = self
            .oci
            .pull(
                &parsed,
                &oci_client::secrets::RegistryAuth::Anonymous,
                OCI_LAYER_MEDIA_TYPES.to_vec(),
            )
            .await
            .map_err(|e| failed(e.to_string()))?;
        let mut layers = data.layers.into_iter();
        match (layers.next(), layers.next()) {
            (Some(layer), None) => {
                let limit = self.sandbox.max_component_bytes();
                if layer.data.len() as u64 > limit {
                    return Err(SourceError::TooLarge {
                        reference: reference.to_string(),
                        limit,
                    });
                }
                Ok(layer.data.to_vec())
            }
            _ => Err(failed(
                "the artifact must have exactly one component layer".into(),
            )),
        }
    }
}

async fn read_file(path: &PathBuf) -> Result<Vec<u8>, SourceError> {
    tokio::fs::read(path)
        .await
        .map_err(|source| SourceError::File {
            path: path.display().to_string(),
            source,
        })
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
