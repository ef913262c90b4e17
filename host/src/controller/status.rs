//! A `WasmAutoscaler`'s status and Events: built from each run record, written with
//! server-side apply (field manager `wasmscaler`), and the transitions that matter (a scale, a
//! policy failure) recorded as Kubernetes Events.

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::crd::{Condition, LastDecision, WasmAutoscaler, WasmAutoscalerStatus};
use crate::engine::behavior::LimitReason;
use crate::engine::store::EngineState;
use crate::engine::{Outcome, RunRecord};

/// The field manager of every status write.
pub const FIELD_MANAGER: &str = "wasmscaler";

fn rfc3339_ms(ms: i64) -> String {
    Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn now() -> String {
    Timestamp::now().to_string()
}

/// Writes one resource's status and Events.
pub struct StatusWriter {
    api: Api<WasmAutoscaler>,
    recorder: Arc<Recorder>,
    object: k8s_openapi::api::core::v1::ObjectReference,
    name: String,
    generation: Option<i64>,
    status: WasmAutoscalerStatus,
}

impl StatusWriter {
    /// A writer for `resource`, continuing from its current status (condition transition
    /// times are kept while a condition's status does not change).
    pub fn new(
        api: Api<WasmAutoscaler>,
        recorder: Arc<Recorder>,
        resource: &WasmAutoscaler,
    ) -> Self {
        StatusWriter {
            api,
            recorder,
            object: resource.object_ref(&()),
            name: resource.name_any(),
            generation: resource.meta().generation,
            status: resource.status.clone().unwrap_or_default(),
        }
    }

    /// Sets or updates a condition, keeping its transition time if its status is unchanged.
    fn condition(&mut self, type_: &str, on: bool, reason: &str, message: impl Into<String>) {
        let status = if on { "True" } else { "False" };
        let message = message.into();
        let conditions = &mut self.status.conditions;
        match conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = now();
                }
                c.status = status.into();
                c.reason = reason.into();
                c.message = message;
            }
            None => conditions.push(Condition {
                type_: type_.into(),
                status: status.into(),
                reason: reason.into(),
                message,
                last_transition_time: now(),
            }),
        }
    }

    /// The resource is running: policies loaded, target connected.
    pub async fn started(&mut self, digests: &[String; 2], state: &EngineState) {
        self.status.observed_generation = self.generation;
        self.status.policy_digests = if digests[0] == digests[1] {
            vec![digests[0].clone()]
        } else {
            digests.to_vec()
        };
        self.status.engine_state = Some(state.clone());
        self.condition(
            "Ready",
            true,
            "Running",
            "policies loaded, target connected",
        );
        self.condition("PolicyFailed", false, "Loaded", "");
        self.write().await;
    }

    /// The resource cannot run: `reason` names the stage (InvalidSpec, PolicyLoadFailed,
    /// TargetUnavailable). Nothing is scaled while this holds.
    pub async fn failed(&mut self, reason: &str, message: &str) {
        self.status.observed_generation = self.generation;
        self.condition("Ready", false, reason, message);
        if reason == "PolicyLoadFailed" {
            self.condition("PolicyFailed", true, reason, message);
        }
        self.condition("Active", false, reason, "not running");
        self.write().await;
        self.event(EventType::Warning, reason, "Load", message)
            .await;
    }

    /// Reports one run: status, and an Event for a scale or a policy failure.
    pub async fn run(&mut self, record: &RunRecord, state: &EngineState) {
        let current = record.current_replicas;
        let desired = match &record.outcome {
            Outcome::Scaled { to, .. } | Outcome::WouldScale { to, .. } => Some(*to),
            _ => current,
        };
        let (outcome, reason) = match &record.outcome {
            Outcome::Scaled { .. } => (
                "scaled",
                record.decision.as_ref().and_then(|d| d.reason.clone()),
            ),
            Outcome::WouldScale { .. } => ("would-scale", None),
            Outcome::Unchanged => (
                "unchanged",
                record.decision.as_ref().and_then(|d| d.reason.clone()),
            ),
            Outcome::Held { reason } => ("held", Some(reason.clone())),
            Outcome::Paused { reason } => ("paused", Some(reason.clone())),
        };
        self.status.observed_generation = self.generation;
        self.status.current_replicas = current;
        self.status.desired_replicas = desired;
        self.status.last_scale_time = state.last_scale_ms.map(rfc3339_ms);
        self.status.last_decision = Some(LastDecision {
            time: rfc3339_ms(record.at_ms),
            target_replicas: record.decision.as_ref().map(|d| d.target_replicas),
            outcome: outcome.into(),
            reason: reason.clone(),
            fuel: record.fuel,
            duration_micros: record.duration_micros,
        });
        self.status.engine_state = Some(state.clone());

        let paused = matches!(record.outcome, Outcome::Paused { .. });
        self.condition(
            "Paused",
            paused,
            if paused { "Paused" } else { "Running" },
            "",
        );
        let policy_failed = record.error_kind.as_deref().filter(|k| *k != "target");
        match (&record.error, policy_failed) {
            (Some(error), Some(kind)) => {
                self.condition("PolicyFailed", true, &camel(kind), error.clone());
                self.condition("Active", false, "PolicyFailed", "count held");
            }
            (Some(error), None) => {
                self.condition("PolicyFailed", false, "Succeeded", "");
                self.condition("Active", false, "TargetUnavailable", error.clone());
            }
            (None, _) => {
                self.condition("PolicyFailed", false, "Succeeded", "");
                if paused {
                    self.condition("Active", false, "Paused", "autoscaling is paused");
                } else {
                    self.condition(
                        "Active",
                        true,
                        "Decided",
                        reason.clone().unwrap_or_default(),
                    );
                }
            }
        }
        let limited = record
            .limited
            .filter(|(_, why)| *why != LimitReason::DesiredWithinRange);
        let clamped = record
            .decision
            .as_ref()
            .zip(record.clamped)
            .filter(|(d, c)| d.target_replicas != *c)
            .map(|(d, c)| format!("asked for {}, clamped to {c}", d.target_replicas));
        match (limited, clamped) {
            (Some((to, why)), _) => {
                let why = format!("{why:?}");
                self.condition("ScalingLimited", true, &why, format!("limited to {to}"))
            }
            (None, Some(message)) => {
                let reason = if record
                    .decision
                    .as_ref()
                    .zip(record.clamped)
                    .is_some_and(|(d, c)| d.target_replicas > c)
                {
                    "TooManyReplicas"
                } else {
                    "TooFewReplicas"
                };
                self.condition("ScalingLimited", true, reason, message)
            }
            (None, None) => self.condition("ScalingLimited", false, "DesiredWithinRange", ""),
        }
        self.write().await;

        if let Outcome::Scaled { from, to } = record.outcome {
            let note = match &reason {
                Some(why) => format!("scaled from {from} to {to}: {why}"),
                None => format!("scaled from {from} to {to}"),
            };
            self.event(EventType::Normal, "Scaled", "Scale", &note)
                .await;
        }
        if let (Some(error), Some(_)) = (&record.error, policy_failed) {
            self.event(EventType::Warning, "PolicyFailed", "Evaluate", error)
                .await;
        }
    }

    async fn write(&self) {
        let patch = json!({
            "apiVersion": "wasmscaler.dev/v1alpha1",
            "kind": "WasmAutoscaler",
            "status": self.status,
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        if let Err(error) = self
            .api
            .patch_status(&self.name, &params, &Patch::Apply(&patch))
            .await
        {
            // The next run writes again, with the whole state: nothing is lost but time.
            tracing::warn!(autoscaler = %self.name, %error, "cannot write status");
        }
    }

    async fn event(&self, type_: EventType, reason: &str, action: &str, note: &str) {
        let event = Event {
            type_,
            reason: reason.into(),
            // The Events API caps a note at 1 kB.
            note: Some(note.chars().take(1000).collect()),
            action: action.into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &self.object).await {
            tracing::warn!(autoscaler = %self.name, %error, "cannot record event");
        }
    }
}

/// `fuel-exhausted` → `FuelExhausted`.
fn camel(kind: &str) -> String {
    kind.split(['-', '_'])
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}
