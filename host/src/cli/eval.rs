//! `wasmscaler eval`: one gather + evaluate on a context file, printed as JSON.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{ArgGroup, Args, ValueEnum};
use serde::Serialize;

use super::CacheArgs;
use crate::contract::model::{Context, Decision, PodMetrics, Sample};
use crate::sandbox::{
    CallEnv, Capabilities, FileState, GuestComponent, HttpGrant, Limits, Loaded, Sandbox,
    StateGrant, StaticPodMetrics,
};

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("source").required(true).args(["policy", "metrics"])))]
#[command(group(ArgGroup::new("evaluation").args(["policy", "evaluator"])))]
pub(super) struct EvalArgs {
    /// A component implementing the `policy` world (gather and evaluate).
    #[arg(long, value_name = "WASM")]
    policy: Option<PathBuf>,
    /// A component implementing `metric-source` (used with --evaluator).
    #[arg(long, value_name = "WASM", requires = "evaluator")]
    metrics: Option<PathBuf>,
    /// A component implementing `evaluator` (used with --metrics).
    #[arg(long, value_name = "WASM")]
    evaluator: Option<PathBuf>,
    /// The context as JSON (see docs/writing-policies.md); `-` reads standard input.
    #[arg(long, value_name = "JSON")]
    context: PathBuf,
    /// Fuel units per call [default: 50000000].
    #[arg(long)]
    fuel: Option<u64>,
    /// Wall-clock deadline per call in milliseconds [default: 5000].
    #[arg(long, value_name = "MS")]
    timeout_ms: Option<u64>,
    /// Linear memory cap per call in MiB [default: 128].
    #[arg(long, value_name = "MIB")]
    memory_mib: Option<u64>,
    /// Grant a capability (repeatable).
    #[arg(long = "allow", value_enum, value_name = "CAPABILITY")]
    allow: Vec<Grant>,
    /// Grant HTTP GET to URLs matching PATTERN (repeatable); `*` matches within a path
    /// segment, `{replica}` any replica address from the context.
    #[arg(long, value_name = "PATTERN")]
    allow_http: Vec<String>,
    /// Answer the `kubernetes-metrics` capability from this JSON file (a list of pod usages,
    /// see docs/writing-policies.md) instead of a metrics server (implies --allow kubernetes-metrics).
    #[arg(long, value_name = "JSON")]
    pod_metrics: Option<PathBuf>,
    /// Keep the `state` capability's data in this JSON file between runs (implies --allow state).
    #[arg(long, value_name = "FILE")]
    state_file: Option<PathBuf>,
    #[command(flatten)]
    cache: CacheArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Grant {
    Log,
    State,
    KubernetesMetrics,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct EvalReport {
    samples: Vec<Sample>,
    decision: Decision,
    /// Fuel consumed by gather and evaluate together.
    fuel_consumed: u64,
    /// Wall-clock time of gather and evaluate together, in microseconds.
    duration_micros: u64,
    gather: Stage,
    evaluate: Stage,
    components: Vec<ComponentReport>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Stage {
    fuel_consumed: u64,
    duration_micros: u64,
    logs_dropped: u32,
    log_bytes_dropped: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ComponentReport {
    role: &'static str,
    path: String,
    sha256: String,
    loaded_from: crate::sandbox::LoadSource,
    load_micros: u64,
}

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

pub(super) async fn run(args: EvalArgs) -> anyhow::Result<()> {
    let context: Context = read_json(&args.context, "context")?;
    let mut env = call_env(&args);
    if let Some(path) = &args.pod_metrics {
        let pods: Vec<PodMetrics> = read_json(path, "pod metrics list")?;
        env.capabilities.kubernetes_metrics = true;
        env.pod_metrics = Some(Arc::new(StaticPodMetrics(pods)));
    }
    let sandbox = args.cache.sandbox()?;
    let mut components = Vec::new();
    let (metrics, evaluator) = match (&args.policy, &args.metrics, &args.evaluator) {
        (Some(policy), _, _) => {
            let loaded = load(&sandbox, "policy", policy, &mut components).await?;
            (loaded.clone(), loaded)
        }
        (None, Some(metrics), Some(evaluator)) => (
            load(&sandbox, "metrics", metrics, &mut components).await?,
            load(&sandbox, "evaluator", evaluator, &mut components).await?,
        ),
        _ => bail!("give --policy, or --metrics with --evaluator"),
    };
    let gathered = metrics.gather(&context, &env).await.context("gather")?;
    let evaluated = evaluator
        .evaluate(&context, &gathered.value, &env)
        .await
        .context("evaluate")?;
    let report = EvalReport {
        fuel_consumed: gathered.fuel_consumed + evaluated.fuel_consumed,
        duration_micros: micros(gathered.duration + evaluated.duration),
        gather: Stage {
            fuel_consumed: gathered.fuel_consumed,
            duration_micros: micros(gathered.duration),
            logs_dropped: gathered.logs_dropped,
            log_bytes_dropped: gathered.log_bytes_dropped,
        },
        evaluate: Stage {
            fuel_consumed: evaluated.fuel_consumed,
            duration_micros: micros(evaluated.duration),
            logs_dropped: evaluated.logs_dropped,
            log_bytes_dropped: evaluated.log_bytes_dropped,
        },
        samples: gathered.value,
        decision: evaluated.value,
        components,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

async fn load(
    sandbox: &Sandbox,
    role: &'static str,
    path: &Path,
    reports: &mut Vec<ComponentReport>,
) -> anyhow::Result<Arc<GuestComponent>> {
    let Loaded {
        component,
        source,
        duration,
    } = sandbox
        .load_file(path)
        .await
        .with_context(|| format!("loading {}", path.display()))?;
    reports.push(ComponentReport {
        role,
        path: path.display().to_string(),
        sha256: component.sha256(),
        loaded_from: source,
        load_micros: micros(duration),
    });
    Ok(component)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> anyhow::Result<T> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    serde_json::from_str(&text).with_context(|| format!("{} is not a valid {what}", path.display()))
}

fn call_env(args: &EvalArgs) -> CallEnv {
    let defaults = Limits::default();
    let limits = Limits {
        fuel: args.fuel.unwrap_or(defaults.fuel),
        timeout_ms: args.timeout_ms.unwrap_or(defaults.timeout_ms),
        memory_bytes: args.memory_mib.map_or(defaults.memory_bytes, |m| m << 20),
        ..defaults
    };
    let granted = |g: Grant| args.allow.contains(&g);
    let capabilities = Capabilities {
        log: granted(Grant::Log),
        state: (granted(Grant::State) || args.state_file.is_some()).then(StateGrant::default),
        http: (!args.allow_http.is_empty()).then(|| HttpGrant::allow(args.allow_http.clone())),
        kubernetes_metrics: granted(Grant::KubernetesMetrics),
    };
    CallEnv {
        limits,
        capabilities,
        state: args
            .state_file
            .as_ref()
            .map(|p| Arc::new(FileState::new(p)) as Arc<dyn crate::sandbox::StateStore>),
        pod_metrics: None,
        http_responder: None,
    }
}
