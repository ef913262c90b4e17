//! The compiled-component cache: memory first, then disk, robust to bad files.

use std::path::Path;

use wasmscaler::sandbox::{LoadSource, Sandbox, SandboxConfig};
use wasmscaler_tests::build_rust_guest;

fn sandbox_with_cache(dir: &Path) -> anyhow::Result<Sandbox> {
    Ok(Sandbox::new(SandboxConfig {
        cache_dir: Some(dir.to_path_buf()),
        compile: wasmscaler_tests::compile_config(),
        ..SandboxConfig::default()
    })?)
}

fn cache_file(dir: &Path, bytes: &[u8]) -> std::path::PathBuf {
    let digest: String = wasmscaler::sandbox::sha256(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    dir.join(format!("{digest}.cwasm"))
}

#[tokio::test]
async fn second_load_comes_from_memory_then_from_disk_in_a_new_process() -> anyhow::Result<()> {
    let bytes = std::fs::read(build_rust_guest("guests/cpu-target")?)?;
    let dir = tempfile::tempdir()?;

    let sandbox = sandbox_with_cache(dir.path())?;
    let first = sandbox.load(bytes.clone()).await?;
    assert_eq!(first.source, LoadSource::Compiled);
    assert!(cache_file(dir.path(), &bytes).exists());
    let again = sandbox.load(bytes.clone()).await?;
    assert_eq!(again.source, LoadSource::Memory);
    assert!(std::sync::Arc::ptr_eq(&first.component, &again.component));

    // A new sandbox stands for a restarted host: the disk cache answers.
    let restarted = sandbox_with_cache(dir.path())?;
    let loaded = restarted.load(bytes.clone()).await?;
    assert_eq!(loaded.source, LoadSource::Disk);
    assert_eq!(loaded.component.sha256(), first.component.sha256());
    Ok(())
}

#[tokio::test]
async fn corrupted_cache_files_are_recompiled_and_replaced() -> anyhow::Result<()> {
    let bytes = std::fs::read(build_rust_guest("guests/cpu-target")?)?;
    let dir = tempfile::tempdir()?;
    sandbox_with_cache(dir.path())?.load(bytes.clone()).await?;
    let file = cache_file(dir.path(), &bytes);
    let good = std::fs::read(&file)?;

    let corruptions: Vec<(&str, Vec<u8>)> = vec![
        ("flipped payload byte", {
            let mut b = good.clone();
            let last = b.len() - 100;
            b[last] ^= 0xff;
            b
        }),
        ("other engine", {
            let mut b = good.clone();
            b[8] ^= 0xff;
            b
        }),
        ("truncated", good[..good.len() / 3].to_vec()),
        ("garbage", b"not an artifact".to_vec()),
        ("empty", Vec::new()),
    ];
    for (what, corrupt) in corruptions {
        std::fs::write(&file, &corrupt)?;
        let loaded = sandbox_with_cache(dir.path())?.load(bytes.clone()).await?;
        assert_eq!(loaded.source, LoadSource::Compiled, "{what}");
        assert_eq!(
            std::fs::read(&file)?,
            good,
            "{what}: the entry is rewritten"
        );
        let reloaded = sandbox_with_cache(dir.path())?.load(bytes.clone()).await?;
        assert_eq!(reloaded.source, LoadSource::Disk, "{what}");
    }
    Ok(())
}

#[tokio::test]
async fn an_unwritable_cache_directory_does_not_prevent_loading() -> anyhow::Result<()> {
    let bytes = std::fs::read(build_rust_guest("guests/cpu-target")?)?;
    let dir = tempfile::tempdir()?;
    // A file where the cache directory should be: every write fails.
    let blocked = dir.path().join("cache");
    std::fs::write(&blocked, b"")?;
    let loaded = sandbox_with_cache(&blocked)?.load(bytes).await?;
    assert_eq!(loaded.source, LoadSource::Compiled);
    Ok(())
}
