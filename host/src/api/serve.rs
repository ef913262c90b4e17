//! Serving the API: plain HTTP, or HTTPS when a certificate and key are given; graceful
//! shutdown on `stop`, with `/readyz` turning 503 first.
//!
//! Both go through the same hyper server, configured for clients that may be hostile: a
//! bounded number of connections (the acceptor refuses the rest before any TLS work), header
//! and body read timeouts, small header buffers, and few HTTP/2 streams per connection.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum_server::accept::DefaultAcceptor;
use axum_server::tls_rustls::RustlsAcceptor;
use hyper_util::rt::TokioTimer;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::limits::{ApiLimits, LimitedAcceptor};
use super::{ApiState, router};

/// A PEM certificate chain and private key for HTTPS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

/// Largest request head (request line plus headers) read from a client.
const MAX_HEAD_BYTES: usize = 64 << 10;
/// HTTP/2 streams one connection may have open.
const MAX_STREAMS_PER_CONNECTION: u32 = 16;

/// Binds `addr` and serves the API until `stop`. Errors binding or reading the TLS files are
/// returned here, before anything is served.
pub async fn serve(
    addr: SocketAddr,
    state: Arc<ApiState>,
    tls: Option<TlsFiles>,
    stop: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let limits = state.limits().clone();
    let app = router(state.clone());
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("listening on {addr}"))?;
    listener.set_nonblocking(true)?;
    let mut server = axum_server::from_tcp(listener);
    configure(server.http_builder(), &limits);
    let handle = axum_server::Handle::new();
    let shutdown = handle.clone();
    tokio::spawn(async move {
        stop.cancelled().await;
        state.set_not_ready();
        shutdown.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    let connections = LimitedAcceptor::new(DefaultAcceptor::new(), limits.max_connections);
    let server = server.handle(handle);
    let task = match tls {
        None => {
            tracing::info!(%addr, "REST API listening (HTTP)");
            let server = server.acceptor(connections);
            tokio::spawn(async move {
                if let Err(error) = server.serve(app.into_make_service()).await {
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
            tracing::info!(%addr, "REST API listening (HTTPS)");
            let acceptor = RustlsAcceptor::new(config)
                .handshake_timeout(limits.header_read_timeout())
                .acceptor(connections);
            let server = server.acceptor(acceptor);
            tokio::spawn(async move {
                if let Err(error) = server.serve(app.into_make_service()).await {
                    tracing::error!(%error, "REST API failed");
                }
            })
        }
    };
    Ok(task)
}

fn configure(
    builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    limits: &ApiLimits,
) {
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout())
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .max_header_list_size(MAX_HEAD_BYTES as u32)
        .keep_alive_interval(Some(limits.header_read_timeout()))
        .keep_alive_timeout(limits.header_read_timeout());
}
