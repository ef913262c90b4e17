//! What an AWS call that failed says: which call, and AWS's answer (code and message) or why
//! no answer came.

use aws_sdk_autoscaling::error::{ProvideErrorMetadata, SdkError};

/// A failed AWS call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AwsError {
    /// No region is configured, so no endpoint is known.
    #[error("no AWS region configured (set region or AWS_REGION)")]
    NoRegion,
    /// The credential chain gave none.
    #[error("AWS credentials: {0}")]
    Credentials(String),
    /// The service answered `call` with an error.
    #[error("{call}: {code}: {message}")]
    Service {
        /// The API call, e.g. `CompleteLifecycleAction`.
        call: &'static str,
        /// AWS's error code, e.g. `ValidationError`.
        code: String,
        /// AWS's message.
        message: String,
    },
    /// `call` got no answer: connection, timeout, or a request that could not be built or
    /// signed.
    #[error("{call}: {message}")]
    Transport {
        /// The API call.
        call: &'static str,
        /// What went wrong, with its causes.
        message: String,
    },
    /// `call`'s answer could not be read.
    #[error("{call} answer: {message}")]
    Answer {
        /// The API call.
        call: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

impl AwsError {
    /// `call`'s SDK error.
    pub(crate) fn sdk<E, R>(call: &'static str, error: &SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        match error {
            SdkError::ServiceError(e) => AwsError::Service {
                call,
                code: e.err().code().unwrap_or("error").to_owned(),
                message: e.err().message().unwrap_or("no message").to_owned(),
            },
            other => AwsError::Transport {
                call,
                message: super::error_chain(other),
            },
        }
    }

    /// `call` failed before or without an answer.
    pub(crate) fn transport(call: &'static str, error: impl std::fmt::Display) -> Self {
        AwsError::Transport {
            call,
            message: error.to_string(),
        }
    }

    /// The service's message, if it answered.
    pub(crate) fn service_message(&self) -> Option<&str> {
        match self {
            AwsError::Service { message, .. } => Some(message),
            _ => None,
        }
    }
}
