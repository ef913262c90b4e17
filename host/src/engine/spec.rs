//! An autoscaler's declarative spec: one entry of the config file. Its scaling half,
//! [`ScalingSpec`], is also the `WasmAutoscaler` resource's spec, field for field: the two
//! differ only in how they name the target.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::behavior::Behavior;
use super::error::SpecError;
use super::sources::MetricsSpec;
pub use crate::duration::HumanDuration;
use crate::policies::PolicyRef;
use crate::sandbox::{Capabilities, Limits};
pub use crate::targets::TargetSpec;

/// One autoscaler of the config file: a name, a target and how to scale it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AutoscalerSpec {
    /// Unique name.
    pub name: String,
    /// Namespace, shown to guests; empty outside Kubernetes.
    #[serde(default)]
    pub namespace: String,
    /// What to scale.
    pub target: TargetSpec,
    /// How to scale it.
    #[serde(flatten)]
    pub scaling: ScalingSpec,
}

/// How an autoscaler decides and acts: its policies, bounds, schedule and safety rules. The
/// config file's autoscaler entries and the `WasmAutoscaler` resource's spec both flatten it,
/// so a field means the same in both and its default is written once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingSpec {
    /// A component implementing the `policy` world (see the policy reference forms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyRef>,
    /// A `metric-source` component, or a list of isolated sources (with `evaluator`), instead
    /// of `policy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsSpec>,
    /// An `evaluator` component (with `metrics`), instead of `policy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluator: Option<PolicyRef>,
    /// Lower bound; 0 allows scaling to zero.
    #[serde(default = "one")]
    pub min_replicas: u32,
    /// Upper bound.
    pub max_replicas: u32,
    /// Time between runs (default 15s).
    #[serde(default = "default_interval")]
    pub interval: HumanDuration,
    /// Align runs to multiples of this period (CPA's `startTime`): with `1m`, runs start on
    /// the minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<HumanDuration>,
    /// Gather once per run (`per-resource`, default), or once per replica (`per-replica`).
    #[serde(default)]
    pub run_mode: RunMode,
    /// Concurrent gathers in per-replica mode (default 8).
    #[serde(default = "default_concurrency")]
    pub max_concurrent_gathers: u32,
    /// Hold the current count while `|desired / current - 1|` is within this (the HPA uses 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
    /// Stabilization windows and rate policies (Kubernetes `autoscaling/v2` shape).
    #[serde(default)]
    pub behavior: Behavior,
    /// What to do after repeated failures (KEDA's fallback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
    /// Stop autoscaling.
    #[serde(default)]
    pub paused: bool,
    /// While paused, hold the target at this count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_replicas: Option<u32>,
    /// Never scale in (KEDA's `paused-scale-in`): runs go on, and a lower count is held.
    #[serde(default)]
    pub paused_scale_in: bool,
    /// Never scale out (KEDA's `paused-scale-out`): runs go on, and a higher count is held.
    #[serde(default)]
    pub paused_scale_out: bool,
    /// Run the whole pipeline but never write to the target.
    #[serde(default)]
    pub dry_run: bool,
    /// User configuration passed to the guests.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    /// Sandbox limits per guest call.
    #[serde(default)]
    pub limits: Limits,
    /// Capabilities granted to the guests.
    #[serde(default)]
    pub capabilities: Capabilities,
}

fn one() -> u32 {
    1
}
fn default_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(15))
}
fn default_concurrency() -> u32 {
    8
}

/// How often `gather` runs per run.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum RunMode {
    /// Once, with every replica in the context.
    #[default]
    PerResource,
    /// Once per replica, concurrently, each seeing only its replica.
    PerReplica,
}

/// KEDA-style fallback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fallback {
    /// Consecutive failed runs before the fallback applies.
    pub failure_threshold: u32,
    /// Replicas to go to; absent: hold the current count.
    #[serde(default)]
    pub replicas: Option<u32>,
    /// How `replicas` and the current count combine (KEDA's `fallback.behavior`).
    #[serde(default)]
    pub behavior: FallbackBehavior,
}

/// KEDA's fallback behaviours: what a failing autoscaler scales to, given `replicas` and the
/// current count.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum FallbackBehavior {
    /// `replicas` (the current count when `replicas` is absent).
    #[default]
    Static,
    /// The current count: the target holds.
    CurrentReplicas,
    /// The current count if it is above `replicas`, else `replicas`: never scale in.
    CurrentReplicasIfHigher,
    /// The current count if it is below `replicas`, else `replicas`: never scale out.
    CurrentReplicasIfLower,
}

impl FallbackBehavior {
    /// As written in a spec.
    pub fn name(&self) -> &'static str {
        match self {
            FallbackBehavior::Static => "static",
            FallbackBehavior::CurrentReplicas => "currentReplicas",
            FallbackBehavior::CurrentReplicasIfHigher => "currentReplicasIfHigher",
            FallbackBehavior::CurrentReplicasIfLower => "currentReplicasIfLower",
        }
    }
}

impl Fallback {
    /// The count to fall back to from `current`, before clamping to the bounds.
    pub fn replicas_from(&self, current: u32) -> u32 {
        let Some(replicas) = self.replicas else {
            return current;
        };
        match self.behavior {
            FallbackBehavior::Static => replicas,
            FallbackBehavior::CurrentReplicas => current,
            FallbackBehavior::CurrentReplicasIfHigher => current.max(replicas),
            FallbackBehavior::CurrentReplicasIfLower => current.min(replicas),
        }
    }
}

impl AutoscalerSpec {
    /// A spec for one `policy` component file with every other field at the config file's default.
    pub fn new(
        name: impl Into<String>,
        target: TargetSpec,
        policy: impl Into<PathBuf>,
        max_replicas: u32,
    ) -> Self {
        AutoscalerSpec {
            name: name.into(),
            namespace: String::new(),
            target,
            scaling: ScalingSpec::new(PolicyRef::File(policy.into()), max_replicas),
        }
    }

    /// Checks what the types cannot: the name, bounds, policy sources. Each message names the
    /// field.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.name.is_empty() || self.name.contains(['/', '\\']) || self.name.starts_with('.') {
            return Err(SpecError::at(
                "name",
                format!(
                    "name {:?} must be non-empty and usable as a file name",
                    self.name
                ),
            ));
        }
        self.scaling.validate()
    }
}

impl ScalingSpec {
    /// Every component reference: `policy`, the metric sources, `evaluator`.
    pub fn references(&self) -> Vec<&PolicyRef> {
        let mut all: Vec<&PolicyRef> = self.policy.iter().collect();
        all.extend(self.metrics.iter().flat_map(MetricsSpec::references));
        all.extend(self.evaluator.iter());
        all
    }

    /// Every component reference, to rewrite (relative paths).
    pub fn references_mut(&mut self) -> Vec<&mut PolicyRef> {
        let mut all: Vec<&mut PolicyRef> = self.policy.iter_mut().collect();
        all.extend(
            self.metrics
                .iter_mut()
                .flat_map(MetricsSpec::references_mut),
        );
        all.extend(self.evaluator.iter_mut());
        all
    }

    /// Every capability grant: the autoscaler's, then each listed source's own.
    pub fn grants(&self) -> Vec<&Capabilities> {
        let mut all = vec![&self.capabilities];
        all.extend(
            self.metrics
                .iter()
                .flat_map(|m| m.sources())
                .filter_map(|s| s.capabilities.as_ref()),
        );
        all
    }

    /// Runs `policy` up to `max_replicas` with every other field at its default.
    pub fn new(policy: PolicyRef, max_replicas: u32) -> Self {
        ScalingSpec {
            policy: Some(policy),
            metrics: None,
            evaluator: None,
            min_replicas: one(),
            max_replicas,
            interval: default_interval(),
            start_time: None,
            run_mode: RunMode::default(),
            max_concurrent_gathers: default_concurrency(),
            tolerance: None,
            behavior: Behavior::default(),
            fallback: None,
            paused: false,
            paused_replicas: None,
            paused_scale_in: false,
            paused_scale_out: false,
            dry_run: false,
            config: BTreeMap::new(),
            limits: Limits::default(),
            capabilities: Capabilities::default(),
        }
    }

    /// Checks what the types cannot: bounds, policy sources, windows and rates. Each message
    /// names the field.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.min_replicas > self.max_replicas {
            return Err(SpecError::at(
                "minReplicas",
                format!(
                    "minReplicas ({}) is greater than maxReplicas ({})",
                    self.min_replicas, self.max_replicas
                ),
            ));
        }
        if self.interval.0.is_zero() {
            return Err(SpecError::at("interval", "interval must be above zero"));
        }
        match (&self.policy, &self.metrics, &self.evaluator) {
            (Some(_), None, None) | (None, Some(_), Some(_)) => {}
            (None, None, None) => {
                return Err(SpecError::at(
                    "policy",
                    "give policy, or metrics with evaluator",
                ));
            }
            _ => {
                return Err(SpecError::at(
                    "policy",
                    "give either policy, or metrics with evaluator, not both",
                ));
            }
        }
        if let Some(metrics) = &self.metrics {
            metrics.validate()?;
        }
        if let Some(t) = self.tolerance
            && !(0.0..1.0).contains(&t)
        {
            return Err(SpecError::at(
                "tolerance",
                format!("tolerance {t} must be at least 0 and below 1"),
            ));
        }
        if let Some(fallback) = &self.fallback {
            if fallback.failure_threshold == 0 {
                return Err(SpecError::at(
                    "fallback.failureThreshold",
                    "fallback.failureThreshold must be at least 1",
                ));
            }
            if fallback.replicas.is_none()
                && matches!(
                    fallback.behavior,
                    FallbackBehavior::CurrentReplicasIfHigher
                        | FallbackBehavior::CurrentReplicasIfLower
                )
            {
                return Err(SpecError::at(
                    "fallback.replicas",
                    format!(
                        "fallback.behavior {} compares the current count with fallback.replicas: give fallback.replicas",
                        fallback.behavior.name()
                    ),
                ));
            }
            if let Some(r) = fallback.replicas
                && (r < self.min_replicas || r > self.max_replicas)
            {
                return Err(SpecError::at(
                    "fallback.replicas",
                    format!(
                        "fallback.replicas ({r}) is outside [minReplicas, maxReplicas] = [{}, {}]",
                        self.min_replicas, self.max_replicas
                    ),
                ));
            }
        }
        if self.max_concurrent_gathers == 0 {
            return Err(SpecError::at(
                "maxConcurrentGathers",
                "maxConcurrentGathers must be at least 1",
            ));
        }
        for (name, rules) in [
            ("scaleUp", &self.behavior.scale_up),
            ("scaleDown", &self.behavior.scale_down),
        ] {
            if let Some(t) = rules.as_ref().and_then(|r| r.tolerance)
                && !(0.0..1.0).contains(&t)
            {
                return Err(SpecError::at(
                    format!("behavior.{name}.tolerance"),
                    format!("behavior.{name}.tolerance {t} must be at least 0 and below 1"),
                ));
            }
            // The HPA's cap: the history kept (and written to status) is bounded by it.
            if let Some(window) = rules.as_ref().and_then(|r| r.stabilization_window_seconds)
                && window > 3600
            {
                return Err(SpecError::at(
                    format!("behavior.{name}.stabilizationWindowSeconds"),
                    format!(
                        "behavior.{name}.stabilizationWindowSeconds {window} must be at most 3600"
                    ),
                ));
            }
            for policy in rules.iter().flat_map(|r| r.policies.iter().flatten()) {
                if !(1..=1800).contains(&policy.period_seconds) {
                    return Err(SpecError::at(
                        format!("behavior.{name}.policies"),
                        format!(
                            "behavior.{name}.policies: periodSeconds {} must be within 1..=1800",
                            policy.period_seconds
                        ),
                    ));
                }
                if policy.value == 0 {
                    return Err(SpecError::at(
                        format!("behavior.{name}.policies"),
                        format!("behavior.{name}.policies: value must be above 0"),
                    ));
                }
            }
        }
        Ok(())
    }
}
