//! One autoscaler: the run pipeline and the loop that repeats it.
//!
//! gather → evaluate → clamp to [min, max] → tolerance → stabilization → rate policies →
//! scale. Any failure holds the current count (fail-static); after `fallback.failureThreshold`
//! consecutive failures the fallback count applies instead.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::error::AutoscalerError;
use super::policy::Policies;
use super::policy::Policy;
use super::record::{Outcome, RunRecord};
use super::settle::{Safety, settle};
use super::sources::{Gathered, MetricSource, SourceMemory, SourcesFailure};
use super::spec::{AutoscalerSpec, RunMode};
use super::store::{EngineState, StateBackend};
use crate::contract::model::{
    Context, Decision, GuestError, RunType, Sample, Target as ContextTarget,
};
use crate::sandbox::{BoxFuture, CallEnv, CallOutcome, Capabilities, SandboxError, StateStore};
use crate::targets::{Observation, Target, TargetError};

/// Source of the current time in ms since the Unix epoch (injectable for tests).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    })
}

/// Run records kept per autoscaler for the API; small, because a host may run 100,000.
const RECORDS_KEPT: usize = 16;

/// Keeps `record` as the newest of the last [`RECORDS_KEPT`]; a run that ended exactly as
/// the newest did is folded into it instead, so a steady autoscaler keeps one record with a
/// count, and the ones kept reach further back. Only a record kept whole is copied.
fn keep(records: &mut VecDeque<RunRecord>, record: &RunRecord) {
    if let Some(last) = records.back_mut()
        && record.repeats_the_result_of(last)
    {
        record.fold_into(last);
        return;
    }
    if records.len() == RECORDS_KEPT {
        records.pop_front();
    }
    records.push_back(record.clone());
}

type GatherResult = Result<CallOutcome<Vec<Sample>>, SandboxError>;

/// One policy's gathers of a run (one, or one per replica), or the first failure.
type GathersResult = Result<Vec<CallOutcome<Vec<Sample>>>, SandboxError>;

/// Whether a run acts or only shows what it would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Run,
    Preview,
}

/// Receives every completed run (metrics, events).
pub trait RunObserver: Send + Sync {
    /// Called once per run, after it was logged.
    fn observe(&self, spec: &AutoscalerSpec, record: &RunRecord);
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A stable offset within `interval` derived from `name` (FNV-1a).
fn spread(name: &str, interval: Duration) -> Duration {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let millis = u64::try_from(interval.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    Duration::from_millis(hash % millis)
}

/// The longest step of the process-wide grid that runs start on. Autoscalers whose turns fall
/// within one step of each other wake the runtime once, together, instead of one wake-up (and
/// its epoll, context switch and cold caches) per run. Measured in the fleet benchmark at
/// 10,000 autoscalers, two processes side by side: this step used a fifth less CPU than a
/// 100 ms one (3.95 / 4.76 / 5.16 % against 5.13 / 5.80 / 6.47 % of a core). Only a run's
/// phase moves, by under a sixteenth of its interval; its interval stays exact, and the HPA
/// itself syncs every autoscaler together once per period.
const RUN_GRID: Duration = Duration::from_secs(1);

/// The run grid's step for `interval`: a sixteenth of it, at most [`RUN_GRID`]. A run starts
/// at most this much after its turn.
pub(crate) fn run_grid_step(interval: Duration) -> Duration {
    RUN_GRID.min(interval / 16)
}

/// `at` rounded up to the run grid: a sixteenth of `interval`, at most [`RUN_GRID`], counted
/// from a process-wide origin. Ticks `interval` apart stay on it when `interval` is a multiple
/// of the step: every interval up to 16 s (in nanoseconds divisible by 16), and every longer one
/// of whole seconds.
fn on_grid(at: tokio::time::Instant, interval: Duration) -> tokio::time::Instant {
    static ORIGIN: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    let origin = *ORIGIN.get_or_init(tokio::time::Instant::now);
    let step = run_grid_step(interval).as_nanos();
    let Some(since) = at.checked_duration_since(origin) else {
        return at;
    };
    if step == 0 {
        return at;
    }
    let late = since.as_nanos() % step;
    if late == 0 {
        return at;
    }
    at + Duration::from_nanos(u64::try_from(step - late).unwrap_or(0))
}

/// Why a run (or a dry-run gather) decided nothing: the failing stage's kind, the run
/// record's `errorKind`, and its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RunFailure {
    kind: String,
    message: String,
}

impl RunFailure {
    /// The failure's stable kind (`target`, `busy`, or the sandbox error's kind), as run
    /// records and metrics carry it.
    pub fn reason(&self) -> &str {
        &self.kind
    }

    fn sandbox(stage: &str, e: SandboxError) -> Self {
        RunFailure {
            kind: e.kind().to_owned(),
            message: format!("{stage}: {}", e.summary()),
        }
    }
    fn sources(failure: SourcesFailure) -> Self {
        match failure {
            SourcesFailure::Busy(e) => RunFailure::sandbox("gather", e),
            SourcesFailure::Source {
                name,
                error,
                not_held,
            } => {
                let mut failure = RunFailure::sandbox(&format!("gather (source {name})"), error);
                if let Some(why) = not_held {
                    failure.message = format!("{} (onFailure: hold, but {why})", failure.message);
                }
                failure
            }
            SourcesFailure::AllFailed(names) => RunFailure {
                kind: "sources-failed".into(),
                message: format!("gather: every metric source failed ({})", names.join(", ")),
            },
        }
    }
    fn target(e: TargetError) -> Self {
        RunFailure {
            kind: "target".into(),
            message: format!("target: {e}"),
        }
    }
    /// Every instance slot was taken: the host was busy, the guest did nothing wrong, so it
    /// never counts toward the fallback.
    fn is_busy(&self) -> bool {
        self.kind == "busy"
    }
}

/// Adds what one guest call cost to the run's record.
fn account<T>(record: &mut RunRecord, out: &CallOutcome<T>) {
    record.fuel += out.fuel_consumed;
    record.guest_micros += micros(out.duration);
    record.logs_dropped += out.logs_dropped;
    record.log_bytes_dropped += out.log_bytes_dropped;
}

/// The guest state as dry runs see it: read from the autoscaler's store, never written back,
/// so an API caller cannot change what the scheduled runs will read.
struct ReadOnlyState(Arc<dyn StateStore>);

impl StateStore for ReadOnlyState {
    fn load(&self) -> Result<std::collections::BTreeMap<String, Vec<u8>>, GuestError> {
        self.0.load()
    }
    fn commit(&self, _: &crate::sandbox::StateChanges, _: u64) -> Result<(), GuestError> {
        Ok(())
    }
    fn commit_blocks(&self) -> bool {
        false
    }
}

/// Assembles an [`Autoscaler`] ([`Autoscaler::builder`]): the spec, its target and its
/// policies are required; the rest has a default.
pub struct AutoscalerBuilder {
    spec: AutoscalerSpec,
    target: Arc<dyn Target>,
    policies: Policies,
    guest_state: Option<Arc<dyn StateStore>>,
    backend: Arc<dyn StateBackend>,
    clock: Clock,
}

impl AutoscalerBuilder {
    /// Where the guests' `state` capability keeps its data (default: none; a guest using
    /// `state` then fails).
    pub fn guest_state(mut self, store: Option<Arc<dyn StateStore>>) -> Self {
        self.guest_state = store;
        self
    }

    /// Where the engine's history is kept across restarts (default: nowhere).
    pub fn persistence(mut self, backend: Arc<dyn StateBackend>) -> Self {
        self.backend = backend;
        self
    }

    /// The clock runs read (default: the system clock).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Validates the spec and the policies' grants, restores the persisted history, and
    /// returns the autoscaler.
    pub fn build(self) -> Result<Autoscaler, AutoscalerError> {
        Autoscaler::new(self)
    }
}

/// A running autoscaler.
pub struct Autoscaler {
    spec: AutoscalerSpec,
    target: Arc<dyn Target>,
    policies: Policies,
    env: CallEnv,
    /// The scheduled runs' environment with the guest state made read-only, for dry runs.
    preview_env: CallEnv,
    /// The last observation of the target and when it was made; dry runs reuse it for up to
    /// one interval instead of calling the target's API each time.
    last_observation: Mutex<Option<(Instant, Arc<Observation>)>>,
    safety: Safety,
    backend: Arc<dyn StateBackend>,
    /// Also serializes runs: a run never overlaps the previous one.
    state: tokio::sync::Mutex<EngineState>,
    records: Mutex<VecDeque<RunRecord>>,
    clock: Clock,
    observers: Vec<Arc<dyn RunObserver>>,
    /// With `metrics:` as a list: each source's call environments, in the list's order.
    source_envs: Vec<SourceEnv>,
    /// The sources' last good samples and failure streaks.
    source_memory: SourceMemory,
}

/// A listed source's call environments: its own grants, the autoscaler's limits and state.
struct SourceEnv {
    run: CallEnv,
    preview: CallEnv,
}

impl Autoscaler {
    /// Starts assembling an autoscaler running `spec` on `target` with `policies` (a
    /// [`Guests`](super::Guests) pair converts).
    pub fn builder(
        spec: AutoscalerSpec,
        target: Arc<dyn Target>,
        policies: impl Into<Policies>,
    ) -> AutoscalerBuilder {
        AutoscalerBuilder {
            spec,
            target,
            policies: policies.into(),
            guest_state: None,
            backend: Arc::new(super::store::NoPersistence),
            clock: system_clock(),
        }
    }

    /// Binds a validated spec to its target and policies; restores persisted engine state.
    fn new(
        AutoscalerBuilder {
            spec,
            target,
            policies,
            guest_state,
            backend,
            clock,
        }: AutoscalerBuilder,
    ) -> Result<Self, AutoscalerError> {
        spec.validate()?;
        let listed = listed_sources(&spec);
        if listed.len() != policies.sources.len() {
            return Err(AutoscalerError::Policies(format!(
                "the spec lists {} metric sources but {} were loaded",
                listed.len(),
                policies.sources.len()
            )));
        }
        let gatherers: Vec<&Arc<dyn Policy>> = if listed.is_empty() {
            vec![&policies.metrics]
        } else {
            Vec::new()
        };
        for guest in gatherers.into_iter().chain([&policies.evaluator]) {
            guest
                .check_grants(&spec.scaling.capabilities)
                .map_err(AutoscalerError::NotGranted)?;
        }
        for (source, policy) in listed.iter().zip(&policies.sources) {
            policy
                .check_grants(source_grants(&spec, source))
                .map_err(AutoscalerError::NotGranted)?;
        }
        let env = CallEnv {
            limits: spec.scaling.limits.clone(),
            capabilities: spec.scaling.capabilities.clone(),
            state: guest_state,
            pod_metrics: target.pod_metrics(),
            http_responder: target.http_responder(),
        };
        let state = backend.load()?;
        let preview_env = CallEnv {
            state: env
                .state
                .clone()
                .map(|store| Arc::new(ReadOnlyState(store)) as Arc<dyn StateStore>),
            ..env.clone()
        };
        let source_envs = listed
            .iter()
            .map(|source| SourceEnv {
                run: CallEnv {
                    capabilities: source_grants(&spec, source).clone(),
                    ..env.clone()
                },
                preview: CallEnv {
                    capabilities: source_grants(&spec, source).clone(),
                    ..preview_env.clone()
                },
            })
            .collect();
        Ok(Autoscaler {
            safety: Safety::of(&spec.scaling),
            spec,
            target,
            policies,
            env,
            preview_env,
            last_observation: Mutex::new(None),
            backend,
            state: tokio::sync::Mutex::new(state),
            // Grown as runs come: most fleets hold steady, and their runs fold into one record.
            records: Mutex::new(VecDeque::new()),
            clock,
            observers: Vec::new(),
            source_envs,
            source_memory: SourceMemory::default(),
        })
    }

    /// The spec it runs.
    pub fn spec(&self) -> &AutoscalerSpec {
        &self.spec
    }

    /// Hex sha256 of the components it runs (metric source, evaluator).
    pub(crate) fn guest_digests(&self) -> [String; 2] {
        [
            self.policies.metrics.digest(),
            self.policies.evaluator.digest(),
        ]
    }

    /// The target it scales.
    pub fn target(&self) -> &Arc<dyn Target> {
        &self.target
    }

    /// The most recent run records, oldest first.
    pub fn records(&self) -> Vec<RunRecord> {
        self.records
            .lock()
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// A copy of the engine state (history, failures).
    pub async fn engine_state(&self) -> EngineState {
        self.state.lock().await.clone()
    }

    /// Runs the pipeline once and records the run.
    pub async fn run_once(&self) -> RunRecord {
        let started = Instant::now();
        let now = (self.clock)();
        let mut state = self.state.lock().await;
        let before = state.clone();
        let mut record = self.execute(&mut state, now, Mode::Run, None).await;
        if *state != before
            && let Err(error) = self.backend.save(&state)
        {
            tracing::error!(autoscaler = %self.spec.name, %error, "cannot persist engine state");
        }
        drop(state);
        record.duration_micros = micros(started.elapsed());
        self.log(&record);
        for observer in &self.observers {
            observer.observe(&self.spec, &record);
        }
        if let Ok(mut records) = self.records.lock() {
            keep(&mut records, &record);
        }
        record
    }

    /// Runs the whole pipeline on a copy of the engine state, never writing to the target and
    /// keeping nothing: the API's dry-run evaluation.
    /// With `samples`, those are evaluated instead of gathering (CPA's evaluation with
    /// provided metrics).
    pub async fn preview(&self, samples: Option<Vec<Sample>>) -> RunRecord {
        let started = Instant::now();
        let now = (self.clock)();
        let mut scratch = self.state.lock().await.clone();
        let mut record = self
            .execute(&mut scratch, now, Mode::Preview, samples)
            .await;
        record.duration_micros = micros(started.elapsed());
        record
    }

    /// Observes the target and gathers once, without evaluating: the API's dry-run metrics.
    /// Its guest state writes are discarded, and the target is observed at most once per
    /// interval however often it is called.
    pub async fn gather_preview(&self) -> Result<Vec<Sample>, RunFailure> {
        let observed = self
            .observe(Mode::Preview)
            .await
            .map_err(RunFailure::target)?;
        let mut ctx = self.context(&observed, (self.clock)());
        ctx.run_type = RunType::Api;
        let mut scratch = self.empty_record(ctx.now_ms);
        self.gather(&ctx, &observed, &mut scratch, Mode::Preview)
            .await
            .map(|(samples, _)| samples)
    }

    /// Observes the target. Scheduled runs always ask it; dry runs reuse an observation up to
    /// one interval old.
    /// Shared, so keeping it for dry runs costs scheduled runs no copy.
    async fn observe(&self, mode: Mode) -> Result<Arc<Observation>, TargetError> {
        if mode == Mode::Preview
            && let Ok(last) = self.last_observation.lock()
            && let Some((at, observed)) = last.as_ref()
            && at.elapsed() < self.spec.scaling.interval.0
        {
            return Ok(observed.clone());
        }
        let observed = Arc::new(self.target.observe().await?);
        if let Ok(mut last) = self.last_observation.lock() {
            *last = Some((Instant::now(), observed.clone()));
        }
        Ok(observed)
    }

    fn env(&self, mode: Mode) -> &CallEnv {
        match mode {
            Mode::Run => &self.env,
            Mode::Preview => &self.preview_env,
        }
    }

    /// Also reports every run to `observer` (metrics, status).
    pub fn with_observer(mut self, observer: Arc<dyn RunObserver>) -> Self {
        self.observers.push(observer);
        self
    }

    fn empty_record(&self, now: i64) -> RunRecord {
        RunRecord {
            autoscaler: self.spec.name.clone(),
            at_ms: now,
            current_replicas: None,
            replica_count: 0,
            sample_count: 0,
            decision: None,
            clamped: None,
            within_tolerance: false,
            stabilized: None,
            limited: None,
            fallback: false,
            outcome: Outcome::Unchanged,
            error: None,
            error_kind: None,
            fuel: 0,
            guest_micros: 0,
            duration_micros: 0,
            logs_dropped: 0,
            log_bytes_dropped: 0,
            sources: Vec::new(),
            repeats: 0,
            first_at_ms: None,
        }
    }

    async fn execute(
        &self,
        state: &mut EngineState,
        now: i64,
        mode: Mode,
        given: Option<Vec<Sample>>,
    ) -> RunRecord {
        let mut record = self.empty_record(now);
        match self.pipeline(state, now, &mut record, mode, given).await {
            Ok(outcome) => record.outcome = outcome,
            Err(failure) => {
                record.outcome = Outcome::Held {
                    reason: failure.message.clone(),
                };
                record.error = Some(failure.message);
                record.error_kind = Some(failure.kind);
            }
        }
        self.cap_texts(&mut record);
        record
    }

    /// Cuts the guest's words (reason, error) to `limits.maxMessageBytes` and hides any URL
    /// credentials in them: every later copy (logs, status, Events, API) sees only this.
    fn cap_texts(&self, record: &mut RunRecord) {
        let max = usize::try_from(self.spec.scaling.limits.max_message_bytes).unwrap_or(usize::MAX);
        let cap = |text: &mut String| *text = crate::redact::bounded(text, max);
        if let Some(reason) = record.decision.as_mut().and_then(|d| d.reason.as_mut()) {
            cap(reason);
        }
        if let Some(error) = record.error.as_mut() {
            cap(error);
        }
        if let Outcome::Held { reason } = &mut record.outcome {
            cap(reason);
        }
    }

    fn log(&self, record: &RunRecord) {
        let current = record
            .current_replicas
            .map_or("?".into(), |c| c.to_string());
        let summary = match &record.outcome {
            Outcome::Scaled { from, to } => format!("scaled {from} -> {to}"),
            Outcome::WouldScale { from, to } => format!("would scale {from} -> {to} (dry run)"),
            Outcome::Unchanged => format!("unchanged at {current}"),
            Outcome::Held { .. } => format!("held at {current}"),
            Outcome::Paused { reason } => format!("paused at {current}: {reason}"),
        };
        let decided = record.decision.as_ref().map(|d| d.target_replicas);
        if let Some(error) = &record.error {
            tracing::warn!(
                autoscaler = %self.spec.name, fallback = record.fallback,
                kind = record.error_kind.as_deref().unwrap_or(""), "{summary}: {error}"
            );
        } else {
            tracing::info!(
                autoscaler = %self.spec.name, decided = ?decided, stabilized = ?record.stabilized,
                limit = ?record.limited.map(|(_, reason)| reason), fuel = record.fuel,
                duration_us = record.duration_micros, "{summary}"
            );
        }
    }

    async fn pipeline(
        &self,
        state: &mut EngineState,
        now: i64,
        record: &mut RunRecord,
        mode: Mode,
        given: Option<Vec<Sample>>,
    ) -> Result<Outcome, RunFailure> {
        let spec = &self.spec;
        let observed = self.observe(mode).await.map_err(RunFailure::target)?;
        let current = observed.current;
        record.current_replicas = Some(current);
        record.replica_count = observed.replicas.len();

        if spec.scaling.paused {
            return match spec.scaling.paused_replicas {
                Some(n) if n != current => self.apply(state, now, &observed, n, &[], mode).await,
                _ => Ok(Outcome::Paused {
                    reason: "spec.paused is set".into(),
                }),
            };
        }
        if current == 0 && spec.scaling.min_replicas > 0 {
            return Ok(Outcome::Paused {
                reason: "the target is at 0 replicas and minReplicas > 0: autoscaling resumes once it is scaled up"
                    .into(),
            });
        }

        let (min, max) = (spec.scaling.min_replicas, spec.scaling.max_replicas);
        let mut ctx = self.context(&observed, now);
        if mode == Mode::Preview {
            ctx.run_type = RunType::Api;
        }
        let decision = match self.decide(&ctx, &observed, record, given, mode).await {
            Ok(decision) => {
                state.consecutive_failures = 0;
                decision
            }
            Err(failure) if failure.is_busy() => return Err(failure),
            Err(failure) => {
                state.consecutive_failures = state.consecutive_failures.saturating_add(1);
                let Some(fallback) = &spec.scaling.fallback else {
                    return Err(failure);
                };
                if state.consecutive_failures < fallback.failure_threshold {
                    return Err(failure);
                }
                record.fallback = true;
                record.error = Some(failure.message);
                record.error_kind = Some(failure.kind);
                let to = fallback.replicas_from(current).clamp(min, max);
                if let Some(paused) = self.paused_direction(current, to) {
                    return Ok(paused);
                }
                return self.apply(state, now, &observed, to, &[], mode).await;
            }
        };
        record.decision = Some(decision.clone());

        let settled = settle(
            current,
            decision.target_replicas,
            &self.safety,
            &mut state.history,
            now,
        );
        record.clamped = Some(settled.clamped);
        record.within_tolerance = settled.within_tolerance;
        record.stabilized = Some(settled.stabilized);
        record.limited = Some((settled.limited, settled.reason));
        let limited = settled.limited;
        if let Some(paused) = self.paused_direction(current, limited) {
            return Ok(paused);
        }
        let remove_first = decision.remove_first.unwrap_or_default();
        self.apply(state, now, &observed, limited, &remove_first, mode)
            .await
    }

    async fn decide(
        &self,
        ctx: &Context,
        observed: &Observation,
        record: &mut RunRecord,
        given: Option<Vec<Sample>>,
        mode: Mode,
    ) -> Result<Decision, RunFailure> {
        let (samples, statuses) = match given {
            Some(samples) => (samples, Vec::new()),
            None => self.gather(ctx, observed, record, mode).await?,
        };
        record.sample_count = samples.len();
        // The sources' statuses reach the evaluator through the `sources` import.
        let with_sources;
        let ctx = if statuses.is_empty() {
            ctx
        } else {
            record.sources = statuses.clone();
            with_sources = Context {
                sources: statuses,
                ..ctx.clone()
            };
            &with_sources
        };
        let out = self
            .policies
            .evaluator
            .evaluate(ctx, &samples, self.env(mode))
            .await
            .map_err(|e| RunFailure::sandbox("evaluate", e))?;
        account(record, &out);
        Ok(out.value)
    }

    /// The run's samples: from the metric source, or from every listed source with their
    /// statuses.
    async fn gather(
        &self,
        ctx: &Context,
        observed: &Observation,
        record: &mut RunRecord,
        mode: Mode,
    ) -> Result<(Vec<Sample>, Vec<crate::contract::model::SourceStatus>), RunFailure> {
        let listed = listed_sources(&self.spec);
        if listed.is_empty() {
            let outs = self
                .gather_with(&*self.policies.metrics, ctx, observed, self.env(mode))
                .await
                .map_err(|e| RunFailure::sandbox("gather", e))?;
            let mut samples = Vec::new();
            for out in outs {
                account(record, &out);
                samples.extend(out.value);
            }
            return Ok((samples, Vec::new()));
        }
        // Every source at once, each in its own calls: one slow source delays the run by its
        // own deadline at most, never the others' calls.
        let calls: Vec<BoxFuture<'_, GathersResult>> = listed
            .iter()
            .zip(&self.policies.sources)
            .zip(&self.source_envs)
            .map(|((source, policy), envs)| {
                let mut own = ctx.clone();
                own.config
                    .extend(source.config.iter().map(|(k, v)| (k.clone(), v.clone())));
                let env = match mode {
                    Mode::Run => &envs.run,
                    Mode::Preview => &envs.preview,
                };
                Box::pin(async move { self.gather_with(&**policy, &own, observed, env).await })
                    as BoxFuture<'_, _>
            })
            .collect();
        let mut results = Vec::with_capacity(calls.len());
        for result in futures::future::join_all(calls).await {
            results.push(match result {
                Ok(outs) => {
                    let mut samples = Vec::new();
                    for out in outs {
                        account(record, &out);
                        samples.extend(out.value);
                    }
                    Gathered::Samples(samples)
                }
                Err(e) => Gathered::Failed(e),
            });
        }
        let default_hold = self.spec.scaling.interval.0.saturating_mul(3);
        let combined = self
            .source_memory
            .combine(listed, results, ctx.now_ms, default_hold, mode == Mode::Run)
            .map_err(RunFailure::sources)?;
        Ok((combined.samples, combined.statuses))
    }

    /// `policy`'s gathers for one run: once, or once per replica (concurrently up to
    /// `maxConcurrentGathers`, in replica order); the first failure fails them all.
    async fn gather_with(
        &self,
        policy: &dyn Policy,
        ctx: &Context,
        observed: &Observation,
        env: &CallEnv,
    ) -> GathersResult {
        if self.spec.scaling.run_mode == RunMode::PerResource {
            return Ok(vec![policy.gather(ctx, env).await?]);
        }
        // Collected (and boxed) up front: a lazily mapped iterator of futures trips the
        // compiler's higher-ranked `Send` check once the run is spawned.
        let gathers: Vec<BoxFuture<'_, GatherResult>> = observed
            .replicas
            .iter()
            .map(|replica| {
                let mut one = ctx.clone();
                one.replicas = vec![replica.clone()];
                Box::pin(async move { policy.gather(&one, env).await })
                    as BoxFuture<'_, GatherResult>
            })
            .collect();
        futures::stream::iter(gathers)
            .buffered(
                usize::try_from(self.spec.scaling.max_concurrent_gathers).unwrap_or(usize::MAX),
            )
            .collect::<Vec<GatherResult>>()
            .await
            .into_iter()
            .collect()
    }

    /// The hold of a scale from `current` to `to` in a paused direction (`pausedScaleIn`,
    /// `pausedScaleOut`), if it is one.
    fn paused_direction(&self, current: u32, to: u32) -> Option<Outcome> {
        let scaling = &self.spec.scaling;
        let field = if to < current && scaling.paused_scale_in {
            "pausedScaleIn"
        } else if to > current && scaling.paused_scale_out {
            "pausedScaleOut"
        } else {
            return None;
        };
        Some(Outcome::Paused {
            reason: format!("spec.{field} is set: holding {current} instead of {to}"),
        })
    }

    async fn apply(
        &self,
        state: &mut EngineState,
        now: i64,
        observed: &Observation,
        to: u32,
        remove_first: &[String],
        mode: Mode,
    ) -> Result<Outcome, RunFailure> {
        let from = observed.current;
        if to == from {
            return Ok(Outcome::Unchanged);
        }
        if self.spec.scaling.dry_run || mode == Mode::Preview {
            return Ok(Outcome::WouldScale { from, to });
        }
        let (up, down) = (&self.safety.up, &self.safety.down);
        if let Err(error) = self.target.scale(observed, to, remove_first).await {
            // What did happen counts toward the rate policies, or the next run would go
            // further than they allow.
            if let TargetError::Partial { reached, .. } = &error {
                state.history.record_scale(now, from, *reached, up, down);
                state.last_scale_ms = Some(now);
            }
            return Err(RunFailure::target(error));
        }
        state.history.record_scale(now, from, to, up, down);
        state.last_scale_ms = Some(now);
        Ok(Outcome::Scaled { from, to })
    }

    fn context(&self, observed: &Observation, now: i64) -> Context {
        let identity = self.target.identity();
        Context {
            autoscaler_name: self.spec.name.clone(),
            autoscaler_namespace: self.spec.namespace.clone(),
            run_type: if self.spec.scaling.dry_run {
                RunType::DryRun
            } else {
                RunType::Scaler
            },
            now_ms: now,
            target: ContextTarget {
                kind: identity.kind,
                name: identity.name,
                namespace: identity.namespace,
                current_replicas: observed.current,
                min_replicas: self.spec.scaling.min_replicas,
                max_replicas: self.spec.scaling.max_replicas,
                object: observed.object.clone(),
            },
            replicas: observed.replicas.clone(),
            config: self.spec.scaling.config.clone(),
            sources: Vec::new(),
        }
    }

    /// Runs every `interval` (the first run aligned to `startTime` if set) until `stop`; a run
    /// in progress when `stop` fires is finished, not abandoned.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let now = tokio::time::Instant::now();
        let interval = self.spec.scaling.interval.0;
        // A turn in the second half of the interval gets an extra run in the first half, so
        // every new autoscaler (and every one after a restart) runs within half an interval
        // (and the grid's step, a sixteenth of it), still spread, and then keeps its turn.
        let mut early = None;
        let first = match self.spec.scaling.start_time {
            Some(align) => {
                let period = i64::try_from(align.0.as_millis())
                    .unwrap_or(i64::MAX)
                    .max(1);
                let clock = (self.clock)();
                let wait = (clock.div_euclid(period) + 1) * period - clock;
                now + Duration::from_millis(u64::try_from(wait).unwrap_or(0))
            }
            // Without alignment, first runs are spread over the interval by name, so a host
            // starting thousands of autoscalers does not run them all in the same instant.
            None => {
                let turn = spread(&self.spec.name, interval);
                if turn >= interval / 2 {
                    early = Some(on_grid(now + turn - interval / 2, interval));
                }
                on_grid(now + turn, interval)
            }
        };
        if let Some(at) = early {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(at) => {}
            }
            Box::pin(self.run_once()).await;
        }
        let mut ticker = tokio::time::interval_at(first, self.spec.scaling.interval.0);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // Stop wins over an overdue tick: no new run starts once stop has fired.
                biased;
                _ = stop.cancelled() => break,
                _ = ticker.tick() => {}
            }
            // Boxed: the run's future (gather, evaluate, the target's calls) is several times
            // the size of this loop, and a host of 100,000 idle autoscalers would otherwise
            // hold that much for each of them between runs.
            Box::pin(self.run_once()).await;
        }
    }
}

/// The sources of `metrics:` as a list; empty for one source or a `policy`.
fn listed_sources(spec: &AutoscalerSpec) -> &[MetricSource] {
    spec.scaling
        .metrics
        .as_ref()
        .map_or(&[], |metrics| metrics.sources())
}

/// A listed source's own grants, or the autoscaler's.
fn source_grants<'a>(spec: &'a AutoscalerSpec, source: &'a MetricSource) -> &'a Capabilities {
    source
        .capabilities
        .as_ref()
        .unwrap_or(&spec.scaling.capabilities)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(at_ms: i64, current: u32, fuel: u64) -> RunRecord {
        RunRecord {
            autoscaler: "web".into(),
            at_ms,
            current_replicas: Some(current),
            replica_count: current as usize,
            sample_count: 1,
            decision: Some(Decision {
                target_replicas: current,
                reason: Some("steady".into()),
                remove_first: None,
            }),
            clamped: Some(current),
            within_tolerance: true,
            stabilized: Some(current),
            limited: None,
            fallback: false,
            outcome: Outcome::Unchanged,
            error: None,
            error_kind: None,
            fuel,
            guest_micros: 40,
            duration_micros: 90,
            logs_dropped: 0,
            log_bytes_dropped: 0,
            sources: Vec::new(),
            repeats: 0,
            first_at_ms: None,
        }
    }

    #[test]
    fn runs_that_end_alike_fold_into_one_record_with_a_count() {
        let mut records = VecDeque::new();
        keep(&mut records, &held(1_000, 3, 100));
        keep(&mut records, &held(16_000, 3, 120));
        keep(&mut records, &held(31_000, 3, 110));
        assert_eq!(records.len(), 1);
        let folded = &records[0];
        assert_eq!(folded.repeats, 2);
        assert_eq!(folded.runs(), 3);
        assert_eq!(folded.first_at_ms, Some(1_000));
        // The time and cost are the latest run's.
        assert_eq!((folded.at_ms, folded.fuel), (31_000, 110));
        let json = serde_json::to_value(folded).unwrap_or_default();
        assert_eq!(json["repeats"], 2, "{json}");
        assert_eq!(json["firstAtMs"], 1_000, "{json}");
        // A lone run carries neither field.
        let lone = serde_json::to_value(held(1, 3, 1)).unwrap_or_default();
        assert!(
            lone.get("repeats").is_none() && lone.get("firstAtMs").is_none(),
            "{lone}"
        );
    }

    #[test]
    fn a_run_that_ends_differently_starts_a_record_and_only_the_last_sixteen_stay() {
        let mut records = VecDeque::new();
        keep(&mut records, &held(0, 3, 1));
        let mut failed = held(1, 3, 1);
        failed.error = Some("gather: fuel exhausted".into());
        keep(&mut records, &failed);
        keep(&mut records, &held(2, 3, 1));
        assert_eq!(
            records.len(),
            3,
            "a failure between two holds folds with neither"
        );
        assert!(records.iter().all(|r| r.repeats == 0));
        // Alternating results never fold: the oldest fall off past RECORDS_KEPT.
        for i in 0..40 {
            keep(&mut records, &held(10 + i, 3 + (i % 2) as u32, 1));
        }
        assert_eq!(records.len(), RECORDS_KEPT);
        assert_eq!(records.back().map(|r| r.at_ms), Some(49));
        assert_eq!(records.front().map(|r| r.at_ms), Some(34));
    }

    #[test]
    fn runs_whose_turns_fall_within_one_step_share_a_wake_up() {
        let interval = Duration::from_secs(15);
        // A sixteenth of the default interval.
        let step = Duration::from_micros(937_500);
        // The first call fixes the grid's origin; later instants round onto it.
        let _ = on_grid(tokio::time::Instant::now(), interval);
        let base = on_grid(tokio::time::Instant::now(), interval);
        // Every instant in the step before a grid point rounds up to it.
        for offset_ms in [1, 300, 937] {
            let at = base + Duration::from_millis(offset_ms);
            assert_eq!(on_grid(at, interval), base + step, "offset {offset_ms} ms");
        }
        // Long intervals: a step of RUN_GRID, which ticks of whole seconds stay on.
        let minute = Duration::from_secs(60);
        let at = base + Duration::from_millis(1);
        let next = on_grid(at, minute);
        assert!(next > at && next - at <= RUN_GRID, "{:?}", next - at);
        assert_eq!(on_grid(next + minute, minute), next + minute);
        // A grid point stays where it is, and ticks one interval apart stay on the grid.
        assert_eq!(on_grid(base, interval), base);
        assert_eq!(on_grid(base + interval, interval), base + interval);
    }

    #[test]
    fn short_intervals_get_a_finer_grid() {
        let interval = Duration::from_millis(160);
        let _ = on_grid(tokio::time::Instant::now(), interval);
        let base = on_grid(tokio::time::Instant::now(), interval);
        let at = base + Duration::from_millis(1);
        // A sixteenth of 160 ms: the first run moves by at most 10 ms, not 100.
        assert_eq!(on_grid(at, interval), base + Duration::from_millis(10));
    }

    #[test]
    fn spread_is_stable_and_within_the_interval() {
        let interval = Duration::from_secs(15);
        let a = spread("fleet-1", interval);
        assert_eq!(a, spread("fleet-1", interval));
        assert!(a < interval);
        assert_ne!(a, spread("fleet-2", interval));
    }
}
