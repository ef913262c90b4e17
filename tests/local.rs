//! The local-process target with real worker processes (the demo's `worker.py`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmscaler::engine::HumanDuration;
use wasmscaler::targets::Target;
use wasmscaler::targets::local::{LocalProcesses, LocalSpec};
use wasmscaler_tests::repo_root;

fn spec(base_port: u16, env: &[(&str, &str)], grace_ms: u64) -> LocalSpec {
    LocalSpec {
        command: vec!["python3".into(), "worker.py".into()],
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        working_dir: Some(repo_root().join("guests/demo")),
        base_port,
        grace_period: HumanDuration(Duration::from_millis(grace_ms)),
        initial_replicas: None,
        inherit_output: false,
    }
}

/// Polls until `check` holds or 15 s pass.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(15) {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn status(port: u16) -> Option<serde_json::Value> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    drop(stream);
    let out = tokio::process::Command::new("python3")
        .args(["-c", &format!("import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:{port}/status',timeout=2).read().decode())")])
        .output()
        .await
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

async fn all_ready(target: &Arc<LocalProcesses>, n: usize) -> bool {
    target
        .observe()
        .await
        .is_ok_and(|o| o.replicas.len() == n && o.replicas.iter().all(|r| r.ready))
}

#[tokio::test]
async fn replicas_get_their_index_and_port_and_scale_in_honours_the_removal_list()
-> anyhow::Result<()> {
    let target = LocalProcesses::start("w", spec(19_100, &[], 3_000), 3)?;
    eventually("3 ready replicas", async || all_ready(&target, 3).await).await;
    for i in 0..3u16 {
        let status = status(19_100 + i)
            .await
            .ok_or_else(|| anyhow::anyhow!("replica {i} does not answer"))?;
        assert_eq!(
            status["replica"],
            i.to_string(),
            "REPLICA_INDEX reaches the process"
        );
    }
    let observed = target.observe().await?;
    assert_eq!(observed.current, 3);
    assert_eq!(
        observed.replicas[1].address.as_deref(),
        Some("127.0.0.1:19101")
    );

    // Scale in to 1, naming w-0 first: w-0 goes, then the highest index (w-2).
    target.scale(&observed, 1, &["w-0".to_string()]).await?;
    assert_eq!(target.indexes().into_iter().collect::<Vec<_>>(), [1]);
    assert!(status(19_100).await.is_none() && status(19_102).await.is_none());
    assert!(status(19_101).await.is_some());

    // Scale out again: the lowest free indexes are reused.
    let observed = target.observe().await?;
    target.scale(&observed, 3, &[]).await?;
    assert_eq!(target.indexes().into_iter().collect::<Vec<_>>(), [0, 1, 2]);
    eventually("3 ready replicas again", async || {
        all_ready(&target, 3).await
    })
    .await;

    // A stale observation is refused rather than applied.
    let err = target.scale(&observed, 1, &[]).await.unwrap_err();
    assert!(
        matches!(err, wasmscaler::targets::TargetError::Conflict(_)),
        "{err}"
    );
    target.shutdown().await;
    assert!(target.indexes().is_empty());
    Ok(())
}

#[tokio::test]
async fn a_crashed_replica_is_restarted() -> anyhow::Result<()> {
    let target = LocalProcesses::start("c", spec(19_200, &[], 3_000), 2)?;
    eventually("2 ready replicas", async || all_ready(&target, 2).await).await;
    let old = target.pid(1).ok_or_else(|| anyhow::anyhow!("no pid"))?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    eventually("a new process for replica 1", async || {
        target.pid(1).is_some_and(|p| p != old)
    })
    .await;
    eventually("replica 1 ready again", async || {
        status(19_201).await.is_some()
    })
    .await;
    let observed = target.observe().await?;
    assert_eq!(
        observed.replicas[1]
            .labels
            .get("restarts")
            .map(String::as_str),
        Some("1")
    );
    target.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_replica_ignoring_sigterm_is_killed_after_the_grace_period() -> anyhow::Result<()> {
    let target = LocalProcesses::start("g", spec(19_300, &[("IGNORE_SIGTERM", "1")], 500), 2)?;
    eventually("2 ready replicas", async || all_ready(&target, 2).await).await;
    let pid = target.pid(1).ok_or_else(|| anyhow::anyhow!("no pid"))?;
    let observed = target.observe().await?;
    let started = Instant::now();
    target.scale(&observed, 1, &[]).await?;
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "SIGTERM was ignored, so the grace period ran out"
    );
    let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok();
    assert!(!alive, "the replica was killed");
    target.shutdown().await;
    Ok(())
}

/// Occupies `slots` job slots on the worker at `port` for `ms` (each request holds one slot).
fn occupy(port: u16, slots: usize, ms: u64) -> Vec<std::thread::JoinHandle<()>> {
    (0..slots)
        .map(|_| {
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                    let _ = write!(
                        s,
                        "GET /work?ms={ms} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                    );
                    let _ = s.read_to_end(&mut Vec::new());
                }
            })
        })
        .collect()
}

/// Assembled as `wasmscaler run` assembles a config file: through [`Host::from_config`].
#[tokio::test]
async fn the_capacity_guest_scales_real_workers_up_under_load_and_down_after() -> anyhow::Result<()>
{
    use wasmscaler::config::ConfigFile;
    use wasmscaler::engine::Outcome;
    use wasmscaler::host::Host;

    let base = 19_700;
    let dir = tempfile::tempdir()?;
    let wasm = wasmscaler_tests::build_rust_guest("guests/capacity")?;
    let text = format!(
        r#"stateDir: {state}
sandbox:
  cacheDir: {cache}
autoscalers:
  - name: cap
    target:
      local:
        command: ["python3", "worker.py"]
        workingDir: {demo}
        basePort: {base}
        gracePeriod: 3s
    policy: {policy}
    minReplicas: 1
    maxReplicas: 4
    interval: 1s
    behavior:
      scaleDown:
        stabilizationWindowSeconds: 0
    config:
      replicaCapacity: "4"
      minAvailableResources: "2"
      apiPath: /status
    capabilities:
      http:
        allow: ["http://{{replica}}/status"]
"#,
        state = dir.path().join("state").display(),
        cache = wasmscaler_tests::test_cache_dir().display(),
        demo = repo_root().join("guests/demo").display(),
        policy = wasm.display(),
    );
    let config = ConfigFile::parse(&text, &dir.path().join("wasmscaler.yaml"))?;
    let host = Host::from_config(&config, None).await?;
    assert!(
        host.fleet().failed().is_empty(),
        "{:?}",
        host.fleet().failed()
    );
    let autoscaler = host.fleet().find("cap").expect("the autoscaler cap");
    let target = autoscaler.target().clone();
    let ready = async |n: usize| {
        target
            .observe()
            .await
            .is_ok_and(|o| o.replicas.len() == n && o.replicas.iter().all(|r| r.ready))
    };
    eventually("1 ready replica", async || ready(1).await).await;

    // Idle: 4 free slots, 2 needed: one replica is right.
    assert_eq!(autoscaler.run_once().await.outcome, Outcome::Unchanged);

    // Three of the four slots busy: 1 free, 2 needed: one more replica.
    let load = occupy(base, 3, 4_000);
    eventually("the load to arrive", async || {
        status(base).await.is_some_and(|s| s["available"] == 1)
    })
    .await;
    let record = autoscaler.run_once().await;
    assert_eq!(
        record.outcome,
        Outcome::Scaled { from: 1, to: 2 },
        "{record:?}"
    );
    eventually("2 ready replicas", async || ready(2).await).await;

    // Load over: 8 free, 2 needed: the guest lists the first idle replica, cap-0, for
    // removal, and the target removes exactly that one.
    for handle in load {
        let _ = handle.join();
    }
    let record = autoscaler.run_once().await;
    assert_eq!(
        record.outcome,
        Outcome::Scaled { from: 2, to: 1 },
        "{record:?}"
    );
    assert_eq!(
        record.decision.and_then(|d| d.remove_first),
        Some(vec!["cap-0".to_string()])
    );
    let left = target.observe().await?;
    let names: Vec<&str> = left.replicas.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["cap-1"]);
    target.shutdown().await;
    Ok(())
}

/// A shell command as a replica, with nothing else configured.
fn shell(script: &str, base_port: u16) -> LocalSpec {
    LocalSpec {
        command: vec!["sh".into(), "-c".into(), script.into()],
        working_dir: None,
        ..spec(base_port, &[], 200)
    }
}

#[tokio::test]
async fn a_crash_looping_replica_is_restarted_with_backoff() -> anyhow::Result<()> {
    let target = LocalProcesses::start("crashy", shell("exit 3", 47_100), 1)?;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let observed = target.observe().await?;
    let restarts: u32 = observed.replicas[0].labels["restarts"].parse()?;
    // The supervisor looks every 500 ms: without backoff that is ~12 restarts in 6 s; with
    // it the waits grow 0, 0.5, 1, 2, 4 s.
    assert!((2..=5).contains(&restarts), "{restarts} restarts in 6 s");
    assert!(!observed.replicas[0].ready);
    target.shutdown().await;
    Ok(())
}

/// Processes whose environment marks them as replicas of `name`.
fn replicas_of(name: &str) -> Vec<i32> {
    let marker = format!("WASMSCALER_REPLICA_OF={name}");
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .filter(|pid| {
                    std::fs::read(format!("/proc/{pid}/environ"))
                        .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == marker.as_bytes()))
                        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                            s.rsplit_once(')')
                                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
                        })
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn replicas_do_not_outlive_a_killed_host() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let policy = wasmscaler_tests::build_rust_guest("guests/cpu-target")?;
    let name = format!("orphans-{}", std::process::id());
    let config = dir.path().join("wasmscaler.yaml");
    // Each replica is a shell that leaves a child of its own behind, in its process group.
    let yaml = serde_json::json!({"autoscalers": [{
        "name": name,
        "policy": policy,
        "maxReplicas": 3,
        "minReplicas": 2,
        "interval": "1h",
        "capabilities": {"kubernetesMetrics": true},
        "target": {"local": {"command": ["sh", "-c", "sleep 300 & exec sleep 301"], "basePort": 47_200}},
    }]});
    std::fs::write(&config, serde_yaml::to_string(&yaml)?)?;
    let host = || {
        std::process::Command::new(wasmscaler_tests::wasmscaler_bin()?)
            .args(["run", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(anyhow::Error::from)
    };
    // Where a host records its replicas' process groups, which the next host reclaims. A host
    // writes it once its replicas are spawned; on a loaded machine that can come after the
    // processes show, so a kill is only a crash *after* the record when the test waits for it.
    let groups_file = dir
        .path()
        .join(".wasmscaler-state")
        .join(format!("{name}.local-groups.json"));
    let recorded = || -> Vec<i32> {
        std::fs::read(&groups_file)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    };
    let mut first = host()?;
    eventually(
        "4 replica processes (2 shells' execs and their children), their groups recorded",
        async || {
            let now = replicas_of(&name);
            let groups = recorded();
            now.len() == 4 && groups.len() == 2 && groups.iter().all(|g| now.contains(g))
        },
    )
    .await;
    let before = replicas_of(&name);
    first.kill()?;
    first.wait()?;
    // The parent-death signal ends the replicas themselves at once; their children, orphaned,
    // are left for the next host.
    eventually("the replicas to die with their host", async || {
        replicas_of(&name).len() == 2
    })
    .await;
    let mut second = host()?;
    eventually(
        "the orphans reclaimed and 2 new replicas started, their groups recorded",
        async || {
            let now = replicas_of(&name);
            let groups = recorded();
            now.len() == 4
                && now.iter().all(|pid| !before.contains(pid))
                && groups.len() == 2
                && groups.iter().all(|g| now.contains(g))
        },
    )
    .await;
    second.kill()?;
    second.wait()?;
    // Clean up after this test: whatever is left is killed through the same reclaim.
    let _ =
        LocalProcesses::start_recorded(&name, shell("true", 47_300), 0, Some(groups_file.clone()));
    eventually("nothing left", async || replicas_of(&name).is_empty()).await;
    Ok(())
}
