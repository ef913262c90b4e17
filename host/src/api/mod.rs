//! The REST API (axum): health, readiness, Prometheus metrics, autoscaler status, and the
//! Custom Pod Autoscaler's dry runs.
//!
//! Health, readiness, metrics and status reads are open. Everything else needs
//! `Authorization: Bearer TOKEN` (with no token configured it is refused): uploads, real
//! runs, and dry runs unless [`ApiLimits::open_dry_runs`] opens them. The token is checked
//! from the headers by a middleware, before any handler reads a body, so an anonymous client
//! never makes the host buffer an upload. Dry runs share a small quota (429 past it), so they
//! can never take the instance slots scheduled runs need. Errors are JSON:
//! `{"error": "...", "code": 401}`. Request bodies are capped and must arrive in time.

mod limits;
pub mod metrics;
mod serve;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Semaphore;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;

use crate::contract::model::Sample;
use crate::engine::{Autoscaler, Fleet};
use crate::policies::{PolicyError, PolicyStore};
pub use limits::ApiLimits;
pub use metrics::Metrics;
pub use serve::{TlsFiles, serve};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 << 10;

/// Who refers to an uploaded policy beyond the autoscalers this process runs: in cluster
/// mode every `WasmAutoscaler` naming it, whichever replica runs it, so a delete through any
/// replica sees the same answer.
pub(crate) trait PolicyUsers: Send + Sync {
    /// The users of upload `name`; an error refuses the delete.
    fn users<'a>(
        &'a self,
        name: &'a str,
    ) -> crate::sandbox::BoxFuture<'a, Result<Vec<String>, String>>;
}

/// What the handlers share.
pub struct ApiState {
    engine: Arc<Fleet>,
    metrics: Arc<Metrics>,
    token: Option<String>,
    ready: AtomicBool,
    policies: Option<Arc<PolicyStore>>,
    policy_users: Option<Arc<dyn PolicyUsers>>,
    limits: ApiLimits,
    dry_runs: Arc<Semaphore>,
}

impl ApiState {
    /// State for `engine`; `token` guards the mutating endpoints (none: they are refused).
    pub fn new(engine: Arc<Fleet>, metrics: Arc<Metrics>, token: Option<String>) -> Self {
        ApiState {
            engine,
            metrics,
            token: token.filter(|t| !t.is_empty()),
            ready: AtomicBool::new(true),
            policies: None,
            policy_users: None,
            dry_runs: Arc::new(Semaphore::new(ApiLimits::default().max_concurrent_dry_runs)),
            limits: ApiLimits::default(),
        }
    }

    /// Serves under `limits` instead of the defaults.
    pub fn with_limits(mut self, limits: ApiLimits) -> Self {
        self.dry_runs = Arc::new(Semaphore::new(limits.max_concurrent_dry_runs.max(1)));
        self.limits = limits;
        self
    }

    /// The limits it serves under.
    pub fn limits(&self) -> &ApiLimits {
        &self.limits
    }

    /// Serves uploads into `store` under `/api/v1/policies`.
    pub fn with_policies(mut self, store: Arc<PolicyStore>) -> Self {
        self.policies = Some(store);
        self
    }

    /// Also asks `users` before deleting an upload.
    // Used by the `kubernetes` feature's code only.
    #[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
    pub(crate) fn with_policy_users(mut self, users: Arc<dyn PolicyUsers>) -> Self {
        self.policy_users = Some(users);
        self
    }

    /// Marks the host as shutting down: `/readyz` answers 503 from now on.
    pub(crate) fn set_not_ready(&self) {
        self.ready.store(false, Ordering::Relaxed);
    }
}

/// The routes.
pub fn router(state: Arc<ApiState>) -> Router {
    let upload_limit = state.policies.as_ref().map_or(MAX_BODY_BYTES, |p| {
        usize::try_from(p.max_bytes())
            .unwrap_or(usize::MAX)
            .saturating_add(1)
    });
    let open = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(prometheus))
        .route("/api/v1/autoscalers", get(list))
        .route("/api/v1/autoscalers/{name}", get(status))
        // Cluster mode: autoscalers are `namespace/name`.
        .route(
            "/api/v1/namespaces/{namespace}/autoscalers/{name}",
            get(status),
        )
        .route("/api/v1/policies", get(list_policies))
        .route("/api/v1/policies/{name}", get(get_policy));
    let runs = Router::new()
        .route("/api/v1/autoscalers/{name}/metrics", get(dry_run_metrics))
        .route("/api/v1/autoscalers/{name}/evaluation", post(evaluation))
        .route(
            "/api/v1/namespaces/{namespace}/autoscalers/{name}/metrics",
            get(dry_run_metrics),
        )
        .route(
            "/api/v1/namespaces/{namespace}/autoscalers/{name}/evaluation",
            post(evaluation),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), guard_runs));
    let uploads = Router::new()
        .route(
            "/api/v1/policies/{name}",
            axum::routing::delete(delete_policy)
                .put(put_policy)
                .layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), guard_token));
    let limits = &state.limits;
    open.merge(runs)
        .merge(uploads)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(RequestBodyTimeoutLayer::new(limits.body_read_timeout()))
        .layer(GlobalConcurrencyLimitLayer::new(
            limits.max_concurrent_requests.max(1),
        ))
        .with_state(state)
}

/// Lets a request through only with the token; runs before any body is read.
async fn guard_token(State(state): State<Arc<ApiState>>, request: Request, next: Next) -> Response {
    match authorize(&state, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

/// Runs and dry runs: a real run needs the token; a dry run needs it unless dry runs are
/// open, and takes one of the dry-run slots for as long as it is handled.
async fn guard_runs(State(state): State<Arc<ApiState>>, request: Request, next: Next) -> Response {
    let dry_run = request.method() == axum::http::Method::GET
        || request
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|pair| pair == "dry_run=true"));
    if !(dry_run && state.limits.open_dry_runs)
        && let Err(e) = authorize(&state, request.headers())
    {
        return e.into_response();
    }
    if !dry_run {
        return next.run(request).await;
    }
    let Ok(_slot) = state.dry_runs.clone().try_acquire_owned() else {
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "all {} dry-run slots are in use; try again shortly",
                state.limits.max_concurrent_dry_runs
            ),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return response;
    };
    next.run(request).await
}

/// An error answer: `{"error": message, "code": status}`.
#[derive(Debug)]
struct ApiError {
    code: StatusCode,
    message: String,
}

impl ApiError {
    fn new(code: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.message, "code": self.code.as_u16() });
        (self.code, Json(body)).into_response()
    }
}

fn error(code: StatusCode, message: &str) -> Response {
    ApiError::new(code, message).into_response()
}

fn find(state: &ApiState, name: &str) -> Result<Arc<Autoscaler>, ApiError> {
    state.engine.find(name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no autoscaler named {name:?}"),
        )
    })
}

/// An autoscaler's key from the path: `NAME`, or `NAMESPACE/NAME` on the namespaced routes.
struct AutoscalerKey(String);

impl<'de> Deserialize<'de> for AutoscalerKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Params {
            namespace: Option<String>,
            name: String,
        }
        let p = Params::deserialize(d)?;
        Ok(AutoscalerKey(match p.namespace {
            Some(namespace) => format!("{namespace}/{}", p.name),
            None => p.name,
        }))
    }
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timings.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorize(state: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &state.token else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "no API token is configured, so endpoints that can scale are disabled",
        ));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing bearer token",
        )),
        Some(token) if same(token.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::new(StatusCode::FORBIDDEN, "wrong bearer token")),
    }
}

async fn readyz(State(state): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    if state.ready.load(Ordering::Relaxed) {
        Ok("ok".into_response())
    } else {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down",
        ))
    }
}

async fn prometheus(State(state): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    let text = state
        .metrics
        .encode()
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics"))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

fn summary(a: &Autoscaler) -> serde_json::Value {
    let spec = a.spec();
    json!({
        "name": spec.name,
        "namespace": spec.namespace,
        "target": a.target().identity(),
        "minReplicas": spec.scaling.min_replicas,
        "maxReplicas": spec.scaling.max_replicas,
        "interval": spec.scaling.interval,
        "paused": spec.scaling.paused,
        "dryRun": spec.scaling.dry_run,
        "lastRun": a.records().last(),
    })
}

async fn list(State(state): State<Arc<ApiState>>) -> Response {
    let mut all: Vec<_> = state
        .engine
        .autoscalers()
        .iter()
        .map(|a| summary(a))
        .collect();
    all.extend(
        state
            .engine
            .failed()
            .into_iter()
            .map(|(name, error)| json!({ "name": name, "failed": error })),
    );
    Json(all).into_response()
}

async fn status(
    State(state): State<Arc<ApiState>>,
    Path(key): Path<AutoscalerKey>,
) -> Result<Response, ApiError> {
    let autoscaler = find(&state, &key.0)?;
    let mut body = summary(&autoscaler);
    body["engineState"] = json!(autoscaler.engine_state().await);
    body["records"] = json!(autoscaler.records());
    Ok(Json(body).into_response())
}

#[derive(Debug, Deserialize)]
struct DryRun {
    #[serde(default)]
    dry_run: bool,
}

/// CPA's `GET /api/v1/metrics?dry_run=true`: gather once and return the samples, never
/// writing to the target or the guest's state.
async fn dry_run_metrics(
    State(state): State<Arc<ApiState>>,
    Path(key): Path<AutoscalerKey>,
) -> Result<Response, ApiError> {
    let autoscaler = find(&state, &key.0)?;
    let samples = autoscaler
        .gather_preview()
        .await
        .map_err(|failure| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, failure.to_string()))?;
    Ok(Json(json!({ "autoscaler": key.0, "samples": samples })).into_response())
}

/// Optional body of an evaluation: samples to evaluate instead of gathering.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EvaluationBody {
    samples: Vec<Sample>,
}

/// CPA's `POST /api/v1/evaluation?dry_run=true`: the whole pipeline without writing, on
/// gathered samples or on `{"samples": [...]}` from the body; without `dry_run=true` a real
/// run that may scale.
async fn evaluation(
    State(state): State<Arc<ApiState>>,
    Path(key): Path<AutoscalerKey>,
    Query(query): Query<DryRun>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body =
        body.map_err(|rejection| ApiError::new(rejection.status(), rejection.body_text()))?;
    let autoscaler = find(&state, &key.0)?;
    let given = if body.is_empty() {
        None
    } else {
        let parsed = serde_json::from_slice::<EvaluationBody>(&body)
            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("body: {e}")))?;
        Some(parsed.samples)
    };
    let record = if query.dry_run {
        autoscaler.preview(given).await
    } else if given.is_some() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "provided samples are only accepted with dry_run=true",
        ));
    } else {
        // `guard_runs` has checked the token.
        autoscaler.run_once().await
    };
    if record.error.is_some() && record.decision.is_none() && !record.fallback {
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(json!(record))).into_response());
    }
    Ok(Json(record).into_response())
}

fn store(state: &ApiState) -> Result<&Arc<PolicyStore>, ApiError> {
    state
        .policies
        .as_ref()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "this host has no policy store"))
}

impl From<PolicyError> for ApiError {
    fn from(e: PolicyError) -> Self {
        let code = match &e {
            PolicyError::InvalidName(_) | PolicyError::Invalid(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            PolicyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            PolicyError::NotFound(_) => StatusCode::NOT_FOUND,
            PolicyError::InUse { .. } => StatusCode::CONFLICT,
            // As Kubernetes answers a request over a ResourceQuota.
            PolicyError::Quota(_) => StatusCode::FORBIDDEN,
            PolicyError::UsersUnknown { .. } => StatusCode::SERVICE_UNAVAILABLE,
            PolicyError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match &e {
            PolicyError::Invalid(sandbox) => format!("policy rejected: {}", sandbox.summary()),
            other => other.to_string(),
        };
        ApiError::new(code, message)
    }
}

async fn list_policies(State(state): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    Ok(Json(store(&state)?.list()?).into_response())
}

async fn get_policy(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(store(&state)?.get(&name)?).into_response())
}

/// `PUT /api/v1/policies/NAME` with the `.wasm` as body: validated, then stored.
async fn put_policy(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    // `guard_token` has checked the token before the body was read.
    let store = store(&state)?;
    let body = body.map_err(|r| ApiError::new(r.status(), r.body_text()))?;
    let now = (crate::engine::system_clock())();
    let record = store.put(&name, body.to_vec(), now).await?;
    tracing::info!(policy = %record.name, sha256 = %record.sha256, "policy uploaded");
    Ok((StatusCode::CREATED, Json(record)).into_response())
}

/// `DELETE /api/v1/policies/NAME`: refused (409) while an autoscaler runs its content or
/// (cluster mode) any `WasmAutoscaler` names it.
async fn delete_policy(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    // `guard_token` has checked the token.
    let store = store(&state)?;
    let record = store.get(&name)?;
    let mut users: Vec<String> = state
        .engine
        .autoscalers()
        .iter()
        .filter(|a| a.guest_digests().contains(&record.sha256))
        .map(|a| a.spec().name.clone())
        .collect();
    if let Some(provider) = &state.policy_users {
        let named = provider
            .users(&name)
            .await
            .map_err(|why| PolicyError::UsersUnknown {
                name: name.clone(),
                why,
            })?;
        users.extend(named);
    }
    users.sort();
    users.dedup();
    store.delete(&name, &users)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
