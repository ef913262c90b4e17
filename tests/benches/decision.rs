//! The cost of one scaling decision, against the Custom Pod Autoscaler's mechanism.
//!
//! `decision/*`: fresh instantiate + gather + evaluate of the cpu-target guest (each stage
//! in a new store, as the engine runs them), with the pooling allocator and without, beside
//! the CPA baseline: spawn `python3` on a script that reads the same context and metrics on
//! stdin and prints `{"targetReplicas": n}`. `load/*`: getting a runnable component from a
//! fresh compile, from the on-disk cache and from memory.
//!
//! `decision/wasm-LANG`: the same decision by the cpu-target guest written in another
//! language (tests/languages.rs checks they agree).
//!
//! After the run, a table of medians and ratios (measured in this same run) is printed, and a
//! table of first and cached loads per language.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use criterion::Criterion;
use wasmscaler::contract::model::{Context, PodMetrics};
use wasmscaler::sandbox::{GuestComponent, LoadSource, PoolingConfig, Sandbox, SandboxConfig};
use wasmscaler_tests::{
    build_language_guest, build_rust_guest, criterion_median_ns as median_ns, fixture, read_fixture,
};

fn sandbox(pooling: bool, cache_dir: Option<std::path::PathBuf>) -> Sandbox {
    Sandbox::new(SandboxConfig {
        cache_dir,
        pooling: pooling.then_some(PoolingConfig {
            max_concurrent_calls: 16,
            max_memory_bytes: 256 << 20,
            ..Default::default()
        }),
        compile: wasmscaler_tests::compile_config(),
        ..SandboxConfig::default()
    })
    .expect("sandbox")
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let wasm = build_rust_guest("guests/cpu-target").expect("guest build");
    let bytes = std::fs::read(&wasm).expect("guest bytes");
    let ctx: Context = read_fixture("cpu-context.json").expect("context");
    let pods: Vec<PodMetrics> = read_fixture("pod-metrics.json").expect("pods");
    let env = wasmscaler_tests::cpu_env(pods);

    let mut group = c.benchmark_group("decision");
    group.measurement_time(Duration::from_secs(4));
    // Fresh instances for gather and evaluate, as the engine runs them.
    let mut bench_decision = |name: String, guest: Arc<GuestComponent>| {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let samples = guest.gather(&ctx, &env).await.expect("gather");
                let decision = guest
                    .evaluate(&ctx, &samples.value, &env)
                    .await
                    .expect("evaluate");
                assert_eq!(decision.value.target_replicas, 6);
            });
        });
    };
    for (name, pooling) in [("wasm-pooling", true), ("wasm-on-demand", false)] {
        let sandbox = sandbox(pooling, None);
        let guest = rt
            .block_on(sandbox.load(bytes.clone()))
            .expect("load")
            .component;
        bench_decision(name.to_owned(), guest);
    }
    // The same decision by the cpu-target guest in each other language (pooling allocator).
    // Interpreted guests take seconds to build and compile, so a smoke run (`cargo test`)
    // keeps to the compiled ones.
    let pooled = sandbox(true, None);
    for language in languages() {
        let wasm = build_language_guest(language).expect("language guest build");
        let guest = rt
            .block_on(pooled.load_file(&wasm))
            .expect("load")
            .component;
        bench_decision(format!("wasm-{language}"), guest);
    }
    let script = fixture("cpa_evaluate.py");
    let stdin = serde_json::to_vec(&serde_json::json!({
        "context": serde_json::to_value(&ctx).expect("ctx"),
        "podMetrics": read_fixture::<serde_json::Value>("pod-metrics.json").expect("pods"),
    }))
    .expect("json");
    group.sample_size(20);
    group.bench_function("cpa-python-process", |b| {
        b.iter(|| {
            let mut child = Command::new("python3")
                .arg(&script)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("python3 (the CPA baseline) must be installed");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(&stdin)
                .expect("write");
            let out = child.wait_with_output().expect("python3");
            let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
            assert_eq!(answer["targetReplicas"], 6);
        });
    });
    group.finish();

    let mut group = c.benchmark_group("load");
    group.sample_size(10);
    let cold = sandbox(true, None);
    let digest = wasmscaler::sandbox::sha256(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    group.bench_function("compile", |b| {
        b.to_async(&rt).iter(|| async {
            cold.evict(&digest);
            let loaded = cold.load(bytes.clone()).await.expect("load");
            assert_eq!(loaded.source, LoadSource::Compiled);
        });
    });
    let cache = tempfile::tempdir().expect("tempdir");
    let cached = sandbox(true, Some(cache.path().to_path_buf()));
    rt.block_on(cached.load(bytes.clone()))
        .expect("warm the disk cache");
    group.bench_function("disk-cache", |b| {
        b.to_async(&rt).iter(|| async {
            cached.evict(&digest);
            let loaded = cached.load(bytes.clone()).await.expect("load");
            assert_eq!(loaded.source, LoadSource::Disk);
        });
    });
    group.bench_function("memory-cache", |b| {
        b.to_async(&rt).iter(|| async {
            let loaded = cached.load(bytes.clone()).await.expect("load");
            assert_eq!(loaded.source, LoadSource::Memory);
        });
    });
    group.finish();
}

fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// The other-language guests benchmarked: all in a full run, the compiled ones in a smoke run.
fn languages() -> &'static [&'static str] {
    if full_run() {
        &["c", "wat", "js", "py"]
    } else {
        &["c", "wat"]
    }
}

/// Per language: the component's size, its first load (validate + compile with Cranelift)
/// and a load from the on-disk cache (median of 5), each in a fresh sandbox sharing one
/// cache directory. Timed by hand: a compile of an interpreted guest takes seconds, too long
/// for criterion's minimum of ten samples.
fn print_load_table(rt: &tokio::runtime::Runtime) {
    println!("\n| guest | size | first load (compile) | cached load (disk) | first ÷ cached |");
    println!("|---|---|---|---|---|");
    let rust = build_rust_guest("guests/cpu-target").expect("guest build");
    let mut guests = vec![("rust".to_owned(), rust)];
    for language in languages() {
        let wasm = build_language_guest(language).expect("language guest build");
        guests.push(((*language).to_owned(), wasm));
    }
    for (language, wasm) in guests {
        let cache = tempfile::tempdir().expect("tempdir");
        let bytes = std::fs::read(&wasm).expect("guest bytes");
        let started = std::time::Instant::now();
        let first = rt
            .block_on(sandbox(true, Some(cache.path().to_path_buf())).load(bytes.clone()))
            .expect("first load");
        let compile = started.elapsed();
        assert_eq!(first.source, LoadSource::Compiled);
        let mut cached: Vec<Duration> = (0..5)
            .map(|_| {
                let fresh = sandbox(true, Some(cache.path().to_path_buf()));
                let started = std::time::Instant::now();
                let loaded = rt.block_on(fresh.load(bytes.clone())).expect("cached load");
                assert_eq!(loaded.source, LoadSource::Disk);
                started.elapsed()
            })
            .collect();
        cached.sort();
        let median = cached[cached.len() / 2];
        println!(
            "| {language} | {:.1} MB | {} | {} | {:.0}× |",
            bytes.len() as f64 / 1e6,
            human(compile.as_nanos() as f64),
            human(median.as_nanos() as f64),
            compile.as_secs_f64() / median.as_secs_f64()
        );
    }
}

fn human(ns: f64) -> String {
    match ns {
        n if n >= 1e6 => format!("{:.2} ms", n / 1e6),
        n if n >= 1e3 => format!("{:.1} µs", n / 1e3),
        n => format!("{n:.0} ns"),
    }
}

fn print_table() {
    let rows = [
        (
            "decision",
            "cpa-python-process",
            "decision",
            "cpa-python-process",
        ),
        (
            "decision",
            "wasm-on-demand",
            "decision",
            "cpa-python-process",
        ),
        ("decision", "wasm-pooling", "decision", "cpa-python-process"),
        ("decision", "wasm-wat", "decision", "cpa-python-process"),
        ("decision", "wasm-c", "decision", "cpa-python-process"),
        ("decision", "wasm-js", "decision", "cpa-python-process"),
        ("decision", "wasm-py", "decision", "cpa-python-process"),
        ("load", "compile", "load", "compile"),
        ("load", "disk-cache", "load", "compile"),
        ("load", "memory-cache", "load", "compile"),
    ];
    println!("\n| benchmark | median | baseline | baseline ÷ this |");
    println!("|---|---|---|---|");
    for (group, name, base_group, base) in rows {
        let (Some(this), Some(baseline)) = (median_ns(group, name), median_ns(base_group, base))
        else {
            continue;
        };
        println!(
            "| {group}/{name} | {} | {base_group}/{base} | {:.0}× |",
            human(this),
            baseline / this
        );
    }
}

fn main() {
    let mut criterion = wasmscaler_tests::criterion!();
    benches(&mut criterion);
    criterion.final_summary();
    // `cargo bench` passes --bench; under `cargo test` criterion only runs each benchmark once.
    if full_run() {
        print_table();
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    print_load_table(&rt);
}
