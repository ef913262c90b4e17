//! The host assembly: what `wasmscaler run` (and `validate`) build from a
//! config file — the sandbox, the policy sources, the fleet of autoscalers and the lifecycle
//! handlers — and the per-autoscaler pieces the controller assembles the same way (its
//! policies under a namespace's rules, its guest state). The file format is
//! [`crate::config`]; the REST API, above this layer, serves what [`Host`] built.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::config::ConfigFile;
use crate::engine::store::FileBackend;
use crate::engine::{Autoscaler, AutoscalerSpec, Fleet, Guests, MetricsSpec, RunObserver};
use crate::hooks::HostDelivered;
#[cfg(feature = "aws")]
use crate::hooks::LifecycleProcessor;
use crate::policies::{PolicyRef, PolicySources, SourceRules};
use crate::sandbox::{FileState, GuestComponent, Sandbox, StateStore};
use crate::targets::kubernetes::cache::WatchCaches;
use crate::targets::lifecycle::LifecycleDelivery;
use crate::targets::openstack::OpenStackSpec;
use crate::targets::{ConnectEnv, Target, TargetSpec};

/// Everything a config file describes, built and ready to run.
pub struct Host {
    sources: Arc<PolicySources>,
    fleet: Arc<Fleet>,
    #[cfg(feature = "aws")]
    lifecycle: Vec<LifecycleProcessor>,
}

impl Host {
    /// Builds the host of `config`: its sandbox and policy sources, every autoscaler it can
    /// start (one that cannot is reported and left out), and its lifecycle handlers. Every
    /// run is reported to `observer` (the API's metrics) if given.
    pub async fn from_config(
        config: &ConfigFile,
        observer: Option<Arc<dyn RunObserver>>,
    ) -> anyhow::Result<Self> {
        let sandbox = Arc::new(Sandbox::new(config.sandbox.clone())?);
        let sources = Arc::new(policy_sources(config, sandbox)?);
        let fleet = Arc::new(build_fleet(config, &sources, observer).await?);
        #[cfg(feature = "aws")]
        let lifecycle = build_lifecycle(config, &sources).await?;
        #[cfg(not(feature = "aws"))]
        if let Some(spec) = config.lifecycle.first() {
            anyhow::bail!(
                "lifecycle[0] ({}): this wasmscaler was built without the `aws` feature, which lifecycle hooks need",
                spec.name
            );
        }
        Ok(Host {
            sources,
            fleet,
            #[cfg(feature = "aws")]
            lifecycle,
        })
    }

    /// The autoscalers.
    pub fn fleet(&self) -> &Arc<Fleet> {
        &self.fleet
    }

    /// Where policies come from (and the upload store, if any).
    pub fn sources(&self) -> &Arc<PolicySources> {
        &self.sources
    }

    /// Runs every autoscaler and lifecycle handler until `stop`, then finishes in-flight runs,
    /// writes state and stops local replicas.
    pub async fn run(self, stop: CancellationToken) {
        #[cfg(feature = "aws")]
        let handlers: Vec<_> = self
            .lifecycle
            .into_iter()
            .map(|processor| {
                let stop = stop.clone();
                tokio::spawn(async move { processor.run(stop).await })
            })
            .collect();
        self.fleet.run(stop).await;
        #[cfg(feature = "aws")]
        for handler in handlers {
            let _ = handler.await;
        }
    }
}

/// The policy sources of a config file: its fetch settings and its upload store.
pub(crate) fn policy_sources(
    config: &ConfigFile,
    sandbox: Arc<Sandbox>,
) -> anyhow::Result<PolicySources> {
    Ok(PolicySources::new(sandbox, &config.fetch)?
        .with_upload_dir(config.state_dir.join("policies"), config.uploads)?
        .with_local_copies(config.state_dir.join("sources"))?)
}

/// The store of an autoscaler's guest state, in `file`, when its spec grants `state`.
pub fn guest_state(spec: &AutoscalerSpec, file: PathBuf) -> Option<Arc<dyn StateStore>> {
    spec.scaling
        .capabilities
        .state
        .as_ref()
        .map(|_| Arc::new(FileState::new(file)) as Arc<dyn StateStore>)
}

/// Loads the guests of one autoscaler under the host's source rules and checks them against
/// its spec: worlds and grants.
pub(crate) async fn load_spec_guests(
    spec: &AutoscalerSpec,
    sources: &PolicySources,
) -> anyhow::Result<Guests> {
    load_spec_guests_under(spec, sources, sources.rules()).await
}

/// [`load_spec_guests`] under `rules` (a namespace's bounds in cluster mode).
pub(crate) async fn load_spec_guests_under(
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
    let guests = match (
        &spec.scaling.policy,
        &spec.scaling.metrics,
        &spec.scaling.evaluator,
    ) {
        (Some(policy), _, _) => {
            let component: Arc<GuestComponent> = load(policy).await?;
            Guests::pair(component.clone(), component)
        }
        (None, Some(MetricsSpec::One(metrics)), Some(evaluator)) => {
            Guests::pair(load(metrics).await?, load(evaluator).await?)
        }
        (None, Some(MetricsSpec::Sources(listed)), Some(evaluator)) => {
            let mut sources = Vec::with_capacity(listed.len());
            for source in listed {
                let component = load(&source.component)
                    .await
                    .with_context(|| format!("metrics source {:?}", source.name))?;
                component
                    .require_world_metrics()
                    .with_context(|| format!("metrics source {:?}", source.name))?;
                component
                    .check_grants(
                        source
                            .capabilities
                            .as_ref()
                            .unwrap_or(&spec.scaling.capabilities),
                    )
                    .with_context(|| format!("metrics source {:?}: capabilities", source.name))?;
                sources.push(component);
            }
            let evaluator = load(evaluator).await?;
            evaluator
                .check_grants(&spec.scaling.capabilities)
                .context("capabilities")?;
            evaluator.require_world_evaluation()?;
            let metrics = sources
                .first()
                .cloned()
                .context("metrics: the list is empty")?;
            return Ok(Guests {
                metrics,
                evaluator,
                sources,
            });
        }
        _ => anyhow::bail!("give policy, or metrics with evaluator"),
    };
    for component in [&guests.metrics, &guests.evaluator] {
        component
            .check_grants(&spec.scaling.capabilities)
            .context("capabilities")?;
    }
    guests.metrics.require_world_metrics()?;
    guests.evaluator.require_world_evaluation()?;
    Ok(guests)
}

/// Loads every autoscaler's guests and checks the grants, without touching any target.
pub(crate) async fn load_guests(
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

/// Builds the fleet: loads guests, connects or starts targets, restores state. Every run is
/// reported to `observer` (the API's metrics) if given.
async fn build_fleet(
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
            let target = connect_target(spec, sources, &config.state_dir, &mut kube).await?;
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
        let guest_state = guest_state(
            spec,
            config
                .state_dir
                .join(format!("{}.guest-state.json", spec.name)),
        );
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
/// `state_dir`); the Kubernetes client and its watch caches are made once, on first use. A
/// target's own lifecycle handler is loaded here.
async fn connect_target(
    spec: &AutoscalerSpec,
    sources: &PolicySources,
    state_dir: &Path,
    kube: &mut Option<WatchCaches>,
) -> anyhow::Result<Arc<dyn Target>> {
    let lifecycle: Option<Arc<dyn LifecycleDelivery>> = match &spec.target {
        TargetSpec::Openstack(OpenStackSpec {
            lifecycle: Some(lifecycle),
            ..
        }) => {
            let at = "target.openstack.lifecycle";
            let handler = sources
                .load(&lifecycle.handler)
                .await
                .with_context(|| format!("{}: {at}: loading {}", spec.name, lifecycle.handler))?;
            Some(Arc::new(
                HostDelivered::new(at, (**lifecycle).clone(), handler)
                    .with_context(|| spec.name.clone())?,
            ))
        }
        _ => None,
    };
    spec.target
        .connect(ConnectEnv {
            autoscaler: &spec.name,
            min_replicas: spec.scaling.min_replicas,
            state_dir,
            kube,
            lifecycle,
        })
        .await
        .with_context(|| spec.name.clone())
}

/// Builds the lifecycle handlers of the config file: loads each handler and connects to its
/// queue's region.
#[cfg(feature = "aws")]
async fn build_lifecycle(
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
                // The error names the handler.
                .with_context(|| format!("lifecycle[{i}]"))?;
        processors.push(processor);
    }
    Ok(processors)
}
