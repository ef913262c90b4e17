//! The example guests, run through the library API with asserted decisions.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmscaler::contract::model::{Context, GuestError, PodMetrics, Replica};
use wasmscaler::sandbox::{
    CallEnv, Capabilities, GuestComponent, HttpGrant, MemoryState, SandboxError, StateGrant,
    StateStore,
};
use wasmscaler_tests::{JsonServer, build_rust_guest, cpu_env, read_fixture, test_sandbox};

async fn load(crate_dir: &str) -> anyhow::Result<Arc<GuestComponent>> {
    let wasm = build_rust_guest(crate_dir)?;
    Ok(test_sandbox()?.load_file(&wasm).await?.component)
}

fn with_cpu(pods: &[PodMetrics], millicores: [u64; 3]) -> Vec<PodMetrics> {
    pods.iter()
        .zip(millicores)
        .map(|(p, cpu)| PodMetrics {
            cpu_millicores: cpu,
            ..p.clone()
        })
        .collect()
}

/// Runs gather then evaluate, as the engine does.
async fn decide(
    guest: &GuestComponent,
    ctx: &Context,
    env: &CallEnv,
) -> Result<wasmscaler::contract::model::Decision, SandboxError> {
    let samples = guest.gather(ctx, env).await?;
    Ok(guest.evaluate(ctx, &samples.value, env).await?.value)
}

#[tokio::test]
async fn cpu_target_applies_the_hpa_formula() -> anyhow::Result<()> {
    let guest = load("guests/cpu-target").await?;
    let ctx: Context = read_fixture("cpu-context.json")?;
    let pods: Vec<PodMetrics> = read_fixture("pod-metrics.json")?;

    // 90% average against 50%: ceil(3 × 1.8) = 6.
    let d = decide(&guest, &ctx, &cpu_env(pods.clone())).await?;
    assert_eq!(d.target_replicas, 6, "{d:?}");
    assert!(
        d.reason.as_deref().is_some_and(|r| r.contains("90.0%")),
        "{d:?}"
    );

    // 52% is within the 10% tolerance of 50%: hold.
    let d = decide(&guest, &ctx, &cpu_env(with_cpu(&pods, [260, 260, 260]))).await?;
    assert_eq!(d.target_replicas, 3);

    // 20%: ceil(3 × 0.4) = 2.
    let d = decide(&guest, &ctx, &cpu_env(with_cpu(&pods, [100, 100, 100]))).await?;
    assert_eq!(d.target_replicas, 2);

    // A tolerance of 0.5 from config swallows 70% against 50%.
    let mut loose = ctx.clone();
    loose.config.insert("tolerance".into(), "0.5".into());
    let d = decide(&guest, &loose, &cpu_env(with_cpu(&pods, [350, 350, 350]))).await?;
    assert_eq!(d.target_replicas, 3);
    Ok(())
}

#[tokio::test]
async fn cpu_target_reports_config_and_availability_errors() -> anyhow::Result<()> {
    let guest = load("guests/cpu-target").await?;
    let ctx: Context = read_fixture("cpu-context.json")?;
    let pods: Vec<PodMetrics> = read_fixture("pod-metrics.json")?;

    let mut no_target = ctx.clone();
    no_target.config.clear();
    let err = decide(&guest, &no_target, &cpu_env(pods))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SandboxError::Guest(GuestError::InvalidConfig(m)) if m.contains("targetUtilization")),
        "{err}"
    );

    // Granted but no metrics provider: the import answers `unavailable`.
    let env = CallEnv {
        pod_metrics: None,
        ..cpu_env(Vec::new())
    };
    let err = guest.gather(&ctx, &env).await.unwrap_err();
    assert!(
        matches!(err, SandboxError::Guest(GuestError::Unavailable(_))),
        "{err}"
    );
    Ok(())
}

fn queue_ctx(url: &str, now_ms: i64, current: u32) -> Context {
    Context {
        autoscaler_name: "batch".into(),
        now_ms,
        target: wasmscaler::contract::model::Target {
            kind: "Job".into(),
            name: "render".into(),
            current_replicas: current,
            max_replicas: 10,
            ..Default::default()
        },
        config: BTreeMap::from([
            ("queueUrl".into(), url.into()),
            ("expectedTimeSeconds".into(), "100".into()),
            ("triggerUp".into(), "0.1".into()),
            ("triggerDown".into(), "0.1".into()),
            ("actuationSize".into(), "2".into()),
        ]),
        ..Default::default()
    }
}

#[tokio::test]
async fn queue_progress_follows_the_kubejobs_controller() -> anyhow::Result<()> {
    let guest = load("guests/queue-progress").await?;
    let server = JsonServer::start()?;
    let url = format!("http://{}/queue", server.addr);
    let store = Arc::new(MemoryState::new());
    let env = CallEnv {
        capabilities: Capabilities {
            state: Some(StateGrant::default()),
            http: Some(HttpGrant::allow([format!("http://{}/queue", server.addr)])),
            ..Default::default()
        },
        state: Some(store.clone()),
        ..Default::default()
    };
    let t0 = 1_763_776_800_000;

    // First run: 30% done at 0% of the time: ahead of schedule, scale down by 2.
    server.route("/queue", 200, r#"{"total": 100, "processed": 30}"#);
    let d = decide(&guest, &queue_ctx(&url, t0, 4), &env).await?;
    assert_eq!(d.target_replicas, 2, "{d:?}");
    assert!(
        store.load()?.contains_key("job-start-ms"),
        "start time persisted"
    );

    // 60 s later (start time read back from state): 40% done at 60%: behind, scale up by 2.
    server.route("/queue", 200, r#"{"total": 100, "processed": 40}"#);
    let d = decide(&guest, &queue_ctx(&url, t0 + 60_000, 2), &env).await?;
    assert_eq!(d.target_replicas, 4, "{d:?}");

    // 65% done at 65%: on schedule, hold.
    server.route("/queue", 200, r#"{"total": 100, "processed": 65}"#);
    let d = decide(&guest, &queue_ctx(&url, t0 + 65_000, 4), &env).await?;
    assert_eq!(d.target_replicas, 4, "{d:?}");

    // Queue drained: scale to zero.
    server.route("/queue", 200, r#"{"total": 100, "processed": 100}"#);
    let d = decide(&guest, &queue_ctx(&url, t0 + 70_000, 4), &env).await?;
    assert_eq!(d.target_replicas, 0, "{d:?}");

    // The queue service failing is `unavailable`, which the engine turns into a hold.
    server.route("/queue", 503, "{}");
    let err = decide(&guest, &queue_ctx(&url, t0 + 75_000, 4), &env)
        .await
        .unwrap_err();
    assert!(
        matches!(err, SandboxError::Guest(GuestError::Unavailable(_))),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn queue_progress_cannot_reach_urls_off_the_allow_list() -> anyhow::Result<()> {
    let guest = load("guests/queue-progress").await?;
    let server = JsonServer::start()?;
    server.route("/secret", 200, r#"{"total": 1, "processed": 0}"#);
    let env = CallEnv {
        capabilities: Capabilities {
            state: Some(StateGrant::default()),
            http: Some(HttpGrant::allow([format!("http://{}/queue", server.addr)])),
            ..Default::default()
        },
        ..Default::default()
    };
    let ctx = queue_ctx(&format!("http://{}/secret", server.addr), 0, 1);
    let err = guest.gather(&ctx, &env).await.unwrap_err();
    assert!(
        matches!(&err, SandboxError::Guest(GuestError::Denied(m)) if m.contains("allow-list")),
        "{err}"
    );
    assert!(
        server
            .requests
            .lock()
            .map(|r| r.is_empty())
            .unwrap_or(false),
        "no request may leave the host"
    );
    Ok(())
}

fn capacity_ctx(servers: &[JsonServer], capacity: u32, min_available: u32) -> Context {
    Context {
        autoscaler_name: "vms".into(),
        target: wasmscaler::contract::model::Target {
            kind: "local".into(),
            name: "workers".into(),
            current_replicas: servers.len() as u32,
            max_replicas: 10,
            ..Default::default()
        },
        replicas: servers
            .iter()
            .enumerate()
            .map(|(i, s)| Replica {
                name: format!("replica-{i}"),
                ready: true,
                address: Some(s.addr.to_string()),
                ..Default::default()
            })
            .collect(),
        config: BTreeMap::from([
            ("replicaCapacity".into(), capacity.to_string()),
            ("minAvailableResources".into(), min_available.to_string()),
            ("apiPath".into(), "/status".into()),
        ]),
        ..Default::default()
    }
}

fn capacity_env() -> CallEnv {
    CallEnv {
        capabilities: Capabilities {
            http: Some(HttpGrant::allow(["http://{replica}/status"])),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[tokio::test]
async fn capacity_adds_replicas_and_removes_terminating_ones_first() -> anyhow::Result<()> {
    let guest = load("guests/capacity").await?;
    let servers = [
        JsonServer::start()?,
        JsonServer::start()?,
        JsonServer::start()?,
    ];
    servers[0].route("/status", 200, r#"{"available": 0, "terminate": false}"#);
    servers[1].route("/status", 200, r#"{"available": 1, "terminate": false}"#);
    servers[2].route("/status", 200, r#"{"available": 4, "terminate": true}"#);

    // Staying: replica-0 and replica-1 with 1 free; 4 needed: one more replica of 4.
    let d = decide(&guest, &capacity_ctx(&servers, 4, 4), &capacity_env()).await?;
    assert_eq!(d.target_replicas, 3, "{d:?}");
    assert_eq!(d.remove_first, Some(vec!["replica-2".to_string()]));
    for server in &servers {
        assert_eq!(
            *server
                .requests
                .lock()
                .map_err(|_| anyhow::anyhow!("lock"))?,
            ["/status"]
        );
    }
    Ok(())
}

#[tokio::test]
async fn capacity_removes_idle_replicas_while_the_minimum_stays_available() -> anyhow::Result<()> {
    let guest = load("guests/capacity").await?;
    let servers = [
        JsonServer::start()?,
        JsonServer::start()?,
        JsonServer::start()?,
    ];
    for server in &servers {
        server.route("/status", 200, r#"{"available": 4, "terminate": false}"#);
    }
    // 12 free, 4 needed: two idle replicas can go.
    let d = decide(&guest, &capacity_ctx(&servers, 4, 4), &capacity_env()).await?;
    assert_eq!(d.target_replicas, 1, "{d:?}");
    assert_eq!(
        d.remove_first,
        Some(vec!["replica-0".to_string(), "replica-1".to_string()])
    );
    Ok(())
}
