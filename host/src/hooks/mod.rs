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
//! - [`processor`]: the queue consumer, with the completed-token store of `completed`.

//!
//! The spec and the message parsing are in every build; the processor and the stepper, which
//! call AWS, need the `aws` feature.

#[cfg(feature = "aws")]
mod completed;
pub mod message;
#[cfg(feature = "aws")]
pub mod processor;
pub mod spec;
#[cfg(feature = "aws")]
pub mod stepper;

pub use message::{Message, MessageError, Notification, parse_message};
#[cfg(feature = "aws")]
pub use processor::{Handled, HookError, LifecycleProcessor};
pub use spec::{LifecycleSpec, state_tag};
#[cfg(feature = "aws")]
pub use stepper::{Stepped, Stepper};
