//! The engine's typed errors. Each has a stable [`reason`](AutoscalerError::reason), the
//! CamelCase word conditions, Events and metric labels carry.

use crate::sandbox::SandboxError;

/// A spec the engine cannot run: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SpecError {
    /// The field's path in the spec (`minReplicas`, `behavior.scaleUp.policies`).
    pub field: String,
    /// What is wrong, naming the field.
    pub message: String,
}

impl SpecError {
    pub(crate) fn at(field: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError {
            field: field.into(),
            message: message.into(),
        }
    }

    /// `InvalidSpec`.
    pub fn reason(&self) -> &'static str {
        "InvalidSpec"
    }
}

/// The engine's persisted history could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The stored state is not what this version writes.
    #[error("state file {path} is corrupt: {message}")]
    Corrupt {
        /// Where it is.
        path: String,
        /// The parser's complaint.
        message: String,
    },
    /// Reading or writing failed.
    #[error("cannot {action} {path}: {message}")]
    Io {
        /// `read` or `write`.
        action: &'static str,
        /// Where.
        path: String,
        /// The OS's complaint.
        message: String,
    },
    /// Another thread panicked while holding the in-memory state.
    #[error("engine state lock poisoned")]
    Poisoned,
}

impl StateError {
    /// `StateUnavailable`.
    pub fn reason(&self) -> &'static str {
        "StateUnavailable"
    }
}

/// Why an autoscaler could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AutoscalerError {
    /// The spec is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A policy imports a capability the spec does not grant.
    #[error(transparent)]
    NotGranted(SandboxError),
    /// The persisted history could not be read.
    #[error(transparent)]
    State(#[from] StateError),
    /// The policies given do not match the spec (the listed metric sources).
    #[error("{0}")]
    Policies(String),
}

impl AutoscalerError {
    /// The condition reason: `InvalidSpec`, `CapabilityNotGranted` or `StateUnavailable`
    /// (policies not matching the spec count as `InvalidSpec`).
    pub fn reason(&self) -> &'static str {
        match self {
            AutoscalerError::Spec(e) => e.reason(),
            AutoscalerError::NotGranted(_) => "CapabilityNotGranted",
            AutoscalerError::State(e) => e.reason(),
            AutoscalerError::Policies(_) => "InvalidSpec",
        }
    }
}
