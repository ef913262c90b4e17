//! The `wasmscaler run` config file: parsing with positions, validation, and assembly of the
//! engine from it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::engine::store::FileBackend;
use crate::engine::{Autoscaler, AutoscalerSpec, Fleet, Guests, RunObserver, TargetSpec};
use crate::hooks::{LifecycleProcessor, LifecycleSpec};
use crate::policies::{FetchConfig, PolicyRef, PolicySources, SourceRules, StoreQuota};
use crate::sandbox::{FileState, GuestComponent, SandboxConfig, StateStore};
use crate::targets::kubernetes::cache::WatchCaches;
use crate::targets::{ConnectEnv, Target};

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigFile {
    /// Where engine state (stabilization history) and guest state are kept, relative to the
    /// config file (default `.wasmscaler-state`).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Host-wide sandbox settings (cache directory, pool size).
    #[serde(default)]
    pub sandbox: SandboxConfig,
    /// How `https://` and `oci://` policies are fetched.
    #[serde(default)]
    pub fetch: FetchConfig,
    /// How much the upload store may hold.
    #[serde(default)]
    pub uploads: StoreQuota,
    /// The autoscalers.
    #[serde(default)]
    pub autoscalers: Vec<AutoscalerSpec>,
    /// Lifecycle hook handlers (AWS Auto Scaling), each consuming its hook's SQS queue.
    #[serde(default)]
    pub lifecycle: Vec<LifecycleSpec>,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from(".wasmscaler-state")
}

/// A config file that failed to load, with the file and position in the message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

/// The line of `name: NAME` in the file, to point semantic errors at their autoscaler.
fn line_of_name(text: &str, name: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            let line = line.trim_start().trim_start_matches("- ");
            line.strip_prefix("name:")
                .is_some_and(|v| v.trim().trim_matches(['"', '\'']) == name)
        })
        .map(|i| i + 1)
}

impl ConfigFile {
    /// Reads, parses and validates `path`. Relative paths inside are resolved against the
    /// file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text, path)
    }

    /// Parses and validates `text` as if read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut config: ConfigFile = serde_yaml::from_str(text)
            .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let mut names = std::collections::HashSet::new();
        for (i, spec) in config.autoscalers.iter_mut().enumerate() {
            let at = match line_of_name(text, &spec.name) {
                Some(line) => format!(
                    "{}:{line}: autoscalers[{i}] ({})",
                    path.display(),
                    spec.name
                ),
                None => format!("{}: autoscalers[{i}] ({})", path.display(), spec.name),
            };
            spec.validate()
                .map_err(|e| ConfigError(format!("{at}: {e}")))?;
            if !names.insert(spec.name.clone()) {
                return Err(ConfigError(format!(
                    "{at}: name is used by another autoscaler"
                )));
            }
            for reference in [&mut spec.policy, &mut spec.metrics, &mut spec.evaluator]
                .into_iter()
                .flatten()
            {
                if let PolicyRef::File(path) = reference {
                    *path = base.join(&*path);
                }
            }
            if let TargetSpec::Local(local) = &mut spec.target
                && let Some(dir) = &mut local.working_dir
            {
                *dir = base.join(&*dir);
            }
        }
        for spec in &mut config.lifecycle {
            if let PolicyRef::File(path) = &mut spec.handler {
                *path = base.join(&*path);
            }
        }
        config.state_dir = base.join(&config.state_dir);
        if let Some(dir) = &mut config.sandbox.cache_dir {
            *dir = base.join(&*dir);
        }
        Ok(config)
    }
}

/// Loads the guests of one autoscaler under the host's source rules and checks them against
/// its spec: worlds and grants.
pub async fn load_spec_guests(
    spec: &AutoscalerSpec,
    sources: &PolicySources,
) -> anyhow::Result<Guests> {
    load_spec_guests_under(spec, sources, sources.rules()).await
}

/// [`load_spec_guests`] under `rules` (a namespace's bounds in cluster mode).
pub async fn load_spec_guests_under(
    spec: &AutoscalerSpec,
    sources: &PolicySources,
    rules: &SourceRules,
) -> anyhow::Result<Guests> {
    let load = |reference: &PolicyRef| {
        let reference = reference.clone();
        async move {
            sources
                .load_under(&reference, rules)
                .await
                .with_context(|| format!("loading {reference}"))
        }
    };
    let guests = match (&spec.policy, &spec.metrics, &spec.evaluator) {
        (Some(policy), _, _) => {
            let component: Arc<GuestComponent> = load(policy).await?;
            Guests {
                metrics: component.clone(),
                evaluator: component,
            }
        }
        (None, Some(metrics), Some(evaluator)) => Guests {
            metrics: load(metrics).await?,
            evaluator: load(evaluator).await?,
        },
        _ => anyhow::bail!("give policy, or metrics with evaluator"),
    };
    for component in [&guests.metrics, &guests.evaluator] {
        component
            .check_grants(&spec.capabilities)
            .context("capabilities")?;
    }
    guests.metrics.require_world_metrics()?;
    guests.evaluator.require_world_evaluation()?;
    Ok(guests)
}

/// Loads every autoscaler's guests and checks the grants, without touching any target.
pub async fn load_guests(
    config: &ConfigFile,
    sources: &PolicySources,
) -> anyhow::Result<Vec<Guests>> {
    let mut all = Vec::new();
    for (i, spec) in config.autoscalers.iter().enumerate() {
        all.push(
            load_spec_guests(spec, sources)
                .await
                .with_context(|| format!("autoscalers[{i}] ({})", spec.name))?,
        );
    }
    Ok(all)
}

/// Builds the engine: loads guests, connects or starts targets, restores state. Every run is
/// reported to `observer` (the API's metrics) if given.
pub async fn build(
    config: &ConfigFile,
    sources: &PolicySources,
    observer: Option<Arc<dyn RunObserver>>,
) -> anyhow::Result<Fleet> {
    std::fs::create_dir_all(&config.state_dir).with_context(|| {
        format!(
            "creating the state directory {}",
            config.state_dir.display()
        )
    })?;
    let mut kube = None;
    let mut autoscalers = Vec::new();
    let mut failed = Vec::new();
    for (i, spec) in config.autoscalers.iter().enumerate() {
        // One autoscaler whose policy cannot load (a compile limit, a bad component) or whose
        // target cannot be reached does not stop the others: it is reported and left out.
        let prepared = async {
            let guests = load_spec_guests(spec, sources)
                .await
                .with_context(|| format!("autoscalers[{i}] ({})", spec.name))?;
            let target = connect_target(spec, &config.state_dir, &mut kube).await?;
            anyhow::Ok((guests, target))
        };
        let (guests, target) = match prepared.await {
            Ok(prepared) => prepared,
            Err(error) => {
                let message = crate::redact::report(error.as_ref());
                tracing::error!(autoscaler = %spec.name, error = %message, "cannot start; it does not run");
                failed.push((spec.name.clone(), message));
                continue;
            }
        };
        let guest_state = spec.capabilities.state.as_ref().map(|_| {
            Arc::new(FileState::new(
                config
                    .state_dir
                    .join(format!("{}.guest-state.json", spec.name)),
            )) as Arc<dyn StateStore>
        });
        let backend = Arc::new(FileBackend::new(
            config.state_dir.join(format!("{}.json", spec.name)),
        ));
        let mut autoscaler = Autoscaler::builder(spec.clone(), target, guests)
            .guest_state(guest_state)
            .persistence(backend)
            .build()
            .map_err(|e| anyhow::anyhow!("{}: {e}", spec.name))?;
        if let Some(observer) = &observer {
            autoscaler = autoscaler.with_observer(observer.clone());
        }
        autoscalers.push(Arc::new(autoscaler));
    }
    if autoscalers.is_empty()
        && let Some((_, error)) = failed.first()
    {
        anyhow::bail!("no autoscaler could start: {error}");
    }
    let engine = Fleet::new(autoscalers);
    for (name, error) in failed {
        engine.mark_failed(&name, error);
    }
    Ok(engine)
}

/// Starts or connects to the target of `spec` (local replicas record their process groups in
/// `state_dir`); the Kubernetes client and its watch caches are made once, on first use.
async fn connect_target(
    spec: &AutoscalerSpec,
    state_dir: &Path,
    kube: &mut Option<WatchCaches>,
) -> anyhow::Result<Arc<dyn Target>> {
    spec.target
        .connect(ConnectEnv {
            autoscaler: &spec.name,
            min_replicas: spec.min_replicas,
            state_dir,
            kube,
        })
        .await
        .with_context(|| spec.name.clone())
}

/// Builds the lifecycle handlers of the config file: loads each handler and connects to its
/// queue's region.
pub async fn build_lifecycle(
    config: &ConfigFile,
    sources: &PolicySources,
) -> anyhow::Result<Vec<LifecycleProcessor>> {
    let mut processors = Vec::new();
    for (i, spec) in config.lifecycle.iter().enumerate() {
        let at = || format!("lifecycle[{i}] ({})", spec.name);
        let handler = sources
            .load(&spec.handler)
            .await
            .with_context(|| format!("{}: loading {}", at(), spec.handler))?;
        let processor =
            LifecycleProcessor::new(spec.clone(), handler, Some(config.state_dir.clone()))
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", at()))?;
        processors.push(processor);
    }
    Ok(processors)
}
