//! What the engine scales: one trait, one module per kind of target.
//!
//! A target answers three questions — how many replicas now, which ones, and "please have
//! `n`" (with an optional list of replicas to remove first) — and nothing else. All policy,
//! safety and history lives in the engine, so every target gets the same behavior.

pub mod aws;
pub mod budget;
pub mod kubernetes;
pub mod lifecycle;
pub mod local;
pub mod openstack;
mod spec;

pub use spec::{ConnectEnv, TargetSpec};

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::contract::model::{ObjectJson, Replica};
use crate::sandbox::{BoxFuture, HttpResponder, PodMetricsProvider};

/// A snapshot of the target taken at the start of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Replicas the target is set to now.
    pub current: u32,
    /// Its replicas as the guest sees them.
    pub replicas: Vec<Replica>,
    /// The target object (e.g. the Deployment), or `{}`.
    pub object: ObjectJson,
    /// An opaque version the target uses to refuse writes based on a stale snapshot
    /// (Kubernetes: the scale's `resourceVersion`).
    pub version: Option<String>,
}

/// Why a target could not be observed or scaled. Every variant leaves the target as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// The target does not exist (or has no scale subresource).
    #[error("not found: {0}")]
    NotFound(String),
    /// Someone else changed the target since it was observed; nothing was written.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The backend failed or timed out; try again next run.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The request was refused (permissions, validation).
    #[error("refused: {0}")]
    Refused(String),
    /// Part of the change was made before the rest failed: the target is now at `reached`.
    /// The engine records that much, so the rate policies count what really happened.
    #[error("scaled only to {reached}: {error}")]
    Partial {
        /// The count the target is at now.
        reached: u32,
        /// Why the rest failed.
        error: Box<TargetError>,
    },
}

impl TargetError {
    /// The same error, its message prefixed with what was being done.
    pub fn context(self, what: &str) -> Self {
        match self {
            TargetError::NotFound(m) => TargetError::NotFound(format!("{what}: {m}")),
            TargetError::Conflict(m) => TargetError::Conflict(format!("{what}: {m}")),
            TargetError::Unavailable(m) => TargetError::Unavailable(format!("{what}: {m}")),
            TargetError::Refused(m) => TargetError::Refused(format!("{what}: {m}")),
            TargetError::Partial { reached, error } => TargetError::Partial {
                reached,
                error: Box::new(error.context(what)),
            },
        }
    }
}

/// Something with replicas the engine can scale.
pub trait Target: Send + Sync {
    /// Kind, name and namespace, as the guest's context shows them.
    fn identity(&self) -> TargetIdentity;
    /// Reads the current state.
    fn observe(&self) -> BoxFuture<'_, Result<Observation, TargetError>>;
    /// Sets the replica count to `replicas`, removing the named replicas first on scale-in.
    /// Refuses (with [`TargetError::Conflict`]) if the target changed since `observed`.
    fn scale<'a>(
        &'a self,
        observed: &'a Observation,
        replicas: u32,
        remove_first: &'a [String],
    ) -> BoxFuture<'a, Result<(), TargetError>>;
    /// Resource metrics of the replicas, where the target has them.
    fn pod_metrics(&self) -> Option<Arc<dyn PodMetricsProvider>> {
        None
    }
    /// What answers the `http` capability instead of the network (only a simulated target
    /// has one).
    fn http_responder(&self) -> Option<Arc<dyn HttpResponder>> {
        None
    }
    /// Releases what the target holds (local: stops every replica).
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// Kind, name and namespace of a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetIdentity {
    /// e.g. `Deployment`, `local`.
    pub kind: String,
    /// The target's name.
    pub name: String,
    /// Its namespace, or empty.
    pub namespace: String,
}
