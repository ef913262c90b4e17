//! One lifecycle event through the handler's state machine, its state persisted on the
//! instance (an EC2 tag, Nova metadata) after every step.

use std::sync::Arc;

use super::spec::state_tag;
use crate::contract::lifecycle_model::{ActionResult, Instance, LifecycleEvent, StepOutcome};
use crate::sandbox::{CallEnv, GuestComponent};
use crate::targets::lifecycle::InstanceStore;

/// Steps one handler for lifecycle events; shared by the queue consumer, the host's own
/// deliveries and the agent.
pub struct Stepper {
    /// The handler.
    pub handler: Arc<GuestComponent>,
    /// Per-step limits and grants.
    pub env: CallEnv,
    /// The instance and where its state is persisted.
    pub store: Arc<dyn InstanceStore>,
    /// Steps before giving up.
    pub max_steps: u32,
}

/// How stepping ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Stepped {
    /// The handler chose this result.
    Finished(ActionResult),
    /// The handler failed (trap, limits, error) or ran out of steps; why.
    Failed(String),
}

impl Stepper {
    /// Runs the handler step by step from the state persisted on the instance, persisting each
    /// new state; `heartbeat` is called when the handler asks for one.
    pub async fn run<F, Fut>(&self, mut event: LifecycleEvent, mut heartbeat: F) -> Stepped
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let tag = state_tag(event.transition);
        for step in 0..self.max_steps {
            event.step = step;
            let outcome: StepOutcome = match self.handler.handle(&event, &self.env).await {
                Ok(out) => out.value,
                Err(e) => return Stepped::Failed(e.summary()),
            };
            if let Some(state) = &outcome.next_state {
                if let Err(error) = self
                    .store
                    .tag_instance(&event.instance.id, &[(&tag, state)])
                    .await
                {
                    // Unpersisted progress would be repeated after a crash; stop here.
                    return Stepped::Failed(format!("persisting state {state:?}: {error}"));
                }
                event.state = Some(state.clone());
                event.instance.tags.insert(tag.clone(), state.clone());
            }
            if outcome.heartbeat {
                heartbeat().await;
            }
            if let Some(result) = outcome.result {
                return Stepped::Finished(result);
            }
        }
        Stepped::Failed(format!("no result after {} steps", self.max_steps))
    }

    /// The instance as the event describes it.
    pub async fn instance(&self, id: &str, group: &str) -> Instance {
        self.store.instance(id, group).await
    }
}
