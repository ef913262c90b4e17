//! The AWS calls that lifecycle-hook handling makes — the hook's SQS queue, the group's
//! lifecycle actions, EC2's view of an instance — behind one small trait, so the handling in
//! [`crate::hooks`] holds no SDK client. [`AwsLifecycleApi`] makes them with the SDK.

use std::time::Duration;

use aws_sdk_autoscaling::Client as AutoScaling;
use aws_sdk_sqs::Client as Sqs;

use super::AwsError;
use super::ec2::Ec2;
use crate::contract::lifecycle_model::{ActionResult, Instance};
use crate::sandbox::BoxFuture;
use crate::targets::lifecycle::{InstanceStore, StoreError};

/// One message of a hook's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    /// What deletes it or extends its visibility.
    pub receipt: String,
    /// Its body (the notification, in whatever envelope).
    pub body: String,
}

/// The lifecycle action a notification names.
#[derive(Debug, Clone, Copy)]
pub struct ActionRef<'a> {
    /// The group.
    pub group: &'a str,
    /// The hook.
    pub hook: &'a str,
    /// The action's token.
    pub token: &'a str,
    /// The instance.
    pub instance: &'a str,
}

/// How a completion went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The action is completed now.
    Completed,
    /// It was completed before (by this host before a crash, or it timed out).
    AlreadyCompleted,
}

/// The calls, each failing with AWS's answer or why none came.
pub trait LifecycleApi: InstanceStore {
    /// Up to ten messages of `queue`, long-polling up to `wait`, each hidden for `visibility`.
    fn receive<'a>(
        &'a self,
        queue: &'a str,
        wait: Duration,
        visibility: Duration,
    ) -> BoxFuture<'a, Result<Vec<QueueMessage>, AwsError>>;

    /// Hides a received message for `visibility` more.
    fn extend_visibility<'a>(
        &'a self,
        queue: &'a str,
        receipt: &'a str,
        visibility: Duration,
    ) -> BoxFuture<'a, Result<(), AwsError>>;

    /// Deletes a handled message.
    fn delete<'a>(
        &'a self,
        queue: &'a str,
        receipt: &'a str,
    ) -> BoxFuture<'a, Result<(), AwsError>>;

    /// The hook's default result and heartbeat timeout (AWS's defaults for a hook that no
    /// longer exists).
    fn describe_hook<'a>(
        &'a self,
        group: &'a str,
        hook: &'a str,
    ) -> BoxFuture<'a, Result<(ActionResult, u32), AwsError>>;

    /// Records a heartbeat for the action.
    fn heartbeat<'a>(&'a self, action: ActionRef<'a>) -> BoxFuture<'a, Result<(), AwsError>>;

    /// Completes the action with `result`.
    fn complete<'a>(
        &'a self,
        action: ActionRef<'a>,
        result: ActionResult,
    ) -> BoxFuture<'a, Result<Completion, AwsError>>;
}

/// [`LifecycleApi`] through the AWS SDK.
pub struct AwsLifecycleApi {
    autoscaling: AutoScaling,
    sqs: Sqs,
    ec2: Ec2,
}

impl AwsLifecycleApi {
    /// Clients for `config`'s region and endpoint.
    pub fn new(config: &aws_config::SdkConfig) -> Result<Self, AwsError> {
        Ok(AwsLifecycleApi {
            autoscaling: AutoScaling::new(config),
            sqs: Sqs::new(config),
            ec2: Ec2::new(config)?,
        })
    }
}

fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

impl LifecycleApi for AwsLifecycleApi {
    fn receive<'a>(
        &'a self,
        queue: &'a str,
        wait: Duration,
        visibility: Duration,
    ) -> BoxFuture<'a, Result<Vec<QueueMessage>, AwsError>> {
        Box::pin(async move {
            let answer = self
                .sqs
                .receive_message()
                .queue_url(queue)
                .max_number_of_messages(10)
                .wait_time_seconds(seconds(wait).min(20))
                .visibility_timeout(seconds(visibility).max(1))
                .send()
                .await
                .map_err(|e| AwsError::sdk("ReceiveMessage", &e))?;
            Ok(answer
                .messages()
                .iter()
                .filter_map(|m| {
                    Some(QueueMessage {
                        receipt: m.receipt_handle()?.to_owned(),
                        body: m.body()?.to_owned(),
                    })
                })
                .collect())
        })
    }

    fn extend_visibility<'a>(
        &'a self,
        queue: &'a str,
        receipt: &'a str,
        visibility: Duration,
    ) -> BoxFuture<'a, Result<(), AwsError>> {
        Box::pin(async move {
            self.sqs
                .change_message_visibility()
                .queue_url(queue)
                .receipt_handle(receipt)
                .visibility_timeout(seconds(visibility))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| AwsError::sdk("ChangeMessageVisibility", &e))
        })
    }

    fn delete<'a>(
        &'a self,
        queue: &'a str,
        receipt: &'a str,
    ) -> BoxFuture<'a, Result<(), AwsError>> {
        Box::pin(async move {
            self.sqs
                .delete_message()
                .queue_url(queue)
                .receipt_handle(receipt)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| AwsError::sdk("DeleteMessage", &e))
        })
    }

    fn describe_hook<'a>(
        &'a self,
        group: &'a str,
        hook: &'a str,
    ) -> BoxFuture<'a, Result<(ActionResult, u32), AwsError>> {
        Box::pin(async move {
            let answer = self
                .autoscaling
                .describe_lifecycle_hooks()
                .auto_scaling_group_name(group)
                .lifecycle_hook_names(hook)
                .send()
                .await
                .map_err(|e| AwsError::sdk("DescribeLifecycleHooks", &e))?;
            let found = answer.lifecycle_hooks().first();
            let result = found
                .and_then(|h| h.default_result())
                .and_then(ActionResult::parse)
                .unwrap_or(ActionResult::Abandon);
            let timeout = found
                .and_then(|h| h.heartbeat_timeout())
                .and_then(|t| u32::try_from(t).ok())
                .unwrap_or(3600);
            Ok((result, timeout))
        })
    }

    fn heartbeat<'a>(&'a self, action: ActionRef<'a>) -> BoxFuture<'a, Result<(), AwsError>> {
        Box::pin(async move {
            self.autoscaling
                .record_lifecycle_action_heartbeat()
                .auto_scaling_group_name(action.group)
                .lifecycle_hook_name(action.hook)
                .lifecycle_action_token(action.token)
                .instance_id(action.instance)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| AwsError::sdk("RecordLifecycleActionHeartbeat", &e))
        })
    }

    fn complete<'a>(
        &'a self,
        action: ActionRef<'a>,
        result: ActionResult,
    ) -> BoxFuture<'a, Result<Completion, AwsError>> {
        Box::pin(async move {
            let sent = self
                .autoscaling
                .complete_lifecycle_action()
                .auto_scaling_group_name(action.group)
                .lifecycle_hook_name(action.hook)
                .lifecycle_action_token(action.token)
                .instance_id(action.instance)
                .lifecycle_action_result(result.as_str())
                .send()
                .await;
            match sent {
                Ok(_) => Ok(Completion::Completed),
                Err(e) => match AwsError::sdk("CompleteLifecycleAction", &e) {
                    error
                        if error
                            .service_message()
                            .is_some_and(|m| m.contains("No active Lifecycle Action")) =>
                    {
                        Ok(Completion::AlreadyCompleted)
                    }
                    error => Err(error),
                },
            }
        })
    }
}

/// The instance is the group's view plus EC2's; its handler state is kept in EC2 tags.
impl InstanceStore for AwsLifecycleApi {
    fn instance<'a>(&'a self, id: &'a str, group: &'a str) -> BoxFuture<'a, Instance> {
        Box::pin(async move {
            let mut instance = Instance {
                id: id.to_owned(),
                group: group.to_owned(),
                ..Instance::default()
            };
            if let Ok(answer) = self
                .autoscaling
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
        })
    }

    fn tag_instance<'a>(
        &'a self,
        id: &'a str,
        tags: &'a [(&'a str, &'a str)],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.ec2
                .create_tags(id, tags)
                .await
                .map_err(|e| StoreError(e.to_string()))
        })
    }
}
