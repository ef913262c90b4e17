//! Serving the API: plain HTTP, or HTTPS when a certificate and key are given; graceful
//! shutdown on `stop`, with `/readyz` turning 503 first.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{ApiState, router};

/// A PEM certificate chain and private key for HTTPS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

/// Binds `addr` and serves the API until `stop`. Errors binding or reading the TLS files are
/// returned here, before anything is served.
pub async fn serve(
    addr: SocketAddr,
    state: Arc<ApiState>,
    tls: Option<TlsFiles>,
    stop: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let app = router(state.clone());
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("listening on {addr}"))?;
    listener.set_nonblocking(true)?;
    let task = match tls {
        None => {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            tracing::info!(%addr, "REST API listening (HTTP)");
            tokio::spawn(async move {
                let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                    stop.cancelled().await;
                    state.set_not_ready();
                });
                if let Err(error) = serve.await {
                    tracing::error!(%error, "REST API failed");
                }
            })
        }
        Some(files) => {
            // One process-wide crypto provider; a second install (tests) is harmless.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let config =
                axum_server::tls_rustls::RustlsConfig::from_pem_file(&files.cert, &files.key)
                    .await
                    .with_context(|| {
                        format!(
                            "TLS certificate {} or key {}",
                            files.cert.display(),
                            files.key.display()
                        )
                    })?;
            let handle = axum_server::Handle::new();
            let shutdown = handle.clone();
            tokio::spawn(async move {
                stop.cancelled().await;
                state.set_not_ready();
                shutdown.graceful_shutdown(Some(Duration::from_secs(10)));
            });
            tracing::info!(%addr, "REST API listening (HTTPS)");
            tokio::spawn(async move {
                let serve = axum_server::from_tcp_rustls(listener, config)
                    .handle(handle)
                    .serve(app.into_make_service());
                if let Err(error) = serve.await {
                    tracing::error!(%error, "REST API failed");
                }
            })
        }
    };
    Ok(task)
}
