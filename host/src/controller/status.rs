//! A `WasmAutoscaler`'s status and Events: built from each run record, written with
//! server-side apply (field manager `wasmscaler`), and the transitions that matter (a scale, a
//! failure) recorded as Kubernetes Events.
//!
//! Conditions follow the HPA's (`AbleToScale`, `ScalingActive`, `ScalingLimited`, with its
//! reasons) next to this project's own (`Ready`, `Active`, `PolicyFailed`, `Paused`). Every
//! message is bounded and redacted, so the status stays far below etcd's object size limit
//! whatever a guest says.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::crd::{Condition, LastDecision, WasmAutoscaler, WasmAutoscalerStatus};
use super::events::{EventSink, EventType};
use crate::engine::behavior::LimitReason;
use crate::engine::store::EngineState;
use crate::engine::{Outcome, RunRecord};
use crate::redact::bounded;

/// The field manager of every status write.
pub(crate) const FIELD_MANAGER: &str = "wasmscaler";

/// Longest condition message, in bytes (guest reasons are cut before this already).
const MAX_CONDITION_MESSAGE: usize = 1024;

/// Condition types a status carries: Ready, Active, ScalingLimited, PolicyFailed, Paused.
const CONDITION_TYPES: usize = 5;

/// How often the history is written when nothing else changed, without a scale-down
/// stabilization window (with one: half the window, so a restarted controller always finds
/// the last half window of recommendations and never scales down before the window ends).
const HISTORY_REFRESH: Duration = Duration::from_secs(300);

/// Fewest time between two status writes that carry no scale and no condition change.
const MIN_WRITE_GAP: Duration = Duration::from_secs(1);

/// What a status write is for: what a reader sees (replicas, conditions' states, last scale)
/// and what a restarted controller needs from the history (the extremes of the
/// recommendations the stabilization windows hold, and the rate-limit events).
#[derive(Debug, Clone, PartialEq)]
struct Visible {
    generation: Option<i64>,
    current: Option<u32>,
    desired: Option<u32>,
    asked: Option<u32>,
    last_scale_time: Option<String>,
    digests: Vec<String>,
    conditions: Vec<(String, String, String)>,
    highest: Option<u32>,
    lowest: Option<u32>,
    scale_events: usize,
}

impl Visible {
    fn of(status: &WasmAutoscalerStatus) -> Self {
        let history = status.engine_state.as_ref().map(|s| &s.history);
        let recommendations = history.map(|h| h.recommendations.iter().map(|r| r.replicas));
        Visible {
            generation: status.observed_generation,
            current: status.current_replicas,
            desired: status.desired_replicas,
            asked: status
                .last_decision
                .as_ref()
                .and_then(|d| d.target_replicas),
            last_scale_time: status.last_scale_time.clone(),
            digests: status.policy_digests.clone(),
            conditions: status
                .conditions
                .iter()
                .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
                .collect(),
            highest: recommendations.clone().and_then(Iterator::max),
            lowest: recommendations.and_then(Iterator::min),
            scale_events: history
                .map_or(0, |h| h.scale_up_events.len() + h.scale_down_events.len()),
        }
    }
}

/// The last status written, and when.
struct Written {
    visible: Visible,
    at: Instant,
}

fn rfc3339_ms(ms: i64) -> String {
    Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn now() -> String {
    Timestamp::now().to_string()
}

/// Writes one resource's status and Events.
pub(crate) struct StatusWriter {
    api: Api<WasmAutoscaler>,
    events: Arc<EventSink>,
    object: k8s_openapi::api::core::v1::ObjectReference,
    name: String,
    generation: Option<i64>,
    status: WasmAutoscalerStatus,
    written: Option<Written>,
    history_refresh: Duration,
}

impl StatusWriter {
    /// A writer for `resource`, continuing from its current status (condition transition
    /// times are kept while a condition's status does not change).
    pub fn new(
        api: Api<WasmAutoscaler>,
        events: Arc<EventSink>,
        resource: &WasmAutoscaler,
    ) -> Self {
        let window = resource
            .spec
            .scaling
            .behavior
            .scale_down
            .as_ref()
            .and_then(|r| r.stabilization_window_seconds)
            .unwrap_or(300);
        let history_refresh = match window {
            0 => HISTORY_REFRESH,
            w => Duration::from_secs(u64::from(w) / 2).max(MIN_WRITE_GAP),
        };
        let mut writer = StatusWriter {
            api,
            events,
            object: resource.object_ref(&()),
            name: resource.name_any(),
            generation: resource.meta().generation,
            status: resource.status.clone().unwrap_or_default(),
            written: None,
            history_refresh,
        };
        writer.written = writer.already_written();
        writer
    }

    /// What the resource's status already holds, as if this writer had written it at its last
    /// decision: a restarted or failed-over controller whose runs find what it would write
    /// (the history came from the previous leader) then writes nothing, and refreshes the
    /// history on the schedule the previous leader kept.
    fn already_written(&self) -> Option<Written> {
        let decided = self
            .status
            .last_decision
            .as_ref()?
            .time
            .parse::<Timestamp>()
            .ok()?;
        let age = Timestamp::now().duration_since(decided);
        let age = Duration::try_from(age).unwrap_or_default();
        Some(Written {
            visible: Visible::of(&self.status),
            at: Instant::now().checked_sub(age)?,
        })
    }

    fn get(&self, type_: &str) -> Option<&Condition> {
        self.status.conditions.iter().find(|c| c.type_ == type_)
    }

    /// Sets or updates a condition, keeping its transition time if its status is unchanged.
    /// Returns whether its status or reason changed.
    fn condition(
        &mut self,
        type_: &str,
        on: bool,
        reason: &str,
        message: impl Into<String>,
    ) -> bool {
        let status = if on { "True" } else { "False" };
        let message = bounded(&message.into(), MAX_CONDITION_MESSAGE);
        let conditions = &mut self.status.conditions;
        match conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => {
                let changed = c.status != status || c.reason != reason;
                // Assigned only when different: this runs on every run of every resource.
                if c.status != status {
                    c.last_transition_time = now();
                    c.status = status.into();
                }
                if c.reason != reason {
                    c.reason = reason.into();
                }
                if c.message != message {
                    c.message = message;
                }
                changed
            }
            None => {
                // Room for the five types exactly (a doubling Vec would hold eight).
                conditions.reserve_exact(CONDITION_TYPES.saturating_sub(conditions.len()));
                conditions.push(Condition {
                    type_: type_.into(),
                    status: status.into(),
                    reason: reason.into(),
                    message,
                    last_transition_time: now(),
                });
                true
            }
        }
    }

    /// The resource is running: policies loaded, target connected. Returns whether a reader
    /// would see a change (a new generation, new policies, a condition); the caller writes it
    /// with [`StatusWriter::write_started`] or folds it into the first run's write.
    pub fn started(&mut self, digests: &[String; 2], state: &EngineState) -> bool {
        let digests = if digests[0] == digests[1] {
            vec![digests[0].clone()]
        } else {
            digests.to_vec()
        };
        let mut changed = self.status.observed_generation != self.generation
            || self.status.policy_digests != digests;
        self.status.observed_generation = self.generation;
        self.status.policy_digests = digests;
        self.status.engine_state = Some(state.clone());
        changed |= self.condition(
            "Ready",
            true,
            "Running",
            "policies loaded, target connected",
        );
        changed |= self.condition("PolicyFailed", false, "Loaded", "");
        changed
    }

    /// Writes what [`StatusWriter::started`] changed, when no run came to carry it.
    pub(crate) async fn write_started(&mut self) {
        self.write().await;
    }

    /// The resource cannot run: `reason` names the stage (OutOfBounds, InvalidSpec,
    /// PolicyLoadFailed, TargetUnavailable). Nothing is scaled while this holds.
    pub async fn failed(&mut self, reason: &str, message: &str) {
        self.status.observed_generation = self.generation;
        let repeated = self.get("Ready").is_some_and(|c| {
            c.status == "False"
                && c.reason == reason
                && c.message == bounded(message, MAX_CONDITION_MESSAGE)
        });
        self.condition("Ready", false, reason, message);
        if reason == "PolicyLoadFailed" {
            self.condition("PolicyFailed", true, reason, message);
        }
        self.condition("Active", false, reason, "not running");
        self.condition("AbleToScale", false, reason, "not running");
        self.write().await;
        if !repeated {
            self.event(EventType::Warning, reason, "Load", message)
                .await;
        }
    }

    /// Reports runs that queued behind a slow write: each one's Events, and one status
    /// write for all (the last one's, due at once if any of them scaled).
    pub async fn runs(&mut self, records: &[Box<RunRecord>], state: &EngineState) {
        let mut scaled = false;
        for record in records {
            scaled |= self.note(record, state).await;
        }
        self.write_if_due(scaled).await;
    }

    /// Applies one run to the status held here and records its Events; returns whether it
    /// scaled.
    async fn note(&mut self, record: &RunRecord, state: &EngineState) -> bool {
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
        // The guest's reason is kept here once; conditions refer to it in short.
        self.status.last_decision = Some(LastDecision {
            time: rfc3339_ms(record.at_ms),
            target_replicas: record.decision.as_ref().map(|d| d.target_replicas),
            outcome: outcome.into(),
            reason: reason.as_deref().map(|r| bounded(r, MAX_CONDITION_MESSAGE)),
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
        let target_failed = record.error_kind.as_deref() == Some("target");
        let policy_failed = record.error_kind.as_deref().filter(|k| *k != "target");
        let mut new_failure = false;
        match (&record.error, policy_failed) {
            (Some(error), Some(kind)) => {
                new_failure |= self.condition("PolicyFailed", true, &camel(kind), error.clone());
                self.condition("Active", false, "PolicyFailed", "count held");
                self.condition("ScalingActive", false, "FailedGetMetrics", error.clone());
                self.condition(
                    "Ready",
                    true,
                    "Running",
                    "policies loaded, target connected",
                );
            }
            (Some(error), None) => {
                self.condition("PolicyFailed", false, "Succeeded", "");
                self.condition("Active", false, "TargetUnavailable", error.clone());
                new_failure |= self.condition("Ready", false, "TargetUnavailable", error.clone());
            }
            (None, _) => {
                self.condition("PolicyFailed", false, "Succeeded", "");
                self.condition(
                    "Ready",
                    true,
                    "Running",
                    "policies loaded, target connected",
                );
                if paused {
                    self.condition("Active", false, "Paused", "autoscaling is paused");
                    self.condition(
                        "ScalingActive",
                        false,
                        "ScalingDisabled",
                        "autoscaling is paused",
                    );
                } else {
                    let decided = record
                        .decision
                        .as_ref()
                        .map(|d| format!("the policy asked for {} replicas", d.target_replicas))
                        .unwrap_or_default();
                    self.condition("Active", true, "Decided", decided.clone());
                    self.condition("ScalingActive", true, "ValidMetricFound", decided);
                }
            }
        }
        self.able_to_scale(record, target_failed);
        self.scaling_limited(record);

        if let Outcome::Scaled { from, to } = record.outcome {
            let note = match &reason {
                Some(why) => format!("scaled from {from} to {to}: {why}"),
                None => format!("scaled from {from} to {to}"),
            };
            self.event(EventType::Normal, "Scaled", "Scale", &note)
                .await;
        }
        if new_failure && let Some(error) = &record.error {
            let (reason, action) = match policy_failed {
                Some(_) => ("PolicyFailed", "Evaluate"),
                None if current.is_none() => ("FailedGetScale", "GetScale"),
                None => ("FailedUpdateScale", "Scale"),
            };
            self.event(EventType::Warning, reason, action, error).await;
        }
        matches!(record.outcome, Outcome::Scaled { .. })
    }

    /// The HPA's AbleToScale: whether the target can be read and written, and whether a
    /// stabilization window holds the count back.
    fn able_to_scale(&mut self, record: &RunRecord, target_failed: bool) {
        if target_failed {
            let error = record.error.clone().unwrap_or_default();
            if record.current_replicas.is_none() {
                self.condition("AbleToScale", false, "FailedGetScale", error);
            } else {
                self.condition("AbleToScale", false, "FailedUpdateScale", error);
            }
            return;
        }
        let current = record.current_replicas.unwrap_or_default();
        let desired = if record.within_tolerance {
            Some(current)
        } else {
            record.clamped
        };
        match (desired, record.stabilized) {
            (Some(desired), Some(stabilized)) if stabilized > desired => self.condition(
                "AbleToScale",
                true,
                "ScaleDownStabilized",
                format!("recent recommendations were higher than {desired}: holding at {stabilized} within the scale-down stabilization window"),
            ),
            (Some(desired), Some(stabilized)) if stabilized < desired => self.condition(
                "AbleToScale",
                true,
                "ScaleUpStabilized",
                format!("recent recommendations were lower than {desired}: holding at {stabilized} within the scale-up stabilization window"),
            ),
            _ if matches!(record.outcome, Outcome::Scaled { .. }) => self.condition(
                "AbleToScale",
                true,
                "SucceededRescale",
                "the target was scaled",
            ),
            _ => self.condition(
                "AbleToScale",
                true,
                "ReadyForNewScale",
                "recommended size matches current size",
            ),
        };
    }

    /// The HPA's ScalingLimited: the bounds or rate policies changed the count.
    fn scaling_limited(&mut self, record: &RunRecord) {
        let limited = record
            .limited
            .filter(|(_, why)| *why != LimitReason::DesiredWithinRange);
        let clamped = record
            .decision
            .as_ref()
            .zip(record.clamped)
            .filter(|(d, c)| d.target_replicas != *c)
            .map(|(d, c)| {
                (
                    d.target_replicas > c,
                    format!("asked for {}, clamped to {c}", d.target_replicas),
                )
            });
        match (limited, clamped) {
            (Some((to, why)), _) => {
                let why = format!("{why:?}");
                self.condition("ScalingLimited", true, &why, format!("limited to {to}"))
            }
            (None, Some((above, message))) => {
                let reason = if above {
                    "TooManyReplicas"
                } else {
                    "TooFewReplicas"
                };
                self.condition("ScalingLimited", true, reason, message)
            }
            (None, None) => self.condition("ScalingLimited", false, "DesiredWithinRange", ""),
        };
    }

    /// Writes the status when a reader would see a change or the history a restart needs
    /// changed (a new highest or lowest recommendation, a scale event): at once for a scale
    /// or a condition's new state, else at most once per [`MIN_WRITE_GAP`]; and the sliding
    /// history once per refresh period. A run that changes nothing writes nothing.
    async fn write_if_due(&mut self, scaled: bool) {
        let visible = Visible::of(&self.status);
        let due = match &self.written {
            None => true,
            Some(last) => {
                let elapsed = last.at.elapsed();
                scaled
                    || last.visible.conditions != visible.conditions
                    || (last.visible != visible && elapsed >= MIN_WRITE_GAP)
                    || elapsed >= self.history_refresh
            }
        };
        if due {
            self.write().await;
        }
    }

    async fn write(&mut self) {
        self.written = Some(Written {
            visible: Visible::of(&self.status),
            at: Instant::now(),
        });
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
        if let Err(error) = self
            .events
            .publish(&self.object, type_, reason, action, note)
            .await
        {
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
