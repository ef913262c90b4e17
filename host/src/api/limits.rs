//! What an API client, with or without a token, may cost the host: connections, requests in
//! flight, how long it may take to send headers and body, and how many dry runs may run at
//! once.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::sandbox::BoxFuture;

/// Bounds of the REST API, typed so the CLI, the chart and tests set the same knobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ApiLimits {
    /// Let clients without a token run dry runs (`GET …/metrics`, `POST …/evaluation?dry_run=
    /// true`). Off by default: a dry run runs guests and may read the target.
    pub open_dry_runs: bool,
    /// Dry runs that may run at once, all clients together; more are answered 429.
    pub max_concurrent_dry_runs: usize,
    /// Open connections; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Requests being handled at once; more wait for a turn.
    pub max_concurrent_requests: usize,
    /// Time a client has to send a request's headers, in milliseconds.
    pub header_read_timeout_ms: u64,
    /// Time a client has to send a request's body, in milliseconds.
    pub body_read_timeout_ms: u64,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            open_dry_runs: false,
            max_concurrent_dry_runs: 2,
            max_connections: 256,
            max_concurrent_requests: 64,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
        }
    }
}

impl ApiLimits {
    /// The header read timeout as a [`Duration`].
    pub(crate) fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    /// The body read timeout as a [`Duration`].
    pub(crate) fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms)
    }
}

/// An acceptor that refuses connections past a count: each accepted stream holds a slot
/// until it closes.
#[derive(Clone)]
pub(crate) struct LimitedAcceptor<A> {
    inner: A,
    slots: Arc<Semaphore>,
}

impl<A> LimitedAcceptor<A> {
    pub(crate) fn new(inner: A, max_connections: usize) -> Self {
        LimitedAcceptor {
            inner,
            slots: Arc::new(Semaphore::new(max_connections.max(1))),
        }
    }
}

impl<A, I, S> Accept<I, S> for LimitedAcceptor<A>
where
    A: Accept<I, S>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = Limited<A::Stream>;
    type Service = A::Service;
    type Future = BoxFuture<'static, io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            drop(stream);
            return Box::pin(std::future::ready(Err(io::Error::other(
                "connection limit reached",
            ))));
        };
        let accepted = self.inner.accept(stream, service);
        Box::pin(async move {
            let (stream, service) = accepted.await?;
            Ok((
                Limited {
                    inner: stream,
                    _slot: permit,
                },
                service,
            ))
        })
    }
}

/// A stream holding one connection slot.
pub(crate) struct Limited<S> {
    inner: S,
    _slot: OwnedSemaphorePermit,
}

impl<S: AsyncRead + Unpin> AsyncRead for Limited<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Limited<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
