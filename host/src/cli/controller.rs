//! `wasmscaler controller` and `wasmscaler crd`.

use std::path::PathBuf;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::run::{ApiArgs, stop_on_signal};
use crate::controller::bounds::TenantBounds;
use crate::controller::lease::LeaseSettings;
use crate::controller::{self, ControllerConfig};
use crate::engine::HumanDuration;
use crate::policies::{FetchConfig, StoreQuota};
use crate::sandbox::SandboxConfig;
use crate::targets::budget::{BudgetConfig, RequestBudget};
use crate::targets::kubernetes::cache::cache_client;
use crate::targets::kubernetes::{client_for, client_with_budget};

#[derive(Debug, Args)]
pub(super) struct ControllerArgs {
    /// Watch WasmAutoscalers in this namespace only; without it, in every namespace.
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// This replica's name for the lease and Events [default: hostname-pid].
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Act without leader election (only with a single replica).
    #[arg(long)]
    no_leader_election: bool,
    /// The Lease used for leader election.
    #[arg(long, default_value = "wasmscaler")]
    lease_name: String,
    /// Split the autoscalers into this many shards over the replicas: every replica runs
    /// its share, and takes over a dead one's within the lease duration. The same on every
    /// replica; 1 means one leader runs them all and the others stand by.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    shards: u32,
    /// Namespace of the Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// How long a leader's lease lasts without renewal; a standby takes over after it.
    #[arg(long, default_value = "15s", value_parser = |s: &str| HumanDuration::parse(s))]
    lease_duration: HumanDuration,
    /// Uploaded policies, guest state and (by default) the compiled cache.
    #[arg(
        long,
        env = "WASMSCALER_STATE_DIR",
        default_value = "/var/lib/wasmscaler"
    )]
    state_dir: PathBuf,
    /// Compiled-component cache [default: STATE_DIR/cache].
    #[arg(long, env = "WASMSCALER_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// An OCI registry reached over plain HTTP (host or host:port); repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    insecure_registries: Vec<String>,
    /// What a namespace's WasmAutoscaler may ask for: a YAML file of tenant bounds (limits,
    /// minimum interval, policy sources, HTTP envelope) [default: the built-in bounds].
    #[arg(long, env = "WASMSCALER_TENANT_BOUNDS", value_name = "FILE")]
    tenant_bounds: Option<PathBuf>,
    /// Requests per second the controller sends to the API server, sustained (client-go's
    /// QPS); runs over it wait, they never fail. Lease renewals have a client of their own.
    #[arg(long, default_value_t = BudgetConfig::default().qps, value_parser = positive_rate)]
    kube_api_qps: f64,
    /// Requests the controller may send at once after a quiet period (client-go's burst).
    #[arg(long, default_value_t = BudgetConfig::default().burst,
          value_parser = clap::value_parser!(u32).range(1..))]
    kube_api_burst: u32,
    /// Most policies the upload store holds.
    #[arg(long, default_value_t = StoreQuota::default().max_policies)]
    upload_max_policies: usize,
    /// Most MiB of content the upload store holds.
    #[arg(long, default_value_t = StoreQuota::default().max_total_bytes >> 20)]
    upload_max_mib: u64,
    #[command(flatten)]
    api: ApiArgs,
    #[command(flatten)]
    compile: super::CompileArgs,
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "wasmscaler".into());
    format!("{host}-{}", std::process::id())
}

/// A request rate above zero: at 0 the budget would hold every request for good.
fn positive_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!(
            "{text:?} is not a rate above 0 requests per second"
        )),
    }
}

/// The bounds file, or the defaults.
fn tenant_bounds(path: Option<&std::path::Path>) -> anyhow::Result<TenantBounds> {
    let Some(path) = path else {
        return Ok(TenantBounds::default());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read the tenant bounds {}: {e}", path.display()))?;
    serde_yaml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("tenant bounds {}: {e}", path.display()))
}

/// The addresses of the Kubernetes API server (from the client configuration and, in a pod,
/// the `kubernetes` Service's environment), as single-address networks: guests must never
/// reach the API with whatever the network lets through.
async fn api_server_networks(config: &kube::Config) -> Vec<ipnet::IpNet> {
    let mut hosts: Vec<(String, u16)> = Vec::new();
    if let Some(host) = config.cluster_url.host() {
        let port = config.cluster_url.port_u16().unwrap_or(443);
        hosts.push((
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
        ));
    }
    if let Ok(host) = std::env::var("KUBERNETES_SERVICE_HOST") {
        hosts.push((host, 443));
    }
    let mut networks = Vec::new();
    for (host, port) in hosts {
        if let Ok(found) = tokio::net::lookup_host((host.as_str(), port)).await {
            networks.extend(found.map(|a| ipnet::IpNet::from(a.ip())));
        }
    }
    networks
}

pub(super) async fn run(args: ControllerArgs) -> anyhow::Result<()> {
    let bounds = tenant_bounds(args.tenant_bounds.as_deref())?;
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let election = (!args.no_leader_election).then(|| {
        LeaseSettings::with_duration(
            &args.lease_name,
            &args.lease_namespace,
            &identity,
            args.lease_duration.0,
        )
    });
    let budget = RequestBudget::new(BudgetConfig {
        qps: args.kube_api_qps,
        burst: args.kube_api_burst,
    });
    let kube_config = kube::Config::infer()
        .await
        .map_err(|e| anyhow::anyhow!("no Kubernetes configuration: {e}"))?;
    let mut http_deny_networks = SandboxConfig::default().http_deny_networks;
    http_deny_networks.extend(api_server_networks(&kube_config).await);
    let config = ControllerConfig {
        // The chart sets WATCH_NAMESPACE="" for "every namespace".
        namespace: args.namespace.clone().filter(|ns| !ns.is_empty()),
        identity,
        election,
        sandbox: SandboxConfig {
            cache_dir: Some(
                args.cache_dir
                    .clone()
                    .unwrap_or_else(|| args.state_dir.join("cache")),
            ),
            compile: args.compile.config(),
            http_deny_networks,
            ..SandboxConfig::default()
        },
        state_dir: args.state_dir.clone(),
        fetch: FetchConfig {
            insecure_registries: args.insecure_registries.clone(),
            ..FetchConfig::default()
        },
        listen: args.api.listen,
        api_token: args.api.token()?,
        tls: args.api.tls(),
        api_limits: args.api.limits(),
        bounds,
        uploads: StoreQuota {
            max_policies: args.upload_max_policies,
            max_total_bytes: args.upload_max_mib << 20,
        },
        client_budget: Some(budget.clone()),
        shards: args.shards,
    };
    if args.shards > 1 && args.no_leader_election {
        anyhow::bail!(
            "--shards needs leader election: shard Leases keep each autoscaler on one replica"
        );
    }
    let client = client_with_budget(kube_config.clone(), &budget)?;
    let lease_client = client_for(kube_config.clone())?;
    let stop = CancellationToken::new();
    tokio::spawn(stop_on_signal(stop.clone(), None));
    let clients = controller::Clients {
        main: client,
        lease: lease_client,
        caches: cache_client(kube_config.clone())?,
    };
    controller::run(clients, config, stop).await
}

pub(super) fn crd() -> anyhow::Result<()> {
    print!("{}", controller::crd::crd_yaml()?);
    Ok(())
}
