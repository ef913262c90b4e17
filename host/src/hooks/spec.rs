//! A lifecycle handler's entry in the config file (`lifecycle:`), and where an instance keeps
//! its handler state.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::contract::lifecycle_model::Transition;
use crate::duration::HumanDuration;
use crate::sandbox::{Capabilities, Limits};
use crate::targets::aws::AwsEndpoint;

/// The tag holding an instance's handler state for a transition.
pub fn state_tag(transition: Transition) -> String {
    let name = match transition {
        Transition::Launch => "launch",
        Transition::Terminate => "terminate",
        Transition::Join => "join",
    };
    format!("wasmscaler.dev/{name}-state")
}

/// A lifecycle handler of the config file (`lifecycle:`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LifecycleSpec {
    /// Unique name.
    pub name: String,
    /// A component implementing the `lifecycle-handler` world.
    pub handler: crate::policies::PolicyRef,
    /// The lifecycle hooks' SQS queue.
    pub queue_url: String,
    /// Region and endpoint.
    #[serde(flatten)]
    pub endpoint: AwsEndpoint,
    /// How long a received message stays invisible to other consumers (default 60s): after a
    /// crash it is delivered again this long after it was received.
    #[serde(default = "default_visibility")]
    pub visibility_timeout: HumanDuration,
    /// Long-poll wait of each receive (default 10s, at most 20s).
    #[serde(default = "default_wait")]
    pub wait_time: HumanDuration,
    /// Steps one event may take before the default result applies (default 20).
    #[serde(default = "default_max_steps")]
    pub max_steps: u32,
    /// Sandbox limits per step.
    #[serde(default)]
    pub limits: Limits,
    /// Capabilities granted to the handler.
    #[serde(default)]
    pub capabilities: Capabilities,
}

fn default_visibility() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_wait() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_max_steps() -> u32 {
    20
}
