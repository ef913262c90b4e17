//! The sandbox: loads user components and calls them under hard limits.
//!
//! One [`Sandbox`] owns the wasmtime [`Engine`] (component model, fuel metering and epoch
//! interruption on), a [`Linker`] with WASI and the contract's capability imports, an epoch
//! ticker thread, and a two-level cache of compiled components keyed by sha256 (memory, then
//! disk). [`Sandbox::load`] returns a shared [`GuestComponent`]; every call on it runs in a
//! fresh [`Store`](wasmtime::Store), so nothing leaks between calls except through the
//! `state` capability.

pub(crate) mod allowlist;
mod cache;
mod call;
mod capabilities;
pub mod compile;
mod component;
mod componentize;
mod error;
mod host;
mod limiter;
mod limits;
pub mod network;
mod output;
mod runtime;
mod ticker;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use allowlist::{UrlRefusal, glob_match};
pub use cache::sha256;
pub use call::CallOutcome;
pub use capabilities::{
    BoxFuture, CallEnv, Capabilities, Capability, FileState, HttpGrant, HttpResponder, MemoryState,
    PodMetricsProvider, StateChanges, StateGrant, StateStore, StaticPodMetrics, merge_state,
};
pub use compile::{CompileConfig, CompileIsolation, CompileLimit};
pub use component::{ComponentInfo, GuestComponent, World};
pub use componentize::{ComponentizeError, component_from_core_module};
pub use error::SandboxError;
pub use limits::{Limits, PoolingConfig, SandboxConfig};
pub use output::truncate as truncate_text;

use cache::{Digest, DiskCache, Miss};
use compile::Compiler;
use host::HostState;
use runtime::GuestRuntime;

/// Settings every call of every component needs, shared without locking.
pub(crate) struct CallResources {
    http: host::GuestHttp,
    fuel_yield_interval: u64,
    pool_slots: u32,
    /// The pool's slots as permits, so a call waits its turn for one instead of failing the
    /// moment the pool is full; `None` without pooling.
    slots: Option<SlotQueue>,
    max_memory_bytes: Option<u64>,
    /// Where guest calls run, apart from the API and the control plane.
    runtime: GuestRuntime,
    /// Keeps the epoch advancing while a call is in flight.
    ticker: ticker::TickerHandle,
}

/// The pool's instance slots, handed out first come first served.
pub(crate) struct SlotQueue {
    slots: u32,
    permits: Arc<tokio::sync::Semaphore>,
    max_wait: Duration,
}

impl SlotQueue {
    fn new(slots: u32, max_wait: Duration) -> Self {
        SlotQueue {
            slots,
            permits: Arc::new(tokio::sync::Semaphore::new(slots as usize)),
            max_wait,
        }
    }

    /// Waits up to `max_wait` for a slot; the permit is held until the call's store is gone.
    async fn acquire(&self) -> Result<tokio::sync::OwnedSemaphorePermit, SandboxError> {
        match tokio::time::timeout(self.max_wait, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            // Timed out, or closed (never: the semaphore is not closed while the sandbox lives).
            Ok(Err(_)) | Err(_) => Err(SandboxError::Busy(self.slots)),
        }
    }
}

/// Where a loaded component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadSource {
    /// Already loaded in this process.
    Memory,
    /// Deserialized from the on-disk cache.
    Disk,
    /// Compiled from its bytes.
    Compiled,
}

/// A loaded component and how it was obtained.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The component, shared by everyone who loads the same bytes.
    pub component: Arc<GuestComponent>,
    /// Where it came from.
    pub source: LoadSource,
    /// How long loading took.
    pub duration: Duration,
}

/// The shared runtime for guest components. Create one per process.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<HostState>,
    shared: Arc<CallResources>,
    disk: Option<Arc<DiskCache>>,
    loaded: Mutex<HashMap<Digest, Arc<GuestComponent>>>,
    max_component_bytes: u64,
    compiler: Compiler,
    _ticker: ticker::EpochTicker,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Builds the engine, the linker and the epoch ticker.
    pub fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        let internal =
            |what: &str, e: &dyn std::fmt::Display| SandboxError::Internal(format!("{what}: {e}"));
        let mut wasm = wasmtime_config();
        let mut pool_slots = u32::MAX;
        let mut slots = None;
        let mut max_memory_bytes = None;
        if let Some(pooling) = &config.pooling {
            let n = pooling.max_concurrent_calls.max(1);
            let memory = usize::try_from(pooling.max_memory_bytes).unwrap_or(usize::MAX);
            let mut pool = PoolingAllocationConfig::new();
            // A component holds several core instances, memories and tables (an interpreter
            // guest a dozen or more), so each call slot gets room for that many.
            pool.total_component_instances(n)
                .total_core_instances(n.saturating_mul(32))
                .total_memories(n.saturating_mul(8))
                .total_tables(n.saturating_mul(16))
                .total_stacks(n)
                .max_memory_size(memory)
                .max_component_instance_size(8 << 20)
                .max_core_instance_size(8 << 20)
                .table_elements(1 << 20)
                // Reset slots in place rather than with madvise: measured in the fleet
                // benchmark, madvise's TLB shootdowns and the refaults after it were the
                // largest host cost per call.
                .linear_memory_keep_resident(
                    usize::try_from(pooling.keep_resident_bytes).unwrap_or(usize::MAX),
                )
                .table_keep_resident(64 << 10)
                .pagemap_scan(wasmtime::Enabled::Auto)
                .decommit_batch_size(16);
            wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
            pool_slots = n;
            slots = Some(SlotQueue::new(
                n,
                Duration::from_millis(pooling.max_slot_wait_ms),
            ));
            max_memory_bytes = Some(pooling.max_memory_bytes);
        }
        let engine = Engine::new(&wasm).map_err(|e| internal("engine configuration", &e))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| internal("linking WASI", &e))?;
        host::cap_random(&mut linker).map_err(|e| internal("capping wasi:random", &e))?;
        crate::contract::bindings::WasmscalerHost::add_to_linker::<HostState, HasSelf<HostState>>(
            &mut linker,
            |state| state,
        )
        .map_err(|e| internal("linking the capability imports", &e))?;

        let http = host::guest_http(network::DeniedNetworks::new(
            config.http_deny_networks.clone(),
        ))
        .map_err(|e| internal("HTTP client", &e))?;
        let epoch_tick = Duration::from_millis(config.epoch_tick_ms.max(1));
        let runtime = GuestRuntime::start(config.guest_threads)
            .map_err(|e| internal("starting the guest runtime", &e))?;
        let worker_settings = serde_json::to_string(&compile::worker::WorkerSettings::new(
            &config.compile,
            config.max_component_bytes,
        ))
        .map_err(|e| internal("compile worker settings", &e))?;
        let epoch_ticker = ticker::EpochTicker::start(engine.clone(), epoch_tick)
            .map_err(|e| internal("starting the epoch ticker", &e))?;
        Ok(Sandbox {
            disk: config
                .cache_dir
                .as_deref()
                .map(|dir| Arc::new(DiskCache::new(dir, &engine))),
            engine,
            linker,
            shared: Arc::new(CallResources {
                http,
                fuel_yield_interval: config.fuel_yield_interval.max(1),
                pool_slots,
                slots,
                max_memory_bytes,
                runtime,
                ticker: epoch_ticker.handle(),
            }),
            loaded: Mutex::new(HashMap::new()),
            max_component_bytes: config.max_component_bytes,
            compiler: Compiler::new(config.compile.clone(), worker_settings),
            _ticker: epoch_ticker,
        })
    }

    /// Reads and loads a component file.
    pub async fn load_file(&self, path: &Path) -> Result<Loaded, SandboxError> {
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|source| SandboxError::Io {
                path: path.display().to_string(),
                source,
            })?;
        self.load(bytes).await
    }

    /// The largest component [`Sandbox::load`] accepts, in bytes.
    pub fn max_component_bytes(&self) -> u64 {
        self.max_component_bytes
    }

    /// The networks guests never dial (`httpDenyNetworks`); policy fetches keep to them too.
    pub(crate) fn denied_networks(&self) -> &network::DeniedNetworks {
        &self.shared.http.denied
    }

    /// Validates, compiles (or fetches from cache) and pre-links a component.
    pub async fn load(&self, bytes: Vec<u8>) -> Result<Loaded, SandboxError> {
        let started = Instant::now();
        let size = bytes.len() as u64;
        if size > self.max_component_bytes {
            return Err(SandboxError::ComponentTooLarge {
                size,
                limit: self.max_component_bytes,
            });
        }
        check_header(&bytes)?;
        let digest = sha256(&bytes);
        if let Some(component) = self.cached(&digest) {
            return Ok(Loaded {
                component,
                source: LoadSource::Memory,
                duration: started.elapsed(),
            });
        }
        let (component, source) = self.compile_or_restore(bytes, digest).await?;
        let guest = GuestComponent::new(
            &self.engine,
            &self.linker,
            component,
            digest,
            size,
            self.shared.clone(),
        )?;
        let guest = Arc::new(guest);
        if let Ok(mut loaded) = self.loaded.lock() {
            loaded.insert(digest, guest.clone());
        }
        Ok(Loaded {
            component: guest,
            source,
            duration: started.elapsed(),
        })
    }

    /// Forgets the in-memory copy of a component (the disk cache keeps its artifact).
    pub fn evict(&self, sha256_hex: &str) {
        let Ok(digest) = hex::decode(sha256_hex) else {
            return;
        };
        if let (Ok(digest), Ok(mut loaded)) = (Digest::try_from(digest), self.loaded.lock()) {
            loaded.remove(&digest);
        }
    }

    fn cached(&self, digest: &Digest) -> Option<Arc<GuestComponent>> {
        self.loaded.lock().ok()?.get(digest).cloned()
    }
}

/// Names the common wrong inputs before the parser sees them: not wasm at all, or a core
/// module where a component is needed.
fn check_header(bytes: &[u8]) -> Result<(), SandboxError> {
    const MAGIC: &[u8; 4] = b"\0asm";
    const COMPONENT_LAYER: [u8; 2] = [1, 0];
    let invalid = |reason: &str| SandboxError::InvalidComponent {
        reason: reason.to_owned(),
    };
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(invalid(
            "not a WebAssembly binary (it does not start with the \\0asm magic bytes)",
        ));
    }
    if bytes[6..8] != COMPONENT_LAYER {
        return Err(invalid(
            "this is a core WebAssembly module, not a component; build for wasm32-wasip2 or \
             wrap it with `wasm-tools component new`",
        ));
    }
    Ok(())
}

impl Sandbox {
    /// The compiled component from the disk cache, or compiled now within the compile
    /// budgets (and then cached).
    async fn compile_or_restore(
        &self,
        bytes: Vec<u8>,
        digest: Digest,
    ) -> Result<(Component, LoadSource), SandboxError> {
        if let Some(disk) = self.disk.clone() {
            let engine = self.engine.clone();
            let restored = tokio::task::spawn_blocking(move || restore(&engine, &disk, &digest))
                .await
                .map_err(|e| SandboxError::Internal(format!("cache task failed: {e}")))?;
            if let Some(component) = restored {
                return Ok((component, LoadSource::Disk));
            }
        }
        let (component, artifact) = self.compiler.compile(&self.engine, Arc::new(bytes)).await?;
        if let Some(disk) = self.disk.clone() {
            let compiled = component.clone();
            // The cache is an optimisation: a read-only or full disk must not stop scaling.
            let written = tokio::task::spawn_blocking(move || {
                let serialized = match artifact {
                    Some(artifact) => Ok(artifact),
                    None => compiled
                        .serialize()
                        .map(Arc::new)
                        .map_err(|e| e.to_string()),
                };
                serialized
                    .and_then(|bytes| disk.write(&digest, &bytes).map_err(|e| e.to_string()))
                    .map_err(|error| (error, disk.path(&digest)))
            })
            .await;
            if let Ok(Err((error, path))) = written {
                tracing::warn!(%error, path = %path.display(), "cannot write the compile cache");
            }
        }
        Ok((component, LoadSource::Compiled))
    }

    /// The compile budgets in force.
    pub fn compile_config(&self) -> &CompileConfig {
        self.compiler.config()
    }
}

/// The artifact cached for `digest`, if it is there and usable; an unusable one is removed.
fn restore(engine: &Engine, disk: &DiskCache, digest: &Digest) -> Option<Component> {
    match disk.read(digest) {
        Ok(artifact) => {
            // SAFETY: the artifact was written by `DiskCache::write` for this engine (the
            // header's engine key matched) and its sha256 still matches, so these are the
            // bytes wasmtime produced; the cache directory is host-owned (see `cache`).
            match unsafe { Component::deserialize(engine, &artifact) } {
                Ok(component) => return Some(component),
                Err(e) => {
                    tracing::warn!(error = %e, "cached component rejected; recompiling");
                    disk.remove(digest);
                }
            }
        }
        Err(Miss::Absent) => {}
        Err(miss) => {
            tracing::warn!(?miss, path = %disk.path(digest).display(), "cache entry unusable; recompiling");
            disk.remove(digest);
        }
    }
    None
}

/// The engine settings every artifact depends on, shared by the host and its compile worker
/// so that what one compiles the other can load. Defaults not named here are wasmtime's:
/// Cranelift at `speed`, parallel compilation on, 4 GiB memory reservations with guard pages,
/// the default set of stable proposals.
pub(crate) fn wasmtime_config() -> wasmtime::Config {
    let mut wasm = wasmtime::Config::new();
    wasm.wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true);
    wasm
}
