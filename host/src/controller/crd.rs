//! The `WasmAutoscaler` custom resource (`wasmscaler.dev/v1alpha1`, short name `wsa`): its
//! types, from which the CRD is generated, and their translation to an engine spec.

// The printer columns repeat `type_ = ...` arguments, which clippy takes for duplicated
// attributes.
#![allow(clippy::duplicated_attributes)]

use kube::{CustomResource, CustomResourceExt, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::engine::store::EngineState;
use crate::engine::{AutoscalerSpec, ScalingSpec, SpecError, TargetSpec};
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
    /// How to scale it: the same fields, defaults and meaning as an autoscaler of the
    /// config file.
    #[serde(flatten)]
    pub scaling: ScalingSpec,
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
        let engine = AutoscalerSpec {
            name: self.name_any(),
            namespace,
            target,
            scaling: spec.scaling.clone(),
        };
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

/// Drops `format`s the API server does not know (unsigned integers keep their `minimum: 0`,
/// which says the same in a form it checks), and whole-object defaults: the API server would
/// write those into every stored resource, freezing today's defaults of `limits`,
/// `capabilities` and `behavior` into it, where an absent field means the host's default.
fn strip_for_api_server(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            if map
                .get("format")
                .and_then(|f| f.as_str())
                .is_some_and(|f| !KNOWN_FORMATS.contains(&f))
            {
                map.remove("format");
            }
            // Only in a schema node (a property literally named `default` has neither).
            let schema_node = map.contains_key("type") || map.contains_key("description");
            if schema_node && map.get("default").is_some_and(|d| d.is_object()) {
                map.remove("default");
            }
            map.values_mut().for_each(strip_for_api_server);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_for_api_server),
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
    strip_for_api_server(&mut value);
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
