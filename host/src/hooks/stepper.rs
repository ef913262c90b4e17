//! One lifecycle event through the handler's state machine, its state persisted as an
//! instance tag after every step.

use std::sync::Arc;

use aws_sdk_autoscaling::Client as AutoScaling;

use super::spec::state_tag;
use crate::contract::lifecycle_model::{ActionResult, Instance, LifecycleEvent, StepOutcome};
use crate::sandbox::{CallEnv, GuestComponent};
use crate::targets::aws::ec2::Ec2;

/// Steps one handler for lifecycle events; shared by the queue consumer and the agent.
pub struct Stepper {
    /// The handler.
    pub handler: Arc<GuestComponent>,
    /// Per-step limits and grants.
    pub env: CallEnv,
    /// EC2, for instance tags.
    pub ec2: Ec2,
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
                    .ec2
                    .create_tags(&event.instance.id, &[(&tag, state)])
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

    /// The instance as the event describes it: the group's view plus EC2's.
    pub async fn instance(&self, autoscaling: &AutoScaling, id: &str, group: &str) -> Instance {
        let mut instance = Instance {
            id: id.to_owned(),
            group: group.to_owned(),
            ..Instance::default()
        };
        if let Ok(answer) = autoscaling
            .describe_auto_scaling_instances()
            .instance_ids(id)
            .send()
            .await
            && let Some(found) = answer.auto_scaling_instances().first()
        {
            instance.lifecycle_state = found.lifecycle_state().unwrap_or_default().to_owned();
            instance.health = found.health_status().unwrap_or_default().to_owned();
            if instance.group.is_empty() {
                instance.group = found
                    .auto_scaling_group_name()
                    .unwrap_or_default()
                    .to_owned();
            }
        }
        match self.ec2.describe_instances(&[id.to_owned()]).await {
            Ok(found) => {
                if let Some(ec2) = found.into_iter().next() {
                    instance.private_address = ec2.private_address;
                    instance.launch_time_ms = ec2.launch_time_ms;
                    instance.tags = ec2.tags;
                }
            }
            Err(error) => tracing::warn!(instance = %id, %error, "DescribeInstances failed"),
        }
        instance
    }
}
