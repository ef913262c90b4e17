//! Any Kubernetes resource with a `/scale` subresource: Deployments, StatefulSets,
//! ReplicaSets and custom resources alike.
//!
//! With [`WatchCaches`] (the controller's case), the workload object and its pods come from
//! shared watch caches, and the pods are matched against the selector in memory. For the apps
//! workloads (Deployment, StatefulSet, ReplicaSet), whose Scale is their `spec.replicas` and
//! `spec.selector` under the object's own resourceVersion, the scale is derived from the
//! cached object too, so a steady-state run sends no request at all; other kinds read `/scale`.
//! Without caches, or while a cache is not healthy, everything is read from the API server.
//!
//! The resource is found through discovery (`pinned_kind`), never by guessing its plural
//! (Custom Pod Autoscaler issue #199). Replicas are the pods matched by the scale's
//! `status.selector`. Scaling patches the scale subresource with the `resourceVersion` that was
//! observed, so a concurrent change makes the API server answer 409 instead of letting a stale
//! decision through; on 409 the scale is re-read and the write retried only if the replica
//! count is still the one the decision was based on. Before a scale-in with a removal list,
//! the named pods get a `controller.kubernetes.io/pod-deletion-cost` that makes the
//! ReplicaSet controller delete them first.

#[cfg(feature = "kubernetes")]
mod api;
#[cfg(feature = "kubernetes")]
pub mod cache;
#[cfg(feature = "kubernetes")]
pub mod selector;

#[cfg(feature = "kubernetes")]
pub use api::*;

use serde::{Deserialize, Serialize};

/// What stands for the watch caches in a build without the `kubernetes` feature: no value
/// of it can exist, so no Kubernetes target can be connected.
#[cfg(not(feature = "kubernetes"))]
pub mod cache {
    /// Uninhabited: this build has no Kubernetes client.
    pub enum WatchCaches {}
}

/// `target.kubernetes` in the config file: a `scaleTargetRef`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesRef {
    /// e.g. `apps/v1`, `example.com/v1`.
    pub api_version: String,
    /// e.g. `Deployment`.
    pub kind: String,
    /// The resource's name.
    pub name: String,
    /// Its namespace (default: the client's).
    #[serde(default)]
    pub namespace: Option<String>,
}
