//! The engine: turns guest decisions into safe scaling.
//!
//! [`Autoscaler`] runs one autoscaler's pipeline; [`behavior`] holds the HPA's stabilization
//! and rate-limit algorithm; [`store`] persists what must survive a restart; [`Fleet`] runs
//! many autoscalers side by side, each on its own task, so one slow or failing autoscaler
//! never delays another.

mod autoscaler;
pub mod behavior;
mod error;
mod policy;
mod record;
mod settle;
mod sources;
mod spec;
pub mod store;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use tokio_util::sync::CancellationToken;

#[cfg(feature = "kubernetes")]
pub(crate) use autoscaler::run_grid_step;
pub use autoscaler::{Autoscaler, AutoscalerBuilder, Clock, RunFailure, RunObserver, system_clock};
pub use error::{AutoscalerError, SpecError, StateError};
pub use policy::{Guests, Policies, Policy, PolicyResult};
pub use record::{Outcome, RunRecord};
pub use settle::{Safety, Settled, settle};
pub use sources::{HELD_LABEL, MAX_SOURCES, MetricSource, MetricsSpec, OnFailure, SOURCE_LABEL};
pub use spec::{
    AutoscalerSpec, Fallback, FallbackBehavior, HumanDuration, RunMode, ScalingSpec, TargetSpec,
};

/// Many autoscalers, one task each. The set can change while it runs (cluster mode adds and
/// removes autoscalers as resources come and go); readers get snapshots.
#[derive(Default)]
pub struct Fleet {
    autoscalers: RwLock<BTreeMap<String, Arc<Autoscaler>>>,
    /// Autoscalers that could not start, with why.
    failed: RwLock<BTreeMap<String, String>>,
}

impl Fleet {
    /// A fleet of these autoscalers, each keyed by its name.
    pub fn new(autoscalers: Vec<Arc<Autoscaler>>) -> Self {
        Fleet {
            autoscalers: RwLock::new(
                autoscalers
                    .into_iter()
                    .map(|a| (a.spec().name.clone(), a))
                    .collect(),
            ),
            failed: RwLock::default(),
        }
    }

    /// Records that the autoscaler under `key` could not start.
    pub(crate) fn mark_failed(&self, key: &str, error: String) {
        if let Ok(mut failed) = self.failed.write() {
            failed.insert(key.to_owned(), error);
        }
    }

    /// Autoscalers that could not start, by key, with why.
    pub fn failed(&self) -> BTreeMap<String, String> {
        self.failed.read().map(|f| f.clone()).unwrap_or_default()
    }

    /// A snapshot of the autoscalers, ordered by key.
    pub fn autoscalers(&self) -> Vec<Arc<Autoscaler>> {
        self.autoscalers
            .read()
            .map(|all| all.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The autoscaler under `key` (its name; `namespace/name` in cluster mode), or the only
    /// one named `key`.
    pub fn find(&self, key: &str) -> Option<Arc<Autoscaler>> {
        let all = self.autoscalers.read().ok()?;
        if let Some(found) = all.get(key) {
            return Some(found.clone());
        }
        let mut named = all.values().filter(|a| a.spec().name == key);
        match (named.next(), named.next()) {
            (Some(only), None) => Some(only.clone()),
            _ => None,
        }
    }

    /// Adds or replaces the autoscaler under `key`; the caller runs it.
    pub fn insert(&self, key: &str, autoscaler: Arc<Autoscaler>) {
        if let Ok(mut all) = self.autoscalers.write() {
            all.insert(key.to_owned(), autoscaler);
        }
    }

    /// Removes the autoscaler under `key`.
    pub fn remove(&self, key: &str) -> Option<Arc<Autoscaler>> {
        self.autoscalers.write().ok()?.remove(key)
    }

    /// Runs every autoscaler until `stop`, lets in-flight runs finish, then releases the
    /// targets (local replicas are stopped).
    pub async fn run(&self, stop: CancellationToken) {
        let autoscalers = self.autoscalers();
        let tasks: Vec<_> = autoscalers
            .iter()
            .map(|a| tokio::spawn(a.clone().run(stop.clone())))
            .collect();
        for task in tasks {
            if let Err(error) = task.await {
                tracing::error!(%error, "an autoscaler task failed");
            }
        }
        futures::future::join_all(autoscalers.iter().map(|a| a.target().shutdown())).await;
    }
}
