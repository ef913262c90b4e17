//! The hook's notifications as SQS delivers them: the hook's own JSON, or wrapped by SNS or
//! EventBridge.

use serde::Deserialize;

use crate::contract::lifecycle_model::Transition;

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

/// Why a queue message is not a lifecycle action the host can handle. Such a message is
/// deleted, so it cannot come back forever.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MessageError {
    /// The body is not JSON.
    #[error("not JSON: {0}")]
    NotJson(String),
    /// An SNS envelope whose `Message` is missing or not a JSON string.
    #[error("SNS envelope: {0}")]
    BadSnsEnvelope(String),
    /// JSON, but not the fields of a lifecycle action notification.
    #[error("not a lifecycle notification: {0}")]
    NotANotification(String),
    /// A transition other than launching and terminating.
    #[error("unknown lifecycle transition {0:?}")]
    UnknownTransition(String),
}

impl MessageError {
    /// A stable label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            MessageError::NotJson(_) => "NotJson",
            MessageError::BadSnsEnvelope(_) => "BadSnsEnvelope",
            MessageError::NotANotification(_) => "NotANotification",
            MessageError::UnknownTransition(_) => "UnknownTransition",
        }
    }
}

impl Notification {
    // Used by the `aws` feature's code only.
    #[cfg_attr(not(feature = "aws"), allow(dead_code))]
    pub(crate) fn transition(&self) -> Result<Transition, MessageError> {
        match self.lifecycle_transition.as_str() {
            "autoscaling:EC2_INSTANCE_LAUNCHING" => Ok(Transition::Launch),
            "autoscaling:EC2_INSTANCE_TERMINATING" => Ok(Transition::Terminate),
            other => Err(MessageError::UnknownTransition(other.to_owned())),
        }
    }
}

/// Parses an SQS message body: the hook's own JSON, an SNS envelope (`"Type":
/// "Notification"`, the payload in `Message`), or an EventBridge envelope (`"detail-type"`,
/// the payload in `detail`).
pub fn parse_message(body: &str) -> Result<Message, MessageError> {
    let value: serde_json::Value =
        serde_json::from_str(body).map_err(|e| MessageError::NotJson(e.to_string()))?;
    let payload = if value.get("Type").and_then(|t| t.as_str()) == Some("Notification") {
        let inner = value["Message"]
            .as_str()
            .ok_or_else(|| MessageError::BadSnsEnvelope("no Message string".to_owned()))?;
        serde_json::from_str(inner)
            .map_err(|e| MessageError::BadSnsEnvelope(format!("Message is not JSON: {e}")))?
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
        .map_err(|e| MessageError::NotANotification(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::{Message, MessageError, parse_message};

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
        assert!(matches!(
            parse_message("{}"),
            Err(MessageError::NotANotification(_))
        ));
        assert_eq!(
            parse_message("not json").map_err(|e| e.reason()),
            Err("NotJson")
        );
        let empty_sns = r#"{"Type": "Notification", "MessageId": "m"}"#;
        assert_eq!(
            parse_message(empty_sns).map_err(|e| e.reason()),
            Err("BadSnsEnvelope")
        );
    }
}
