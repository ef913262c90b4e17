//! Many autoscalers in one host: CPU share and peak RSS at 1,000, 10,000 and 100,000 autoscalers with
//! the default 15 s interval, each running the cpu-target guest (fresh instance per call)
//! against a cheap in-process target (the tests' `MemoryTarget`). A host with no autoscalers is the baseline row.
//!
//! Then the same sizes as a controller against an API server (`api_server.rs`): requests per
//! run by verb and resource, the controller's CPU and RSS, the time until every new resource
//! has run, and after a restart.
//!
//! Each fleet size runs in its own child process (this binary, re-executed), so peak RSS is
//! per size. `cargo bench --bench fleet` measures a 30 s window after a 20 s warm-up (every
//! autoscaler has run once); under `cargo test` a small fleet runs briefly as a smoke test.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use wasmscaler::contract::model::PodMetrics;

use wasmscaler::engine::{Autoscaler, AutoscalerSpec, Fleet, Guests};
use wasmscaler::sandbox::{PodMetricsProvider, Sandbox, SandboxConfig, StaticPodMetrics};
use wasmscaler_tests::{MemoryTarget, build_rust_guest, read_fixture};

mod api_server;

// The same allocator as the `wasmscaler` binary, so the figures are the binary's. With
// `--features system-alloc` the system's, which heap profilers (heaptrack) can follow.
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn spec(i: usize, interval: Duration) -> AutoscalerSpec {
    wasmscaler_tests::cpu_spec(&format!("fleet-{i}"), "cpu_target.wasm", 10, interval)
}

fn cpu_seconds() -> f64 {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .expect("getrusage");
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    secs(usage.user_time()) + secs(usage.system_time())
}

/// Peak RSS (`VmHWM`), which includes compiling the guest at start-up.
fn peak_rss_mib() -> f64 {
    status_mib("VmHWM:")
}

/// RSS now (`VmRSS`): the fleet's steady state at the end of the window.
fn rss_mib() -> f64 {
    status_mib("VmRSS:")
}

fn status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).map(str::to_owned))
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn child(n: usize, interval: Duration, warmup: Duration, window: Duration) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let sandbox = Sandbox::new(SandboxConfig {
            compile: wasmscaler_tests::compile_config(),
            ..SandboxConfig::default()
        })
        .expect("sandbox");
        let wasm = build_rust_guest("guests/cpu-target").expect("guest");
        let guest = sandbox.load_file(&wasm).await.expect("load").component;
        // The fixture's three pods, renamed to the memory target's replicas r-0..r-2.
        let mut pods: Vec<PodMetrics> = read_fixture("pod-metrics.json").expect("pods");
        for (i, pod) in pods.iter_mut().enumerate() {
            pod.pod = format!("r-{i}");
        }
        let pods: Arc<dyn PodMetricsProvider> = Arc::new(StaticPodMetrics(pods));
        let targets: Vec<Arc<MemoryTarget>> = (0..n)
            .map(|_| MemoryTarget::with_pod_metrics(3, Some(pods.clone())))
            .collect();
        let runs = || {
            targets
                .iter()
                .map(|t| t.observations.load(Ordering::Relaxed))
                .sum::<u64>()
        };
        let autoscalers: Vec<Arc<Autoscaler>> = targets
            .iter()
            .enumerate()
            .map(|(i, target)| {
                let target = target.clone();
                Arc::new(
                    Autoscaler::builder(
                        spec(i, interval),
                        target,
                        Guests::pair(guest.clone(), guest.clone()),
                    )
                    .build()
                    .expect("autoscaler"),
                )
            })
            .collect();
        let engine = Arc::new(Fleet::new(autoscalers));
        let stop = CancellationToken::new();
        let running = tokio::spawn({
            let (engine, stop) = (engine.clone(), stop.clone());
            async move { engine.run(stop).await }
        });
        tokio::time::sleep(warmup).await;
        let (cpu0, runs0, t0) = (cpu_seconds(), runs(), Instant::now());
        tokio::time::sleep(window).await;
        let (cpu1, runs1, wall) = (cpu_seconds(), runs(), t0.elapsed());
        let rss = rss_mib();
        stop.cancel();
        let _ = running.await;
        let failed: u64 = engine
            .autoscalers()
            .iter()
            .flat_map(|a| a.records())
            .filter(|r| r.error.is_some())
            .map(|r| r.runs())
            .sum::<u64>();
        let records: usize = engine.autoscalers().iter().map(|a| a.records().len()).sum();
        println!(
            "{}",
            serde_json::json!({
                "autoscalers": n,
                "records": records,
                "runs": runs1 - runs0,
                "failedRuns": failed,
                "cpuPercentOfOneCore": (cpu1 - cpu0) / wall.as_secs_f64() * 100.0,
                "rssMib": rss,
                "peakRssMib": peak_rss_mib(),
            })
        );
    });
}

fn main() -> std::process::ExitCode {
    // The controller child compiles policies in workers it starts from this executable.
    if let Some(code) = wasmscaler::sandbox::compile::compile_worker_main() {
        return code;
    }
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--controller-child") {
        return api_server::controller_child(&args[i + 1..]);
    }
    if let Some(i) = args.iter().position(|a| a == "--fleet-child") {
        let n: usize = args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .expect("fleet size");
        let secs = |flag: &str, default: u64| {
            args.iter()
                .position(|a| a == flag)
                .and_then(|i| args.get(i + 1)?.parse().ok())
                .unwrap_or(default)
        };
        child(
            n,
            Duration::from_millis(secs("--interval-ms", 15_000)),
            Duration::from_millis(secs("--warmup-ms", 20_000)),
            Duration::from_millis(secs("--window-ms", 30_000)),
        );
        return std::process::ExitCode::SUCCESS;
    }
    let measuring = args.iter().any(|a| a == "--bench");
    let exe = std::env::current_exe().expect("current exe");
    // `cargo bench --bench fleet -- --api-only`: the API-server rows alone.
    if args.iter().any(|a| a == "--api-only") {
        api_fleet(measuring, &exe);
        return std::process::ExitCode::SUCCESS;
    }
    let plan: Vec<(usize, &[&str])> = if measuring {
        vec![(0, &[]), (1_000, &[]), (10_000, &[]), (100_000, &[])]
    } else {
        // Smoke test under `cargo test`: a small fast fleet, to prove the harness works.
        vec![(
            50,
            &[
                "--interval-ms",
                "500",
                "--warmup-ms",
                "600",
                "--window-ms",
                "1000",
            ],
        )]
    };
    println!(
        "\n| autoscalers | runs in window | failed runs | CPU (% of one core) | RSS at the end (peak) |"
    );
    println!("|---|---|---|---|---|");
    for (n, extra) in plan {
        let out = Command::new(&exe)
            .arg("--fleet-child")
            .arg(n.to_string())
            .args(extra)
            .output()
            .expect("child");
        assert!(
            out.status.success(),
            "fleet child failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout);
        let r: serde_json::Value =
            serde_json::from_str(line.trim().lines().last().unwrap_or("{}")).expect("child JSON");
        if n > 0 {
            assert!(r["runs"].as_u64().unwrap_or(0) > 0, "the fleet ran");
            assert_eq!(r["failedRuns"], 0, "no run failed");
        }
        println!(
            "| {} | {} | {} | {:.2} % | {:.0} MiB ({:.0}) |",
            n,
            r["runs"],
            r["failedRuns"],
            r["cpuPercentOfOneCore"].as_f64().unwrap_or(f64::NAN),
            r["rssMib"].as_f64().unwrap_or(f64::NAN),
            r["peakRssMib"].as_f64().unwrap_or(f64::NAN)
        );
    }
    api_fleet(measuring, &exe);
    std::process::ExitCode::SUCCESS
}

/// The API-server rows.
fn api_fleet(measuring: bool, exe: &std::path::Path) {
    use api_server::{BenchPolicy, Plan};
    // `-- --api-only --api-n 1000`: one size.
    let args: Vec<String> = std::env::args().collect();
    let sizes: Vec<usize> = match args.iter().position(|a| a == "--api-n") {
        Some(i) => args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .into_iter()
            .collect(),
        None => vec![1_000, 10_000],
    };
    // `-- --api-policy hold`: one policy (default: both, queue-progress first).
    let policies: Vec<BenchPolicy> = match args.iter().position(|a| a == "--api-policy") {
        Some(i) => match args.get(i + 1).map(String::as_str) {
            Some("hold") => vec![BenchPolicy::Hold],
            Some("queue-progress") => vec![BenchPolicy::QueueProgress],
            other => panic!("--api-policy hold|queue-progress, not {other:?}"),
        },
        None => vec![BenchPolicy::QueueProgress, BenchPolicy::Hold],
    };
    let plans: Vec<Plan> = if measuring {
        policies
            .iter()
            .flat_map(|&policy| {
                sizes.iter().map(move |&n| Plan {
                    policy,
                    n,
                    interval: Duration::from_secs(15),
                    settle: Duration::from_secs(10),
                    window: Duration::from_secs(150),
                })
            })
            .collect()
    } else {
        // Smoke test: both policies, so both ways of counting runs are exercised.
        policies
            .iter()
            .map(|&policy| Plan {
                policy,
                n: 20,
                interval: Duration::from_millis(500),
                settle: Duration::from_millis(500),
                window: Duration::from_millis(1500),
            })
            .collect()
    };
    let queue_progress = build_rust_guest("guests/queue-progress").expect("guest");
    let hold = build_rust_guest("tests/benches/hold-guest").expect("guest");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "\n| autoscalers | all ran after creating them | all statuses written after | requests per run | of which | controller CPU (% of one core) | RSS (peak) | restart: all ran after |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for plan in plans {
        let r = rt
            .block_on(api_server::measure(
                &plan,
                exe,
                match plan.policy {
                    BenchPolicy::QueueProgress => &queue_progress,
                    BenchPolicy::Hold => &hold,
                },
            ))
            .expect("API fleet");
        let runs = r["runs"].as_f64().unwrap_or(0.0);
        assert!(runs > 0.0, "the fleet ran: {r}");
        let of_which: Vec<String> = r["perRun"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k} {:.3}", v.as_f64().unwrap_or(f64::NAN)))
            .collect();
        println!(
            "| {} ({:?}) | {:.1} s | {:.1} s | {:.3} | {} | {:.2} % | {:.0} MiB ({:.0}) | {:.1} s |",
            plan.n,
            plan.policy,
            r["allRanAfterSeconds"].as_f64().unwrap_or(f64::NAN),
            r["allStatusesWrittenAfterSeconds"]
                .as_f64()
                .unwrap_or(f64::NAN),
            r["requestsPerRun"].as_f64().unwrap_or(f64::NAN),
            of_which.join(", "),
            r["cpuPercentOfOneCore"].as_f64().unwrap_or(f64::NAN),
            r["rssMib"].as_f64().unwrap_or(f64::NAN),
            r["peakRssMib"].as_f64().unwrap_or(f64::NAN),
            r["restartAllRanSeconds"].as_f64().unwrap_or(f64::NAN),
        );
        eprintln!("{r}");
    }
}
