//! A fake Kubernetes API server over real HTTP, speaking the wire format kube-rs expects:
//! discovery (`/api/v1`, `/apis/GROUP/VERSION` resource lists), objects and their
//! `autoscaling/v1` Scale subresource with `resourceVersion` conflicts (409 `Status`), pods
//! filtered by label selector, merge patches, and `metrics.k8s.io` pod metrics. Faults
//! (500s, delays, a concurrent writer) can be injected per request kind, and every request
//! is recorded.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::fake_store::{self, Key, Store, Target as StoreTarget};

/// A scalable object held by the server.
#[derive(Debug, Clone)]
pub struct Scalable {
    /// apiVersion, e.g. `apps/v1`.
    pub api_version: String,
    /// Kind, e.g. `Deployment`.
    pub kind: String,
    /// Plural as discovery lists it.
    pub plural: String,
    /// Name.
    pub name: String,
    /// Desired replicas (`spec.replicas`).
    pub replicas: u32,
    /// `status.selector`.
    pub selector: String,
    /// The object's resourceVersion (bumped on every write).
    pub resource_version: u64,
}

/// A pod held by the server.
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
}

/// Everything the server holds.
pub struct World {
    /// Whether metrics.k8s.io is served (metrics-server installed).
    metrics_api: bool,
    objects: Vec<Scalable>,
    store: Store,
    pods: Vec<FakePod>,
    faults: Vec<(Route, VecDeque<Fault>)>,
    requests: Vec<(String, String, String)>,
    /// The `x-test-identity` header of each request (empty without one), by request index.
    identities: Vec<String>,
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

fn resource_list(group_version: &str, resources: &[(&str, &str, bool)]) -> Value {
    let mut list = Vec::new();
    for (plural, kind, scalable) in resources {
        list.push(
            json!({"name": plural, "singularName": "", "namespaced": true, "kind": kind,
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}),
        );
        if *scalable {
            list.push(json!({"name": format!("{plural}/scale"), "singularName": "", "namespaced": true,
                "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
        }
    }
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": list})
}

fn matches_selector(labels: &BTreeMap<String, String>, selector: &str) -> bool {
    selector
        .split(',')
        .filter(|s| !s.is_empty())
        .all(|term| match term.split_once('=') {
            Some((k, v)) => {
                labels.get(k.trim()).map(String::as_str) == Some(v.trim_start_matches('=').trim())
            }
            None => labels.contains_key(term.trim()),
        })
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    let query = uri.query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn pod_json(p: &FakePod) -> Value {
    let mut metadata = json!({"name": p.name, "namespace": NAMESPACE, "labels": p.labels,
        "annotations": p.annotations, "uid": format!("uid-{}", p.name)});
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

fn scale_json(o: &Scalable) -> Value {
    json!({
        "apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {"name": o.name, "namespace": NAMESPACE, "resourceVersion": o.resource_version.to_string()},
        "spec": {"replicas": o.replicas},
        "status": {"replicas": o.replicas, "selector": o.selector},
    })
}

fn object_json(o: &Scalable) -> Value {
    json!({
        "apiVersion": o.api_version, "kind": o.kind,
        "metadata": {"name": o.name, "namespace": NAMESPACE, "resourceVersion": o.resource_version.to_string()},
        "spec": {"replicas": o.replicas, "selector": {"matchLabels": {}}},
    })
}

impl Default for World {
    fn default() -> Self {
        World {
            metrics_api: true,
            objects: Vec::new(),
            store: Store::default(),
            pods: Vec::new(),
            faults: Vec::new(),
            requests: Vec::new(),
            identities: Vec::new(),
        }
    }
}

impl World {
    /// The generic object store (custom resources, Leases, Events).
    pub fn store(&mut self) -> &mut Store {
        &mut self.store
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
    let body_text = String::from_utf8_lossy(&body).into_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let route = match (&method, segments.last()) {
        (&Method::GET, Some(&"scale")) => Some(Route::GetScale),
        (&Method::PATCH, Some(&"scale")) => Some(Route::PatchScale),
        _ => None,
    };
    let fault = {
        let Ok(mut w) = world.lock() else {
            return status(500, "InternalError", "poisoned");
        };
        let recorded = match uri.query().filter(|q| !q.is_empty()) {
            Some(query) => format!("{path}?{query}"),
            None => path.clone(),
        };
        w.requests
            .push((method.to_string(), recorded, body_text.clone()));
        w.identities.push(
            headers
                .get("x-test-identity")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
        );
        route.and_then(|r| {
            w.faults
                .iter_mut()
                .find(|(fr, _)| *fr == r)
                .and_then(|(_, q)| q.pop_front())
        })
    };
    match fault {
        Some(Fault::Status(code)) => return status(code, "InternalError", "injected failure"),
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(Fault::ConcurrentWrite(replicas)) => {
            if let Ok(mut w) = world.lock()
                && let Some(name) = segments.get(segments.len().saturating_sub(2))
                && let Some(o) = w.objects.iter_mut().find(|o| o.name == *name)
            {
                o.resource_version += 1;
                if let Some(r) = replicas {
                    o.replicas = r;
                }
            }
        }
        None => {}
    }
    if let Some(target) = StoreTarget::parse(&segments) {
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
            axum::Json(resource_list("v1", &[("pods", "Pod", false)])).into_response()
        }
        (Method::GET, ["apis", group, version]) => {
            let gv = format!("{group}/{version}");
            let mut resources: Vec<(String, String, bool)> = w
                .objects
                .iter()
                .filter(|o| o.api_version == gv)
                .map(|o| (o.plural.clone(), o.kind.clone(), true))
                .collect();
            if gv == "apps/v1" {
                resources.push(("daemonsets".into(), "DaemonSet".into(), false));
            }
            if resources.is_empty() {
                return status(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                );
            }
            resources.dedup();
            let borrowed: Vec<(&str, &str, bool)> = resources
                .iter()
                .map(|(p, k, s)| (p.as_str(), k.as_str(), *s))
                .collect();
            axum::Json(resource_list(&gv, &borrowed)).into_response()
        }
        (Method::GET, ["api", "v1", "namespaces", _, "pods"]) => {
            let selector = query_param(&uri, "labelSelector").unwrap_or_default();
            let items: Vec<Value> = w
                .pods
                .iter()
                .filter(|p| matches_selector(&p.labels, &selector))
                .map(pod_json)
                .collect();
            axum::Json(json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items}))
                .into_response()
        }
        (Method::PATCH, ["api", "v1", "namespaces", _, "pods", name]) => {
            let patch: Value = serde_json::from_slice(&body).unwrap_or_default();
            let Some(pod) = w.pods.iter_mut().find(|p| p.name == *name) else {
                return status(404, "NotFound", &format!("pods \"{name}\" not found"));
            };
            merge_strings(&mut pod.labels, &patch["metadata"]["labels"]);
            merge_strings(&mut pod.annotations, &patch["metadata"]["annotations"]);
            axum::Json(pod_json(pod)).into_response()
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
            let selector = query_param(&uri, "labelSelector").unwrap_or_default();
            let items: Vec<Value> = w
                .pods
                .iter()
                .filter(|p| matches_selector(&p.labels, &selector))
                .map(|p| json!({"metadata": {"name": p.name, "namespace": NAMESPACE},
                    "timestamp": "2026-11-22T01:00:00Z", "window": "15s",
                    "containers": [{"name": "app", "usage": {"cpu": format!("{}000000n", p.cpu_usage_m), "memory": "100Mi"}}]}))
                .collect();
            axum::Json(json!({"kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": items}))
                .into_response()
        }
        (m, ["apis", _, _, "namespaces", _, plural, name, rest @ ..]) => {
            let Some(object) = w
                .objects
                .iter_mut()
                .find(|o| o.plural == *plural && o.name == *name)
            else {
                return status(404, "NotFound", &format!("{plural} \"{name}\" not found"));
            };
            match (m, rest) {
                (Method::GET, []) => axum::Json(object_json(object)).into_response(),
                (Method::GET, ["scale"]) => axum::Json(scale_json(object)).into_response(),
                (Method::PATCH, ["scale"]) => {
                    let patch: Value = serde_json::from_slice(&body).unwrap_or_default();
                    if let Some(rv) = patch["metadata"]["resourceVersion"].as_str()
                        && rv != object.resource_version.to_string()
                    {
                        return status(
                            409,
                            "Conflict",
                            &format!(
                                "Operation cannot be fulfilled on {plural}.apps \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                            ),
                        );
                    }
                    if let Some(r) = patch["spec"]["replicas"].as_u64() {
                        object.replicas = r as u32;
                    }
                    object.resource_version += 1;
                    axum::Json(scale_json(object)).into_response()
                }
                _ => status(405, "MethodNotAllowed", "not supported by the fake"),
            }
        }
        _ => status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ),
    }
}

/// JSON merge patch of a string map: a string sets the key, null deletes it.
fn merge_strings(map: &mut BTreeMap<String, String>, patch: &Value) {
    for (k, v) in patch.as_object().into_iter().flatten() {
        match v.as_str() {
            Some(v) => {
                map.insert(k.clone(), v.to_owned());
            }
            None => {
                map.remove(k);
            }
        }
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

    /// Adds a scalable object whose pods carry `app=NAME`.
    pub fn add_scalable(
        &self,
        api_version: &str,
        kind: &str,
        plural: &str,
        name: &str,
        replicas: u32,
    ) {
        self.with(|w| {
            w.objects.push(Scalable {
                api_version: api_version.into(),
                kind: kind.into(),
                plural: plural.into(),
                name: name.into(),
                replicas,
                selector: format!("app={name}"),
                resource_version: 100,
            })
        });
    }

    /// Adds a pod.
    pub fn add_pod(&self, pod: FakePod) {
        self.with(|w| w.pods.push(pod));
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

    /// The replicas of object `name`.
    pub fn replicas(&self, name: &str) -> Option<u32> {
        self.with(|w| {
            w.objects
                .iter()
                .find(|o| o.name == name)
                .map(|o| o.replicas)
        })
    }

    /// Sets the replicas of `name` (another actor), bumping its resourceVersion.
    pub fn set_replicas(&self, name: &str, replicas: u32) {
        self.with(|w| {
            if let Some(o) = w.objects.iter_mut().find(|o| o.name == name) {
                o.replicas = replicas;
                o.resource_version += 1;
            }
        });
    }

    /// Sets the CPU usage metrics.k8s.io reports for every pod of app `app`.
    pub fn set_cpu_usage(&self, app: &str, cpu_usage_m: u64) {
        self.with(|w| {
            for pod in w
                .pods
                .iter_mut()
                .filter(|p| p.labels.get("app").is_some_and(|a| a == app))
            {
                pod.cpu_usage_m = cpu_usage_m;
            }
        });
    }

    /// The labels of pod `name`.
    pub fn pod_labels(&self, name: &str) -> BTreeMap<String, String> {
        self.with(|w| {
            w.pods
                .iter()
                .find(|p| p.name == name)
                .map(|p| p.labels.clone())
                .unwrap_or_default()
        })
    }

    /// The annotations of pod `name`.
    pub fn pod_annotations(&self, name: &str) -> BTreeMap<String, String> {
        self.with(|w| {
            w.pods
                .iter()
                .find(|p| p.name == name)
                .map(|p| p.annotations.clone())
                .unwrap_or_default()
        })
    }

    fn store_target(gv: &str, plural: &str) -> anyhow::Result<StoreTarget> {
        let (group, version) = gv.split_once('/').unwrap_or(("", gv));
        StoreTarget::parse(&["apis", group, version, plural])
            .ok_or_else(|| anyhow::anyhow!("the fake does not serve {gv} {plural}"))
    }

    /// Creates an object of a served kind (as `kubectl create` would).
    pub fn create(&self, gv: &str, plural: &str, object: Value) -> anyhow::Result<Value> {
        let target = Self::store_target(gv, plural)?;
        self.with(|w| w.store.create(&target, NAMESPACE, object))
            .map_err(|r| anyhow::anyhow!("create failed: {}", r.code))
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
        let target = Self::store_target(gv, plural)?;
        self.with(|w| w.store.patch(&target, &Self::key(gv, plural, name), &patch))
            .map_err(|r| anyhow::anyhow!("patch failed: {}", r.code))
    }

    /// Deletes an object.
    pub fn delete(&self, gv: &str, plural: &str, name: &str) -> anyhow::Result<()> {
        let target = Self::store_target(gv, plural)?;
        self.with(|w| w.store.delete(&target, &Self::key(gv, plural, name)))
            .map(|_| ())
            .map_err(|r| anyhow::anyhow!("delete failed: {}", r.code))
    }

    /// Writes a kubeconfig pointing at this server; for controller processes.
    pub fn kubeconfig(&self, path: &std::path::Path) -> anyhow::Result<()> {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {NAMESPACE}\ncurrent-context: fake\nusers:\n- name: fake\n  user:\n    token: fake-token\n",
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
