//! "Write your policy in any language", tested: the cpu-target policy written in
//! JavaScript, Python, C and WAT is built from source with the project's pinned toolchains
//! (tests/toolchains/install.sh), run through the host under the default limits, and must
//! agree with the Rust guest on every shared case — the same replica count, or the same kind
//! of error.

use std::sync::Arc;

use wasmscaler::contract::model::{Context, GuestError, PodMetrics};
use wasmscaler::sandbox::{
    CallEnv, Capabilities, GuestComponent, Limits, SandboxError, StaticPodMetrics,
};
use wasmscaler_tests::{build_language_guest, build_rust_guest, read_fixture, test_sandbox};

/// One shared case: the context's config and current replicas, each pod's CPU usage and
/// request (millicores; `None`: no metrics for that replica), and what the Rust guest decides.
struct Case {
    name: &'static str,
    config: &'static [(&'static str, &'static str)],
    current: u32,
    pods: &'static [Option<(u64, Option<u64>)>],
    expected: Expected,
}

#[derive(Debug, Clone, PartialEq)]
enum Expected {
    Replicas(u32),
    /// The error's kind: invalid-config, unavailable, ...
    Error(&'static str),
}

const TARGET_50: &[(&str, &str)] = &[("targetUtilization", "50")];

const CASES: &[Case] = &[
    Case {
        name: "the fixture: 90% against 50%",
        config: TARGET_50,
        current: 3,
        pods: &[
            Some((450, Some(500))),
            Some((400, Some(500))),
            Some((500, Some(500))),
        ],
        expected: Expected::Replicas(6),
    },
    Case {
        name: "on target: held",
        config: TARGET_50,
        current: 3,
        pods: &[
            Some((260, Some(500))),
            Some((240, Some(500))),
            Some((250, Some(500))),
        ],
        expected: Expected::Replicas(3),
    },
    Case {
        name: "within the default tolerance: held",
        config: TARGET_50,
        current: 4,
        pods: &[Some((270, Some(500))); 4],
        expected: Expected::Replicas(4),
    },
    Case {
        name: "tolerance 0: scaled",
        config: &[("targetUtilization", "50"), ("tolerance", "0")],
        current: 4,
        pods: &[Some((270, Some(500))); 4],
        expected: Expected::Replicas(5),
    },
    Case {
        name: "idle: scaled down",
        config: TARGET_50,
        current: 3,
        pods: &[Some((50, Some(500))); 3],
        expected: Expected::Replicas(1),
    },
    Case {
        name: "a replica without metrics is left out",
        config: &[("targetUtilization", "80")],
        current: 2,
        pods: &[Some((1000, Some(500))), None],
        expected: Expected::Replicas(5),
    },
    Case {
        name: "fractional target",
        config: &[("targetUtilization", " 12.5 ")],
        current: 2,
        pods: &[Some((100, Some(1000))), Some((150, Some(1000)))],
        expected: Expected::Replicas(2),
    },
    Case {
        name: "target missing",
        config: &[],
        current: 3,
        pods: &[Some((450, Some(500)))],
        expected: Expected::Error("invalid-config"),
    },
    Case {
        name: "target not a number",
        config: &[("targetUtilization", "fifty")],
        current: 3,
        pods: &[Some((450, Some(500)))],
        expected: Expected::Error("invalid-config"),
    },
    Case {
        name: "target zero",
        config: &[("targetUtilization", "0")],
        current: 3,
        pods: &[Some((450, Some(500)))],
        expected: Expected::Error("invalid-config"),
    },
    Case {
        name: "no metrics at all",
        config: TARGET_50,
        current: 3,
        pods: &[None, None],
        expected: Expected::Error("unavailable"),
    },
    Case {
        name: "a pod without a CPU request",
        config: TARGET_50,
        current: 2,
        pods: &[Some((450, Some(500))), Some((100, None))],
        expected: Expected::Error("invalid-config"),
    },
];

fn setup(case: &Case) -> anyhow::Result<(Context, CallEnv)> {
    let mut ctx: Context = read_fixture("cpu-context.json")?;
    let template: Vec<PodMetrics> = read_fixture("pod-metrics.json")?;
    let (Some(replica), Some(usage)) = (ctx.replicas.first().cloned(), template.first().cloned())
    else {
        anyhow::bail!("the fixtures have no replica or pod");
    };
    ctx.config = case
        .config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    ctx.target.current_replicas = case.current;
    ctx.replicas = Vec::new();
    let mut pods = Vec::new();
    for (i, pod) in case.pods.iter().enumerate() {
        let name = format!("web-{i}");
        ctx.replicas.push(wasmscaler::contract::model::Replica {
            name: name.clone(),
            ..replica.clone()
        });
        if let Some((cpu, request)) = pod {
            pods.push(PodMetrics {
                pod: name,
                cpu_millicores: *cpu,
                cpu_request_millicores: *request,
                ..usage.clone()
            });
        }
    }
    let env = CallEnv {
        limits: Limits::default(),
        capabilities: Capabilities {
            kubernetes_metrics: true,
            ..Default::default()
        },
        pod_metrics: Some(Arc::new(StaticPodMetrics(pods))),
        ..Default::default()
    };
    Ok((ctx, env))
}

fn error_kind(e: &SandboxError) -> Option<&'static str> {
    match e {
        SandboxError::Guest(GuestError::InvalidConfig(_)) => Some("invalid-config"),
        SandboxError::Guest(GuestError::Unavailable(_)) => Some("unavailable"),
        SandboxError::Guest(GuestError::Denied(_)) => Some("denied"),
        SandboxError::Guest(GuestError::Other(_)) => Some("other"),
        _ => None,
    }
}

/// gather then evaluate, as the engine runs them; the outcome and the fuel of both calls.
async fn decide(guest: &GuestComponent, case: &Case) -> anyhow::Result<(Expected, u64)> {
    let (ctx, env) = setup(case)?;
    let samples = match guest.gather(&ctx, &env).await {
        Ok(out) => out,
        Err(e) => {
            let kind = error_kind(&e)
                .ok_or_else(|| anyhow::anyhow!("{}: gather failed: {e}", case.name))?;
            return Ok((Expected::Error(kind), 0));
        }
    };
    match guest.evaluate(&ctx, &samples.value, &env).await {
        Ok(out) => Ok((
            Expected::Replicas(out.value.target_replicas),
            samples.fuel_consumed + out.fuel_consumed,
        )),
        Err(e) => {
            let kind = error_kind(&e)
                .ok_or_else(|| anyhow::anyhow!("{}: evaluate failed: {e}", case.name))?;
            Ok((Expected::Error(kind), samples.fuel_consumed))
        }
    }
}

/// Runs every case through the Rust guest and `language`'s, asserting both agree with the
/// expectation; prints the fuel of the costliest decision.
async fn agrees_with_rust(language: &str) -> anyhow::Result<()> {
    let sandbox = test_sandbox()?;
    let rust = sandbox
        .load_file(&build_rust_guest("guests/cpu-target")?)
        .await?
        .component;
    let other = sandbox
        .load_file(&build_language_guest(language)?)
        .await?
        .component;
    assert_eq!(
        serde_json::to_value(other.world())?,
        "policy",
        "{language}: the guest must implement the policy world"
    );
    let (mut most_fuel, mut rust_fuel) = (0, 0);
    for case in CASES {
        let (from_rust, fuel) = decide(&rust, case).await?;
        rust_fuel = rust_fuel.max(fuel);
        assert_eq!(from_rust, case.expected, "Rust guest, case {:?}", case.name);
        let (from_other, fuel) = decide(&other, case).await?;
        assert_eq!(
            from_other, from_rust,
            "{language} guest disagrees with Rust on {:?}",
            case.name
        );
        most_fuel = most_fuel.max(fuel);
    }
    assert!(most_fuel > 0);
    assert!(
        most_fuel < Limits::default().fuel / 2,
        "{language}: {most_fuel} fuel per decision leaves too little headroom under the default"
    );
    println!(
        "{language}: {} cases agree; at most {most_fuel} fuel per decision (Rust: {rust_fuel})",
        CASES.len()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_guest_agrees_with_rust() -> anyhow::Result<()> {
    agrees_with_rust("js").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_guest_agrees_with_rust() -> anyhow::Result<()> {
    agrees_with_rust("py").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_guest_agrees_with_rust() -> anyhow::Result<()> {
    agrees_with_rust("c").await
}

/// The C bindings are committed (so no test run builds wit-bindgen); they must come from
/// today's WIT.
#[test]
fn the_committed_c_bindings_match_the_wit() -> anyhow::Result<()> {
    let guest = wasmscaler_tests::repo_root().join("guests/cpu-target-c");
    let recorded = std::fs::read_to_string(guest.join("gen/wit.sha256"))?;
    let actual = wasmscaler_tests::wit_digest(&guest.join("wit"))?;
    assert_eq!(
        recorded.trim(),
        actual,
        "guests/cpu-target-c/wit changed since gen/ was made: run guests/cpu-target-c/regen.sh"
    );
    Ok(())
}

/// Also the contract's compatibility test: the WAT guest is written with the 0.1.0 names, so it
/// stays a component of contract 0.1.0 and must keep running on this 0.1.1 host unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wat_guest_agrees_with_rust() -> anyhow::Result<()> {
    let wat = test_sandbox()?
        .load_file(&build_language_guest("wat")?)
        .await?
        .component;
    let exports = wat.info().exports;
    assert!(
        !exports.is_empty() && exports.iter().all(|e| e.ends_with("@0.1.0")),
        "{exports:?}"
    );
    agrees_with_rust("wat").await
}

/// The toolchain pinned by rust-toolchain.toml: a project outside the repository does not
/// see the file, and the wasm32-wasip2 target is installed for that toolchain.
fn pinned_toolchain() -> anyhow::Result<String> {
    let text = std::fs::read_to_string(wasmscaler_tests::repo_root().join("rust-toolchain.toml"))?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("channel = "))
        .map(|c| c.trim_matches('"').to_owned())
        .ok_or_else(|| anyhow::anyhow!("no channel in rust-toolchain.toml"))
}

/// `wasmscaler new` for every language, in a directory outside the repository: each
/// project builds with the pinned toolchains and its own test (`test.sh`: build, then
/// `wasmscaler eval` on the sample context) passes.
#[test]
fn every_template_builds_out_of_tree_and_decides() -> anyhow::Result<()> {
    let root = wasmscaler_tests::repo_root();
    wasmscaler_tests::toolchains_ready()?;
    let tools = root.join(".cache/toolchains");
    let bin = wasmscaler_tests::wasmscaler_bin()?;
    let toolchain = pinned_toolchain()?;
    let dir = tempfile::tempdir()?;
    // Each language's project is made, built and tested on a thread of its own.
    let make_and_test = |lang: &str| -> anyhow::Result<()> {
        let project = dir.path().join(format!("my-{lang}-policy"));
        let out = std::process::Command::new(&bin)
            .args(["new", "--lang", lang, &format!("my-{lang}-policy"), "--dir"])
            .arg(&project)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "new --lang {lang}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = std::process::Command::new("bash")
            .arg(project.join("test.sh"))
            .env("WASMSCALER", &bin)
            .env(
                "COMPONENTIZE_JS",
                tools.join("node/node_modules/.bin/componentize-js"),
            )
            .env("COMPONENTIZE_PY", tools.join("python/bin/componentize-py"))
            .env("RUSTUP_TOOLCHAIN", &toolchain)
            // The guests' shared target directory: wit-bindgen compiles once for all.
            .env("CARGO_TARGET_DIR", wasmscaler_tests::guest_target_dir())
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        anyhow::ensure!(
            out.status.success() && stdout.contains("test.sh: ok"),
            "{lang} template: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        anyhow::ensure!(stdout.contains("\"targetReplicas\": 6"), "{lang}: {stdout}");
        Ok(())
    };
    std::thread::scope(|scope| {
        let runs: Vec<_> = ["rust", "js", "python", "c"]
            .into_iter()
            .map(|lang| (lang, scope.spawn(move || make_and_test(lang))))
            .collect();
        for (lang, run) in runs {
            match run.join() {
                Ok(result) => result?,
                Err(_) => anyhow::bail!("the {lang} template's thread panicked"),
            }
        }
        anyhow::Ok(())
    })?;
    // An existing project is never overwritten.
    let again = std::process::Command::new(&bin)
        .args(["new", "--lang", "rust", "my-rust-policy", "--dir"])
        .arg(dir.path().join("my-rust-policy"))
        .output()?;
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
    Ok(())
}
