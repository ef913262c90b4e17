//! Containment: hostile components, guests and API clients against the real `wasmscaler`
//! binary and the real engine. One test per attack class; each checks that the limit meant to
//! stop the attack is the one named, that the host stayed up, and that what else runs beside
//! it kept running on time. Figures (peak memory, time, lateness) are printed with
//! `--nocapture`; the README's Containment table comes from them.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use wasmscaler::contract::model::Context;
use wasmscaler::engine::{Autoscaler, AutoscalerSpec, Fallback, Guests, Outcome};
use wasmscaler::sandbox::{Capabilities, Limits, MemoryState, Sandbox, StateGrant, StateStore};
use wasmscaler_tests::{MemoryTarget, bombs, build_rust_guest, repo_root, wasmscaler_bin};

// ------------------------------------------------------------------------------- helpers

/// A field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`).
fn proc_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn context_file(dir: &Path, attack: &str) -> anyhow::Result<PathBuf> {
    let ctx = Context {
        autoscaler_name: "victim".into(),
        config: BTreeMap::from([("attack".into(), attack.into())]),
        ..Context::default()
    };
    let path = dir.join(format!("context-{attack}.json"));
    std::fs::write(&path, serde_json::to_vec(&ctx)?)?;
    Ok(path)
}

/// `wasmscaler eval` of `policy`, granting what the hostile guest imports.
fn eval(policy: &Path, context: &Path, extra: &[&str]) -> anyhow::Result<Output> {
    eval_guests(&[("--policy", policy)], context, extra)
}

/// `wasmscaler eval` of components given by flag (`--policy`, or `--metrics` and
/// `--evaluator`), granting what the hostile guest imports.
fn eval_guests(guests: &[(&str, &Path)], context: &Path, extra: &[&str]) -> anyhow::Result<Output> {
    let mut command = Command::new(wasmscaler_bin()?);
    command.args(["eval", "--no-cache", "--allow", "log", "--allow", "state"]);
    for (flag, path) in guests {
        command.arg(flag).arg(path);
    }
    Ok(command
        .arg("--context")
        .arg(context)
        .args(extra)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .output()?)
}

fn hostile_guest() -> anyhow::Result<PathBuf> {
    build_rust_guest("tests/hostile/rust-hostile")
}

/// The random spinner, asking for `len` bytes per call.
fn random_spinner(dir: &Path, len: u64) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(repo_root().join("tests/hostile/random-spinner.wat"))?
        .replace("(i64.const 65536)", &format!("(i64.const {len})"));
    let path = dir.join(format!("random-spinner-{len}.wasm"));
    std::fs::write(&path, wat::parse_str(text)?)?;
    Ok(path)
}

/// A raw HTTP/1.1 exchange: the status, the body and how long the answer took.
fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> anyhow::Result<(u16, String, Duration)> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}Content-Length: {}\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let elapsed = started.elapsed();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    Ok((status, body, elapsed))
}

/// A `wasmscaler run --listen` process, stopped when dropped.
struct Host {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

const TOKEN: &str = "s3cret";

impl Host {
    fn start(config: &str, port: u16, extra: &[&str]) -> anyhow::Result<Host> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("wasmscaler.yaml");
        std::fs::write(&path, config)?;
        let child = Command::new(wasmscaler_bin()?)
            .args(["run", "--listen", &format!("127.0.0.1:{port}"), "--config"])
            .arg(&path)
            .args(extra)
            .env("WASMSCALER_API_TOKEN", TOKEN)
            .env(
                "RUST_LOG",
                std::env::var("CONTAINMENT_HOST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .spawn()?;
        let host = Host {
            child,
            port,
            _dir: dir,
        };
        let mut host = host;
        let started = Instant::now();
        while http(port, "GET", "/healthz", None, b"").is_err() {
            anyhow::ensure!(host.alive(), "the host exited");
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(60),
                "the host did not come up"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(host)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let (status, body, _) = http(self.port, "GET", path, None, b"")?;
        anyhow::ensure!(status == 200, "GET {path}: {status} {body}");
        Ok(serde_json::from_str(&body)?)
    }

    /// The records of autoscaler `name`, oldest first.
    fn records(&self, name: &str) -> anyhow::Result<Vec<Value>> {
        let status = self.get_json(&format!("/api/v1/autoscalers/{name}"))?;
        Ok(status["records"].as_array().cloned().unwrap_or_default())
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An autoscaler of `policy` on local `sleep` processes: nothing to reach, so only the
/// guests and the host are measured.
fn autoscaler_yaml(name: &str, policy: &str, port: u16, extra: &str) -> String {
    format!(
        r#"  - name: {name}
    target:
      local:
        command: ["sleep", "3600"]
        basePort: {port}
        gracePeriod: 1s
        initialReplicas: 2
{policy}
    minReplicas: 1
    maxReplicas: 8
    interval: 1s
    capabilities:
      log: true
      state: {{}}
{extra}"#
    )
}

// ------------------------------------------------------------------ 1. bounded compilation

#[test]
fn compile_bombs_from_eval_end_in_compile_limit() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let context = context_file(dir.path(), "none")?;
    for (name, bytes) in bombs::all() {
        let path = dir.path().join(format!("{name}.wasm"));
        std::fs::write(&path, &bytes)?;
        let started = Instant::now();
        let out = eval(&path, &context, &[])?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!(
            "bomb {name} ({} KiB): {:.2} s: {}",
            bytes.len() / 1024,
            started.elapsed().as_secs_f64(),
            stderr.trim()
        );
        assert!(!out.status.success(), "{name} compiled");
        assert!(stderr.contains("compile-limit: "), "{name}: {stderr}");
        assert!(stderr.contains("sandbox.compile."), "{name}: {stderr}");
    }

    // Past the pre-check, the worker's own budgets hold: a bomb of functions nested just under
    // the limit, against a small memory budget (a real Rust guest needs ~300 MiB of address
    // space to compile) and a short deadline. With the default budgets this bomb is stopped
    // by the 60 s deadline.
    let costly = dir.path().join("costly.wasm");
    std::fs::write(&costly, bombs::within_precheck(200, 1_900))?;
    let out = eval(&costly, &context, &["--compile-memory-mib", "352"])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("bomb within pre-check, 352 MiB budget: {}", stderr.trim());
    assert!(stderr.contains("compile-limit: "), "{stderr}");
    assert!(stderr.contains("maxMemoryBytes"), "{stderr}");
    let out = eval(&costly, &context, &["--compile-timeout-ms", "300"])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("bomb within pre-check, 300 ms budget: {}", stderr.trim());
    assert!(stderr.contains("timeoutMs (300 ms)"), "{stderr}");

    // The same budgets let a real guest through.
    let guest = hostile_guest()?;
    let out = eval(
        &guest,
        &context,
        &[
            "--compile-memory-mib",
            "352",
            "--compile-timeout-ms",
            "20000",
        ],
    )?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn compile_bombs_from_run_and_upload_leave_the_host_and_others_running() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let bomb = dir.path().join("deep-blocks.wasm");
    let (_, deep) = bombs::all().swap_remove(0);
    std::fs::write(&bomb, &deep)?;
    let guest = hostile_guest()?;
    let config = format!(
        "autoscalers:\n{}{}",
        autoscaler_yaml(
            "bombed",
            &format!("    policy: {}", bomb.display()),
            19_800,
            ""
        ),
        autoscaler_yaml(
            "healthy",
            &format!("    policy: {}", guest.display()),
            19_810,
            "    config:\n      attack: none\n"
        ),
    ) + &autoscaler_yaml(
        "chatty",
        &format!("    policy: {}", guest.display()),
        19_820,
        "    config:\n      attack: stdout-flood\n",
    );
    let mut host = Host::start(&config, 19_890, &[])?;
    let list = host.get_json("/api/v1/autoscalers")?;
    let failed = list
        .as_array()
        .and_then(|all| all.iter().find(|a| a["name"] == "bombed"))
        .cloned()
        .unwrap_or_default();
    assert!(
        failed["failed"]
            .as_str()
            .is_some_and(|e| e.contains("compile-limit")),
        "{list}"
    );
    let before = proc_kib(host.pid(), "VmRSS");
    let runs_before = host.records("healthy")?.len();
    for (name, bytes) in bombs::all() {
        let (status, body, elapsed) = http(
            host.port,
            "PUT",
            &format!("/api/v1/policies/{name}"),
            Some(TOKEN),
            &bytes,
        )?;
        println!("upload {name}: {status} in {elapsed:?}: {body}");
        assert_eq!(status, 422, "{name}: {body}");
        assert!(body.contains("compile-limit"), "{name}: {body}");
    }
    let peak = proc_kib(host.pid(), "VmHWM");
    println!(
        "host RSS before the uploads {} MiB, peak {} MiB",
        before / 1024,
        peak / 1024
    );
    assert!(host.alive(), "the host died");
    // Compilation happens in the worker: the host itself never held a compiler's memory.
    assert!(peak < before + 256 * 1024, "host peak {peak} KiB");
    std::thread::sleep(Duration::from_millis(2_500));
    let records = host.records("healthy")?;
    assert!(
        records.len() > runs_before,
        "the healthy autoscaler stopped"
    );
    assert!(records.iter().all(|r| r["error"].is_null()), "{records:?}");

    // What a chatty guest's runs dropped is in their records and in /metrics.
    let chatty = host.records("chatty")?;
    assert!(
        chatty
            .iter()
            .all(|r| r["logBytesDropped"].as_u64() > Some(7 << 20)),
        "{chatty:?}"
    );
    let (_, metrics, _) = http(host.port, "GET", "/metrics", None, b"")?;
    let dropped = metrics
        .lines()
        .find(|l| l.starts_with("wasmscaler_guest_log_bytes_dropped_total{autoscaler=\"chatty\""))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok());
    assert!(dropped > Some(7 << 20), "{metrics}");
    Ok(())
}

// ------------------------------------------------------------------ 2. host calls

#[test]
fn random_requests_over_the_cap_end_in_a_typed_error() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let context = context_file(dir.path(), "none")?;
    let spinner = random_spinner(dir.path(), 64 << 20)?;
    let guest = hostile_guest()?;
    let started = Instant::now();
    let out = eval_guests(
        &[("--metrics", &spinner), ("--evaluator", &guest)],
        &context,
        &[],
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!(
        "64 MiB random request: {:?}: {}",
        started.elapsed(),
        stderr.trim()
    );
    assert!(stderr.contains("limits.maxRandomBytes"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(3));

    // Within the cap, each byte costs fuel: an endless loop of 64 KiB requests runs out of
    // its default fuel (5e7 units, ~760 requests) instead of spinning to its 5 s deadline.
    let spinner = random_spinner(dir.path(), 64 << 10)?;
    let started = Instant::now();
    let out = eval_guests(
        &[("--metrics", &spinner), ("--evaluator", &guest)],
        &context,
        &[],
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!(
        "64 KiB random requests: {:?}: {}",
        started.elapsed(),
        stderr.trim()
    );
    assert!(stderr.contains("fuel exhausted"), "{stderr}");
    Ok(())
}

#[test]
fn host_call_spinners_delay_neither_health_checks_nor_a_healthy_autoscaler() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let spinner = random_spinner(dir.path(), 64 << 10)?;
    let guest = hostile_guest()?;
    // Every spinner call lasts its whole 3 s deadline (fuel is plentiful), back to back.
    let spinner_extra = "    limits:\n      fuel: 1000000000000000\n      timeoutMs: 3000\n    config:\n      attack: none\n";
    let pair = |name: &str, port: u16| {
        autoscaler_yaml(
            name,
            &format!(
                "    metrics: {}\n    evaluator: {}",
                spinner.display(),
                guest.display()
            ),
            port,
            spinner_extra,
        )
    };
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut config = String::from("autoscalers:\n");
    for i in 0..cores * 2 {
        config.push_str(&pair(&format!("spinner-{i}"), 19_700 + 10 * i as u16));
    }
    config.push_str(&autoscaler_yaml(
        "healthy",
        &format!("    policy: {}", guest.display()),
        19_790,
        "    config:\n      attack: none\n",
    ));
    let host = Host::start(&config, 19_791, &[])?;
    // Health checks while every guest thread has spinners to run.
    let mut worst = Duration::ZERO;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(8) {
        let (status, _, elapsed) = http(host.port, "GET", "/healthz", None, b"")?;
        assert_eq!(status, 200);
        worst = worst.max(elapsed);
        std::thread::sleep(Duration::from_millis(50));
    }
    let records = host.records("healthy")?;
    let starts: Vec<i64> = records.iter().filter_map(|r| r["atMs"].as_i64()).collect();
    let gaps: Vec<i64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    let latest = gaps.iter().copied().max().unwrap_or(0);
    let spinners = host.records("spinner-0")?;
    println!(
        "{} spinners: /healthz worst {worst:?}; healthy run gaps {gaps:?} ms; spinner errors {:?}",
        cores * 2,
        spinners
            .iter()
            .map(|r| r["errorKind"].clone())
            .collect::<Vec<_>>()
    );
    assert!(
        worst < Duration::from_millis(100),
        "/healthz took {worst:?}"
    );
    assert!(gaps.len() >= 5, "too few healthy runs: {starts:?}");
    // Runs start every interval (1 s), within 10 %.
    assert!(
        latest <= 1_100,
        "a healthy run started {latest} ms after the previous"
    );
    assert!(records.iter().all(|r| r["error"].is_null()), "{records:?}");
    assert!(
        spinners
            .iter()
            .any(|r| r["errorKind"] == "deadline-exceeded"),
        "{spinners:?}"
    );
    Ok(())
}

// ------------------------------------------------------------------ 3. logs

#[test]
fn guest_logs_are_capped_counted_and_cannot_forge_host_lines() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let guest = hostile_guest()?;
    for attack in ["log-flood", "stdout-flood", "log-forge"] {
        let context = context_file(dir.path(), attack)?;
        let out = eval(&guest, &context, &[])?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{attack}: {stderr}");
        let report: Value = serde_json::from_slice(&out.stdout)?;
        let gather = &report["gather"];
        println!(
            "{attack}: {} bytes of host log; records dropped {}, bytes dropped {}",
            out.stderr.len(),
            gather["logsDropped"],
            gather["logBytesDropped"]
        );
        // The defaults: 100 records of at most 4 KiB, 64 KiB in all, 64 KiB of output.
        assert!(
            out.stderr.len() < 256 << 10,
            "{attack}: {} bytes",
            out.stderr.len()
        );
        match attack {
            "log-flood" => {
                assert!(gather["logsDropped"].as_u64() > Some(150), "{report}");
                assert!(
                    gather["logBytesDropped"].as_u64() > Some(1 << 30),
                    "{report}"
                );
            }
            "stdout-flood" => {
                assert!(
                    gather["logBytesDropped"].as_u64() > Some(7 << 20),
                    "{report}"
                );
            }
            _ => {
                assert!(
                    stderr
                        .lines()
                        .all(|l| !l.contains("INFO wasmscaler: FORGED") || l.contains("innocent")),
                    "a forged line: {stderr}"
                );
                assert!(stderr.contains(r"innocent\n2026"), "{stderr}");
                assert!(!stderr.contains('\u{1b}'), "a raw escape: {stderr}");
            }
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ 4. anonymous clients

#[test]
fn anonymous_clients_get_401_before_any_body_is_read_and_cannot_hold_connections()
-> anyhow::Result<()> {
    let guest = hostile_guest()?;
    let config = format!(
        "autoscalers:\n{}",
        autoscaler_yaml(
            "healthy",
            &format!("    policy: {}", guest.display()),
            19_910,
            "    config:\n      attack: none\n"
        )
    );
    let host = Host::start(
        &config,
        19_990,
        &[
            "--api-max-connections",
            "24",
            "--api-header-timeout-ms",
            "1500",
            "--api-body-timeout-ms",
            "1500",
        ],
    )?;
    let before = proc_kib(host.pid(), "VmRSS");
    // 16 clients announce 60 MiB uploads and send the first MiB: each is refused from its
    // headers, and the host buffers none of it.
    let clients: Vec<_> = (0..16)
        .map(|_| {
            std::thread::spawn(move || -> anyhow::Result<(String, Duration)> {
                let started = Instant::now();
                let mut stream = TcpStream::connect(("127.0.0.1", 19_990))?;
                stream.set_read_timeout(Some(Duration::from_secs(10)))?;
                write!(
                    stream,
                    "PUT /api/v1/policies/big HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                    60 << 20
                )?;
                let _ = stream.write_all(&vec![0u8; 1 << 20]);
                let mut answer = [0u8; 512];
                let n = stream.read(&mut answer)?;
                Ok((
                    String::from_utf8_lossy(&answer[..n]).into_owned(),
                    started.elapsed(),
                ))
            })
        })
        .collect();
    for client in clients {
        let (answer, elapsed) = client
            .join()
            .map_err(|_| anyhow::anyhow!("client panicked"))??;
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
        assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    }
    let after = proc_kib(host.pid(), "VmHWM");
    println!(
        "16 anonymous 60 MiB uploads: host RSS {} MiB before, peak {} MiB",
        before / 1024,
        after / 1024
    );
    assert!(
        after < before + 32 * 1024,
        "the host grew by {} KiB",
        after - before
    );

    // Dry runs need the token by default.
    let (status, _, _) = http(
        host.port,
        "GET",
        "/api/v1/autoscalers/healthy/metrics?dry_run=true",
        None,
        b"",
    )?;
    assert_eq!(status, 401);

    // A client that never finishes its headers is cut off at the header timeout.
    let started = Instant::now();
    let mut slow = TcpStream::connect(("127.0.0.1", host.port))?;
    slow.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(slow, "GET /healthz HTTP/1.1\r\nHost: x\r\n")?;
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    let held = started.elapsed();
    println!("half-sent request closed after {held:?}");
    assert!(held < Duration::from_secs(5), "held {held:?}");

    // A client with the token that stops sending its body half-way is answered at the body
    // timeout, and nothing is stored.
    let started = Instant::now();
    let mut stalled = TcpStream::connect(("127.0.0.1", host.port))?;
    stalled.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        stalled,
        "PUT /api/v1/policies/stalled HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 1000\r\n\r\n0123456789"
    )?;
    let mut answer = [0u8; 512];
    let n = stalled.read(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer[..n]);
    let held = started.elapsed();
    println!(
        "half-sent body answered after {held:?}: {}",
        answer.lines().next().unwrap_or("")
    );
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
    assert!(held < Duration::from_secs(5), "held {held:?}");
    let (_, policies, _) = http(host.port, "GET", "/api/v1/policies", None, b"")?;
    assert!(!policies.contains("stalled"), "{policies}");

    // Past the connection cap, new connections are closed at once; once the idle ones are
    // gone, the API answers again.
    let idle: Vec<TcpStream> = (0..24)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", host.port)).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let refused = http(host.port, "GET", "/healthz", None, b"");
    assert!(
        refused.as_ref().map_or(true, |(status, _, _)| *status == 0),
        "{refused:?}"
    );
    drop(idle);
    std::thread::sleep(Duration::from_millis(200));
    let (status, _, _) = http(host.port, "GET", "/healthz", None, b"")?;
    assert_eq!(status, 200);
    Ok(())
}

#[test]
fn a_dry_run_flood_neither_starves_nor_scales_a_healthy_autoscaler() -> anyhow::Result<()> {
    let guest = hostile_guest()?;
    // A pool of 4 slots: before dry runs had their own quota, a flood took them all.
    let config = format!(
        "sandbox:\n  pooling:\n    maxConcurrentCalls: 4\n    maxMemoryBytes: 134217728\nautoscalers:\n{}",
        autoscaler_yaml(
            "healthy",
            &format!("    policy: {}", guest.display()),
            19_930,
            "    fallback:\n      failureThreshold: 1\n      replicas: 8\n    config:\n      attack: none\n"
        )
    );
    let host = Host::start(&config, 19_991, &[])?;
    let paths = [
        ("GET", "/api/v1/autoscalers/healthy/metrics?dry_run=true"),
        (
            "POST",
            "/api/v1/autoscalers/healthy/evaluation?dry_run=true",
        ),
    ];
    let flood: Vec<_> = (0..24)
        .map(|i| {
            let (method, path) = paths[i % 2];
            std::thread::spawn(move || -> BTreeMap<u16, u32> {
                let mut answers = BTreeMap::new();
                let started = Instant::now();
                while started.elapsed() < Duration::from_secs(4) {
                    let token = (i % 3 != 0).then_some(TOKEN);
                    let status = http(19_991, method, path, token, b"").map_or(0, |(s, _, _)| s);
                    *answers.entry(status).or_insert(0) += 1;
                }
                answers
            })
        })
        .collect();
    let mut answers: BTreeMap<u16, u32> = BTreeMap::new();
    for thread in flood {
        for (status, n) in thread
            .join()
            .map_err(|_| anyhow::anyhow!("flood thread panicked"))?
        {
            *answers.entry(status).or_insert(0) += n;
        }
    }
    let records = host.records("healthy")?;
    println!(
        "dry-run flood answers {answers:?}; healthy runs {}",
        records.len()
    );
    assert!(answers.get(&401).is_some_and(|n| *n > 0), "{answers:?}");
    assert!(answers.get(&200).is_some_and(|n| *n > 0), "{answers:?}");
    assert!(answers.get(&429).is_some_and(|n| *n > 0), "{answers:?}");
    assert!(
        answers.keys().all(|s| [200, 401, 429].contains(s)),
        "{answers:?}"
    );
    assert!(records.len() >= 3, "{records:?}");
    for record in &records {
        assert!(record["error"].is_null(), "{record}");
        assert_eq!(record["fallback"], false, "{record}");
        assert!(record["currentReplicas"].as_u64() <= Some(3), "{record}");
    }
    Ok(())
}

// ------------------------------------------------------------------ in the engine

fn hostile_spec(name: &str, attack: &str) -> AutoscalerSpec {
    let mut spec = wasmscaler_tests::scripted_spec(name, "http://127.0.0.1:1/unused");
    spec.scaling.capabilities = Capabilities {
        log: true,
        state: Some(StateGrant::default()),
        ..Default::default()
    };
    spec.scaling.config = BTreeMap::from([("attack".into(), attack.into())]);
    spec
}

async fn hostile_guests(sandbox: &Sandbox) -> anyhow::Result<Guests> {
    let component = sandbox.load_file(&hostile_guest()?).await?.component;
    Ok(Guests::pair(component.clone(), component))
}

#[tokio::test]
async fn a_full_pool_is_busy_never_a_guest_failure_toward_the_fallback() -> anyhow::Result<()> {
    let sandbox = wasmscaler_tests::one_slot_sandbox()?;
    let guests = hostile_guests(&sandbox).await?;
    let limits = Limits {
        fuel: u64::MAX / 2,
        timeout_ms: 1_500,
        memory_bytes: 64 << 20,
        ..Limits::default()
    };
    let new = |mut spec: AutoscalerSpec, target: Arc<MemoryTarget>| {
        spec.scaling.limits = limits.clone();
        spec.scaling.fallback = Some(Fallback {
            failure_threshold: 1,
            replicas: Some(8),
            behavior: Default::default(),
        });
        Autoscaler::builder(spec, target, guests.clone())
            .build()
            .map_err(anyhow::Error::msg)
    };
    let spinner = Arc::new(new(hostile_spec("spinner", "loop"), MemoryTarget::new(2))?);
    let target = MemoryTarget::new(2);
    let healthy = new(hostile_spec("healthy", "none"), target.clone())?;
    let spinning = tokio::spawn({
        let spinner = spinner.clone();
        async move { spinner.run_once().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let record = healthy.run_once().await;
    assert_eq!(record.error_kind.as_deref(), Some("busy"), "{record:?}");
    assert!(!record.fallback, "{record:?}");
    assert!(target.scales.lock().is_ok_and(|s| s.is_empty()));
    // The spinner's own deadline is a real failure: its fallback applies.
    let spun = spinning.await?;
    assert_eq!(spun.error_kind.as_deref(), Some("deadline-exceeded"));
    assert!(spun.fallback);
    // Once the slot is free, the healthy autoscaler decides (3) and scales.
    let record = healthy.run_once().await;
    assert_eq!(
        record.outcome,
        Outcome::Scaled { from: 2, to: 3 },
        "{record:?}"
    );
    Ok(())
}

#[tokio::test]
async fn dry_runs_never_commit_guest_state_and_reuse_the_last_observation() -> anyhow::Result<()> {
    let sandbox = wasmscaler_tests::test_sandbox()?;
    let guests = hostile_guests(&sandbox).await?;
    let target = MemoryTarget::new(2);
    let state = Arc::new(MemoryState::new());
    let mut spec = hostile_spec("stateful", "state-write");
    spec.scaling.interval = wasmscaler::engine::HumanDuration(Duration::from_secs(60));
    let autoscaler = Autoscaler::builder(spec, target.clone(), guests)
        .guest_state(Some(state.clone()))
        .build()
        .map_err(anyhow::Error::msg)?;
    let observed = || {
        target
            .observations
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    for _ in 0..5 {
        let record = autoscaler.preview(None).await;
        assert!(record.error.is_none(), "{record:?}");
        autoscaler
            .gather_preview()
            .await
            .map_err(anyhow::Error::msg)?;
    }
    assert!(state.load()?.is_empty(), "a dry run wrote guest state");
    assert_eq!(observed(), 1, "dry runs observed the target each time");
    let record = autoscaler.run_once().await;
    assert!(record.error.is_none(), "{record:?}");
    assert_eq!(state.load()?.get("runs"), Some(&vec![1u8]));
    // A scheduled run always observes afresh.
    assert_eq!(observed(), 2);
    Ok(())
}
