//! `wasmscaler eval` and `inspect` as a user runs them.

use std::process::Command;

use wasmscaler_tests as support;

use support::{build_rust_guest, fixture};

fn wasmscaler_bin() -> anyhow::Result<&'static str> {
    Ok(env!("CARGO_BIN_EXE_wasmscaler"))
}

#[test]
fn eval_prints_samples_decision_and_fuel() -> anyhow::Result<()> {
    let wasm = build_rust_guest("guests/cpu-target")?;
    let cache = tempfile::tempdir()?;
    let run = || {
        Command::new(wasmscaler_bin()?)
            .arg("eval")
            .arg("--policy")
            .arg(&wasm)
            .arg("--context")
            .arg(fixture("cpu-context.json"))
            .arg("--pod-metrics")
            .arg(fixture("pod-metrics.json"))
            .arg("--cache-dir")
            .arg(cache.path())
            .output()
            .map_err(anyhow::Error::from)
    };
    let first = run()?;
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&first.stdout)?;
    assert_eq!(report["decision"]["targetReplicas"], 6);
    assert_eq!(report["samples"].as_array().map(Vec::len), Some(3));
    assert!(report["fuelConsumed"].as_u64().is_some_and(|f| f > 0));
    assert!(report["durationMicros"].as_u64().is_some());
    assert_eq!(report["components"][0]["loadedFrom"], "compiled");

    let second = run()?;
    let report: serde_json::Value = serde_json::from_slice(&second.stdout)?;
    assert_eq!(report["components"][0]["loadedFrom"], "disk");
    assert_eq!(report["decision"]["targetReplicas"], 6);
    Ok(())
}

#[test]
fn eval_fails_with_one_line_errors() -> anyhow::Result<()> {
    let wasm = build_rust_guest("guests/cpu-target")?;
    let eval = |extra: &[&str]| {
        let mut cmd = Command::new(wasmscaler_bin()?);
        cmd.arg("eval")
            .arg("--no-cache")
            .arg("--context")
            .arg(fixture("cpu-context.json"))
            .args(extra);
        cmd.output().map_err(anyhow::Error::from)
    };
    let wasm = wasm.to_string_lossy().into_owned();

    // Capability not granted.
    let out = eval(&["--policy", &wasm])?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("kubernetes-metrics") && stderr.contains("not granted"),
        "{stderr}"
    );

    // Fuel too small for the guest.
    let pods = fixture("pod-metrics.json").to_string_lossy().into_owned();
    let out = eval(&["--policy", &wasm, "--pod-metrics", &pods, "--fuel", "100"])?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("fuel exhausted"));

    // Not a component.
    let bogus = fixture("cpu-context.json").to_string_lossy().into_owned();
    let out = eval(&["--policy", &bogus])?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a WebAssembly binary"));

    // A context file with an unknown key names it.
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("ctx.json");
    std::fs::write(
        &bad,
        r#"{"autoscalerName":"x","nowMs":0,"target":{"kind":"k","name":"n","currentReplicas":1,"maxReplicas":2},"replicaz":[]}"#,
    )?;
    let mut cmd = Command::new(wasmscaler_bin()?);
    let out = cmd
        .args(["eval", "--no-cache", "--policy", &wasm, "--context"])
        .arg(&bad)
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("replicaz"));
    Ok(())
}

#[test]
fn inspect_names_world_capabilities_and_digest() -> anyhow::Result<()> {
    let wasm = build_rust_guest("guests/capacity")?;
    let out = Command::new(wasmscaler_bin()?)
        .args(["inspect", "--json", "--no-cache"])
        .arg(&wasm)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(info["world"], "policy");
    assert_eq!(info["capabilities"], serde_json::json!(["http"]));
    let bytes = std::fs::read(&wasm)?;
    assert_eq!(info["size"], bytes.len());
    assert_eq!(
        info["sha256"],
        wasmscaler::sandbox::sha256(&bytes)
            .map(|b| format!("{b:02x}"))
            .concat()
    );
    Ok(())
}

fn write_config(dir: &std::path::Path, body: &str) -> anyhow::Result<std::path::PathBuf> {
    let path = dir.join("wasmscaler.yaml");
    std::fs::write(&path, body)?;
    Ok(path)
}

fn local_config(policy: &std::path::Path, base_port: u16, extra: &str) -> String {
    format!(
        r#"stateDir: state
autoscalers:
  - name: workers
    target:
      local:
        command: ["python3", "{worker}"]
        basePort: {base_port}
        gracePeriod: 2s
    policy: {policy}
    minReplicas: 2
    maxReplicas: 4
    interval: 1s
    config:
      replicaCapacity: "4"
      minAvailableResources: "2"
      apiPath: /status
    capabilities:
      http:
        allow: ["http://{{replica}}/status"]
{extra}"#,
        worker = support::repo_root().join("guests/demo/worker.py").display(),
        policy = policy.display(),
    )
}

/// Runs `wasmscaler ARGS`: whether it succeeded, its stdout and its stderr.
fn wasmscaler<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> anyhow::Result<(bool, String, String)> {
    let out = Command::new(wasmscaler_bin()?).args(args).output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn validate(config: &std::path::Path) -> anyhow::Result<(bool, String, String)> {
    wasmscaler(&["validate".as_ref(), config.as_os_str()])
}

#[test]
fn validate_accepts_a_good_config_and_names_what_is_wrong_in_bad_ones() -> anyhow::Result<()> {
    let policy = build_rust_guest("guests/capacity")?;
    let dir = tempfile::tempdir()?;

    let good = write_config(dir.path(), &local_config(&policy, 19_500, ""))?;
    let (ok, stdout, stderr) = validate(&good)?;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("workers: ok")
            && stdout.contains("1 autoscaler(s), 0 lifecycle handler(s) valid"),
        "{stdout}"
    );

    let cases: Vec<(String, &[&str])> = vec![
        (
            local_config(&policy, 19_500, "    replicaz: 3\n"),
            &["unknown field `replicaz`", "line 20 column 5"],
        ),
        (
            local_config(&policy, 19_500, "").replace("minReplicas: 2", "minReplicas: 9"),
            &[
                "wasmscaler.yaml:3: autoscalers[0] (workers)",
                "minReplicas (9) is greater than maxReplicas (4)",
            ],
        ),
        (
            local_config(&policy, 19_500, "").replace("interval: 1s", "interval: 1x"),
            &["unknown duration unit", "line"],
        ),
        (
            local_config(&policy, 19_500, "").replace("maxReplicas: 4", "maxReplicas: -4"),
            &["maxReplicas", "line 11"],
        ),
        (
            local_config(&policy, 19_500, "").replace("      local:", "      locale:"),
            &["unknown field `locale`", "line"],
        ),
        (
            local_config(&std::path::PathBuf::from("missing.wasm"), 19_500, ""),
            &["autoscalers[0] (workers): loading", "missing.wasm"],
        ),
        (
            local_config(&policy, 19_500, "").replace(
                "    capabilities:\n      http:\n        allow: [\"http://{replica}/status\"]\n",
                "",
            ),
            &["capability `http` is not granted"],
        ),
    ];
    for (body, expected) in cases {
        let path = write_config(dir.path(), &body)?;
        let (ok, _, stderr) = validate(&path)?;
        assert!(!ok, "accepted:\n{body}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        for needle in expected {
            assert!(stderr.contains(needle), "missing {needle:?} in: {stderr}");
        }
    }

    // A policy for another world.
    let wrong = dir.path().join("wrong.wasm");
    std::fs::write(&wrong, support::hostile_wat("wrong-world.wat")?)?;
    let path = write_config(dir.path(), &local_config(&wrong, 19_500, ""))?;
    let (ok, _, stderr) = validate(&path)?;
    assert!(!ok && stderr.contains("world mismatch"), "{stderr}");
    Ok(())
}

/// A plain HTTP/1.1 GET over a TCP stream; returns the whole response.
fn http_get(port: u16, path: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

fn accepting(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &([127, 0, 0, 1], port).into(),
        std::time::Duration::from_millis(200),
    )
    .is_ok()
}

fn wait_for(what: &str, check: impl Fn() -> bool) {
    let started = std::time::Instant::now();
    while !check() {
        assert!(
            started.elapsed().as_secs() < 20,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn sigterm_to_the_host_stops_every_replica_and_writes_state() -> anyhow::Result<()> {
    let policy = build_rust_guest("guests/capacity")?;
    let dir = tempfile::tempdir()?;
    let config = write_config(dir.path(), &local_config(&policy, 19_600, ""))?;
    let mut host = Command::new(wasmscaler_bin()?)
        .args(["run", "--listen", "127.0.0.1:19690", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .env("WASMSCALER_API_TOKEN", "t0ken")
        .spawn()?;
    wait_for("two replicas", || accepting(19_600) && accepting(19_601));
    wait_for("a completed run to persist state", || {
        dir.path().join("state/workers.json").exists()
    });
    // The REST API is up beside the engine.
    let health = http_get(19_690, "/healthz")?;
    assert!(
        health.starts_with("HTTP/1.1 200") && health.ends_with("ok"),
        "{health}"
    );
    let list = http_get(19_690, "/api/v1/autoscalers")?;
    assert!(list.contains(r#""name":"workers""#), "{list}");
    // `wasmscaler policy` against the running host.
    let policy_cli =
        |args: &[&str], token: Option<&str>| -> anyhow::Result<(bool, String, String)> {
            let mut cmd = Command::new(wasmscaler_bin()?);
            cmd.arg("policy")
                .args(args)
                .args(["--server", "http://127.0.0.1:19690"]);
            match token {
                Some(t) => cmd.env("WASMSCALER_API_TOKEN", t),
                None => cmd.env_remove("WASMSCALER_API_TOKEN"),
            };
            let out = cmd.output()?;
            Ok((
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ))
        };
    let wasm = policy.to_string_lossy().into_owned();
    let (ok, _, stderr) = policy_cli(&["push", "cap", &wasm], None)?;
    assert!(
        !ok && stderr.contains("401") && stderr.contains("missing bearer token"),
        "{stderr}"
    );
    let (ok, stdout, stderr) = policy_cli(&["push", "cap", &wasm], Some("t0ken"))?;
    assert!(ok, "{stderr}");
    assert!(stdout.contains(r#""world": "policy""#), "{stdout}");
    let (ok, stdout, _) = policy_cli(&["list"], None)?;
    assert!(ok && stdout.contains(r#""name": "cap""#), "{stdout}");
    let (ok, _, stderr) = policy_cli(&["delete", "cap"], Some("t0ken"))?;
    assert!(
        !ok && stderr.contains("used by autoscaler(s) workers"),
        "{stderr}"
    );
    let metrics = http_get(19_690, "/metrics")?;
    assert!(
        metrics.contains("wasmscaler_runs_total{autoscaler=\"workers\""),
        "{metrics}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(host.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = host.try_wait()? {
            break status;
        }
        assert!(
            started.elapsed().as_secs() < 20,
            "host did not stop on SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
    assert!(
        !accepting(19_600) && !accepting(19_601),
        "replicas still listening"
    );
    Ok(())
}

fn eval_json(args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let out = Command::new(wasmscaler_bin()?)
        .args(["eval", "--no-cache"])
        .args(args)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[test]
fn eval_runs_the_http_guests_with_granted_capabilities() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;

    // queue-progress: HTTP to the queue service, state kept in a file between two evals.
    let queue = support::JsonServer::start()?;
    queue.route("/queue", 200, r#"{"total": 100, "processed": 30}"#);
    let ctx = dir.path().join("queue.json");
    let write_ctx = |now_ms: i64| {
        std::fs::write(
            &ctx,
            serde_json::json!({
                "autoscalerName": "batch", "nowMs": now_ms,
                "target": {"kind": "Job", "name": "render", "currentReplicas": 4, "maxReplicas": 10},
                "config": {"queueUrl": format!("http://{}/queue", queue.addr), "expectedTimeSeconds": "100",
                           "actuationSize": "2"},
            })
            .to_string(),
        )
    };
    let wasm = build_rust_guest("guests/queue-progress")?
        .to_string_lossy()
        .into_owned();
    let state = dir.path().join("state.json").to_string_lossy().into_owned();
    let allow = format!("http://{}/queue", queue.addr);
    let ctx_arg = ctx.to_string_lossy().into_owned();
    // Two evals, a minute apart, sharing the state file (the job's start time).
    let eval_at = |now_ms: i64| -> anyhow::Result<serde_json::Value> {
        write_ctx(now_ms)?;
        eval_json(&[
            "--policy",
            &wasm,
            "--context",
            &ctx_arg,
            "--allow-http",
            &allow,
            "--state-file",
            &state,
        ])
    };
    let report = eval_at(1_000_000)?;
    assert_eq!(
        report["decision"]["targetReplicas"], 2,
        "ahead of schedule: {report}"
    );
    let report = eval_at(1_060_000)?;
    assert_eq!(
        report["decision"]["targetReplicas"], 6,
        "60% of the time, 30% done: {report}"
    );

    // capacity: per-replica HTTP through the {replica} allow-list pattern.
    let replicas = [support::JsonServer::start()?, support::JsonServer::start()?];
    replicas[0].route("/status", 200, r#"{"available": 0, "terminate": false}"#);
    replicas[1].route("/status", 200, r#"{"available": 1, "terminate": true}"#);
    let ctx = dir.path().join("capacity.json");
    std::fs::write(
        &ctx,
        serde_json::json!({
            "autoscalerName": "vms", "nowMs": 0,
            "target": {"kind": "local", "name": "vms", "currentReplicas": 2, "maxReplicas": 10},
            "replicas": [
                {"name": "vm-0", "address": replicas[0].addr.to_string()},
                {"name": "vm-1", "address": replicas[1].addr.to_string()},
            ],
            "config": {"replicaCapacity": "4", "minAvailableResources": "2", "apiPath": "/status"},
        })
        .to_string(),
    )?;
    let wasm = build_rust_guest("guests/capacity")?
        .to_string_lossy()
        .into_owned();
    let report = eval_json(&[
        "--policy",
        &wasm,
        "--context",
        &ctx.to_string_lossy(),
        "--allow-http",
        "http://{replica}/status",
    ])?;
    assert_eq!(report["decision"]["targetReplicas"], 2, "{report}");
    assert_eq!(
        report["decision"]["removeFirst"],
        serde_json::json!(["vm-1"])
    );
    assert_eq!(report["samples"].as_array().map(Vec::len), Some(4));
    Ok(())
}

#[test]
fn an_autoscaler_whose_target_fails_does_not_stop_the_others() -> anyhow::Result<()> {
    let policy = build_rust_guest("guests/capacity")?;
    let dir = tempfile::tempdir()?;
    // A second autoscaler whose replicas cannot start (no such program).
    let broken = format!(
        r#"  - name: broken
    target:
      local: {{ command: ["/nonexistent/worker"], basePort: 19720 }}
    policy: {policy}
    maxReplicas: 2
    capabilities:
      http:
        allow: ["http://{{replica}}/status"]
"#,
        policy = policy.display()
    );
    let config = write_config(dir.path(), &local_config(&policy, 19_700, &broken))?;
    let mut host = Command::new(wasmscaler_bin()?)
        .args(["run", "--listen", "127.0.0.1:19790", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .env_remove("NO_COLOR")
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let result = (|| -> anyhow::Result<()> {
        wait_for("the healthy autoscaler's replicas", || {
            accepting(19_700) && accepting(19_701)
        });
        let list = http_get(19_790, "/api/v1/autoscalers")?;
        assert!(list.contains(r#""name":"workers""#), "{list}");
        assert!(
            list.contains("broken") && list.contains("/nonexistent/worker"),
            "{list}"
        );
        Ok(())
    })();
    let _ = host.kill();
    let out = host.wait_with_output()?;
    result?;
    // The log went to a pipe, not a terminal: plain text, no colour codes.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot start"), "{stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "colour codes in a piped log: {stderr:?}"
    );
    Ok(())
}

#[test]
fn a_request_budget_of_zero_is_refused_with_its_flag_named() -> anyhow::Result<()> {
    for (flag, value) in [
        ("--kube-api-qps", "0"),
        ("--kube-api-qps", "-5"),
        ("--kube-api-burst", "0"),
    ] {
        let out = Command::new(wasmscaler_bin()?)
            .args(["controller", &format!("{flag}={value}")])
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value} accepted");
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
    }
    Ok(())
}

/// A config for `simulate`: the cpu-target guest (its local target is never started).
fn simulate_config(
    dir: &std::path::Path,
    name: &str,
    target: u32,
) -> anyhow::Result<std::path::PathBuf> {
    let wasm = build_rust_guest("guests/cpu-target")?;
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            r#"stateDir: state
sandbox:
  cacheDir: {cache}
autoscalers:
  - name: {name}
    target:
      local:
        command: ["false"]
        basePort: 1
    policy: {policy}
    minReplicas: 1
    maxReplicas: 20
    interval: 15s
    config:
      targetUtilization: "{target}"
    capabilities:
      kubernetesMetrics: true
"#,
            cache = support::test_cache_dir().display(),
            policy = wasm.display(),
        ),
    )?;
    Ok(path)
}

fn simulate(args: &[&std::ffi::OsStr]) -> anyhow::Result<(bool, String, String)> {
    wasmscaler(&[&["simulate".as_ref()], args].concat())
}

#[test]
fn simulate_compares_policies_with_the_baseline_in_a_table_json_chart_and_page()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let a = simulate_config(dir.path(), "tight", 50)?;
    let b = simulate_config(dir.path(), "loose", 80)?;
    let trace = support::repo_root().join("tests/fixtures/traces/step.csv");
    let json = dir.path().join("report.json");
    let out = dir.path().join("report");
    let baseline = build_rust_guest("guests/cpu-target")?;
    let (ok, stdout, stderr) = simulate(&[
        "--config".as_ref(),
        a.as_os_str(),
        "--compare".as_ref(),
        b.as_os_str(),
        "--trace".as_ref(),
        trace.as_os_str(),
        "--baseline".as_ref(),
        baseline.as_os_str(),
        "--startup".as_ref(),
        "30s".as_ref(),
        "--json".as_ref(),
        json.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ])?;
    assert!(ok, "{stderr}");
    // A header, a rule and one row per policy, baseline last.
    let rows: Vec<&str> = stdout.lines().collect();
    assert_eq!(rows.len(), 5, "{stdout}");
    assert!(rows[2].starts_with("| tight |"), "{stdout}");
    assert!(rows[3].starts_with("| loose |"), "{stdout}");
    assert!(rows[4].starts_with("| hpa (baseline) |"), "{stdout}");
    // Nothing logged per run on the default level.
    assert!(stderr.trim().is_empty(), "{stderr}");

    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    let policies = report["policies"].as_array().cloned().unwrap_or_default();
    assert_eq!(policies.len(), 3);
    // The baseline is the HPA at the first autoscaler's target: it decides as `tight` does.
    for key in ["underProvisionedMinutes", "replicaHours", "scaleEvents"] {
        assert_eq!(policies[0][key], policies[2][key], "{key}");
    }
    // A looser target buys fewer replica-hours.
    assert!(
        policies[1]["replicaHours"].as_f64() < policies[0]["replicaHours"].as_f64(),
        "{policies:?}"
    );
    assert_eq!(report["model"]["startup"], "30s");

    let svg = std::fs::read_to_string(out.join("chart.svg"))?;
    assert!(
        svg.contains("<svg") && svg.contains("tight: ready capacity"),
        "svg"
    );
    let png = std::fs::read(out.join("chart.png"))?;
    assert_eq!(png.get(..8), Some(&b"\x89PNG\r\n\x1a\n"[..]));
    let html = std::fs::read_to_string(out.join("report.html"))?;
    assert!(
        html.contains("<svg") && html.contains("<td>loose</td>"),
        "html"
    );
    Ok(())
}

#[test]
fn simulate_compares_with_the_built_in_hpa_unless_told_not_to() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = simulate_config(dir.path(), "tight", 50)?;
    let trace = support::repo_root().join("tests/fixtures/traces/step.csv");
    let json = dir.path().join("report.json");
    let run = |extra: &[&std::ffi::OsStr]| {
        let args = [
            &[
                "--config".as_ref(),
                config.as_os_str(),
                "--trace".as_ref(),
                trace.as_os_str(),
                "--startup".as_ref(),
                "30s".as_ref(),
                "--json".as_ref(),
                json.as_os_str(),
            ],
            extra,
        ]
        .concat();
        simulate(&args)
    };
    // No --baseline: the built-in cpu-target (the WAT guest, no build needed) is the HPA.
    let (ok, stdout, stderr) = run(&[])?;
    assert!(ok, "{stderr}");
    let rows: Vec<&str> = stdout.lines().collect();
    assert_eq!(rows.len(), 4, "{stdout}");
    assert!(rows[3].starts_with("| hpa (baseline) |"), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    let policies = report["policies"].as_array().cloned().unwrap_or_default();
    assert_eq!(policies.len(), 2);
    // It decides as the Rust cpu-target at the same target does, run for run.
    assert!(
        policies[0]["scaleEvents"].as_u64() > Some(0),
        "{policies:?}"
    );
    for key in [
        "underProvisionedMinutes",
        "replicaHours",
        "scaleEvents",
        "decisions",
    ] {
        assert_eq!(policies[0][key], policies[1][key], "{key}");
    }

    let (ok, stdout, stderr) = run(&["--no-baseline".as_ref()])?;
    assert!(ok, "{stderr}");
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    assert!(!stdout.contains("baseline"), "{stdout}");

    // A baseline that does not load is named.
    let (ok, _, stderr) = run(&["--baseline".as_ref(), "no-such.wasm".as_ref()])?;
    assert!(!ok);
    assert!(stderr.contains("no-such.wasm"), "{stderr}");
    Ok(())
}

#[test]
fn wit_writes_the_contract_this_binary_serves() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out_dir = dir.path().join("my-policy/wit");
    let (ok, stdout, stderr) = wasmscaler(&["wit".as_ref(), out_dir.as_os_str()])?;
    assert!(ok, "{stderr}");
    let written = std::fs::read_to_string(out_dir.join("policy.wit"))?;
    let repo = std::fs::read_to_string(support::repo_root().join("wit/policy.wit"))?;
    assert_eq!(written, repo);
    assert!(
        written.contains("package wasmscaler:policy@0.1.1"),
        "{written}"
    );
    assert!(stdout.contains("policy.wit"), "{stdout}");
    // Without a directory it prints the same text.
    let (ok, printed, _) = wasmscaler(&["wit"])?;
    assert!(ok);
    assert_eq!(printed, repo);
    // A directory that cannot be made is named.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "")?;
    let (ok, _, stderr) = wasmscaler(&["wit".as_ref(), file.join("wit").as_os_str()])?;
    assert!(!ok);
    assert!(stderr.contains("a-file"), "{stderr}");
    Ok(())
}

#[test]
fn componentize_refuses_an_oversized_or_foreign_module_naming_why() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("out.wasm");
    // Over the component size cap: refused from its size, before it is read (sparse file).
    let huge = dir.path().join("huge.wasm");
    std::fs::File::create(&huge)?.set_len((64 << 20) + 1)?;
    let (ok, _, stderr) = wasmscaler(&[
        "componentize".as_ref(),
        huge.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ])?;
    assert!(!ok);
    assert!(
        stderr.contains("huge.wasm") && stderr.contains("limit"),
        "{stderr}"
    );
    // A core module importing what no component type describes.
    let foreign = dir.path().join("foreign.wasm");
    std::fs::write(
        &foreign,
        wat::parse_str(r#"(module (import "nowhere" "f" (func)))"#)?,
    )?;
    let (ok, _, stderr) = wasmscaler(&[
        "componentize".as_ref(),
        foreign.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ])?;
    assert!(!ok);
    assert!(stderr.contains("foreign.wasm"), "{stderr}");
    assert!(!out.exists(), "nothing written on a refusal");
    Ok(())
}

#[test]
fn simulate_names_the_line_of_a_bad_trace() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = simulate_config(dir.path(), "cpu", 50)?;
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "time,load\n0,4\n60,5\n30,6\n",
            "trace.csv:4:",
            &["not after", "sorted"],
        ),
        (
            "time,load\n0,4\n60,-2\n",
            "trace.csv:3:",
            &["load -2 is negative"],
        ),
        (
            "t,rps\n0,4\n60,5\n",
            "trace.csv:1:",
            &["no column \"time\"", "--time-column"],
        ),
        ("time,load\n0,4\n60,lots\n", "trace.csv:3:", &["\"lots\""]),
    ];
    for (text, at, words) in cases {
        let trace = dir.path().join("trace.csv");
        std::fs::write(&trace, text)?;
        let (ok, stdout, stderr) = simulate(&[
            "--config".as_ref(),
            config.as_os_str(),
            "--trace".as_ref(),
            trace.as_os_str(),
        ])?;
        assert!(!ok, "{text:?} was accepted: {stdout}");
        assert!(stderr.contains(at), "{text:?}: {stderr}");
        for word in *words {
            assert!(stderr.contains(word), "{text:?}: {word:?} not in {stderr}");
        }
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    // The column options choose other headers.
    let trace = dir.path().join("trace.csv");
    std::fs::write(&trace, "t,rps\n0,4\n60,5\n")?;
    let (ok, _, stderr) = simulate(&[
        "--config".as_ref(),
        config.as_os_str(),
        "--trace".as_ref(),
        trace.as_os_str(),
        "--time-column".as_ref(),
        "t".as_ref(),
        "--column".as_ref(),
        "rps".as_ref(),
    ])?;
    assert!(ok, "{stderr}");
    Ok(())
}
