//! Debian's docker-registry (the CNCF distribution registry) on loopback, and pushing wasm
//! OCI artifacts to it, for the `oci://` policy tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::secrets::RegistryAuth;

/// A running registry; stopped on drop.
pub type Registry = super::daemons::Daemon;

fn registry_binary() -> anyhow::Result<PathBuf> {
    let path = Path::new("/usr/bin/docker-registry");
    anyhow::ensure!(
        path.exists(),
        "{} is missing: install Debian's docker-registry (tests/run.sh does: apt-get install docker-registry)",
        path.display()
    );
    Ok(path.to_path_buf())
}

/// Debian's docker-registry (the CNCF distribution registry) on a free loopback port.
pub fn start_registry() -> anyhow::Result<Registry> {
    let dir = tempfile::tempdir()?;
    let addr = format!("127.0.0.1:{}", super::daemons::free_port()?);
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        ),
    )?;
    let mut command = Command::new(registry_binary()?);
    command.arg("serve").arg(&config);
    super::daemons::start(command, addr, dir)
}

/// Pushes `wasm` as a wasm OCI artifact; returns the manifest digest.
pub async fn push(registry: &str, repository: &str, wasm: &[u8]) -> anyhow::Result<String> {
    let client = oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    });
    let reference: oci_client::Reference = format!("{registry}/{repository}").parse()?;
    let layer = ImageLayer::new(
        wasm.to_vec(),
        oci_client::manifest::WASM_LAYER_MEDIA_TYPE.to_owned(),
        None,
    );
    let config = Config::new(
        b"{}".to_vec(),
        oci_client::manifest::WASM_CONFIG_MEDIA_TYPE.to_owned(),
        None,
    );
    client
        .push(&reference, &[layer], config, &RegistryAuth::Anonymous, None)
        .await?;
    Ok(client
        .fetch_manifest_digest(&reference, &RegistryAuth::Anonymous)
        .await?)
}

/// Hex sha256 of `bytes`, as the host names components.
pub fn sha256_hex(bytes: &[u8]) -> String {
    wasmscaler::sandbox::sha256(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
