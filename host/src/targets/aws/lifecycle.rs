//! Lifecycle hooks handled by a wasm component: messages from the hook's SQS queue are turned
//! into events, the handler is stepped through its state machine (state persisted as an
//! instance tag after every step, heartbeats while it works), and the action is completed
//! with the handler's result — or the hook's default result when the handler fails, so no
//! instance waits beyond its timeout. A message is deleted only after its action completed,
//! so a crash re-delivers it; completed tokens are remembered, so a duplicate is handled once.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_autoscaling::Client as AutoScaling;
use aws_sdk_sqs::Client as Sqs;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::ec2::Ec2;
use super::{AwsEndpoint, describe};
use crate::contract::lifecycle_model::{
    ActionResult, Hook, Instance, LifecycleEvent, StepOutcome, Transition,
};
use crate::engine::HumanDuration;
use crate::fsutil::write_atomic;
use crate::sandbox::{CallEnv, Capabilities, GuestComponent, Limits};

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// A lifecycle notification, whatever envelope it came in.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A lifecycle action to handle.
    Action(Notification),
    /// `autoscaling:TEST_NOTIFICATION`, sent when a hook is created: nothing to do.
    Test,
}

/// The fields of a lifecycle action notification.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Notification {
    /// The hook.
    pub lifecycle_hook_name: String,
    /// `autoscaling:EC2_INSTANCE_LAUNCHING` or `autoscaling:EC2_INSTANCE_TERMINATING`.
    pub lifecycle_transition: String,
    /// The group.
    pub auto_scaling_group_name: String,
    /// The instance.
    #[serde(rename = "EC2InstanceId")]
    pub ec2_instance_id: String,
    /// The action's token.
    pub lifecycle_action_token: String,
    /// The hook's NotificationMetadata.
    #[serde(default)]
    pub notification_metadata: Option<String>,
}

impl Notification {
    fn transition(&self) -> Result<Transition, String> {
        match self.lifecycle_transition.as_str() {
            "autoscaling:EC2_INSTANCE_LAUNCHING" => Ok(Transition::Launch),
            "autoscaling:EC2_INSTANCE_TERMINATING" => Ok(Transition::Terminate),
            other => Err(format!("unknown lifecycle transition {other:?}")),
        }
    }
}

/// Parses an SQS message body: the hook's own JSON, an SNS envelope (`"Type":
/// "Notification"`, the payload in `Message`), or an EventBridge envelope (`"detail-type"`,
/// the payload in `detail`).
pub fn parse_message(body: &str) -> Result<Message, String> {
    let value: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    let payload = if value.get("Type").and_then(|t| t.as_str()) == Some("Notification") {
        let inner = value["Message"]
            .as_str()
            .ok_or("SNS envelope without Message")?;
        serde_json::from_str(inner).map_err(|e| format!("SNS Message is not JSON: {e}"))?
    } else if value.get("detail-type").is_some() {
        value["detail"].clone()
    } else {
        value
    };
    if payload.get("Event").and_then(|e| e.as_str()) == Some("autoscaling:TEST_NOTIFICATION") {
        return Ok(Message::Test);
    }
    serde_json::from_value(payload)
        .map(Message::Action)
        .map_err(|e| format!("not a lifecycle notification: {e}"))
}

/// Tokens of completed actions, newest last, kept on disk so a restart still recognizes a
/// duplicate.
struct Completed {
    path: Option<PathBuf>,
    tokens: VecDeque<String>,
}

const COMPLETED_KEPT: usize = 10_000;

impl Completed {
    fn open(path: Option<PathBuf>) -> Self {
        let tokens = path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Completed { path, tokens }
    }

    fn contains(&self, token: &str) -> bool {
        self.tokens.iter().any(|t| t == token)
    }

    fn add(&mut self, token: &str) {
        if self.tokens.len() == COMPLETED_KEPT {
            self.tokens.pop_front();
        }
        self.tokens.push_back(token.to_owned());
        if let Some(path) = &self.path {
            let written = serde_json::to_vec(&self.tokens)
                .map_err(|e| e.to_string())
                .and_then(|b| write_atomic(path, &b).map_err(|e| e.to_string()));
            if let Err(error) = written {
                tracing::warn!(%error, "cannot persist completed lifecycle tokens");
            }
        }
    }
}

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
    Dropped(String),
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

/// Consumes one hook queue.
pub struct LifecycleProcessor {
    spec: LifecycleSpec,
    stepper: Stepper,
    autoscaling: AutoScaling,
    sqs: Sqs,
    completed: tokio::sync::Mutex<Completed>,
    hooks: tokio::sync::Mutex<BTreeMap<(String, String), (ActionResult, u32)>>,
}

impl LifecycleProcessor {
    /// A processor for `spec` running `handler`; completed tokens are kept in `state_dir`.
    pub async fn new(
        spec: LifecycleSpec,
        handler: Arc<GuestComponent>,
        state_dir: Option<PathBuf>,
    ) -> Result<Self, String> {
        handler
            .check_grants(&spec.capabilities)
            .map_err(|e| e.to_string())?;
        if handler.lifecycle.is_none() {
            return Err(format!(
                "{}: the handler does not export {} (world lifecycle-handler)",
                spec.name,
                crate::contract::interface_name("lifecycle")
            ));
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
        Ok(LifecycleProcessor {
            stepper: Stepper {
                handler,
                env,
                ec2: Ec2::new(&config)?,
                max_steps: spec.max_steps,
            },
            autoscaling: AutoScaling::new(&config),
            sqs: Sqs::new(&config),
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
                    for (receipt, body) in messages {
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

    async fn receive(&self) -> Result<Vec<(String, String)>, String> {
        let seconds = |d: HumanDuration| i32::try_from(d.0.as_secs()).unwrap_or(i32::MAX);
        let answer = self
            .sqs
            .receive_message()
            .queue_url(&self.spec.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(seconds(self.spec.wait_time).min(20))
            .visibility_timeout(seconds(self.spec.visibility_timeout).max(1))
            .send()
            .await
            .map_err(|e| describe(&e))?;
        Ok(answer
            .messages()
            .iter()
            .filter_map(|m| Some((m.receipt_handle()?.to_owned(), m.body()?.to_owned())))
            .collect())
    }

    /// Extends the message's visibility every half timeout, for as long as it is polled.
    async fn keep_invisible(&self, receipt: &str) {
        let timeout = self.spec.visibility_timeout.0.max(Duration::from_secs(1));
        let seconds = i32::try_from(timeout.as_secs()).unwrap_or(i32::MAX);
        loop {
            tokio::time::sleep(timeout / 2).await;
            if let Err(e) = self
                .sqs
                .change_message_visibility()
                .queue_url(&self.spec.queue_url)
                .receipt_handle(receipt)
                .visibility_timeout(seconds)
                .send()
                .await
            {
                tracing::warn!(error = %describe(&e), "extending a lifecycle message's visibility");
            }
        }
    }

    async fn delete(&self, receipt: &str) {
        if let Err(e) = self
            .sqs
            .delete_message()
            .queue_url(&self.spec.queue_url)
            .receipt_handle(receipt)
            .send()
            .await
        {
            // Redelivered later and recognized as a duplicate.
            tracing::warn!(error = %describe(&e), "deleting a lifecycle message");
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
                &self.autoscaling,
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
        if let Err(why) = self.complete(&notification, result).await {
            return Handled::Retry(why);
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
        let answer = match self
            .autoscaling
            .describe_lifecycle_hooks()
            .auto_scaling_group_name(&n.auto_scaling_group_name)
            .lifecycle_hook_names(&n.lifecycle_hook_name)
            .send()
            .await
        {
            Ok(answer) => answer,
            Err(e) => {
                tracing::warn!(error = %describe(&e), hook = %n.lifecycle_hook_name, "DescribeLifecycleHooks failed");
                return None;
            }
        };
        // A hook that no longer exists: AWS's defaults (its actions end on their own).
        let found = answer.lifecycle_hooks().first();
        let result = found
            .and_then(|h| h.default_result())
            .and_then(ActionResult::parse)
            .unwrap_or(ActionResult::Abandon);
        let timeout = found
            .and_then(|h| h.heartbeat_timeout())
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or(3600);
        self.hooks.lock().await.insert(key, (result, timeout));
        Some((result, timeout))
    }

    async fn heartbeat(&self, n: &Notification) {
        if let Err(e) = self
            .autoscaling
            .record_lifecycle_action_heartbeat()
            .auto_scaling_group_name(&n.auto_scaling_group_name)
            .lifecycle_hook_name(&n.lifecycle_hook_name)
            .lifecycle_action_token(&n.lifecycle_action_token)
            .instance_id(&n.ec2_instance_id)
            .send()
            .await
        {
            tracing::warn!(error = %describe(&e), "lifecycle heartbeat failed");
        }
    }

    /// Completes the action; `Err` if it may still be pending (the message must stay).
    async fn complete(&self, n: &Notification, result: ActionResult) -> Result<(), String> {
        let sent = self
            .autoscaling
            .complete_lifecycle_action()
            .auto_scaling_group_name(&n.auto_scaling_group_name)
            .lifecycle_hook_name(&n.lifecycle_hook_name)
            .lifecycle_action_token(&n.lifecycle_action_token)
            .instance_id(&n.ec2_instance_id)
            .lifecycle_action_result(result.as_str())
            .send()
            .await;
        match sent {
            Ok(_) => {}
            // Completed before (by us before a crash, or it timed out): nothing left to do.
            Err(e) if describe(&e).contains("No active Lifecycle Action") => {
                tracing::info!(token = %n.lifecycle_action_token, "lifecycle action was already completed");
            }
            Err(e) => {
                let why = format!("CompleteLifecycleAction failed: {}", describe(&e));
                tracing::warn!(token = %n.lifecycle_action_token, %why, "the message stays for a retry");
                return Err(why);
            }
        }
        self.completed.lock().await.add(&n.lifecycle_action_token);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{Message, parse_message};

    const DIRECT: &str = r#"{"Origin":"EC2","Destination":"AutoScalingGroup","Service":"AWS Auto Scaling","Time":"2026-11-22T04:00:00.000Z","AccountId":"123456789012","LifecycleTransition":"autoscaling:EC2_INSTANCE_LAUNCHING","RequestId":"r-1","LifecycleActionToken":"tok-1","EC2InstanceId":"i-1","LifecycleHookName":"launch","AutoScalingGroupName":"web","NotificationMetadata":"{\"role\":\"node\"}"}"#;

    #[test]
    fn every_envelope_is_accepted() {
        let Ok(Message::Action(direct)) = parse_message(DIRECT) else {
            panic!("direct");
        };
        assert_eq!(direct.ec2_instance_id, "i-1");
        assert_eq!(
            direct.notification_metadata.as_deref(),
            Some(r#"{"role":"node"}"#)
        );
        let sns = serde_json::json!({"Type": "Notification", "MessageId": "m", "Message": DIRECT})
            .to_string();
        assert_eq!(parse_message(&sns), Ok(Message::Action(direct.clone())));
        let detail: serde_json::Value = serde_json::from_str(DIRECT).expect("json");
        let bridge = serde_json::json!({"version": "0", "detail-type": "EC2 Instance-launch Lifecycle Action",
            "source": "aws.autoscaling", "detail": detail}).to_string();
        assert_eq!(parse_message(&bridge), Ok(Message::Action(direct)));
        let test = r#"{"AccountId":"1","RequestId":"r","AutoScalingGroupARN":"arn","AutoScalingGroupName":"web","Service":"AWS Auto Scaling","Event":"autoscaling:TEST_NOTIFICATION","Time":"t"}"#;
        assert_eq!(parse_message(test), Ok(Message::Test));
        assert!(parse_message("{}").is_err());
        assert!(parse_message("not json").is_err());
    }
}
