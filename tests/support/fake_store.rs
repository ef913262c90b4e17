//! The fake API server's object store: pods, workloads, custom resources, Leases and Events
//! with the API server's semantics that controllers depend on:
//! - resourceVersion on every write and 409 on a stale one; `metadata.generation` bumped only
//!   by spec changes;
//! - the `/status` subresource, and `/scale` of scalable kinds (read from and written to the
//!   object, with the object's resourceVersion, as the real one);
//! - JSON merge patch and server-side apply (field manager and typed object required);
//! - list with a collection resourceVersion and label selectors (equality- and set-based);
//! - watch streams of newline-delimited `{"type","object"}` events from a given
//!   resourceVersion, ended after `timeoutSeconds`; the change log is compacted as etcd's is,
//!   and a watch from before the oldest kept change gets `410 Expired`, as the real one;
//! - Event validation (required fields, a 1 kB note), etcd's 1.5 MiB object limit and the
//!   3 MiB request limit.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// A kind the store serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kind {
    /// group/version (`v1` for the core group).
    pub gv: String,
    /// Plural, as discovery lists it.
    pub plural: String,
    /// Kind.
    pub kind: String,
    /// Whether it has a `/scale` subresource.
    pub scalable: bool,
}

impl Kind {
    fn new(gv: &str, plural: &str, kind: &str, scalable: bool) -> Self {
        Kind {
            gv: gv.into(),
            plural: plural.into(),
            kind: kind.into(),
            scalable,
        }
    }
}

/// The kinds every fake serves; scalable custom kinds are added with [`Store::serve`].
fn builtin_kinds() -> Vec<Kind> {
    vec![
        Kind::new(
            "wasmscaler.dev/v1alpha1",
            "wasmautoscalers",
            "WasmAutoscaler",
            false,
        ),
        Kind::new("coordination.k8s.io/v1", "leases", "Lease", false),
        Kind::new("events.k8s.io/v1", "events", "Event", false),
        Kind::new("v1", "pods", "Pod", false),
        Kind::new("apps/v1", "deployments", "Deployment", true),
        Kind::new("apps/v1", "statefulsets", "StatefulSet", true),
        Kind::new("apps/v1", "replicasets", "ReplicaSet", true),
        Kind::new("apps/v1", "daemonsets", "DaemonSet", false),
    ]
}

/// How many changes the log keeps (the API server's watch cache holds a bounded window, and
/// etcd compacts): a watch from before the oldest is answered `410 Expired`.
const LOG_CAPACITY: usize = 50_000;

/// A stored object's address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    /// group/version.
    pub gv: String,
    /// Plural.
    pub plural: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// One change, as a watch reports it.
#[derive(Debug, Clone)]
pub struct Change {
    version: u64,
    gv: String,
    plural: String,
    namespace: String,
    object: Value,
    /// The object's labels, for watches with a selector.
    labels: BTreeMap<String, String>,
}

/// The objects and their change log.
pub struct Store {
    kinds: Vec<Kind>,
    objects: BTreeMap<Key, Value>,
    version: u64,
    log: VecDeque<Change>,
    notify: tokio::sync::watch::Sender<u64>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            kinds: builtin_kinds(),
            objects: BTreeMap::new(),
            version: 1000,
            log: VecDeque::new(),
            notify: tokio::sync::watch::channel(1000).0,
        }
    }
}

/// Which part of an object a request addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    /// The object itself.
    Main,
    /// `/status`.
    Status,
    /// `/scale` (an `autoscaling/v1` Scale).
    Scale,
}

/// A parsed request path of a served kind.
#[derive(Debug, Clone)]
pub struct Target {
    gv: String,
    plural: String,
    kind: String,
    namespace: Option<String>,
    name: Option<String>,
    sub: Sub,
}

impl Store {
    /// Parses `/api/v1/…` or `/apis/G/V[/namespaces/NS]/PLURAL[/NAME[/status|/scale]]` for a
    /// served kind.
    pub fn parse(&self, segments: &[&str]) -> Option<Target> {
        let (gv, rest) = match segments {
            ["api", version, rest @ ..] => (version.to_string(), rest),
            ["apis", group, version, rest @ ..] => (format!("{group}/{version}"), rest),
            _ => return None,
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
            _ => (None, rest),
        };
        let (plural, name, sub) = match rest {
            [plural] => (*plural, None, Sub::Main),
            [plural, name] => (*plural, Some(name.to_string()), Sub::Main),
            [plural, name, "status"] => (*plural, Some(name.to_string()), Sub::Status),
            [plural, name, "scale"] => (*plural, Some(name.to_string()), Sub::Scale),
            _ => return None,
        };
        let kind = self
            .kinds
            .iter()
            .find(|k| k.gv == gv && k.plural == plural)?;
        if sub == Sub::Scale && !kind.scalable {
            return None;
        }
        Some(Target {
            gv,
            plural: plural.to_owned(),
            kind: kind.kind.clone(),
            namespace,
            name,
            sub,
        })
    }

    /// The target of `plural` in `gv`, for a test acting directly on the store.
    pub fn target(&self, gv: &str, plural: &str) -> Option<Target> {
        let (group, version) = gv.split_once('/').unwrap_or(("", gv));
        if group.is_empty() {
            self.parse(&["api", version, plural])
        } else {
            self.parse(&["apis", group, version, plural])
        }
    }

    /// Serves a further kind (a custom resource definition being installed).
    pub fn serve(&mut self, kind: Kind) {
        if !self.kinds.contains(&kind) {
            self.kinds.push(kind);
        }
    }

    /// The kinds served in `gv`, for discovery.
    pub fn kinds_in(&self, gv: &str) -> Vec<Kind> {
        self.kinds.iter().filter(|k| k.gv == gv).cloned().collect()
    }
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code});
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(body),
    )
        .into_response()
}

/// An API error, answered as a `Status` at the end of the request.
#[derive(Debug)]
pub struct Failure {
    /// HTTP status code.
    pub code: u16,
    reason: &'static str,
    message: String,
}

impl Failure {
    fn response(&self) -> Response {
        status(self.code, self.reason, &self.message)
    }
}

fn fail(code: u16, reason: &'static str, message: &str) -> Failure {
    Failure {
        code,
        reason,
        message: message.to_owned(),
    }
}

/// etcd's request size limit (`--max-request-bytes`, 1.5 MiB by default): a larger object is
/// refused by etcd, and the API server answers 500 with etcd's message.
const MAX_OBJECT_BYTES: usize = 1_572_864;

/// The API server's request body limit (3 MiB), answered 413 before anything else.
pub const MAX_REQUEST_BYTES: usize = 3 << 20;

fn check_size(object: &Value) -> Result<(), Failure> {
    let size = object.to_string().len();
    if size > MAX_OBJECT_BYTES {
        return Err(fail(
            500,
            "InternalError",
            "etcdserver: request is too large",
        ));
    }
    Ok(())
}

/// What the API server's `events.k8s.io/v1` validation refuses on create (422 Invalid).
fn validate_event(event: &Value) -> Result<(), Failure> {
    let text = |field: &str| event[field].as_str().unwrap_or_default();
    let mut problems = Vec::new();
    if event["eventTime"].is_null() {
        problems.push("eventTime: Required value".to_owned());
    }
    for field in [
        "reportingController",
        "reportingInstance",
        "action",
        "reason",
    ] {
        let value = text(field);
        if value.is_empty() {
            problems.push(format!("{field}: Required value"));
        } else if value.len() > 128 {
            problems.push(format!("{field}: Too long: may not be more than 128 bytes"));
        }
    }
    if text("note").len() > 1024 {
        problems.push("note: Too long: may not be more than 1024 bytes".into());
    }
    if !matches!(text("type"), "Normal" | "Warning") {
        problems.push(format!("type: Unsupported value: {:?}", text("type")));
    }
    if event["regarding"].is_null() {
        problems.push("regarding: Required value".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(fail(
            422,
            "Invalid",
            &format!("Event is invalid: {}", problems.join(", ")),
        ))
    }
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            if let Some(object) = target.as_object_mut() {
                for (k, v) in fields {
                    if v.is_null() {
                        object.remove(k);
                    } else {
                        merge_patch(object.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

impl Store {
    fn bump(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    fn record(&mut self, key: &Key, change: &str, object: Value) {
        let labels = labels_of(&object);
        self.log.push_back(Change {
            version: self.version,
            gv: key.gv.clone(),
            plural: key.plural.clone(),
            namespace: key.namespace.clone(),
            object: json!({"type": change, "object": object}),
            labels,
        });
        while self.log.len() > LOG_CAPACITY {
            self.log.pop_front();
        }
        let _ = self.notify.send(self.version);
    }

    fn with_type(t: &Target, mut object: Value) -> Value {
        object["apiVersion"] = json!(t.gv);
        object["kind"] = json!(t.kind);
        object
    }

    /// Creates an object (as a client's POST would).
    pub fn create(
        &mut self,
        t: &Target,
        namespace: &str,
        mut object: Value,
    ) -> Result<Value, Failure> {
        if t.kind == "Event" {
            validate_event(&object)?;
        }
        check_size(&object)?;
        let name = object["metadata"]["name"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| fail(422, "Invalid", "metadata.name: Required value"))?;
        let key = Key {
            gv: t.gv.clone(),
            plural: t.plural.clone(),
            namespace: namespace.to_owned(),
            name: name.clone(),
        };
        if self.objects.contains_key(&key) {
            return Err(fail(
                409,
                "AlreadyExists",
                &format!("{} \"{name}\" already exists", t.plural),
            ));
        }
        let version = self.bump();
        object = Self::with_type(t, object);
        let metadata = &mut object["metadata"];
        metadata["namespace"] = json!(namespace);
        metadata["resourceVersion"] = json!(version.to_string());
        metadata["uid"] = json!(format!("uid-{version}"));
        metadata["generation"] = json!(1);
        metadata["creationTimestamp"] = json!("2026-11-22T00:00:00Z");
        self.objects.insert(key.clone(), object.clone());
        self.record(&key, "ADDED", object.clone());
        Ok(object)
    }

    fn key(t: &Target, namespace: &str) -> Option<Key> {
        Some(Key {
            gv: t.gv.clone(),
            plural: t.plural.clone(),
            namespace: namespace.to_owned(),
            name: t.name.clone()?,
        })
    }

    /// Writes `updated` over the stored object at `key`, checking `expected_version`,
    /// bumping the generation when the spec changed.
    fn write(
        &mut self,
        t: &Target,
        key: &Key,
        mut updated: Value,
        expected_version: Option<&str>,
    ) -> Result<Value, Failure> {
        let Some(current) = self.objects.get(key) else {
            return Err(fail(
                404,
                "NotFound",
                &format!("{} \"{}\" not found", t.plural, key.name),
            ));
        };
        let current_version = current["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default();
        if let Some(expected) = expected_version
            && expected != current_version
        {
            return Err(fail(
                409,
                "Conflict",
                &format!(
                    "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                    t.plural, key.name
                ),
            ));
        }
        let generation = current["metadata"]["generation"].as_i64().unwrap_or(1);
        let spec_changed = current.get("spec") != updated.get("spec");
        for field in ["uid", "creationTimestamp", "namespace", "name"] {
            updated["metadata"][field] = current["metadata"][field].clone();
        }
        check_size(&updated)?;
        let version = self.bump();
        updated = Self::with_type(t, updated);
        updated["metadata"]["resourceVersion"] = json!(version.to_string());
        updated["metadata"]["generation"] = json!(generation + i64::from(spec_changed));
        self.objects.insert(key.clone(), updated.clone());
        self.record(key, "MODIFIED", updated.clone());
        Ok(updated)
    }

    /// The stored object at `key`.
    pub fn get(&self, key: &Key) -> Option<Value> {
        self.objects.get(key).cloned()
    }

    /// How many stored objects of `plural` satisfy `test`.
    pub fn count(&self, plural: &str, test: impl Fn(&Value) -> bool) -> usize {
        self.objects
            .iter()
            .filter(|(k, v)| k.plural == plural && test(v))
            .count()
    }

    /// Every stored object of `plural`.
    pub fn all(&self, plural: &str) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|(k, _)| k.plural == plural)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Merge-patches the object at `key` (spec or metadata; a test acting as a user).
    pub fn patch(&mut self, t: &Target, key: &Key, patch: &Value) -> Result<Value, Failure> {
        let mut updated = self
            .get(key)
            .ok_or_else(|| fail(404, "NotFound", "not found"))?;
        merge_patch(&mut updated, patch);
        self.write(t, key, updated, None)
    }

    /// Deletes the object at `key`.
    pub fn delete(&mut self, t: &Target, key: &Key) -> Result<Value, Failure> {
        let Some(mut object) = self.objects.remove(key) else {
            return Err(fail(
                404,
                "NotFound",
                &format!("{} \"{}\" not found", t.plural, key.name),
            ));
        };
        let version = self.bump();
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        self.record(key, "DELETED", object.clone());
        Ok(object)
    }

    fn list(&self, t: &Target, selector: &Selector) -> Value {
        let items: Vec<Value> = self
            .objects
            .iter()
            .filter(|(k, v)| {
                k.gv == t.gv
                    && k.plural == t.plural
                    && t.namespace.as_ref().is_none_or(|ns| *ns == k.namespace)
                    && selector.matches(&labels_of(v))
            })
            .map(|(_, v)| v.clone())
            .collect();
        json!({"apiVersion": t.gv, "kind": format!("{}List", t.kind),
            "metadata": {"resourceVersion": self.version.to_string()}, "items": items})
    }

    /// The changes of `t`'s kind after `after`, and the newest version; `Err` when `after` is
    /// older than the log keeps (the client must list again).
    fn changes_after(
        &self,
        t: &Target,
        selector: &Selector,
        after: u64,
    ) -> Result<(Vec<Value>, u64), u64> {
        let oldest = self.log.front().map_or(self.version, |c| c.version);
        if after + 1 < oldest {
            return Err(oldest);
        }
        let start = self.log.partition_point(|c| c.version <= after);
        let changes = self
            .log
            .range(start..)
            .filter(|c| {
                c.gv == t.gv
                    && c.plural == t.plural
                    && t.namespace.as_ref().is_none_or(|ns| *ns == c.namespace)
                    && selector.matches(&c.labels)
            })
            .map(|c| c.object.clone())
            .collect();
        Ok((changes, self.version))
    }

    /// The Scale of the scalable object at `key`: replicas from `spec.replicas`, the selector
    /// from `status.selector` (custom resources) or `spec.selector` (apps kinds), and the
    /// object's own resourceVersion.
    fn scale(&self, key: &Key) -> Option<Value> {
        let object = self.objects.get(key)?;
        let selector = match object["status"]["selector"].as_str() {
            Some(text) => text.to_owned(),
            None => object["spec"]["selector"]["matchLabels"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(","),
        };
        let replicas = object["spec"]["replicas"].as_u64().unwrap_or(1);
        Some(json!({
            "apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": key.name, "namespace": key.namespace,
                "resourceVersion": object["metadata"]["resourceVersion"].clone(),
                "uid": object["metadata"]["uid"].clone()},
            "spec": {"replicas": replicas},
            "status": {"replicas": object["status"]["replicas"].as_u64().unwrap_or(replicas),
                "selector": selector},
        }))
    }

    /// Sets `spec.replicas` of the scalable object at `key` (a write to its `/scale`), with the
    /// caller's resourceVersion precondition.
    pub fn write_scale(
        &mut self,
        t: &Target,
        key: &Key,
        replicas: Option<u64>,
        expected_version: Option<&str>,
    ) -> Result<Value, Failure> {
        let mut updated = self.get(key).ok_or_else(|| {
            fail(
                404,
                "NotFound",
                &format!("{} \"{}\" not found", t.plural, key.name),
            )
        })?;
        if let Some(replicas) = replicas {
            updated["spec"]["replicas"] = json!(replicas);
        }
        self.write(t, key, updated, expected_version)?;
        self.scale(key)
            .ok_or_else(|| fail(500, "InternalError", "the object went away"))
    }
}

/// The labels of an object.
fn labels_of(object: &Value) -> BTreeMap<String, String> {
    object["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
        .collect()
}

/// A parsed label selector (`a=b,c!=d,e in (f,g),h notin (i),j,!k`): the host's parser,
/// whose grammar its own unit tests hold to the API server's, and kube's matcher.
#[derive(Debug, Default, Clone)]
pub struct Selector(kube::core::Selector);

impl Selector {
    /// Parses a selector; `Err` says what the API server would refuse (400).
    pub fn parse(text: &str) -> Result<Selector, String> {
        wasmscaler::targets::kubernetes::selector::parse(text)
            .map(Selector)
            .map_err(|e| e.to_string())
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        kube::core::SelectorExt::matches(&self.0, labels)
    }
}

fn query(uri: &axum::http::Uri, name: &str) -> Option<String> {
    url::form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Serves one request for a kind of the store.
pub fn handle(
    store: &std::sync::Arc<std::sync::Mutex<super::fake_kube::World>>,
    t: Target,
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    if body.len() > MAX_REQUEST_BYTES {
        return status(
            413,
            "RequestEntityTooLarge",
            &format!("Request entity too large: limit is {MAX_REQUEST_BYTES}"),
        );
    }
    let selector = match Selector::parse(&query(uri, "labelSelector").unwrap_or_default()) {
        Ok(selector) => selector,
        Err(message) => return status(400, "BadRequest", &message),
    };
    let Ok(mut world) = store.lock() else {
        return status(500, "InternalError", "poisoned");
    };
    let s = world.store();
    let body_json = || -> Result<Value, Failure> {
        serde_json::from_slice(body).map_err(|e| fail(400, "BadRequest", &e.to_string()))
    };
    let not_found = |t: &Target, name: &str| {
        fail(
            404,
            "NotFound",
            &format!("{} \"{name}\" not found", t.plural),
        )
    };
    let result = match (method, &t.name, &t.namespace) {
        (&Method::GET, None, _) => {
            let watch = matches!(query(uri, "watch").as_deref(), Some("true" | "1"));
            if !watch {
                return axum::Json(s.list(&t, &selector)).into_response();
            }
            let from: u64 = query(uri, "resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(s.version);
            let timeout = query(uri, "timeoutSeconds")
                .and_then(|v| v.parse().ok())
                .unwrap_or(60u64);
            let receiver = s.notify.subscribe();
            drop(world);
            return watch_response(
                store.clone(),
                t,
                selector,
                from,
                Duration::from_secs(timeout),
                receiver,
            );
        }
        (&Method::POST, None, Some(ns)) if t.sub == Sub::Main => body_json()
            .and_then(|o| s.create(&t, ns, o))
            .map(|o| (201, o)),
        (m, Some(name), Some(ns)) => {
            let Some(key) = Store::key(&t, ns) else {
                return status(404, "NotFound", "not found");
            };
            match (m.clone(), t.sub) {
                (Method::GET, Sub::Scale) => s
                    .scale(&key)
                    .map(|o| (200, o))
                    .ok_or_else(|| not_found(&t, name)),
                (Method::PATCH, Sub::Scale) => body_json().and_then(|patch| {
                    s.write_scale(
                        &t,
                        &key,
                        patch["spec"]["replicas"].as_u64(),
                        patch["metadata"]["resourceVersion"].as_str(),
                    )
                    .map(|o| (200, o))
                }),
                (_, Sub::Scale) => Err(fail(405, "MethodNotAllowed", "not supported by the fake")),
                (Method::GET, _) => s
                    .get(&key)
                    .map(|o| (200, o))
                    .ok_or_else(|| not_found(&t, name)),
                (Method::PUT, sub) => body_json().and_then(|mut updated| {
                    let expected = updated["metadata"]["resourceVersion"]
                        .as_str()
                        .map(str::to_owned);
                    if sub == Sub::Status {
                        // PUT on /status changes only the status.
                        let mut current = s.get(&key).unwrap_or_default();
                        current["status"] = updated["status"].take();
                        updated = current;
                    } else if let Some(current) = s.get(&key) {
                        updated["status"] = current["status"].clone();
                    }
                    s.write(&t, &key, updated, expected.as_deref())
                        .map(|o| (200, o))
                }),
                (Method::PATCH, sub) => {
                    let content_type = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    // An apply patch is YAML; kube-rs sends its JSON subset, as the fake
                    // parses it.
                    let patch: Value = match body_json() {
                        Ok(p) => p,
                        Err(r) => return r.response(),
                    };
                    // As the API server: apply needs a field manager and a typed object.
                    if content_type.contains("apply-patch") {
                        if query(uri, "fieldManager").is_none_or(|m| m.is_empty()) {
                            return status(
                                400,
                                "BadRequest",
                                "PATCH requests with apply content type require fieldManager",
                            );
                        }
                        if patch["apiVersion"].is_null() || patch["kind"].is_null() {
                            return status(
                                400,
                                "BadRequest",
                                "invalid object type: apiVersion and kind are required",
                            );
                        }
                    }
                    let Some(mut updated) = s.get(&key) else {
                        return not_found(&t, name).response();
                    };
                    if sub == Sub::Status {
                        // Server-side apply by the status's only manager: its fields replace
                        // the status wholesale; a merge patch merges.
                        if content_type.contains("apply-patch") {
                            updated["status"] = patch["status"].clone();
                        } else {
                            merge_patch(&mut updated["status"], &patch["status"]);
                        }
                    } else {
                        let mut patch = patch;
                        if let Some(o) = patch.as_object_mut() {
                            o.remove("status");
                        }
                        merge_patch(&mut updated, &patch);
                    }
                    // A resourceVersion in a patch is a precondition.
                    let expected = patch_version(body);
                    s.write(&t, &key, updated, expected.as_deref())
                        .map(|o| (200, o))
                }
                (Method::DELETE, Sub::Main) => s.delete(&t, &key).map(|o| (200, o)),
                _ => Err(fail(405, "MethodNotAllowed", "not supported by the fake")),
            }
        }
        _ => Err(fail(405, "MethodNotAllowed", "not supported by the fake")),
    };
    match result {
        Ok((code, object)) => (
            StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
            axum::Json(object),
        )
            .into_response(),
        Err(failure) => failure.response(),
    }
}

/// The `metadata.resourceVersion` a patch body carries, if any.
fn patch_version(body: &Bytes) -> Option<String> {
    let patch: Value = serde_json::from_slice(body).ok()?;
    patch["metadata"]["resourceVersion"]
        .as_str()
        .map(str::to_owned)
}

fn watch_response(
    store: std::sync::Arc<std::sync::Mutex<super::fake_kube::World>>,
    t: Target,
    selector: Selector,
    from: u64,
    timeout: Duration,
    receiver: tokio::sync::watch::Receiver<u64>,
) -> Response {
    let deadline = tokio::time::Instant::now() + timeout;
    let stream = futures::stream::unfold(
        (from, receiver, false),
        move |(after, mut receiver, mut done)| {
            let store = store.clone();
            let t = t.clone();
            let selector = selector.clone();
            async move {
                loop {
                    if done {
                        return None;
                    }
                    let found = match store.lock() {
                        Ok(mut w) => w.store().changes_after(&t, &selector, after),
                        Err(_) => return None,
                    };
                    let (changes, now) = match found {
                        Ok(found) => found,
                        Err(oldest) => {
                            // As the API server: the stream carries one ERROR event and ends.
                            let expired = json!({"type": "ERROR", "object": {
                                "kind": "Status", "apiVersion": "v1", "metadata": {},
                                "status": "Failure", "reason": "Expired", "code": 410,
                                "message": format!("too old resource version: {after} ({oldest})")}});
                            return Some((
                                Ok::<_, std::convert::Infallible>(Bytes::from(format!(
                                    "{expired}\n"
                                ))),
                                (after, receiver, true),
                            ));
                        }
                    };
                    if !changes.is_empty() {
                        let mut chunk = String::new();
                        for change in changes {
                            chunk.push_str(&change.to_string());
                            chunk.push('\n');
                        }
                        return Some((Ok(Bytes::from(chunk)), (now, receiver, done)));
                    }
                    tokio::select! {
                        changed = receiver.changed() => {
                            if changed.is_err() {
                                done = true;
                            }
                        }
                        _ = tokio::time::sleep_until(deadline) => done = true,
                    }
                }
            }
        },
    );
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| status(500, "InternalError", "response"))
}
