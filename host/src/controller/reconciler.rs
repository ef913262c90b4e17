//! Keeps one engine task per `WasmAutoscaler`: started when the resource appears, rebuilt
//! (history carried over) when its spec changes, stopped when it goes. Resources that cannot
//! run (bad spec, policy that does not load, target missing) are retried with backoff and
//! never scale anything meanwhile.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::runtime::events::Recorder;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::crd::{WasmAutoscaler, WasmAutoscalerSpec};
use super::status::StatusWriter;
use crate::config::load_spec_guests;
use crate::engine::store::{EngineState, MemoryBackend};
use crate::engine::{Autoscaler, AutoscalerSpec, Engine, RunObserver, RunRecord, system_clock};
use crate::policies::PolicySources;
use crate::sandbox::{FileState, StateStore};
use crate::targets::Target;
use crate::targets::kubernetes::{KubernetesRef, KubernetesTarget};

/// First and longest wait before retrying a resource that could not start.
const RETRY_MIN: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(300);

/// What the reconciler shares with every task.
pub struct Shared {
    /// Client for targets, status and Events.
    pub client: Client,
    /// The resources watched (one namespace or all).
    pub api: Api<WasmAutoscaler>,
    /// Where autoscalers are registered for the REST API.
    pub engine: Arc<Engine>,
    /// Policy loading.
    pub sources: Arc<PolicySources>,
    /// Event recorder (one, so repeated Events are aggregated).
    pub recorder: Arc<Recorder>,
    /// Also told of every run (Prometheus metrics).
    pub observer: Option<Arc<dyn RunObserver>>,
    /// Guest `state` capability files.
    pub state_dir: PathBuf,
}

struct Running {
    spec: WasmAutoscalerSpec,
    stop: CancellationToken,
    task: JoinHandle<()>,
    autoscaler: Arc<Autoscaler>,
}

struct Retry {
    resource: WasmAutoscaler,
    at: Instant,
    backoff: Duration,
}

/// Forwards run records to the resource's status task.
struct RecordSink(mpsc::UnboundedSender<RunRecord>);

impl RunObserver for RecordSink {
    fn observe(&self, _: &AutoscalerSpec, record: &RunRecord) {
        let _ = self.0.send(record.clone());
    }
}

/// The reconciler of one leadership term.
pub struct Reconciler {
    shared: Arc<Shared>,
    running: HashMap<String, Running>,
    retries: HashMap<String, Retry>,
}

impl Reconciler {
    /// A reconciler with nothing running yet.
    pub fn new(shared: Arc<Shared>) -> Self {
        Reconciler {
            shared,
            running: HashMap::new(),
            retries: HashMap::new(),
        }
    }

    /// Watches until `stop`, then stops every task: gracefully (in-flight runs finish), or at
    /// once with `abort` set by the caller through [`Reconciler::shutdown`].
    pub async fn run(&mut self, stop: &CancellationToken) {
        // The server ends each watch after 10 s, inside the client's 15 s read timeout; the watcher
        // then resumes from the last resourceVersion it saw.
        let config = watcher::Config::default().timeout(10);
        let stream = watcher(self.shared.api.clone(), config).default_backoff();
        let mut stream = pin!(stream);
        let mut listed: Option<HashSet<String>> = None;
        let mut retry_tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let event = tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                _ = retry_tick.tick() => {
                    self.retry_due().await;
                    continue;
                }
                event = stream.next() => event,
            };
            match event {
                Some(Ok(watcher::Event::Init)) => listed = Some(HashSet::new()),
                Some(Ok(watcher::Event::InitApply(resource))) => {
                    if let Some(keys) = listed.as_mut() {
                        keys.insert(resource.key());
                    }
                    self.apply(resource).await;
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    // A re-list: whatever was not listed was deleted while the watch was down.
                    if let Some(keys) = listed.take() {
                        let gone: Vec<String> = self
                            .running
                            .keys()
                            .chain(self.retries.keys())
                            .filter(|k| !keys.contains(*k))
                            .cloned()
                            .collect();
                        for key in gone {
                            self.remove(&key).await;
                        }
                    }
                }
                Some(Ok(watcher::Event::Apply(resource))) => self.apply(resource).await,
                Some(Ok(watcher::Event::Delete(resource))) => self.remove(&resource.key()).await,
                Some(Err(error)) => tracing::warn!(%error, "watching WasmAutoscalers"),
                None => return,
            }
        }
    }

    /// Stops every task: at once (`abort`, the lease was lost and another replica may act
    /// already) or after in-flight runs finish.
    pub async fn shutdown(&mut self, abort: bool) {
        let keys: Vec<String> = self.running.keys().cloned().collect();
        for key in keys {
            if let Some(running) = self.running.remove(&key) {
                self.shared.engine.remove(&key);
                if abort {
                    running.task.abort();
                }
                running.stop.cancel();
                let _ = running.task.await;
            }
        }
        self.retries.clear();
    }

    /// Number of resources with a running task.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    async fn retry_due(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .retries
            .iter()
            .filter(|(_, r)| r.at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            if let Some(retry) = self.retries.remove(&key) {
                self.start(retry.resource, retry.backoff).await;
            }
        }
    }

    async fn remove(&mut self, key: &str) {
        self.retries.remove(key);
        if let Some(running) = self.running.remove(key) {
            self.shared.engine.remove(key);
            running.stop.cancel();
            let _ = running.task.await;
            tracing::info!(autoscaler = %key, "stopped: resource deleted");
        }
    }

    async fn apply(&mut self, resource: WasmAutoscaler) {
        let key = resource.key();
        if resource.metadata.deletion_timestamp.is_some() {
            self.remove(&key).await;
            return;
        }
        // Status writes come back as watch events too; only a changed spec matters.
        if self
            .running
            .get(&key)
            .is_some_and(|r| r.spec == resource.spec)
        {
            return;
        }
        if self
            .retries
            .get(&key)
            .is_some_and(|r| r.resource.spec == resource.spec)
        {
            return;
        }
        self.retries.remove(&key);
        self.start(resource, RETRY_MIN).await;
    }

    /// (Re)starts the task of `resource`; on failure schedules a retry after `backoff`.
    async fn start(&mut self, resource: WasmAutoscaler, backoff: Duration) {
        let key = resource.key();
        let mut writer = StatusWriter::new(
            Api::namespaced(
                self.shared.client.clone(),
                &resource.namespace().unwrap_or_default(),
            ),
            self.shared.recorder.clone(),
            &resource,
        );
        // History to continue from: the running task's (a spec edit; it is stopped first, so
        // its last run is in the history), else the status's (a restart or failover).
        let state = match self.running.remove(&key) {
            Some(old) => {
                self.shared.engine.remove(&key);
                old.stop.cancel();
                let _ = old.task.await;
                old.autoscaler.engine_state().await
            }
            None => resource
                .status
                .as_ref()
                .and_then(|s| s.engine_state.clone())
                .unwrap_or_default(),
        };
        match self.build(&resource, state).await {
            Ok((autoscaler, records)) => {
                let state = autoscaler.engine_state().await;
                writer.started(&autoscaler.guest_digests(), &state).await;
                self.shared.engine.insert(&key, autoscaler.clone());
                let stop = CancellationToken::new();
                let task =
                    tokio::spawn(supervise(autoscaler.clone(), records, writer, stop.clone()));
                tracing::info!(autoscaler = %key, "started");
                self.running.insert(
                    key,
                    Running {
                        spec: resource.spec.clone(),
                        stop,
                        task,
                        autoscaler,
                    },
                );
            }
            Err((reason, message)) => {
                // Fail static: a resource that cannot run as written scales nothing, not even
                // with its previous spec (stopped above).
                tracing::warn!(autoscaler = %key, %reason, %message, "cannot start; will retry");
                writer.failed(reason, &message).await;
                self.retries.insert(
                    key,
                    Retry {
                        resource,
                        at: Instant::now() + backoff,
                        backoff: (backoff * 2).min(RETRY_MAX),
                    },
                );
            }
        }
    }

    async fn build(
        &self,
        resource: &WasmAutoscaler,
        state: EngineState,
    ) -> Result<(Arc<Autoscaler>, mpsc::UnboundedReceiver<RunRecord>), (&'static str, String)> {
        let spec = resource.autoscaler_spec().map_err(|e| ("InvalidSpec", e))?;
        let guests = load_spec_guests(&spec, &self.shared.sources)
            .await
            .map_err(|e| ("PolicyLoadFailed", format!("{e:#}")))?;
        let reference = KubernetesRef {
            api_version: resource.spec.scale_target_ref.api_version.clone(),
            kind: resource.spec.scale_target_ref.kind.clone(),
            name: resource.spec.scale_target_ref.name.clone(),
            namespace: Some(spec.namespace.clone()),
        };
        let target: Arc<dyn Target> = Arc::new(
            KubernetesTarget::connect(self.shared.client.clone(), reference)
                .await
                .map_err(|e| ("TargetUnavailable", e.to_string()))?,
        );
        let guest_state = spec.capabilities.state.as_ref().map(|_| {
            Arc::new(FileState::new(self.shared.state_dir.join(format!(
                "{}.{}.guest-state.json",
                spec.namespace, spec.name
            )))) as Arc<dyn StateStore>
        });
        let (records, receiver) = mpsc::unbounded_channel();
        let mut autoscaler = Autoscaler::new(
            spec,
            target,
            guests,
            guest_state,
            Arc::new(MemoryBackend::new(state)),
            system_clock(),
        )
        .map_err(|e| ("InvalidSpec", e))?
        .with_observer(Arc::new(RecordSink(records)));
        if let Some(observer) = &self.shared.observer {
            autoscaler = autoscaler.with_observer(observer.clone());
        }
        Ok((Arc::new(autoscaler), receiver))
    }
}

/// Runs one autoscaler and writes its status after every run, until `stop`.
async fn supervise(
    autoscaler: Arc<Autoscaler>,
    mut records: mpsc::UnboundedReceiver<RunRecord>,
    mut writer: StatusWriter,
    stop: CancellationToken,
) {
    let mut run = pin!(autoscaler.clone().run(stop));
    loop {
        tokio::select! {
            biased;
            Some(record) = records.recv() => {
                let state = autoscaler.engine_state().await;
                writer.run(&record, &state).await;
            }
            _ = &mut run => break,
        }
    }
    while let Ok(record) = records.try_recv() {
        let state = autoscaler.engine_state().await;
        writer.run(&record, &state).await;
    }
}
