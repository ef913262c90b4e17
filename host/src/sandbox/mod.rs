//! The sandbox: loads user components and calls them under hard limits.
//!
//! One [`Sandbox`] owns the wasmtime [`Engine`] (component model, fuel metering and epoch
//! interruption on), a [`Linker`] with WASI and the contract's capability imports, an epoch
//! ticker thread, and a two-level cache of compiled components keyed by sha256 (memory, then
//! disk). [`Sandbox::load`] returns a shared [`GuestComponent`]; every call on it runs in a
//! fresh [`Store`](wasmtime::Store), so nothing leaks between calls except through the
//! `state` capability.

mod allowlist;
mod cache;
mod call;
mod capabilities;
mod component;
mod error;
mod host;
mod limiter;
mod limits;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use cache::sha256;
pub use call::CallOutcome;
pub use capabilities::{
    BoxFuture, CallEnv, Capabilities, Capability, FileState, HttpGrant, MemoryState,
    PodMetricsProvider, StateGrant, StateStore, StaticPodMetrics,
};
pub use component::{ComponentInfo, GuestComponent, World};
pub use error::SandboxError;
pub use limits::{Limits, PoolingConfig, SandboxConfig};

use cache::{Digest, DiskCache, Miss};
use host::HostState;

/// Settings every call of every component needs, shared without locking.
pub(crate) struct Shared {
    http: reqwest::Client,
    epoch_tick: Duration,
    fuel_yield_interval: u64,
    pool_slots: u32,
    max_memory_bytes: Option<u64>,
}

impl Shared {
    /// Epoch ticks until `timeout` has surely passed: one extra tick because the current
    /// tick is already partly over.
    fn deadline_ticks(&self, timeout: Duration) -> u64 {
        let tick = self.epoch_tick.as_nanos().max(1);
        u64::try_from(timeout.as_nanos().div_ceil(tick)).unwrap_or(u64::MAX) + 1
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
    shared: Arc<Shared>,
    disk: Option<Arc<DiskCache>>,
    loaded: Mutex<HashMap<Digest, Arc<GuestComponent>>>,
    max_component_bytes: u64,
    _ticker: EpochTicker,
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
        let mut wasm = wasmtime::Config::new();
        wasm.wasm_component_model(true)
            .consume_fuel(true)
            .epoch_interruption(true);
        let mut pool_slots = u32::MAX;
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
            max_memory_bytes = Some(pooling.max_memory_bytes);
        }
        let engine = Engine::new(&wasm).map_err(|e| internal("engine configuration", &e))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| internal("linking WASI", &e))?;
        crate::contract::bindings::WasmscalerHost::add_to_linker::<HostState, HasSelf<HostState>>(
            &mut linker,
            |state| state,
        )
        .map_err(|e| internal("linking the capability imports", &e))?;

        let http = host::http_client().map_err(|e| internal("HTTP client", &e))?;
        let epoch_tick = Duration::from_millis(config.epoch_tick_ms.max(1));
        Ok(Sandbox {
            _ticker: EpochTicker::start(engine.clone(), epoch_tick)
                .map_err(|e| internal("starting the epoch ticker", &e))?,
            disk: config
                .cache_dir
                .as_deref()
                .map(|dir| Arc::new(DiskCache::new(dir, &engine))),
            engine,
            linker,
            shared: Arc::new(Shared {
                http,
                epoch_tick,
                fuel_yield_interval: config.fuel_yield_interval.max(1),
                pool_slots,
                max_memory_bytes,
            }),
            loaded: Mutex::new(HashMap::new()),
            max_component_bytes: config.max_component_bytes,
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
        let engine = self.engine.clone();
        let disk = self.disk.clone();
        let (component, source) = tokio::task::spawn_blocking(move || {
            compile_or_restore(&engine, &bytes, &digest, disk.as_deref())
        })
        .await
        .map_err(|e| SandboxError::Internal(format!("compile task failed: {e}")))??;
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

/// Compilation is CPU-bound for seconds on large guests, so it runs on the blocking pool.
fn compile_or_restore(
    engine: &Engine,
    bytes: &[u8],
    digest: &Digest,
    disk: Option<&DiskCache>,
) -> Result<(Component, LoadSource), SandboxError> {
    if let Some(disk) = disk {
        match disk.read(digest) {
            Ok(artifact) => {
                // SAFETY: the artifact was written by `DiskCache::write` for this engine (the
                // header's engine key matched) and its sha256 still matches, so these are the
                // bytes wasmtime produced; the cache directory is host-owned (see `cache`).
                match unsafe { Component::deserialize(engine, &artifact) } {
                    Ok(component) => return Ok((component, LoadSource::Disk)),
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
    }
    let component = Component::new(engine, bytes).map_err(|e| SandboxError::InvalidComponent {
        reason: format!("{e:#}"),
    })?;
    if let Some(disk) = disk {
        let written = component
            .serialize()
            .map_err(|e| e.to_string())
            .and_then(|artifact| disk.write(digest, &artifact).map_err(|e| e.to_string()));
        if let Err(error) = written {
            // The cache is an optimisation: a read-only or full disk must not stop scaling.
            tracing::warn!(%error, path = %disk.path(digest).display(), "cannot write the compile cache");
        }
    }
    Ok((component, LoadSource::Compiled))
}

/// Advances the engine's epoch at a fixed period: the wall-clock half of every deadline.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine, tick: Duration) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("wasmscaler-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                }
            })?;
        Ok(EpochTicker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
