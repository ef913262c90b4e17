//! What an autoscaler grants its guests, and the host services behind those grants.
//!
//! Every capability is denied unless granted. A component that imports a capability its
//! autoscaler did not grant is refused before it is instantiated, and each host function checks
//! its grant again, so a grant can never be bypassed by how a component was linked.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::contract::model::{GuestError, PodMetrics};

/// One capability a guest may import.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// `wasmscaler:policy/log`.
    Log,
    /// `wasmscaler:policy/state`.
    State,
    /// `wasmscaler:policy/http`.
    Http,
    /// `wasmscaler:policy/kubernetes-metrics`.
    KubernetesMetrics,
}

impl Capability {
    /// Every capability, in contract order.
    pub const ALL: [Capability; 4] = [
        Capability::Log,
        Capability::State,
        Capability::Http,
        Capability::KubernetesMetrics,
    ];

    /// The WIT interface name (without package and version).
    pub fn interface(self) -> &'static str {
        match self {
            Capability::Log => "log",
            Capability::State => "state",
            Capability::Http => "http",
            Capability::KubernetesMetrics => "kubernetes-metrics",
        }
    }

    /// Looks a capability up by its WIT interface name.
    pub fn from_interface(name: &str) -> Option<Capability> {
        Capability::ALL.into_iter().find(|c| c.interface() == name)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.interface())
    }
}

/// The capabilities granted to one autoscaler's guests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Capabilities {
    /// Structured logging.
    #[serde(default)]
    pub log: bool,
    /// Persistent key/value state.
    #[serde(default)]
    pub state: Option<StateGrant>,
    /// HTTP GET to allow-listed URLs.
    #[serde(default)]
    pub http: Option<HttpGrant>,
    /// Resource metrics of the target's pods.
    #[serde(default)]
    pub kubernetes_metrics: bool,
}

impl Capabilities {
    /// Whether `capability` is granted.
    pub fn grants(&self, capability: Capability) -> bool {
        match capability {
            Capability::Log => self.log,
            Capability::State => self.state.is_some(),
            Capability::Http => self.http.is_some(),
            Capability::KubernetesMetrics => self.kubernetes_metrics,
        }
    }
}

/// Grant of the `state` capability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StateGrant {
    /// Quota of the whole store (keys plus values), in bytes.
    #[serde(default = "StateGrant::default_max_bytes")]
    pub max_bytes: u64,
}

impl StateGrant {
    fn default_max_bytes() -> u64 {
        64 << 10
    }
}

impl Default for StateGrant {
    fn default() -> Self {
        StateGrant {
            max_bytes: StateGrant::default_max_bytes(),
        }
    }
}

/// Grant of the `http` capability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpGrant {
    /// URL patterns a guest may GET. `*` matches any run of characters other than `/`;
    /// `{replica}` matches the address of any current replica of the target. A pattern with no
    /// port matches the scheme's default port. Example: `http://{replica}/load`.
    pub allow: Vec<String>,
    /// Timeout of one request, in milliseconds.
    #[serde(default = "HttpGrant::default_timeout_ms")]
    pub timeout_ms: u64,
    /// Largest response body accepted, in bytes.
    #[serde(default = "HttpGrant::default_max_body_bytes")]
    pub max_body_bytes: u64,
}

impl HttpGrant {
    fn default_timeout_ms() -> u64 {
        2_000
    }
    fn default_max_body_bytes() -> u64 {
        1 << 20
    }

    /// A grant for these patterns with default timeout and body cap.
    pub fn allow(patterns: impl IntoIterator<Item = impl Into<String>>) -> Self {
        HttpGrant {
            allow: patterns.into_iter().map(Into::into).collect(),
            timeout_ms: HttpGrant::default_timeout_ms(),
            max_body_bytes: HttpGrant::default_max_body_bytes(),
        }
    }
}

/// A boxed future, as returned by the provider traits.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Backing store of the `state` capability for one autoscaler.
///
/// A call works on a snapshot taken when it starts and commits the whole snapshot only if it
/// succeeds, so a failing or trapping call never leaves half-written state behind.
pub trait StateStore: Send + Sync {
    /// The current contents.
    fn load(&self) -> Result<BTreeMap<String, Vec<u8>>, GuestError>;
    /// Replaces the contents after a successful call.
    fn commit(&self, state: BTreeMap<String, Vec<u8>>) -> Result<(), GuestError>;
}

/// Source of the `kubernetes-metrics` capability.
pub trait PodMetricsProvider: Send + Sync {
    /// Metrics for every pod of the target.
    fn pod_metrics(&self) -> BoxFuture<'_, Result<Vec<PodMetrics>, GuestError>>;
}

/// A fixed set of pod metrics: for `wasmscaler eval --pod-metrics` and tests, where no
/// metrics server exists.
#[derive(Debug, Clone, Default)]
pub struct StaticPodMetrics(pub Vec<PodMetrics>);

impl PodMetricsProvider for StaticPodMetrics {
    fn pod_metrics(&self) -> BoxFuture<'_, Result<Vec<PodMetrics>, GuestError>> {
        let pods = self.0.clone();
        Box::pin(async move { Ok(pods) })
    }
}

/// A state store in memory; the default for one process's lifetime.
#[derive(Debug, Default)]
pub struct MemoryState {
    data: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl MemoryState {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl StateStore for MemoryState {
    fn load(&self) -> Result<BTreeMap<String, Vec<u8>>, GuestError> {
        self.data
            .lock()
            .map(|d| d.clone())
            .map_err(|_| GuestError::Unavailable("state store lock poisoned".into()))
    }

    fn commit(&self, state: BTreeMap<String, Vec<u8>>) -> Result<(), GuestError> {
        let mut data = self
            .data
            .lock()
            .map_err(|_| GuestError::Unavailable("state store lock poisoned".into()))?;
        *data = state;
        Ok(())
    }
}

/// A state store kept in a JSON file (values hex-encoded), written atomically.
#[derive(Debug, Clone)]
pub struct FileState {
    path: PathBuf,
}

impl FileState {
    /// A store at `path`; a missing file is an empty store.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileState { path: path.into() }
    }
}

impl StateStore for FileState {
    fn load(&self) -> Result<BTreeMap<String, Vec<u8>>, GuestError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => {
                return Err(GuestError::Unavailable(format!(
                    "cannot read state file {}: {e}",
                    self.path.display()
                )));
            }
        };
        let encoded: BTreeMap<String, String> = serde_json::from_str(&text).map_err(|e| {
            GuestError::Unavailable(format!(
                "state file {} is corrupt: {e}",
                self.path.display()
            ))
        })?;
        encoded
            .into_iter()
            .map(|(k, v)| {
                hex::decode(&v).map(|v| (k.clone(), v)).map_err(|e| {
                    GuestError::Unavailable(format!(
                        "state file {}: key {k:?} is not hex: {e}",
                        self.path.display()
                    ))
                })
            })
            .collect()
    }

    fn commit(&self, state: BTreeMap<String, Vec<u8>>) -> Result<(), GuestError> {
        let encoded: BTreeMap<&String, String> =
            state.iter().map(|(k, v)| (k, hex::encode(v))).collect();
        let text = serde_json::to_string_pretty(&encoded)
            .map_err(|e| GuestError::Other(format!("cannot encode state: {e}")))?;
        crate::fsutil::write_atomic(&self.path, text.as_bytes()).map_err(|e| {
            GuestError::Unavailable(format!(
                "cannot write state file {}: {e}",
                self.path.display()
            ))
        })
    }
}

/// Everything one call needs beyond its inputs: limits, grants and the services behind them.
#[derive(Clone, Default)]
pub struct CallEnv {
    /// Budgets of the call.
    pub limits: super::Limits,
    /// What the guest may use.
    pub capabilities: Capabilities,
    /// Backing store of the `state` capability; a fresh in-memory store if `None`.
    pub state: Option<Arc<dyn StateStore>>,
    /// Source of the `kubernetes-metrics` capability; the import answers `unavailable` if `None`.
    pub pod_metrics: Option<Arc<dyn PodMetricsProvider>>,
}

impl fmt::Debug for CallEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallEnv")
            .field("limits", &self.limits)
            .field("capabilities", &self.capabilities)
            .field("state", &self.state.is_some())
            .field("pod_metrics", &self.pod_metrics.is_some())
            .finish()
    }
}
