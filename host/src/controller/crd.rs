//! The `WasmAutoscaler` custom resource (`wasmscaler.dev/v1alpha1`, short name `wsa`): its
//! types, from which the CRD is generated, and their translation to an engine spec.

// The printer columns repeat `type_ = ...` arguments, which clippy takes for duplicated
// attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use kube::{CustomResource, CustomResourceExt, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::engine::behavior::Behavior;
use crate::engine::store::EngineState;
use crate::engine::{AutoscalerSpec, Fallback, HumanDuration, RunMode, SpecError, TargetSpec};
use crate::policies::PolicyRef;
use crate::sandbox::{Capabilities, Limits};
use crate::targets::kubernetes::KubernetesRef;

/// Autoscales one workload in the resource's namespace with policies compiled to WebAssembly.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "wasmscaler.dev",
    version = "v1alpha1",
    kind = "WasmAutoscaler",
    namespaced,
    shortname = "wsa",
    category = "autoscaling",
    status = "WasmAutoscalerStatus",
    printcolumn(
        name = "Target",
        type_ = "string",
        json_path = ".spec.scaleTargetRef.name"
    ),
    printcolumn(name = "Min", type_ = "integer", json_path = ".spec.minReplicas"),
    printcolumn(name = "Max", type_ = "integer", json_path = ".spec.maxReplicas"),
    printcolumn(
        name = "Current",
        type_ = "integer",
        json_path = ".status.currentReplicas"
    ),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".status.desiredReplicas"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct WasmAutoscalerSpec {
    /// The workload to scale: any resource with a `/scale` subresource, in this namespace.
    pub scale_target_ref: ScaleTargetRef,
    /// A component implementing the `policy` world (see `PolicyRef` for the forms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyRef>,
    /// A `metric-source` component (with `evaluator`), instead of `policy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<PolicyRef>,
    /// An `evaluator` component (with `metrics`), instead of `policy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluator: Option<PolicyRef>,
    /// Lower bound; 0 allows scaling to zero.
    #[serde(default = "one")]
    pub min_replicas: u32,
    /// Upper bound.
    pub max_replicas: u32,
    /// Time between runs (default 15s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<HumanDuration>,
    /// Align runs to multiples of this period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<HumanDuration>,
    /// `per-resource` (default) or `per-replica`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_mode: Option<RunMode>,
    /// Concurrent gathers in per-replica mode (default 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_gathers: Option<u32>,
    /// Hold the current count while `|desired / current - 1|` is within this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
    /// Stabilization windows and rate policies (`autoscaling/v2` shape).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<Behavior>,
    /// What to do after repeated failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
    /// Stop autoscaling.
    #[serde(default)]
    pub paused: bool,
    /// While paused, hold the target at this count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_replicas: Option<u32>,
    /// Run the whole pipeline but never write to the target.
    #[serde(default)]
    pub dry_run: bool,
    /// User configuration passed to the guests.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    /// Sandbox limits per guest call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// Capabilities granted to the guests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
}

fn one() -> u32 {
    1
}

/// The scaled workload. No namespace: a `WasmAutoscaler` scales only in its own namespace,
/// so write access to autoscalers in one namespace grants nothing in another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTargetRef {
    /// e.g. `apps/v1`.
    pub api_version: String,
    /// e.g. `Deployment`.
    pub kind: String,
    /// The workload's name.
    pub name: String,
}

/// What the controller reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WasmAutoscalerStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Replicas observed at the last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_replicas: Option<u32>,
    /// Replicas the last run settled on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<u32>,
    /// When the target was last scaled (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<String>,
    /// The last run's decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_decision: Option<LastDecision>,
    /// sha256 of the components running (metric source, evaluator).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_digests: Vec<String>,
    /// Stabilization and rate-limit history and failure count: what a restarted or
    /// failed-over controller resumes from, so it never scales down early.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_state: Option<EngineState>,
    /// Ready, Active, ScalingLimited, PolicyFailed, Paused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The last run, in short.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastDecision {
    /// When the run started (RFC 3339).
    pub time: String,
    /// What the guest asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_replicas: Option<u32>,
    /// How the run ended: scaled, would-scale, unchanged, held, paused.
    pub outcome: String,
    /// Why, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Fuel the guests used.
    pub fuel: u64,
    /// Duration of the run in microseconds.
    pub duration_micros: u64,
}

/// A condition in the Kubernetes convention.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Ready, Active, ScalingLimited, PolicyFailed or Paused.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// One CamelCase word.
    pub reason: String,
    /// Details for humans.
    #[serde(default)]
    pub message: String,
    /// When the status last changed (RFC 3339).
    pub last_transition_time: String,
}

impl WasmAutoscaler {
    /// `namespace/name`: the engine's key for this resource.
    pub fn key(&self) -> String {
        format!(
            "{}/{}",
            self.namespace().unwrap_or_default(),
            self.name_any()
        )
    }

    /// The engine spec this resource asks for; unset fields take the config file's defaults.
    pub fn autoscaler_spec(&self) -> Result<AutoscalerSpec, SpecError> {
        let spec = &self.spec;
        let namespace = self.namespace().ok_or_else(|| {
            SpecError::at("metadata.namespace", "a WasmAutoscaler must be namespaced")
        })?;
        let target = TargetSpec::Kubernetes(KubernetesRef {
            api_version: spec.scale_target_ref.api_version.clone(),
            kind: spec.scale_target_ref.kind.clone(),
            name: spec.scale_target_ref.name.clone(),
            namespace: Some(namespace.clone()),
        });
        let mut engine = AutoscalerSpec::new(self.name_any(), target, "", spec.max_replicas);
        engine.namespace = namespace;
        engine.policy = spec.policy.clone();
        engine.metrics = spec.metrics.clone();
        engine.evaluator = spec.evaluator.clone();
        engine.min_replicas = spec.min_replicas;
        if let Some(interval) = spec.interval {
            engine.interval = interval;
        }
        engine.start_time = spec.start_time;
        if let Some(mode) = spec.run_mode {
            engine.run_mode = mode;
        }
        if let Some(n) = spec.max_concurrent_gathers {
            engine.max_concurrent_gathers = n as usize;
        }
        engine.tolerance = spec.tolerance;
        engine.behavior = spec.behavior.clone().unwrap_or_default();
        engine.fallback = spec.fallback.clone();
        engine.paused = spec.paused;
        engine.paused_replicas = spec.paused_replicas;
        engine.dry_run = spec.dry_run;
        engine.config = spec.config.clone();
        engine.limits = spec.limits.clone().unwrap_or_default();
        engine.capabilities = spec.capabilities.clone().unwrap_or_default();
        engine.validate()?;
        Ok(engine)
    }
}

/// The formats the API server knows for an OpenAPI v3 schema in a CRD; any other (schemars
/// writes `uint32`, `uint64`, `double`...) makes every apply warn "unknown format".
const KNOWN_FORMATS: [&str; 7] = [
    "int32",
    "int64",
    "float",
    "double",
    "byte",
    "date",
    "date-time",
];

/// Drops `format`s the API server does not know. Unsigned integers keep their `minimum: 0`,
/// which says the same in a form it checks.
fn strip_unknown_formats(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            if map
                .get("format")
                .and_then(|f| f.as_str())
                .is_some_and(|f| !KNOWN_FORMATS.contains(&f))
            {
                map.remove("format");
            }
            map.values_mut().for_each(strip_unknown_formats);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_unknown_formats),
        _ => {}
    }
}

/// The CRD, generated from the types above, with a schema the API server accepts without
/// warnings.
pub fn crd() -> Result<
    k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    serde_json::Error,
> {
    let mut value = serde_json::to_value(WasmAutoscaler::crd())?;
    strip_unknown_formats(&mut value);
    serde_json::from_value(value)
}

/// The CRD as YAML (`wasmscaler crd`).
pub fn crd_yaml() -> anyhow::Result<String> {
    Ok(serde_yaml::to_string(&crd()?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_has_only_formats_the_api_server_knows() {
        let yaml = crd_yaml().unwrap();
        for line in yaml
            .lines()
            .filter(|l| l.trim_start().starts_with("format:"))
        {
            let format = line.trim_start().trim_start_matches("format:").trim();
            assert!(KNOWN_FORMATS.contains(&format), "{line}");
        }
        assert!(
            yaml.contains("maximum: 3600"),
            "the stabilization window is capped"
        );
    }
}
