//! The public contract (`wit/`) as Rust: generated bindings and the host's own data model.
//!
//! The bindings are generated from the WIT package at build time, so the host can never drift
//! from the contract it publishes. The [`model`] types are what the rest of the host (engine,
//! API, CLI) works with: they are serde-friendly (camelCase JSON, maps instead of pair lists)
//! and independent of the bindings' generated names.

pub mod lifecycle_model;
pub mod model;

/// Generated host bindings for the `wasmscaler:policy` package (documented in `wit/`).
#[allow(missing_docs)]
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "wasmscaler-host",
        imports: {
            "wasmscaler:policy/http.get": async | trappable,
            "wasmscaler:policy/kubernetes-metrics.pod-metrics": async | trappable,
            default: trappable,
        },
        exports: { default: async },
    });
}

pub use bindings::exports::wasmscaler::policy::{evaluation, lifecycle, metrics};
pub use bindings::wasmscaler::policy::{http, kubernetes_metrics, log, sources, state, types};

/// The contract's WIT text, as `wit/policy.wit` holds it: the bindings above are generated
/// from the same file, so what `wasmscaler wit` writes is what this binary serves.
pub const WIT: &str = include_str!("../../../wit/policy.wit");

/// The semver of the WIT package this host implements.
pub(crate) const PACKAGE_VERSION: &str = "0.1.1";

/// The versions of the package this host serves: 0.1.0 components (built before the `sources`
/// import existed) run unchanged, since 0.1.1 only added an interface.
pub(crate) const SERVED_VERSIONS: [&str; 2] = ["0.1.0", PACKAGE_VERSION];

/// Fully qualified name of an interface of this package, e.g. `wasmscaler:policy/metrics@0.1.1`.
pub(crate) fn interface_name(interface: &str) -> String {
    format!("wasmscaler:policy/{interface}@{PACKAGE_VERSION}")
}

/// Whether `name` is `interface` of a package version this host serves, e.g.
/// `wasmscaler:policy/metrics@0.1.0` or `@0.1.1` for `metrics`.
pub(crate) fn is_interface(name: &str, interface: &str) -> bool {
    name.strip_prefix("wasmscaler:policy/")
        .and_then(|rest| rest.split_once('@'))
        .is_some_and(|(i, version)| i == interface && SERVED_VERSIONS.contains(&version))
}
