//! JOIN on a new instance (what `wasmscaler agent` runs at boot, like Joule's snap): the
//! handler stepped once to its result, and the enrolment recorded on the instance, so a
//! second boot does not join again.

use crate::contract::lifecycle_model::{ActionResult, LifecycleEvent, Transition};
use crate::targets::lifecycle::StoreError;

use super::spec::state_tag;
use super::stepper::{Stepped, Stepper};

/// The tag marking an instance whose JOIN completed.
pub const ENROLLED_TAG: &str = "wasmscaler.dev/enrolled";
/// The tag recording the instance's private address, for the host's view of its replicas.
pub const ADDRESS_TAG: &str = "wasmscaler.dev/private-address";

/// How a join ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Joined {
    /// It had joined before: nothing was run.
    AlreadyEnrolled {
        /// The handler's persisted JOIN state.
        state: Option<String>,
    },
    /// The handler continued and the enrolment is recorded.
    Enrolled,
}

/// Why an instance is not enrolled; the next boot (or run) tries again from the persisted
/// state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The handler chose ABANDON.
    #[error("{instance}: the handler abandoned the join")]
    Abandoned {
        /// The instance.
        instance: String,
    },
    /// The handler failed or ran out of steps.
    #[error("{instance}: join failed: {why}")]
    Failed {
        /// The instance.
        instance: String,
        /// Why.
        why: String,
    },
    /// The handler continued but the enrolment could not be recorded.
    #[error("{instance}: recording the enrolment: {source}")]
    Recording {
        /// The instance.
        instance: String,
        /// The store's answer.
        source: StoreError,
    },
}

/// Joins `instance_id` through `stepper` once; `private_address` is recorded when the store
/// has none for it.
pub async fn join(
    stepper: &Stepper,
    instance_id: &str,
    private_address: Option<String>,
) -> Result<Joined, JoinError> {
    let mut instance = stepper.instance(instance_id, "").await;
    if instance.private_address.is_none() {
        instance.private_address = private_address;
    }
    let state_key = state_tag(Transition::Join);
    if instance.tags.get(ENROLLED_TAG).map(String::as_str) == Some("true") {
        return Ok(Joined::AlreadyEnrolled {
            state: instance.tags.get(&state_key).cloned(),
        });
    }
    let event = LifecycleEvent {
        transition: Transition::Join,
        state: instance.tags.get(&state_key).cloned(),
        instance: instance.clone(),
        hook: None,
        step: 0,
    };
    match stepper.run(event, || async {}).await {
        Stepped::Finished(ActionResult::Continue) => {
            let mut tags = vec![(ENROLLED_TAG, "true")];
            if let Some(address) = &instance.private_address {
                tags.push((ADDRESS_TAG, address.as_str()));
            }
            stepper
                .store
                .tag_instance(instance_id, &tags)
                .await
                .map_err(|source| JoinError::Recording {
                    instance: instance_id.to_owned(),
                    source,
                })?;
            tracing::info!(instance = %instance_id, "joined");
            Ok(Joined::Enrolled)
        }
        Stepped::Finished(ActionResult::Abandon) => Err(JoinError::Abandoned {
            instance: instance_id.to_owned(),
        }),
        Stepped::Failed(why) => Err(JoinError::Failed {
            instance: instance_id.to_owned(),
            why,
        }),
    }
}
