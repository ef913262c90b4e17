//! Helpers shared by the integration tests: building guests from source, fixtures, and a
//! small real HTTP server for guests that poll endpoints.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Context as _, bail};

pub mod aws;
pub mod bombs;
pub mod chart;
pub mod daemons;
pub mod fake_kube;
pub mod fake_store;
pub mod registry;

/// Builds the cpu-target guest written in `language` (`js`, `py`, `c`: its
/// `guests/cpu-target-LANG/build.sh`, which uses the pinned toolchains of
/// tests/toolchains/install.sh; `wat`: the component text parsed here), once per test process.
/// The C guest's core module is wrapped into a component here, with `wit-component` and the
/// WASI preview 1 reactor adapter of wasmtime's release.
pub fn build_language_guest(language: &str) -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .map_err(|_| anyhow::anyhow!("guest build lock poisoned"))?;
    if let Some(path) = built.get(language) {
        return Ok(path.clone());
    }
    let dir = repo_root()
        .join("guests")
        .join(format!("cpu-target-{language}"));
    std::fs::create_dir_all(guest_target_dir())?;
    let out = guest_target_dir().join(format!("cpu_target_{language}.wasm"));
    if language == "wat" {
        let source = dir.join("cpu-target.wat");
        let bytes = wat::parse_file(&source).with_context(|| source.display().to_string())?;
        std::fs::write(&out, bytes)?;
    } else {
        let core = language == "c";
        let built_file = if core {
            guest_target_dir().join("cpu_target_c.core.wasm")
        } else {
            out.clone()
        };
        toolchains_ready()?;
        let output = Command::new("bash")
            .arg(dir.join("build.sh"))
            .args(core.then_some("--core"))
            .arg(&built_file)
            .output()
            .with_context(|| format!("running {}/build.sh", dir.display()))?;
        if !output.status.success() {
            bail!(
                "building the {language} guest failed (toolchains: bash tests/toolchains/install.sh):\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        if core {
            std::fs::write(&out, wrap_core_module(&std::fs::read(&built_file)?)?)?;
        }
    }
    built.insert(language.to_owned(), out.clone());
    Ok(out)
}

/// Wraps a core module that carries its component type (as the C bindings embed it) into a
/// component, as `wasmscaler componentize` does.
pub fn wrap_core_module(core: &[u8]) -> anyhow::Result<Vec<u8>> {
    Ok(wasmscaler::sandbox::component_from_core_module(core)?)
}

/// The digest `guests/cpu-target-c/regen.sh` records for the WIT in `dir`: every file
/// (symlinks followed), sorted by its `./`-relative path, as the path on one line and then
/// its bytes.
pub fn wit_digest(dir: &Path) -> anyhow::Result<String> {
    fn walk(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) -> anyhow::Result<()> {
        for entry in std::fs::read_dir(dir).with_context(|| dir.display().to_string())? {
            let path = entry?.path();
            // `metadata` follows symlinks, as `find -L`.
            if std::fs::metadata(&path)?.is_dir() {
                walk(root, &path, files)?;
            } else {
                let relative = path.strip_prefix(root)?.to_string_lossy().into_owned();
                files.push((format!("./{relative}"), path));
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, dir, &mut files)?;
    files.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut stream = Vec::new();
    for (name, path) in files {
        stream.extend_from_slice(name.as_bytes());
        stream.push(b'\n');
        stream.extend_from_slice(&std::fs::read(&path)?);
    }
    Ok(hex::encode(wasmscaler::sandbox::sha256(&stream)))
}

/// An autoscaler running `guest` as its policy on `target`, remembering nothing between
/// restarts.
pub fn autoscaler_with(
    spec: wasmscaler::engine::AutoscalerSpec,
    target: Arc<dyn wasmscaler::targets::Target>,
    guest: Arc<wasmscaler::sandbox::GuestComponent>,
) -> anyhow::Result<wasmscaler::engine::Autoscaler> {
    wasmscaler::engine::Autoscaler::builder(
        spec,
        target,
        wasmscaler::engine::Guests::pair(guest.clone(), guest),
    )
    .build()
    .map_err(anyhow::Error::msg)
}

/// What the cpu-target guest needs to run: the kubernetes-metrics capability granted, with
/// `pods` as metrics.k8s.io's answer; default limits.
pub fn cpu_env(pods: Vec<wasmscaler::contract::model::PodMetrics>) -> wasmscaler::sandbox::CallEnv {
    wasmscaler::sandbox::CallEnv {
        capabilities: wasmscaler::sandbox::Capabilities {
            kubernetes_metrics: true,
            ..Default::default()
        },
        pod_metrics: Some(Arc::new(wasmscaler::sandbox::StaticPodMetrics(pods))),
        ..Default::default()
    }
}

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// Waits while `tests/run.sh` installs the pinned toolchains (JavaScript, Python and C
/// guests, moto, the Helm library) in the background, beside the build: it marks
/// `.cache/toolchains/installing` until it is done. Without the mark (the toolchains were
/// installed by hand, or not at all) it returns at once; a missing tool then fails where it is
/// used, naming the install command.
pub fn toolchains_ready() -> anyhow::Result<()> {
    let marker = repo_root().join(".cache/toolchains/installing");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    while marker.exists() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the toolchains were still installing after 10 minutes: {}",
            repo_root().join(".cache/toolchains.log").display()
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    Ok(())
}

/// Where guest builds go: one shared target directory, so wit-bindgen compiles once.
pub fn guest_target_dir() -> PathBuf {
    repo_root().join("target").join("guests")
}

/// Builds the Rust guest crate at `crate_dir` (relative to the repository root) for
/// `wasm32-wasip2` in release mode, once per test process, and returns the `.wasm` path.
pub fn build_rust_guest(crate_dir: &str) -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built
        .lock()
        .map_err(|_| anyhow::anyhow!("guest build lock poisoned"))?;
    if let Some(path) = built.get(crate_dir) {
        return Ok(path.clone());
    }
    let dir = repo_root().join(crate_dir);
    let manifest = dir.join("Cargo.toml");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(&dir)
        .args([
            "build",
            "--release",
            "--quiet",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", guest_target_dir())
        // The host's test build sets these for itself; a guest build must not inherit them.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .with_context(|| format!("running cargo for {crate_dir}"))?;
    if !output.status.success() {
        bail!(
            "building guest {crate_dir} failed (is the wasm32-wasip2 target installed? \
             `rustup target add wasm32-wasip2`):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let package = std::fs::read_to_string(&manifest)?
        .lines()
        .find_map(|l| l.strip_prefix("name = "))
        .map(|n| n.trim_matches('"').replace('-', "_"))
        .with_context(|| format!("no package name in {}", manifest.display()))?;
    let wasm = guest_target_dir()
        .join("wasm32-wasip2/release")
        .join(format!("{package}.wasm"));
    if !wasm.exists() {
        bail!("guest {crate_dir} built but {} is missing", wasm.display());
    }
    built.insert(crate_dir.to_owned(), wasm.clone());
    Ok(wasm)
}

/// Reads a fixture file from `tests/fixtures`.
pub fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(name)
}

/// Reads and parses a hostile WAT guest from `tests/hostile`.
pub fn hostile_wat(name: &str) -> anyhow::Result<Vec<u8>> {
    let path = repo_root().join("tests/hostile").join(name);
    Ok(wat::parse_file(&path)?)
}

/// A tiny real HTTP/1.1 server on loopback serving fixed JSON bodies by path (the query is
/// ignored for routing); every request is recorded with its query. Closes each connection after one response.
pub struct JsonServer {
    /// The bound address.
    pub addr: SocketAddr,
    routes: Arc<Mutex<HashMap<String, (u16, String)>>>,
    /// Paths requested so far, in order.
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl JsonServer {
    /// Starts a server on an ephemeral loopback port.
    pub fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let routes: Arc<Mutex<HashMap<String, (u16, String)>>> = Arc::default();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let (r, q) = (routes.clone(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(&stream);
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                // Drain the headers.
                let mut header = String::new();
                while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                    header.clear();
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
                q.lock().map(|mut q| q.push(path.clone())).ok();
                let route = path.split('?').next().unwrap_or("/");
                let (status, body) = r
                    .lock()
                    .ok()
                    .and_then(|r| r.get(route).cloned())
                    .unwrap_or((404, "{}".into()));
                let mut out = &stream;
                let _ = write!(
                    out,
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Ok(JsonServer {
            addr,
            routes,
            requests,
        })
    }

    /// Serves `body` with `status` at `path`.
    pub fn route(&self, path: &str, status: u16, body: impl Into<String>) {
        if let Ok(mut routes) = self.routes.lock() {
            routes.insert(path.to_owned(), (status, body.into()));
        }
    }
}

/// The compiled-component cache every test sandbox shares, across tests and test processes:
/// a guest compiles once per build of the host, not once per test. Entries are keyed by the
/// component's sha256 and checked against the engine's settings on every read, so a stale
/// entry is recompiled, never used. Tests of the cache itself use directories of their own.
pub fn test_cache_dir() -> PathBuf {
    repo_root().join("target").join("test-sandbox-cache")
}

/// A sandbox configuration for tests: the shared disk cache, a small pool.
pub fn test_sandbox() -> anyhow::Result<wasmscaler::sandbox::Sandbox> {
    Ok(wasmscaler::sandbox::Sandbox::new(
        wasmscaler::sandbox::SandboxConfig {
            cache_dir: Some(test_cache_dir()),
            pooling: Some(wasmscaler::sandbox::PoolingConfig {
                max_concurrent_calls: 16,
                max_memory_bytes: 256 << 20,
                ..Default::default()
            }),
            compile: compile_config(),
            ..Default::default()
        },
    )?)
}

/// A sandbox with a single instance slot of 64 MiB that no call waits for: a second
/// concurrent call is `busy`.
pub fn one_slot_sandbox() -> anyhow::Result<wasmscaler::sandbox::Sandbox> {
    one_slot_sandbox_waiting(std::time::Duration::ZERO)
}

/// A sandbox with a single instance slot of 64 MiB, which a call waits up to `wait` for.
pub fn one_slot_sandbox_waiting(
    wait: std::time::Duration,
) -> anyhow::Result<wasmscaler::sandbox::Sandbox> {
    Ok(wasmscaler::sandbox::Sandbox::new(
        wasmscaler::sandbox::SandboxConfig {
            pooling: Some(wasmscaler::sandbox::PoolingConfig {
                max_concurrent_calls: 1,
                max_memory_bytes: 64 << 20,
                max_slot_wait_ms: u64::try_from(wait.as_millis())?,
                ..Default::default()
            }),
            compile: compile_config(),
            ..Default::default()
        },
    )?)
}

/// The `wasmscaler` binary cargo built for these tests: next to the test binaries' `deps/`
/// folder (cargo builds every binary of the workspace before it runs any test).
pub fn wasmscaler_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("wasmscaler"))
        .filter(|path| path.is_file())
        .ok_or_else(|| anyhow::anyhow!("no wasmscaler binary next to {}", exe.display()))?;
    Ok(bin)
}

/// How tests compile components: as in production, in a worker process of the built
/// `wasmscaler` binary (cargo builds it next to the test binaries' `deps/` folder before any
/// test runs); in process only where that binary is missing.
pub fn compile_config() -> wasmscaler::sandbox::CompileConfig {
    match wasmscaler_bin().ok() {
        Some(program) => wasmscaler::sandbox::CompileConfig {
            program: Some(program),
            ..Default::default()
        },
        None => wasmscaler::sandbox::CompileConfig {
            isolation: wasmscaler::sandbox::CompileIsolation::InProcess,
            ..Default::default()
        },
    }
}

/// Reads a JSON fixture into `T`.
pub fn read_fixture<T: serde::de::DeserializeOwned>(name: &str) -> anyhow::Result<T> {
    let path = fixture(name);
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

/// An in-process target for engine tests and benchmarks: a replica count and replicas
/// `r-0`, `r-1`, ... in memory, recording every scale call; observation can be made to fail,
/// and pod metrics can be attached.
pub struct MemoryTarget {
    state: Mutex<u32>,
    /// Every `scale(n, remove_first)` call, in order.
    pub scales: Mutex<Vec<(u32, Vec<String>)>>,
    /// When set, `observe` fails with this error.
    pub fail_observe: Mutex<Option<wasmscaler::targets::TargetError>>,
    /// How many times it was observed (one per run).
    pub observations: std::sync::atomic::AtomicU64,
    pod_metrics: Option<Arc<dyn wasmscaler::sandbox::PodMetricsProvider>>,
}

impl MemoryTarget {
    /// A target at `current` replicas named `r-0`, `r-1`, ...
    pub fn new(current: u32) -> Arc<Self> {
        Self::with_pod_metrics(current, None)
    }

    /// The same, answering the `kubernetes-metrics` capability from `provider`.
    pub fn with_pod_metrics(
        current: u32,
        provider: Option<Arc<dyn wasmscaler::sandbox::PodMetricsProvider>>,
    ) -> Arc<Self> {
        Arc::new(MemoryTarget {
            state: Mutex::new(current),
            scales: Mutex::default(),
            fail_observe: Mutex::default(),
            observations: Default::default(),
            pod_metrics: provider,
        })
    }

    /// The replica count now.
    pub fn current(&self) -> u32 {
        self.state.lock().map(|s| *s).unwrap_or(0)
    }

    /// Changes the count behind the engine's back (a user or another controller).
    pub fn set(&self, n: u32) {
        if let Ok(mut s) = self.state.lock() {
            *s = n;
        }
    }

    /// The scale calls so far.
    pub fn scale_calls(&self) -> Vec<(u32, Vec<String>)> {
        self.scales.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl wasmscaler::targets::Target for MemoryTarget {
    fn identity(&self) -> wasmscaler::targets::TargetIdentity {
        wasmscaler::targets::TargetIdentity {
            kind: "memory".into(),
            name: "test".into(),
            namespace: String::new(),
        }
    }

    fn observe(
        &self,
    ) -> wasmscaler::sandbox::BoxFuture<
        '_,
        Result<wasmscaler::targets::Observation, wasmscaler::targets::TargetError>,
    > {
        Box::pin(async move {
            if let Some(e) = self.fail_observe.lock().ok().and_then(|f| f.clone()) {
                return Err(e);
            }
            self.observations
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let current = self.current();
            Ok(wasmscaler::targets::Observation {
                current,
                replicas: (0..current)
                    .map(|i| wasmscaler::contract::model::Replica {
                        name: format!("r-{i}"),
                        ready: true,
                        ..Default::default()
                    })
                    .collect(),
                object: Default::default(),
                version: None,
            })
        })
    }

    fn scale<'a>(
        &'a self,
        _observed: &'a wasmscaler::targets::Observation,
        replicas: u32,
        remove_first: &'a [String],
    ) -> wasmscaler::sandbox::BoxFuture<'a, Result<(), wasmscaler::targets::TargetError>> {
        Box::pin(async move {
            if let Ok(mut calls) = self.scales.lock() {
                calls.push((replicas, remove_first.to_vec()));
            }
            self.set(replicas);
            Ok(())
        })
    }

    fn pod_metrics(&self) -> Option<Arc<dyn wasmscaler::sandbox::PodMetricsProvider>> {
        self.pod_metrics.clone()
    }
}

/// A target section for specs whose autoscaler is handed its target directly (or, in
/// `simulate`, the simulated system): never connected.
pub fn placeholder_target() -> wasmscaler::engine::TargetSpec {
    wasmscaler::engine::TargetSpec::Kubernetes(wasmscaler::targets::kubernetes::KubernetesRef {
        api_version: "v1".into(),
        kind: "unused".into(),
        name: "unused".into(),
        namespace: None,
    })
}

/// A spec for the `cpu-target` guest (`policy` names it): a 50 % target, `kubernetes-metrics`
/// granted, runs every `interval`, bounds 1..=`max`, a placeholder target.
pub fn cpu_spec(
    name: &str,
    policy: impl Into<PathBuf>,
    max: u32,
    interval: std::time::Duration,
) -> wasmscaler::engine::AutoscalerSpec {
    let mut spec = wasmscaler::engine::AutoscalerSpec::new(name, placeholder_target(), policy, max);
    spec.scaling.interval = wasmscaler::duration::HumanDuration(interval);
    spec.scaling.config = [("targetUtilization".to_string(), "50".to_string())].into();
    spec.scaling.capabilities = wasmscaler::sandbox::Capabilities {
        kubernetes_metrics: true,
        ..Default::default()
    };
    spec
}

/// A spec for the `scripted` test guest reading its decisions from `url`: HTTP granted for
/// that URL, no scale-down stabilization (decisions apply at once), bounds 1..=10. The
/// target section is a placeholder: tests hand the autoscaler its target directly.
pub fn scripted_spec(name: &str, url: &str) -> wasmscaler::engine::AutoscalerSpec {
    use wasmscaler::engine::behavior::{Behavior, ScalingRules};
    let mut spec =
        wasmscaler::engine::AutoscalerSpec::new(name, placeholder_target(), "scripted.wasm", 10);
    spec.scaling.behavior = Behavior {
        scale_up: None,
        scale_down: Some(ScalingRules {
            stabilization_window_seconds: Some(0),
            ..Default::default()
        }),
    };
    spec.scaling.config = [("url".to_string(), url.to_string())].into();
    spec.scaling.capabilities = wasmscaler::sandbox::Capabilities {
        http: Some(wasmscaler::sandbox::HttpGrant::allow([url])),
        ..Default::default()
    };
    spec
}

/// Criterion configured for this workspace: its plots need a registered font (plotters is
/// built with `ab_glyph` for `simulate`'s charts, and criterion shares that build), so they
/// are drawn with the charts' font, or left out when the machine has none.
#[macro_export]
macro_rules! criterion {
    () => {{
        let criterion = criterion::Criterion::default().configure_from_args();
        match wasmscaler::simulate::chart::load_font() {
            Ok(()) => criterion,
            Err(error) => {
                eprintln!("criterion plots left out: {error}");
                criterion.without_plots()
            }
        }
    }};
}

/// Median of one benchmark of this run (`group/name`), in nanoseconds, from criterion's own
/// output under the target directory.
pub fn criterion_median_ns(group: &str, name: &str) -> Option<f64> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let path = target
        .join("criterion")
        .join(group)
        .join(name)
        .join("new/estimates.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64()
}
