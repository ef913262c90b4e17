//! Lifecycle events the host delivers itself, for targets whose cloud has no lifecycle hooks
//! (OpenStack): the seam between a target, which knows when it creates and deletes an
//! instance and where the instance's handler state is kept, and [`crate::hooks`], which runs
//! the handler.
//!
//! - [`InstanceStore`]: an instance as a lifecycle event describes it, and where its handler
//!   state is persisted (EC2 tags, Nova metadata);
//! - [`LifecycleDelivery`]: runs one event through the handler to its result;
//! - [`DeliveredLifecycleSpec`]: the handler's entry in a target's config.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::contract::lifecycle_model::{ActionResult, Instance, Transition};
use crate::duration::HumanDuration;
use crate::sandbox::{BoxFuture, Capabilities, Limits};

/// Why an instance's handler state could not be persisted; the event stops there, so no
/// progress is repeated after a crash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// Where lifecycle events find their instance and persist the handler's state.
pub trait InstanceStore: Send + Sync {
    /// The instance as a lifecycle event describes it (what cannot be read is left empty).
    /// Its tags use the host's keys (`wasmscaler.dev/launch-state`), whatever the cloud
    /// allows in a key.
    fn instance<'a>(&'a self, id: &'a str, group: &'a str) -> BoxFuture<'a, Instance>;

    /// Sets tags on the instance (its handler state, its enrolment), keyed as
    /// [`InstanceStore::instance`] reads them.
    fn tag_instance<'a>(
        &'a self,
        id: &'a str,
        tags: &'a [(&'a str, &'a str)],
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}

/// The end of one delivered event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// What to do: for a launch, keep the instance (`CONTINUE`) or delete it (`ABANDON`); a
    /// terminating instance is deleted either way.
    pub result: ActionResult,
    /// Why the result is the configured default: the handler failed, ran out of steps or
    /// missed its heartbeat timeout.
    pub defaulted: Option<String>,
}

/// Runs lifecycle events through a handler.
pub trait LifecycleDelivery: Send + Sync {
    /// Runs `transition` of `instance` to its result, persisting the handler's state in
    /// `store` after every step.
    fn deliver(
        &self,
        transition: Transition,
        instance: Instance,
        store: Arc<dyn InstanceStore>,
    ) -> BoxFuture<'_, Delivered>;
}

/// `lifecycle:` of a target whose cloud has no lifecycle hooks: the host delivers `launch`
/// once a server it created is up, and `terminate` before it deletes one, with the same
/// state machine, steps and timeouts as AWS's hooks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeliveredLifecycleSpec {
    /// A component implementing the `lifecycle-handler` world.
    pub handler: crate::policies::PolicyRef,
    /// The result when the handler fails, runs out of steps or misses its heartbeat timeout
    /// (default `ABANDON`, as AWS's hooks).
    #[serde(default = "default_result")]
    pub default_result: ActionResult,
    /// How long the handler may go without a heartbeat before the default result applies
    /// (default 1h, as AWS's hooks). The timer restarts with the host.
    #[serde(default = "default_heartbeat_timeout")]
    pub heartbeat_timeout: HumanDuration,
    /// Steps one event may take before the default result applies (default 20).
    #[serde(default = "default_max_steps")]
    pub max_steps: u32,
    /// Passed to the handler as the hook's metadata (AWS's `NotificationMetadata`).
    #[serde(default)]
    pub metadata: Option<String>,
    /// Sandbox limits per step.
    #[serde(default)]
    pub limits: Limits,
    /// Capabilities granted to the handler.
    #[serde(default)]
    pub capabilities: Capabilities,
}

fn default_result() -> ActionResult {
    ActionResult::Abandon
}
fn default_heartbeat_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(3600))
}
fn default_max_steps() -> u32 {
    20
}
