//! The host's data model of a guest call, mirroring the WIT records.
//!
//! These types are the JSON that `wasmscaler eval --context` reads and prints, and what the
//! engine and API pass around. Conversions to and from the generated bindings live here too,
//! so no other module needs to know the bindings' shapes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::types as wit;

/// Why the host is calling a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunType {
    /// A scheduled run whose decision is applied.
    Scaler,
    /// A scheduled run whose decision is only reported.
    DryRun,
    /// A run requested through the API or CLI.
    #[default]
    Api,
}

/// The workload being scaled.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Target {
    /// Kind, e.g. `Deployment` or `local`.
    pub kind: String,
    /// Name of the target.
    pub name: String,
    /// Namespace; empty when the target has none.
    #[serde(default)]
    pub namespace: String,
    /// Replicas now.
    pub current_replicas: u32,
    /// Lower bound of the autoscaler.
    #[serde(default)]
    pub min_replicas: u32,
    /// Upper bound of the autoscaler.
    pub max_replicas: u32,
    /// The target object, passed to the guest as JSON text.
    #[serde(default)]
    pub object: ObjectJson,
}

/// A target object as the JSON text a guest receives: serialized once per change of the
/// object and shared by every run and copy that sees it, not rebuilt on each run (an object
/// is kilobytes, and a host may run 100,000 autoscalers). In the data model's own JSON it is
/// the object itself.
#[derive(Clone, PartialEq, Eq)]
pub struct ObjectJson(std::sync::Arc<str>);

impl ObjectJson {
    /// Serializes `object`; a value that cannot be serialized becomes `{}`.
    pub fn of<T: Serialize + ?Sized>(object: &T) -> Self {
        ObjectJson(
            serde_json::to_string(object)
                .unwrap_or_else(|_| "{}".into())
                .into(),
        )
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The object parsed back, for readers that need its fields.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).unwrap_or_default()
    }
}

impl Default for ObjectJson {
    fn default() -> Self {
        ObjectJson("{}".into())
    }
}

impl std::fmt::Debug for ObjectJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<serde_json::Value> for ObjectJson {
    fn from(value: serde_json::Value) -> Self {
        ObjectJson(value.to_string().into())
    }
}

impl Serialize for ObjectJson {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(s)
    }
}

impl<'de> Deserialize<'de> for ObjectJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(d).map(ObjectJson::from)
    }
}

/// One replica of the target.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Replica {
    /// Unique name within the target.
    pub name: String,
    /// Whether it is ready.
    #[serde(default = "default_true")]
    pub ready: bool,
    /// Start time in ms since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time_ms: Option<i64>,
    /// Labels or tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Network address, e.g. `127.0.0.1:8081`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

fn default_true() -> bool {
    true
}

/// Everything a guest learns about a run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Context {
    /// Name of the autoscaler.
    pub autoscaler_name: String,
    /// Namespace of the autoscaler; empty outside Kubernetes.
    #[serde(default)]
    pub autoscaler_namespace: String,
    /// Why the host is calling.
    #[serde(default)]
    pub run_type: RunType,
    /// Time of the run, ms since the Unix epoch.
    pub now_ms: i64,
    /// The target.
    pub target: Target,
    /// The target's replicas.
    #[serde(default)]
    pub replicas: Vec<Replica>,
    /// The autoscaler's user configuration.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// What became of each metric source of a multi-source run, for the evaluator (the
    /// `sources` import; not part of the WIT `context` record). Empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceStatus>,
}

/// What became of one metric source in a run (the WIT `sources.source-status` record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceStatus {
    /// The source's name in the autoscaler's `metrics` list.
    pub name: String,
    /// Samples of this source in the run (held ones included).
    #[serde(default)]
    pub samples: u32,
    /// Why it failed this run, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<GuestError>,
    /// What the host did instead, for a failed source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handling: Option<FailureHandling>,
    /// Consecutive runs in which it failed.
    #[serde(default)]
    pub consecutive_failures: u32,
}

/// How a run went on without a failed source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FailureHandling {
    /// Its samples are missing.
    Ignored,
    /// Its last good samples stand in.
    Held,
}

impl From<&SourceStatus> for super::sources::SourceStatus {
    fn from(s: &SourceStatus) -> Self {
        use super::sources::FailureHandling as Wit;
        super::sources::SourceStatus {
            name: s.name.clone(),
            samples: s.samples,
            failure: s.failure.clone().map(Into::into),
            handling: s.handling.map(|h| match h {
                FailureHandling::Ignored => Wit::Ignored,
                FailureHandling::Held => Wit::Held,
            }),
            consecutive_failures: s.consecutive_failures,
        }
    }
}

/// One measurement from `gather`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sample {
    /// What was measured.
    pub name: String,
    /// The value.
    pub value: f64,
    /// The replica it belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// Extra dimensions.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// What `evaluate` asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Decision {
    /// Desired replicas before the host's clamps and policies.
    pub target_replicas: u32,
    /// Why, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Replicas to remove first on scale-in, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_first: Option<Vec<String>>,
}

/// An error a guest returned (the WIT `error` variant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", content = "message", rename_all = "kebab-case")]
pub enum GuestError {
    /// The autoscaler's configuration is wrong.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// A dependency is unavailable right now.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The host refused a request.
    #[error("denied: {0}")]
    Denied(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

fn pairs(map: &BTreeMap<String, String>) -> Vec<(String, String)> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

impl From<RunType> for wit::RunType {
    fn from(value: RunType) -> Self {
        match value {
            RunType::Scaler => wit::RunType::Scaler,
            RunType::DryRun => wit::RunType::DryRun,
            RunType::Api => wit::RunType::Api,
        }
    }
}

impl From<&Context> for wit::Context {
    fn from(ctx: &Context) -> Self {
        wit::Context {
            autoscaler_name: ctx.autoscaler_name.clone(),
            autoscaler_namespace: ctx.autoscaler_namespace.clone(),
            run_type: ctx.run_type.into(),
            now_ms: ctx.now_ms,
            target: wit::Target {
                kind: ctx.target.kind.clone(),
                name: ctx.target.name.clone(),
                namespace: ctx.target.namespace.clone(),
                current_replicas: ctx.target.current_replicas,
                min_replicas: ctx.target.min_replicas,
                max_replicas: ctx.target.max_replicas,
                object_json: ctx.target.object.as_str().to_owned(),
            },
            replicas: ctx.replicas.iter().map(wit::Replica::from).collect(),
            config: pairs(&ctx.config),
        }
    }
}

impl From<&Replica> for wit::Replica {
    fn from(r: &Replica) -> Self {
        wit::Replica {
            name: r.name.clone(),
            ready: r.ready,
            start_time_ms: r.start_time_ms,
            labels: pairs(&r.labels),
            address: r.address.clone(),
        }
    }
}

impl From<wit::Sample> for Sample {
    fn from(s: wit::Sample) -> Self {
        Sample {
            name: s.name,
            value: s.value,
            replica: s.replica,
            labels: s.labels.into_iter().collect(),
        }
    }
}

impl From<&Sample> for wit::Sample {
    fn from(s: &Sample) -> Self {
        wit::Sample {
            name: s.name.clone(),
            value: s.value,
            replica: s.replica.clone(),
            labels: pairs(&s.labels),
        }
    }
}

impl From<wit::Decision> for Decision {
    fn from(d: wit::Decision) -> Self {
        Decision {
            target_replicas: d.target_replicas,
            reason: d.reason,
            remove_first: d.remove_first,
        }
    }
}

impl From<wit::Error> for GuestError {
    fn from(e: wit::Error) -> Self {
        match e {
            wit::Error::InvalidConfig(m) => GuestError::InvalidConfig(m),
            wit::Error::Unavailable(m) => GuestError::Unavailable(m),
            wit::Error::Denied(m) => GuestError::Denied(m),
            wit::Error::Other(m) => GuestError::Other(m),
        }
    }
}

impl From<GuestError> for wit::Error {
    fn from(e: GuestError) -> Self {
        match e {
            GuestError::InvalidConfig(m) => wit::Error::InvalidConfig(m),
            GuestError::Unavailable(m) => wit::Error::Unavailable(m),
            GuestError::Denied(m) => wit::Error::Denied(m),
            GuestError::Other(m) => wit::Error::Other(m),
        }
    }
}

/// Bytes a guest's output occupies once lifted into the host: what the output-size limit
/// counts. Strings count their length, numbers eight bytes, each record a small overhead.
pub(crate) trait OutputSize {
    /// Approximate size in bytes.
    fn output_size(&self) -> usize;
}

const RECORD_OVERHEAD: usize = 16;

fn labels_size(labels: &BTreeMap<String, String>) -> usize {
    labels
        .iter()
        .map(|(k, v)| k.len() + v.len() + RECORD_OVERHEAD)
        .sum()
}

impl OutputSize for Sample {
    fn output_size(&self) -> usize {
        RECORD_OVERHEAD
            + self.name.len()
            + 8
            + self.replica.as_ref().map_or(0, String::len)
            + labels_size(&self.labels)
    }
}

impl OutputSize for Vec<Sample> {
    fn output_size(&self) -> usize {
        self.iter().map(OutputSize::output_size).sum()
    }
}

impl OutputSize for Decision {
    fn output_size(&self) -> usize {
        RECORD_OVERHEAD
            + 4
            + self.reason.as_ref().map_or(0, String::len)
            + self
                .remove_first
                .iter()
                .flatten()
                .map(|n| n.len() + RECORD_OVERHEAD)
                .sum::<usize>()
    }
}

impl OutputSize for GuestError {
    fn output_size(&self) -> usize {
        let (GuestError::InvalidConfig(m)
        | GuestError::Unavailable(m)
        | GuestError::Denied(m)
        | GuestError::Other(m)) = self;
        RECORD_OVERHEAD + m.len()
    }
}

/// Resource usage of one pod (the WIT `kubernetes-metrics.pod-usage` record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodMetrics {
    /// The pod's name.
    pub pod: String,
    /// CPU usage in millicores.
    pub cpu_millicores: u64,
    /// Memory usage in bytes.
    pub memory_bytes: u64,
    /// CPU requests in millicores, if every container sets one.
    pub cpu_request_millicores: Option<u64>,
    /// Memory requests in bytes, if every container sets one.
    pub memory_request_bytes: Option<u64>,
    /// End of the measurement window, ms since the Unix epoch.
    pub timestamp_ms: i64,
}

impl From<PodMetrics> for super::kubernetes_metrics::PodUsage {
    fn from(m: PodMetrics) -> Self {
        super::kubernetes_metrics::PodUsage {
            pod: m.pod,
            cpu_millicores: m.cpu_millicores,
            memory_bytes: m.memory_bytes,
            cpu_request_millicores: m.cpu_request_millicores,
            memory_request_bytes: m.memory_request_bytes,
            timestamp_ms: m.timestamp_ms,
        }
    }
}
