//! Debian's docker-registry (the CNCF distribution registry) on loopback, and pushing wasm
//! OCI artifacts to it, for the `oci://` policy tests.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::secrets::RegistryAuth;

/// A running registry; stopped on drop.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr = format!("127.0.0.1:{port}");
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        ),
    )?;
    let child = Command::new(registry_binary()?)
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let registry = Registry {
        child,
        addr,
        _dir: dir,
    };
    let started = Instant::now();
    while std::net::TcpStream::connect(&registry.addr).is_err() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(10),
            "docker-registry did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(registry)
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
