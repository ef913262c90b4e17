//! The speed of `wasmscaler simulate`, against the engine's own run in the same process.
//!
//! `simulate/engine-run`: one `Autoscaler::run_once` of the cpu-target guest on an in-memory
//! target with static pod metrics, runs 15 s apart on a virtual clock: the cost of a decision
//! in production, the baseline.
//! `simulate/hour-at-15s`: an hour of the diurnal trace replayed at a 15 s interval (240
//! decisions, 3,600 model steps). After `cargo bench`, a table gives the simulated decision's
//! cost as a ratio of the baseline and the decisions per second a 30-day trace runs at.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use criterion::Criterion;
use wasmscaler::contract::model::PodMetrics;
use wasmscaler::engine::{Autoscaler, AutoscalerSpec, Guests};
use wasmscaler::sandbox::StaticPodMetrics;
use wasmscaler::simulate::{self, Columns, SystemModel, Trace};
use wasmscaler_tests::{MemoryTarget, build_rust_guest, cpu_spec, repo_root, test_sandbox};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DECISIONS_PER_HOUR: f64 = 240.0;

fn spec() -> AutoscalerSpec {
    cpu_spec("bench", "cpu_target.wasm", 30, Duration::from_secs(15))
}

/// The first hour of the diurnal trace.
fn hour() -> Trace {
    let path = repo_root().join("tests/fixtures/traces/diurnal.csv");
    let text = std::fs::read_to_string(&path).expect("diurnal trace");
    let hour: String = text.lines().take(62).map(|l| format!("{l}\n")).collect();
    Trace::parse(&hour, "diurnal.csv", &Columns::default()).expect("trace")
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let wasm = build_rust_guest("guests/cpu-target").expect("guest build");
    let component = rt
        .block_on(test_sandbox().expect("sandbox").load_file(&wasm))
        .expect("load")
        .component;
    let guests = Guests::pair(component.clone(), component);
    // The target's replicas r-0..r-2, at the 50 % target: the count holds.
    let pods: Vec<PodMetrics> = (0..3)
        .map(|i| PodMetrics {
            pod: format!("r-{i}"),
            cpu_millicores: 500,
            memory_bytes: 0,
            cpu_request_millicores: Some(1000),
            memory_request_bytes: None,
            timestamp_ms: 0,
        })
        .collect();
    let target = MemoryTarget::with_pod_metrics(3, Some(Arc::new(StaticPodMetrics(pods))));
    // Runs 15 s apart, as in the simulation: the stabilization window then holds 20
    // recommendations, not every run of the benchmark's burst.
    let now = Arc::new(AtomicI64::new(1_767_225_600_000));
    let clock_now = now.clone();
    let autoscaler = Autoscaler::builder(spec(), target, guests.clone())
        .clock(Arc::new(move || clock_now.load(Ordering::Relaxed)))
        .build()
        .expect("autoscaler");
    let trace = hour();
    let model = SystemModel::default();

    let mut group = c.benchmark_group("simulate");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("engine-run", |b| {
        b.to_async(&rt).iter(|| async {
            now.fetch_add(15_000, Ordering::Relaxed);
            let record = autoscaler.run_once().await;
            assert!(record.error.is_none(), "{:?}", record.error);
        });
    });
    group.sample_size(10);
    group.bench_function("hour-at-15s", |b| {
        b.to_async(&rt).iter(|| async {
            let report = simulate::simulate(&spec(), guests.clone(), &trace, &model, &mut |_| {})
                .await
                .expect("simulate");
            assert_eq!(report.decisions as f64, DECISIONS_PER_HOUR);
        });
    });
    group.finish();
}

/// Median of one benchmark of this run's `simulate` group, in nanoseconds.
fn median_ns(name: &str) -> Option<f64> {
    wasmscaler_tests::criterion_median_ns("simulate", name)
}

fn print_table() {
    let (Some(run), Some(hour)) = (median_ns("engine-run"), median_ns("hour-at-15s")) else {
        return;
    };
    let per_decision = hour / DECISIONS_PER_HOUR;
    println!("\n| measure | value |");
    println!("|---|---|");
    println!("| engine run (baseline) | {:.1} µs |", run / 1e3);
    println!(
        "| simulated decision (with its 15 model steps) | {:.1} µs |",
        per_decision / 1e3
    );
    println!("| simulated ÷ engine run | {:.2}× |", per_decision / run);
    println!(
        "| decisions/s, so a 30-day trace at 15 s (172,800) takes | {:.0}/s, {:.1} s |",
        1e9 / per_decision,
        172_800.0 * per_decision / 1e9
    );
}

fn main() {
    let mut criterion = wasmscaler_tests::criterion!();
    benches(&mut criterion);
    criterion.final_summary();
    // `cargo bench` passes --bench; under `cargo test` criterion only runs each benchmark once.
    if std::env::args().any(|a| a == "--bench") {
        print_table();
    }
}
