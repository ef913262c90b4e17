//! The integration tests that need no process of their own, as one binary (wasmtime's
//! `tests/all`): one link instead of eight. Run one group with `cargo test --test all --
//! kubernetes::`. Separate binaries remain where isolation matters: interpreted-guest builds
//! (`languages`), CPU-heavy corpora (`fuzz_corpora`), deadline and containment timing
//! (`hostile`, `containment`), and the tests that run the `wasmscaler` binary or set process
//! state (`cli`, `controller`, `aws`).

mod api;
mod cache;
mod chart;
mod engine;
mod guests;
mod kubernetes;
mod local;
mod openstack;
mod policies;
mod simulate;
mod sources;
