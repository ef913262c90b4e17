//! The host's data model of a lifecycle call (`wasmscaler:policy/lifecycle`), with its
//! conversions to and from the generated bindings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::lifecycle as wit;
use super::model::OutputSize;

/// Which transition an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transition {
    /// A new instance is pending.
    Launch,
    /// An instance is leaving.
    Terminate,
    /// Delivered on the new instance by `wasmscaler agent`.
    Join,
}

/// The instance an event is about.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    /// Instance id.
    pub id: String,
    /// Its Auto Scaling group.
    pub group: String,
    /// The group's lifecycle state of it.
    pub lifecycle_state: String,
    /// `Healthy` or `Unhealthy`.
    pub health: String,
    /// Launch time, ms since the Unix epoch.
    pub launch_time_ms: Option<i64>,
    /// Private IPv4 address.
    pub private_address: Option<String>,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
}

/// The lifecycle hook's notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hook {
    /// The hook's name.
    pub name: String,
    /// The action's token.
    pub token: String,
    /// `CONTINUE` or `ABANDON`.
    pub default_result: String,
    /// Heartbeat timeout of the hook.
    pub heartbeat_timeout_seconds: u32,
    /// NotificationMetadata.
    pub metadata: Option<String>,
}

/// One delivery of an event to the handler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleEvent {
    /// The transition.
    pub transition: Transition,
    /// The instance.
    pub instance: Instance,
    /// The hook (absent for `join`).
    pub hook: Option<Hook>,
    /// The state persisted last.
    pub state: Option<String>,
    /// Steps taken so far.
    pub step: u32,
}

/// How a lifecycle action completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ActionResult {
    /// Let the transition proceed.
    Continue,
    /// Abandon it (a launching instance is terminated).
    Abandon,
}

impl ActionResult {
    /// The Auto Scaling API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionResult::Continue => "CONTINUE",
            ActionResult::Abandon => "ABANDON",
        }
    }

    /// Parses `CONTINUE` / `ABANDON` (any case).
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_uppercase().as_str() {
            "CONTINUE" => Some(ActionResult::Continue),
            "ABANDON" => Some(ActionResult::Abandon),
            _ => None,
        }
    }
}

/// What one step decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepOutcome {
    /// The new state to persist.
    pub next_state: Option<String>,
    /// Send a heartbeat before the next step.
    pub heartbeat: bool,
    /// Complete now with this result.
    pub result: Option<ActionResult>,
}

impl From<&LifecycleEvent> for wit::Event {
    fn from(e: &LifecycleEvent) -> Self {
        wit::Event {
            transition: match e.transition {
                Transition::Launch => wit::Transition::Launch,
                Transition::Terminate => wit::Transition::Terminate,
                Transition::Join => wit::Transition::Join,
            },
            instance: wit::Instance {
                id: e.instance.id.clone(),
                group: e.instance.group.clone(),
                lifecycle_state: e.instance.lifecycle_state.clone(),
                health: e.instance.health.clone(),
                launch_time_ms: e.instance.launch_time_ms,
                private_address: e.instance.private_address.clone(),
                tags: e
                    .instance
                    .tags
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            },
            hook: e.hook.as_ref().map(|h| wit::Hook {
                name: h.name.clone(),
                token: h.token.clone(),
                default_result: h.default_result.clone(),
                heartbeat_timeout_seconds: h.heartbeat_timeout_seconds,
                metadata: h.metadata.clone(),
            }),
            state: e.state.clone(),
            step: e.step,
        }
    }
}

impl From<wit::Outcome> for StepOutcome {
    fn from(o: wit::Outcome) -> Self {
        StepOutcome {
            next_state: o.next_state,
            heartbeat: o.heartbeat,
            result: o.result.map(|r| match r {
                wit::ActionResult::Continue => ActionResult::Continue,
                wit::ActionResult::Abandon => ActionResult::Abandon,
            }),
        }
    }
}

impl OutputSize for StepOutcome {
    fn output_size(&self) -> usize {
        16 + self.next_state.as_ref().map_or(0, String::len)
    }
}
