//! A lifecycle handler for a cluster node, as the Autoscaling Lifecycle seed describes it: a
//! state machine stepped by the host, its state persisted as an instance tag between steps.
//!
//! - `launch` (on the host, for the existing cluster): `registering` → `registered`, then
//!   CONTINUE.
//! - `terminate`: `draining` → `drained`, then CONTINUE.
//! - `join` (on the instance, by `wasmscaler agent`): `finished_cloud_init` → `join_cluster` →
//!   `ready`, then CONTINUE.
//!
//! Each step but the last asks for a heartbeat, as long work would. The hook's
//! NotificationMetadata can steer it, for tests and demos: `{"fail":"trap"}` makes the step
//! trap, `{"abandon":true}` ends the launch with ABANDON.

wit_bindgen::generate!({ path: "../../wit", world: "lifecycle-handler" });

use exports::wasmscaler::policy::lifecycle::{ActionResult, Event, Guest, Outcome, Transition};
use wasmscaler::policy::types::Error;

struct Handler;

const LAUNCH: &[&str] = &["registering", "registered"];
const TERMINATE: &[&str] = &["draining", "drained"];
const JOIN: &[&str] = &["finished_cloud_init", "join_cluster", "ready"];

fn metadata(event: &Event) -> &str {
    event
        .hook
        .as_ref()
        .and_then(|h| h.metadata.as_deref())
        .unwrap_or("")
}

impl Guest for Handler {
    fn handle(event: Event) -> Result<Outcome, Error> {
        if metadata(&event).contains(r#""fail":"trap""#) {
            panic!("instructed to trap by the hook's metadata");
        }
        let steps = match event.transition {
            Transition::Launch => LAUNCH,
            Transition::Terminate => TERMINATE,
            Transition::Join => JOIN,
        };
        // The next state after the persisted one; an unknown state restarts the machine.
        let next = match event.state.as_deref() {
            None => 0,
            Some(state) => steps.iter().position(|s| *s == state).map_or(0, |i| i + 1),
        };
        let Some(state) = steps.get(next) else {
            // Already in the final state (a redelivered event): just finish.
            return Ok(Outcome { next_state: None, heartbeat: false, result: Some(ActionResult::Continue) });
        };
        let last = next + 1 == steps.len();
        let result = match (last, metadata(&event).contains(r#""abandon":true"#)) {
            (true, true) => Some(ActionResult::Abandon),
            (true, false) => Some(ActionResult::Continue),
            (false, _) => None,
        };
        Ok(Outcome { next_state: Some((*state).to_string()), heartbeat: !last, result })
    }
}

export!(Handler);
