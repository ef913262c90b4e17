//! What an autoscaler scales, as written in its spec.

use serde::{Deserialize, Serialize};

use super::aws::AsgSpec;
use super::kubernetes::KubernetesRef;
use super::local::LocalSpec;
use super::openstack::OpenStackSpec;

/// What an autoscaler scales. Written as a map with exactly one key: `local:`,
/// `kubernetes:`, `awsAsg:` or `openstack:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "TargetSpecRepr", into = "TargetSpecRepr")]
pub enum TargetSpec {
    /// Local processes.
    Local(LocalSpec),
    /// Any Kubernetes resource with a `/scale` subresource.
    Kubernetes(KubernetesRef),
    /// An AWS Auto Scaling group.
    AwsAsg(AsgSpec),
    /// A pool of OpenStack servers.
    Openstack(OpenStackSpec),
}

// The one-of map form of [`TargetSpec`] (YAML has no untagged-map enums in serde_yaml); its
// doc comment is what the config reference shows.
/// What an autoscaler scales: exactly one of these keys.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "TargetSpec")]
struct TargetSpecRepr {
    /// Local processes (the embedded default, no cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    local: Option<LocalSpec>,
    /// Any Kubernetes resource with a `/scale` subresource (feature `kubernetes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kubernetes: Option<KubernetesRef>,
    /// An AWS Auto Scaling group (feature `aws`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aws_asg: Option<AsgSpec>,
    /// A pool of OpenStack servers (SimpleScaleVM's replicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    openstack: Option<OpenStackSpec>,
}

/// The schema is the map form's: the file's reference and editors see `local`, `kubernetes`
/// and `awsAsg` (exactly one of them).
impl schemars::JsonSchema for TargetSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        TargetSpecRepr::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        TargetSpecRepr::json_schema(generator)
    }
}

/// A target entry naming none or several of the target kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("target needs exactly one of `local`, `kubernetes`, `awsAsg` or `openstack`")]
pub(crate) struct NotOneTarget;

impl TryFrom<TargetSpecRepr> for TargetSpec {
    type Error = NotOneTarget;
    fn try_from(repr: TargetSpecRepr) -> Result<Self, NotOneTarget> {
        match (repr.local, repr.kubernetes, repr.aws_asg, repr.openstack) {
            (Some(local), None, None, None) => Ok(TargetSpec::Local(local)),
            (None, Some(kubernetes), None, None) => Ok(TargetSpec::Kubernetes(kubernetes)),
            (None, None, Some(asg), None) => Ok(TargetSpec::AwsAsg(asg)),
            (None, None, None, Some(openstack)) => Ok(TargetSpec::Openstack(openstack)),
            _ => Err(NotOneTarget),
        }
    }
}

impl From<TargetSpec> for TargetSpecRepr {
    fn from(spec: TargetSpec) -> Self {
        match spec {
            TargetSpec::Local(local) => TargetSpecRepr {
                local: Some(local),
                ..TargetSpecRepr::default()
            },
            TargetSpec::Kubernetes(k) => TargetSpecRepr {
                kubernetes: Some(k),
                ..TargetSpecRepr::default()
            },
            TargetSpec::AwsAsg(asg) => TargetSpecRepr {
                aws_asg: Some(asg),
                ..TargetSpecRepr::default()
            },
            TargetSpec::Openstack(openstack) => TargetSpecRepr {
                openstack: Some(openstack),
                ..TargetSpecRepr::default()
            },
        }
    }
}

/// What [`TargetSpec::connect`] needs besides the spec: where local replicas record their
/// process groups, and the process's Kubernetes watch caches (made on first use).
pub struct ConnectEnv<'a> {
    /// The autoscaler's name (local process groups and state files are named after it).
    pub autoscaler: &'a str,
    /// The autoscaler's `minReplicas`: local targets start with that many unless told.
    pub min_replicas: u32,
    /// Where local targets record their process groups.
    pub state_dir: &'a std::path::Path,
    /// The Kubernetes client and caches, shared by every Kubernetes target of the process.
    pub kube: &'a mut Option<super::kubernetes::cache::WatchCaches>,
    /// The handler of the target's own lifecycle events (`target.openstack.lifecycle`),
    /// loaded by the host assembly.
    pub lifecycle: Option<std::sync::Arc<dyn super::lifecycle::LifecycleDelivery>>,
}

impl TargetSpec {
    /// The one target factory: starts local replicas, or connects to the Auto Scaling group
    /// or the Kubernetes resource.
    pub async fn connect(
        &self,
        env: ConnectEnv<'_>,
    ) -> Result<std::sync::Arc<dyn super::Target>, super::TargetError> {
        use super::TargetError;
        let context = |what: String| move |e: TargetError| e.context(&what);
        Ok(match self {
            TargetSpec::Local(local) => {
                let initial = local.initial_replicas.unwrap_or(env.min_replicas);
                let groups = env
                    .state_dir
                    .join(format!("{}.local-groups.json", env.autoscaler));
                super::local::LocalProcesses::start_recorded(
                    env.autoscaler,
                    local.clone(),
                    initial,
                    Some(groups),
                )
                .map_err(context("starting local replicas".into()))?
            }
            #[cfg(feature = "aws")]
            TargetSpec::AwsAsg(asg) => std::sync::Arc::new(
                super::aws::AsgTarget::connect(asg.clone())
                    .await
                    .map_err(context(format!("connecting to {}", asg.group_name)))?,
            ),
            #[cfg(not(feature = "aws"))]
            TargetSpec::AwsAsg(_) => return Err(left_out("awsAsg", "aws")),
            TargetSpec::Openstack(openstack) => {
                super::openstack::connect(openstack, env.lifecycle.clone())
                    .await
                    .map_err(context(format!(
                        "connecting to the pool {}={}",
                        openstack.pool.key, openstack.pool.value
                    )))?
            }
            #[cfg(not(feature = "kubernetes"))]
            TargetSpec::Kubernetes(_) => {
                let _ = env.kube;
                return Err(left_out("kubernetes", "kubernetes"));
            }
            #[cfg(feature = "kubernetes")]
            TargetSpec::Kubernetes(reference) => {
                if env.kube.is_none() {
                    *env.kube = Some(super::kubernetes::caches_from_environment().await?);
                }
                let caches = env
                    .kube
                    .as_ref()
                    .ok_or_else(|| TargetError::Unavailable("no Kubernetes client".into()))?;
                std::sync::Arc::new(caches.connect(reference.clone()).await.map_err(context(
                    format!("connecting to {} {}", reference.kind, reference.name),
                ))?)
            }
        })
    }
}

/// A target kind this build was compiled without.
#[cfg(not(all(feature = "aws", feature = "kubernetes")))]
fn left_out(kind: &str, feature: &str) -> super::TargetError {
    super::TargetError::Refused(format!(
        "target `{kind}`: this wasmscaler was built without the `{feature}` feature (cargo build --features {feature})"
    ))
}
