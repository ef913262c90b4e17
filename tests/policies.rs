//! Policy references resolved for real: a pinned URL served over HTTP, OCI artifacts pushed to
//! and pulled from Debian's docker-registry on loopback (by tag and by digest), and uploads
//! named in the store. Wrong digests are refused, naming both digests.

use std::sync::Arc;

use wasmscaler::contract::model::{Context, PodMetrics};
use wasmscaler::policies::{FetchConfig, PolicyRef, PolicySources, PolicyStore, SourceError};
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
