//! wasmscaler: an autoscaler whose scaling logic is user code compiled to WebAssembly
//! components.
//!
//! The data path, module by module:
//! - [`contract`]: the WIT contract as Rust (generated bindings and the host's data model);
//! - [`sandbox`]: loads components, limits them and calls them;
//! - [`engine`]: decides safely (clamps, tolerance, stabilization, rate policies, fallback);
//! - [`targets`]: acts on what is scaled (Kubernetes `/scale`, local processes);
//! - [`api`], [`controller`], [`config`] and [`cli`]: the REST API, cluster mode (the
//!   `WasmAutoscaler` controller), the config file and the command line;
//! - [`policies`]: where policies come from (files, pinned URLs, OCI, uploads);
//! - [`simulate`]: a load trace replayed in virtual time through the same engine;
//! - [`hooks`]: lifecycle hooks stepped through a handler component (beside the engine);
//! - [`host`]: the assembly of all of it from a config file, shared by `run`, the controller
//!   and the tests;
//! - [`duration`]: small value types every layer shares.

#![warn(missing_docs)]

pub mod api;
#[doc(hidden)]
pub mod cli;
pub mod config;
pub mod contract;
#[cfg(feature = "kubernetes")]
pub mod controller;
pub mod duration;
pub mod engine;
mod fsutil;
#[doc(hidden)]
pub mod fuzzing;
pub mod hooks;
pub mod host;
pub mod policies;
#[doc(hidden)]
pub mod redact;
pub mod sandbox;
pub mod simulate;
pub mod targets;
#[doc(hidden)]
pub mod telemetry;
