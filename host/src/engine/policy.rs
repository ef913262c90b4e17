//! The seam between the engine and what decides: a [`Policy`] gathers samples and evaluates
//! them. The sandbox's [`GuestComponent`] is the one a host runs; the engine's tests (and a
//! simulator) stand in their own, with no wasm.

use std::sync::Arc;

use crate::contract::model::{Context, Decision, Sample};
use crate::sandbox::{BoxFuture, CallEnv, CallOutcome, Capabilities, GuestComponent, SandboxError};

/// What a call to a policy returns: its value and what it cost, or why it failed.
pub type PolicyResult<T> = Result<CallOutcome<T>, SandboxError>;

/// Something the engine can ask for samples and for a decision.
pub trait Policy: Send + Sync {
    /// Identifies the policy's code in records and status (a component's sha256).
    fn digest(&self) -> String;

    /// Refuses capabilities the autoscaler does not grant but the policy would use.
    fn check_grants(&self, granted: &Capabilities) -> Result<(), SandboxError>;

    /// The samples for `ctx`.
    fn gather<'a>(
        &'a self,
        ctx: &'a Context,
        env: &'a CallEnv,
    ) -> BoxFuture<'a, PolicyResult<Vec<Sample>>>;

    /// The decision for `ctx` given `samples`.
    fn evaluate<'a>(
        &'a self,
        ctx: &'a Context,
        samples: &'a [Sample],
        env: &'a CallEnv,
    ) -> BoxFuture<'a, PolicyResult<Decision>>;
}

impl Policy for GuestComponent {
    fn digest(&self) -> String {
        self.sha256()
    }

    fn check_grants(&self, granted: &Capabilities) -> Result<(), SandboxError> {
        GuestComponent::check_grants(self, granted)
    }

    fn gather<'a>(
        &'a self,
        ctx: &'a Context,
        env: &'a CallEnv,
    ) -> BoxFuture<'a, PolicyResult<Vec<Sample>>> {
        Box::pin(GuestComponent::gather(self, ctx, env))
    }

    fn evaluate<'a>(
        &'a self,
        ctx: &'a Context,
        samples: &'a [Sample],
        env: &'a CallEnv,
    ) -> BoxFuture<'a, PolicyResult<Decision>> {
        Box::pin(GuestComponent::evaluate(self, ctx, samples, env))
    }
}

/// The guests of an autoscaler as loaded: one `policy` component, or a metric source and an
/// evaluator, or listed metric sources and an evaluator.
#[derive(Clone)]
pub struct Guests {
    /// Provides `gather` (with listed sources, the first of them, for reports).
    pub metrics: Arc<GuestComponent>,
    /// Provides `evaluate`.
    pub evaluator: Arc<GuestComponent>,
    /// With `metrics:` as a list: each source's component, in the list's order.
    pub sources: Vec<Arc<GuestComponent>>,
}

impl Guests {
    /// One component gathering, another (or the same) evaluating.
    pub fn pair(metrics: Arc<GuestComponent>, evaluator: Arc<GuestComponent>) -> Self {
        Guests {
            metrics,
            evaluator,
            sources: Vec::new(),
        }
    }
}

/// The policies an autoscaler runs: who gathers and who evaluates.
#[derive(Clone)]
pub struct Policies {
    /// Provides `gather` (with listed sources, the first of them).
    pub metrics: Arc<dyn Policy>,
    /// Provides `evaluate`.
    pub evaluator: Arc<dyn Policy>,
    /// With `metrics:` as a list: each source's policy, in the list's order.
    pub sources: Vec<Arc<dyn Policy>>,
}

impl Policies {
    /// One policy doing both.
    pub fn single(policy: Arc<dyn Policy>) -> Self {
        Policies {
            metrics: policy.clone(),
            evaluator: policy,
            sources: Vec::new(),
        }
    }

    /// Listed metric sources (at least one), in the spec's order, and an evaluator.
    pub fn listed(sources: Vec<Arc<dyn Policy>>, evaluator: Arc<dyn Policy>) -> Option<Self> {
        Some(Policies {
            metrics: sources.first()?.clone(),
            evaluator,
            sources,
        })
    }
}

impl From<Guests> for Policies {
    fn from(guests: Guests) -> Self {
        Policies {
            metrics: guests.metrics,
            evaluator: guests.evaluator,
            sources: guests
                .sources
                .into_iter()
                .map(|s| s as Arc<dyn Policy>)
                .collect(),
        }
    }
}
