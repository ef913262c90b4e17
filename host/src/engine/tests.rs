//! The engine driven through its seams: a scripted [`Policy`] and an in-memory target, no
//! wasm. Each behaviour here is what the run pipeline does around any policy.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::behavior::{Behavior, ScalingRules};
use super::{
    Autoscaler, AutoscalerSpec, Fallback, FallbackBehavior, Outcome, Policies, Policy,
    PolicyResult, TargetSpec,
};
use crate::contract::model::{Context, Decision, ObjectJson, Replica, Sample};
use crate::sandbox::{BoxFuture, CallEnv, CallOutcome, Capabilities, SandboxError};
use crate::targets::{Observation, Target, TargetError, TargetIdentity};

/// What the scripted policy does on one evaluate.
#[derive(Debug, Clone, Copy)]
enum Step {
    Decide(u32),
    /// The host had no free instance slot.
    Busy,
    /// The guest failed (a trap, a deadline: any guest failure).
    Fail,
}

/// Answers each evaluate with the next scripted step (the last one repeats).
struct Scripted(Mutex<VecDeque<Step>>);

impl Scripted {
    fn new(script: Vec<Step>) -> Arc<Self> {
        Arc::new(Scripted(Mutex::new(script.into())))
    }

    fn next(&self) -> Step {
        let mut script = self.0.lock().expect("script");
        if script.len() > 1 {
            script.pop_front().unwrap_or(Step::Fail)
        } else {
            script.front().copied().unwrap_or(Step::Fail)
        }
    }
}

fn outcome<T>(value: T) -> PolicyResult<T> {
    Ok(CallOutcome {
        value,
        fuel_consumed: 0,
        duration: std::time::Duration::ZERO,
        logs_dropped: 0,
        log_bytes_dropped: 0,
    })
}

impl Policy for Scripted {
    fn digest(&self) -> String {
        "scripted".into()
    }
    fn check_grants(&self, _: &Capabilities) -> Result<(), SandboxError> {
        Ok(())
    }
    fn gather<'a>(
        &'a self,
        _: &'a Context,
        _: &'a CallEnv,
    ) -> BoxFuture<'a, PolicyResult<Vec<Sample>>> {
        Box::pin(async { outcome(Vec::new()) })
    }
    fn evaluate<'a>(
        &'a self,
        _: &'a Context,
        _: &'a [Sample],
        _: &'a CallEnv,
    ) -> BoxFuture<'a, PolicyResult<Decision>> {
        Box::pin(async move {
            let target_replicas = match self.next() {
                Step::Decide(n) => n,
                Step::Busy => return Err(SandboxError::Busy(1)),
                Step::Fail => return Err(SandboxError::Internal("scripted failure".into())),
            };
            outcome(Decision {
                target_replicas,
                reason: None,
                remove_first: None,
            })
        })
    }
}

/// A replica count in memory, recording every scale.
#[derive(Default)]
struct Memory {
    current: Mutex<u32>,
    scales: Mutex<Vec<u32>>,
}

impl Memory {
    fn at(n: u32) -> Arc<Self> {
        Arc::new(Memory {
            current: Mutex::new(n),
            scales: Mutex::default(),
        })
    }
    fn scales(&self) -> Vec<u32> {
        self.scales.lock().expect("scales").clone()
    }
}

impl Target for Memory {
    fn identity(&self) -> TargetIdentity {
        TargetIdentity {
            kind: "memory".into(),
            name: "m".into(),
            namespace: String::new(),
        }
    }
    fn observe(&self) -> BoxFuture<'_, Result<Observation, TargetError>> {
        Box::pin(async move {
            let current = *self.current.lock().expect("current");
            Ok(Observation {
                current,
                replicas: (0..current)
                    .map(|i| Replica {
                        name: format!("r-{i}"),
                        ready: true,
                        ..Default::default()
                    })
                    .collect(),
                object: ObjectJson::default(),
                version: None,
            })
        })
    }
    fn scale<'a>(
        &'a self,
        _: &'a Observation,
        to: u32,
        _: &'a [String],
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        Box::pin(async move {
            *self.current.lock().expect("current") = to;
            self.scales.lock().expect("scales").push(to);
            Ok(())
        })
    }
}

/// A spec named `name` with bounds 1..=`max` and every other field at its default. The
/// target section is a placeholder: the tests hand the autoscaler its target.
fn spec(name: &str, max: u32) -> AutoscalerSpec {
    let placeholder = TargetSpec::Kubernetes(crate::targets::kubernetes::KubernetesRef {
        api_version: "v1".into(),
        kind: "unused".into(),
        name: "unused".into(),
        namespace: None,
    });
    AutoscalerSpec::new(name, placeholder, "unused.wasm", max)
}

/// Bounds 1..=10, decisions apply at once (no scale-down window), no persistence.
fn autoscaler(
    policy: Arc<Scripted>,
    target: Arc<Memory>,
    fallback: Option<Fallback>,
) -> Autoscaler {
    let mut spec = spec("fake", 10);
    spec.scaling.behavior = Behavior {
        scale_up: None,
        scale_down: Some(ScalingRules {
            stabilization_window_seconds: Some(0),
            ..Default::default()
        }),
    };
    spec.scaling.fallback = fallback;
    Autoscaler::builder(spec, target, Policies::single(policy))
        .build()
        .expect("a valid spec")
}

#[tokio::test]
async fn a_decision_is_clamped_to_the_bounds_and_scales_the_target() {
    let target = Memory::at(3);
    let a = autoscaler(Scripted::new(vec![Step::Decide(50)]), target.clone(), None);
    let record = a.run_once().await;
    // Clamped to 10 first, then the HPA's default scale-up rate: the larger of +100 % and
    // +4 pods, so 3 -> 7.
    assert_eq!(record.clamped, Some(10), "{record:?}");
    assert_eq!(
        record.outcome,
        Outcome::Scaled { from: 3, to: 7 },
        "{record:?}"
    );
    assert_eq!(target.scales(), vec![7]);
}

/// At 4 replicas, `step` on every run, falling back to 2 after `threshold` failures.
fn falling_back_to_2(step: Step, threshold: u32) -> (Arc<Memory>, Autoscaler) {
    let target = Memory::at(4);
    let fallback = Fallback {
        failure_threshold: threshold,
        replicas: Some(2),
        behavior: FallbackBehavior::Static,
    };
    let a = autoscaler(Scripted::new(vec![step]), target.clone(), Some(fallback));
    (target, a)
}

#[tokio::test]
async fn a_failing_policy_holds_the_target_until_the_fallback_threshold() {
    let (target, a) = falling_back_to_2(Step::Fail, 3);
    for _ in 0..2 {
        let held = a.run_once().await;
        assert!(!held.fallback && held.error.is_some(), "{held:?}");
    }
    assert!(target.scales().is_empty(), "fail-static");
    let third = a.run_once().await;
    assert!(third.fallback, "{third:?}");
    assert_eq!(target.scales(), vec![2]);
}

#[tokio::test]
async fn each_keda_fallback_behavior_scales_to_its_count() {
    use FallbackBehavior::*;
    // (current, fallback.replicas, behavior) -> the scale made, if any.
    let cases = [
        (4, 2, Static, Some(2)),
        (4, 6, Static, Some(6)),
        (4, 2, CurrentReplicas, None),
        (4, 2, CurrentReplicasIfHigher, None),
        (4, 6, CurrentReplicasIfHigher, Some(6)),
        (4, 2, CurrentReplicasIfLower, Some(2)),
        (4, 6, CurrentReplicasIfLower, None),
    ];
    for (current, replicas, behavior, scaled) in cases {
        let target = Memory::at(current);
        let fallback = Fallback {
            failure_threshold: 1,
            replicas: Some(replicas),
            behavior,
        };
        let a = autoscaler(
            Scripted::new(vec![Step::Fail]),
            target.clone(),
            Some(fallback),
        );
        let record = a.run_once().await;
        assert!(record.fallback, "{behavior:?}: {record:?}");
        assert_eq!(
            target.scales(),
            scaled.into_iter().collect::<Vec<_>>(),
            "{current} with {behavior:?} at {replicas}"
        );
    }
}

#[test]
fn a_direction_s_tolerance_outside_0_to_1_is_refused_naming_it() {
    let mut spec = spec("t", 10);
    spec.scaling.behavior.scale_down = Some(ScalingRules {
        tolerance: Some(1.5),
        ..Default::default()
    });
    let error = spec.scaling.validate().expect_err("refused");
    assert_eq!(error.field, "behavior.scaleDown.tolerance");
}

#[test]
fn a_fallback_comparing_with_replicas_needs_replicas() {
    let mut spec = spec("f", 10);
    spec.scaling.fallback = Some(Fallback {
        failure_threshold: 1,
        replicas: None,
        behavior: FallbackBehavior::CurrentReplicasIfLower,
    });
    let error = spec.scaling.validate().expect_err("refused");
    assert_eq!(error.field, "fallback.replicas");
    assert!(
        error.to_string().contains("currentReplicasIfLower"),
        "{error}"
    );
}

#[tokio::test]
async fn a_paused_direction_holds_only_that_direction() {
    for (scale_in, scale_out) in [(true, false), (false, true)] {
        let target = Memory::at(4);
        let mut spec = spec("p", 10);
        spec.scaling.behavior = Behavior {
            scale_up: None,
            scale_down: Some(ScalingRules {
                stabilization_window_seconds: Some(0),
                ..Default::default()
            }),
        };
        spec.scaling.paused_scale_in = scale_in;
        spec.scaling.paused_scale_out = scale_out;
        let policy = Scripted::new(vec![Step::Decide(2), Step::Decide(6)]);
        let a = Autoscaler::builder(spec, target.clone(), Policies::single(policy))
            .build()
            .expect("a valid spec");
        let down = a.run_once().await;
        let up = a.run_once().await;
        let (held, acted, field) = if scale_in {
            (&down, &up, "pausedScaleIn")
        } else {
            (&up, &down, "pausedScaleOut")
        };
        assert!(
            matches!(&held.outcome, Outcome::Paused { reason } if reason.contains(field)),
            "{held:?}"
        );
        assert!(matches!(acted.outcome, Outcome::Scaled { .. }), "{acted:?}");
        let expected = if scale_in { vec![6] } else { vec![2] };
        assert_eq!(target.scales(), expected, "{field}");
    }
}

#[tokio::test]
async fn a_busy_host_never_counts_toward_the_fallback() {
    let (target, a) = falling_back_to_2(Step::Busy, 1);
    for _ in 0..3 {
        let record = a.run_once().await;
        assert_eq!(record.error_kind.as_deref(), Some("busy"), "{record:?}");
        assert!(!record.fallback);
    }
    assert!(target.scales().is_empty());
}

#[test]
fn an_invalid_spec_is_a_typed_error_naming_its_field() {
    let mut spec = spec("bad", 2);
    spec.scaling.min_replicas = 3;
    let Err(error) = Autoscaler::builder(
        spec,
        Memory::at(1),
        Policies::single(Scripted::new(vec![Step::Decide(1)])),
    )
    .build() else {
        panic!("min above max must be refused");
    };
    assert_eq!(error.reason(), "InvalidSpec");
    let super::AutoscalerError::Spec(spec_error) = &error else {
        panic!("{error:?}");
    };
    assert_eq!(spec_error.field, "minReplicas");
    assert!(error.to_string().contains("maxReplicas (2)"), "{error}");
}

/// A listed metric source: one sample of `value`, or a guest error while `failing` is set.
struct Source {
    value: f64,
    failing: std::sync::atomic::AtomicBool,
}

impl Source {
    fn new(value: f64) -> Arc<Self> {
        Arc::new(Source {
            value,
            failing: false.into(),
        })
    }
    fn fail(&self, failing: bool) {
        self.failing
            .store(failing, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Policy for Source {
    fn digest(&self) -> String {
        format!("source-{}", self.value)
    }
    fn check_grants(&self, _: &Capabilities) -> Result<(), SandboxError> {
        Ok(())
    }
    fn gather<'a>(
        &'a self,
        ctx: &'a Context,
        _: &'a CallEnv,
    ) -> BoxFuture<'a, PolicyResult<Vec<Sample>>> {
        Box::pin(async move {
            if self.failing.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(SandboxError::Guest(
                    crate::contract::model::GuestError::Unavailable("server down".into()),
                ));
            }
            outcome(vec![Sample {
                name: ctx.config.get("metric").cloned().unwrap_or_default(),
                value: self.value,
                replica: None,
                labels: Default::default(),
            }])
        })
    }
    fn evaluate<'a>(
        &'a self,
        _: &'a Context,
        _: &'a [Sample],
        _: &'a CallEnv,
    ) -> BoxFuture<'a, PolicyResult<Decision>> {
        Box::pin(async { Err(SandboxError::Internal("not an evaluator".into())) })
    }
}

/// Decides the sum of the samples' values and remembers what it was shown.
#[derive(Default)]
struct Summing {
    seen: Mutex<Vec<(Vec<Sample>, Vec<crate::contract::model::SourceStatus>)>>,
}

impl Policy for Summing {
    fn digest(&self) -> String {
        "summing".into()
    }
    fn check_grants(&self, _: &Capabilities) -> Result<(), SandboxError> {
        Ok(())
    }
    fn gather<'a>(
        &'a self,
        _: &'a Context,
        _: &'a CallEnv,
    ) -> BoxFuture<'a, PolicyResult<Vec<Sample>>> {
        Box::pin(async { outcome(Vec::new()) })
    }
    fn evaluate<'a>(
        &'a self,
        ctx: &'a Context,
        samples: &'a [Sample],
        _: &'a CallEnv,
    ) -> BoxFuture<'a, PolicyResult<Decision>> {
        Box::pin(async move {
            self.seen
                .lock()
                .expect("seen")
                .push((samples.to_vec(), ctx.sources.clone()));
            outcome(Decision {
                target_replicas: samples.iter().map(|s| s.value).sum::<f64>() as u32,
                reason: None,
                remove_first: None,
            })
        })
    }
}

fn listed(name: &str, on_failure: super::OnFailure, metric: &str) -> super::MetricSource {
    super::MetricSource {
        name: name.into(),
        component: crate::policies::PolicyRef::File("s.wasm".into()),
        config: [("metric".to_owned(), metric.to_owned())].into(),
        capabilities: None,
        on_failure,
        hold_for: None,
    }
}

#[tokio::test]
async fn listed_sources_gather_apart_and_an_ignored_failure_leaves_the_rest_flowing() {
    use crate::contract::model::{FailureHandling, GuestError};
    let (a, b) = (Source::new(2.0), Source::new(3.0));
    let evaluator = Arc::new(Summing::default());
    let mut spec = spec("sources", 10);
    spec.scaling.behavior.scale_down = Some(ScalingRules {
        stabilization_window_seconds: Some(0),
        ..Default::default()
    });
    spec.scaling.policy = None;
    spec.scaling.metrics = Some(super::MetricsSpec::Sources(vec![
        listed("rps", super::OnFailure::Ignore, "requests"),
        listed("queue", super::OnFailure::Fail, "backlog"),
    ]));
    spec.scaling.evaluator = Some(crate::policies::PolicyRef::File("e.wasm".into()));
    let policies = Policies::listed(vec![a.clone(), b.clone()], evaluator.clone()).expect("two");
    let target = Memory::at(1);
    let autoscaler = Autoscaler::builder(spec, target.clone(), policies)
        .build()
        .expect("valid");

    let record = autoscaler.run_once().await;
    assert_eq!(
        record.decision.as_ref().map(|d| d.target_replicas),
        Some(5),
        "{record:?}"
    );
    a.fail(true);
    let record = autoscaler.run_once().await;
    assert_eq!(
        record.decision.as_ref().map(|d| d.target_replicas),
        Some(3),
        "{record:?}"
    );
    assert_eq!(record.sources[0].handling, Some(FailureHandling::Ignored));

    let seen = evaluator.seen.lock().expect("seen").clone();
    let (samples, statuses) = &seen[0];
    let tagged: Vec<_> = samples
        .iter()
        .map(|s| (s.name.as_str(), s.labels["source"].as_str()))
        .collect();
    assert_eq!(
        tagged,
        [("requests", "rps"), ("backlog", "queue")],
        "each source's own config"
    );
    assert!(statuses.iter().all(|s| s.failure.is_none()));
    let (samples, statuses) = &seen[1];
    assert_eq!(samples.len(), 1);
    assert_eq!(
        statuses[0].failure,
        Some(GuestError::Unavailable("server down".into()))
    );
    assert_eq!(statuses[0].consecutive_failures, 1);
    assert_eq!(statuses[1].samples, 1);

    // The source set to fail fails the run: the target holds and the error names it.
    b.fail(true);
    a.fail(false);
    let record = autoscaler.run_once().await;
    assert!(matches!(record.outcome, Outcome::Held { .. }), "{record:?}");
    let error = record.error.unwrap_or_default();
    assert!(
        error.contains("source queue") && error.contains("server down"),
        "{error}"
    );
    assert_eq!(target.scales(), vec![5, 3]);
}

#[tokio::test]
async fn policies_that_do_not_match_the_listed_sources_are_refused() {
    let mut spec = spec("sources", 10);
    spec.scaling.policy = None;
    spec.scaling.metrics = Some(super::MetricsSpec::Sources(vec![
        listed("a", super::OnFailure::Fail, "m"),
        listed("b", super::OnFailure::Fail, "m"),
    ]));
    spec.scaling.evaluator = Some(crate::policies::PolicyRef::File("e.wasm".into()));
    let policies =
        Policies::listed(vec![Source::new(1.0)], Arc::new(Summing::default())).expect("one");
    let err = Autoscaler::builder(spec, Memory::at(1), policies)
        .build()
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("lists 2 metric sources but 1"),
        "{err}"
    );
}
