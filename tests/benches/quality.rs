//! Decision quality: the predictive guest (as `guests/predictive/simulate.yaml` configures
//! it) against the HPA baseline (the `cpu-target` guest with the HPA's default behavior, at
//! the same target utilization, bounds and interval), on the same simulated system with a
//! 90 s startup, trace by trace.
//!
//! Not a timing: it prints, per trace, both policies' under-provisioned minutes and
//! replica-hours and the ratios predictive ÷ HPA. `cargo bench --bench quality` replays the
//! synthetic traces of tests/fixtures/traces and the real ones `fetch-real.py` writes (it
//! runs it: pip downloads two wheels once); under `cargo test` it replays only the short
//! synthetic traces, as a smoke run.

use std::path::PathBuf;
use std::time::Duration;

use wasmscaler::config::ConfigFile;
use wasmscaler::duration::HumanDuration;
use wasmscaler::engine::{AutoscalerSpec, Guests};
use wasmscaler::policies::PolicyRef;
use wasmscaler::simulate::{self, Columns, PolicyReport, SystemModel, Trace};
use wasmscaler_tests::{build_rust_guest, repo_root, test_sandbox};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn traces() -> Vec<(String, PathBuf)> {
    let synthetic = repo_root().join("tests/fixtures/traces");
    let mut names = vec!["step", "spike", "sawtooth"];
    if full_run() {
        names.push("diurnal");
    }
    let mut traces: Vec<(String, PathBuf)> = names
        .into_iter()
        .map(|n| (n.to_owned(), synthetic.join(format!("{n}.csv"))))
        .collect();
    if full_run() {
        let output = std::process::Command::new("python3")
            .arg(synthetic.join("fetch-real.py"))
            .output()
            .expect("running fetch-real.py");
        assert!(
            output.status.success(),
            "fetch-real.py: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        for path in String::from_utf8_lossy(&output.stdout).lines() {
            let path = PathBuf::from(path);
            let name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
            traces.push((format!("{} (real)", name.unwrap_or_default()), path));
        }
    }
    traces
}

/// The predictive autoscaler of guests/predictive/simulate.yaml, running `wasm`.
fn predictive(wasm: &std::path::Path) -> AutoscalerSpec {
    let config = ConfigFile::load(&repo_root().join("guests/predictive/simulate.yaml"))
        .expect("guests/predictive/simulate.yaml");
    let mut spec = config.autoscalers[0].clone();
    spec.scaling.policy = Some(PolicyRef::File(wasm.to_owned()));
    spec
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let sandbox = test_sandbox().expect("sandbox");
    let load = |dir: &str| {
        let wasm = build_rust_guest(dir).expect("guest build");
        let component = rt
            .block_on(sandbox.load_file(&wasm))
            .expect("load")
            .component;
        (wasm, Guests::pair(component.clone(), component))
    };
    let (predictive_wasm, predictive_guests) = load("guests/predictive");
    let (hpa_wasm, hpa_guests) = load("guests/cpu-target");
    let predictive_spec = predictive(&predictive_wasm);
    let target: f64 = predictive_spec.scaling.config["targetUtilization"]
        .parse()
        .expect("targetUtilization");
    let hpa_spec =
        simulate::hpa_baseline(&predictive_spec, PolicyRef::File(hpa_wasm.clone()), target);
    let model = SystemModel {
        startup: HumanDuration(Duration::from_secs(90)),
        ..SystemModel::default()
    };

    println!(
        "\n| trace | policy | under-provisioned min | replica-hours | scale events | predictive ÷ HPA: under-provisioned, replica-hours |"
    );
    println!("|---|---|---:|---:|---:|---|");
    for (name, path) in traces() {
        let trace = Trace::read(&path, &Columns::default()).expect("trace");
        let run = |spec: &AutoscalerSpec, guests: &Guests| -> PolicyReport {
            rt.block_on(simulate::simulate(
                spec,
                guests.clone(),
                &trace,
                &model,
                &mut |_| {},
            ))
            .expect("simulate")
        };
        let p = run(&predictive_spec, &predictive_guests);
        let h = run(&hpa_spec, &hpa_guests);
        assert_eq!(p.failed_runs, 0, "{name}: predictive runs failed");
        assert_eq!(h.failed_runs, 0, "{name}: HPA runs failed");
        let ratio = |a: f64, b: f64| {
            if b > 0.0 {
                format!("{:.2}", a / b)
            } else if a > 0.0 {
                "∞".into()
            } else {
                "-".into()
            }
        };
        for r in [&h, &p] {
            println!(
                "| {name} | {} | {:.1} | {:.1} | {} | {} |",
                r.name,
                r.under_provisioned_minutes,
                r.replica_hours,
                r.scale_events,
                if std::ptr::eq(r, &p) {
                    format!(
                        "{}, {}",
                        ratio(p.under_provisioned_minutes, h.under_provisioned_minutes),
                        ratio(p.replica_hours, h.replica_hours)
                    )
                } else {
                    String::new()
                }
            );
        }
    }
}
