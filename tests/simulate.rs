//! `wasmscaler simulate` through the library: the real `cpu-target` guest replayed against
//! the simulated system, with outcomes computed by hand.

use std::sync::Arc;
use std::time::Duration;

use wasmscaler::contract::model::{Context, Decision, Sample};
use wasmscaler::duration::HumanDuration;
use wasmscaler::engine::behavior::{
    Behavior, LimitReason, PolicyType, ScalingPolicy, ScalingRules, SelectPolicy,
};
use wasmscaler::engine::{AutoscalerSpec, Guests, Policies, Policy, PolicyResult};
use wasmscaler::sandbox::{BoxFuture, CallEnv, CallOutcome, Capabilities, HttpGrant, SandboxError};
use wasmscaler::simulate::{self, Columns, Overflow, PolicyReport, SystemModel, Trace};
use wasmscaler_tests::{build_rust_guest, cpu_spec, test_sandbox};

fn spec(interval_secs: u64, max: u32) -> AutoscalerSpec {
    cpu_spec(
        "cpu",
        "cpu_target.wasm",
        max,
        Duration::from_secs(interval_secs),
    )
}

async fn guests() -> anyhow::Result<Guests> {
    let wasm = build_rust_guest("guests/cpu-target")?;
    let component = test_sandbox()?.load_file(&wasm).await?.component;
    Ok(Guests::pair(component.clone(), component))
}

fn step_model(startup_secs: u64) -> SystemModel {
    SystemModel {
        capacity: 10.0,
        startup: HumanDuration(Duration::from_secs(startup_secs)),
        overflow: Overflow::Drop,
        ..SystemModel::default()
    }
}

async fn replay(
    spec: &AutoscalerSpec,
    trace: &str,
    model: &SystemModel,
) -> anyhow::Result<PolicyReport> {
    let trace = Trace::parse(trace, "trace.csv", &Columns::default())?;
    let mut fractions = Vec::new();
    let report = simulate::simulate(spec, guests().await?, &trace, model, &mut |f| {
        fractions.push(f)
    })
    .await?;
    assert_eq!(fractions.last(), Some(&1.0), "progress ends at 1");
    assert!(
        fractions.windows(2).all(|w| w[0] <= w[1]),
        "progress only grows"
    );
    Ok(report)
}

/// Load 4/s (one replica at 40 %) until t = 60 s, then 20/s: the one ready replica serves 10,
/// so from 60 s demand exceeds ready capacity. A run at t reads the step before t: at 60 s
/// it still sees 40 %; at 75 s it sees 100 % of the request against the 50 % target and asks
/// for 2. The second replica is ready at 75 s + startup, when capacity reaches demand.
/// Under-provisioned: 60 s → 75 s + startup.
#[tokio::test]
async fn a_step_load_is_under_provisioned_for_exactly_the_hand_computed_minutes()
-> anyhow::Result<()> {
    let trace = "time,load\n0,4\n60,20\n300,20\n";
    for (startup, minutes) in [(30, 0.75), (60, 1.25)] {
        let report = replay(&spec(15, 20), trace, &step_model(startup)).await?;
        assert_eq!(
            report.under_provisioned_minutes, minutes,
            "startup {startup}s: {report:?}"
        );
        // Runs at 0, 15, ..., 285 s.
        assert_eq!(report.decisions, 20);
        assert_eq!(report.failed_runs, 0);
        // Demand above ready capacity was dropped: 10 units/s for every second short.
        assert_eq!(report.dropped_units, minutes * 60.0 * 10.0);
        assert_eq!(report.peak_backlog, 0.0);
        assert!(report.scale_events >= 1);
        assert_eq!(report.series.len(), 20);
    }
    Ok(())
}

/// At the limit of one replica nothing scales: a flat load at 40 % holds one replica, costs
/// one replica-hour per hour, and is never under-provisioned.
#[tokio::test]
async fn a_load_within_target_holds_and_costs_exactly_its_replicas() -> anyhow::Result<()> {
    let trace = "time,load\n0,4\n3600,4\n";
    let report = replay(&spec(15, 20), trace, &step_model(30)).await?;
    assert_eq!(report.scale_events, 0);
    assert_eq!(report.under_provisioned_minutes, 0.0);
    assert_eq!(report.slo_violation_minutes, 0.0);
    assert!((report.replica_hours - 1.0).abs() < 1e-9, "{report:?}");
    assert_eq!(report.over_provisioned_replica_hours, 0.0);
    assert_eq!(report.decisions, 240);
    Ok(())
}

/// Queued overflow is served later: the backlog peaks while capacity is short and is
/// counted as SLO violation until it drains.
#[tokio::test]
async fn queued_overflow_builds_a_backlog_that_later_capacity_drains() -> anyhow::Result<()> {
    let trace = "time,load\n0,4\n60,20\n600,20\n";
    let model = SystemModel {
        overflow: Overflow::Queue,
        ..step_model(30)
    };
    let report = replay(&spec(15, 20), trace, &model).await?;
    // Short by 10 units/s for 45 s.
    assert_eq!(report.peak_backlog, 450.0);
    assert_eq!(report.dropped_units, 0.0);
    assert!(report.slo_violation_minutes > report.under_provisioned_minutes);
    Ok(())
}

/// Noise is drawn from the seed: the same seed gives the same report, another seed may not.
#[tokio::test]
async fn the_same_seed_gives_the_same_report() -> anyhow::Result<()> {
    let trace = "time,load\n0,4\n300,35\n900,12\n1500,30\n1800,30\n";
    let model = |seed| SystemModel {
        noise: 0.2,
        seed,
        ..step_model(45)
    };
    let strip = |mut r: PolicyReport| {
        r.wall_seconds = 0.0;
        r.decisions_per_second = 0.0;
        r
    };
    let a = strip(replay(&spec(15, 20), trace, &model(7)).await?);
    let b = strip(replay(&spec(15, 20), trace, &model(7)).await?);
    assert_eq!(a, b);
    let mut others = Vec::new();
    for seed in [8, 9, 10, 11] {
        others.push(strip(replay(&spec(15, 20), trace, &model(seed)).await?));
    }
    assert!(
        others.iter().any(|o| o.series != a.series),
        "noise must depend on the seed"
    );
    Ok(())
}

/// The engine's clamp holds in simulation: maxReplicas bounds the count however far the
/// load goes.
#[tokio::test]
async fn max_replicas_bounds_the_simulated_count() -> anyhow::Result<()> {
    let trace = "time,load\n0,4\n60,500\n900,500\n";
    let report = replay(&spec(15, 5), trace, &step_model(30)).await?;
    assert!(report.series.iter().all(|p| p.desired <= 5));
    assert!(report.series.iter().any(|p| p.desired == 5));
    Ok(())
}

/// A load that repeats every 10 minutes (5 minutes at 10/s, then 5 at 60/s): once it has seen
/// a season, the predictive guest raises the count before the rise and is short for less
/// time than the HPA formula alone, which only reacts.
#[tokio::test]
async fn the_predictive_guest_scales_ahead_of_a_repeating_rise() -> anyhow::Result<()> {
    let mut trace = String::from("time,load\n");
    for period in 0..12 {
        trace.push_str(&format!("{},10\n{},60\n", period * 600, period * 600 + 300));
    }
    trace.push_str("7200,10\n");
    let model = SystemModel {
        startup: HumanDuration(Duration::from_secs(90)),
        ..SystemModel::default()
    };
    let hpa = replay(&spec(15, 20), &trace, &model).await?;

    let wasm = build_rust_guest("guests/predictive")?;
    let component = test_sandbox()?.load_file(&wasm).await?.component;
    let mut predictive = spec(15, 20);
    predictive.scaling.config.extend(
        [
            ("lookahead", "180"),
            ("seasonLength", "600"),
            ("seasonBuckets", "20"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    predictive.scaling.capabilities.state = Some(Default::default());
    let trace = Trace::parse(&trace, "trace.csv", &Columns::default())?;
    let guests = Guests::pair(component.clone(), component);
    let ahead = simulate::simulate(&predictive, guests, &trace, &model, &mut |_| {}).await?;
    assert_eq!(ahead.failed_runs, 0, "{ahead:?}");
    assert!(
        ahead.under_provisioned_minutes < 0.5 * hpa.under_provisioned_minutes,
        "predictive {} min short, the HPA formula {} min",
        ahead.under_provisioned_minutes,
        hpa.under_provisioned_minutes
    );
    Ok(())
}

/// The `capacity` guest (SimpleScaleVM's logic) runs unmodified: its `http` GETs to each
/// replica's status endpoint are answered by the model with the replica's free slots. At a
/// steady 24 units/s with 10 slots per replica and 5 to keep free, it settles at 3 replicas
/// (6 free; 2 would leave none).
#[tokio::test]
async fn the_capacity_guest_reads_replica_status_from_the_model() -> anyhow::Result<()> {
    let wasm = build_rust_guest("guests/capacity")?;
    let component = test_sandbox()?.load_file(&wasm).await?.component;
    let mut capacity = spec(15, 10);
    capacity.scaling.config = [
        ("replicaCapacity", "10"),
        ("minAvailableResources", "5"),
        ("apiPath", "/status"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .into_iter()
    .collect();
    capacity.scaling.capabilities = Capabilities {
        http: Some(HttpGrant::allow(["http://{replica}/status"])),
        ..Default::default()
    };
    let trace = Trace::parse(
        "time,load\n0,24\n1800,24\n",
        "trace.csv",
        &Columns::default(),
    )?;
    let guests = Guests::pair(component.clone(), component);
    let report =
        simulate::simulate(&capacity, guests, &trace, &step_model(30), &mut |_| {}).await?;
    assert_eq!(report.failed_runs, 0, "{report:?}");
    let last = report.series.last().map(|p| p.desired);
    assert_eq!(
        last,
        Some(3),
        "{:?}",
        report.series.iter().map(|p| p.desired).collect::<Vec<_>>()
    );
    Ok(())
}

/// A trace spanning decades at one-second steps would run for days: it is refused at once,
/// naming the cap, before any guest runs.
#[tokio::test]
async fn a_trace_longer_than_the_step_cap_is_refused_naming_it() -> anyhow::Result<()> {
    let trace = Trace::parse(
        "time,load\n0,4\n1000000000,4\n",
        "trace.csv",
        &Columns::default(),
    )?;
    let outcome = simulate::simulate(
        &spec(15, 20),
        guests().await?,
        &trace,
        &step_model(30),
        &mut |_| {},
    )
    .await;
    match outcome {
        Err(error @ simulate::SimulateError::TooLong { .. }) => {
            let text = error.to_string();
            assert!(text.contains(&simulate::MAX_STEPS.to_string()), "{text}");
            assert!(text.contains("--step"), "{text}");
        }
        other => panic!("expected TooLong, got {other:?}"),
    }
    Ok(())
}

/// A policy deciding one fixed count, with no wasm: what the engine does around it is what
/// the simulation shows.
struct Decides(u32);

fn no_cost<T>(value: T) -> PolicyResult<T> {
    Ok(CallOutcome {
        value,
        fuel_consumed: 0,
        duration: Duration::ZERO,
        logs_dropped: 0,
        log_bytes_dropped: 0,
    })
}

impl Policy for Decides {
    fn digest(&self) -> String {
        format!("decides-{}", self.0)
    }
    fn check_grants(&self, _: &Capabilities) -> Result<(), SandboxError> {
        Ok(())
    }
    fn gather<'a>(
        &'a self,
        _: &'a Context,
        _: &'a CallEnv,
    ) -> BoxFuture<'a, PolicyResult<Vec<Sample>>> {
        Box::pin(async { no_cost(Vec::new()) })
    }
    fn evaluate<'a>(
        &'a self,
        _: &'a Context,
        _: &'a [Sample],
        _: &'a CallEnv,
    ) -> BoxFuture<'a, PolicyResult<Decision>> {
        Box::pin(async move {
            no_cost(Decision {
                target_replicas: self.0,
                reason: None,
                remove_first: None,
            })
        })
    }
}

/// The replicas asked for after each run of `spec` deciding `decides`, starting at `initial`.
async fn simulated_counts(
    spec: &AutoscalerSpec,
    decides: u32,
    initial: u32,
    seconds: u32,
) -> anyhow::Result<Vec<u32>> {
    let trace = Trace::parse(
        &format!("time,load\n0,1\n{seconds},1\n"),
        "trace.csv",
        &Columns::default(),
    )?;
    let model = SystemModel {
        initial_replicas: Some(initial),
        ..SystemModel::default()
    };
    let policy: Arc<dyn Policy> = Arc::new(Decides(decides));
    let report =
        simulate::simulate(spec, Policies::single(policy), &trace, &model, &mut |_| ()).await?;
    anyhow::ensure!(report.failed_runs == 0, "{report:?}");
    Ok(report.series.iter().map(|p| p.desired).collect())
}

/// A row of upstream `TestScalingWithRules`, read by `hpa_rate_cases.rs`.
struct RateCase {
    name: &'static str,
    bounds: (u32, u32),
    current: u32,
    desired: u32,
    expected: u32,
    behavior: Behavior,
    /// Rows that start from recent scale events a simulation cannot have made itself.
    with_events: bool,
}

fn case(
    name: &'static str,
    bounds: (u32, u32),
    current: u32,
    desired: u32,
    expected: u32,
    _reason: LimitReason,
) -> RateCase {
    RateCase {
        name,
        bounds,
        current,
        desired,
        expected,
        behavior: Behavior::default(),
        with_events: false,
    }
}

/// Recent events of a row: only whether there are any matters here.
struct Events;

fn events(_: &[u32], _period_seconds: u32) -> Events {
    Events
}

impl RateCase {
    fn up(mut self, rules: ScalingRules) -> Self {
        self.behavior.scale_up = Some(rules);
        self
    }
    fn down(mut self, rules: ScalingRules) -> Self {
        self.behavior.scale_down = Some(rules);
        self
    }
    fn up_events(mut self, _: Events) -> Self {
        self.with_events = true;
        self
    }
    fn down_events(mut self, _: Events) -> Self {
        self.with_events = true;
        self
    }
}

include!("../host/src/engine/behavior/hpa_rules.rs");

/// The engine's table of upstream HPA rate cases (the same rows its unit test checks against
/// the rate limiter alone), each replayed as a simulated run: the target starts at the row's
/// current count, the policy decides the row's desired count, and the count the simulated
/// target is asked for is the row's expected one. Rows that start from recent scale events
/// stay with the unit test, since a simulation holds only the events it made.
#[tokio::test]
async fn hpa_rate_cases_give_the_same_counts_in_simulation() -> anyhow::Result<()> {
    use LimitReason::*;
    let cases: Vec<RateCase> = include!("../host/src/engine/behavior/hpa_rate_cases.rs");
    let mut replayed = 0;
    for c in cases.into_iter().filter(|c| !c.with_events) {
        let mut spec = spec(15, c.bounds.1);
        spec.scaling.min_replicas = c.bounds.0;
        spec.scaling.behavior = c.behavior;
        let counts = simulated_counts(&spec, c.desired, c.current, 15).await?;
        assert_eq!(counts, [c.expected], "{}", c.name);
        replayed += 1;
    }
    assert!(replayed >= 20, "only {replayed} rows replayed");
    Ok(())
}

/// The HPA's default scale-up policy (4 pods or 100 % per 15 s, whichever is more) over several
/// simulated runs: from 10 toward 50 it doubles each run, then stops at the decision. Each
/// run's event has left the 15 s period when the next run comes, as upstream's "period has
/// passed" comparison is strict.
#[tokio::test]
async fn default_behavior_over_simulated_runs_is_the_hpa_s() -> anyhow::Result<()> {
    let spec = spec(15, 100);
    assert_eq!(simulated_counts(&spec, 50, 10, 60).await?, [20, 40, 50, 50]);
    Ok(())
}
