//! An AWS Auto Scaling group as a target: current = desired capacity, replicas = its
//! instances, scaled by `SetDesiredCapacity`, or on scale-in with a removal list by
//! `TerminateInstanceInAutoScalingGroup` with decrement for those instances.

use std::time::Duration;

use super::AsgSpec;
use super::ec2::Ec2;
use super::{describe, error_code};
use crate::contract::model::Replica;
use crate::sandbox::BoxFuture;
use crate::targets::{Observation, Target, TargetError, TargetIdentity};
use aws_sdk_autoscaling::Client;
use aws_sdk_autoscaling::types::AutoScalingGroup;

/// Answers that mean "try again shortly" rather than "no".
const RETRYABLE: [&str; 4] = [
    "ScalingActivityInProgress",
    "Throttling",
    "ThrottlingException",
    "ResourceContention",
];
const ATTEMPTS: u32 = 4;

/// A connected Auto Scaling group.
pub struct AsgTarget {
    client: Client,
    ec2: Ec2,
    spec: AsgSpec,
}

impl AsgTarget {
    /// Connects and checks that the group exists.
    pub async fn connect(spec: AsgSpec) -> Result<Self, TargetError> {
        let config = spec.endpoint.sdk_config().await;
        let target = AsgTarget {
            client: Client::new(&config),
            ec2: Ec2::new(&config).map_err(|e| TargetError::Unavailable(e.to_string()))?,
            spec,
        };
        target.group().await?;
        Ok(target)
    }

    async fn group(&self) -> Result<AutoScalingGroup, TargetError> {
        let answer = self
            .client
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(&self.spec.group_name)
            .send()
            .await
            .map_err(|e| TargetError::Unavailable(describe(&e)))?;
        answer
            .auto_scaling_groups()
            .first()
            .cloned()
            .ok_or_else(|| {
                TargetError::NotFound(format!("Auto Scaling group {}", self.spec.group_name))
            })
    }

    /// Retries `call` on throttling and scaling-in-progress answers, with backoff.
    async fn retrying<T, E, R, F, Fut>(&self, what: &str, call: F) -> Result<T, TargetError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, aws_sdk_autoscaling::error::SdkError<E, R>>>,
        E: aws_sdk_autoscaling::error::ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let mut wait = Duration::from_millis(200);
        for attempt in 1..=ATTEMPTS {
            match call().await {
                Ok(value) => return Ok(value),
                Err(e) => {
                    let code = error_code(&e).unwrap_or_default();
                    if attempt < ATTEMPTS && RETRYABLE.contains(&code.as_str()) {
                        tracing::info!(group = %self.spec.group_name, %code, attempt, "{what}: retrying");
                        tokio::time::sleep(wait).await;
                        wait *= 2;
                        continue;
                    }
                    return Err(match code.as_str() {
                        "ValidationError" => {
                            TargetError::Refused(format!("{what}: {}", describe(&e)))
                        }
                        _ => TargetError::Unavailable(format!("{what}: {}", describe(&e))),
                    });
                }
            }
        }
        Err(TargetError::Unavailable(format!("{what}: still busy")))
    }

    async fn scale_to(
        &self,
        observed: &Observation,
        to: u32,
        remove_first: &[String],
    ) -> Result<(), TargetError> {
        // Read again right before writing: someone else changing the group since the
        // observation means this decision is stale, and nothing is written.
        let group = self.group().await?;
        let desired = count(group.desired_capacity());
        if desired != observed.current {
            return Err(TargetError::Conflict(format!(
                "desired capacity of {} changed from {} to {desired} since it was observed",
                self.spec.group_name, observed.current
            )));
        }
        let (min, max) = (count(group.min_size()), count(group.max_size()));
        let to = to.clamp(min, max.max(min));
        if to == desired {
            return Ok(());
        }
        let mut at = desired;
        if to < desired {
            for id in remove_first {
                if at <= to {
                    break;
                }
                let Some(instance) = group
                    .instances()
                    .iter()
                    .find(|i| i.instance_id() == Some(id.as_str()))
                else {
                    continue;
                };
                // Scale-in protection is the user's word that this instance stays.
                if instance.protected_from_scale_in() == Some(true) {
                    tracing::info!(instance = %id, "removal list: instance is protected; kept");
                    continue;
                }
                let terminated = self
                    .retrying("TerminateInstanceInAutoScalingGroup", || {
                        self.client
                            .terminate_instance_in_auto_scaling_group()
                            .instance_id(id)
                            .should_decrement_desired_capacity(true)
                            .send()
                    })
                    .await;
                if let Err(error) = terminated {
                    return Err(partial(desired, at, error));
                }
                at -= 1;
            }
        }
        if at != to {
            let to = i32::try_from(to).unwrap_or(i32::MAX);
            self.retrying("SetDesiredCapacity", || {
                self.client
                    .set_desired_capacity()
                    .auto_scaling_group_name(&self.spec.group_name)
                    .desired_capacity(to)
                    .honor_cooldown(false)
                    .send()
            })
            .await
            .map_err(|error| partial(desired, at, error))?;
        }
        Ok(())
    }

    async fn observe_group(&self) -> Result<Observation, TargetError> {
        let group = self.group().await?;
        let ids: Vec<String> = group
            .instances()
            .iter()
            .filter_map(|i| i.instance_id().map(str::to_owned))
            .collect();
        // Addresses, launch times and tags are EC2's; without them the replicas still list.
        let details = match self.ec2.describe_instances(&ids).await {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(group = %self.spec.group_name, %error, "DescribeInstances failed");
                Vec::new()
            }
        };
        let replicas = group
            .instances()
            .iter()
            .map(|i| {
                let id = i.instance_id().unwrap_or_default().to_owned();
                let ec2 = details.iter().find(|d| d.id == id);
                let mut labels = ec2.map(|d| d.tags.clone()).unwrap_or_default();
                let state = i
                    .lifecycle_state()
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_default();
                labels.insert("lifecycle-state".into(), state.clone());
                labels.insert(
                    "health".into(),
                    i.health_status().unwrap_or_default().to_owned(),
                );
                labels.insert(
                    "protected-from-scale-in".into(),
                    i.protected_from_scale_in().unwrap_or(false).to_string(),
                );
                Replica {
                    name: id,
                    ready: state == "InService" && i.health_status() == Some("Healthy"),
                    start_time_ms: ec2.and_then(|d| d.launch_time_ms),
                    labels,
                    address: ec2.and_then(|d| d.private_address.clone()),
                }
            })
            .collect();
        Ok(Observation {
            current: count(group.desired_capacity()),
            replicas,
            object: serde_json::json!({
                "autoScalingGroupName": group.auto_scaling_group_name(),
                "minSize": group.min_size(),
                "maxSize": group.max_size(),
                "desiredCapacity": group.desired_capacity(),
            })
            .into(),
            version: None,
        })
    }
}

fn count(value: Option<i32>) -> u32 {
    value.and_then(|v| u32::try_from(v).ok()).unwrap_or(0)
}

/// `error` after the group moved from `started` to `at`: partial if it moved at all.
fn partial(started: u32, at: u32, error: TargetError) -> TargetError {
    if at == started {
        error
    } else {
        TargetError::Partial {
            reached: at,
            error: Box::new(error),
        }
    }
}

impl Target for AsgTarget {
    fn identity(&self) -> TargetIdentity {
        TargetIdentity {
            kind: "AutoScalingGroup".into(),
            name: self.spec.group_name.clone(),
            namespace: self.spec.endpoint.region.clone().unwrap_or_default(),
        }
    }

    fn observe(&self) -> BoxFuture<'_, Result<Observation, TargetError>> {
        Box::pin(self.observe_group())
    }

    fn scale<'a>(
        &'a self,
        observed: &'a Observation,
        replicas: u32,
        remove_first: &'a [String],
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        Box::pin(self.scale_to(observed, replicas, remove_first))
    }
}
