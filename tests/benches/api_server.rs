//! The fleet against an API server: N `WasmAutoscaler`s on N Deployments (100 per namespace,
//! one pod each), reconciled by the controller — started as a child process exactly as
//! `wasmscaler controller` starts, with its default client budget — against the fake API server
//! of `tests/support` over real HTTP.
//!
//! Two policies, each a fleet that does not scale: `queue-progress` reading a queue service
//! on loopback (one HTTP GET per run, outside the API server, which also counts the runs) and
//! holding the count; and `hold-guest`, deciding the current count with no capability (the
//! issue's "policy deciding a constant"), whose runs are counted from the controller's
//! `/metrics` outside the measured window. The bench process serves the API server and the
//! queue, so the controller's CPU and RSS are its own (read from `/proc/PID`).
//!
//! Reported per fleet size: the time from creating the N resources to every one having run
//! and to every first status being written, API requests per run by verb and resource in a
//! steady-state window that starts after those writes, the controller's CPU
//! and RSS, and the time a restarted controller takes to lead and run every autoscaler again.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wasmscaler_tests::fake_kube::FakeKube;

/// Autoscalers per namespace.
const PER_NAMESPACE: usize = 100;

/// The policy every autoscaler of the fleet runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchPolicy {
    /// `queue-progress`: one HTTP GET per run to the bench's queue, which also counts runs.
    QueueProgress,
    /// `tests/benches/hold-guest`: decides the current count and imports nothing (the issue's
    /// "policy deciding a constant"); runs are counted from the controller's `/metrics`, read
    /// only outside the measured window.
    Hold,
}

/// One fleet's measurement plan.
pub struct Plan {
    /// The policy.
    pub policy: BenchPolicy,
    /// Autoscalers.
    pub n: usize,
    /// Their interval.
    pub interval: Duration,
    /// Time after every first status is written, before the window.
    pub settle: Duration,
    /// The steady-state window: at least the history refresh period (half the default
    /// scale-down stabilization window), so each resource's periodic write falls in it.
    pub window: Duration,
}

/// The queue service: answers every autoscaler's queue, noting which have asked.
#[derive(Default)]
struct Queue {
    asked: AtomicU64,
    seen: Mutex<HashSet<String>>,
}

impl Queue {
    fn distinct(&self) -> usize {
        self.seen.lock().map_or(0, |s| s.len())
    }

    fn forget(&self) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.clear();
        }
    }
}

async fn serve_queue(queue: Arc<Queue>) -> anyhow::Result<SocketAddr> {
    use axum::extract::{Path as UrlPath, State};
    let app = axum::Router::new()
        .route(
            "/q/{namespace}/{name}",
            axum::routing::get(
                |State(queue): State<Arc<Queue>>,
                 UrlPath((ns, name)): UrlPath<(String, String)>| async move {
                    queue.asked.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut seen) = queue.seen.lock() {
                        seen.insert(format!("{ns}/{name}"));
                    }
                    axum::Json(json!({"total": 100, "processed": 0}))
                },
            ),
        )
        .with_state(queue);
    // Not 127.0.0.1: the controller keeps guests away from the API server's addresses.
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

/// CPU seconds and resident MiB (current, peak) of process `pid`.
fn process_usage(pid: u32) -> (f64, f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // /proc reports in USER_HZ, 100 on every Linux ABI.
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (cpu, kib("VmRSS:"), kib("VmHWM:"))
}

/// A controller process, killed if the bench fails before stopping it.
struct Controller(Child);

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_controller(
    exe: &Path,
    kubeconfig: &Path,
    work: &Path,
    identity: &str,
    listen: Option<SocketAddr>,
) -> anyhow::Result<Controller> {
    // FLEET_CONTROLLER_WRAP="heaptrack -o /tmp/controller" runs the controller under a tool.
    let wrap = std::env::var("FLEET_CONTROLLER_WRAP").unwrap_or_default();
    let mut wrap = wrap.split_whitespace();
    let mut command = match wrap.next() {
        Some(tool) => {
            let mut command = Command::new(tool);
            command.args(wrap).arg(exe);
            command
        }
        None => Command::new(exe),
    };
    Ok(Controller(
        command
            .arg("--controller-child")
            .args(["--identity", identity])
            .arg("--state-dir")
            .arg(work.join("state"))
            .arg("--cache-dir")
            .arg(work.join("cache"))
            .arg("--tenant-bounds")
            .arg(work.join("bounds.yaml"))
            .args(listen.map(|a| format!("--listen={a}")))
            .env("KUBECONFIG", kubeconfig)
            // FLEET_CONTROLLER_LOG=warn shows why a resource is slow to start.
            .env(
                "RUST_LOG",
                std::env::var("FLEET_CONTROLLER_LOG").unwrap_or_else(|_| "error".into()),
            )
            .stdout(std::process::Stdio::null())
            .spawn()?,
    ))
}

async fn wait_until(
    what: &str,
    limit: Duration,
    ready: impl Fn() -> bool,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    while !ready() {
        anyhow::ensure!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(start.elapsed())
}

/// SIGTERM, as the kubelet sends, and the wait for a clean exit.
fn stop(controller: &mut Controller) -> anyhow::Result<()> {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(controller.0.id())?);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
    let status = controller.0.wait()?;
    anyhow::ensure!(status.success(), "the controller exited with {status}");
    Ok(())
}

/// Runs one fleet size and returns its row (JSON).
pub async fn measure(plan: &Plan, exe: &Path, guest: &Path) -> anyhow::Result<Value> {
    let fake = FakeKube::start().await?;
    fake.count_only();
    let queue = Arc::new(Queue::default());
    let queue_addr = serve_queue(queue.clone()).await?;
    let work = tempfile::tempdir()?;
    let kubeconfig = work.path().join("kubeconfig");
    fake.kubeconfig(&kubeconfig)?;
    let guest_dir: PathBuf = guest.parent().map(Path::to_path_buf).unwrap_or_default();
    let listen = match plan.policy {
        BenchPolicy::QueueProgress => None,
        BenchPolicy::Hold => Some(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?),
    };
    // (autoscalers that have run, runs): from the queue, or from the controller's metrics.
    let ran = async || -> (usize, u64) {
        match listen {
            None => (queue.distinct(), queue.asked.load(Ordering::Relaxed)),
            Some(addr) => scrape_runs(addr).await.unwrap_or((0, 0)),
        }
    };
    std::fs::write(
        work.path().join("bounds.yaml"),
        serde_yaml::to_string(&json!({
            "minInterval": "100ms",
            "sources": {"fileDirs": [guest_dir]},
        }))?,
    )?;
    let namespace = |i: usize| format!("fleet-{}", i / PER_NAMESPACE);
    for i in 0..plan.n {
        let name = format!("app-{i}");
        fake.add_scalable_in(
            &namespace(i),
            "apps/v1",
            "Deployment",
            "deployments",
            &name,
            1,
        );
        fake.add_pod_in(
            &namespace(i),
            FakeKube::pod(&format!("{name}-0"), &name, 100),
        );
    }

    let mut controller = start_controller(exe, &kubeconfig, work.path(), "bench-1", listen)?;
    let holder = |fake: &FakeKube| {
        fake.get("coordination.k8s.io/v1", "leases", "wasmscaler")
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
    };
    wait_until("the controller leads", Duration::from_secs(60), || {
        holder(&fake).as_deref() == Some("bench-1")
    })
    .await?;

    // Create every resource, then time until each has run once.
    let created = Instant::now();
    for i in 0..plan.n {
        let (ns, name) = (namespace(i), format!("app-{i}"));
        fake.create_in(
            &ns,
            "wasmscaler.dev/v1alpha1",
            "wasmautoscalers",
            json!({"metadata": {"name": name}, "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                "policy": format!("file:{}", guest.display()),
                "minReplicas": 1, "maxReplicas": 10,
                "interval": format!("{}ms", plan.interval.as_millis()),
                "config": {"queueUrl": format!("http://{queue_addr}/q/{ns}/{name}"),
                           "expectedTimeSeconds": "1000000000"},
                "capabilities": match plan.policy {
                    BenchPolicy::QueueProgress => json!({"http": {"allow": [format!("http://{queue_addr}/q/*/*")]}, "state": {}}),
                    BenchPolicy::Hold => json!({}),
                },
            }}),
        )?;
    }
    let limit = plan.interval * 20 + Duration::from_secs(60);
    let n = plan.n;
    let mut progress = Vec::new();
    let started_at = Instant::now();
    // Each read of the metrics renders every autoscaler's series: once a second, not 20 times.
    let poll = match plan.policy {
        BenchPolicy::QueueProgress => Duration::from_millis(50),
        BenchPolicy::Hold => Duration::from_secs(1),
    };
    while ran().await.0 < n {
        anyhow::ensure!(
            started_at.elapsed() < limit,
            "every autoscaler runs: not within {limit:?}"
        );
        tokio::time::sleep(poll).await;
        // How the first runs progress, and what they cost, every 10 s.
        if progress.len() < (started_at.elapsed().as_secs() / 10) as usize {
            progress.push(json!({"seconds": created.elapsed().as_secs(), "ran": ran().await.0,
                "requests": fake.counts().into_iter().map(|((v, r), c)| (format!("{v} {r}"), c)).collect::<BTreeMap<_, _>>()}));
        }
    }
    let all_ran = created.elapsed();
    // Every first status written: the start-up backlog of writes under the client budget.
    wait_until("every status is written", limit, || {
        fake.count("wasmautoscalers", |o| {
            o["status"]["lastDecision"].is_object()
        }) >= n
    })
    .await?;
    let all_written = created.elapsed();

    // Steady state.
    tokio::time::sleep(plan.settle).await;
    // The run count is read outside the CPU window (a metrics read costs the controller).
    let asked0 = ran().await.1;
    let counts0 = fake.counts();
    let (cpu0, _, _) = process_usage(controller.0.id());
    let started = Instant::now();
    tokio::time::sleep(plan.window).await;
    let (cpu1, rss, peak) = process_usage(controller.0.id());
    let counts1 = fake.counts();
    let asked1 = ran().await.1;
    let wall = started.elapsed().as_secs_f64();
    let runs = asked1.saturating_sub(asked0);
    let mut per_run = BTreeMap::new();
    let mut total = 0u64;
    for ((verb, resource), after) in &counts1 {
        let delta = after
            - counts0
                .get(&(verb.clone(), resource.clone()))
                .copied()
                .unwrap_or(0);
        if delta > 0 {
            total += delta;
            per_run.insert(
                format!("{verb} {resource}"),
                delta as f64 / runs.max(1) as f64,
            );
        }
    }

    // A restart: the old process stops (releasing the lease), a new one leads and runs all.
    stop(&mut controller)?;
    queue.forget();
    let restarted = Instant::now();
    let mut successor = start_controller(exe, &kubeconfig, work.path(), "bench-2", listen)?;
    while ran().await.0 < n {
        anyhow::ensure!(
            restarted.elapsed() < limit,
            "the restarted controller runs every autoscaler: not within {limit:?}"
        );
        tokio::time::sleep(poll).await;
    }
    let restart = restarted.elapsed();
    stop(&mut successor)?;

    Ok(json!({
        "autoscalers": plan.n,
        "allRanAfterSeconds": all_ran.as_secs_f64(),
        "allStatusesWrittenAfterSeconds": all_written.as_secs_f64(),
        "runs": runs,
        "expectedRuns": plan.n as f64 * wall / plan.interval.as_secs_f64(),
        "requestsPerRun": total as f64 / runs.max(1) as f64,
        "perRun": per_run,
        "cpuPercentOfOneCore": (cpu1 - cpu0) / wall * 100.0,
        "rssMib": rss,
        "peakRssMib": peak,
        "restartAllRanSeconds": restart.as_secs_f64(),
        "intervalSeconds": plan.interval.as_secs_f64(),
        "startup": progress,
    }))
}

/// (autoscalers that have run, runs) from the controller's `/metrics`: the sum and count of
/// its `wasmscaler_runs_total` series (one per autoscaler and outcome).
async fn scrape_runs(addr: SocketAddr) -> anyhow::Result<(usize, u64)> {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await?
        .error_for_status()?
        .text()
        .await?;
    let mut ran = HashSet::new();
    let mut total = 0u64;
    for line in text
        .lines()
        .filter(|l| l.starts_with("wasmscaler_runs_total{"))
    {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value: f64 = value.parse().unwrap_or(0.0);
        if value > 0.0 {
            // The labels without the outcome name the autoscaler.
            let key: Vec<&str> = labels
                .split(',')
                .filter(|l| !l.contains("outcome="))
                .collect();
            ran.insert(key.join(","));
            total += value as u64;
        }
    }
    Ok((ran.len(), total))
}

/// In the child: runs `wasmscaler controller` with the given arguments, as the binary does.
pub fn controller_child(args: &[String]) -> std::process::ExitCode {
    let mut argv = vec!["wasmscaler".to_string(), "controller".to_string()];
    argv.extend(args.iter().cloned());
    let cli = match <wasmscaler::cli::Cli as clap::Parser>::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(error) => {
            eprintln!("{error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    wasmscaler::telemetry::init(false, "info");
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(wasmscaler::cli::run(cli)),
        Err(_) => std::process::ExitCode::FAILURE,
    }
}
