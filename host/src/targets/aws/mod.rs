//! AWS: an Auto Scaling group as a target ([`AsgTarget`]), lifecycle hooks handled by a wasm
//! component ([`crate::hooks`]), and the two EC2 calls they need ([`ec2`]).
//!
//! Only the Auto Scaling and SQS SDKs are linked; credentials come from the standard chain
//! (environment, profile, web identity, IMDS). `endpointUrl` points every client at another
//! endpoint (moto in the tests).

//!
//! The specs here are plain data, in every build; the clients need the `aws` feature.

#[cfg(feature = "aws")]
mod asg;
#[cfg(feature = "aws")]
pub mod ec2;
#[cfg(feature = "aws")]
mod error;
#[cfg(feature = "aws")]
mod lifecycle_api;

#[cfg(feature = "aws")]
use std::time::Duration;

#[cfg(feature = "aws")]
use aws_config::{BehaviorVersion, SdkConfig};
use serde::{Deserialize, Serialize};

#[cfg(feature = "aws")]
pub use asg::AsgTarget;
#[cfg(feature = "aws")]
pub use error::AwsError;
#[cfg(feature = "aws")]
pub use lifecycle_api::{ActionRef, AwsLifecycleApi, Completion, LifecycleApi, QueueMessage};

/// `target.awsAsg` in the config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AsgSpec {
    /// The Auto Scaling group's name.
    pub group_name: String,
    /// Region and endpoint.
    #[serde(flatten)]
    pub endpoint: AwsEndpoint,
}

/// Where the AWS APIs are.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsEndpoint {
    /// Region, e.g. `eu-west-1` (default: the standard chain's).
    #[serde(default)]
    pub region: Option<String>,
    /// Another endpoint for every service (e.g. `http://127.0.0.1:5000` for moto).
    #[serde(default)]
    pub endpoint_url: Option<String>,
}

#[cfg(feature = "aws")]
impl AwsEndpoint {
    /// The SDK configuration: the standard credential chain, rustls with ring, short
    /// timeouts (the next run is the retry).
    pub async fn sdk_config(&self) -> SdkConfig {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(25))
                    .build(),
            );
        if let Some(region) = &self.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(url) = &self.endpoint_url {
            loader = loader.endpoint_url(url.clone());
        }
        loader.load().await
    }
}

/// The error code of an SDK error, when the service sent one.
#[cfg(feature = "aws")]
pub(crate) fn error_code<E, R>(error: &aws_sdk_autoscaling::error::SdkError<E, R>) -> Option<String>
where
    E: aws_sdk_autoscaling::error::ProvideErrorMetadata,
{
    match error {
        aws_sdk_autoscaling::error::SdkError::ServiceError(e) => e.err().code().map(str::to_owned),
        _ => None,
    }
}

/// An SDK error in one line, with its code and message when the service sent them (decoded
/// once, by [`AwsError::sdk`]).
#[cfg(feature = "aws")]
pub(crate) fn describe<E, R>(error: &aws_sdk_autoscaling::error::SdkError<E, R>) -> String
where
    E: aws_sdk_autoscaling::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match AwsError::sdk("", error) {
        AwsError::Service { code, message, .. } => format!("{code}: {message}"),
        AwsError::Transport { message, .. } => message,
        other => other.to_string(),
    }
}

/// An error and its sources on one line.
#[cfg(feature = "aws")]
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
