//! The data of one call's store and the host side of the capability imports.

use std::collections::BTreeMap;
use std::time::Duration;

use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{AsContext, AsContextMut, StoreContextMut};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, Rng, WasiCtx, WasiCtxView, WasiView};

use crate::contract::model::{Context, GuestError, SourceStatus};
use crate::contract::{http, kubernetes_metrics, log, sources, state, types};

use super::allowlist::UrlAllowList;
use super::error::HostAbort;
use super::limiter::CallLimiter;
use super::network::DeniedNetworks;
use super::output::{Capture, Stream, escape_control, truncate};
use super::{CallEnv, Capability};

/// Store data of one guest call. Built fresh for every call, dropped after it.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: CallLimiter,
    env: CallEnv,
    http: GuestHttp,
    allow_list: Option<UrlAllowList>,
    state: Option<StateOverlay>,
    host_calls: u32,
    pub(crate) logs_dropped: u32,
    logs_kept: u32,
    log_bytes: u64,
    pub(crate) log_bytes_dropped: u64,
    pub(crate) capture: Capture,
    pub(crate) span: tracing::Span,
    /// The run's metric sources, for the `sources` import (empty outside a multi-source
    /// evaluation).
    sources: Vec<SourceStatus>,
}

/// The call's private copy of the autoscaler's state; committed only if the call succeeds.
pub(crate) struct StateOverlay {
    /// What the store held when the call started.
    base: BTreeMap<String, Vec<u8>>,
    pub(crate) data: BTreeMap<String, Vec<u8>>,
    pub(crate) max_bytes: u64,
    pub(crate) dirty: bool,
}

impl StateOverlay {
    fn size(&self) -> u64 {
        self.data
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum()
    }
}

/// A wall clock frozen at the run's `now-ms`: the guest sees the same instant the context
/// names, which makes a call reproducible from its inputs.
struct FrozenWallClock(Duration);

impl HostWallClock for FrozenWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        self.0
    }
}

/// A monotonic clock that never advances: guests measure nothing they were not given.
struct FrozenMonotonicClock;

impl HostMonotonicClock for FrozenMonotonicClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

impl HostState {
    pub(crate) fn new(ctx: &Context, env: CallEnv, http: GuestHttp) -> Result<Self, GuestError> {
        let capture = Capture::new(env.limits.max_captured_output_bytes);
        let now = Duration::from_millis(u64::try_from(ctx.now_ms).unwrap_or(0));
        // No preopened directories, no environment, no arguments, no sockets, no name lookups.
        let wasi = WasiCtx::builder()
            .stdout(capture.pipe(Stream::Stdout))
            .stderr(capture.pipe(Stream::Stderr))
            .wall_clock(FrozenWallClock(now))
            .monotonic_clock(FrozenMonotonicClock)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = match &env.capabilities.state {
            Some(grant) => {
                let data = match &env.state {
                    Some(store) => store.load()?,
                    None => BTreeMap::new(),
                };
                Some(StateOverlay {
                    base: data.clone(),
                    data,
                    max_bytes: grant.max_bytes,
                    dirty: false,
                })
            }
            None => None,
        };
        let allow_list = env.capabilities.http.as_ref().map(|grant| {
            UrlAllowList::new(
                &grant.allow,
                ctx.replicas.iter().filter_map(|r| r.address.clone()),
            )
        });
        Ok(HostState {
            wasi,
            table: ResourceTable::new(),
            limiter: CallLimiter::new(&env.limits),
            span: tracing::info_span!(
                "guest",
                autoscaler = %ctx.autoscaler_name,
                namespace = %ctx.autoscaler_namespace,
            ),
            env,
            http,
            allow_list,
            state,
            host_calls: 0,
            logs_dropped: 0,
            logs_kept: 0,
            log_bytes: 0,
            log_bytes_dropped: 0,
            capture,
            sources: ctx.sources.clone(),
        })
    }

    /// Counts one capability call and checks its grant; aborts the guest past the limit.
    fn enter(&mut self, capability: Capability) -> wasmtime::Result<()> {
        if !self.env.capabilities.grants(capability) {
            return Err(HostAbort::NotGranted { capability }.into());
        }
        self.count_host_call()
    }

    /// Counts one host call, granted or needing no grant; aborts the guest past the limit.
    fn count_host_call(&mut self) -> wasmtime::Result<()> {
        self.host_calls += 1;
        if self.host_calls > self.env.limits.max_host_calls {
            return Err(HostAbort::HostCallLimit(self.env.limits.max_host_calls).into());
        }
        Ok(())
    }

    /// The keys the call changed (value before, value after) and the quota, if it changed any.
    pub(crate) fn take_changes(&mut self) -> Option<(super::StateChanges, u64)> {
        let overlay = self.state.take().filter(|o| o.dirty)?;
        let mut changes = super::StateChanges::new();
        for key in overlay.base.keys().chain(overlay.data.keys()) {
            let (before, after) = (overlay.base.get(key), overlay.data.get(key));
            if before != after {
                changes.insert(key.clone(), (before.cloned(), after.cloned()));
            }
        }
        (!changes.is_empty()).then_some((changes, overlay.max_bytes))
    }

    pub(crate) fn env(&self) -> &CallEnv {
        &self.env
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

/// Needs no grant: the statuses describe the call's own run, nothing outside it.
impl sources::Host for HostState {
    fn statuses(&mut self) -> wasmtime::Result<Vec<sources::SourceStatus>> {
        self.count_host_call()?;
        Ok(self.sources.iter().map(Into::into).collect())
    }
}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        self.enter(Capability::Log)?;
        let limits = &self.env.limits;
        let max_record = usize::try_from(limits.max_log_record_bytes).unwrap_or(usize::MAX);
        let (kept, cut) = truncate(&message, max_record);
        if self.logs_kept >= limits.max_log_records
            || self.log_bytes + kept.len() as u64 > limits.max_log_bytes
        {
            self.logs_dropped += 1;
            self.log_bytes_dropped += message.len() as u64;
            return Ok(());
        }
        self.logs_kept += 1;
        self.log_bytes += kept.len() as u64;
        self.log_bytes_dropped += cut as u64;
        // Escaped, so a guest's newline or terminal sequence can never forge a host line.
        let text = escape_control(kept);
        let _entered = self.span.enter();
        match level {
            log::Level::Trace => {
                tracing::trace!(target: "wasmscaler::guest", truncated = cut, "{text}")
            }
            log::Level::Debug => {
                tracing::debug!(target: "wasmscaler::guest", truncated = cut, "{text}")
            }
            log::Level::Info => {
                tracing::info!(target: "wasmscaler::guest", truncated = cut, "{text}")
            }
            log::Level::Warn => {
                tracing::warn!(target: "wasmscaler::guest", truncated = cut, "{text}")
            }
            log::Level::Error => {
                tracing::error!(target: "wasmscaler::guest", truncated = cut, "{text}")
            }
        }
        Ok(())
    }
}

impl state::Host for HostState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        self.enter(Capability::State)?;
        Ok(self.state.as_ref().and_then(|s| s.data.get(&key).cloned()))
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), types::Error>> {
        self.enter(Capability::State)?;
        let Some(overlay) = self.state.as_mut() else {
            return Err(HostAbort::NotGranted {
                capability: Capability::State,
            }
            .into());
        };
        let old = overlay
            .data
            .get(&key)
            .map_or(0, |v| (key.len() + v.len()) as u64);
        let new_size = overlay.size() - old + (key.len() + value.len()) as u64;
        if new_size > overlay.max_bytes {
            return Ok(Err(types::Error::Denied(format!(
                "state quota of {} bytes exceeded ({new_size} bytes needed)",
                overlay.max_bytes
            ))));
        }
        overlay.data.insert(key, value);
        overlay.dirty = true;
        Ok(Ok(()))
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        self.enter(Capability::State)?;
        if let Some(overlay) = self.state.as_mut() {
            overlay.dirty |= overlay.data.remove(&key).is_some();
        }
        Ok(())
    }

    fn keys(&mut self) -> wasmtime::Result<Vec<String>> {
        self.enter(Capability::State)?;
        Ok(self
            .state
            .as_ref()
            .map(|s| s.data.keys().cloned().collect())
            .unwrap_or_default())
    }
}

impl http::Host for HostState {
    async fn get(
        &mut self,
        url: String,
        headers: Vec<(String, String)>,
    ) -> wasmtime::Result<Result<http::Response, types::Error>> {
        self.enter(Capability::Http)?;
        let (Some(grant), Some(allow_list)) = (&self.env.capabilities.http, &self.allow_list)
        else {
            return Err(HostAbort::NotGranted {
                capability: Capability::Http,
            }
            .into());
        };
        if url.len() > MAX_URL_BYTES {
            return Ok(Err(types::Error::Denied(format!(
                "a URL of {} bytes, over the cap of {MAX_URL_BYTES}",
                url.len()
            ))));
        }
        let parsed = match allow_list.check(&url) {
            Ok(parsed) => parsed,
            Err(refusal) => return Ok(Err(types::Error::Denied(refusal.to_string()))),
        };
        if let Some(responder) = &self.env.http_responder {
            let max_body = grant.max_body_bytes;
            return Ok(responder
                .get(&parsed)
                .and_then(|(status, body)| {
                    if body.len() as u64 > max_body {
                        return Err(GuestError::Denied(format!(
                            "GET {parsed}: body larger than the cap of {max_body} bytes"
                        )));
                    }
                    Ok(http::Response {
                        status,
                        headers: vec![("content-type".into(), "application/json".into())],
                        body,
                    })
                })
                .map_err(types::Error::from));
        }
        if let Err(refusal) = self.http.denied.check_literal(&parsed) {
            return Ok(Err(types::Error::Denied(refusal.to_string())));
        }
        Ok(fetch(
            &self.http.client,
            parsed,
            headers,
            Duration::from_millis(grant.timeout_ms),
            grant.max_body_bytes,
        )
        .await
        .map_err(types::Error::from))
    }
}

/// Longest URL a guest may ask for; checking it against the allow-list costs its length
/// times the patterns' length.
const MAX_URL_BYTES: usize = 8 << 10;

async fn fetch(
    client: &reqwest::Client,
    url: url::Url,
    headers: Vec<(String, String)>,
    timeout: Duration,
    max_body: u64,
) -> Result<http::Response, GuestError> {
    let mut request = client.get(url.clone()).timeout(timeout);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let unavailable = |e: reqwest::Error| GuestError::Unavailable(format!("GET {url}: {e}"));
    let mut response = request.send().await.map_err(unavailable)?;
    if response.content_length().is_some_and(|len| len > max_body) {
        return Err(GuestError::Denied(format!(
            "GET {url}: body larger than the cap of {max_body} bytes"
        )));
    }
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(unavailable)? {
        if (body.len() + chunk.len()) as u64 > max_body {
            return Err(GuestError::Denied(format!(
                "GET {url}: body larger than the cap of {max_body} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(http::Response {
        status,
        headers,
        body,
    })
}

impl kubernetes_metrics::Host for HostState {
    async fn pod_metrics(
        &mut self,
    ) -> wasmtime::Result<Result<Vec<kubernetes_metrics::PodUsage>, types::Error>> {
        self.enter(Capability::KubernetesMetrics)?;
        let Some(provider) = self.env.pod_metrics.clone() else {
            return Ok(Err(types::Error::Unavailable(
                "no Kubernetes metrics provider is configured for this autoscaler".into(),
            )));
        };
        Ok(provider
            .pod_metrics()
            .await
            .map(|pods| pods.into_iter().map(Into::into).collect())
            .map_err(Into::into))
    }
}

/// The client behind the `http` capability, and the networks it never dials.
#[derive(Clone)]
pub(crate) struct GuestHttp {
    pub(crate) client: reqwest::Client,
    pub(crate) denied: DeniedNetworks,
}

/// The client behind the `http` capability. Redirects are not followed: a redirect could lead
/// off the allow-list, so the guest sees the 3xx response and may ask again. Names resolve
/// through the denial guard, and no proxy from the environment is used: through a proxy the
/// address dialled would be the proxy's, and the guard would check nothing.
pub(crate) fn guest_http(denied: DeniedNetworks) -> Result<GuestHttp, reqwest::Error> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(denied.resolver())
        .no_proxy()
        .user_agent(concat!("wasmscaler/", env!("CARGO_PKG_VERSION")))
        .build()?;
    Ok(GuestHttp { client, denied })
}

/// The WASI interfaces whose byte-returning functions [`cap_random`] replaces.
const RANDOM_INTERFACES: [(&str, &str); 2] = [
    ("wasi:random/random@0.2.12", "get-random-bytes"),
    ("wasi:random/insecure@0.2.12", "get-insecure-random-bytes"),
];

/// Replaces WASI's `get-random-bytes` and `get-insecure-random-bytes` with versions that
/// refuse more than `maxRandomBytes` per call with a typed abort and charge one unit of fuel
/// per byte: without that, a loop of large requests spends the whole deadline in host code
/// while its fuel barely moves.
pub(crate) fn cap_random(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    for (interface, function) in RANDOM_INTERFACES {
        linker.instance(interface)?.func_wrap(
            function,
            move |mut store: StoreContextMut<'_, HostState>, (len,): (u64,)| {
                let limit = store.data().env.limits.max_random_bytes;
                if len > limit {
                    return Err(HostAbort::RandomLimit { asked: len, limit }.into());
                }
                let fuel = store.as_context().get_fuel()?;
                store.as_context_mut().set_fuel(fuel.saturating_sub(len))?;
                if fuel < len {
                    return Err(wasmtime::Trap::OutOfFuel.into());
                }
                // Both kinds come from a CSPRNG: at the capped sizes the insecure one gains
                // nothing from being cheaper.
                let mut bytes = vec![0u8; usize::try_from(len).unwrap_or(0)];
                wasmtime_wasi::thread_rng().fill_bytes(&mut bytes);
                Ok((bytes,))
            },
        )?;
    }
    linker.allow_shadowing(false);
    Ok(())
}
