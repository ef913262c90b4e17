//! Keeps one task per `WasmAutoscaler`. The task checks the resource against the operator's
//! bounds, loads its policies and connects its target (never in the watch loop: a slow
//! source delays only its own resource), then takes over from the task of the previous spec
//! (history carried over) and runs until the resource changes or goes. A resource that cannot
//! run (out of bounds, bad spec, policy that does not load, target missing) is retried with
//! backoff by its own task and never scales anything meanwhile.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle};
use tokio_util::sync::CancellationToken;

use super::bounds::TenantBounds;
use super::crd::{WasmAutoscaler, WasmAutoscalerSpec};
use super::events::EventSink;
use super::status::StatusWriter;
use crate::engine::store::{EngineState, MemoryBackend};
use crate::engine::{Autoscaler, AutoscalerSpec, Fleet, Guests, RunObserver, RunRecord};
use crate::host::{guest_state, load_spec_guests_under};
use crate::policies::PolicySources;
use crate::sandbox::StateStore;
use crate::sandbox::network::DeniedNetworks;
use crate::targets::Target;
use crate::targets::kubernetes::KubernetesRef;
use crate::targets::kubernetes::cache::WatchCaches;

/// First and longest wait before retrying a resource that could not start.
const RETRY_MIN: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(300);

/// What the reconciler shares with every task.
pub struct ReconcileEnv {
    /// Client for targets, status and Events.
    pub client: Client,
    /// The resources watched (one namespace or all).
    pub api: Api<WasmAutoscaler>,
    /// Where autoscalers are registered for the REST API.
    pub engine: Arc<Fleet>,
    /// Policy loading.
    pub sources: Arc<PolicySources>,
    /// Events about the resources.
    pub events: Arc<EventSink>,
    /// Also told of every run (Prometheus metrics).
    pub observer: Option<Arc<dyn RunObserver>>,
    /// Guest `state` capability files.
    pub state_dir: PathBuf,
    /// What a resource may ask for.
    pub bounds: TenantBounds,
    /// Networks guests never reach (for refusing patterns that name them).
    pub denied: DeniedNetworks,
    /// Workload objects and pods, watched once per namespace and kind for every target.
    pub caches: Arc<WatchCaches>,
    /// Resources being prepared (policy read, hashed and loaded; target connected) at once:
    /// a restart over ten thousand resources must not hold ten thousand policy files in
    /// memory together.
    pub preparing: Arc<tokio::sync::Semaphore>,
}

/// [`ReconcileEnv::preparing`]'s permits: enough to keep both cores busy while some wait on I/O.
pub(crate) const CONCURRENT_PREPARES: usize = 8;

/// The autoscaler a task runs, once it runs: the next task of the same resource takes its
/// history from here.
type Live = Arc<Mutex<Option<Arc<Autoscaler>>>>;

/// A resource's task.
struct Task {
    stop: CancellationToken,
    task: JoinHandle<()>,
    live: Live,
}

impl Task {
    /// Stops the task (a run in progress finishes) and returns the history it ends with.
    async fn finish(self) -> Option<EngineState> {
        self.stop.cancel();
        let _ = self.task.await;
        let live = self.live.lock().ok().and_then(|l| l.clone());
        match live {
            Some(autoscaler) => Some(autoscaler.engine_state().await),
            None => None,
        }
    }
}

struct Running {
    spec: SpecVersion,
    task: Task,
    /// Stop tokens and abort handles of earlier tasks of this resource that the current one
    /// is still replacing: a shutdown reaches them too.
    retiring: Vec<(CancellationToken, AbortHandle)>,
}

/// Which spec a task runs, to tell a spec edit from the watch echo of a status write.
#[derive(Debug, PartialEq)]
enum SpecVersion {
    /// The API server counts spec changes in `metadata.generation` (a new object of the same
    /// name has another uid): a few bytes instead of a copy of the spec per resource.
    Generation {
        uid: Option<String>,
        generation: i64,
    },
    /// A server that sets no generation: the spec itself.
    Spec(Box<WasmAutoscalerSpec>),
}

impl SpecVersion {
    fn of(resource: WasmAutoscaler) -> Self {
        match resource.metadata.generation {
            Some(generation) => SpecVersion::Generation {
                uid: resource.metadata.uid,
                generation,
            },
            None => SpecVersion::Spec(Box::new(resource.spec)),
        }
    }

    fn is_of(&self, resource: &WasmAutoscaler) -> bool {
        match self {
            SpecVersion::Generation { uid, generation } => {
                resource.metadata.generation == Some(*generation) && resource.metadata.uid == *uid
            }
            SpecVersion::Spec(spec) => {
                resource.metadata.generation.is_none() && **spec == resource.spec
            }
        }
    }
}

/// Forwards run records to the resource's status task.
/// Boxed records: a channel allocates its slots 32 at a time, and 32 records are 8 KB for
/// every autoscaler a controller runs.
struct RecordSink(mpsc::UnboundedSender<Box<RunRecord>>);

impl RunObserver for RecordSink {
    fn observe(&self, _: &AutoscalerSpec, record: &RunRecord) {
        let _ = self.0.send(Box::new(record.clone()));
    }
}

/// The reconciler of one leadership term.
pub(crate) struct Reconciler {
    shared: Arc<ReconcileEnv>,
    running: HashMap<String, Running>,
    /// (shard, shards): only the resources of this shard are run.
    shard: Option<(u32, u32)>,
}

impl Reconciler {
    /// A reconciler with nothing running yet.
    pub fn new(shared: Arc<ReconcileEnv>) -> Self {
        Reconciler {
            shared,
            running: HashMap::new(),
            shard: None,
        }
    }

    /// Runs only the resources of `shard` out of `shards` (see [`super::shards`]).
    pub(crate) fn only_shard(mut self, shard: u32, shards: u32) -> Self {
        self.shard = Some((shard, shards));
        self
    }

    /// Watches until `stop`; the caller then stops every task through
    /// [`Reconciler::shutdown`].
    pub async fn run(&mut self, stop: &CancellationToken) {
        // The server ends each watch after 10 s, inside the client's 15 s read timeout; the watcher
        // then resumes from the last resourceVersion it saw.
        let config = watcher::Config::default().timeout(10);
        let stream = watcher(self.shared.api.clone(), config).default_backoff();
        let mut stream = pin!(stream);
        let mut listed: Option<HashSet<String>> = None;
        loop {
            let event = tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                event = stream.next() => event,
            };
            match event {
                Some(Ok(watcher::Event::Init)) => listed = Some(HashSet::new()),
                Some(Ok(watcher::Event::InitApply(resource))) => {
                    if let Some(keys) = listed.as_mut() {
                        keys.insert(resource.key());
                    }
                    self.apply(resource);
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    // A re-list: whatever was not listed was deleted while the watch was down.
                    if let Some(keys) = listed.take() {
                        let gone: Vec<String> = self
                            .running
                            .keys()
                            .filter(|k| !keys.contains(*k))
                            .cloned()
                            .collect();
                        for key in gone {
                            self.remove(&key);
                        }
                    }
                }
                Some(Ok(watcher::Event::Apply(resource))) => self.apply(resource),
                Some(Ok(watcher::Event::Delete(resource))) => self.remove(&resource.key()),
                Some(Err(error)) => tracing::warn!(%error, "watching WasmAutoscalers"),
                None => return,
            }
        }
    }

    /// Stops every task: first every one is told to stop, so no new scale cycle starts
    /// anywhere, then they are awaited (in-flight runs finish) for at most `within`, after
    /// which the rest are ended. With `abort` (the lease was lost and another replica may act
    /// already) they are ended at once.
    pub async fn shutdown(&mut self, abort: bool, within: Duration) {
        let running: Vec<(String, Running)> = self.running.drain().collect();
        for (key, r) in &running {
            self.shared.engine.remove(key);
            r.task.stop.cancel();
            for (stop, _) in &r.retiring {
                stop.cancel();
            }
        }
        let deadline = tokio::time::Instant::now() + if abort { Duration::ZERO } else { within };
        for (key, r) in running {
            let handle = r.task.task.abort_handle();
            if tokio::time::timeout_at(deadline, r.task.task)
                .await
                .is_err()
            {
                tracing::warn!(autoscaler = %key, "still running at the shutdown deadline; ended");
                handle.abort();
                for (_, retiring) in &r.retiring {
                    retiring.abort();
                }
            }
        }
    }

    /// Stops a deleted resource's task without waiting in the watch loop.
    fn remove(&mut self, key: &str) {
        if let Some(running) = self.running.remove(key) {
            self.shared.engine.remove(key);
            running.task.stop.cancel();
            for (stop, _) in &running.retiring {
                stop.cancel();
            }
            tracing::info!(autoscaler = %key, "stopping: resource deleted");
        }
    }

    fn apply(&mut self, resource: WasmAutoscaler) {
        let key = resource.key();
        if let Some((shard, shards)) = self.shard
            && super::shards::shard_of(&key, shards) != shard
        {
            return;
        }
        if resource.metadata.deletion_timestamp.is_some() {
            self.remove(&key);
            return;
        }
        // Status writes come back as watch events too; only a changed spec matters.
        if self
            .running
            .get(&key)
            .is_some_and(|r| r.spec.is_of(&resource))
        {
            return;
        }
        let previous = self.running.remove(&key);
        let mut retiring = Vec::new();
        if let Some(p) = &previous {
            retiring.push((p.task.stop.clone(), p.task.task.abort_handle()));
            // Tasks that have ended need no reaching any more.
            retiring.extend(p.retiring.iter().filter(|(_, h)| !h.is_finished()).cloned());
        }
        let stop = CancellationToken::new();
        let live: Live = Arc::default();
        let task = tokio::spawn(resource_task(
            self.shared.clone(),
            Box::new(resource.clone()),
            previous.map(|p| p.task),
            stop.clone(),
            live.clone(),
        ));
        self.running.insert(
            key,
            Running {
                spec: SpecVersion::of(resource),
                task: Task { stop, task, live },
                retiring,
            },
        );
    }
}

/// Why a resource cannot run: the condition reason and the message.
struct Refused {
    reason: &'static str,
    message: String,
    /// Retrying cannot help until the resource (or the operator's bounds) change.
    permanent: bool,
}

fn refused(reason: &'static str, message: impl Into<String>) -> Refused {
    Refused {
        reason,
        message: message.into(),
        permanent: false,
    }
}

/// What a resource needs before it can take over: everything but its history.
struct Prepared {
    spec: AutoscalerSpec,
    guests: Guests,
    target: Arc<dyn Target>,
    guest_state: Option<Arc<dyn StateStore>>,
}

/// The life of one resource's spec: prepare (retrying with backoff), take over from the
/// previous task, run until `stop`.
async fn resource_task(
    shared: Arc<ReconcileEnv>,
    resource: Box<WasmAutoscaler>,
    previous: Option<Task>,
    stop: CancellationToken,
    live: Live,
) {
    // The start is boxed and freed once it is done: this task lives as long as the
    // autoscaler, and its size is what every resource holds between runs. Inline, the start's
    // locals (the spec, the loaded guests, the backoff) made it 5.9 KB; only the supervision
    // (under 1 KB) lives on.
    let started = Box::pin(start(shared, resource, previous, stop.clone(), live)).await;
    if let Some(Started {
        autoscaler,
        records,
        writer,
    }) = started
    {
        supervise(autoscaler, records, writer, stop).await;
    }
}

/// A resource's running autoscaler, with what its supervision needs.
struct Started {
    autoscaler: Arc<Autoscaler>,
    records: mpsc::UnboundedReceiver<Box<RunRecord>>,
    writer: Box<StatusWriter>,
}

/// Prepares a resource until it starts (retrying with backoff) and takes over from the
/// previous task. `None` when `stop` came first, or the resource cannot run as written (its
/// status says why, and it waits for `stop` first).
async fn start(
    shared: Arc<ReconcileEnv>,
    resource: Box<WasmAutoscaler>,
    mut previous: Option<Task>,
    stop: CancellationToken,
    live: Live,
) -> Option<Started> {
    let key = resource.key();
    let mut writer = Box::new(StatusWriter::new(
        Api::namespaced(
            shared.client.clone(),
            &resource.namespace().unwrap_or_default(),
        ),
        shared.events.clone(),
        &resource,
    ));
    // History to continue from: the previous task's (a spec edit), else the status's (a
    // restart or failover).
    let mut inherited: Option<EngineState> = None;
    let mut backoff = RETRY_MIN;
    loop {
        let attempt = tokio::select! {
            biased;
            _ = stop.cancelled() => None,
            // Boxed: loading and connecting hold large futures, which would otherwise size
            // this task for as long as the autoscaler runs.
            prepared = Box::pin(prepare(&shared, &resource)) => Some(prepared),
        };
        // The previous spec's task ends here either way: replaced by this one, or (fail
        // static) by nothing, as a resource that cannot run as written scales nothing.
        if let Some(old) = previous.take()
            && let Some(state) = Box::pin(old.finish()).await
        {
            inherited = Some(state);
        }
        let attempt = attempt?;
        match attempt {
            Ok(prepared) => {
                let state = inherited
                    .take()
                    .or_else(|| {
                        resource
                            .status
                            .as_ref()
                            .and_then(|s| s.engine_state.clone())
                    })
                    .unwrap_or_default();
                let (records, receiver) = mpsc::unbounded_channel();
                let mut autoscaler =
                    match Autoscaler::builder(prepared.spec, prepared.target, prepared.guests)
                        .guest_state(prepared.guest_state)
                        .persistence(Arc::new(MemoryBackend::new(state)))
                        .build()
                    {
                        Ok(a) => a.with_observer(Arc::new(RecordSink(records))),
                        Err(error) => {
                            Box::pin(fail(
                                &shared,
                                &key,
                                &mut writer,
                                &refused(error.reason(), error.to_string()),
                            ))
                            .await;
                            stop.cancelled().await;
                            return None;
                        }
                    };
                if let Some(observer) = &shared.observer {
                    autoscaler = autoscaler.with_observer(observer.clone());
                }
                let autoscaler = Arc::new(autoscaler);
                if let Ok(mut slot) = live.lock() {
                    *slot = Some(autoscaler.clone());
                }
                shared.engine.insert(&key, autoscaler.clone());
                tracing::info!(autoscaler = %key, "started");
                // Its spec and status live on in the autoscaler and the writer.
                return Some(Started {
                    autoscaler,
                    records: receiver,
                    writer,
                });
            }
            Err(why) => {
                Box::pin(fail(&shared, &key, &mut writer, &why)).await;
                if why.permanent {
                    stop.cancelled().await;
                    return None;
                }
                let wait = backoff;
                backoff = (backoff * 2).min(RETRY_MAX);
                tokio::select! {
                    _ = stop.cancelled() => return None,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

async fn fail(shared: &ReconcileEnv, key: &str, writer: &mut StatusWriter, why: &Refused) {
    tracing::warn!(autoscaler = %key, reason = why.reason, message = %why.message, "cannot start");
    shared.engine.remove(key);
    shared.engine.mark_failed(key, why.message.clone());
    writer.failed(why.reason, &why.message).await;
}

/// Checks the resource against the bounds, loads its policies and connects its target.
async fn prepare(shared: &ReconcileEnv, resource: &WasmAutoscaler) -> Result<Prepared, Refused> {
    // Never closed, so acquiring fails only if it were.
    let _permit = shared.preparing.acquire().await.ok();
    let spec = resource
        .autoscaler_spec()
        .map_err(|e| refused(e.reason(), e.to_string()))?;
    shared
        .bounds
        .check(&spec, &shared.denied)
        .map_err(|e| Refused {
            reason: "OutOfBounds",
            message: e.to_string(),
            permanent: true,
        })?;
    // The sources the resource's namespace may use, checked again as the file is read.
    let rules = &shared.bounds.for_namespace(&spec.namespace).sources;
    let guests = load_spec_guests_under(&spec, &shared.sources, rules)
        .await
        .map_err(|e| refused("PolicyLoadFailed", crate::redact::report(e.as_ref())))?;
    let reference = KubernetesRef {
        api_version: resource.spec.scale_target_ref.api_version.clone(),
        kind: resource.spec.scale_target_ref.kind.clone(),
        name: resource.spec.scale_target_ref.name.clone(),
        namespace: Some(spec.namespace.clone()),
    };
    let target: Arc<dyn Target> = Arc::new(
        shared
            .caches
            .connect(reference)
            .await
            .map_err(|e| refused("TargetUnavailable", e.to_string()))?,
    );
    let guest_state = guest_state(
        &spec,
        shared
            .state_dir
            .join(format!("{}.{}.guest-state.json", spec.namespace, spec.name)),
    );
    Ok(Prepared {
        spec,
        guests,
        target,
        guest_state,
    })
}

/// Runs one autoscaler and writes its status after every run, until `stop`.
///
/// The runs go on in a task of their own. Writing a status needs the engine state, whose lock
/// a run holds; were the runs polled by this same task, a run that took longer than the
/// interval would take the lock for the next run while this task waited for it, and neither
/// would ever move again (found with an API server slower than the interval).
async fn supervise(
    autoscaler: Arc<Autoscaler>,
    mut records: mpsc::UnboundedReceiver<Box<RunRecord>>,
    mut writer: Box<StatusWriter>,
    stop: CancellationToken,
) {
    let state = autoscaler.engine_state().await;
    // Aborted with this task (a lost lease aborts the resource's task).
    let mut run = AbortOnDrop(tokio::spawn(autoscaler.clone().run(stop)));
    // The first run comes within half an interval: its write carries the start too, so a
    // thousand resources starting at once cost one write each, not two. Should it be slower,
    // the start is written alone. The writes are boxed, as every large future this task
    // awaits: the task lives as long as the autoscaler, and its size is what every one of
    // them holds between runs (15 KB before, measured with heaptrack on a controller of 2,000).
    let mut start_unwritten = writer.started(&autoscaler.guest_digests(), &state);
    let first_run_due = tokio::time::sleep(first_run_wait(autoscaler.spec().scaling.interval.0));
    let mut first_run_due = pin!(first_run_due);
    let mut queued = Vec::new();
    loop {
        tokio::select! {
            biased;
            Some(record) = records.recv() => {
                start_unwritten = false;
                // Runs that queued behind a slow write (a throttled API) are written once.
                queued.push(record);
                while let Ok(next) = records.try_recv() {
                    queued.push(next);
                }
                let state = autoscaler.engine_state().await;
                Box::pin(writer.runs(&queued, &state)).await;
                queued.clear();
            }
            _ = &mut first_run_due, if start_unwritten => {
                start_unwritten = false;
                Box::pin(writer.write_started()).await;
            }
            _ = &mut run.0 => break,
        }
    }
    while let Ok(record) = records.try_recv() {
        queued.push(record);
    }
    // A start no run followed is left to the next leader, which writes it with its own.
    if !queued.is_empty() {
        let state = autoscaler.engine_state().await;
        Box::pin(writer.runs(&queued, &state)).await;
    }
}

/// How long a started resource's status waits for its first run to carry the start: the
/// first run comes within half an interval and the run grid's step (see `Autoscaler::run`),
/// and a slow guest or target should not keep `Ready` from a reader for long.
fn first_run_wait(interval: Duration) -> Duration {
    (interval / 2 + crate::engine::run_grid_step(interval) + Duration::from_secs(1))
        .min(Duration::from_secs(10))
}

/// A task ended when its handle is dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_waits_past_the_latest_first_run_and_never_long() {
        // The default interval: a first run comes within 7.5 s and a 937.5 ms grid step.
        let interval = Duration::from_secs(15);
        let latest = interval / 2 + interval / 16;
        assert!(first_run_wait(interval) >= latest + Duration::from_millis(500));
        // Long intervals: a reader sees Ready within 10 s whatever the interval.
        assert_eq!(
            first_run_wait(Duration::from_secs(600)),
            Duration::from_secs(10)
        );
    }

    fn resource(uid: &str, generation: Option<i64>, max: u32) -> WasmAutoscaler {
        let mut resource: WasmAutoscaler = serde_json::from_value(serde_json::json!({
            "apiVersion": "wasmscaler.dev/v1alpha1",
            "kind": "WasmAutoscaler",
            "metadata": {"name": "web", "namespace": "apps", "uid": uid},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "policy": "policy:p",
                "maxReplicas": max,
            },
        }))
        .expect("a resource");
        resource.metadata.generation = generation;
        resource
    }

    #[test]
    fn a_spec_version_tells_an_edit_or_a_new_object_from_a_status_echo() {
        let running = SpecVersion::of(resource("a", Some(1), 5));
        let mut echo = resource("a", Some(1), 5);
        echo.status = Some(Default::default());
        assert!(running.is_of(&echo), "a status write keeps the generation");
        assert!(!running.is_of(&resource("a", Some(2), 6)), "an edit");
        assert!(
            !running.is_of(&resource("b", Some(1), 5)),
            "deleted and created again"
        );

        // Without generations, the spec itself decides.
        let running = SpecVersion::of(resource("a", None, 5));
        assert!(matches!(running, SpecVersion::Spec(_)));
        assert!(running.is_of(&resource("a", None, 5)));
        assert!(!running.is_of(&resource("a", None, 6)));
    }
}
