//! Lifecycle hooks handled by a wasm component, a peer of the engine: messages from the hook's SQS queue are turned
//! into events, the handler is stepped through its state machine (state persisted as an
//! instance tag after every step, heartbeats while it works), and the action is completed
//! with the handler's result — or the hook's default result when the handler fails, so no
//! instance waits beyond its timeout. A message is deleted only after its action completed,
//! so a crash re-delivers it; completed tokens are remembered, so a duplicate is handled once.

//!
//! - [`spec`]: a handler's entry in the config file, and the instance tag of its state;
//! - [`message`]: the hook's notifications, whatever envelope they came in;
//! - [`stepper`]: one event through the handler's state machine (also what `wasmscaler agent`
//!   runs);
//! - [`processor`]: the queue consumer, with the completed-token store of `completed`;
//! - [`delivered`]: events the host delivers itself around its own creates and deletes, for
//!   targets without lifecycle hooks (OpenStack);
//! - [`join`]: JOIN on a new instance, what `wasmscaler agent` runs.

//!
//! The processor, which consumes an SQS queue, needs the `aws` feature; the rest is in every
//! build.

#[cfg(feature = "aws")]
mod completed;
pub mod delivered;
mod error;
pub mod join;
pub mod message;
#[cfg(feature = "aws")]
pub mod processor;
pub mod spec;
pub mod stepper;

pub use delivered::HostDelivered;
pub use error::HookError;
pub use join::{JoinError, Joined, join};
pub use message::{Message, MessageError, Notification, parse_message};
#[cfg(feature = "aws")]
pub use processor::{Handled, LifecycleProcessor};
pub use spec::{LifecycleSpec, state_tag};
pub use stepper::{Stepped, Stepper};
