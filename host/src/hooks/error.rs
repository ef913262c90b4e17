//! Why a lifecycle handler cannot be set up.

use crate::sandbox::SandboxError;
#[cfg(feature = "aws")]
use crate::targets::aws::AwsError;

/// Why a lifecycle handler cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The handler needs a capability its entry does not grant.
    #[error("{handler}: {source}")]
    NotGranted {
        /// The handler's name.
        handler: String,
        /// Which capability.
        source: SandboxError,
    },
    /// The component does not export the lifecycle interface.
    #[error("{handler}: the handler does not export {interface} (world lifecycle-handler)")]
    NotAHandler {
        /// The handler's name.
        handler: String,
        /// The interface it lacks.
        interface: String,
    },
    /// The AWS clients cannot be made (no region).
    #[cfg(feature = "aws")]
    #[error("{handler}: {source}")]
    Aws {
        /// The handler's name.
        handler: String,
        /// What is missing.
        source: AwsError,
    },
}
