//! Typed configuration of every limit: per call ([`Limits`]) and per engine ([`SandboxConfig`]).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::compile::CompileConfig;

/// Budgets enforced on every guest call (instantiation plus one export call).
///
/// The defaults suit every supported guest language. Measured per call of the cpu-target
/// examples (fresh instance included): WAT ~2×10^3 fuel units, Rust and C ~10^4, Python
/// ~3×10^5, JavaScript ~3×10^6. The default fuel budget (5×10^7) leaves JavaScript more than
/// ten times its need, while an infinite loop in any language still ends in well under a
/// second of CPU, long before the wall-clock deadline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Limits {
    /// Fuel units per call: the deterministic CPU budget (roughly one unit per wasm operator).
    pub fuel: u64,
    /// Wall-clock deadline per call, including host calls such as HTTP, in milliseconds.
    pub timeout_ms: u64,
    /// Maximum size of each linear memory, in bytes.
    pub memory_bytes: u64,
    /// Maximum number of tables a call may create.
    pub max_tables: u32,
    /// Maximum elements of any one table.
    pub max_table_elements: u32,
    /// Maximum core instances a call may create (a component is several).
    pub max_instances: u32,
    /// Maximum size of what a call returns (samples, decision or error), in bytes.
    pub max_output_bytes: u64,
    /// Maximum calls into the host's capability imports per call.
    pub max_host_calls: u32,
    /// Maximum log records kept per call; further records are dropped and counted.
    pub max_log_records: u32,
    /// Longest log record kept, in bytes; a longer one is cut there and the cut counted.
    pub max_log_record_bytes: u32,
    /// Bytes of log records kept per call, all records together; past it records are
    /// dropped and counted.
    pub max_log_bytes: u64,
    /// Maximum bytes of stdout plus stderr captured per call; the rest is dropped and counted,
    /// and the guest's writes still succeed.
    pub max_captured_output_bytes: u64,
    /// Most bytes one `wasi:random` call may ask for. Each byte also costs one unit of fuel,
    /// so a guest cannot spend its whole deadline in randomness without spending fuel.
    pub max_random_bytes: u64,
    /// Longest text kept from a guest's decision reason or error message, in bytes: it is
    /// cut there before it reaches logs, status, Events or the API.
    pub max_message_bytes: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 50_000_000,
            timeout_ms: 5_000,
            memory_bytes: 128 << 20,
            max_tables: 64,
            max_table_elements: 100_000,
            max_instances: 64,
            max_output_bytes: 1 << 20,
            max_host_calls: 1_000,
            max_log_records: 100,
            max_log_record_bytes: 4 << 10,
            max_log_bytes: 64 << 10,
            max_captured_output_bytes: 64 << 10,
            max_random_bytes: 64 << 10,
            max_message_bytes: 1 << 10,
        }
    }
}

impl Limits {
    /// The wall-clock deadline as a [`Duration`].
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// Configuration of the shared engine: compilation cache and instance allocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// Where precompiled components are kept across restarts; `None` keeps them in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Largest component accepted, in bytes.
    pub max_component_bytes: u64,
    /// Pre-reserved instance slots (fast instantiation); `None` allocates on demand.
    pub pooling: Option<PoolingConfig>,
    /// Period of the epoch ticker that enforces deadlines, in milliseconds.
    pub epoch_tick_ms: u64,
    /// A running guest yields to the async runtime after this much fuel, so one busy guest
    /// never starves other tasks on the same thread. Guests also yield at every epoch tick.
    pub fuel_yield_interval: u64,
    /// Worker threads of the runtime that runs guest calls, apart from the one serving the
    /// API and the control plane; `None`: one per core.
    pub guest_threads: Option<usize>,
    /// Budgets of compiling a component.
    pub compile: CompileConfig,
    /// Networks the `http` capability never connects to, whatever an allow-list says, checked
    /// on the addresses dialled (after name resolution). Default: link-local and metadata
    /// addresses; the controller adds the Kubernetes API server's.
    #[schemars(with = "Vec<String>")]
    pub http_deny_networks: Vec<ipnet::IpNet>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            cache_dir: None,
            max_component_bytes: 64 << 20,
            pooling: Some(PoolingConfig::default()),
            epoch_tick_ms: 10,
            fuel_yield_interval: 1_000_000,
            guest_threads: None,
            compile: CompileConfig::default(),
            http_deny_networks: super::network::default_denied_networks(),
        }
    }
}

/// Sizing of the pooling instance allocator. Calls beyond `maxConcurrentCalls` wait for a
/// slot, then fail `busy` (`SandboxError::Busy`), instead of allocating without bound.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PoolingConfig {
    /// Guest calls that may run at the same time.
    pub max_concurrent_calls: u32,
    /// The largest linear memory any call may have; per-call `memoryBytes` must not exceed it.
    pub max_memory_bytes: u64,
    /// Bytes of each linear memory kept resident between calls and reset in place (only the
    /// pages a call dirtied, where the kernel has `PAGEMAP_SCAN`) instead of being returned to
    /// the kernel: fewer page faults and TLB shootdowns per call, at this much RSS per slot
    /// in use.
    #[serde(default = "PoolingConfig::default_keep_resident")]
    pub keep_resident_bytes: u64,
    /// How long a call waits for a free slot, first come first served, before it fails
    /// `busy` (`SandboxError::Busy`). A burst of first runs (a controller
    /// taking over 10,000 autoscalers) briefly wants more slots than there are; failing them
    /// at once would hold each such autoscaler for a whole interval. The wait comes before
    /// the call's own timeout, which starts once the call has its slot.
    #[serde(default = "PoolingConfig::default_max_slot_wait_ms")]
    pub max_slot_wait_ms: u64,
}

impl PoolingConfig {
    fn default_keep_resident() -> u64 {
        2 << 20
    }

    fn default_max_slot_wait_ms() -> u64 {
        2_000
    }
}

impl Default for PoolingConfig {
    fn default() -> Self {
        PoolingConfig {
            max_concurrent_calls: 128,
            max_memory_bytes: 512 << 20,
            keep_resident_bytes: PoolingConfig::default_keep_resident(),
            max_slot_wait_ms: PoolingConfig::default_max_slot_wait_ms(),
        }
    }
}
