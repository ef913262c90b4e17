//! Cluster mode against the fake API server over real HTTP: `WasmAutoscaler` resources run,
//! edited and deleted; status, Events and history; restart mid-window; leader election with
//! real controller processes and a failover; and the chart's RBAC checked against every call
//! the controller made.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wasmscaler::controller::bounds::TenantBounds;
use wasmscaler::controller::lease::LeaseSettings;
use wasmscaler::controller::{self, ControllerConfig};
use wasmscaler::engine::HumanDuration;
use wasmscaler::policies::{FetchConfig, SourceRules};
use wasmscaler::sandbox::SandboxConfig;

use wasmscaler_tests as support;

use support::build_rust_guest;
use support::chart::assert_rbac_covers;
use support::fake_kube::FakeKube;

const WSA: (&str, &str) = ("wasmscaler.dev/v1alpha1", "wasmautoscalers");

/// A deployment `web` with three pods at 450m, 400m and 500m of 500m requests: the cpu-target
/// guest at 50 % asks for ceil(3 × 1.8) = 6 (and more once the deployment has grown, as the
/// fake's pods do not follow it: the resources cap it at 6).
async fn cluster() -> anyhow::Result<FakeKube> {
    let fake = FakeKube::start().await?;
    fake.add_scalable("apps/v1", "Deployment", "deployments", "web", 3);
    for (i, cpu) in [450, 400, 500].into_iter().enumerate() {
        fake.add_pod(FakeKube::pod(&format!("web-{i}"), "web", cpu));
    }
    Ok(fake)
}

fn resource(name: &str, extra: Value) -> anyhow::Result<Value> {
    let policy = build_rust_guest("guests/cpu-target")?;
    let mut spec = json!({
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
        "policy": format!("file:{}", policy.display()),
        "maxReplicas": 6,
        "interval": "200ms",
        "config": {"targetUtilization": "50"},
        "capabilities": {"kubernetesMetrics": true},
    });
    support::fake_store::merge_patch(&mut spec, &extra);
    Ok(json!({"metadata": {"name": name}, "spec": spec}))
}

fn config(state: &std::path::Path, election: Option<LeaseSettings>) -> ControllerConfig {
    ControllerConfig {
        namespace: Some("default".into()),
        identity: "test-controller".into(),
        election,
        state_dir: state.to_path_buf(),
        sandbox: SandboxConfig {
            compile: support::compile_config(),
            ..SandboxConfig::default()
        },
        fetch: FetchConfig::default(),
        listen: None,
        api_token: None,
        tls: None,
        api_limits: Default::default(),
        bounds: test_bounds(),
        uploads: Default::default(),
        client_budget: None,
        shards: 1,
    }
}

/// The built-in bounds, with the test namespace allowed `file:` policies from the guests'
/// build directory and runs every 100 ms: every resource here goes through the
/// per-namespace bounds, at the check and when the file is read.
fn test_bounds() -> TenantBounds {
    let namespace = TenantBounds {
        min_interval: HumanDuration(Duration::from_millis(100)),
        sources: SourceRules {
            file_dirs: Some(vec![support::guest_target_dir()]),
            ..TenantBounds::default().sources
        },
        ..TenantBounds::default()
    };
    TenantBounds {
        namespaces: [("default".to_string(), namespace)].into(),
        ..TenantBounds::default()
    }
}

/// [`test_bounds`] as a file, for controller processes.
fn bounds_file(dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    // Written whole and renamed into place: replicas started one after another share this
    // file, and a controller reading it while the next one's start truncated it saw no
    // bounds at all (found in CI: one replica of three refused every resource).
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let path = dir.join("bounds.yaml");
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let partial = dir.join(format!("bounds.yaml.{n}.partial"));
    std::fs::write(&partial, serde_yaml::to_string(&test_bounds())?)?;
    std::fs::rename(&partial, &path)?;
    Ok(path)
}

/// Starts a controller in this process; stopping the token stops it.
fn spawn_controller(
    fake: &FakeKube,
    config: ControllerConfig,
) -> anyhow::Result<(
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
)> {
    let client = fake.client(Duration::from_secs(15))?;
    let stop = CancellationToken::new();
    let task = tokio::spawn(controller::run(
        clients(client, fake, None)?,
        config,
        stop.clone(),
    ));
    Ok((stop, task))
}

/// The controller's clients against the fake: `main` for the autoscalers and the lease, as
/// tests have always run it, and the caches' own client.
fn clients(
    main: kube::Client,
    fake: &FakeKube,
    identity: Option<&str>,
) -> anyhow::Result<controller::Clients> {
    Ok(controller::Clients {
        lease: main.clone(),
        main,
        caches: fake.cache_client(identity)?,
    })
}

async fn wait_for(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if check() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("timed out after {timeout:?} waiting for {what}")
}

fn status(fake: &FakeKube, name: &str) -> Value {
    fake.get(WSA.0, WSA.1, name)
        .map(|o| o["status"].clone())
        .unwrap_or_default()
}

fn condition(status: &Value, type_: &str) -> Value {
    status["conditions"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["type"] == type_).cloned())
        .unwrap_or_default()
}

/// Whether a request is part of a run: every run of the cpu-target guest reads pod metrics
/// (the workload and its pods come from the watch caches), and a scaling run writes /scale.
fn in_run(path: &str) -> bool {
    path.starts_with("/apis/metrics.k8s.io/") || path.ends_with("/scale")
}

/// Runs so far: each reads pod metrics once.
fn runs(fake: &FakeKube) -> usize {
    fake.requests()
        .iter()
        .filter(|(m, path, _)| m == "GET" && path.starts_with("/apis/metrics.k8s.io/"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_is_run_edited_without_losing_history_and_stopped_on_delete()
-> anyhow::Result<()> {
    let fake = cluster().await?;
    let state = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut config = config(state.path(), None);
    config.listen = Some(format!("127.0.0.1:{port}").parse()?);
    let (stop, task) = spawn_controller(&fake, config)?;
    fake.create(WSA.0, WSA.1, resource("web", json!({}))?)?;

    // Created → target scaled → status and Events written.
    wait_for("the deployment at 6", Duration::from_secs(30), || {
        fake.replicas("web") == Some(6)
    })
    .await?;
    // The REST API sees the resource under namespace/name.
    let url = format!("http://127.0.0.1:{port}/api/v1/namespaces/default/autoscalers/web");
    let api: Value = reqwest::get(url).await?.json().await?;
    assert_eq!(api["name"], "web", "{api:#}");
    assert_eq!(api["namespace"], "default", "{api:#}");
    assert!(
        api["records"].as_array().is_some_and(|r| !r.is_empty()),
        "{api:#}"
    );
    wait_for("status after the scale", Duration::from_secs(10), || {
        status(&fake, "web")["desiredReplicas"] == 6 && status(&fake, "web")["currentReplicas"] == 6
    })
    .await
    .with_context(|| format!("{:#}", status(&fake, "web")))?;
    let s = status(&fake, "web");
    assert_eq!(condition(&s, "Ready")["status"], "True", "{s:#}");
    assert_eq!(condition(&s, "Active")["status"], "True", "{s:#}");
    assert_eq!(condition(&s, "PolicyFailed")["status"], "False", "{s:#}");
    assert_eq!(s["observedGeneration"], 1);
    assert!(
        s["lastDecision"]["targetReplicas"].as_u64() >= Some(6),
        "{s:#}"
    );
    assert!(s["lastScaleTime"].is_string(), "{s:#}");
    assert_eq!(s["policyDigests"].as_array().map(Vec::len), Some(1));
    let history = s["engineState"]["history"]["recommendations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!history.is_empty(), "{s:#}");
    let events = fake.all("events");
    let scaled = events
        .iter()
        .find(|e| e["reason"] == "Scaled")
        .ok_or_else(|| anyhow::anyhow!("no Scaled event in {events:#?}"))?;
    assert_eq!(scaled["regarding"]["kind"], "WasmAutoscaler");
    assert_eq!(scaled["regarding"]["name"], "web");
    assert_eq!(scaled["reportingController"], "wasmscaler");
    assert!(
        scaled["note"]
            .as_str()
            .is_some_and(|n| n.contains("from 3 to 6")),
        "{scaled:#}"
    );

    // Spec edited → task rebuilt with the history: the guest still wants 6, the new max is 4,
    // but the 6s recommended before the edit hold the count inside the scale-down window.
    let first_at = history[0]["atMs"].clone();
    fake.patch(WSA.0, WSA.1, "web", json!({"spec": {"maxReplicas": 4}}))?;
    wait_for("the edited spec observed", Duration::from_secs(10), || {
        let s = status(&fake, "web");
        s["observedGeneration"] == 2
            && condition(&s, "ScalingLimited")["message"]
                .as_str()
                .is_some_and(|m| m.contains("clamped to 4"))
    })
    .await
    .with_context(|| format!("{:#}", status(&fake, "web")))?;
    let s = status(&fake, "web");
    assert_eq!(
        condition(&s, "ScalingLimited")["reason"],
        "TooManyReplicas",
        "{s:#}"
    );
    let kept = s["engineState"]["history"]["recommendations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        kept.iter().any(|r| r["atMs"] == first_at),
        "history lost on edit: {s:#}"
    );
    assert_eq!(
        fake.replicas("web"),
        Some(6),
        "scaled down early after the edit"
    );

    // Deleted → task stopped: no more reads, and an outside change is left alone.
    fake.delete(WSA.0, WSA.1, "web")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reads = runs(&fake);
    fake.set_replicas("web", 2);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(runs(&fake), reads, "the deleted autoscaler still runs");
    assert_eq!(fake.replicas("web"), Some(2));

    stop.cancel();
    task.await??;
    assert_rbac_covers(&fake.requests())?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_window_resumes_the_history_from_status() -> anyhow::Result<()> {
    let fake = cluster().await?;
    let state = tempfile::tempdir()?;
    fake.create(WSA.0, WSA.1, resource("web", json!({}))?)?;
    let (stop, task) = spawn_controller(&fake, config(state.path(), None))?;
    wait_for("the deployment at 6", Duration::from_secs(30), || {
        fake.replicas("web") == Some(6)
    })
    .await?;
    stop.cancel();
    task.await??;

    // Load drops while no controller runs: the guest now asks for 2 (10 % against 50 %).
    fake.set_cpu_usage("web", 50);
    let (stop, task) = spawn_controller(&fake, config(state.path(), None))?;
    let reads = runs(&fake);
    wait_for(
        "five runs of the restarted controller",
        Duration::from_secs(20),
        || runs(&fake) >= reads + 5,
    )
    .await?;
    let s = status(&fake, "web");
    assert_eq!(s["lastDecision"]["targetReplicas"], 2, "{s:#}");
    assert_eq!(
        fake.replicas("web"),
        Some(6),
        "scaled down inside the window after a restart: {s:#}"
    );
    stop.cancel();
    task.await??;

    // The same restart without the history in the status does scale down at once: the
    // status is what held the count.
    let mut cleared = fake.get(WSA.0, WSA.1, "web").unwrap_or_default();
    cleared["status"]["engineState"] = Value::Null;
    fake.patch(WSA.0, WSA.1, "web", json!({"status": cleared["status"]}))?;
    let (stop, task) = spawn_controller(&fake, config(state.path(), None))?;
    wait_for(
        "the scale-down without history",
        Duration::from_secs(20),
        || fake.replicas("web") == Some(2),
    )
    .await?;
    stop.cancel();
    task.await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_its_lease_stops_acting_at_once() -> anyhow::Result<()> {
    let fake = cluster().await?;
    let state = tempfile::tempdir()?;
    let election = LeaseSettings::with_duration(
        "wasmscaler",
        "default",
        "test-controller",
        Duration::from_secs(3),
    );
    let (stop, task) = spawn_controller(&fake, config(state.path(), Some(election)))?;
    fake.create(WSA.0, WSA.1, resource("web", json!({}))?)?;
    wait_for("the deployment at 6", Duration::from_secs(30), || {
        fake.replicas("web") == Some(6)
    })
    .await?;
    let lease = fake
        .get("coordination.k8s.io/v1", "leases", "wasmscaler")
        .unwrap_or_default();
    assert_eq!(
        lease["spec"]["holderIdentity"], "test-controller",
        "{lease:#}"
    );

    // Another replica takes the lease (as after a partition): the next renewal finds it, and
    // from then on this one writes nothing.
    // The intruder keeps renewing, as a live leader would.
    let renewing = CancellationToken::new();
    let intruder = {
        let (fake, renewing) = (fake.clone(), renewing.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !renewing.is_cancelled() {
                n += 1;
                let renewed = format!("2026-11-22T04:00:{:02}.000000Z", n % 60);
                let _ = fake.patch(
                    "coordination.k8s.io/v1",
                    "leases",
                    "wasmscaler",
                    json!({"spec": {"holderIdentity": "intruder", "renewTime": renewed}}),
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    fake.set_replicas("web", 3);
    let reads = runs(&fake);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(fake.replicas("web"), Some(3), "a deposed leader scaled");
    assert_eq!(runs(&fake), reads, "a deposed leader still runs");
    renewing.cancel();
    intruder.await?;
    stop.cancel();
    task.await??;
    Ok(())
}

struct Controller(Child);

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn controller_process(
    fake_kubeconfig: &std::path::Path,
    identity: &str,
    state: &std::path::Path,
) -> anyhow::Result<Controller> {
    controller_process_with(
        fake_kubeconfig,
        identity,
        state,
        &["--lease-duration", "3s"],
    )
}

fn controller_process_with(
    fake_kubeconfig: &std::path::Path,
    identity: &str,
    state: &std::path::Path,
    extra: &[&str],
) -> anyhow::Result<Controller> {
    let child = Command::new(env!("CARGO_BIN_EXE_wasmscaler"))
        .args([
            "controller",
            "--namespace",
            "default",
            "--identity",
            identity,
        ])
        .args(extra)
        .arg("--state-dir")
        .arg(state)
        .arg("--tenant-bounds")
        .arg(bounds_file(fake_kubeconfig.parent().unwrap_or(state))?)
        .env("KUBECONFIG", fake_kubeconfig)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        // Read by a failing test (`replica_logs`).
        .stderr(std::fs::File::create(state.with_extension("log"))?)
        .spawn()?;
    Ok(Controller(child))
}

fn holder(fake: &FakeKube) -> String {
    fake.get("coordination.k8s.io/v1", "leases", "wasmscaler")
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_controller_processes_elect_one_leader_and_fail_over() -> anyhow::Result<()> {
    let fake = cluster().await?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    fake.kubeconfig(&kubeconfig)?;
    fake.create(WSA.0, WSA.1, resource("web", json!({}))?)?;
    // The controllers' own pods, which they label leader or standby.
    for replica in ["replica-a", "replica-b"] {
        fake.add_pod(FakeKube::pod(replica, "wasmscaler", 0));
    }
    let role = |pod: &str| fake.pod_labels(pod).get("wasmscaler.dev/role").cloned();
    let mut a = Some(controller_process(
        &kubeconfig,
        "replica-a",
        &dir.path().join("a"),
    )?);
    let mut b = Some(controller_process(
        &kubeconfig,
        "replica-b",
        &dir.path().join("b"),
    )?);

    wait_for("a leader", Duration::from_secs(30), || {
        !holder(&fake).is_empty()
    })
    .await?;
    wait_for("the deployment at 6", Duration::from_secs(60), || {
        fake.replicas("web") == Some(6)
    })
    .await?;
    let leader = holder(&fake);
    let standby = if leader == "replica-a" {
        "replica-b"
    } else {
        "replica-a"
    };
    wait_for("the pods labelled by role", Duration::from_secs(10), || {
        role(&leader).as_deref() == Some("leader") && role(standby).as_deref() == Some("standby")
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let instances: std::collections::BTreeSet<String> = fake
        .all("events")
        .iter()
        .filter_map(|e| e["reportingInstance"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(instances, [leader.clone()].into(), "events from a standby");

    // Kill the leader without a chance to release: the standby waits out the lease, then acts.
    let (killed, survivor) = if leader == "replica-a" {
        (a.take(), "replica-b")
    } else {
        (b.take(), "replica-a")
    };
    drop(killed);
    fake.set_replicas("web", 3);
    wait_for(
        "the standby to take the lease",
        Duration::from_secs(30),
        || holder(&fake) == survivor,
    )
    .await?;
    wait_for("the new leader to scale", Duration::from_secs(30), || {
        fake.replicas("web") == Some(6)
    })
    .await?;
    let from_survivor = fake
        .all("events")
        .iter()
        .any(|e| e["reportingInstance"] == survivor && e["reason"] == "Scaled");
    assert!(from_survivor, "no Scaled event from the new leader");
    assert_eq!(role(survivor).as_deref(), Some("leader"));
    let lease = fake
        .get("coordination.k8s.io/v1", "leases", "wasmscaler")
        .unwrap_or_default();
    assert!(
        lease["spec"]["leaseTransitions"].as_i64() >= Some(1),
        "{lease:#}"
    );
    drop((a, b));
    assert_rbac_covers(&fake.requests())?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oci_policy_runs_and_a_bad_reference_fails_static_with_an_event() -> anyhow::Result<()> {
    let registry = support::registry::start_registry()?;
    let wasm = std::fs::read(build_rust_guest("guests/cpu-target")?)?;
    let digest = support::registry::push(&registry.addr, "policies/cpu:v1", &wasm).await?;
    let fake = cluster().await?;
    let state = tempfile::tempdir()?;
    let mut config = config(state.path(), None);
    config.fetch.insecure_registries = vec![registry.addr.clone()];
    // Cluster-wide: watches every namespace.
    config.namespace = None;
    let (stop, task) = spawn_controller(&fake, config)?;

    // A digest that is not in the registry: not Ready, a Warning event, nothing scaled.
    let wrong = format!(
        "oci://{}/policies/cpu@sha256:{}",
        registry.addr,
        "3".repeat(64)
    );
    fake.create(WSA.0, WSA.1, resource("web", json!({"policy": wrong}))?)?;
    wait_for(
        "the load failure in status",
        Duration::from_secs(20),
        || condition(&status(&fake, "web"), "PolicyFailed")["status"] == "True",
    )
    .await?;
    let s = status(&fake, "web");
    let ready = condition(&s, "Ready");
    assert_eq!(ready["status"], "False", "{s:#}");
    assert_eq!(ready["reason"], "PolicyLoadFailed", "{s:#}");
    assert!(
        ready["message"]
            .as_str()
            .is_some_and(|m| m.contains("policies/cpu")),
        "{s:#}"
    );
    wait_for("a Warning event", Duration::from_secs(10), || {
        fake.all("events")
            .iter()
            .any(|e| e["type"] == "Warning" && e["reason"] == "PolicyLoadFailed")
    })
    .await?;
    assert_eq!(fake.replicas("web"), Some(3));

    // Fixed to the pushed digest: pulled, run, scaled.
    let right = format!("oci://{}/policies/cpu@{digest}", registry.addr);
    fake.patch(WSA.0, WSA.1, "web", json!({"spec": {"policy": right}}))?;
    // The scale is written before the status that reports it, so wait for both.
    wait_for(
        "the deployment at 6, reported Ready",
        Duration::from_secs(30),
        || {
            fake.replicas("web") == Some(6)
                && condition(&status(&fake, "web"), "Ready")["status"] == "True"
        },
    )
    .await?;
    let s = status(&fake, "web");
    assert_eq!(
        s["policyDigests"][0],
        support::registry::sha256_hex(&wasm),
        "{s:#}"
    );

    // The registry goes down; a spec edit still takes effect, from the local copy.
    drop(registry);
    fake.patch(WSA.0, WSA.1, "web", json!({"spec": {"maxReplicas": 5}}))?;
    wait_for(
        "the edit running without the registry",
        Duration::from_secs(20),
        || {
            let s = status(&fake, "web");
            s["observedGeneration"] == 3 && condition(&s, "Ready")["status"] == "True"
        },
    )
    .await
    .with_context(|| format!("{:#}", status(&fake, "web")))?;
    stop.cancel();
    task.await??;
    Ok(())
}

/// `n` resources `web-0`…, all on the deployment `web`, running every 100 ms.
fn create_fast_resources(fake: &FakeKube, n: usize) -> anyhow::Result<()> {
    for i in 0..n {
        fake.create(
            WSA.0,
            WSA.1,
            resource(&format!("web-{i}"), json!({"interval": "100ms"}))?,
        )?;
    }
    Ok(())
}

fn events_with(fake: &FakeKube, reason: &str) -> Vec<Value> {
    fake.all("events")
        .into_iter()
        .filter(|e| e["reason"] == reason)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_outside_the_operators_bounds_are_refused_naming_the_bound() -> anyhow::Result<()>
{
    let fake = cluster().await?;
    let state = tempfile::tempdir()?;
    let (stop, task) = spawn_controller(&fake, config(state.path(), None))?;
    let cases = [
        (
            "fuel",
            json!({"limits": {"fuel": 18_446_744_073_709_551_615u64}}),
            "maxLimits.fuel",
        ),
        ("fast", json!({"interval": "1ms"}), "minInterval"),
        ("zero", json!({"policy": "file:/dev/zero"}), "sources"),
        (
            "imds",
            json!({"capabilities": {"http": {"allow": ["http://169.254.169.254/*"]}}}),
            "httpDenyNetworks",
        ),
        (
            "apiserver",
            json!({"capabilities": {"http": {"allow": ["https://kubernetes.default.svc/*"]}}}),
            "httpDenyHosts",
        ),
    ];
    for (name, extra, _) in &cases {
        fake.create(WSA.0, WSA.1, resource(name, extra.clone())?)?;
    }
    for (name, _, bound) in &cases {
        wait_for(&format!("{name} refused"), Duration::from_secs(20), || {
            condition(&status(&fake, name), "Ready")["reason"] == "OutOfBounds"
        })
        .await
        .with_context(|| format!("{:#}", status(&fake, name)))?;
        let ready = condition(&status(&fake, name), "Ready");
        assert_eq!(ready["status"], "False");
        let message = ready["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("tenantBounds.{bound}")),
            "{name}: {message}"
        );
        wait_for(
            &format!("{name}'s Warning"),
            Duration::from_secs(10),
            || {
                events_with(&fake, "OutOfBounds").iter().any(|e| {
                    e["regarding"]["name"] == *name
                        && e["type"] == "Warning"
                        && e["note"].as_str().is_some_and(|n| n.contains(bound))
                })
            },
        )
        .await?;
    }
    // Nothing was read or scaled for any of them.
    assert_eq!(runs(&fake), 0);
    assert_eq!(fake.replicas("web"), Some(3));
    stop.cancel();
    task.await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_policy_source_stalls_only_its_own_resource() -> anyhow::Result<()> {
    let fake = cluster().await?;
    // A server that accepts and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0")?;
    let slow = format!(
        "http://{}/policy.wasm@sha256:{}",
        silent.local_addr()?,
        "4".repeat(64)
    );
    let state = tempfile::tempdir()?;
    let (stop, task) = spawn_controller(&fake, config(state.path(), None))?;
    fake.create(WSA.0, WSA.1, resource("stuck", json!({"policy": slow}))?)?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Created after the stuck one, edited and deleted while its fetch hangs (30 s timeout).
    fake.create(WSA.0, WSA.1, resource("web", json!({}))?)?;
    wait_for(
        "the other resource to scale",
        Duration::from_secs(15),
        || fake.replicas("web") == Some(6),
    )
    .await?;
    fake.patch(WSA.0, WSA.1, "web", json!({"spec": {"maxReplicas": 5}}))?;
    wait_for("the edit observed", Duration::from_secs(10), || {
        status(&fake, "web")["observedGeneration"] == 2
    })
    .await?;
    stop.cancel();
    task.await??;
    drop(silent);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_tells_each_scale_stabilization_and_a_missing_target() -> anyhow::Result<()> {
    let fake = cluster().await?;
    let state = tempfile::tempdir()?;
    let (stop, task) = spawn_controller(&fake, config(state.path(), None))?;
    // Scale-down stabilization off: the count follows the load both ways.
    let quick = json!({"behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}});
    fake.create(WSA.0, WSA.1, resource("web", quick)?)?;
    wait_for("3 -> 6", Duration::from_secs(30), || {
        fake.replicas("web") == Some(6)
    })
    .await?;
    fake.set_cpu_usage("web", 50);
    wait_for("6 -> 2", Duration::from_secs(30), || {
        fake.replicas("web") == Some(2)
    })
    .await?;
    // Two different scales are two Events, each with its own note.
    wait_for("two Scaled events", Duration::from_secs(10), || {
        events_with(&fake, "Scaled").len() >= 2
    })
    .await?;
    let notes: Vec<String> = events_with(&fake, "Scaled")
        .iter()
        .filter_map(|e| e["note"].as_str().map(str::to_owned))
        .collect();
    assert!(notes.iter().any(|n| n.contains("from 3 to 6")), "{notes:?}");
    assert!(notes.iter().any(|n| n.contains("from 6 to 2")), "{notes:?}");
    wait_for(
        "the status after the scale",
        Duration::from_secs(10),
        || status(&fake, "web")["desiredReplicas"] == 2,
    )
    .await?;
    let s = status(&fake, "web");
    assert_eq!(condition(&s, "AbleToScale")["status"], "True", "{s:#}");
    assert_eq!(
        condition(&s, "ScalingActive")["reason"],
        "ValidMetricFound",
        "{s:#}"
    );

    // With the default 300 s window, a lower recommendation is held: the HPA's reason says so.
    fake.set_cpu_usage("web", 450);
    fake.patch(
        WSA.0,
        WSA.1,
        "web",
        json!({"spec": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}}}}),
    )?;
    wait_for("back to 6", Duration::from_secs(30), || {
        fake.replicas("web") == Some(6)
    })
    .await?;
    fake.set_cpu_usage("web", 50);
    wait_for("ScaleDownStabilized", Duration::from_secs(20), || {
        condition(&status(&fake, "web"), "AbleToScale")["reason"] == "ScaleDownStabilized"
    })
    .await
    .with_context(|| format!("{:#}", status(&fake, "web")))?;
    assert_eq!(fake.replicas("web"), Some(6));

    // A target that does not exist: not Ready, with a Warning Event.
    fake.create(
        WSA.0,
        WSA.1,
        resource("ghost", json!({"scaleTargetRef": {"name": "ghost"}}))?,
    )?;
    wait_for("ghost not ready", Duration::from_secs(20), || {
        condition(&status(&fake, "ghost"), "Ready")["reason"] == "TargetUnavailable"
    })
    .await
    .with_context(|| format!("{:#}", status(&fake, "ghost")))?;
    assert_eq!(
        condition(&status(&fake, "ghost"), "Ready")["status"],
        "False"
    );
    // The HPA's reason: the scale could not be read.
    wait_for("ghost's Warning", Duration::from_secs(10), || {
        events_with(&fake, "FailedGetScale")
            .iter()
            .any(|e| e["regarding"]["name"] == "ghost" && e["type"] == "Warning")
    })
    .await
    .with_context(|| format!("{:#?}", fake.all("events")))?;
    stop.cancel();
    task.await??;
    assert_rbac_covers(&fake.requests())?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_named_by_any_resource_is_not_deleted() -> anyhow::Result<()> {
    let fake = cluster().await?;
    let state = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut config = config(state.path(), None);
    config.listen = Some(format!("127.0.0.1:{port}").parse()?);
    config.api_token = Some("t".into());
    let (stop, task) = spawn_controller(&fake, config)?;
    let base = format!("http://127.0.0.1:{port}/api/v1/policies/cpu");
    let http = reqwest::Client::new();
    let wasm = std::fs::read(build_rust_guest("guests/cpu-target")?)?;
    let mut uploaded = false;
    for _ in 0..50 {
        match http
            .put(&base)
            .bearer_auth("t")
            .body(wasm.clone())
            .send()
            .await
        {
            Ok(r) if r.status() == 201 => {
                uploaded = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    anyhow::ensure!(uploaded, "the upload failed");
    // Named by a resource this replica does not run (it is out of bounds): still in use, as
    // it would be if another replica ran it.
    fake.create(
        WSA.0,
        WSA.1,
        resource("web", json!({"policy": "policy:cpu", "interval": "1ms"}))?,
    )?;
    wait_for("the resource refused", Duration::from_secs(20), || {
        condition(&status(&fake, "web"), "Ready")["reason"] == "OutOfBounds"
    })
    .await?;
    let refused = http.delete(&base).bearer_auth("t").send().await?;
    assert_eq!(refused.status(), 409);
    let text = refused.text().await?;
    assert!(text.contains("default/web"), "{text}");
    fake.delete(WSA.0, WSA.1, "web")?;
    let deleted = http.delete(&base).bearer_auth("t").send().await?;
    assert_eq!(deleted.status(), 204);
    stop.cancel();
    task.await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_shutdown_every_scale_cycle_ends_before_the_lease_is_released() -> anyhow::Result<()> {
    let fake = cluster().await?;
    create_fast_resources(&fake, 4)?;
    let state = tempfile::tempdir()?;
    let election = LeaseSettings::with_duration(
        "wasmscaler",
        "default",
        "test-controller",
        Duration::from_secs(3),
    );
    let (stop, task) = spawn_controller(&fake, config(state.path(), Some(election)))?;
    wait_for("runs of every resource", Duration::from_secs(30), || {
        runs(&fake) >= 20
    })
    .await?;
    stop.cancel();
    task.await??;
    let requests = fake.requests();
    let released = requests
        .iter()
        .rposition(|(m, path, body)| {
            m == "PUT" && path.contains("/leases/") && !body.contains("holderIdentity")
        })
        .ok_or_else(|| anyhow::anyhow!("the lease was not released"))?;
    let last_scale = requests
        .iter()
        .rposition(|(_, path, _)| in_run(path))
        .unwrap_or_default();
    assert!(
        last_scale < released,
        "a scale request (#{last_scale}) came after the lease was released (#{released})"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guests_megabyte_of_words_cannot_outgrow_status_or_events() -> anyhow::Result<()> {
    let fake = cluster().await?;
    let decisions = support::JsonServer::start()?;
    let url = format!("http://{}/decide", decisions.addr);
    // An error of a million bytes (with a credential-bearing URL at its start), every run.
    let error = format!("https://user:hunter2@db.example/ {}", "E".repeat(1_000_000));
    decisions.route("/decide", 200, json!({ "error": error }).to_string());
    let scripted = build_rust_guest("tests/hostile/scripted")?;
    let state = tempfile::tempdir()?;
    let (stop, task) = spawn_controller(&fake, config(state.path(), None))?;
    fake.create(
        WSA.0,
        WSA.1,
        resource(
            "web",
            json!({
                "policy": format!("file:{}", scripted.display()),
                "config": {"url": url},
                "capabilities": {"kubernetesMetrics": null, "http": {"allow": [url]}},
            }),
        )?,
    )?;
    wait_for("the failure in status", Duration::from_secs(30), || {
        condition(&status(&fake, "web"), "PolicyFailed")["status"] == "True"
    })
    .await
    .with_context(|| format!("{:#}", status(&fake, "web")))?;
    wait_for("its Warning", Duration::from_secs(10), || {
        !events_with(&fake, "PolicyFailed").is_empty()
    })
    .await?;
    let object = fake.get(WSA.0, WSA.1, "web").unwrap_or_default();
    let size = object.to_string().len();
    assert!(size < 32 << 10, "the resource grew to {size} bytes");
    let text = object.to_string() + &Value::Array(fake.all("events")).to_string();
    assert!(!text.contains("hunter2"), "a credential leaked");
    let s = status(&fake, "web");
    let message = condition(&s, "PolicyFailed")["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.len() <= 1024 && message.contains("***@db.example"),
        "{message}"
    );
    stop.cancel();
    task.await??;
    Ok(())
}

fn status_writes(fake: &FakeKube, name: &str) -> usize {
    fake.requests()
        .iter()
        .filter(|(m, path, _)| {
            m == "PATCH" && path.contains(&format!("/wasmautoscalers/{name}/status"))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_written_when_it_changes_not_on_every_run() -> anyhow::Result<()> {
    let fake = cluster().await?;
    let state = tempfile::tempdir()?;
    let (stop, task) = spawn_controller(&fake, config(state.path(), None))?;
    fake.create(WSA.0, WSA.1, resource("web", json!({"interval": "100ms"}))?)?;
    // Steady state: the guest keeps asking for 6 at 6 replicas.
    steady_at_six(&fake).await?;
    let (reads, writes) = (runs(&fake), status_writes(&fake, "web"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let runs = runs(&fake) - reads;
    let written = status_writes(&fake, "web") - writes;
    assert!(runs >= 15, "only {runs} runs in 3 s");
    assert!(
        written <= 1,
        "{written} status writes in {runs} unchanged runs"
    );
    // A change a reader would see is written at once: the load drops, the scale-down is held.
    load_drop_is_held_in_status(&fake).await?;
    stop.cancel();
    task.await??;
    Ok(())
}

/// Waits until the cpu-target guest has scaled `web` to 6 (its maximum) and the status shows
/// it, and half a second more: from then on every run asks for 6 at 6.
async fn steady_at_six(fake: &FakeKube) -> anyhow::Result<()> {
    wait_for("the deployment at 6", Duration::from_secs(30), || {
        fake.replicas("web") == Some(6)
    })
    .await?;
    wait_for("the scale in status", Duration::from_secs(10), || {
        status(fake, "web")["currentReplicas"] == 6
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

/// Drops `web`'s load and waits until the status shows the scale-down held by stabilization.
async fn load_drop_is_held_in_status(fake: &FakeKube) -> anyhow::Result<()> {
    fake.set_cpu_usage("web", 50);
    wait_for(
        "the held scale-down in status",
        Duration::from_secs(5),
        || condition(&status(fake, "web"), "AbleToScale")["reason"] == "ScaleDownStabilized",
    )
    .await?;
    Ok(())
}

/// The bodies of the status writes of `name`, in order.
fn status_patches(fake: &FakeKube, name: &str) -> Vec<Value> {
    fake.requests()
        .iter()
        .filter(|(m, path, _)| {
            m == "PATCH" && path.contains(&format!("/wasmautoscalers/{name}/status"))
        })
        .filter_map(|(_, _, body)| serde_json::from_str(body).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_and_its_first_run_are_one_write_and_a_restart_writes_only_changes()
-> anyhow::Result<()> {
    let fake = cluster().await?;
    let state = tempfile::tempdir()?;
    let (stop, task) = spawn_controller(&fake, config(state.path(), None))?;
    fake.create(WSA.0, WSA.1, resource("web", json!({"interval": "100ms"}))?)?;
    steady_at_six(&fake).await?;
    let first = status_patches(&fake, "web")
        .into_iter()
        .next()
        .unwrap_or_default();
    assert_eq!(
        condition(&first["status"], "Ready")["reason"],
        "Running",
        "the first write says the resource runs: {first}"
    );
    assert!(
        first["status"]["lastDecision"].is_object(),
        "the first write carries the first run: {first}"
    );
    // Then a new controller over the same resource: it finds the status it would write (the
    // history came from the first), and runs without writing it again.
    stop.cancel();
    task.await??;
    let (reads, writes) = (runs(&fake), status_writes(&fake, "web"));
    let (stop, task) = spawn_controller(&fake, config(state.path(), None))?;
    wait_for(
        "ten runs after the restart",
        Duration::from_secs(30),
        || runs(&fake) >= reads + 10,
    )
    .await?;
    assert_eq!(
        status_writes(&fake, "web"),
        writes,
        "runs that change nothing a reader sees write no status after a restart"
    );
    // A change is still written.
    load_drop_is_held_in_status(&fake).await?;
    stop.cancel();
    task.await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_budget_spaces_requests_and_fails_no_run() -> anyhow::Result<()> {
    use wasmscaler::targets::budget::{BudgetConfig, RequestBudget};
    let fake = cluster().await?;
    create_fast_resources(&fake, 5)?;
    // Five autoscalers at 10 runs/s each would send ~150 requests/s; the budget allows 20.
    let budget = RequestBudget::new(BudgetConfig {
        qps: 20.0,
        burst: 5,
    });
    let state = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut config = config(state.path(), None);
    config.listen = Some(format!("127.0.0.1:{port}").parse()?);
    config.client_budget = Some(budget.clone());
    let client = clients(
        fake.client_with_budget(Duration::from_secs(15), &budget)?,
        &fake,
        None,
    )?;
    let stop = CancellationToken::new();
    let task = tokio::spawn(controller::run(client, config, stop.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = fake.requests().len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent = fake.requests().len() - before;
    // 3 s at 20/s, plus the burst and one request in flight per waiting caller.
    assert!(
        sent <= 70,
        "{sent} requests in 3 s against a budget of 20/s"
    );
    assert!(
        sent >= 30,
        "only {sent} requests in 3 s: the budget starves the runs ({} throttled, {} s waited)",
        budget.throttled.get(),
        budget.waited_seconds.get()
    );
    assert!(budget.throttled.get() > 0);
    // Delayed, never failed: every resource runs and is Ready.
    for i in 0..5 {
        let s = status(&fake, &format!("web-{i}"));
        assert_eq!(condition(&s, "Ready")["status"], "True", "{s:#}");
        assert_eq!(condition(&s, "PolicyFailed")["status"], "False", "{s:#}");
    }
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("wasmscaler_kube_client_throttled_requests_total"),
        "{metrics}"
    );
    stop.cancel();
    task.await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_shutdown_the_old_leader_starts_no_run_once_the_standby_runs() -> anyhow::Result<()>
{
    let fake = cluster().await?;
    create_fast_resources(&fake, 4)?;
    let start = |identity: &str| -> anyhow::Result<(
        CancellationToken,
        tokio::task::JoinHandle<anyhow::Result<()>>,
        tempfile::TempDir,
    )> {
        let state = tempfile::tempdir()?;
        let election =
            LeaseSettings::with_duration("wasmscaler", "default", identity, Duration::from_secs(3));
        let mut config = config(state.path(), Some(election));
        config.identity = identity.into();
        let client = clients(
            fake.client_as(Duration::from_secs(15), identity)?,
            &fake,
            Some(identity),
        )?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(controller::run(client, config, stop.clone()));
        Ok((stop, task, state))
    };
    let (stop_a, task_a, _a) = start("a")?;
    wait_for("a to lead and run", Duration::from_secs(30), || {
        holder(&fake) == "a" && runs(&fake) >= 20
    })
    .await?;
    let (stop_b, task_b, _b) = start("b")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // SIGTERM to the leader.
    stop_a.cancel();
    task_a.await??;
    wait_for("b to lead and run", Duration::from_secs(30), || {
        let by = fake.request_identities();
        holder(&fake) == "b"
            && fake
                .requests()
                .iter()
                .zip(&by)
                .filter(|((_, path, _), who)| in_run(path) && *who == "b")
                .count()
                >= 10
    })
    .await?;
    stop_b.cancel();
    task_b.await??;
    let requests = fake.requests();
    let by = fake.request_identities();
    let scales = |who: &str| -> Vec<usize> {
        requests
            .iter()
            .zip(&by)
            .enumerate()
            .filter(|(_, ((_, path, _), w))| in_run(path) && w.as_str() == who)
            .map(|(i, _)| i)
            .collect()
    };
    let (a, b) = (scales("a"), scales("b"));
    let first_b = b.first().copied().unwrap_or_default();
    let last_a = a.last().copied().unwrap_or_default();
    assert!(!a.is_empty() && !b.is_empty());
    assert!(
        last_a < first_b,
        "the old leader's request #{last_a} came after the new leader's first run (#{first_b})"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_slower_than_the_interval_slows_runs_and_stalls_none() -> anyhow::Result<()> {
    use support::fake_kube::{Fault, Route};
    let fake = cluster().await?;
    // Every run's metrics read takes 150 ms (the workload and pods come from the caches),
    // runs are due every 100 ms: each run overruns the interval.
    for _ in 0..1000 {
        fake.inject(Route::PodMetrics, Fault::Delay(Duration::from_millis(150)));
    }
    let state = tempfile::tempdir()?;
    let (stop, task) = spawn_controller(&fake, config(state.path(), None))?;
    fake.create(WSA.0, WSA.1, resource("web", json!({"interval": "100ms"}))?)?;
    wait_for("the deployment at 6", Duration::from_secs(30), || {
        fake.replicas("web") == Some(6)
    })
    .await?;
    let reads = runs(&fake);
    wait_for(
        "runs going on after the scale",
        Duration::from_secs(10),
        || runs(&fake) >= reads + 10,
    )
    .await?;
    wait_for("the scale in status", Duration::from_secs(10), || {
        status(&fake, "web")["currentReplicas"] == 6
    })
    .await?;
    stop.cancel();
    task.await??;
    Ok(())
}

/// The autoscaler a pod-metrics request is for (its target's `app` label) and who sent it.
fn metric_reads(fake: &FakeKube) -> Vec<(String, String)> {
    let by = fake.request_identities();
    fake.requests()
        .iter()
        .zip(by)
        .filter_map(|((_, path, _), who)| {
            let app = path
                .strip_prefix("/apis/metrics.k8s.io/")?
                .split("labelSelector=app%3D")
                .nth(1)?
                .split('&')
                .next()?
                .to_owned();
            Some((app, who))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sharded_replicas_run_each_autoscaler_once_and_take_over_a_dead_ones_share()
-> anyhow::Result<()> {
    // 18 apps over 6 shards: every replica's share holds some.
    const APPS: usize = 18;
    let fake = FakeKube::start().await?;
    let dir = tempfile::tempdir()?;
    for i in 0..APPS {
        let app = format!("app-{i}");
        fake.add_scalable("apps/v1", "Deployment", "deployments", &app, 1);
        // 100m of 500m: below the 50 % target, so every run holds at one replica.
        fake.add_pod(FakeKube::pod(&format!("{app}-0"), &app, 100));
        fake.create(
            WSA.0,
            WSA.1,
            resource(
                &app,
                json!({"scaleTargetRef": {"name": app}, "interval": "300ms", "minReplicas": 1}),
            )?,
        )?;
    }
    let shards = ["--shards", "6", "--lease-duration", "2s"];
    let mut replicas = BTreeMap::new();
    for who in ["a", "b", "c"] {
        let kubeconfig = dir.path().join(format!("kubeconfig-{who}"));
        fake.kubeconfig_as(&kubeconfig, who)?;
        let state = dir.path().join(who);
        replicas.insert(
            who,
            controller_process_with(&kubeconfig, who, &state, &shards)?,
        );
    }
    let runners = |reads: &[(String, String)]| -> BTreeMap<String, BTreeSet<String>> {
        let mut by_app: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (app, who) in reads {
            by_app.entry(app.clone()).or_default().insert(who.clone());
        }
        by_app
    };
    wait_for(
        "every autoscaler runs, on all three replicas",
        Duration::from_secs(90),
        || {
            let reads = metric_reads(&fake);
            let who: BTreeSet<&String> = reads.iter().map(|(_, w)| w).collect();
            runners(&reads).len() == APPS && who.len() == 3
        },
    )
    .await
    .with_context(|| {
        format!(
            "runs: {:?}\nleases: {:?}\nlogs:\n{}",
            runners(&metric_reads(&fake)),
            fake.all("leases")
                .iter()
                .map(|l| (
                    l["metadata"]["name"].clone(),
                    l["spec"]["holderIdentity"].clone()
                ))
                .collect::<Vec<_>>(),
            replica_logs(dir.path())
        )
    })?;
    // Let the membership settle: each replica's share runs on it alone.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // c dies without a chance to release anything.
    let before_kill = metric_reads(&fake).len();
    let recent: Vec<(String, String)> =
        metric_reads(&fake)[before_kill.saturating_sub(3 * APPS)..].to_vec();
    let orphans: BTreeSet<String> = recent
        .iter()
        .filter(|(_, who)| who == "c")
        .map(|(app, _)| app.clone())
        .collect();
    assert!(!orphans.is_empty(), "c ran nothing: {recent:?}");
    drop(replicas.remove("c"));
    let killed = Instant::now();
    wait_for(
        "c's autoscalers run elsewhere",
        Duration::from_secs(30),
        || {
            let after = runners(&metric_reads(&fake)[before_kill..]);
            orphans.iter().all(|app| after.contains_key(app))
        },
    )
    .await?;
    let taken_over = killed.elapsed();
    eprintln!("c's share ran on the others {taken_over:?} after c was killed (lease 2 s)");
    assert!(
        taken_over < Duration::from_secs(5),
        "c's share took {taken_over:?} to run again (lease 2 s)"
    );

    // A steady window: every autoscaler runs on exactly one replica, once per interval.
    let start = metric_reads(&fake).len();
    let window = Duration::from_secs(3);
    tokio::time::sleep(window).await;
    let reads = metric_reads(&fake)[start..].to_vec();
    let mut per_app: BTreeMap<String, (usize, BTreeSet<String>)> = BTreeMap::new();
    for (app, who) in &reads {
        let entry = per_app.entry(app.clone()).or_default();
        entry.0 += 1;
        entry.1.insert(who.clone());
    }
    assert_eq!(
        per_app.len(),
        APPS,
        "an autoscaler stopped running: {per_app:?}"
    );
    let most = (window.as_millis() / 300) as usize + 2;
    for (app, (runs, who)) in &per_app {
        assert_eq!(who.len(), 1, "{app} ran on {who:?} at once");
        assert!(!who.contains("c"), "{app} still ran on the dead replica");
        assert!(
            *runs <= most,
            "{app} ran {runs} times in {window:?} (at most {most})"
        );
    }

    // Over the whole test, no autoscaler went back and forth between replicas: each moved
    // only with the membership (b and c joining, c leaving).
    let all = metric_reads(&fake);
    for app in per_app.keys() {
        let sequence: Vec<&String> = all
            .iter()
            .filter(|(a, _)| a == app)
            .map(|(_, who)| who)
            .collect();
        let switches = sequence.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(
            switches <= 3,
            "{app} switched replicas {switches} times: {sequence:?}"
        );
    }
    drop(replicas);
    Ok(())
}

/// The last lines each replica logged (for a failing test's message).
fn replica_logs(dir: &std::path::Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("== {}\n", path.display()));
            for line in &lines[lines.len().saturating_sub(15)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// `metrics:` as a list in the resource (a field the CRD leaves to the controller): the CPU
/// source scales the Deployment while a second source, whose server is down, fails alone and
/// is ignored as its `onFailure` says (with `fail` the Deployment would stay at 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_lists_sources_and_one_failing_is_ignored() -> anyhow::Result<()> {
    let fake = cluster().await?;
    let state = tempfile::tempdir()?;
    let (stop, task) = spawn_controller(&fake, config(state.path(), None))?;
    let cpu = build_rust_guest("guests/cpu-target")?;
    let json_path = build_rust_guest("guests/sources/json-path")?;
    let sources = json!({
        "policy": null,
        "metrics": [
            {"name": "cpu", "component": format!("file:{}", cpu.display())},
            {"name": "queue", "component": format!("file:{}", json_path.display()),
             "onFailure": "ignore",
             "config": {"url": "http://127.0.0.1:9/depth", "valueLocation": "depth"},
             "capabilities": {"http": {"allow": ["http://127.0.0.1:9/depth"]}}},
        ],
        "evaluator": format!("file:{}", cpu.display()),
    });
    fake.create(WSA.0, WSA.1, resource("web", sources)?)?;
    wait_for("3 -> 6", Duration::from_secs(30), || {
        fake.replicas("web") == Some(6)
    })
    .await?;
    // The status follows the scale in a write of its own: wait for it, then read it.
    wait_for(
        "the status after the scale",
        Duration::from_secs(10),
        || status(&fake, "web")["desiredReplicas"] == 6,
    )
    .await?;
    let s = status(&fake, "web");
    assert_eq!(condition(&s, "AbleToScale")["status"], "True", "{s:#}");
    stop.cancel();
    task.await??;
    Ok(())
}
