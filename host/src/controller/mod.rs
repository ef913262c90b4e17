//! Cluster mode: `WasmAutoscaler` resources ([`crd`]) reconciled into engine tasks
//! ([`reconciler`]), status and Events ([`status`]), and leader election ([`lease`]) so that
//! of several replicas exactly one acts.

pub mod bounds;
pub mod crd;
pub mod events;
pub mod lease;
pub mod reconciler;
pub mod shards;
pub mod status;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiLimits, ApiState, Metrics, TlsFiles};
use crate::engine::Fleet;
use crate::policies::{FetchConfig, PolicySources};
use crate::sandbox::network::DeniedNetworks;
use crate::sandbox::{Sandbox, SandboxConfig};
use crate::targets::kubernetes::cache::WatchCaches;
use bounds::TenantBounds;
use crd::WasmAutoscaler;
use events::EventSink;
use lease::{LeaderElector, LeaseEnd, LeaseSettings};
use reconciler::{ReconcileEnv, Reconciler};

/// The name Events are reported under.
pub(crate) const CONTROLLER_NAME: &str = "wasmscaler";

/// Everything `wasmscaler controller` is configured with.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Watch this namespace only; `None` watches all.
    pub namespace: Option<String>,
    /// This replica's identity (pod name) for the lease and Events.
    pub identity: String,
    /// Leader election; `None` acts without (a single replica).
    pub election: Option<LeaseSettings>,
    /// Uploaded policies and guest state.
    pub state_dir: PathBuf,
    /// The sandbox.
    pub sandbox: SandboxConfig,
    /// Fetching `https://` and `oci://` policies.
    pub fetch: FetchConfig,
    /// Serve the REST API here.
    pub listen: Option<std::net::SocketAddr>,
    /// Bearer token of the mutating API calls.
    pub api_token: Option<String>,
    /// HTTPS for the API.
    pub tls: Option<TlsFiles>,
    /// What API clients may cost.
    pub api_limits: ApiLimits,
    /// What a namespace's `WasmAutoscaler` may ask for.
    pub bounds: TenantBounds,
    /// How much the upload store may hold.
    pub uploads: crate::policies::StoreQuota,
    /// The request budget the client was built with, for `/metrics`.
    pub client_budget: Option<crate::targets::budget::RequestBudget>,
    /// Shards to split the autoscalers into over the replicas (with leader election); 1
    /// means one leader runs them all.
    pub shards: u32,
}

/// The `WasmAutoscaler`s that name an upload, read from the API server: the same answer on
/// every replica.
struct ResourceUsers(Api<WasmAutoscaler>);

impl api::PolicyUsers for ResourceUsers {
    fn users<'a>(
        &'a self,
        name: &'a str,
    ) -> crate::sandbox::BoxFuture<'a, Result<Vec<String>, String>> {
        Box::pin(async move {
            let list = self
                .0
                .list(&kube::api::ListParams::default())
                .await
                .map_err(|e| format!("listing WasmAutoscalers: {e}"))?;
            Ok(list
                .items
                .iter()
                .filter(|r| {
                    r.spec.scaling.references()
                        .into_iter()
                        .any(|p| matches!(p, crate::policies::PolicyRef::Uploaded { name: n, .. } if n == name))
                })
                .map(WasmAutoscaler::key)
                .collect())
        })
    }
}

/// The controller's clients: each kind of traffic on connections (and a budget) of its own.
pub struct Clients {
    /// Targets' reads and writes, status and Events, under the request budget.
    pub main: Client,
    /// Lease renewals: never queued behind the autoscalers' traffic, so a busy or throttled
    /// API server slows runs down but never delays a renewal.
    pub lease: Client,
    /// The watch caches' lists and watches (long read timeout, no budget): they keep every
    /// run's reads off the API server, so they must not queue behind status writes either.
    pub caches: Client,
}

/// Runs the controller until `stop`, with a client for each kind of traffic.
pub async fn run(
    clients: Clients,
    config: ControllerConfig,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let Clients {
        main: client,
        lease: lease_client,
        caches: cache_client,
    } = clients;
    let sandbox = Arc::new(Sandbox::new(config.sandbox.clone())?);
    std::fs::create_dir_all(&config.state_dir).map_err(|e| {
        anyhow::anyhow!(
            "creating the state directory {}: {e}",
            config.state_dir.display()
        )
    })?;
    let denied = DeniedNetworks::new(config.sandbox.http_deny_networks.clone());
    let sources = Arc::new(
        PolicySources::new(sandbox, &config.fetch)?
            .with_upload_dir(config.state_dir.join("policies"), config.uploads)?
            // No host-wide rules: every load names its namespace's (`bounds.for_namespace`).
            .with_local_copies(config.state_dir.join("sources"))?,
    );
    let engine = Arc::new(Fleet::default());
    let metrics = Arc::new(match &config.client_budget {
        Some(budget) => Metrics::new().with_client_budget(budget),
        None => Metrics::new(),
    });
    let resources: Api<WasmAutoscaler> = match &config.namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    };
    let api_task = match config.listen {
        Some(addr) => {
            let mut state =
                ApiState::new(engine.clone(), metrics.clone(), config.api_token.clone())
                    .with_limits(config.api_limits.clone());
            if let Some(store) = sources.uploads() {
                state = state
                    .with_policies(store.clone())
                    .with_policy_users(Arc::new(ResourceUsers(resources.clone())));
            }
            let state = Arc::new(state);
            Some(api::serve(addr, state, config.tls.clone(), stop.clone()).await?)
        }
        None => None,
    };
    let shared = Arc::new(ReconcileEnv {
        client: client.clone(),
        api: resources,
        engine,
        sources,
        events: Arc::new(EventSink::new(
            client.clone(),
            CONTROLLER_NAME,
            &config.identity,
        )),
        observer: Some(metrics),
        state_dir: config.state_dir.join("guest-state"),
        bounds: config.bounds.clone(),
        denied,
        caches: Arc::new(WatchCaches::new(client.clone(), cache_client)),
        preparing: Arc::new(tokio::sync::Semaphore::new(reconciler::CONCURRENT_PREPARES)),
    });
    if let Some(lease) = config.election.clone()
        && config.shards > 1
    {
        let settings = shards::ShardSettings {
            shards: config.shards,
            lease,
        };
        shards::run(shared, lease_client, settings, stop).await;
        if let Some(task) = api_task {
            let _ = task.await;
        }
        return Ok(());
    }
    let elector = config
        .election
        .clone()
        .map(|settings| LeaderElector::new(lease_client.clone(), settings));
    tracing::info!(
        identity = %config.identity,
        namespace = config.namespace.as_deref().unwrap_or("(all)"),
        leader_election = elector.is_some(),
        "controller starting"
    );
    if let Some(settings) = &config.election {
        lease::mark_role(&lease_client, settings, false).await;
    }
    loop {
        if let Some(elector) = &elector {
            if !elector.acquire(&stop).await {
                break;
            }
            lease::mark_role(&lease_client, elector.settings(), true).await;
        }
        let term = stop.child_token();
        let mut reconciler = Reconciler::new(shared.clone());
        let lost = match &elector {
            Some(elector) => {
                tokio::select! {
                    end = elector.hold(&stop) => match end {
                        LeaseEnd::Lost(why) => Some(why),
                        LeaseEnd::Stopped => None,
                    },
                    _ = reconciler.run(&term) => None,
                }
            }
            None => {
                reconciler.run(&term).await;
                None
            }
        };
        term.cancel();
        // In-flight runs may finish, but only while the lease surely still holds: past the
        // renew deadline a standby may be about to act.
        let within = config
            .election
            .as_ref()
            .map_or(Duration::from_secs(30), |e| e.renew_deadline);
        match &lost {
            // Another replica may already act: stop mid-run rather than finish a write.
            Some(why) => {
                tracing::warn!(%why, "lost the lease; stopping every autoscaler at once");
                reconciler.shutdown(true, within).await;
            }
            None => reconciler.shutdown(false, within).await,
        }
        if let Some(elector) = &elector {
            lease::mark_role(&lease_client, elector.settings(), false).await;
        }
        if stop.is_cancelled() {
            break;
        }
        if lost.is_none() {
            // The watch ended without a stop or a lost lease: start a new term.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    if let Some(elector) = &elector {
        // Only now that nothing acts any more may a standby start.
        elector.release().await;
    }
    if let Some(task) = api_task {
        let _ = task.await;
    }
    tracing::info!("controller stopped");
    Ok(())
}
