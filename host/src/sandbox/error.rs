//! Typed errors of loading and calling guests.

use std::time::Duration;

use crate::contract::model::GuestError;

use super::Capability;

/// Everything that can go wrong loading or calling a guest, each case saying what happened
/// and, where it applies, which limit was hit.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The bytes are not a valid WebAssembly component.
    #[error("invalid component: {reason}")]
    InvalidComponent {
        /// The parser's or validator's reason.
        reason: String,
    },
    /// The component is larger than the configured maximum.
    #[error("component is {size} bytes, over the limit of {limit} bytes")]
    ComponentTooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Compiling the component broke one of the compile budgets.
    // Not a `source`: the message already says it all, and a chain would repeat it.
    #[error("compile-limit: {0}")]
    CompileLimit(super::CompileLimit),
    /// The component does not export what the host needs.
    #[error("world mismatch: expected {expected}, but the component exports [{}]", found.join(", "))]
    WorldMismatch {
        /// What the host expected.
        expected: String,
        /// What the component exports.
        found: Vec<String>,
    },
    /// The component imports something the host does not provide.
    #[error("unknown import {import:?}: {reason}")]
    UnknownImport {
        /// The import's name.
        import: String,
        /// Why it cannot be satisfied.
        reason: String,
    },
    /// The component imports a capability its autoscaler did not grant.
    #[error("capability `{capability}` is not granted (the component imports {import})")]
    CapabilityNotGranted {
        /// The capability.
        capability: Capability,
        /// The import that needs it.
        import: String,
    },
    /// The call ran out of fuel.
    #[error("fuel exhausted: the call used its whole budget of {budget} units")]
    FuelExhausted {
        /// The budget.
        budget: u64,
    },
    /// The call ran past its wall-clock deadline.
    #[error("deadline exceeded: the call did not finish within {timeout:?}")]
    DeadlineExceeded {
        /// The deadline.
        timeout: Duration,
    },
    /// A linear memory tried to grow past its cap.
    #[error(
        "memory limit: a linear memory asked for {requested} bytes, over the cap of {limit} bytes"
    )]
    MemoryLimit {
        /// The size asked for.
        requested: u64,
        /// The cap.
        limit: u64,
    },
    /// A table, instance or similar count went past its cap.
    #[error("resource limit: {what}")]
    ResourceLimit {
        /// What was exceeded.
        what: String,
    },
    /// The guest called host imports more often than allowed.
    #[error("host call limit: more than {limit} capability calls in one call")]
    HostCallLimit {
        /// The limit.
        limit: u32,
    },
    /// The guest returned more data than allowed.
    #[error("output too large: {size} bytes, over the limit of {limit} bytes")]
    OutputTooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The guest trapped (panic, `unreachable`, stack overflow, ...).
    #[error("guest trap: {message}{}", backtrace.as_deref().map(|b| format!("\n{b}")).unwrap_or_default())]
    GuestTrap {
        /// The trap's description.
        message: String,
        /// The wasm backtrace, if one was captured.
        backtrace: Option<String>,
    },
    /// The guest returned its own error.
    #[error("guest returned an error: {0}")]
    Guest(#[from] GuestError),
    /// Every instance slot stayed in use for as long as a call may wait for one.
    #[error(
        "busy: all {0} instance slots stayed in use for sandbox.pooling.maxSlotWaitMs (sandbox.pooling.maxConcurrentCalls is {0})"
    )]
    Busy(u32),
    /// The limits asked for cannot be honoured by this engine.
    #[error("invalid limits: {0}")]
    InvalidLimits(String),
    /// The state store could not be read or written.
    #[error("state store: {0}")]
    State(GuestError),
    /// Reading a component from disk failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An error inside the host itself.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<super::CompileLimit> for SandboxError {
    fn from(limit: super::CompileLimit) -> Self {
        SandboxError::CompileLimit(limit)
    }
}

impl SandboxError {
    /// The component imports `capability`, which its autoscaler did not grant.
    pub(crate) fn not_granted(capability: Capability) -> Self {
        SandboxError::CapabilityNotGranted {
            capability,
            import: crate::contract::interface_name(capability.interface()),
        }
    }

    /// A short stable name of the error's kind, for metrics labels and JSON output.
    pub fn kind(&self) -> &'static str {
        match self {
            SandboxError::InvalidComponent { .. } => "invalid-component",
            SandboxError::ComponentTooLarge { .. } => "component-too-large",
            SandboxError::CompileLimit(_) => "compile-limit",
            SandboxError::WorldMismatch { .. } => "world-mismatch",
            SandboxError::UnknownImport { .. } => "unknown-import",
            SandboxError::CapabilityNotGranted { .. } => "capability-not-granted",
            SandboxError::FuelExhausted { .. } => "fuel-exhausted",
            SandboxError::DeadlineExceeded { .. } => "deadline-exceeded",
            SandboxError::MemoryLimit { .. } => "memory-limit",
            SandboxError::ResourceLimit { .. } => "resource-limit",
            SandboxError::HostCallLimit { .. } => "host-call-limit",
            SandboxError::OutputTooLarge { .. } => "output-too-large",
            SandboxError::GuestTrap { .. } => "guest-trap",
            SandboxError::Guest(_) => "guest-error",
            SandboxError::State(_) => "state",
            SandboxError::Busy(_) => "busy",
            SandboxError::InvalidLimits(_) => "invalid-limits",
            SandboxError::Io { .. } => "io",
            SandboxError::Internal(_) => "internal",
        }
    }

    /// The error on one line, without the backtrace: what CLIs and events show.
    pub(crate) fn summary(&self) -> String {
        match self {
            SandboxError::GuestTrap { message, .. } => format!("guest trap: {message}"),
            other => other.to_string(),
        }
    }
}

/// An error raised by a host function to abort the guest; classified back into a
/// [`SandboxError`] when the call returns.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HostAbort {
    #[error("host call limit of {0} exceeded")]
    HostCallLimit(u32),
    #[error("capability {capability} not granted")]
    NotGranted { capability: Capability },
    #[error("deadline exceeded while the guest was in a host call")]
    Deadline,
    #[error("asked for {asked} random bytes in one call, over the cap of {limit}")]
    RandomLimit { asked: u64, limit: u64 },
}
