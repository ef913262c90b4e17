//! The Kubernetes client side of the target: discovery, reads (cached or not), scale writes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, GetParams, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Scope};

use super::cache::{self, Cache, WatchCaches};
use super::selector;
use kube::core::{Selector, SelectorExt};

use super::KubernetesRef;
use crate::contract::model::{GuestError, ObjectJson, PodMetrics, Replica};
use crate::sandbox::{BoxFuture, PodMetricsProvider};
use crate::targets::{Observation, Target, TargetError, TargetIdentity};

/// The annotation the ReplicaSet controller reads to pick pods to delete (lowest first).
pub const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// How often a 409 on the scale write is retried after re-reading.
const CONFLICT_RETRIES: usize = 3;

/// A connected Kubernetes target.
pub struct KubernetesTarget {
    client: kube::Client,
    reference: KubernetesRef,
    namespace: String,
    api: Api<DynamicObject>,
    pods: Api<Pod>,
    /// The discovered resource (for the caches).
    resource: ApiResource,
    /// Whether the Scale is the object's `spec.replicas`/`spec.selector` (the apps kinds).
    scale_in_object: bool,
    caches: Option<TargetCaches>,
    /// The resourceVersion our last write replaced: a cache still showing it has not seen
    /// the write yet.
    written_over: Mutex<Option<String>>,
    /// Pod CPU/memory requests from the last observation, for the metrics provider.
    snapshot: Arc<Mutex<PodSnapshot>>,
    /// The object's JSON text and the resourceVersion it was serialized at: an unchanged
    /// object is not serialized again on every run.
    object_json: Mutex<Option<(String, ObjectJson)>>,
    /// The pods last selected from the cache, with the cache generation and the selector
    /// they were selected at: an unchanged namespace is not scanned again on every run.
    selected_pods: Mutex<Option<SelectedPods>>,
}

/// Pods selected from a cache: its generation, the selector, the pods in name order.
type SelectedPods = (u64, String, Vec<Arc<Pod>>);

/// The shared caches a target reads from.
struct TargetCaches {
    /// None for a cluster-scoped kind (the caches are per namespace).
    objects: Option<Arc<Cache<DynamicObject>>>,
    pods: Arc<Cache<Pod>>,
}

/// The replica count, selector and resourceVersion a Scale gives.
struct ScaleView {
    current: i32,
    selector: String,
    version: Option<String>,
}

#[derive(Default, Clone)]
struct PodSnapshot {
    selector: String,
    requests: HashMap<String, (Option<u64>, Option<u64>)>,
}

fn api_error(what: &str, e: kube::Error) -> TargetError {
    match &e {
        kube::Error::Api(status) if status.code == 404 => {
            TargetError::NotFound(format!("{what}: {}", status.message))
        }
        kube::Error::Api(status) if status.code == 409 => {
            TargetError::Conflict(format!("{what}: {}", status.message))
        }
        kube::Error::Api(status)
            if status.code == 401 || status.code == 403 || status.code == 422 =>
        {
            TargetError::Refused(format!("{what}: {} ({})", status.message, status.code))
        }
        _ => TargetError::Unavailable(format!("{what}: {e}")),
    }
}

impl WatchCaches {
    /// Connects a target reading from these caches. Discovery answers are kept for
    /// [`cache::KIND_TTL`], so a thousand autoscalers on Deployments cost one discovery
    /// request, not a thousand.
    pub async fn connect(&self, reference: KubernetesRef) -> Result<KubernetesTarget, TargetError> {
        let key = (reference.api_version.clone(), reference.kind.clone());
        let (resource, capabilities) = match self.known_kind(&key) {
            Some(known) => known,
            None => {
                let found = discover(self.client(), &reference).await?;
                self.remember_kind(key, found.clone());
                found
            }
        };
        Ok(KubernetesTarget::from_discovered(
            self.client().clone(),
            reference,
            resource,
            &capabilities,
        )
        .with_caches(self))
    }
}

/// Finds `reference`'s kind through discovery and checks it has a scale subresource.
async fn discover(
    client: &kube::Client,
    reference: &KubernetesRef,
) -> Result<(ApiResource, ApiCapabilities), TargetError> {
    let (group, version) = match reference.api_version.split_once('/') {
        Some((g, v)) => (g.to_owned(), v.to_owned()),
        None => (String::new(), reference.api_version.clone()),
    };
    let gvk = GroupVersionKind::gvk(&group, &version, &reference.kind);
    let (resource, capabilities) =
        kube::discovery::pinned_kind(client, &gvk)
            .await
            .map_err(|e| match e {
                kube::Error::Discovery(_) => TargetError::NotFound(format!(
                    "the API server has no kind {} in {}",
                    reference.kind, reference.api_version
                )),
                other => api_error("discovery", other),
            })?;
    if !capabilities
        .subresources
        .iter()
        .any(|(sub, _)| sub.plural == "scale")
    {
        return Err(TargetError::NotFound(format!(
            "{} {} has no /scale subresource, so it cannot be autoscaled",
            reference.api_version, reference.kind
        )));
    }
    Ok((resource, capabilities))
}

impl KubernetesTarget {
    /// Discovers the resource and checks it has a scale subresource.
    pub async fn connect(
        client: kube::Client,
        reference: KubernetesRef,
    ) -> Result<Self, TargetError> {
        let (resource, capabilities) = discover(&client, &reference).await?;
        Ok(Self::from_discovered(
            client,
            reference,
            resource,
            &capabilities,
        ))
    }

    /// A target of an already discovered kind.
    fn from_discovered(
        client: kube::Client,
        reference: KubernetesRef,
        resource: ApiResource,
        capabilities: &ApiCapabilities,
    ) -> Self {
        let namespace = reference
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned());
        let api = match capabilities.scope {
            Scope::Namespaced => Api::namespaced_with(client.clone(), &namespace, &resource),
            Scope::Cluster => Api::all_with(client.clone(), &resource),
        };
        let scale_in_object = resource.group == "apps"
            && matches!(
                resource.kind.as_str(),
                "Deployment" | "StatefulSet" | "ReplicaSet"
            )
            && capabilities.scope == Scope::Namespaced;
        KubernetesTarget {
            pods: Api::namespaced(client.clone(), &namespace),
            client,
            reference,
            namespace,
            api,
            resource,
            scale_in_object,
            caches: None,
            written_over: Mutex::new(None),
            snapshot: Arc::default(),
            object_json: Mutex::default(),
            selected_pods: Mutex::default(),
        }
    }

    /// Reads the workload object and its pods from `caches` (started for this namespace and
    /// kind if need be) whenever they are healthy.
    pub fn with_caches(mut self, caches: &WatchCaches) -> Self {
        let namespaced = self.api.resource_url().contains("/namespaces/");
        self.caches = Some(TargetCaches {
            objects: namespaced.then(|| caches.objects(&self.namespace, &self.resource)),
            pods: caches.pods(&self.namespace),
        });
        self
    }

    /// Whether the workload object and the pods are read from healthy watch caches.
    pub fn reads_from_caches(&self) -> bool {
        self.caches
            .as_ref()
            .is_some_and(|c| c.pods.healthy() && c.objects.as_ref().is_none_or(|o| o.healthy()))
    }

    /// The discovered plural, e.g. `deployments` (for tests and the API).
    pub fn plural(&self) -> &str {
        self.api
            .resource_url()
            .rsplit('/')
            .next()
            .unwrap_or_default()
    }

    async fn read_scale(&self) -> Result<k8s_openapi::api::autoscaling::v1::Scale, TargetError> {
        self.api.get_scale(&self.reference.name).await.map_err(|e| {
            api_error(
                &format!("{} {} scale", self.reference.kind, self.reference.name),
                e,
            )
        })
    }

    async fn read_scale_view(&self) -> Result<ScaleView, TargetError> {
        let scale = self.read_scale().await?;
        Ok(ScaleView {
            current: scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0),
            selector: scale
                .status
                .as_ref()
                .and_then(|s| s.selector.clone())
                .unwrap_or_default(),
            version: scale.metadata.resource_version,
        })
    }

    /// The workload object from the API server's watch cache (`resourceVersion=0`: no etcd
    /// read). It is context for the guest; the count acted on comes from the Scale.
    async fn read_object(&self) -> Result<Arc<DynamicObject>, TargetError> {
        self.api
            .get_with(&self.reference.name, &GetParams::any())
            .await
            .map(Arc::new)
            .map_err(|e| {
                api_error(
                    &format!("{} {}", self.reference.kind, self.reference.name),
                    e,
                )
            })
    }

    /// The workload object from the shared cache, if it is healthy, holds the object, and
    /// has seen our last write.
    fn cached_object(&self) -> Option<Arc<DynamicObject>> {
        let object = self
            .caches
            .as_ref()?
            .objects
            .as_ref()?
            .get(&self.reference.name)??;
        let written_over = self.written_over.lock().ok()?.clone();
        if written_over.is_some() && object.metadata.resource_version == written_over {
            return None;
        }
        Some(object)
    }

    /// The object as JSON text, serialized again only when its resourceVersion changed.
    fn object_json(&self, object: &DynamicObject) -> ObjectJson {
        let version = object.metadata.resource_version.as_deref();
        if let Ok(memo) = self.object_json.lock()
            && let Some((at, json)) = memo.as_ref()
            && version == Some(at.as_str())
        {
            return json.clone();
        }
        let json = ObjectJson::of(object);
        if let (Some(version), Ok(mut memo)) = (version, self.object_json.lock()) {
            *memo = Some((version.to_owned(), json.clone()));
        }
        json
    }

    /// The Scale of an apps workload, from the object itself.
    fn scale_from_object(object: &DynamicObject) -> Option<ScaleView> {
        let spec = object.data.get("spec")?;
        let current = i32::try_from(spec.get("replicas")?.as_i64()?).ok()?;
        let selector: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector =
            serde_json::from_value(spec.get("selector")?.clone()).ok()?;
        let selector = Selector::try_from(selector).ok()?;
        Some(ScaleView {
            current,
            selector: selector.to_string(),
            version: object.metadata.resource_version.clone(),
        })
    }

    /// The pods `selector` matches: from the shared cache when it is healthy, else listed.
    async fn matching_pods(&self, selector: &str) -> Result<Vec<Arc<Pod>>, TargetError> {
        if let Some(caches) = &self.caches
            && caches.pods.healthy()
        {
            let generation = caches.pods.generation();
            if let Ok(last) = self.selected_pods.lock()
                && let Some((at, chosen_by, pods)) = last.as_ref()
                && *at == generation
                && chosen_by == selector
            {
                return Ok(pods.clone());
            }
            if let Ok(parsed) = selector::parse(selector)
                && let Some(mut pods) = caches.pods.filter(|pod| parsed.matches(pod.labels()))
            {
                // In name order, as the API server lists them.
                pods.sort_unstable_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
                if let Ok(mut last) = self.selected_pods.lock() {
                    *last = Some((generation, selector.to_owned(), pods.clone()));
                }
                return Ok(pods);
            }
        }
        let pods = self
            .pods
            .list(&ListParams::default().labels(selector).match_any())
            .await
            .map_err(|e| api_error(&format!("pods matching {selector:?}"), e))?;
        Ok(pods.items.into_iter().map(Arc::new).collect())
    }

    /// Gives the named pods deletion costs; on failure, the ones already annotated are in
    /// `marked` so they can be cleared.
    async fn mark_for_deletion(
        &self,
        names: &[String],
        existing: &[Replica],
        marked: &mut Vec<String>,
    ) -> Result<(), TargetError> {
        let chosen: Vec<&String> = names
            .iter()
            .filter(|n| existing.iter().any(|r| &r.name == *n))
            .collect();
        let total = chosen.len() as i64;
        for (i, name) in chosen.into_iter().enumerate() {
            // Lowest cost goes first: the first named pod gets -total.
            let cost = (i as i64 - total).to_string();
            let patch =
                serde_json::json!({ "metadata": { "annotations": { DELETION_COST: cost } } });
            self.pods
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| api_error(&format!("annotating pod {name}"), e))?;
            marked.push(name.clone());
        }
        Ok(())
    }

    /// Removes the deletion costs of a scale-in that did not happen: left behind they would
    /// pick the victims of some later, unrelated scale-in (a rollout's, or the HPA's).
    async fn clear_deletion_costs(&self, marked: &[String]) {
        let patch = serde_json::json!({ "metadata": { "annotations": { DELETION_COST: null } } });
        for name in marked {
            if let Err(error) = self
                .pods
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                tracing::warn!(pod = %name, %error, "cannot clear the deletion cost of a scale-in that failed");
            }
        }
    }
}

impl KubernetesTarget {
    /// Writes `replicas` through `/scale`, retrying conflicts while nobody else changed the
    /// count.
    async fn write_replicas(
        &self,
        observed: &Observation,
        replicas: u32,
    ) -> Result<(), TargetError> {
        let mut version = observed.version.clone();
        for attempt in 0..=CONFLICT_RETRIES {
            let patch = serde_json::json!({
                "metadata": { "resourceVersion": version },
                "spec": { "replicas": replicas },
            });
            match self
                .api
                .patch_scale(
                    &self.reference.name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {
                    if let Ok(mut written_over) = self.written_over.lock() {
                        *written_over = version;
                    }
                    return Ok(());
                }
                Err(kube::Error::Api(status))
                    if status.code == 409 && attempt < CONFLICT_RETRIES =>
                {
                    let fresh = self.read_scale().await?;
                    let now = fresh.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
                    if u32::try_from(now).ok() != Some(observed.current) {
                        return Err(TargetError::Conflict(format!(
                            "replicas changed from {} to {now} since the decision; not overriding",
                            observed.current
                        )));
                    }
                    version = fresh.metadata.resource_version;
                    tracing::debug!(target = %self.reference.name, attempt, "scale conflict; retrying");
                }
                Err(e) => {
                    return Err(api_error(
                        &format!("scaling {} {}", self.reference.kind, self.reference.name),
                        e,
                    ));
                }
            }
        }
        Err(TargetError::Conflict(
            "the scale kept changing; giving up for this run".into(),
        ))
    }
}

/// Why the metrics API failed, in words: a 404 (the API server answers an unregistered group
/// with a plain-text "404 page not found") means no metrics server is installed.
fn metrics_api_error(error: kube::Error) -> String {
    match error {
        kube::Error::Api(status) if status.code == 404 => "the resource metrics API (metrics.k8s.io/v1beta1) is not served by this cluster: install metrics-server, or do not grant kubernetesMetrics".into(),
        kube::Error::Api(status) if status.code == 403 => format!(
            "listing pod metrics (metrics.k8s.io) is forbidden: {}",
            status.message
        ),
        other => format!("metrics.k8s.io: {other}"),
    }
}

fn pod_to_replica(pod: &Pod) -> Option<Replica> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    Some(Replica {
        name: pod.metadata.name.clone()?,
        ready,
        start_time_ms: status
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0.as_millisecond()),
        labels: pod
            .metadata
            .labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        address: status.and_then(|s| s.pod_ip.clone()),
    })
}

/// Sums of the pod's CPU (millicores) and memory (bytes) requests, if every container has one.
fn pod_requests(pod: &Pod) -> (Option<u64>, Option<u64>) {
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let sum = |resource: &str, scale: f64| -> Option<u64> {
        if containers.is_empty() {
            return None;
        }
        containers.iter().try_fold(0u64, |acc, c| {
            let q = c.resources.as_ref()?.requests.as_ref()?.get(resource)?;
            Some(acc + (parse_quantity(&q.0)? * scale).round() as u64)
        })
    };
    (sum("cpu", 1000.0), sum("memory", 1.0))
}

/// Parses a Kubernetes quantity (`250m`, `1.5`, `128Mi`, `1e3`, `500n`) into base units.
pub(crate) fn parse_quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0f64.powi(2),
        "Gi" => 1024.0f64.powi(3),
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        "Ei" => 1024.0f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    Some(value * factor)
}

impl Target for KubernetesTarget {
    fn identity(&self) -> TargetIdentity {
        TargetIdentity {
            kind: self.reference.kind.clone(),
            name: self.reference.name.clone(),
            namespace: self.namespace.clone(),
        }
    }

    fn observe(&self) -> BoxFuture<'_, Result<Observation, TargetError>> {
        Box::pin(async move {
            if let Some(caches) = &self.caches {
                if let Some(objects) = &caches.objects {
                    objects.first_sync().await;
                }
                caches.pods.first_sync().await;
            }
            let (scale, object) = match self.cached_object() {
                Some(object) => {
                    let derived = self
                        .scale_in_object
                        .then(|| Self::scale_from_object(&object))
                        .flatten();
                    match derived {
                        Some(scale) => (scale, object),
                        None => (self.read_scale_view().await?, object),
                    }
                }
                // The Scale read fresh: its resourceVersion is what a write carries.
                None => (self.read_scale_view().await?, self.read_object().await?),
            };
            let (replicas, requests) = if scale.selector.is_empty() {
                (Vec::new(), HashMap::new())
            } else {
                let pods = self.matching_pods(&scale.selector).await?;
                let requests = pods
                    .iter()
                    .filter_map(|p| Some((p.metadata.name.clone()?, pod_requests(p))))
                    .collect();
                (
                    pods.iter().filter_map(|p| pod_to_replica(p)).collect(),
                    requests,
                )
            };
            if let Ok(mut snapshot) = self.snapshot.lock() {
                *snapshot = PodSnapshot {
                    selector: scale.selector,
                    requests,
                };
            }
            Ok(Observation {
                current: u32::try_from(scale.current).unwrap_or(0),
                replicas,
                object: self.object_json(&object),
                version: scale.version,
            })
        })
    }

    fn scale<'a>(
        &'a self,
        observed: &'a Observation,
        replicas: u32,
        remove_first: &'a [String],
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        Box::pin(async move {
            let mut marked = Vec::new();
            let mut result = Ok(());
            if replicas < observed.current && !remove_first.is_empty() {
                result = self
                    .mark_for_deletion(remove_first, &observed.replicas, &mut marked)
                    .await;
            }
            if result.is_ok() {
                result = self.write_replicas(observed, replicas).await;
            }
            if result.is_err() && !marked.is_empty() {
                self.clear_deletion_costs(&marked).await;
            }
            result
        })
    }

    fn pod_metrics(&self) -> Option<Arc<dyn PodMetricsProvider>> {
        Some(Arc::new(MetricsServer {
            api: Api::namespaced_with(
                self.client.clone(),
                &self.namespace,
                &ApiResource {
                    group: "metrics.k8s.io".into(),
                    version: "v1beta1".into(),
                    api_version: "metrics.k8s.io/v1beta1".into(),
                    kind: "PodMetrics".into(),
                    plural: "pods".into(),
                },
            ),
            snapshot: self.snapshot.clone(),
        }))
    }
}

/// `metrics.k8s.io` pod metrics of the target's pods, joined with their requests.
struct MetricsServer {
    api: Api<DynamicObject>,
    snapshot: Arc<Mutex<PodSnapshot>>,
}

impl PodMetricsProvider for MetricsServer {
    fn pod_metrics(&self) -> BoxFuture<'_, Result<Vec<PodMetrics>, GuestError>> {
        Box::pin(async move {
            let snapshot = self.snapshot.lock().map(|s| s.clone()).unwrap_or_default();
            if snapshot.selector.is_empty() {
                return Err(GuestError::Unavailable(
                    "the target's pods are not known yet".into(),
                ));
            }
            let list = tokio::time::timeout(
                Duration::from_secs(10),
                self.api
                    .list(&ListParams::default().labels(&snapshot.selector)),
            )
            .await
            .map_err(|_| GuestError::Unavailable("metrics.k8s.io timed out".into()))?
            .map_err(|e| GuestError::Unavailable(metrics_api_error(e)))?;
            let mut out = Vec::new();
            for item in list.items {
                let Some(pod) = item.metadata.name.clone() else {
                    continue;
                };
                let containers = item.data["containers"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let usage = |resource: &str, scale: f64| -> u64 {
                    containers
                        .iter()
                        .filter_map(|c| c["usage"][resource].as_str().and_then(parse_quantity))
                        .map(|v| (v * scale).round() as u64)
                        .sum()
                };
                let timestamp_ms = item.data["timestamp"]
                    .as_str()
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                    .map_or(0, |t| t.as_millisecond());
                let (cpu_request, memory_request) =
                    snapshot.requests.get(&pod).copied().unwrap_or_default();
                out.push(PodMetrics {
                    cpu_millicores: usage("cpu", 1000.0),
                    memory_bytes: usage("memory", 1.0),
                    cpu_request_millicores: cpu_request,
                    memory_request_bytes: memory_request,
                    timestamp_ms,
                    pod,
                });
            }
            Ok(out)
        })
    }
}

/// Watch caches from the environment: targets on a [`client_for`], the caches on a
/// [`cache::cache_client`].
pub(crate) async fn caches_from_environment() -> Result<WatchCaches, TargetError> {
    let config = config_from_environment().await?;
    Ok(WatchCaches::new(
        client_for(config.clone())?,
        cache::cache_client(config)?,
    ))
}

async fn config_from_environment() -> Result<kube::Config, TargetError> {
    kube::Config::infer()
        .await
        .map_err(|e| TargetError::Unavailable(format!("no Kubernetes configuration: {e}")))
}

/// A client with the autoscaler's policy: timeouts short enough that a hung API server
/// delays one run, not the process, and no built-in retries (kube-rs would otherwise back off
/// for minutes on a persistent 503; the next run is the retry, and it sees fresh state).
pub fn client_for(config: kube::Config) -> Result<kube::Client, TargetError> {
    kube::Client::try_from(tuned(config))
        .map_err(|e| TargetError::Unavailable(format!("Kubernetes client: {e}")))
}

/// [`client_for`], with every request taking a token of `budget` first.
pub fn client_with_budget(
    config: kube::Config,
    budget: &crate::targets::budget::RequestBudget,
) -> Result<kube::Client, TargetError> {
    let builder = kube::client::ClientBuilder::try_from(tuned(config))
        .map_err(|e| TargetError::Unavailable(format!("Kubernetes client: {e}")))?;
    Ok(builder.with_layer(budget).build())
}

/// [`client_for`] with `read_timeout` (for long watches).
pub(super) fn client_for_reads(
    config: kube::Config,
    read_timeout: Duration,
) -> Result<kube::Client, TargetError> {
    let mut config = tuned(config);
    config.read_timeout = Some(read_timeout);
    kube::Client::try_from(config)
        .map_err(|e| TargetError::Unavailable(format!("Kubernetes client: {e}")))
}

fn tuned(mut config: kube::Config) -> kube::Config {
    let at_most = |t: Option<Duration>, max: u64| {
        Some(t.map_or(Duration::from_secs(max), |t| {
            t.min(Duration::from_secs(max))
        }))
    };
    config.connect_timeout = at_most(config.connect_timeout, 5);
    config.read_timeout = at_most(config.read_timeout, 15);
    config.write_timeout = at_most(config.write_timeout, 15);
    config.default_retry = false;
    config
}

#[cfg(test)]
mod tests {
    use super::parse_quantity;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("250m"), Some(0.25));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(
            parse_quantity("1500000n").map(|v| (v * 1000.0).round()),
            Some(2.0)
        );
        assert_eq!(parse_quantity("128Mi"), Some(134_217_728.0));
        assert_eq!(parse_quantity("1G"), Some(1e9));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("12Xi"), None);
        assert_eq!(parse_quantity("abc"), None);
    }
}
