//! wasmscaler: an autoscaler whose scaling logic is user code compiled to WebAssembly
//! components.
//!
//! The data path, module by module:
//! - [`contract`]: the WIT contract as Rust (generated bindings and the host's data model);
//! - [`sandbox`]: loads components, limits them and calls them;
//! - [`cli`]: the `wasmscaler` command line.

pub mod cli;
pub mod contract;
mod fsutil;
pub mod sandbox;
pub mod telemetry;
