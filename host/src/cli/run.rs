//! `wasmscaler run` and `wasmscaler validate`.

use std::path::PathBuf;

use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState, Metrics};
use crate::config::{ConfigFile, build, load_guests};
use crate::engine::HumanDuration;
use crate::policies::PolicyStore;
use crate::sandbox::Sandbox;

#[derive(Debug, Args)]
pub(super) struct RunArgs {
    /// The config file (YAML; see README).
    #[arg(long, short)]
    config: PathBuf,
    /// Stop by itself after this long (e.g. 90s); otherwise run until Ctrl-C or SIGTERM.
    #[arg(long, value_parser = |s: &str| HumanDuration::parse(s))]
    duration: Option<HumanDuration>,
    /// Serve the REST API (health, metrics, status, dry runs) on this address, e.g.
    /// 127.0.0.1:8080.
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// File holding the bearer token for API calls that can scale (or set
    /// WASMSCALER_API_TOKEN); without one those calls are refused.
    #[arg(long, value_name = "FILE")]
    api_token_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(super) struct ValidateArgs {
    /// The config file to check.
    config: PathBuf,
}

pub(super) async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = ConfigFile::load(&args.config)?;
    let token = match &args.api_token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the API token from {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        None => std::env::var("WASMSCALER_API_TOKEN").ok(),
    };
    let sandbox = Arc::new(Sandbox::new(config.sandbox.clone())?);
    let metrics = Arc::new(Metrics::new());
    let engine = Arc::new(build(&config, &sandbox, Some(metrics.clone())).await?);
    let stop = CancellationToken::new();
    let api = match args.listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr}"))?;
            let policies = PolicyStore::open(
                config.state_dir.join("policies"),
                sandbox.clone(),
                config.sandbox.max_component_bytes,
            )?;
            let state = Arc::new(
                ApiState::new(engine.clone(), metrics, token).with_policies(Arc::new(policies)),
            );
            let shutdown = stop.clone();
            tracing::info!(%addr, "REST API listening");
            Some(tokio::spawn(async move {
                let serve = axum::serve(listener, api::router(state.clone()))
                    .with_graceful_shutdown(async move {
                        shutdown.cancelled().await;
                        state.set_not_ready();
                    });
                if let Err(error) = serve.await {
                    tracing::error!(%error, "REST API failed");
                }
            }))
        }
        None => None,
    };
    tracing::info!(
        autoscalers = engine.autoscalers().len(),
        "wasmscaler running"
    );
    tokio::spawn(stop_on_signal(stop.clone(), args.duration));
    engine.run(stop).await;
    if let Some(api) = api {
        let _ = api.await;
    }
    tracing::info!("stopped: state written, replicas stopped");
    Ok(())
}

async fn stop_on_signal(stop: CancellationToken, duration: Option<HumanDuration>) {
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
    let sandbox = Sandbox::new(config.sandbox.clone())?;
    let guests = load_guests(&config, &sandbox).await?;
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
    println!(
        "{}: {} autoscaler(s) valid",
        args.config.display(),
        config.autoscalers.len()
    );
    Ok(())
}
