//! Watch caches shared by every Kubernetes target of a process: one reflector per namespace
//! and kind in use (the workload kinds, and pods), as the HPA's shared informers.
//!
//! A run then reads its workload object and its pods from memory instead of sending a GET and
//! a LIST to the API server. A cache is started by the first target that needs it and stopped
//! when the last one is dropped.
//!
//! Staleness is bounded, and a stale read can never be written:
//! - A cache is used only while its watch is healthy: from the end of a (re)list until the
//!   next watch error. A silent connection ends in the caches' client's read timeout
//!   ([`CACHE_READ_TIMEOUT`]), an error; the server ends each watch after
//!   [`WATCH_TIMEOUT_SECS`] and the watcher resumes from the last resourceVersion. While it is not healthy, targets read the API server directly.
//! - Healthy, it lags the API server by the delivery of one watch event.
//! - A decision made on a stale object is written with that object's resourceVersion, which
//!   the API server refuses (409); the target then re-reads and writes only if the replica
//!   count is still the one decided on.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject};
use kube::discovery::{ApiCapabilities, ApiResource};
use kube::runtime::reflector::{ObjectRef, Store, reflector, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio::task::JoinHandle;

/// How long the API server keeps one watch open (`timeoutSeconds`). Inside the read timeout
/// of the caches' client ([`CACHE_READ_TIMEOUT`]), so a quiet watch ends normally rather than
/// in an error.
pub const WATCH_TIMEOUT_SECS: u32 = 60;

/// The read timeout of the client the caches use: a connection silent for longer (a dead
/// peer) fails the watch, and the cache reads directly until it is listed again.
pub const CACHE_READ_TIMEOUT: Duration = Duration::from_secs(75);

/// How long a run waits for a new cache's first list before reading the API server directly
/// (client-go's informers make controllers wait for it too).
pub(crate) const FIRST_SYNC_WAIT: Duration = Duration::from_secs(10);

/// One reflector: its store, whether it is usable, and its task (stopped on drop).
pub struct Cache<K>
where
    K: Resource + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    store: Store<K>,
    dynamic_type: K::DynamicType,
    namespace: String,
    healthy: Arc<AtomicBool>,
    /// Bumped after every change the store took (and every interruption): equal values
    /// mean an unchanged store, so a target may keep what it last selected from it.
    generation: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl<K> Drop for Cache<K>
where
    K: Resource + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<K> Cache<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    /// Whether the cache is listed and its watch is running.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Waits (at most [`FIRST_SYNC_WAIT`]) for the first list, so that a thousand targets
    /// starting together do not each read the API server while their cache fills.
    pub(crate) async fn first_sync(&self) {
        let _ = tokio::time::timeout(FIRST_SYNC_WAIT, self.store.wait_until_ready()).await;
    }

    /// The object `name`, when the cache is healthy: `Some(None)` means it does not exist.
    pub fn get(&self, name: &str) -> Option<Option<Arc<K>>> {
        if !self.healthy() {
            return None;
        }
        let key = ObjectRef::new_with(name, self.dynamic_type.clone()).within(&self.namespace);
        Some(self.store.get(&key))
    }

    /// The store's generation: read it before reading the store, and a later equal value
    /// means nothing changed since.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The objects `keep` selects, when the cache is healthy.
    pub fn filter(&self, keep: impl Fn(&K) -> bool) -> Option<Vec<Arc<K>>> {
        self.healthy().then(|| self.store.state_filter(keep))
    }
}

/// Counts of the caches' work, for tests and `/metrics`.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Reflectors started.
    pub started: AtomicU64,
    /// Watch errors (each makes its cache unusable until relisted).
    pub errors: AtomicU64,
}

/// How long a discovered kind is trusted without asking the API server again.
pub const KIND_TTL: Duration = Duration::from_secs(300);

/// A discovered kind: (apiVersion, kind) → its resource and capabilities, and when.
type KnownKinds = Mutex<HashMap<(String, String), (ApiResource, ApiCapabilities, Instant)>>;

/// Live caches by key; a cache lives as long as a target holds it.
type Registry<Q, C> = Mutex<HashMap<Q, Weak<C>>>;

/// The caches of one process, by namespace and kind. Their client should be one of their
/// own (see [`cache_client`]): the lists and watches that keep every target's reads off the
/// API server must not queue behind the targets' status writes.
pub struct WatchCaches {
    /// The targets' reads and writes (under the caller's request budget).
    client: Client,
    /// The caches' lists and watches.
    watches: Client,
    /// By (namespace, apiVersion/plural).
    objects: Registry<(String, String), Cache<DynamicObject>>,
    /// By namespace.
    pods: Registry<String, Cache<Pod>>,
    kinds: KnownKinds,
    stats: Arc<CacheStats>,
}

impl WatchCaches {
    /// No caches yet; they are started on first use, through `client`.
    /// Targets connected through these caches use `targets`; the caches list and watch
    /// through `watches`, a client whose read timeout outlasts [`WATCH_TIMEOUT_SECS`] (see
    /// [`cache_client`]).
    pub fn new(targets: Client, watches: Client) -> Self {
        WatchCaches {
            client: targets,
            watches,
            objects: Mutex::default(),
            pods: Mutex::default(),
            kinds: Mutex::default(),
            stats: Arc::default(),
        }
    }

    /// The client targets connected through these caches use.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A kind discovered less than [`KIND_TTL`] ago.
    pub(super) fn known_kind(
        &self,
        key: &(String, String),
    ) -> Option<(ApiResource, ApiCapabilities)> {
        let kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        let (resource, capabilities, at) = kinds.get(key)?;
        (at.elapsed() < KIND_TTL).then(|| (resource.clone(), capabilities.clone()))
    }

    /// Remembers a discovered kind (failures are never remembered).
    pub(super) fn remember_kind(
        &self,
        key: (String, String),
        found: (ApiResource, ApiCapabilities),
    ) {
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        kinds.insert(key, (found.0, found.1, Instant::now()));
    }

    /// What the caches have done so far.
    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    /// The cache of `resource` objects in `namespace`, started if no target holds it.
    pub fn objects(&self, namespace: &str, resource: &ApiResource) -> Arc<Cache<DynamicObject>> {
        let key = (
            namespace.to_owned(),
            resource.api_version.clone() + "/" + &resource.plural,
        );
        shared(&self.objects, key, || {
            let api = Api::namespaced_with(self.watches.clone(), namespace, resource);
            start(
                api,
                Writer::new(resource.clone()),
                resource.clone(),
                namespace,
                &self.stats,
            )
        })
    }

    /// The cache of the pods in `namespace`, started if no target holds it.
    pub fn pods(&self, namespace: &str) -> Arc<Cache<Pod>> {
        shared(&self.pods, namespace.to_owned(), || {
            let api = Api::namespaced(self.watches.clone(), namespace);
            start(api, Writer::default(), (), namespace, &self.stats)
        })
    }
}

/// The live cache under `key`, or a new one from `make`.
fn shared<Q: Eq + Hash, C>(map: &Registry<Q, C>, key: Q, make: impl FnOnce() -> C) -> Arc<C> {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(live) = map.get(&key).and_then(Weak::upgrade) {
        return live;
    }
    // Forget caches nobody holds any more.
    map.retain(|_, cache| cache.strong_count() > 0);
    let cache = Arc::new(make());
    map.insert(key, Arc::downgrade(&cache));
    cache
}

fn start<K>(
    api: Api<K>,
    writer: Writer<K>,
    dynamic_type: K::DynamicType,
    namespace: &str,
    stats: &Arc<CacheStats>,
) -> Cache<K>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    let store = writer.as_reader();
    let healthy = Arc::new(AtomicBool::new(false));
    let generation = Arc::new(AtomicU64::new(0));
    stats.started.fetch_add(1, Ordering::Relaxed);
    let config = watcher::Config::default()
        .timeout(WATCH_TIMEOUT_SECS)
        // Listed from the API server's own watch cache, not from etcd.
        .any_semantic();
    let stream = reflector(
        writer,
        watcher(api, config)
            .default_backoff()
            // Nobody reads who wrote which field; it is most of a small object's size.
            .modify(|object| object.managed_fields_mut().clear()),
    );
    let task = tokio::spawn({
        let healthy = healthy.clone();
        let generation = generation.clone();
        let stats = stats.clone();
        let namespace = namespace.to_owned();
        async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                // The reflector applied the event to the store before passing it on.
                generation.fetch_add(1, Ordering::AcqRel);
                match event {
                    Ok(watcher::Event::InitDone) => healthy.store(true, Ordering::Release),
                    Ok(_) => {}
                    Err(error) => {
                        healthy.store(false, Ordering::Release);
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%namespace, %error, "watch cache interrupted; reading the API server directly until it is listed again");
                    }
                }
            }
        }
    });
    Cache {
        store,
        dynamic_type,
        namespace: namespace.to_owned(),
        healthy,
        generation,
        task,
    }
}

/// A client for [`WatchCaches`]: `config` with the autoscaler's timeouts, except a read timeout
/// of [`CACHE_READ_TIMEOUT`] for the watches, and no request budget (one list and one watch a
/// minute per namespace and kind in use).
pub fn cache_client(config: kube::Config) -> Result<Client, crate::targets::TargetError> {
    super::client_for_reads(config, CACHE_READ_TIMEOUT)
}
