//! `wasmscaler run` and `wasmscaler validate`.

use std::path::PathBuf;

use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigFile, build, load_guests};
use crate::engine::HumanDuration;
use crate::sandbox::Sandbox;

#[derive(Debug, Args)]
pub(super) struct RunArgs {
    /// The config file (YAML; see README).
    #[arg(long, short)]
    config: PathBuf,
    /// Stop by itself after this long (e.g. 90s); otherwise run until Ctrl-C or SIGTERM.
    #[arg(long, value_parser = |s: &str| HumanDuration::parse(s))]
    duration: Option<HumanDuration>,
}

#[derive(Debug, Args)]
pub(super) struct ValidateArgs {
    /// The config file to check.
    config: PathBuf,
}

pub(super) async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = ConfigFile::load(&args.config)?;
    let sandbox = Sandbox::new(config.sandbox.clone())?;
    let engine = build(&config, &sandbox).await?;
    tracing::info!(
        autoscalers = engine.autoscalers().len(),
        "wasmscaler running"
    );
    let stop = CancellationToken::new();
    tokio::spawn(stop_on_signal(stop.clone(), args.duration));
    engine.run(stop).await;
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
