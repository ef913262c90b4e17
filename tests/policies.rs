//! Policy references resolved for real: a pinned URL served over HTTP, OCI artifacts pushed to
//! and pulled from Debian's docker-registry on loopback (by tag and by digest), and uploads
//! named in the store. Wrong digests are refused, naming both digests.

use std::sync::Arc;

use wasmscaler::contract::model::{Context, PodMetrics};
use wasmscaler::policies::{
    FetchConfig, PolicyError, PolicyRef, PolicySources, PolicyStore, SourceError, SourceRules,
    StoreQuota,
};
use wasmscaler::sandbox::GuestComponent;
use wasmscaler_tests::registry::{push, sha256_hex, start_registry};
use wasmscaler_tests::{build_rust_guest, read_fixture, test_sandbox};

fn parse(text: &str) -> anyhow::Result<PolicyRef> {
    PolicyRef::parse(text).map_err(anyhow::Error::msg)
}

fn sources_for(fetch: &FetchConfig) -> anyhow::Result<PolicySources> {
    Ok(PolicySources::new(Arc::new(test_sandbox()?), fetch)?)
}

/// The cpu-target decision on the shared fixture: 6 from any source.
async fn decides_six(guest: &GuestComponent) -> anyhow::Result<()> {
    let ctx: Context = read_fixture("cpu-context.json")?;
    let pods: Vec<PodMetrics> = read_fixture("pod-metrics.json")?;
    let env = wasmscaler_tests::cpu_env(pods);
    let samples = guest.gather(&ctx, &env).await?;
    let decision = guest.evaluate(&ctx, &samples.value, &env).await?.value;
    assert_eq!(decision.target_replicas, 6, "{decision:?}");
    Ok(())
}

/// Serves `bytes` at `/cpu.wasm` over HTTP on loopback.
async fn serve(bytes: Vec<u8>) -> anyhow::Result<String> {
    let app = axum::Router::new().route(
        "/cpu.wasm",
        axum::routing::get(move || {
            let bytes = bytes.clone();
            async move { bytes }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}"))
}

#[tokio::test]
async fn a_url_reference_is_fetched_only_with_its_pinned_digest() -> anyhow::Result<()> {
    let wasm = std::fs::read(build_rust_guest("guests/cpu-target")?)?;
    let digest = sha256_hex(&wasm);
    let base = serve(wasm.clone()).await?;
    let sources = sources_for(&FetchConfig::default())?;

    let guest = sources
        .load(&parse(&format!("{base}/cpu.wasm@sha256:{digest}"))?)
        .await?;
    assert_eq!(guest.sha256(), digest);
    decides_six(&guest).await?;

    let wrong = "0".repeat(64);
    let err = sources
        .load(&parse(&format!("{base}/cpu.wasm@sha256:{wrong}"))?)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a wrong digest was accepted"))?;
    assert!(matches!(err, SourceError::DigestMismatch { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains(&digest) && message.contains(&wrong),
        "{message}"
    );

    let err = sources
        .load(&parse(&format!("{base}/missing.wasm@sha256:{digest}"))?)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a 404 was accepted"))?;
    assert!(err.to_string().contains("404"), "{err}");

    // Bigger than the sandbox accepts: refused while downloading.
    let small = wasmscaler::sandbox::Sandbox::new(wasmscaler::sandbox::SandboxConfig {
        max_component_bytes: 1_000,
        compile: wasmscaler_tests::compile_config(),
        ..Default::default()
    })?;
    let err = PolicySources::new(Arc::new(small), &FetchConfig::default())?
        .load(&parse(&format!("{base}/cpu.wasm@sha256:{digest}"))?)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("an oversized download was accepted"))?;
    assert!(matches!(err, SourceError::TooLarge { .. }), "{err}");
    Ok(())
}

#[tokio::test]
async fn an_oci_artifact_is_pulled_by_tag_and_by_digest_and_a_wrong_digest_is_refused()
-> anyhow::Result<()> {
    let registry = start_registry()?;
    let wasm = std::fs::read(build_rust_guest("guests/cpu-target")?)?;
    let digest = push(&registry.addr, "policies/cpu-target:v1", &wasm).await?;
    let sources = sources_for(&FetchConfig {
        insecure_registries: vec![registry.addr.clone()],
        ..Default::default()
    })?;

    let by_tag = sources
        .load(&parse(&format!(
            "oci://{}/policies/cpu-target:v1",
            registry.addr
        ))?)
        .await?;
    assert_eq!(by_tag.sha256(), sha256_hex(&wasm));
    decides_six(&by_tag).await?;

    let by_digest = sources
        .load(&parse(&format!(
            "oci://{}/policies/cpu-target@{digest}",
            registry.addr
        ))?)
        .await?;
    assert_eq!(by_digest.sha256(), by_tag.sha256());

    let wrong = format!("sha256:{}", "1".repeat(64));
    let err = sources
        .load(&parse(&format!(
            "oci://{}/policies/cpu-target@{wrong}",
            registry.addr
        ))?)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a wrong digest was pulled"))?;
    assert!(matches!(err, SourceError::Fetch { .. }), "{err}");

    // Larger than the sandbox accepts: refused from the manifest's size, before the layer.
    let small = wasmscaler::sandbox::Sandbox::new(wasmscaler::sandbox::SandboxConfig {
        max_component_bytes: 1_000,
        compile: wasmscaler_tests::compile_config(),
        ..Default::default()
    })?;
    let err = PolicySources::new(
        Arc::new(small),
        &FetchConfig {
            insecure_registries: vec![registry.addr.clone()],
            ..Default::default()
        },
    )?
    .load(&parse(&format!(
        "oci://{}/policies/cpu-target:v1",
        registry.addr
    ))?)
    .await
    .err()
    .ok_or_else(|| anyhow::anyhow!("an oversized layer was pulled"))?;
    assert!(matches!(err, SourceError::TooLarge { .. }), "{err}");

    // Without the registry in the insecure list the host insists on HTTPS.
    let strict = sources_for(&FetchConfig::default())?;
    assert!(
        strict
            .load(&parse(&format!(
                "oci://{}/policies/cpu-target:v1",
                registry.addr
            ))?)
            .await
            .is_err()
    );
    Ok(())
}

#[tokio::test]
async fn an_upload_is_resolved_by_name_and_its_pin_checked() -> anyhow::Result<()> {
    let wasm = std::fs::read(build_rust_guest("guests/cpu-target")?)?;
    let dir = tempfile::tempdir()?;
    let sandbox = Arc::new(test_sandbox()?);
    let store = Arc::new(PolicyStore::open(dir.path(), sandbox.clone(), 64 << 20)?);
    let record = store.put("cpu", wasm, 0).await?;
    let sources = PolicySources::new(sandbox, &FetchConfig::default())?.with_uploads(store);

    let guest = sources.load(&parse("policy:cpu")?).await?;
    decides_six(&guest).await?;
    let pinned = sources
        .load(&parse(&format!("policy:cpu@sha256:{}", record.sha256))?)
        .await?;
    assert_eq!(pinned.sha256(), record.sha256);

    let err = sources
        .load(&parse(&format!("policy:cpu@sha256:{}", "2".repeat(64)))?)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a wrong pin was accepted"))?;
    assert!(matches!(err, SourceError::DigestMismatch { .. }), "{err}");
    let err = sources
        .load(&parse("policy:absent")?)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a missing upload was found"))?;
    assert!(err.to_string().contains("absent"), "{err}");
    Ok(())
}

#[tokio::test]
async fn a_source_taken_down_is_served_from_the_last_good_copy() -> anyhow::Result<()> {
    let registry = start_registry()?;
    let wasm = std::fs::read(build_rust_guest("guests/cpu-target")?)?;
    let digest = push(&registry.addr, "policies/cpu:v1", &wasm).await?;
    let copies = tempfile::tempdir()?;
    let sources = sources_for(&FetchConfig {
        insecure_registries: vec![registry.addr.clone()],
        timeout_ms: 2_000,
    })?
    .with_local_copies(copies.path())?;
    let by_tag = parse(&format!("oci://{}/policies/cpu:v1", registry.addr))?;
    let by_digest = parse(&format!("oci://{}/policies/cpu@{digest}", registry.addr))?;
    sources.load(&by_tag).await?;
    sources.load(&by_digest).await?;

    // The registry goes away: both still load, with the same content.
    drop(registry);
    for reference in [&by_tag, &by_digest] {
        let guest = sources.load(reference).await?;
        assert_eq!(guest.sha256(), sha256_hex(&wasm), "{reference}");
    }
    // A reference never fetched has no copy: the outage shows.
    let never = parse("oci://127.0.0.1:9/policies/other:v1")?;
    let err = sources
        .load(&never)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("loaded from nowhere"))?;
    assert!(matches!(err, SourceError::Fetch { .. }), "{err}");
    // Without copies the same outage stops the load.
    let bare = sources_for(&FetchConfig {
        timeout_ms: 2_000,
        ..Default::default()
    })?;
    assert!(bare.load(&by_tag).await.is_err());
    Ok(())
}

#[tokio::test]
async fn files_outside_the_allowed_directories_and_devices_are_refused() -> anyhow::Result<()> {
    let wasm = build_rust_guest("guests/cpu-target")?;
    let allowed = wasm
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let sources = sources_for(&FetchConfig::default())?.with_rules(SourceRules {
        file_dirs: Some(vec![allowed.clone()]),
        ..SourceRules::default()
    });
    sources.load(&PolicyRef::File(wasm.clone())).await?;
    // A link inside the directory to a device outside it.
    let link = allowed.join(format!("zero-{}.wasm", std::process::id()));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("/dev/zero", &link)?;
    let err = sources.load(&PolicyRef::File(link.clone())).await.err();
    std::fs::remove_file(&link)?;
    let err = err.ok_or_else(|| anyhow::anyhow!("a link out of the directory was followed"))?;
    assert!(matches!(err, SourceError::NotAllowed(_)), "{err}");
    assert!(err.to_string().contains("fileDirs"), "{err}");

    // With no directory rule, a device is still never read (it would never end).
    let open = sources_for(&FetchConfig::default())?;
    let started = std::time::Instant::now();
    let err = open
        .load(&PolicyRef::File("/dev/zero".into()))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("/dev/zero was loaded"))?;
    assert!(err.to_string().contains("not a regular file"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    Ok(())
}

#[tokio::test]
async fn the_upload_store_keeps_its_quota_and_no_orphaned_blob() -> anyhow::Result<()> {
    let cpu = std::fs::read(build_rust_guest("guests/cpu-target")?)?;
    let scripted = std::fs::read(build_rust_guest("tests/hostile/scripted")?)?;
    let dir = tempfile::tempdir()?;
    let sandbox = Arc::new(test_sandbox()?);
    let store = PolicyStore::open(dir.path(), sandbox.clone(), 64 << 20)?.with_quota(StoreQuota {
        max_policies: 2,
        max_total_bytes: (cpu.len() + scripted.len()) as u64,
    });
    let blobs =
        || -> anyhow::Result<usize> { Ok(std::fs::read_dir(dir.path().join("blobs"))?.count()) };
    let first = store.put("a", cpu.clone(), 0).await?;
    // Re-uploading a name with other content removes the content no name refers to any more.
    store.put("a", scripted.clone(), 1).await?;
    assert_eq!(blobs()?, 1);
    assert!(
        !dir.path()
            .join(format!("blobs/{}.wasm", first.sha256))
            .exists()
    );
    store.put("b", cpu.clone(), 2).await?;
    // A third name is over the count.
    let err = store
        .put("c", cpu.clone(), 3)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("over the count"))?;
    assert!(matches!(err, PolicyError::Quota(_)), "{err}");
    // Replacing within the quota works; new bytes over the byte quota do not.
    store.put("b", cpu.clone(), 4).await?;
    let bigger = PolicyStore::open(dir.path(), sandbox.clone(), 64 << 20)?.with_quota(StoreQuota {
        max_policies: 10,
        max_total_bytes: (cpu.len() + scripted.len()) as u64,
    });
    let other = std::fs::read(build_rust_guest("guests/capacity")?)?;
    let err = bigger
        .put("c", other, 5)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("over the bytes"))?;
    assert!(matches!(err, PolicyError::Quota(_)), "{err}");
    // A crash's leftover blob is collected when the store opens.
    std::fs::write(
        dir.path().join(format!("blobs/{}.wasm", "0".repeat(64))),
        b"orphan",
    )?;
    PolicyStore::open(dir.path(), sandbox, 64 << 20)?;
    assert_eq!(blobs()?, 2);
    Ok(())
}

#[tokio::test]
async fn policy_urls_never_reach_metadata_addresses() -> anyhow::Result<()> {
    let sources = sources_for(&FetchConfig::default())?;
    let err = sources
        .load(&parse(&format!(
            "http://169.254.169.254/latest/policy.wasm@sha256:{}",
            "5".repeat(64)
        ))?)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("fetched from the metadata address"))?;
    assert!(matches!(err, SourceError::NotAllowed(_)), "{err}");
    assert!(err.to_string().contains("httpDenyNetworks"), "{err}");
    Ok(())
}
