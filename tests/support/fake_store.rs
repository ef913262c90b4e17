//! The fake API server's generic object store: custom resources, Leases and Events with the
//! API server's semantics that controllers depend on — resourceVersion on every write and
//! 409 on a stale one, `metadata.generation` bumped only by spec changes, a `/status`
//! subresource, JSON merge patch and server-side apply (field manager and typed object
//! required), list with a collection resourceVersion, Event validation (required fields, a
//! 1 kB note), etcd's 1.5 MiB object limit and the 3 MiB request limit, and watch streams (newline-delimited `{"type","object"}` events from a
//! given resourceVersion, ended after `timeoutSeconds`).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The kinds the store serves: (group/version, plural, kind).
pub const KINDS: [(&str, &str, &str); 3] = [
    (
        "wasmscaler.dev/v1alpha1",
        "wasmautoscalers",
        "WasmAutoscaler",
    ),
    ("coordination.k8s.io/v1", "leases", "Lease"),
    ("events.k8s.io/v1", "events", "Event"),
];

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
    kind: &'static str,
    object: Value,
}

/// The objects and their change log.
pub struct Store {
    objects: BTreeMap<Key, Value>,
    version: u64,
    log: Vec<Change>,
    notify: tokio::sync::watch::Sender<u64>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            objects: BTreeMap::new(),
            version: 1000,
            log: Vec::new(),
            notify: tokio::sync::watch::channel(1000).0,
        }
    }
}

/// A parsed request path of a served kind.
#[derive(Debug, Clone)]
pub struct Target {
    gv: String,
    plural: String,
    kind: &'static str,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

impl Target {
    /// Parses `/apis/G/V[/namespaces/NS]/PLURAL[/NAME[/status]]` for a served kind.
    pub fn parse(segments: &[&str]) -> Option<Target> {
        let ["apis", group, version, rest @ ..] = segments else {
            return None;
        };
        let gv = format!("{group}/{version}");
        let (namespace, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
            _ => (None, rest),
        };
        let (plural, name, status) = match rest {
            [plural] => (*plural, None, false),
            [plural, name] => (*plural, Some(name.to_string()), false),
            [plural, name, "status"] => (*plural, Some(name.to_string()), true),
            _ => return None,
        };
        let (_, _, kind) = KINDS.iter().find(|(g, p, _)| *g == gv && *p == plural)?;
        Some(Target {
            gv,
            plural: plural.to_owned(),
            kind,
            namespace,
            name,
            status,
        })
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

    fn record(&mut self, kind: &'static str, key: &Key, change: &str, object: Value) {
        self.log.push(Change {
            version: self.version,
            gv: key.gv.clone(),
            plural: key.plural.clone(),
            namespace: key.namespace.clone(),
            kind,
            object: json!({"type": change, "object": object}),
        });
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
        self.record(t.kind, &key, "ADDED", object.clone());
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
        self.record(t.kind, key, "MODIFIED", updated.clone());
        Ok(updated)
    }

    /// The stored object at `key`.
    pub fn get(&self, key: &Key) -> Option<Value> {
        self.objects.get(key).cloned()
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
        self.record(t.kind, key, "DELETED", object.clone());
        Ok(object)
    }

    fn list(&self, t: &Target) -> Value {
        let items: Vec<Value> = self
            .objects
            .iter()
            .filter(|(k, _)| {
                k.gv == t.gv
                    && k.plural == t.plural
                    && t.namespace.as_ref().is_none_or(|ns| *ns == k.namespace)
            })
            .map(|(_, v)| v.clone())
            .collect();
        json!({"apiVersion": t.gv, "kind": format!("{}List", t.kind),
            "metadata": {"resourceVersion": self.version.to_string()}, "items": items})
    }

    fn changes_after(&self, t: &Target, after: u64) -> (Vec<Value>, u64) {
        let changes = self
            .log
            .iter()
            .filter(|c| {
                c.version > after
                    && c.gv == t.gv
                    && c.plural == t.plural
                    && t.namespace.as_ref().is_none_or(|ns| *ns == c.namespace)
            })
            .inspect(|c| debug_assert!(!c.kind.is_empty()))
            .map(|c| c.object.clone())
            .collect();
        (changes, self.version)
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
    let Ok(mut world) = store.lock() else {
        return status(500, "InternalError", "poisoned");
    };
    let s = world.store();
    let body_json = || -> Result<Value, Failure> {
        serde_json::from_slice(body).map_err(|e| fail(400, "BadRequest", &e.to_string()))
    };
    let result = match (method, &t.name, &t.namespace) {
        (&Method::GET, None, _) => {
            let watch = matches!(query(uri, "watch").as_deref(), Some("true" | "1"));
            if !watch {
                return axum::Json(s.list(&t)).into_response();
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
                from,
                Duration::from_secs(timeout),
                receiver,
            );
        }
        (&Method::POST, None, Some(ns)) => body_json()
            .and_then(|o| s.create(&t, ns, o))
            .map(|o| (201, o)),
        (m, Some(_), Some(ns)) => {
            let Some(key) = Store::key(&t, ns) else {
                return status(404, "NotFound", "not found");
            };
            match *m {
                Method::GET => s.get(&key).map(|o| (200, o)).ok_or_else(|| {
                    fail(
                        404,
                        "NotFound",
                        &format!("{} \"{}\" not found", t.plural, key.name),
                    )
                }),
                Method::PUT => body_json().and_then(|mut updated| {
                    let expected = updated["metadata"]["resourceVersion"]
                        .as_str()
                        .map(str::to_owned);
                    if t.status {
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
                Method::PATCH => {
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
                        return status(
                            404,
                            "NotFound",
                            &format!("{} \"{}\" not found", t.plural, key.name),
                        );
                    };
                    if t.status {
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
                    s.write(&t, &key, updated, None).map(|o| (200, o))
                }
                Method::DELETE => s.delete(&t, &key).map(|o| (200, o)),
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

fn watch_response(
    store: std::sync::Arc<std::sync::Mutex<super::fake_kube::World>>,
    t: Target,
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
            async move {
                loop {
                    if done {
                        return None;
                    }
                    let (changes, now) = match store.lock() {
                        Ok(mut w) => w.store().changes_after(&t, after),
                        Err(_) => return None,
                    };
                    if !changes.is_empty() {
                        let mut chunk = String::new();
                        for change in changes {
                            chunk.push_str(&change.to_string());
                            chunk.push('\n');
                        }
                        return Some((
                            Ok::<_, std::convert::Infallible>(Bytes::from(chunk)),
                            (now, receiver, done),
                        ));
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
