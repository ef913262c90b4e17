//! A fake Kubernetes API server over real HTTP, speaking the wire format kube-rs expects:
//! discovery (`/api/v1`, `/apis/GROUP/VERSION` resource lists) and `metrics.k8s.io` pod
//! metrics here; pods, workloads with their `autoscaling/v1` Scale subresource, custom
//! resources, Leases and Events in the object store (`fake_store.rs`), with resourceVersion
//! conflicts, label selectors and watch streams. Faults (500s, delays, a concurrent writer)
//! can be injected per request kind, and every request is counted by verb and resource and,
//! unless told otherwise, recorded.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::fake_store::{self, Key, Kind, Selector, Store};

/// A pod to add to the server.
#[derive(Debug, Clone)]
pub struct FakePod {
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// Ready condition.
    pub ready: bool,
    /// Pod IP.
    pub ip: String,
    /// Being deleted.
    pub terminating: bool,
    /// CPU request (millicores) of its single container.
    pub cpu_request_m: u64,
    /// CPU usage (millicores) reported by metrics.k8s.io.
    pub cpu_usage_m: u64,
}

/// A fault to inject into the next matching request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status code and a `Status` body.
    Status(u16),
    /// Wait this long before answering normally.
    Delay(Duration),
    /// Before handling the request, another writer bumps the resourceVersion (replicas
    /// unchanged when `None`, or set to the given count).
    ConcurrentWrite(Option<u32>),
}

/// Which requests a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// GET of a scale subresource.
    GetScale,
    /// PATCH of a scale subresource.
    PatchScale,
    /// LIST of pod metrics (metrics.k8s.io), which every run of a CPU policy makes.
    PodMetrics,
}

/// Everything the server holds.
pub struct World {
    /// Whether metrics.k8s.io is served (metrics-server installed).
    metrics_api: bool,
    store: Store,
    /// The scalable objects added by tests: name → (group/version, plural).
    scalables: BTreeMap<String, (String, String)>,
    /// CPU usage (millicores) metrics.k8s.io reports, by pod name.
    usage: HashMap<String, u64>,
    faults: Vec<(Route, VecDeque<Fault>)>,
    /// Whether requests are kept (off for fleet benchmarks, where only counts matter).
    record: bool,
    requests: Vec<(String, String, String)>,
    /// The `x-test-identity` header of each request (empty without one), by request index.
    identities: Vec<String>,
    /// Requests by (verb, resource), as RBAC names them (e.g. `list`, `pods`).
    counts: BTreeMap<(String, String), u64>,
}

/// The running server.
#[derive(Clone)]
pub struct FakeKube {
    /// Its address.
    pub addr: SocketAddr,
    world: Arc<Mutex<World>>,
}

const NAMESPACE: &str = "default";

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(body),
    )
        .into_response()
}

fn resource_list(group_version: &str, kinds: &[Kind]) -> Value {
    let mut list = Vec::new();
    for kind in kinds {
        list.push(
            json!({"name": kind.plural, "singularName": "", "namespaced": true, "kind": kind.kind,
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}),
        );
        if kind.scalable {
            list.push(json!({"name": format!("{}/scale", kind.plural), "singularName": "", "namespaced": true,
                "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
        }
    }
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": list})
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    let query = uri.query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn pod_json(p: &FakePod) -> Value {
    let mut metadata = json!({"name": p.name, "labels": p.labels, "annotations": p.annotations});
    if p.terminating {
        metadata["deletionTimestamp"] = json!("2026-11-22T00:00:00Z");
    }
    json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": metadata,
        "spec": {"containers": [{"name": "app", "image": "app:1",
            "resources": {"requests": {"cpu": format!("{}m", p.cpu_request_m), "memory": "128Mi"}}}]},
        "status": {"phase": "Running", "podIP": p.ip, "startTime": "2026-11-22T00:00:00Z",
            "conditions": [{"type": "Ready", "status": if p.ready { "True" } else { "False" }}]},
    })
}

impl Default for World {
    fn default() -> Self {
        World {
            metrics_api: true,
            store: Store::default(),
            scalables: BTreeMap::new(),
            usage: HashMap::new(),
            faults: Vec::new(),
            record: true,
            requests: Vec::new(),
            identities: Vec::new(),
            counts: BTreeMap::new(),
        }
    }
}

impl World {
    /// The object store.
    pub fn store(&mut self) -> &mut Store {
        &mut self.store
    }

    fn key(&self, name: &str) -> Option<(Key, String)> {
        let (gv, plural) = self.scalables.get(name)?;
        Some((
            Key {
                gv: gv.clone(),
                plural: plural.clone(),
                namespace: NAMESPACE.into(),
                name: name.into(),
            },
            plural.clone(),
        ))
    }

    /// Another writer touches scalable `name`: its resourceVersion moves, and its replicas
    /// too when given.
    fn concurrent_write(&mut self, name: &str, replicas: Option<u32>) {
        let Some((key, _)) = self.key(name) else {
            return;
        };
        let Some(target) = self.store.target(&key.gv, &key.plural) else {
            return;
        };
        let patch = match replicas {
            Some(r) => json!({"spec": {"replicas": r}}),
            None => json!({"metadata": {"annotations": {"touched": key.name.clone() + "-again"}}}),
        };
        let _ = self.store.patch(&target, &key, &patch);
    }

    fn pods(&self, selector: &Selector) -> Vec<Value> {
        self.store
            .all("pods")
            .into_iter()
            .filter(|p| {
                let labels = p["metadata"]["labels"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect();
                selector.matches(&labels)
            })
            .collect()
    }
}

async fn handle(
    State(world): State<Arc<Mutex<World>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let route = match (&method, segments.last()) {
        (&Method::GET, Some(&"scale")) => Some(Route::GetScale),
        (&Method::PATCH, Some(&"scale")) => Some(Route::PatchScale),
        (&Method::GET, Some(&"pods")) if path.starts_with("/apis/metrics.k8s.io/") => {
            Some(Route::PodMetrics)
        }
        _ => None,
    };
    let (fault, target) = {
        let Ok(mut w) = world.lock() else {
            return status(500, "InternalError", "poisoned");
        };
        let recorded = match uri.query().filter(|q| !q.is_empty()) {
            Some(query) => format!("{path}?{query}"),
            None => path.clone(),
        };
        if let Some((_, resource, verb)) =
            super::chart::request_permission(method.as_str(), &recorded)
        {
            *w.counts.entry((verb, resource)).or_default() += 1;
        }
        if w.record {
            w.requests.push((
                method.to_string(),
                recorded,
                String::from_utf8_lossy(&body).into_owned(),
            ));
            // Who sent it: a test client's header, or a process's bearer token.
            let identity = headers
                .get("x-test-identity")
                .and_then(|v| v.to_str().ok())
                .or_else(|| {
                    headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Bearer "))
                })
                .unwrap_or_default()
                .to_owned();
            w.identities.push(identity);
        }
        let fault = route.and_then(|r| {
            w.faults
                .iter_mut()
                .find(|(fr, _)| *fr == r)
                .and_then(|(_, q)| q.pop_front())
        });
        (fault, w.store.parse(&segments))
    };
    match fault {
        Some(Fault::Status(code)) => return status(code, "InternalError", "injected failure"),
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(Fault::ConcurrentWrite(replicas)) => {
            if let Ok(mut w) = world.lock()
                && let Some(name) = segments.get(segments.len().saturating_sub(2))
            {
                w.concurrent_write(name, replicas);
            }
        }
        None => {}
    }
    if let Some(target) = target {
        return fake_store::handle(&world, target, &method, &uri, &headers, &body);
    }
    let Ok(mut w) = world.lock() else {
        return status(500, "InternalError", "poisoned");
    };
    match (method.clone(), segments.as_slice()) {
        (Method::GET, ["api"]) => {
            axum::Json(json!({"kind": "APIVersions", "versions": ["v1"]})).into_response()
        }
        (Method::GET, ["api", "v1"]) => {
            axum::Json(resource_list("v1", &w.store.kinds_in("v1"))).into_response()
        }
        // Without metrics-server the group is not registered, and the API server answers
        // its paths with a plain-text 404, not a Status.
        (Method::GET, ["apis", "metrics.k8s.io", ..]) if !w.metrics_api => (
            StatusCode::NOT_FOUND,
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; charset=utf-8",
            )],
            "404 page not found\n",
        )
            .into_response(),
        (Method::GET, ["apis", "metrics.k8s.io", "v1beta1", "namespaces", _, "pods"]) => {
            let selector =
                match Selector::parse(&query_param(&uri, "labelSelector").unwrap_or_default()) {
                    Ok(selector) => selector,
                    Err(message) => return status(400, "BadRequest", &message),
                };
            let pods = w.pods(&selector);
            let items: Vec<Value> = pods
                .iter()
                .filter_map(|p| p["metadata"]["name"].as_str())
                .map(|name| {
                    let usage = w.usage.get(name).copied().unwrap_or_default();
                    json!({"metadata": {"name": name, "namespace": NAMESPACE},
                    "timestamp": "2026-11-22T01:00:00Z", "window": "15s",
                    "containers": [{"name": "app", "usage": {"cpu": format!("{usage}000000n"), "memory": "100Mi"}}]})
                })
                .collect();
            axum::Json(json!({"kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": items}))
                .into_response()
        }
        (Method::GET, ["apis", group, version]) => {
            let gv = format!("{group}/{version}");
            let kinds = w.store().kinds_in(&gv);
            if kinds.is_empty() {
                return status(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                );
            }
            axum::Json(resource_list(&gv, &kinds)).into_response()
        }
        _ => status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ),
    }
}

impl FakeKube {
    /// Starts the server on an ephemeral loopback port.
    pub async fn start() -> anyhow::Result<Self> {
        let world: Arc<Mutex<World>> = Arc::default();
        let app = Router::new().fallback(handle).with_state(world.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeKube { addr, world })
    }

    fn config(&self, read_timeout: Duration) -> anyhow::Result<kube::Config> {
        let mut config = kube::Config::new(format!("http://{}", self.addr).parse()?);
        config.default_namespace = NAMESPACE.into();
        config.read_timeout = Some(read_timeout);
        Ok(config)
    }

    /// A client pointed at this server, built by the production `client_for` (its timeouts,
    /// no built-in retries), with a shorter read timeout.
    pub fn client(&self, read_timeout: Duration) -> anyhow::Result<kube::Client> {
        Ok(wasmscaler::targets::kubernetes::client_for(
            self.config(read_timeout)?,
        )?)
    }

    /// A client for watch caches, built by the production `cache_client` (its long read
    /// timeout), recorded as sent by `identity` when given.
    pub fn cache_client(&self, identity: Option<&str>) -> anyhow::Result<kube::Client> {
        let mut config = self.config(Duration::from_secs(15))?;
        if let Some(identity) = identity {
            config
                .headers
                .push(("x-test-identity".parse()?, identity.parse()?));
        }
        Ok(wasmscaler::targets::kubernetes::cache::cache_client(
            config,
        )?)
    }

    /// Watch caches as a process makes them: targets on [`FakeKube::client`], the caches on
    /// [`FakeKube::cache_client`].
    pub fn caches(&self) -> anyhow::Result<wasmscaler::targets::kubernetes::cache::WatchCaches> {
        Ok(wasmscaler::targets::kubernetes::cache::WatchCaches::new(
            self.client(Duration::from_secs(2))?,
            self.cache_client(None)?,
        ))
    }

    /// [`FakeKube::client`] whose requests are recorded as sent by `identity`.
    pub fn client_as(
        &self,
        read_timeout: Duration,
        identity: &str,
    ) -> anyhow::Result<kube::Client> {
        let mut config = self.config(read_timeout)?;
        config
            .headers
            .push(("x-test-identity".parse()?, identity.parse()?));
        Ok(wasmscaler::targets::kubernetes::client_for(config)?)
    }

    /// Who sent each request (see [`FakeKube::client_as`]), by request index.
    pub fn request_identities(&self) -> Vec<String> {
        self.with(|w| w.identities.clone())
    }

    /// [`FakeKube::client`] under a client-side request budget, as the controller builds it.
    pub fn client_with_budget(
        &self,
        read_timeout: Duration,
        budget: &wasmscaler::targets::budget::RequestBudget,
    ) -> anyhow::Result<kube::Client> {
        Ok(wasmscaler::targets::kubernetes::client_with_budget(
            self.config(read_timeout)?,
            budget,
        )?)
    }

    fn with<T>(&self, f: impl FnOnce(&mut World) -> T) -> T {
        let mut w = self.world.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut w)
    }

    /// Adds a scalable object whose pods carry `app=NAME`: an apps/v1 workload selects them
    /// in `spec.selector`, a custom resource reports them in `status.selector`.
    pub fn add_scalable(
        &self,
        api_version: &str,
        kind: &str,
        plural: &str,
        name: &str,
        replicas: u32,
    ) {
        self.add_scalable_in(NAMESPACE, api_version, kind, plural, name, replicas);
    }

    /// [`FakeKube::add_scalable`] in `namespace`.
    pub fn add_scalable_in(
        &self,
        namespace: &str,
        api_version: &str,
        kind: &str,
        plural: &str,
        name: &str,
        replicas: u32,
    ) {
        self.with(|w| {
            w.store.serve(Kind {
                gv: api_version.into(),
                plural: plural.into(),
                kind: kind.into(),
                scalable: true,
            });
            let object = if api_version == "apps/v1" {
                json!({"metadata": {"name": name},
                    "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}},
                    "status": {"replicas": replicas}})
            } else {
                json!({"metadata": {"name": name}, "spec": {"replicas": replicas},
                    "status": {"replicas": replicas, "selector": format!("app={name}")}})
            };
            if let Some(target) = w.store.target(api_version, plural) {
                let _ = w.store.create(&target, namespace, object);
            }
            if namespace == NAMESPACE {
                w.scalables
                    .insert(name.into(), (api_version.into(), plural.into()));
            }
        });
    }

    /// Adds a pod.
    pub fn add_pod(&self, pod: FakePod) {
        self.add_pod_in(NAMESPACE, pod);
    }

    /// Adds a pod in `namespace`.
    pub fn add_pod_in(&self, namespace: &str, pod: FakePod) {
        self.with(|w| {
            w.usage.insert(pod.name.clone(), pod.cpu_usage_m);
            if let Some(target) = w.store.target("v1", "pods") {
                let _ = w.store.create(&target, namespace, pod_json(&pod));
            }
        });
    }

    /// A ready pod of app `app` using `cpu_usage_m` of a 500m request.
    pub fn pod(name: &str, app: &str, cpu_usage_m: u64) -> FakePod {
        FakePod {
            name: name.into(),
            labels: BTreeMap::from([("app".to_string(), app.to_string())]),
            annotations: BTreeMap::new(),
            ready: true,
            ip: format!("10.0.0.{}", name.len()),
            terminating: false,
            cpu_request_m: 500,
            cpu_usage_m,
        }
    }

    /// Unregisters metrics.k8s.io, as a cluster without metrics-server.
    pub fn remove_metrics_api(&self) {
        self.with(|w| w.metrics_api = false);
    }

    /// Queues a fault for the next requests of `route`.
    pub fn inject(&self, route: Route, fault: Fault) {
        self.with(|w| match w.faults.iter_mut().find(|(r, _)| *r == route) {
            Some((_, q)) => q.push_back(fault),
            None => w.faults.push((route, VecDeque::from([fault]))),
        });
    }

    /// The replicas of scalable `name`.
    pub fn replicas(&self, name: &str) -> Option<u32> {
        self.with(|w| {
            let (key, _) = w.key(name)?;
            let object = w.store.get(&key)?;
            object["spec"]["replicas"].as_u64().map(|r| r as u32)
        })
    }

    /// The resourceVersion of scalable `name` (its Scale's too).
    pub fn resource_version(&self, name: &str) -> Option<String> {
        self.with(|w| {
            let (key, _) = w.key(name)?;
            let object = w.store.get(&key)?;
            object["metadata"]["resourceVersion"]
                .as_str()
                .map(str::to_owned)
        })
    }

    /// Sets the replicas of `name` (another actor), bumping its resourceVersion.
    pub fn set_replicas(&self, name: &str, replicas: u32) {
        self.with(|w| w.concurrent_write(name, Some(replicas)));
    }

    /// Sets the CPU usage metrics.k8s.io reports for every pod of app `app`.
    pub fn set_cpu_usage(&self, app: &str, cpu_usage_m: u64) {
        self.with(|w| {
            let Ok(selector) = Selector::parse(&format!("app={app}")) else {
                return;
            };
            for pod in w.pods(&selector) {
                if let Some(name) = pod["metadata"]["name"].as_str() {
                    w.usage.insert(name.to_owned(), cpu_usage_m);
                }
            }
        });
    }

    fn pod_map(&self, name: &str, field: &str) -> BTreeMap<String, String> {
        self.get("v1", "pods", name)
            .and_then(|pod| serde_json::from_value(pod["metadata"][field].clone()).ok())
            .unwrap_or_default()
    }

    /// The labels of pod `name`.
    pub fn pod_labels(&self, name: &str) -> BTreeMap<String, String> {
        self.pod_map(name, "labels")
    }

    /// The annotations of pod `name`.
    pub fn pod_annotations(&self, name: &str) -> BTreeMap<String, String> {
        self.pod_map(name, "annotations")
    }

    /// Stops keeping requests (their bodies and identities); only the counts by verb and
    /// resource go on. For fleet benchmarks.
    pub fn count_only(&self) {
        self.with(|w| {
            w.record = false;
            w.requests = Vec::new();
            w.identities = Vec::new();
        });
    }

    /// Requests so far by (verb, resource), as RBAC names them.
    pub fn counts(&self) -> BTreeMap<(String, String), u64> {
        self.with(|w| w.counts.clone())
    }

    fn store_target(&self, gv: &str, plural: &str) -> anyhow::Result<fake_store::Target> {
        self.with(|w| w.store.target(gv, plural))
            .ok_or_else(|| anyhow::anyhow!("the fake does not serve {gv} {plural}"))
    }

    /// Creates an object of a served kind (as `kubectl create` would).
    pub fn create(&self, gv: &str, plural: &str, object: Value) -> anyhow::Result<Value> {
        self.create_in(NAMESPACE, gv, plural, object)
    }

    /// [`FakeKube::create`] in `namespace`.
    pub fn create_in(
        &self,
        namespace: &str,
        gv: &str,
        plural: &str,
        object: Value,
    ) -> anyhow::Result<Value> {
        let target = self.store_target(gv, plural)?;
        self.with(|w| w.store.create(&target, namespace, object))
            .map_err(|r| anyhow::anyhow!("create failed: {}", r.code))
    }

    /// How many objects of `plural` satisfy `test` (without copying them).
    pub fn count(&self, plural: &str, test: impl Fn(&Value) -> bool) -> usize {
        self.with(|w| w.store.count(plural, test))
    }

    fn key(gv: &str, plural: &str, name: &str) -> Key {
        Key {
            gv: gv.into(),
            plural: plural.into(),
            namespace: NAMESPACE.into(),
            name: name.into(),
        }
    }

    /// An object of a served kind.
    pub fn get(&self, gv: &str, plural: &str, name: &str) -> Option<Value> {
        self.with(|w| w.store.get(&Self::key(gv, plural, name)))
    }

    /// Every object of `plural`.
    pub fn all(&self, plural: &str) -> Vec<Value> {
        self.with(|w| w.store.all(plural))
    }

    /// Merge-patches an object (as `kubectl patch --type merge` would).
    pub fn patch(&self, gv: &str, plural: &str, name: &str, patch: Value) -> anyhow::Result<Value> {
        let target = self.store_target(gv, plural)?;
        self.with(|w| w.store.patch(&target, &Self::key(gv, plural, name), &patch))
            .map_err(|r| anyhow::anyhow!("patch failed: {}", r.code))
    }

    /// Deletes an object.
    pub fn delete(&self, gv: &str, plural: &str, name: &str) -> anyhow::Result<()> {
        let target = self.store_target(gv, plural)?;
        self.with(|w| w.store.delete(&target, &Self::key(gv, plural, name)))
            .map(|_| ())
            .map_err(|r| anyhow::anyhow!("delete failed: {}", r.code))
    }

    /// Writes a kubeconfig pointing at this server; for controller processes.
    pub fn kubeconfig(&self, path: &std::path::Path) -> anyhow::Result<()> {
        self.kubeconfig_as(path, "fake-token")
    }

    /// [`FakeKube::kubeconfig`] whose requests are recorded as sent by `identity` (its
    /// bearer token).
    pub fn kubeconfig_as(&self, path: &std::path::Path, identity: &str) -> anyhow::Result<()> {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {NAMESPACE}\ncurrent-context: fake\nusers:\n- name: fake\n  user:\n    token: {identity}\n",
            self.addr
        );
        std::fs::write(path, text)?;
        Ok(())
    }

    /// Requests so far: (method, path with any query, body).
    pub fn requests(&self) -> Vec<(String, String, String)> {
        self.with(|w| w.requests.clone())
    }
}
