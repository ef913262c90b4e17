//! The engine: turns guest decisions into safe scaling.
//!
//! [`Autoscaler`] runs one autoscaler's pipeline; [`behavior`] holds the HPA's stabilization
//! and rate-limit algorithm; [`store`] persists what must survive a restart; [`Engine`] runs
//! many autoscalers side by side, each on its own task, so one slow or failing autoscaler
//! never delays another.

mod autoscaler;
pub mod behavior;
mod record;
mod spec;
pub mod store;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

pub use autoscaler::{Autoscaler, Clock, Guests, RunObserver, system_clock};
pub use record::{Outcome, RunRecord};
pub use spec::{AutoscalerSpec, Fallback, HumanDuration, RunMode, TargetSpec};

/// Many autoscalers, one task each.
pub struct Engine {
    autoscalers: Vec<Arc<Autoscaler>>,
}

impl Engine {
    /// An engine for these autoscalers.
    pub fn new(autoscalers: Vec<Arc<Autoscaler>>) -> Self {
        Engine { autoscalers }
    }

    /// The autoscalers.
    pub fn autoscalers(&self) -> &[Arc<Autoscaler>] {
        &self.autoscalers
    }

    /// Runs every autoscaler until `stop`, lets in-flight runs finish, then releases the
    /// targets (local replicas are stopped).
    pub async fn run(&self, stop: CancellationToken) {
        let tasks: Vec<_> = self
            .autoscalers
            .iter()
            .map(|a| tokio::spawn(a.clone().run(stop.clone())))
            .collect();
        for task in tasks {
            if let Err(error) = task.await {
                tracing::error!(%error, "an autoscaler task failed");
            }
        }
        futures::future::join_all(self.autoscalers.iter().map(|a| a.target().shutdown())).await;
    }
}
