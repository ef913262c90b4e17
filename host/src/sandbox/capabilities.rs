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
    pub(crate) fn interface(self) -> &'static str {
        match self {
            Capability::Log => "log",
            Capability::State => "state",
            Capability::Http => "http",
            Capability::KubernetesMetrics => "kubernetes-metrics",
        }
    }

    /// Looks a capability up by its WIT interface name.
    pub(crate) fn from_interface(name: &str) -> Option<Capability> {
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

/// What one call changed: for each key it wrote or deleted, the value it started from and
/// the value it leaves (`None`: absent).
pub type StateChanges = BTreeMap<String, (Option<Vec<u8>>, Option<Vec<u8>>)>;

/// Backing store of the `state` capability for one autoscaler.
///
/// A call works on a snapshot taken when it starts and commits only if it succeeds, so a
/// failing or trapping call never leaves half-written state behind. Calls may run at the
/// same time (per-replica gathers): a commit applies only the keys its call changed, on top
/// of whatever others committed meanwhile, and fails, writing nothing, if another call
/// changed one of the same keys since this one's snapshot. Nothing is silently overwritten.
pub trait StateStore: Send + Sync {
    /// The current contents.
    fn load(&self) -> Result<BTreeMap<String, Vec<u8>>, GuestError>;
    /// Merges a successful call's `changes` into the current contents, atomically, keeping
    /// the whole store within `max_bytes`.
    fn commit(&self, changes: &StateChanges, max_bytes: u64) -> Result<(), GuestError>;
    /// Whether [`commit`](StateStore::commit) may block on I/O, so the sandbox runs it off
    /// the async workers. A store in memory commits in place, saving a thread hand-off per
    /// call.
    fn commit_blocks(&self) -> bool {
        true
    }
}

/// Applies `changes` to `current`, or says why not (a concurrent change to the same key, or
/// the merged store over its quota).
pub fn merge_state(
    current: &mut BTreeMap<String, Vec<u8>>,
    changes: &StateChanges,
    max_bytes: u64,
) -> Result<(), GuestError> {
    for (key, (before, _)) in changes {
        if current.get(key) != before.as_ref() {
            return Err(GuestError::Unavailable(format!(
                "state key {key:?} was changed by a concurrent call; this call's changes were not committed"
            )));
        }
    }
    let mut merged = current.clone();
    for (key, (_, after)) in changes {
        match after {
            Some(value) => merged.insert(key.clone(), value.clone()),
            None => merged.remove(key),
        };
    }
    let size: u64 = merged.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
    if size > max_bytes {
        return Err(GuestError::Denied(format!(
            "state quota of {max_bytes} bytes exceeded once merged with concurrent calls ({size} bytes)"
        )));
    }
    *current = merged;
    Ok(())
}

/// Source of the `kubernetes-metrics` capability.
pub trait PodMetricsProvider: Send + Sync {
    /// Metrics for every pod of the target.
    fn pod_metrics(&self) -> BoxFuture<'_, Result<Vec<PodMetrics>, GuestError>>;
}

/// What answers an allowed `http` GET instead of the network.
pub trait HttpResponder: Send + Sync {
    /// The status and body answering a GET of `url` (already allowed by the grant).
    fn get(&self, url: &url::Url) -> Result<(u16, Vec<u8>), GuestError>;
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

    fn commit(&self, changes: &StateChanges, max_bytes: u64) -> Result<(), GuestError> {
        let mut data = self
            .data
            .lock()
            .map_err(|_| GuestError::Unavailable("state store lock poisoned".into()))?;
        merge_state(&mut data, changes, max_bytes)
    }
    fn commit_blocks(&self) -> bool {
        false
    }
}

/// A state store kept in a JSON file (values hex-encoded), written atomically; commits are
/// serialized so a merge reads what the previous one wrote.
#[derive(Debug)]
pub struct FileState {
    path: PathBuf,
    commits: Mutex<()>,
    /// The file's contents as last read or written, and the stamp of the file they came
    /// from: every call loads the store, and reading and decoding an unchanged file each
    /// time was a tenth of a run's cost in the fleet benchmark.
    last: Mutex<Option<(FileStamp, GuestState)>>,
}

/// A guest's state: key → bytes.
type GuestState = BTreeMap<String, Vec<u8>>;

/// What identifies one version of the state file. Commits replace the file by renaming a new
/// one over it, so each has its own inode.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    inode: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl FileStamp {
    fn of(path: &std::path::Path) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path)?;
        Ok(FileStamp {
            inode: meta.ino(),
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}

impl FileState {
    /// A store at `path`; a missing file is an empty store.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileState {
            path: path.into(),
            commits: Mutex::new(()),
            last: Mutex::new(None),
        }
    }

    fn remember(&self, stamp: FileStamp, state: &BTreeMap<String, Vec<u8>>) {
        if let Ok(mut last) = self.last.lock() {
            *last = Some((stamp, state.clone()));
        }
    }
}

impl StateStore for FileState {
    fn load(&self) -> Result<BTreeMap<String, Vec<u8>>, GuestError> {
        let stamp = match FileStamp::of(&self.path) {
            Ok(stamp) => Some(stamp),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(_) => None,
        };
        if let Some(stamp) = &stamp
            && let Ok(last) = self.last.lock()
            && let Some((seen, state)) = last.as_ref()
            && seen == stamp
        {
            return Ok(state.clone());
        }
        let state = self.read()?;
        if let Some(stamp) = stamp {
            self.remember(stamp, &state);
        }
        Ok(state)
    }

    fn commit(&self, changes: &StateChanges, max_bytes: u64) -> Result<(), GuestError> {
        let _serialized = self
            .commits
            .lock()
            .map_err(|_| GuestError::Unavailable("state store lock poisoned".into()))?;
        let mut state = self.load()?;
        merge_state(&mut state, changes, max_bytes)?;
        let encoded: BTreeMap<&String, String> =
            state.iter().map(|(k, v)| (k, hex::encode(v))).collect();
        // The store is only ever replaced whole, so a reader sees one commit or the next.
        let text = serde_json::to_string_pretty(&encoded)
            .map_err(|e| GuestError::Other(format!("cannot encode state: {e}")))?;
        crate::fsutil::write_atomic(&self.path, text.as_bytes()).map_err(|e| {
            GuestError::Unavailable(format!(
                "cannot write state file {}: {e}",
                self.path.display()
            ))
        })?;
        if let Ok(stamp) = FileStamp::of(&self.path) {
            self.remember(stamp, &state);
        }
        Ok(())
    }
}

impl FileState {
    /// Reads and decodes the file.
    fn read(&self) -> Result<BTreeMap<String, Vec<u8>>, GuestError> {
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
    /// Answers the `http` capability's GETs in place of the network (`simulate`'s model);
    /// `None`: the network. The grant, the allow-list and the body cap apply either way.
    pub http_responder: Option<Arc<dyn HttpResponder>>,
}

impl fmt::Debug for CallEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallEnv")
            .field("limits", &self.limits)
            .field("capabilities", &self.capabilities)
            .field("state", &self.state.is_some())
            .field("pod_metrics", &self.pod_metrics.is_some())
            .field("http_responder", &self.http_responder.is_some())
            .finish()
    }
}

#[cfg(test)]
mod state_tests {
    use super::*;

    fn change(key: &str, before: Option<&str>, after: Option<&str>) -> StateChanges {
        let bytes = |v: Option<&str>| v.map(|v| v.as_bytes().to_vec());
        BTreeMap::from([(key.to_owned(), (bytes(before), bytes(after)))])
    }

    fn stores() -> Vec<(&'static str, Box<dyn StateStore>, tempfile::TempDir)> {
        let dir = tempfile::tempdir().unwrap();
        let file = FileState::new(dir.path().join("state.json"));
        vec![
            (
                "memory",
                Box::new(MemoryState::new()),
                tempfile::tempdir().unwrap(),
            ),
            ("file", Box::new(file), dir),
        ]
    }

    #[test]
    fn a_file_replaced_by_someone_else_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let store = FileState::new(&path);
        store.commit(&change("k", None, Some("1")), 1024).unwrap();
        assert_eq!(store.load().unwrap()["k"], b"1");
        // Another writer (an operator restoring a backup) replaces it the same way commits do.
        let other = FileState::new(&path);
        other
            .commit(&change("k", Some("1"), Some("2")), 1024)
            .unwrap();
        assert_eq!(store.load().unwrap()["k"], b"2");
        std::fs::remove_file(&path).unwrap();
        assert!(store.load().unwrap().is_empty());
    }

    #[test]
    fn concurrent_calls_writing_different_keys_both_land() {
        for (kind, store, _dir) in stores() {
            // Both calls started from the empty store.
            store
                .commit(&change("replica-a", None, Some("1")), 1024)
                .unwrap();
            store
                .commit(&change("replica-b", None, Some("2")), 1024)
                .unwrap();
            let now = store.load().unwrap();
            assert_eq!(now.len(), 2, "{kind}: {now:?}");
        }
    }

    #[test]
    fn a_concurrent_write_to_the_same_key_fails_and_writes_nothing() {
        for (kind, store, _dir) in stores() {
            store
                .commit(&change("count", None, Some("1")), 1024)
                .unwrap();
            // A second call that also started from the empty store and also wrote `count`.
            let mut both = change("count", None, Some("9"));
            both.extend(change("other", None, Some("x")));
            let error = store.commit(&both, 1024).unwrap_err().to_string();
            assert!(error.contains("concurrent"), "{kind}: {error}");
            let now = store.load().unwrap();
            assert_eq!(
                now.get("count").map(Vec::as_slice),
                Some(&b"1"[..]),
                "{kind}"
            );
            assert!(!now.contains_key("other"), "{kind}: half a commit landed");
            // Started from what is there now: it lands.
            store
                .commit(&change("count", Some("1"), Some("2")), 1024)
                .unwrap();
            store
                .commit(&change("count", Some("2"), None), 1024)
                .unwrap();
            assert!(store.load().unwrap().is_empty(), "{kind}");
        }
    }

    #[test]
    fn the_quota_holds_for_the_merged_store() {
        let store = MemoryState::new();
        store
            .commit(&change("a", None, Some("0123456789")), 16)
            .unwrap();
        let error = store
            .commit(&change("b", None, Some("0123456789")), 16)
            .unwrap_err();
        assert!(error.to_string().contains("quota"), "{error}");
    }
}
