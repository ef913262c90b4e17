//! The consumer of one hook queue: receive, step, complete, delete.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::completed::Completed;
use super::error::HookError;
use super::message::{Message, MessageError, Notification, parse_message};
use super::spec::{LifecycleSpec, state_tag};
use super::stepper::{Stepped, Stepper};
use crate::contract::lifecycle_model::{ActionResult, Hook, LifecycleEvent};
use crate::sandbox::{CallEnv, GuestComponent};
use crate::targets::aws::{
    ActionRef, AwsError, AwsLifecycleApi, Completion, LifecycleApi, QueueMessage,
};

/// What happened to one message, for logs and tests.
#[derive(Debug, Clone, PartialEq)]
pub enum Handled {
    /// The action was completed with this result.
    Completed {
        /// The instance.
        instance: String,
        /// The result sent.
        result: ActionResult,
        /// Whether it is the hook's default because the handler failed.
        defaulted: bool,
    },
    /// A duplicate of an action already completed.
    Duplicate,
    /// A test notification.
    Test,
    /// Unparseable; deleted so it does not loop forever.
    Dropped(MessageError),
    /// Not completed (CompleteLifecycleAction failed, or the handler failed while the hook's
    /// default result is unknown): the message is left in the queue to come back.
    Retry(String),
}

impl Handled {
    /// Whether the message is done with and may be deleted: its action is completed (or
    /// known to be gone), or it can never be handled.
    pub fn is_final(&self) -> bool {
        !matches!(self, Handled::Retry(_))
    }
}

/// Consumes one hook queue.
pub struct LifecycleProcessor {
    spec: LifecycleSpec,
    stepper: Stepper,
    aws: Arc<dyn LifecycleApi>,
    completed: tokio::sync::Mutex<Completed>,
    hooks: tokio::sync::Mutex<BTreeMap<(String, String), (ActionResult, u32)>>,
}

impl LifecycleProcessor {
    /// A processor for `spec` running `handler`; completed tokens are kept in `state_dir`.
    pub async fn new(
        spec: LifecycleSpec,
        handler: Arc<GuestComponent>,
        state_dir: Option<PathBuf>,
    ) -> Result<Self, HookError> {
        handler
            .check_grants(&spec.capabilities)
            .map_err(|source| HookError::NotGranted {
                handler: spec.name.clone(),
                source,
            })?;
        if handler.lifecycle.is_none() {
            return Err(HookError::NotAHandler {
                handler: spec.name.clone(),
                interface: crate::contract::interface_name("lifecycle"),
            });
        }
        let config = spec.endpoint.sdk_config().await;
        let env = CallEnv {
            limits: spec.limits.clone(),
            capabilities: spec.capabilities.clone(),
            ..CallEnv::default()
        };
        let completed = Completed::open(
            state_dir.map(|d| d.join(format!("{}.lifecycle-completed.json", spec.name))),
        );
        let aws: Arc<dyn LifecycleApi> = Arc::new(AwsLifecycleApi::new(&config).map_err(
            |source| HookError::Aws {
                handler: spec.name.clone(),
                source,
            },
        )?);
        Ok(LifecycleProcessor {
            stepper: Stepper {
                handler,
                env,
                store: aws.clone(),
                max_steps: spec.max_steps,
            },
            aws,
            completed: tokio::sync::Mutex::new(completed),
            hooks: Default::default(),
            spec,
        })
    }

    /// The spec.
    pub fn spec(&self) -> &LifecycleSpec {
        &self.spec
    }

    /// Receives and handles messages until `stop`; a message in progress is finished.
    pub async fn run(&self, stop: CancellationToken) {
        tracing::info!(handler = %self.spec.name, queue = %self.spec.queue_url, "lifecycle handler running");
        loop {
            let received = tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                received = self.receive() => received,
            };
            match received {
                Ok(messages) => {
                    for QueueMessage { receipt, body } in messages {
                        // While the handler works, the message stays invisible: otherwise
                        // another host would receive it and run the same action.
                        let handled = tokio::select! {
                            handled = self.handle_message(&body) => handled,
                            _ = self.keep_invisible(&receipt) => unreachable!("keep_invisible never returns"),
                        };
                        tracing::info!(handler = %self.spec.name, ?handled, "lifecycle message");
                        if handled.is_final() {
                            self.delete(&receipt).await;
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(handler = %self.spec.name, %error, "receiving lifecycle messages");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    }
                }
            }
        }
    }

    async fn receive(&self) -> Result<Vec<QueueMessage>, AwsError> {
        self.aws
            .receive(
                &self.spec.queue_url,
                self.spec.wait_time.0,
                self.spec.visibility_timeout.0,
            )
            .await
    }

    /// Extends the message's visibility every half timeout, for as long as it is polled.
    async fn keep_invisible(&self, receipt: &str) {
        let timeout = self.spec.visibility_timeout.0.max(Duration::from_secs(1));
        loop {
            tokio::time::sleep(timeout / 2).await;
            if let Err(error) = self
                .aws
                .extend_visibility(&self.spec.queue_url, receipt, timeout)
                .await
            {
                tracing::warn!(%error, "extending a lifecycle message's visibility");
            }
        }
    }

    async fn delete(&self, receipt: &str) {
        if let Err(error) = self.aws.delete(&self.spec.queue_url, receipt).await {
            // Redelivered later and recognized as a duplicate.
            tracing::warn!(%error, "deleting a lifecycle message");
        }
    }

    /// Handles one message body: completes its action (or recognizes a duplicate).
    pub async fn handle_message(&self, body: &str) -> Handled {
        let notification = match parse_message(body) {
            Ok(Message::Action(n)) => n,
            Ok(Message::Test) => return Handled::Test,
            Err(why) => return Handled::Dropped(why),
        };
        if self
            .completed
            .lock()
            .await
            .contains(&notification.lifecycle_action_token)
        {
            return Handled::Duplicate;
        }
        let transition = match notification.transition() {
            Ok(t) => t,
            Err(why) => return Handled::Dropped(why),
        };
        let hook = self.hook(&notification).await;
        let (default_result, heartbeat_timeout) = hook.unwrap_or((ActionResult::Abandon, 3600));
        let instance = self
            .stepper
            .instance(
                &notification.ec2_instance_id,
                &notification.auto_scaling_group_name,
            )
            .await;
        let event = LifecycleEvent {
            transition,
            state: instance.tags.get(&state_tag(transition)).cloned(),
            instance,
            hook: Some(Hook {
                name: notification.lifecycle_hook_name.clone(),
                token: notification.lifecycle_action_token.clone(),
                default_result: default_result.as_str().to_owned(),
                heartbeat_timeout_seconds: heartbeat_timeout,
                metadata: notification.notification_metadata.clone(),
            }),
            step: 0,
        };
        let stepped = self
            .stepper
            .run(event, || self.heartbeat(&notification))
            .await;
        let (result, defaulted) = match stepped {
            Stepped::Finished(result) => (result, false),
            // Guessing the default could abandon an instance whose hook says CONTINUE: leave
            // the message for a later delivery, when the hook may be readable again.
            Stepped::Failed(why) if hook.is_none() => {
                return Handled::Retry(format!(
                    "the handler failed ({why}) and the hook's default result is unknown (DescribeLifecycleHooks failed)"
                ));
            }
            Stepped::Failed(why) => {
                tracing::warn!(
                    instance = %notification.ec2_instance_id,
                    %why,
                    default = default_result.as_str(),
                    "lifecycle handler failed; completing with the hook's default result"
                );
                (default_result, true)
            }
        };
        if let Err(error) = self.complete(&notification, result).await {
            return Handled::Retry(error.to_string());
        }
        Handled::Completed {
            instance: notification.ec2_instance_id,
            result,
            defaulted,
        }
    }

    /// The hook's default result and heartbeat timeout; `None` if they cannot be read now.
    /// Only answers are cached: a failed describe is asked again next time.
    async fn hook(&self, n: &Notification) -> Option<(ActionResult, u32)> {
        let key = (
            n.auto_scaling_group_name.clone(),
            n.lifecycle_hook_name.clone(),
        );
        if let Some(known) = self.hooks.lock().await.get(&key) {
            return Some(*known);
        }
        let (result, timeout) = match self
            .aws
            .describe_hook(&n.auto_scaling_group_name, &n.lifecycle_hook_name)
            .await
        {
            Ok(answer) => answer,
            Err(error) => {
                tracing::warn!(%error, hook = %n.lifecycle_hook_name, "DescribeLifecycleHooks failed");
                return None;
            }
        };
        self.hooks.lock().await.insert(key, (result, timeout));
        Some((result, timeout))
    }

    async fn heartbeat(&self, n: &Notification) {
        if let Err(error) = self.aws.heartbeat(action(n)).await {
            tracing::warn!(%error, "lifecycle heartbeat failed");
        }
    }

    /// Completes the action; `Err` if it may still be pending (the message must stay).
    async fn complete(&self, n: &Notification, result: ActionResult) -> Result<(), AwsError> {
        match self.aws.complete(action(n), result).await {
            Ok(Completion::Completed) => {}
            // Completed before (by us before a crash, or it timed out): nothing left to do.
            Ok(Completion::AlreadyCompleted) => {
                tracing::info!(token = %n.lifecycle_action_token, "lifecycle action was already completed");
            }
            Err(error) => {
                tracing::warn!(token = %n.lifecycle_action_token, %error, "the message stays for a retry");
                return Err(error);
            }
        }
        self.completed.lock().await.add(&n.lifecycle_action_token);
        Ok(())
    }
}

/// The action a notification names.
fn action(n: &Notification) -> ActionRef<'_> {
    ActionRef {
        group: &n.auto_scaling_group_name,
        hook: &n.lifecycle_hook_name,
        token: &n.lifecycle_action_token,
        instance: &n.ec2_instance_id,
    }
}
