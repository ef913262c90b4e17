//! Lifecycle events the host delivers itself, around its own creates and deletes (OpenStack
//! has no lifecycle hooks): the same stepper as AWS's hooks, with the hook's timeout and
//! default result taken from the target's `lifecycle:`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::error::HookError;
use super::spec::state_tag;
use super::stepper::{Stepped, Stepper};
use crate::contract::lifecycle_model::{Hook, Instance, LifecycleEvent, Transition};
use crate::sandbox::{BoxFuture, CallEnv, GuestComponent};
use crate::targets::lifecycle::{
    Delivered, DeliveredLifecycleSpec, InstanceStore, LifecycleDelivery,
};

/// Runs a target's events through its `lifecycle:` handler.
pub struct HostDelivered {
    spec: DeliveredLifecycleSpec,
    handler: Arc<GuestComponent>,
    env: CallEnv,
    /// Names the handler in logs and errors (the autoscaler's name).
    name: String,
}

impl HostDelivered {
    /// Checks that `handler` is a lifecycle handler given every capability it needs.
    pub fn new(
        name: &str,
        spec: DeliveredLifecycleSpec,
        handler: Arc<GuestComponent>,
    ) -> Result<Self, HookError> {
        handler
            .check_grants(&spec.capabilities)
            .map_err(|source| HookError::NotGranted {
                handler: name.to_owned(),
                source,
            })?;
        if handler.lifecycle.is_none() {
            return Err(HookError::NotAHandler {
                handler: name.to_owned(),
                interface: crate::contract::interface_name("lifecycle"),
            });
        }
        let env = CallEnv {
            limits: spec.limits.clone(),
            capabilities: spec.capabilities.clone(),
            ..CallEnv::default()
        };
        Ok(HostDelivered {
            spec,
            handler,
            env,
            name: name.to_owned(),
        })
    }
}

fn transition_name(transition: Transition) -> &'static str {
    match transition {
        Transition::Launch => "launch",
        Transition::Terminate => "terminate",
        Transition::Join => "join",
    }
}

impl LifecycleDelivery for HostDelivered {
    fn deliver(
        &self,
        transition: Transition,
        instance: Instance,
        store: Arc<dyn InstanceStore>,
    ) -> BoxFuture<'_, Delivered> {
        Box::pin(async move {
            let timeout = self.spec.heartbeat_timeout.0;
            let id = instance.id.clone();
            let event = LifecycleEvent {
                transition,
                state: instance.tags.get(&state_tag(transition)).cloned(),
                hook: Some(Hook {
                    name: transition_name(transition).to_owned(),
                    token: format!("{id}:{}", transition_name(transition)),
                    default_result: self.spec.default_result.as_str().to_owned(),
                    heartbeat_timeout_seconds: u32::try_from(timeout.as_secs()).unwrap_or(u32::MAX),
                    metadata: self.spec.metadata.clone(),
                }),
                instance,
                step: 0,
            };
            let stepper = Stepper {
                handler: self.handler.clone(),
                env: self.env.clone(),
                store,
                max_steps: self.spec.max_steps,
            };
            // A heartbeat pushes the deadline back, as RecordLifecycleActionHeartbeat does.
            let deadline = Arc::new(Mutex::new(Instant::now() + timeout));
            let beat = || {
                if let Ok(mut at) = deadline.lock() {
                    *at = Instant::now() + timeout;
                }
                async {}
            };
            let stepped = tokio::select! {
                stepped = stepper.run(event, beat) => stepped,
                () = expiry(&deadline) => Stepped::Failed(format!(
                    "no result within the heartbeat timeout of {}",
                    self.spec.heartbeat_timeout
                )),
            };
            let delivered = match stepped {
                Stepped::Finished(result) => Delivered {
                    result,
                    defaulted: None,
                },
                Stepped::Failed(why) => Delivered {
                    result: self.spec.default_result,
                    defaulted: Some(why),
                },
            };
            match &delivered.defaulted {
                None => {
                    tracing::info!(handler = %self.name, instance = %id, transition = transition_name(transition), result = delivered.result.as_str(), "lifecycle event handled")
                }
                Some(why) => {
                    tracing::warn!(handler = %self.name, instance = %id, transition = transition_name(transition), %why, default = delivered.result.as_str(), "lifecycle handler failed; the default result applies")
                }
            }
            delivered
        })
    }
}

/// Resolves once `deadline` has passed (it may move later while waiting).
async fn expiry(deadline: &Mutex<Instant>) {
    loop {
        let at = deadline
            .lock()
            .map(|at| *at)
            .unwrap_or_else(|_| Instant::now());
        if Instant::now() >= at {
            return;
        }
        tokio::time::sleep_until(at.min(Instant::now() + Duration::from_secs(1))).await;
    }
}
