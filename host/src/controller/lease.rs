//! Leader election over a `coordination.k8s.io/v1` Lease, with client-go's semantics: the
//! holder renews every `renew_period`; a standby takes the lease once it has seen the same
//! record unchanged for a whole `lease_duration` by its own clock (so clock skew between
//! replicas does not matter); a holder that cannot renew within `renew_deadline`, or finds
//! another holder, stops at once. Every write carries the resourceVersion it read, so two
//! candidates can never both win.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// Timing and naming of the election.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// The Lease's name.
    pub name: String,
    /// The Lease's namespace.
    pub namespace: String,
    /// This candidate's identity (the pod name).
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub lease_duration: Duration,
    /// A holder that has not renewed for this long stops acting (shorter than the duration,
    /// so it stops before anyone else may start).
    pub renew_deadline: Duration,
    /// How often the holder renews and a standby retries.
    pub renew_period: Duration,
}

impl LeaseSettings {
    /// client-go's proportions for a given lease duration: renew deadline 2/3 of it, retry
    /// period 1/5 of it.
    pub fn with_duration(
        name: &str,
        namespace: &str,
        identity: &str,
        lease_duration: Duration,
    ) -> Self {
        LeaseSettings {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            identity: identity.to_owned(),
            lease_duration,
            renew_deadline: lease_duration * 2 / 3,
            renew_period: lease_duration / 5,
        }
    }
}

/// The label on this replica's pod saying whether it leads: the chart's Service selects
/// `leader`, so API requests never reach a standby (which runs no autoscaler).
pub const ROLE_LABEL: &str = "wasmscaler.dev/role";

/// Labels this replica's pod (named by its identity, in the Lease's namespace) `leader` or
/// `standby`. A failure is logged: the Service then routes by the last label written.
pub(crate) async fn mark_role(client: &Client, settings: &LeaseSettings, leader: bool) {
    let pods: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(client.clone(), &settings.namespace);
    let role = if leader { "leader" } else { "standby" };
    let patch = serde_json::json!({"metadata": {"labels": {ROLE_LABEL: role}}});
    if let Err(error) = pods
        .patch(
            &settings.identity,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
    {
        tracing::warn!(pod = %settings.identity, %error, role, "cannot label this replica's pod");
    }
}

/// Why holding the lease ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LeaseEnd {
    /// Shutdown was asked for; the lease is still held.
    Stopped,
    /// The lease was lost; the reason says how.
    Lost(String),
}

/// One candidate.
pub(crate) struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
    /// The last record seen (resourceVersion) and when, by this process's clock.
    observed: Mutex<Option<(String, Instant)>>,
}

/// What one attempt found.
enum Attempt {
    /// This candidate holds the lease (acquired or renewed).
    Held,
    /// Somebody else does.
    HeldBy(String),
}

impl LeaderElector {
    /// A candidate for `settings.name`.
    pub fn new(client: Client, settings: LeaseSettings) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            observed: Mutex::new(None),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    /// Waits until this candidate holds the lease; `false` if `stop` came first.
    pub(crate) async fn acquire(&self, stop: &CancellationToken) -> bool {
        let mut last_holder = None;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Held) => {
                    tracing::info!(identity = %self.settings.identity, lease = %self.settings.name, "became leader");
                    return true;
                }
                Ok(Attempt::HeldBy(holder)) => {
                    if last_holder.as_ref() != Some(&holder) {
                        tracing::info!(leader = %holder, "standing by");
                        last_holder = Some(holder);
                    }
                }
                Err(error) => tracing::warn!(%error, "lease: cannot read or write"),
            }
            tokio::select! {
                biased;
                _ = stop.cancelled() => return false,
                _ = tokio::time::sleep(self.settings.renew_period) => {}
            }
        }
    }

    /// Renews until the lease is lost or `stop`. On `stop` the lease is kept: the caller
    /// first stops acting, then calls [`LeaderElector::release`].
    pub async fn hold(&self, stop: &CancellationToken) -> LeaseEnd {
        let mut renewed = Instant::now();
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return LeaseEnd::Stopped,
                _ = tokio::time::sleep(self.settings.renew_period) => {}
            }
            let attempt = tokio::time::timeout(
                self.settings
                    .renew_deadline
                    .saturating_sub(renewed.elapsed()),
                self.try_acquire_or_renew(),
            )
            .await;
            match attempt {
                Ok(Ok(Attempt::Held)) => renewed = Instant::now(),
                Ok(Ok(Attempt::HeldBy(holder))) => {
                    return LeaseEnd::Lost(format!("{holder} holds the lease"));
                }
                Ok(Err(error)) => tracing::warn!(%error, "lease: renewal failed"),
                Err(_) => {}
            }
            if renewed.elapsed() >= self.settings.renew_deadline {
                return LeaseEnd::Lost(format!(
                    "not renewed for {:?}",
                    self.settings.renew_deadline
                ));
            }
        }
    }

    fn lease_body(
        &self,
        now: Timestamp,
        acquired: Option<MicroTime>,
        transitions: i32,
    ) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.settings.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.settings.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX),
            ),
            acquire_time: Some(acquired.unwrap_or(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Notes the lease's resourceVersion as seen now, if it changed (from a list made for
    /// other reasons): its expiry is then counted from its last change, not from this
    /// candidate's first attempt.
    pub(crate) async fn note_seen(&self, version: &str) {
        let mut observed = self.observed.lock().await;
        if observed.as_ref().is_none_or(|(seen, _)| seen != version) {
            *observed = Some((version.to_owned(), Instant::now()));
        }
    }

    /// One attempt to acquire or renew: `true` if this candidate now holds the lease.
    pub(crate) async fn try_once(&self) -> Result<bool, kube::Error> {
        Ok(matches!(self.try_acquire_or_renew().await?, Attempt::Held))
    }

    async fn try_acquire_or_renew(&self) -> Result<Attempt, kube::Error> {
        let now = Timestamp::now();
        let name = &self.settings.name;
        let Some(mut lease) = self.api.get_opt(name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.lease_body(now, None, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Held),
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    Ok(Attempt::HeldBy("another candidate".into()))
                }
                Err(e) => Err(e),
            };
        };
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let mine = holder == self.settings.identity;
        let expired = {
            let mut observed = self.observed.lock().await;
            let seen_at = match observed.as_ref() {
                Some((seen, at)) if *seen == version => *at,
                _ => {
                    *observed = Some((version.clone(), Instant::now()));
                    Instant::now()
                }
            };
            let duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(self.settings.lease_duration, Duration::from_secs);
            seen_at.elapsed() >= duration
        };
        if !mine && !holder.is_empty() && !expired {
            return Ok(Attempt::HeldBy(holder));
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
        let acquired = if mine {
            spec.acquire_time.clone()
        } else {
            None
        };
        lease.spec = Some(self.lease_body(now, acquired, transitions));
        match self.api.replace(name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(Attempt::Held),
            // Somebody wrote in between: they won this round.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                Ok(Attempt::HeldBy("another candidate".into()))
            }
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up (holder cleared) if this candidate holds it, so a standby takes
    /// over without waiting for it to expire.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.settings.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!("lease released"),
            Err(error) => tracing::warn!(%error, "lease: release failed"),
        }
    }
}
