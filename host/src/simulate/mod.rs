//! `wasmscaler simulate`: a load trace replayed in virtual time through the real engine.
//!
//! Each autoscaler runs its own guests through [`Autoscaler::run_once`] — the same gather →
//! evaluate → settle code as `wasmscaler run` — against a [`SimTarget`] backed by the
//! [`model`]'s simulated system instead of its configured target. The engine's clock is the
//! virtual one, so stabilization windows and rate policies see trace time, and nothing
//! sleeps. The `kubernetes-metrics` and `http` capabilities answer from the model, and
//! `state` persists in memory across the simulated runs.
//!
//! Time advances in model steps. At each step the model first retires drained replicas and
//! readies started ones; a run falls due every `interval` (the first at time 0) and sees the
//! metrics of the steps before it (the first run sees the trace's first load, as if the
//! system had run at it before the trace began); then the step serves that second's load and
//! is counted.

pub mod baseline;
pub mod chart;
pub mod model;
pub mod render;
pub mod report;
pub mod trace;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::contract::model::{GuestError, ObjectJson, PodMetrics};
use crate::engine::{Autoscaler, AutoscalerError, AutoscalerSpec, Policies};
use crate::sandbox::{BoxFuture, HttpResponder, MemoryState, PodMetricsProvider, StateStore};
use crate::targets::{Observation, Target, TargetError, TargetIdentity};

pub use baseline::{BUILTIN_BASELINE, builtin_cpu_target, hpa_baseline};
pub use model::{ModelError, Overflow, SystemModel};
pub use report::{Point, PolicyReport};
pub use trace::{Columns, Trace, TraceError};

use model::System;
use report::Tally;

/// Virtual time starts here when the trace has no timestamps: 2026-01-01T00:00:00Z.
const DEFAULT_EPOCH_MS: i64 = 1_767_225_600_000;

/// The shared state of one simulated autoscaler: its system and the virtual time.
struct World {
    system: Mutex<System>,
    /// Virtual time in ms since the start.
    now_ms: AtomicI64,
    name: String,
}

impl World {
    fn now(&self) -> f64 {
        self.now_ms.load(Ordering::Relaxed) as f64 / 1000.0
    }

    fn system(&self) -> std::sync::MutexGuard<'_, System> {
        // A panic elsewhere cannot leave the model half-updated in a way worth refusing.
        self.system.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The target of a simulated autoscaler: the model's replicas.
struct SimTarget(Arc<World>);

impl Target for SimTarget {
    fn identity(&self) -> TargetIdentity {
        TargetIdentity {
            kind: "simulated".into(),
            name: self.0.name.clone(),
            namespace: String::new(),
        }
    }

    fn observe(&self) -> BoxFuture<'_, Result<Observation, TargetError>> {
        let now = self.0.now();
        let system = self.0.system();
        let observation = Observation {
            current: system.desired(),
            replicas: system.visible(now),
            object: ObjectJson::default(),
            version: None,
        };
        Box::pin(async move { Ok(observation) })
    }

    fn scale<'a>(
        &'a self,
        _observed: &'a Observation,
        replicas: u32,
        remove_first: &'a [String],
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        let now = self.0.now();
        self.0.system().scale(now, replicas, remove_first);
        Box::pin(async { Ok(()) })
    }

    fn pod_metrics(&self) -> Option<Arc<dyn PodMetricsProvider>> {
        Some(Arc::new(SimMetrics(self.0.clone())))
    }

    fn http_responder(&self) -> Option<Arc<dyn HttpResponder>> {
        Some(Arc::new(SimHttp(self.0.clone())))
    }
}

/// The `http` capability against the model: a replica's address answers its status, and any
/// other allowed URL the queue's (so a queue guest's own `queueUrl` works unchanged).
struct SimHttp(Arc<World>);

impl HttpResponder for SimHttp {
    fn get(&self, url: &url::Url) -> Result<(u16, Vec<u8>), GuestError> {
        let now = self.0.now();
        let system = self.0.system();
        let suffix = format!(".{}", model::REPLICA_DOMAIN);
        let answer = match url.host_str().and_then(|h| h.strip_suffix(&suffix)) {
            Some(replica) => system.replica_status(now, replica),
            None => Some(system.queue_status()),
        };
        Ok(match answer {
            Some(body) => (200, body.to_string().into_bytes()),
            None => (503, b"{}".to_vec()),
        })
    }
}

struct SimMetrics(Arc<World>);

impl PodMetricsProvider for SimMetrics {
    fn pod_metrics(&self) -> BoxFuture<'_, Result<Vec<PodMetrics>, GuestError>> {
        let now = self.0.now();
        let pods = self.0.system().pod_metrics(now);
        Box::pin(async move { Ok(pods) })
    }
}

/// Why a simulation cannot run.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// The model's parameters.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The autoscaler's spec.
    #[error("{name}: {source}")]
    Autoscaler {
        /// The autoscaler.
        name: String,
        /// What the engine refused.
        source: AutoscalerError,
    },
    /// The trace would take more model steps than a simulation may.
    #[error(
        "{steps} model steps ({seconds:.0} s of trace at a {step_seconds} s step), over the cap of {max}: use a coarser --step or a shorter trace"
    )]
    TooLong {
        /// Steps the trace needs.
        steps: u64,
        /// The trace's length.
        seconds: f64,
        /// The model's step.
        step_seconds: f64,
        /// The cap, [`MAX_STEPS`].
        max: u64,
    },
}

/// The most model steps one simulation runs: 40 million, over a year at one-second steps
/// (a few minutes of CPU); a trace spanning centuries is refused instead of running for days.
pub const MAX_STEPS: u64 = 40_000_000;

/// Replays `trace` through `spec` with `policies` (the loaded guests, or any [`Policy`]) on
/// `model`. `progress` is told the fraction done now and then.
///
/// [`Policy`]: crate::engine::Policy
pub async fn simulate(
    spec: &AutoscalerSpec,
    policies: impl Into<Policies>,
    trace: &Trace,
    model: &SystemModel,
    progress: &mut dyn FnMut(f64),
) -> Result<PolicyReport, SimulateError> {
    model.validate()?;
    let step_seconds = model.step.0.as_secs_f64();
    let steps = (trace.duration_secs() / step_seconds).ceil() as u64;
    if steps > MAX_STEPS {
        return Err(SimulateError::TooLong {
            steps,
            seconds: trace.duration_secs(),
            step_seconds,
            max: MAX_STEPS,
        });
    }
    let epoch_ms = trace.start_ms().unwrap_or(DEFAULT_EPOCH_MS);
    // A given start outside the bounds is kept, as a real target can be: the first run
    // brings it inside, as the HPA does.
    let initial = model.initial_replicas.unwrap_or(spec.scaling.min_replicas);
    let world = Arc::new(World {
        system: Mutex::new(System::new(model.clone(), initial, epoch_ms)),
        now_ms: AtomicI64::new(0),
        name: spec.name.clone(),
    });
    let clock_world = world.clone();
    let clock = Arc::new(move || epoch_ms + clock_world.now_ms.load(Ordering::Relaxed));
    let state = spec
        .scaling
        .capabilities
        .state
        .as_ref()
        .map(|_| Arc::new(MemoryState::default()) as Arc<dyn StateStore>);
    let autoscaler =
        Autoscaler::builder(spec.clone(), Arc::new(SimTarget(world.clone())), policies)
            .guest_state(state)
            .clock(clock)
            .build()
            .map_err(|source| SimulateError::Autoscaler {
                name: spec.name.clone(),
                source,
            })?;

    let step_ms = i64::try_from(model.step.0.as_millis())
        .unwrap_or(i64::MAX)
        .max(1);
    let interval_ms = i64::try_from(spec.scaling.interval.0.as_millis())
        .unwrap_or(i64::MAX)
        .max(1);
    let end_ms = (trace.duration_secs() * 1000.0) as i64;
    let mut tally = Tally::new(model);
    let mut cursor = trace.cursor();
    world.system().prime(cursor.load(0.0));
    let mut next_run_ms = 0;
    let mut last_desired = world.system().desired();
    let started = Instant::now();
    let mut next_progress = 0.0;
    let mut now_ms = 0;
    while now_ms < end_ms {
        world.now_ms.store(now_ms, Ordering::Relaxed);
        let now = now_ms as f64 / 1000.0;
        let load = cursor.load(now);
        if now_ms >= next_run_ms {
            let record = autoscaler.run_once().await;
            tally.run(record.error.is_some());
            let desired = world.system().desired();
            if desired != last_desired {
                tally.scale_event();
                last_desired = desired;
            }
            next_run_ms += interval_ms;
            let step = world.system().step(now, load);
            tally.point(now, &step, desired);
            tally.step(&step);
        } else {
            let step = world.system().step(now, load);
            tally.step(&step);
        }
        let done = now_ms as f64 / end_ms as f64;
        if done >= next_progress {
            progress(done);
            next_progress += 0.01;
        }
        now_ms += step_ms;
    }
    progress(1.0);
    Ok(tally.finish(&spec.name, started.elapsed()))
}
