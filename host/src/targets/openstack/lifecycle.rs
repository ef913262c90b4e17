//! The host's own lifecycle events on an OpenStack pool, since OpenStack has no lifecycle
//! hooks. Each server's place is kept in its metadata ([`LIFECYCLE_STATE_KEY`]), so a
//! restarted host resumes where the last one stopped:
//!
//! - created `Pending:Wait`: it counts toward the pool's size but is not ready; once ACTIVE,
//!   `launch` is delivered; CONTINUE makes it `InService`, ABANDON deletes it;
//! - a scale-in marks a server in service `Terminating:Wait` (it no longer counts), delivers
//!   `terminate` and deletes it whatever the result, as AWS does; a server whose launch was
//!   never handled is deleted at once, with nothing to drain.
//!
//! Events run in tasks beside the autoscaler's runs, so a handler that drains for minutes
//! never holds a run up; they stop with the target.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Mutex;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::instances::{LIFECYCLE_STATE_KEY, NovaInstances};
use super::{OpenStackTarget, Server};
use crate::contract::lifecycle_model::{ActionResult, Transition};
use crate::targets::TargetError;
use crate::targets::lifecycle::{InstanceStore, LifecycleDelivery};

/// Where a server stands in the host's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Created; its launch event is not handled yet.
    Pending,
    /// Launched (or created without a handler).
    InService,
    /// Being drained before its delete.
    Terminating,
}

impl Phase {
    /// The phase a metadata value names; a server without one is in service.
    pub(super) fn of(marker: Option<&str>) -> Phase {
        match marker {
            Some("Pending:Wait") => Phase::Pending,
            Some("Terminating:Wait") => Phase::Terminating,
            _ => Phase::InService,
        }
    }

    /// Its metadata value (AWS's lifecycle state names).
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending:Wait",
            Phase::InService => "InService",
            Phase::Terminating => "Terminating:Wait",
        }
    }
}

/// A server's event, as this host knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Running {
    /// Under way.
    Now(Transition),
    /// Finished at that moment: a listing begun earlier may not show its result yet.
    Finished(Instant),
}

type InFlight = Arc<Mutex<HashMap<String, Running>>>;

/// The events of one pool.
pub(super) struct Lifecycle {
    delivery: Arc<dyn LifecycleDelivery>,
    /// Servers with an event running or just finished.
    in_flight: InFlight,
    stop: CancellationToken,
    /// Stops the running events when the target goes.
    _stop_on_drop: DropGuard,
}

/// What one event's task holds.
struct Event {
    delivery: Arc<dyn LifecycleDelivery>,
    store: Arc<NovaInstances>,
    in_flight: InFlight,
    id: String,
    name: String,
    group: String,
}

impl Lifecycle {
    pub(super) fn new(delivery: Arc<dyn LifecycleDelivery>) -> Self {
        let stop = CancellationToken::new();
        Lifecycle {
            delivery,
            in_flight: Arc::default(),
            _stop_on_drop: stop.clone().drop_guard(),
            stop,
        }
    }

    fn event(&self, target: &OpenStackTarget, server: &Server) -> Event {
        Event {
            delivery: self.delivery.clone(),
            store: target.instances.clone(),
            in_flight: self.in_flight.clone(),
            id: server.id.clone(),
            name: server.name.clone(),
            group: target.tag(),
        }
    }

    fn spawn(&self, event: Event, transition: Transition) {
        let stop = self.stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = event.run(transition) => {}
            }
        });
    }

    /// Stops the running events.
    pub(super) fn stop(&self) {
        self.stop.cancel();
    }

    /// Starts the events the servers listed at `listed_at` are waiting for: `launch` of an
    /// ACTIVE server still pending, `terminate` of one marked terminating (left by a crash or
    /// a failed delete).
    pub(super) async fn resume(
        &self,
        target: &OpenStackTarget,
        servers: &[Server],
        listed_at: Instant,
    ) {
        let mut in_flight = self.in_flight.lock().await;
        // An event finished before the listing began shows in it; one still pending there
        // failed to record its result and is delivered again.
        in_flight.retain(|_, running| !matches!(running, Running::Finished(at) if *at < listed_at));
        for server in servers {
            if in_flight.contains_key(&server.id) {
                continue;
            }
            let transition = match server.phase {
                Phase::Pending if server.status == "ACTIVE" => Transition::Launch,
                Phase::Terminating => Transition::Terminate,
                _ => continue,
            };
            in_flight.insert(server.id.clone(), Running::Now(transition));
            self.spawn(self.event(target, server), transition);
        }
    }

    /// Takes `server` (listed at `listed_at`) out of the pool: marks it terminating and
    /// delivers `terminate` before its delete, or deletes it at once if its launch was never
    /// handled.
    pub(super) async fn terminate(
        &self,
        target: &OpenStackTarget,
        server: &Server,
        listed_at: Instant,
    ) -> Result<(), TargetError> {
        let mut in_flight = self.in_flight.lock().await;
        let launched_since =
            matches!(in_flight.get(&server.id), Some(Running::Finished(at)) if *at >= listed_at);
        if server.phase != Phase::InService && !launched_since {
            // A launch still running sees it gone and leaves the server alone.
            in_flight.remove(&server.id);
            return target.delete_server(server).await;
        }
        target
            .instances
            .set_metadata(
                &server.id,
                &[(LIFECYCLE_STATE_KEY, Phase::Terminating.as_str())],
            )
            .await?;
        in_flight.insert(server.id.clone(), Running::Now(Transition::Terminate));
        self.spawn(self.event(target, server), Transition::Terminate);
        Ok(())
    }
}

impl Event {
    async fn run(self, transition: Transition) {
        let instance = self.store.instance(&self.id, &self.group).await;
        let store: Arc<dyn InstanceStore> = self.store.clone();
        let delivered = self.delivery.deliver(transition, instance, store).await;
        let mut in_flight = self.in_flight.lock().await;
        if in_flight.get(&self.id) != Some(&Running::Now(transition)) {
            // Scaled in while it launched: the scale-in deleted it.
            return;
        }
        let done = match (transition, delivered.result) {
            (Transition::Launch, ActionResult::Continue) => {
                self.store
                    .set_metadata(&self.id, &[(LIFECYCLE_STATE_KEY, Phase::InService.as_str())])
                    .await
            }
            (Transition::Launch, ActionResult::Abandon) => {
                tracing::warn!(pool = %self.group, server = %self.name, "launch abandoned: deleting the server");
                self.store.delete(&self.id, &self.name).await
            }
            _ => self.store.delete(&self.id, &self.name).await.map(|()| {
                tracing::info!(pool = %self.group, server = %self.name, "server deleted after its terminate event");
            }),
        };
        if let Err(error) = done {
            // The marker is unchanged, so the next observation delivers the event again; the
            // handler resumes from its persisted state.
            tracing::warn!(pool = %self.group, server = %self.name, %error, "after the lifecycle event; retried at the next observation");
        }
        in_flight.insert(self.id.clone(), Running::Finished(Instant::now()));
    }
}
