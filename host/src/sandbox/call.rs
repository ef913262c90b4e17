//! One guest call: a fresh store, its budgets, the call itself, and the classification of
//! whatever went wrong into a [`SandboxError`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use wasmtime::component::{Instance, ResourceTableError};
use wasmtime::{PoolConcurrencyLimitError, Store, Trap, UpdateDeadline, WasmBacktrace};

use crate::contract::lifecycle_model::{LifecycleEvent, StepOutcome};
use crate::contract::model::{Context, Decision, GuestError, OutputSize, Sample};
use crate::contract::{lifecycle, types};

use super::component::GuestComponent;
use super::error::HostAbort;
use super::host::HostState;
use super::limiter::LimitHit;
use super::output::{Stream, escape_control};
use super::{BoxFuture, CallEnv, SandboxError};

/// A successful call's value and what it cost.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallOutcome<T> {
    /// What the guest returned.
    pub value: T,
    /// Fuel units consumed (instantiation included).
    pub fuel_consumed: u64,
    /// Wall-clock time of the call, instantiation included.
    #[serde(serialize_with = "serialize_micros", rename = "durationMicros")]
    pub duration: Duration,
    /// Log records dropped over the per-call budgets.
    pub logs_dropped: u32,
    /// Bytes of log records and captured stdout/stderr dropped or cut over the budgets.
    pub log_bytes_dropped: u64,
}

fn serialize_micros<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Extra wall-clock time granted beyond the deadline before the host abandons a call stuck in
/// a host function, where the epoch interrupt cannot reach.
const ABANDON_GRACE: Duration = Duration::from_millis(50);

/// What a call does once its instance exists: look its export up and call it, borrowing the
/// call's store.
type Export<W> = Box<
    dyn for<'a> FnOnce(
            &'a mut Store<HostState>,
            Instance,
        ) -> BoxFuture<'a, wasmtime::Result<Result<W, types::Error>>>
        + Send,
>;

impl GuestComponent {
    /// Calls the component's `gather` in a fresh sandbox.
    pub async fn gather(
        &self,
        ctx: &Context,
        env: &CallEnv,
    ) -> Result<CallOutcome<Vec<Sample>>, SandboxError> {
        let indices = self.require_metrics()?.clone();
        let wit_ctx = types::Context::from(ctx);
        let export: Export<_> = Box::new(move |store, instance| {
            Box::pin(async move {
                let guest = indices.load(&mut *store, &instance)?;
                guest.call_gather(store, &wit_ctx).await
            })
        });
        self.call(ctx, env, export, |samples: Vec<types::Sample>| {
            samples.into_iter().map(Sample::from).collect()
        })
        .await
    }

    /// Calls the component's `evaluate` in a fresh sandbox.
    pub async fn evaluate(
        &self,
        ctx: &Context,
        samples: &[Sample],
        env: &CallEnv,
    ) -> Result<CallOutcome<Decision>, SandboxError> {
        let indices = self.require_evaluation()?.clone();
        let wit_ctx = types::Context::from(ctx);
        let wit_samples: Vec<types::Sample> = samples.iter().map(types::Sample::from).collect();
        let export: Export<_> = Box::new(move |store, instance| {
            Box::pin(async move {
                let guest = indices.load(&mut *store, &instance)?;
                guest.call_evaluate(store, &wit_ctx, &wit_samples).await
            })
        });
        self.call(ctx, env, export, Decision::from).await
    }

    /// Calls the component's lifecycle `handle` for one step of `event` in a fresh sandbox.
    pub async fn handle(
        &self,
        event: &LifecycleEvent,
        env: &CallEnv,
    ) -> Result<CallOutcome<StepOutcome>, SandboxError> {
        let indices = self.require_lifecycle()?.clone();
        let wit_event = lifecycle::Event::from(event);
        // Capabilities see the instance as the call's only replica.
        let ctx = Context {
            autoscaler_name: event.instance.group.clone(),
            replicas: vec![crate::contract::model::Replica {
                name: event.instance.id.clone(),
                ready: true,
                start_time_ms: event.instance.launch_time_ms,
                labels: event.instance.tags.clone(),
                address: event.instance.private_address.clone(),
            }],
            ..Context::default()
        };
        let export: Export<_> = Box::new(move |store, instance| {
            Box::pin(async move {
                let guest = indices.load(&mut *store, &instance)?;
                guest.call_handle(store, &wit_event).await
            })
        });
        self.call(&ctx, env, export, StepOutcome::from).await
    }

    /// One call on the guest runtime: a fresh store, instantiation, `export`, then the
    /// classification of whatever went wrong and the output cap.
    async fn call<W: Send + 'static, T: OutputSize + Send + 'static>(
        &self,
        ctx: &Context,
        env: &CallEnv,
        export: Export<W>,
        convert: fn(W) -> T,
    ) -> Result<CallOutcome<T>, SandboxError> {
        // A call that can never run is refused before it queues for a slot.
        self.check_call(env)?;
        let slot = match &self.shared.slots {
            Some(slots) => Some(slots.acquire().await?),
            None => None,
        };
        let (mut store, started, long_running) = self.new_store(ctx, env)?;
        let (pre, env, pool_slots) = (self.pre.clone(), env.clone(), self.shared.pool_slots);
        let ticking = self.shared.ticker.ticking();
        self.shared
            .runtime
            .run(long_running, async move {
                let result = with_deadline(&env, async {
                    let instance = pre.instantiate_async(&mut store).await?;
                    export(&mut store, instance).await
                })
                .await;
                drop(ticking);
                let outcome = finish(
                    store,
                    pool_slots,
                    started,
                    &env,
                    result.map(|r| r.map(convert)),
                )
                .await;
                // The store, and with it the instance's slot, is gone: the next call may have it.
                drop(slot);
                outcome
            })
            .await
    }

    /// The grants and limits a call needs that this component and engine cannot give.
    fn check_call(&self, env: &CallEnv) -> Result<(), SandboxError> {
        self.check_grants(&env.capabilities)?;
        if let Some(max) = self.shared.max_memory_bytes
            && env.limits.memory_bytes > max
        {
            return Err(SandboxError::InvalidLimits(format!(
                "memoryBytes {} exceeds the engine's pool slot of {max} bytes",
                env.limits.memory_bytes
            )));
        }
        Ok(())
    }

    fn new_store(
        &self,
        ctx: &Context,
        env: &CallEnv,
    ) -> Result<(Store<HostState>, Instant, Arc<AtomicBool>), SandboxError> {
        let started = Instant::now();
        let data = HostState::new(ctx, env.clone(), self.shared.http.clone())
            .map_err(SandboxError::State)?;
        let mut store = Store::new(self.pre.engine(), data);
        store.limiter(|state| &mut state.limiter);
        let internal = |e: wasmtime::Error| SandboxError::Internal(format!("{e:#}"));
        store.set_fuel(env.limits.fuel).map_err(internal)?;
        store
            .fuel_async_yield_interval(Some(self.shared.fuel_yield_interval))
            .map_err(internal)?;
        // Every epoch tick the guest yields to the runtime, so no call holds a worker thread
        // longer than one tick (plus one bounded host call); past its deadline it traps. The
        // first yield also marks the call as long-running, which moves it to the guest
        // runtime (see `GuestRuntime::run`).
        let deadline = started + env.limits.timeout();
        let long_running = Arc::new(AtomicBool::new(false));
        let mark = long_running.clone();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                return Ok(UpdateDeadline::Interrupt);
            }
            mark.store(true, Ordering::Relaxed);
            Ok(UpdateDeadline::Yield(1))
        });
        Ok((store, started, long_running))
    }
}

async fn with_deadline<T>(
    env: &CallEnv,
    call: impl Future<Output = wasmtime::Result<T>>,
) -> wasmtime::Result<T> {
    match tokio::time::timeout(env.limits.timeout() + ABANDON_GRACE, call).await {
        Ok(result) => result,
        Err(_elapsed) => Err(HostAbort::Deadline.into()),
    }
}

/// Turns the raw result into the call's outcome: classifies errors, enforces the output cap,
/// commits state on success and forwards captured stdout/stderr to the log.
async fn finish<T: OutputSize>(
    mut store: Store<HostState>,
    pool_slots: u32,
    started: Instant,
    env: &CallEnv,
    result: wasmtime::Result<Result<T, types::Error>>,
) -> Result<CallOutcome<T>, SandboxError> {
    let duration = started.elapsed();
    let fuel_consumed = env.limits.fuel - store.get_fuel().unwrap_or(0);
    let state = store.data_mut();
    let stderr = forward_captured_output(state);
    let max_output = env.limits.max_output_bytes;
    let too_large = |size: usize| {
        (size as u64 > max_output).then_some(SandboxError::OutputTooLarge {
            size: size as u64,
            limit: max_output,
        })
    };
    let value = match result {
        Err(e) => {
            let hit = state.limiter.hit.clone();
            return Err(classify(e, hit, env, pool_slots, &stderr));
        }
        Ok(Err(guest_error)) => {
            let guest_error = GuestError::from(guest_error);
            return Err(too_large(guest_error.output_size()).unwrap_or(guest_error.into()));
        }
        Ok(Ok(value)) => value,
    };
    if let Some(e) = too_large(value.output_size()) {
        return Err(e);
    }
    if let Some((changes, max_bytes)) = state.take_changes()
        && let Some(store) = state.env().state.clone()
    {
        if store.commit_blocks() {
            // A file store writes and syncs: off the async workers, which a few hundred
            // autoscalers' first runs would otherwise hold in fsync one after another.
            tokio::task::spawn_blocking(move || store.commit(&changes, max_bytes))
                .await
                .map_err(|e| SandboxError::State(GuestError::Other(format!("saving state: {e}"))))?
                .map_err(SandboxError::State)?;
        } else {
            store
                .commit(&changes, max_bytes)
                .map_err(SandboxError::State)?;
        }
    }
    Ok(CallOutcome {
        value,
        fuel_consumed,
        duration,
        logs_dropped: state.logs_dropped,
        log_bytes_dropped: state.log_bytes_dropped + state.capture.dropped(),
    })
}

/// Logs what the guest wrote to stdout/stderr, control characters escaped; returns
/// stderr's last lines for trap reports.
fn forward_captured_output(state: &HostState) -> String {
    let _entered = state.span.enter();
    for (name, stream) in [("stdout", Stream::Stdout), ("stderr", Stream::Stderr)] {
        let bytes = state.capture.contents(stream);
        for line in String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|l| !l.is_empty())
        {
            let line = escape_control(line);
            tracing::info!(target: "wasmscaler::guest", stream = name, "{line}");
        }
    }
    let stderr = state.capture.contents(Stream::Stderr);
    let text = String::from_utf8_lossy(&stderr);
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(escape_control)
        .collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}

fn classify(
    err: wasmtime::Error,
    hit: Option<LimitHit>,
    env: &CallEnv,
    pool_slots: u32,
    stderr: &str,
) -> SandboxError {
    if let Some(abort) = err.downcast_ref::<HostAbort>() {
        return match abort {
            HostAbort::HostCallLimit(limit) => SandboxError::HostCallLimit { limit: *limit },
            HostAbort::NotGranted { capability } => SandboxError::not_granted(*capability),
            HostAbort::Deadline => SandboxError::DeadlineExceeded {
                timeout: env.limits.timeout(),
            },
            HostAbort::RandomLimit { asked, limit } => SandboxError::ResourceLimit {
                what: format!(
                    "wasi:random asked for {asked} bytes in one call, over limits.maxRandomBytes ({limit})"
                ),
            },
        };
    }
    let trap = err.downcast_ref::<Trap>().copied();
    match trap {
        Some(Trap::OutOfFuel) => {
            return SandboxError::FuelExhausted {
                budget: env.limits.fuel,
            };
        }
        Some(Trap::Interrupt) => {
            return SandboxError::DeadlineExceeded {
                timeout: env.limits.timeout(),
            };
        }
        _ => {}
    }
    match hit {
        Some(LimitHit::Memory { requested, limit }) => {
            return SandboxError::MemoryLimit { requested, limit };
        }
        Some(LimitHit::Table { requested, limit }) => {
            return SandboxError::ResourceLimit {
                what: format!("a table asked for {requested} elements, over the cap of {limit}"),
            };
        }
        None => {}
    }
    if err.downcast_ref::<PoolConcurrencyLimitError>().is_some() {
        return SandboxError::Busy(pool_slots);
    }
    if err.downcast_ref::<ResourceTableError>().is_some() {
        return SandboxError::ResourceLimit {
            what: format!("{err:#}"),
        };
    }
    let message = match trap {
        Some(trap) => trap.to_string(),
        None => format!("{err:#}"),
    };
    if trap.is_none() && message.contains("resource limit exceeded") {
        return SandboxError::ResourceLimit { what: message };
    }
    let message = if stderr.is_empty() {
        message
    } else {
        format!("{message} (stderr: {stderr})")
    };
    SandboxError::GuestTrap {
        message,
        backtrace: err.downcast_ref::<WasmBacktrace>().map(|b| b.to_string()),
    }
}
