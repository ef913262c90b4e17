//! The Kubernetes target over real HTTP against the fake API server (`support/fake_kube.rs`):
//! discovery, scale reads and writes with resourceVersion conflicts, pods by selector,
//! deletion costs, metrics.k8s.io, and failures that must hold rather than write.

use std::sync::Arc;
use std::time::Duration;

use wasmscaler::engine::{Autoscaler, AutoscalerSpec, Guests, Outcome};
use wasmscaler::sandbox::Capabilities;
use wasmscaler::targets::kubernetes::cache::WatchCaches;
use wasmscaler::targets::kubernetes::{DELETION_COST, KubernetesRef, KubernetesTarget};
use wasmscaler::targets::{Target, TargetError};
use wasmscaler_tests::fake_kube::{FakeKube, Fault, Route};
use wasmscaler_tests::{build_rust_guest, test_sandbox};

fn reference(api_version: &str, kind: &str, name: &str) -> KubernetesRef {
    KubernetesRef {
        api_version: api_version.into(),
        kind: kind.into(),
        name: name.into(),
        namespace: None,
    }
}

async fn web(server: &FakeKube, replicas: u32) -> anyhow::Result<KubernetesTarget> {
    server.add_scalable("apps/v1", "Deployment", "deployments", "web", replicas);
    for (i, cpu) in [450, 400, 500]
        .into_iter()
        .enumerate()
        .take(replicas as usize)
    {
        server.add_pod(FakeKube::pod(&format!("web-{i}"), "web", cpu));
    }
    let client = server.client(Duration::from_secs(2))?;
    Ok(KubernetesTarget::connect(client, reference("apps/v1", "Deployment", "web")).await?)
}

#[tokio::test]
async fn discovery_finds_plurals_and_refuses_kinds_without_scale() -> anyhow::Result<()> {
    let server = FakeKube::start().await?;
    // A custom resource whose plural no rule would guess (CPA issue #199).
    server.add_scalable("example.com/v1", "Cactus", "cacti", "garden", 2);
    let client = server.client(Duration::from_secs(2))?;
    let cactus = KubernetesTarget::connect(
        client.clone(),
        reference("example.com/v1", "Cactus", "garden"),
    )
    .await?;
    assert_eq!(cactus.plural(), "cacti");
    assert_eq!(cactus.observe().await?.current, 2);
    assert!(
        server
            .requests()
            .iter()
            .any(|(_, uri, _)| uri == "/apis/example.com/v1/namespaces/default/cacti/garden/scale")
    );

    server.add_scalable("apps/v1", "Deployment", "deployments", "web", 1);
    let err = KubernetesTarget::connect(client.clone(), reference("apps/v1", "DaemonSet", "logs"))
        .await
        .err();
    assert!(
        matches!(&err, Some(TargetError::NotFound(m)) if m.contains("no /scale subresource")),
        "{err:?}"
    );
    let err = KubernetesTarget::connect(client.clone(), reference("apps/v1", "Gizmo", "x"))
        .await
        .err();
    assert!(
        matches!(&err, Some(TargetError::NotFound(m)) if m.contains("no kind Gizmo")),
        "{err:?}"
    );
    let err = KubernetesTarget::connect(client, reference("nowhere.io/v1", "Thing", "x"))
        .await
        .err();
    assert!(matches!(err, Some(TargetError::NotFound(_))), "{err:?}");
    Ok(())
}

#[tokio::test]
async fn observe_reads_the_scale_and_the_pods_of_its_selector() -> anyhow::Result<()> {
    let server = FakeKube::start().await?;
    let target = web(&server, 3).await?;
    server.add_pod(FakeKube::pod("other-0", "other", 10));
    let mut leaving = FakeKube::pod("web-old", "web", 0);
    leaving.terminating = true;
    server.add_pod(leaving);
    let mut starting = FakeKube::pod("web-new", "web", 0);
    starting.ready = false;
    server.add_pod(starting);

    let observed = target.observe().await?;
    assert_eq!(observed.current, 3);
    assert_eq!(observed.version, server.resource_version("web"));
    let names: Vec<&str> = observed.replicas.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["web-0", "web-1", "web-2", "web-new"],
        "selector applied, terminating pods left out"
    );
    assert!(!observed.replicas[3].ready);
    assert_eq!(
        observed.replicas[0].labels.get("app").map(String::as_str),
        Some("web")
    );
    assert_eq!(observed.object.to_value()["kind"], "Deployment");
    // Pods and the workload object from the watch cache; the scale read fresh.
    let requests = server.requests();
    let pods = requests
        .iter()
        .find(|(_, uri, _)| uri.contains("labelSelector=app%3Dweb"))
        .map(|(_, uri, _)| uri.clone())
        .unwrap_or_default();
    assert!(pods.contains("resourceVersion=0"), "{pods}");
    assert!(
        requests
            .iter()
            .any(|(_, uri, _)| uri.ends_with("/deployments/web?&resourceVersion=0")),
        "{requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|(_, uri, _)| uri.ends_with("/deployments/web/scale")),
        "{requests:?}"
    );
    Ok(())
}

#[tokio::test]
async fn scale_patches_with_the_observed_resource_version() -> anyhow::Result<()> {
    let server = FakeKube::start().await?;
    let target = web(&server, 3).await?;
    let observed = target.observe().await?;
    let version = server.resource_version("web");
    target.scale(&observed, 5, &[]).await?;
    assert_eq!(server.replicas("web"), Some(5));
    let patch = server
        .requests()
        .into_iter()
        .find(|(m, uri, _)| m == "PATCH" && uri.ends_with("/deployments/web/scale"))
        .map(|(_, _, body)| body)
        .ok_or_else(|| anyhow::anyhow!("no scale patch"))?;
    let patch: serde_json::Value = serde_json::from_str(&patch)?;
    assert_eq!(
        patch["metadata"]["resourceVersion"].as_str(),
        version.as_deref()
    );
    assert_eq!(patch["spec"]["replicas"], 5);
    Ok(())
}

#[tokio::test]
async fn a_conflict_from_an_unrelated_write_is_retried_after_rereading() -> anyhow::Result<()> {
    let server = FakeKube::start().await?;
    let target = web(&server, 3).await?;
    let observed = target.observe().await?;
    // Someone touches the object (resourceVersion moves, replicas stay 3) just before our write.
    server.inject(Route::PatchScale, Fault::ConcurrentWrite(None));
    target.scale(&observed, 4, &[]).await?;
    assert_eq!(server.replicas("web"), Some(4));
    let patches = server
        .requests()
        .iter()
        .filter(|(m, uri, _)| m == "PATCH" && uri.ends_with("/scale"))
        .count();
    assert_eq!(patches, 2, "409 then success");
    Ok(())
}

#[tokio::test]
async fn a_conflict_over_the_replica_count_is_never_overridden() -> anyhow::Result<()> {
    let server = FakeKube::start().await?;
    let target = web(&server, 3).await?;
    let observed = target.observe().await?;
    // Another actor sets 7 replicas between our read and our write.
    server.inject(Route::PatchScale, Fault::ConcurrentWrite(Some(7)));
    let err = target.scale(&observed, 2, &[]).await.unwrap_err();
    assert!(
        matches!(&err, TargetError::Conflict(m) if m.contains("changed from 3 to 7")),
        "{err}"
    );
    assert_eq!(
        server.replicas("web"),
        Some(7),
        "the other actor's count stands"
    );
    Ok(())
}

#[tokio::test]
async fn scale_in_marks_the_removal_list_with_deletion_costs_first() -> anyhow::Result<()> {
    let server = FakeKube::start().await?;
    let target = web(&server, 3).await?;
    let observed = target.observe().await?;
    target
        .scale(
            &observed,
            1,
            &["web-2".into(), "ghost".into(), "web-0".into()],
        )
        .await?;
    assert_eq!(
        server
            .pod_annotations("web-2")
            .get(DELETION_COST)
            .map(String::as_str),
        Some("-2")
    );
    assert_eq!(
        server
            .pod_annotations("web-0")
            .get(DELETION_COST)
            .map(String::as_str),
        Some("-1")
    );
    assert!(!server.pod_annotations("web-1").contains_key(DELETION_COST));
    let order: Vec<String> = server
        .requests()
        .into_iter()
        .filter(|(m, _, _)| m == "PATCH")
        .map(|(_, uri, _)| uri)
        .collect();
    assert_eq!(order.len(), 3);
    assert!(
        order[2].ends_with("/scale"),
        "pods are annotated before the scale-in: {order:?}"
    );
    Ok(())
}

#[tokio::test]
async fn deletion_costs_are_cleared_when_the_scale_in_fails() -> anyhow::Result<()> {
    let server = FakeKube::start().await?;
    let target = web(&server, 3).await?;
    let observed = target.observe().await?;
    server.inject(Route::PatchScale, Fault::Status(500));
    let err = target
        .scale(&observed, 1, &["web-2".into(), "web-0".into()])
        .await
        .unwrap_err();
    assert!(matches!(err, TargetError::Unavailable(_)), "{err}");
    assert_eq!(server.replicas("web"), Some(3));
    for pod in ["web-0", "web-1", "web-2"] {
        assert!(
            !server.pod_annotations(pod).contains_key(DELETION_COST),
            "{pod} kept a deletion cost after the scale-in failed"
        );
    }
    // The annotations were written, then removed.
    let pod_patches = server
        .requests()
        .into_iter()
        .filter(|(m, uri, _)| m == "PATCH" && uri.contains("/pods/"))
        .count();
    assert_eq!(pod_patches, 4);
    Ok(())
}

#[tokio::test]
async fn a_cluster_without_metrics_server_says_so() -> anyhow::Result<()> {
    let server = FakeKube::start().await?;
    let target = web(&server, 3).await?;
    server.remove_metrics_api();
    target.observe().await?;
    let provider = target.pod_metrics().expect("a metrics provider");
    let error = provider.pod_metrics().await.unwrap_err().to_string();
    assert!(error.contains("install metrics-server"), "{error}");
    assert!(!error.contains("Failed to parse"), "{error}");
    Ok(())
}

#[tokio::test]
async fn server_errors_and_timeouts_write_nothing() -> anyhow::Result<()> {
    let server = FakeKube::start().await?;
    server.add_scalable("apps/v1", "Deployment", "deployments", "web", 3);
    let client = server.client(Duration::from_millis(500))?;
    let target =
        KubernetesTarget::connect(client, reference("apps/v1", "Deployment", "web")).await?;
    let observed = target.observe().await?;

    server.inject(Route::PatchScale, Fault::Status(500));
    let err = target.scale(&observed, 6, &[]).await.unwrap_err();
    assert!(matches!(err, TargetError::Unavailable(_)), "{err}");
    assert_eq!(server.replicas("web"), Some(3));

    server.inject(Route::GetScale, Fault::Status(500));
    let result = target.observe().await;
    assert!(
        matches!(result, Err(TargetError::Unavailable(_))),
        "{result:?}"
    );

    // A 503 fails the run at once (kube-rs's own backoff is off): the next run is the retry.
    server.inject(Route::GetScale, Fault::Status(503));
    let started = std::time::Instant::now();
    let result = target.observe().await;
    assert!(
        matches!(result, Err(TargetError::Unavailable(_))),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    server.inject(Route::GetScale, Fault::Delay(Duration::from_secs(3)));
    let started = std::time::Instant::now();
    let err = target.observe().await.unwrap_err();
    assert!(matches!(err, TargetError::Unavailable(_)), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the client timed out instead of waiting"
    );
    assert_eq!(server.replicas("web"), Some(3));
    Ok(())
}

fn cpu_spec() -> AutoscalerSpec {
    let mut spec = AutoscalerSpec::new(
        "web",
        wasmscaler::engine::TargetSpec::Kubernetes(reference("apps/v1", "Deployment", "web")),
        "cpu_target.wasm",
        10,
    );
    spec.namespace = "default".into();
    spec.scaling.config = [("targetUtilization".to_string(), "50".to_string())].into();
    spec.scaling.capabilities = Capabilities {
        kubernetes_metrics: true,
        ..Default::default()
    };
    spec
}

#[tokio::test]
async fn the_cpu_guest_scales_a_deployment_from_metrics_server_data() -> anyhow::Result<()> {
    let server = FakeKube::start().await?;
    let target: Arc<dyn Target> = Arc::new(web(&server, 3).await?);
    let sandbox = test_sandbox()?;
    let cpu = sandbox
        .load_file(&build_rust_guest("guests/cpu-target")?)
        .await?
        .component;
    let autoscaler = Autoscaler::builder(cpu_spec(), target, Guests::pair(cpu.clone(), cpu))
        .build()
        .map_err(anyhow::Error::msg)?;
    // 450m, 400m, 500m of 500m requests: 90 % average against 50 %: ceil(3 × 1.8) = 6.
    let record = autoscaler.run_once().await;
    assert_eq!(
        record.decision.as_ref().map(|d| d.target_replicas),
        Some(6),
        "{record:?}"
    );
    assert_eq!(record.outcome, Outcome::Scaled { from: 3, to: 6 });
    assert_eq!(server.replicas("web"), Some(6));

    // The API server failing mid-way holds the count: nothing is written.
    server.inject(Route::PatchScale, Fault::Status(500));
    server.set_replicas("web", 2);
    let record = autoscaler.run_once().await;
    assert!(matches!(record.outcome, Outcome::Held { .. }), "{record:?}");
    assert_eq!(record.error_kind.as_deref(), Some("target"));
    assert_eq!(server.replicas("web"), Some(2));
    Ok(())
}

/// Waits until `ready`, for at most 5 s.
async fn until(what: &str, ready: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !ready() {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn is_watch(uri: &str) -> bool {
    uri.contains("watch=true")
}

#[tokio::test]
async fn with_watch_caches_a_steady_run_sends_no_request_and_sees_every_change()
-> anyhow::Result<()> {
    let server = FakeKube::start().await?;
    let caches = server.caches()?;
    let target = web(&server, 3).await?.with_caches(&caches);
    server.add_pod(FakeKube::pod("other-0", "other", 10));
    until("the caches are listed", || target.reads_from_caches()).await?;

    let before = server.requests().len();
    let observed = target.observe().await?;
    let sent: Vec<_> = server.requests()[before..]
        .iter()
        .filter(|(_, uri, _)| !is_watch(uri))
        .cloned()
        .collect();
    assert!(sent.is_empty(), "a cached run sent {sent:?}");
    assert_eq!(observed.current, 3);
    assert_eq!(observed.version, server.resource_version("web"));
    let names: Vec<&str> = observed.replicas.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["web-0", "web-1", "web-2"],
        "the selector is applied"
    );
    assert_eq!(observed.object.to_value()["kind"], "Deployment");

    // Another actor's change and a new pod reach the cache through the watch.
    server.set_replicas("web", 5);
    server.add_pod(FakeKube::pod("web-3", "web", 100));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let seen = target.observe().await?;
        if seen.current == 5 && seen.replicas.len() == 4 {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the change is never seen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Right after our own write, a run sees it (read directly if the cache lags).
    let observed = target.observe().await?;
    target.scale(&observed, 2, &[]).await?;
    let after = target.observe().await?;
    assert_eq!(after.current, 2);
    assert_eq!(after.version, server.resource_version("web"));
    assert_eq!(server.replicas("web"), Some(2));
    Ok(())
}

#[tokio::test]
async fn a_decision_on_a_stale_cache_is_refused_by_its_resource_version() -> anyhow::Result<()> {
    let server = FakeKube::start().await?;
    let caches = server.caches()?;
    let target = web(&server, 3).await?.with_caches(&caches);
    until("the caches are listed", || target.reads_from_caches()).await?;
    let observed = target.observe().await?;
    // The count moves to 7 after the observation: the decision made on 3 must not land.
    server.set_replicas("web", 7);
    let err = target.scale(&observed, 2, &[]).await.unwrap_err();
    assert!(
        matches!(&err, TargetError::Conflict(m) if m.contains("changed from 3 to 7")),
        "{err}"
    );
    assert_eq!(server.replicas("web"), Some(7));
    Ok(())
}

#[tokio::test]
async fn a_custom_resource_reads_its_scale_and_takes_pods_from_the_cache() -> anyhow::Result<()> {
    let server = FakeKube::start().await?;
    server.add_scalable("example.com/v1", "Cactus", "cacti", "garden", 2);
    server.add_pod(FakeKube::pod("garden-0", "garden", 10));
    server.add_pod(FakeKube::pod("garden-1", "garden", 10));
    server.add_pod(FakeKube::pod("web-0", "web", 10));
    let client = server.client(Duration::from_secs(2))?;
    let caches = server.caches()?;
    let cactus = KubernetesTarget::connect(client, reference("example.com/v1", "Cactus", "garden"))
        .await?
        .with_caches(&caches);
    until("the caches are listed", || cactus.reads_from_caches()).await?;
    let before = server.requests().len();
    let observed = cactus.observe().await?;
    let sent: Vec<String> = server.requests()[before..]
        .iter()
        .filter(|(_, uri, _)| !is_watch(uri))
        .map(|(m, uri, _)| format!("{m} {uri}"))
        .collect();
    assert_eq!(
        sent,
        ["GET /apis/example.com/v1/namespaces/default/cacti/garden/scale"],
        "only the Scale is read: its mapping is the custom resource's own"
    );
    assert_eq!(observed.current, 2);
    assert_eq!(observed.replicas.len(), 2);
    Ok(())
}

#[tokio::test]
async fn caches_are_shared_per_namespace_and_kind_and_stop_with_their_last_target()
-> anyhow::Result<()> {
    let server = FakeKube::start().await?;
    server.add_scalable("apps/v1", "Deployment", "deployments", "api", 1);
    let caches = server.caches()?;
    server.add_scalable("apps/v1", "Deployment", "deployments", "web", 2);
    let web = caches
        .connect(reference("apps/v1", "Deployment", "web"))
        .await?;
    let api = caches
        .connect(reference("apps/v1", "Deployment", "api"))
        .await?;
    let discoveries = server
        .requests()
        .iter()
        .filter(|(_, uri, _)| uri == "/apis/apps/v1")
        .count();
    assert_eq!(discoveries, 1, "the kind is discovered once for both");
    until("the caches are listed", || {
        web.reads_from_caches() && api.reads_from_caches()
    })
    .await?;
    let started = |caches: &WatchCaches| {
        caches
            .stats()
            .started
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert_eq!(
        started(&caches),
        2,
        "one Deployment cache and one pod cache"
    );
    let lists = server
        .counts()
        .get(&("list".to_string(), "pods".to_string()))
        .copied();
    assert_eq!(lists, Some(1), "the pods were listed once for both targets");
    drop((web, api));
    let again = caches
        .connect(reference("apps/v1", "Deployment", "api"))
        .await?;
    assert_eq!(started(&caches), 4, "dropped caches are started anew");
    until("the new caches are listed", || again.reads_from_caches()).await?;
    Ok(())
}
