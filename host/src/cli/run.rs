//! `wasmscaler run` and `wasmscaler validate`.

use std::path::PathBuf;

use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiLimits, ApiState, Metrics};
use crate::config::ConfigFile;
use crate::engine::HumanDuration;
use crate::host::{Host, load_guests, policy_sources};
use crate::sandbox::Sandbox;

#[derive(Debug, Args)]
pub(super) struct RunArgs {
    /// The config file (YAML; see docs/configuration.md).
    #[arg(long, short)]
    config: PathBuf,
    /// Stop by itself after this long (e.g. 90s); otherwise run until Ctrl-C or SIGTERM.
    #[arg(long, value_parser = |s: &str| HumanDuration::parse(s))]
    duration: Option<HumanDuration>,
    #[command(flatten)]
    api: ApiArgs,
}

/// The REST API's address, token and TLS (`run` and `controller`).
#[derive(Debug, Args)]
pub(super) struct ApiArgs {
    /// Serve the REST API (health, metrics, status, dry runs, policy uploads) on this
    /// address, e.g. 127.0.0.1:8080.
    #[arg(long, value_name = "ADDR")]
    pub(super) listen: Option<std::net::SocketAddr>,
    /// File holding the bearer token for API calls that can scale or upload (or set
    /// WASMSCALER_API_TOKEN); without one those calls are refused.
    #[arg(long, value_name = "FILE")]
    api_token_file: Option<PathBuf>,
    /// Serve the API over HTTPS with this PEM certificate chain (with --tls-key-file).
    #[arg(long, value_name = "FILE", requires = "tls_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// The PEM private key of --tls-cert-file.
    #[arg(long, value_name = "FILE", requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,
    /// Let clients without the token run dry runs (they run guests and may read targets).
    #[arg(long)]
    api_open_dry_runs: bool,
    /// Dry runs that may run at once, all clients together; more are answered 429.
    #[arg(long, value_name = "N", default_value_t = ApiLimits::default().max_concurrent_dry_runs)]
    api_max_dry_runs: usize,
    /// Open API connections; more are closed on accept.
    #[arg(long, value_name = "N", default_value_t = ApiLimits::default().max_connections)]
    api_max_connections: usize,
    /// Time a client has to send a request's headers (and a TLS handshake), in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = ApiLimits::default().header_read_timeout_ms)]
    api_header_timeout_ms: u64,
    /// Time a client has to send a request's body, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = ApiLimits::default().body_read_timeout_ms)]
    api_body_timeout_ms: u64,
}

impl ApiArgs {
    /// What API clients may cost, from the flags.
    pub(super) fn limits(&self) -> ApiLimits {
        ApiLimits {
            open_dry_runs: self.api_open_dry_runs,
            max_concurrent_dry_runs: self.api_max_dry_runs,
            max_connections: self.api_max_connections,
            header_read_timeout_ms: self.api_header_timeout_ms,
            body_read_timeout_ms: self.api_body_timeout_ms,
            ..ApiLimits::default()
        }
    }

    /// The certificate and key, when HTTPS is asked for.
    pub(super) fn tls(&self) -> Option<api::TlsFiles> {
        Some(api::TlsFiles {
            cert: self.tls_cert_file.clone()?,
            key: self.tls_key_file.clone()?,
        })
    }

    /// The bearer token: from the file, else `WASMSCALER_API_TOKEN`.
    pub(super) fn token(&self) -> anyhow::Result<Option<String>> {
        Ok(match &self.api_token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading the API token from {}", path.display()))?
                    .trim()
                    .to_owned(),
            ),
            None => std::env::var("WASMSCALER_API_TOKEN").ok(),
        })
    }
}

#[derive(Debug, Args)]
pub(super) struct ValidateArgs {
    /// The config file to check.
    config: PathBuf,
}

pub(super) async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = ConfigFile::load(&args.config)?;
    let token = args.api.token()?;
    let metrics = Arc::new(Metrics::new());
    let host = Host::from_config(&config, Some(metrics.clone())).await?;
    let stop = CancellationToken::new();
    let api = match args.api.listen {
        Some(addr) => {
            let mut state =
                ApiState::new(host.fleet().clone(), metrics, token).with_limits(args.api.limits());
            if let Some(store) = host.sources().uploads() {
                state = state.with_policies(store.clone());
            }
            let state = Arc::new(state);
            Some(api::serve(addr, state, args.api.tls(), stop.clone()).await?)
        }
        None => None,
    };
    tracing::info!(
        autoscalers = host.fleet().autoscalers().len(),
        "wasmscaler running"
    );
    tokio::spawn(stop_on_signal(stop.clone(), args.duration));
    host.run(stop).await;
    if let Some(api) = api {
        let _ = api.await;
    }
    tracing::info!("stopped: state written, replicas stopped");
    Ok(())
}

pub(super) async fn stop_on_signal(stop: CancellationToken, duration: Option<HumanDuration>) {
    let deadline = async {
        match duration {
            Some(d) => tokio::time::sleep(d.0).await,
            None => std::future::pending().await,
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = deadline => tracing::info!("duration reached; stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; stopping"),
        _ = terminate => tracing::info!("SIGTERM; stopping"),
    }
    stop.cancel();
}

pub(super) async fn validate(args: ValidateArgs) -> anyhow::Result<()> {
    let config = ConfigFile::load(&args.config)?;
    let sandbox = Arc::new(Sandbox::new(config.sandbox.clone())?);
    let sources = policy_sources(&config, sandbox)?;
    let guests = load_guests(&config, &sources).await?;
    for (spec, guests) in config.autoscalers.iter().zip(guests) {
        println!(
            "{}: ok (gather {} {}, evaluate {} {})",
            spec.name,
            guests.metrics.sha256().get(..12).unwrap_or_default(),
            serde_json::to_value(guests.metrics.world())?
                .as_str()
                .unwrap_or_default(),
            guests.evaluator.sha256().get(..12).unwrap_or_default(),
            serde_json::to_value(guests.evaluator.world())?
                .as_str()
                .unwrap_or_default(),
        );
    }
    for (i, spec) in config.lifecycle.iter().enumerate() {
        let handler = sources
            .load(&spec.handler)
            .await
            .with_context(|| format!("lifecycle[{i}] ({}): loading {}", spec.name, spec.handler))?;
        if handler.lifecycle.is_none() {
            anyhow::bail!(
                "lifecycle[{i}] ({}): {} does not implement the lifecycle-handler world",
                spec.name,
                spec.handler
            );
        }
        handler
            .check_grants(&spec.capabilities)
            .with_context(|| format!("lifecycle[{i}] ({}): capabilities", spec.name))?;
        println!(
            "{}: ok (lifecycle {})",
            spec.name,
            handler.sha256().get(..12).unwrap_or_default()
        );
    }
    println!(
        "{}: {} autoscaler(s), {} lifecycle handler(s) valid",
        args.config.display(),
        config.autoscalers.len(),
        config.lifecycle.len()
    );
    Ok(())
}
