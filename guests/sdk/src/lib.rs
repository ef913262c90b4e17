//! The Rust SDK for wasmscaler policies.
//!
//! With the default `bindings` feature it carries the contract's bindings (the `policy`
//! world: `gather` and `evaluate`, and every capability) and [`export_policy!`]:
//!
//! ```ignore
//! use wasmscaler_guest::{Config, Context, Decision, Error, Sample};
//! use wasmscaler_guest::{EvaluationGuest, MetricsGuest};
//!
//! struct MyPolicy;
//! impl MetricsGuest for MyPolicy {
//!     fn gather(ctx: Context) -> Result<Vec<Sample>, Error> {
//!         Ok(vec![wasmscaler_guest::sample("replicas", ctx.replicas.len() as f64)])
//!     }
//! }
//! impl EvaluationGuest for MyPolicy {
//!     fn evaluate(ctx: Context, _samples: Vec<Sample>) -> Result<Decision, Error> {
//!         // A missing or malformed key is `invalid-config`, naming it.
//!         let replicas = Config(&ctx.config).positive("replicas")?;
//!         Ok(Decision { target_replicas: replicas as u32, reason: None, remove_first: None })
//!     }
//! }
//! wasmscaler_guest::export_policy!(MyPolicy);
//! ```
//!
//! The helpers need no bindings: [`Config`] (typed config access whose errors name the key
//! and convert into the contract's `invalid-config` with `?`), [`hpa`] (the HPA's formula),
//! [`history`] (observations kept in the `state` capability), [`json`] (a number at a JSON
//! path) and [`config::encode_component`] (URL components).

pub mod config;
pub mod history;
pub mod hpa;
pub mod json;

pub use config::{Config, ConfigError};
pub use history::History;

/// The contract's bindings for the `policy` world, generated from `wit/`.
#[cfg(feature = "bindings")]
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "policy",
        pub_export_macro: true,
        export_macro_name: "export_policy",
        default_bindings_module: "wasmscaler_guest::bindings",
    });
}

/// Exports a type implementing [`MetricsGuest`] and [`EvaluationGuest`] as the component's
/// `metrics` and `evaluation`: `wasmscaler_guest::export_policy!(MyPolicy);`.
#[cfg(feature = "bindings")]
pub use bindings::export_policy;
#[cfg(feature = "bindings")]
pub use bindings::exports::wasmscaler::policy::evaluation::Guest as EvaluationGuest;
#[cfg(feature = "bindings")]
pub use bindings::exports::wasmscaler::policy::metrics::Guest as MetricsGuest;
#[cfg(feature = "bindings")]
pub use bindings::wasmscaler::policy::types::{Context, Decision, Error, Sample};
#[cfg(feature = "bindings")]
pub use bindings::wasmscaler::policy::{http, kubernetes_metrics, log, sources, state};

#[cfg(feature = "bindings")]
impl From<ConfigError> for Error {
    fn from(error: ConfigError) -> Self {
        Error::InvalidConfig(error.0)
    }
}

/// A sample without a replica or labels.
#[cfg(feature = "bindings")]
pub fn sample(name: &str, value: f64) -> Sample {
    Sample {
        name: name.to_owned(),
        value,
        replica: None,
        labels: Vec::new(),
    }
}

/// The values of the samples named `name`.
#[cfg(feature = "bindings")]
pub fn values<'a>(samples: &'a [Sample], name: &'a str) -> impl Iterator<Item = f64> + 'a {
    samples
        .iter()
        .filter(move |s| s.name == name)
        .map(|s| s.value)
}
