//! `wasmscaler simulate`: replay a load trace through the autoscalers of config files and
//! compare what they would have done.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use clap::Args;

use crate::config::ConfigFile;
use crate::duration::HumanDuration;
use crate::engine::{AutoscalerSpec, Guests};
use crate::host::{load_spec_guests, policy_sources};
use crate::policies::{PolicyRef, PolicySources};
use crate::sandbox::Sandbox;
use crate::simulate::{self, Columns, Overflow, PolicyReport, SystemModel, Trace, chart, render};

#[derive(Debug, Args)]
pub(super) struct SimulateArgs {
    /// The config file whose autoscalers are replayed (the same YAML as `run`; their
    /// targets are replaced by the simulated system).
    #[arg(long, short)]
    config: PathBuf,
    /// More config files to compare on the same trace (repeatable).
    #[arg(long, value_name = "CONFIG", num_args = 1..)]
    compare: Vec<PathBuf>,
    /// The load trace: CSV with a header row, time in seconds or RFC 3339, load in units/s
    /// (see docs/simulate.md).
    #[arg(long, short)]
    trace: PathBuf,
    /// The trace's time column.
    #[arg(long, default_value = "time")]
    time_column: String,
    /// The trace's load column.
    #[arg(long, default_value = "load")]
    column: String,
    /// The HPA baseline, replayed with the HPA's default behavior beside the autoscalers: a
    /// `cpu-target` component (a path or policy reference), or the one built in.
    #[arg(long, value_name = "POLICY", default_value = simulate::BUILTIN_BASELINE)]
    baseline: String,
    /// Replay no HPA baseline, only the autoscalers of the config files.
    #[arg(long, conflicts_with = "baseline")]
    no_baseline: bool,
    /// The baseline's target CPU utilization in percent [default: the first autoscaler's
    /// `targetUtilization`, else 50].
    #[arg(long, value_name = "PERCENT")]
    baseline_utilization: Option<f64>,
    #[command(flatten)]
    model: ModelArgs,
    /// Write the reports as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write chart.svg, chart.png and report.html (chart and table) into DIR.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// The simulated system (see docs/simulate.md).
#[derive(Debug, Args)]
struct ModelArgs {
    /// Work units per second one ready replica serves.
    #[arg(long, default_value_t = SystemModel::default().capacity)]
    capacity: f64,
    /// From a replica's creation until it is ready.
    #[arg(long, default_value = "60s", value_parser = |s: &str| HumanDuration::parse(s))]
    startup: HumanDuration,
    /// How long a removed replica keeps serving (0s: it stops at once).
    #[arg(long, default_value = "0s", value_parser = |s: &str| HumanDuration::parse(s))]
    drain: HumanDuration,
    /// What load beyond the ready capacity does.
    #[arg(long, value_enum, default_value = "queue")]
    overflow: Overflow,
    /// Relative standard deviation of each measured CPU value (0: exact).
    #[arg(long, default_value_t = 0.0)]
    noise: f64,
    /// How old the metrics a sync reads are.
    #[arg(long, default_value = "0s", value_parser = |s: &str| HumanDuration::parse(s))]
    metric_delay: HumanDuration,
    /// Each replica's CPU request, in millicores.
    #[arg(long, default_value_t = SystemModel::default().cpu_request_millicores)]
    cpu_request: u64,
    /// Replicas at the start [default: each autoscaler's minReplicas].
    #[arg(long, value_name = "N")]
    initial_replicas: Option<u32>,
    /// Utilization of the ready capacity (0-1) above which time counts as an SLO violation.
    #[arg(long, default_value_t = SystemModel::default().slo_utilization)]
    slo_utilization: f64,
    /// The model's time step.
    #[arg(long, default_value = "1s", value_parser = |s: &str| HumanDuration::parse(s))]
    step: HumanDuration,
    /// Seed of the measurement noise.
    #[arg(long, default_value_t = SystemModel::default().seed)]
    seed: u64,
}

impl ModelArgs {
    fn model(&self) -> SystemModel {
        SystemModel {
            capacity: self.capacity,
            startup: self.startup,
            drain: self.drain,
            overflow: self.overflow,
            noise: self.noise,
            metric_delay: self.metric_delay,
            cpu_request_millicores: self.cpu_request,
            initial_replicas: self.initial_replicas,
            slo_utilization: self.slo_utilization,
            step: self.step,
            seed: self.seed,
        }
    }
}

/// One policy to replay: its spec and where its components come from.
struct Candidate {
    spec: AutoscalerSpec,
    guests: CandidateGuests,
}

enum CandidateGuests {
    /// Loaded from the spec's references through its config file's sources.
    Sources(Arc<PolicySources>),
    /// Built into the binary (the HPA baseline's `cpu-target`).
    Builtin(Guests),
}

pub(super) async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let model = args.model.model();
    model.validate()?;
    let columns = Columns {
        time: args.time_column.clone(),
        load: args.column.clone(),
    };
    let trace = Trace::read(&args.trace, &columns)?;
    let candidates = candidates(&args).await?;

    // Every policy loads before any replays, so a bad reference fails at once.
    let mut policies = Vec::with_capacity(candidates.len());
    for candidate in &candidates {
        let guests =
            match &candidate.guests {
                CandidateGuests::Sources(sources) => load_spec_guests(&candidate.spec, sources)
                    .await
                    .with_context(|| format!("autoscaler {}", candidate.spec.name))?,
                CandidateGuests::Builtin(guests) => guests.clone(),
            };
        policies.push((&candidate.spec, guests));
    }
    let reports = replay_all(policies, &trace, &model)?;

    print!("{}", render::markdown(&reports));
    let trace_name = args.trace.display().to_string();
    let simulation = render::Simulation {
        trace: &trace_name,
        trace_seconds: trace.duration_secs(),
        model: &model,
        policies: &reports,
    };
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&simulation)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(dir) = &args.out {
        write_charts(dir, &simulation, &reports)?;
    }
    Ok(())
}

/// Every autoscaler of every config file, then the baseline.
async fn candidates(args: &SimulateArgs) -> anyhow::Result<Vec<Candidate>> {
    let mut candidates = Vec::new();
    let mut sandbox: Option<Arc<Sandbox>> = None;
    let mut first_sources: Option<Arc<PolicySources>> = None;
    for path in std::iter::once(&args.config).chain(&args.compare) {
        let config = ConfigFile::load(path)?;
        // One sandbox (and compile cache) for all: the first file's settings.
        let sandbox = match &sandbox {
            Some(sandbox) => sandbox.clone(),
            None => sandbox
                .insert(Arc::new(Sandbox::new(config.sandbox.clone())?))
                .clone(),
        };
        let sources = Arc::new(policy_sources(&config, sandbox)?);
        first_sources.get_or_insert_with(|| sources.clone());
        if config.autoscalers.is_empty() {
            anyhow::bail!("{}: no autoscalers to simulate", path.display());
        }
        for spec in config.autoscalers {
            candidates.push(Candidate {
                spec,
                guests: CandidateGuests::Sources(sources.clone()),
            });
        }
    }
    let mut names = BTreeMap::new();
    for candidate in &mut candidates {
        // Two files may name their autoscalers alike; the table needs them apart.
        let seen = names.entry(candidate.spec.name.clone()).or_insert(0);
        *seen += 1;
        if *seen > 1 {
            candidate.spec.name = format!("{} ({})", candidate.spec.name, seen);
        }
    }
    if let (false, Some(sources), Some(sandbox)) = (args.no_baseline, first_sources, sandbox) {
        let first = &candidates[0].spec;
        let utilization = args
            .baseline_utilization
            .or_else(|| first.scaling.config.get("targetUtilization")?.parse().ok())
            .unwrap_or(50.0);
        candidates.push(baseline(&args.baseline, first, utilization, sources, &sandbox).await?);
    }
    Ok(candidates)
}

/// The HPA baseline beside `first`: the built-in `cpu-target`, or the component `reference`
/// names, loaded through the first config file's sources.
async fn baseline(
    reference: &str,
    first: &AutoscalerSpec,
    utilization: f64,
    sources: Arc<PolicySources>,
    sandbox: &Sandbox,
) -> anyhow::Result<Candidate> {
    if reference == simulate::BUILTIN_BASELINE {
        let bytes = simulate::builtin_cpu_target().context("assembling the built-in baseline")?;
        let component = sandbox
            .load(bytes)
            .await
            .context("loading the built-in baseline")?
            .component;
        // The reference is only the baseline's name in the spec: its guests are given.
        let policy = PolicyRef::Uploaded {
            name: reference.to_owned(),
            sha256: None,
        };
        return Ok(Candidate {
            spec: simulate::hpa_baseline(first, policy, utilization),
            guests: CandidateGuests::Builtin(Guests::pair(component.clone(), component)),
        });
    }
    let policy =
        PolicyRef::parse(reference).with_context(|| format!("--baseline {reference:?}"))?;
    Ok(Candidate {
        spec: simulate::hpa_baseline(first, policy, utilization),
        guests: CandidateGuests::Sources(sources),
    })
}

/// Replays each policy on `trace`, as many at once as there are cores: the replays share
/// only the trace, the model's parameters and the compiled components, and each keeps its
/// own virtual clock, system and guest state, so running them side by side changes no
/// figure. The reports come back in the policies' order.
fn replay_all(
    policies: Vec<(&AutoscalerSpec, Guests)>,
    trace: &Trace,
    model: &SystemModel,
) -> anyhow::Result<Vec<PolicyReport>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, policies.len().max(1));
    let bars = indicatif::MultiProgress::new();
    let jobs: Vec<_> = policies
        .into_iter()
        .map(|(spec, guests)| {
            let bar = bars.add(progress_bar(&spec.name));
            (spec, guests, bar, Mutex::new(None))
        })
        .collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> std::io::Result<()> {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    while let Some((spec, guests, bar, result)) =
                        jobs.get(next.fetch_add(1, Ordering::Relaxed))
                    {
                        let report = runtime.block_on(simulate::simulate(
                            spec,
                            guests.clone(),
                            trace,
                            model,
                            &mut |done| bar.set_position((done * 1000.0) as u64),
                        ));
                        bar.finish_and_clear();
                        *result.lock().unwrap_or_else(|e| e.into_inner()) = Some(report);
                    }
                    Ok(())
                })
            })
            .collect();
        for worker in workers {
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("a simulation thread panicked"))?
                .context("starting a simulation thread's runtime")?;
        }
        anyhow::Ok(())
    })?;
    jobs.into_iter()
        .map(|(spec, _, _, result)| {
            let report = result.into_inner().unwrap_or_else(|e| e.into_inner());
            report
                .with_context(|| format!("{}: not replayed", spec.name))?
                .map_err(anyhow::Error::from)
        })
        .collect()
}

/// A bar on stderr for one policy; it draws only when stderr is a terminal.
fn progress_bar(name: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(1000);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg:>24} [{bar:40}] {percent:>3}% {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(name.to_owned());
    bar
}

fn write_charts(
    dir: &Path,
    simulation: &render::Simulation<'_>,
    reports: &[PolicyReport],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let title = format!("load, ready capacity and replicas: {}", simulation.trace);
    // The table and JSON stand without a chart; a missing font only costs the chart.
    let svg = match chart::svg(reports, &title) {
        Ok(svg) => {
            let path = dir.join("chart.svg");
            std::fs::write(&path, &svg).with_context(|| format!("writing {}", path.display()))?;
            chart::png(reports, &title, &dir.join("chart.png"))?;
            Some(svg)
        }
        Err(error) => {
            tracing::warn!(%error, "no chart drawn");
            None
        }
    };
    let path = dir.join("report.html");
    std::fs::write(&path, render::html(simulation, svg.as_deref()))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
