//! The runtime that runs long guest calls, apart from the one serving the API and the control
//! plane.
//!
//! A guest call is CPU work with await points only at host calls and at the yields the store
//! is told to make (every epoch tick and every `fuelYieldInterval` units of fuel). On a shared
//! runtime, a few busy guests would still delay health checks, watch streams and lease
//! renewals by up to one slice each; on their own runtime they can only delay each other.
//!
//! Almost every call is short (tens of microseconds), and handing each one to another runtime
//! costs two cross-thread wake-ups, measured at ~40 µs a call. So a call starts where it is
//! awaited, and only once it has run into an epoch tick (at most one tick, 10 ms) is the rest
//! of it moved to the guest runtime. A wasmtime call is a `Send` future and may continue on
//! any thread.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use super::SandboxError;

/// A multi-threaded tokio runtime for guest calls, shut down in the background on drop (a
/// runtime cannot be dropped from inside another one).
pub(crate) struct GuestRuntime {
    runtime: Option<tokio::runtime::Runtime>,
}

impl GuestRuntime {
    pub(crate) fn start(threads: Option<usize>) -> std::io::Result<Self> {
        let threads = threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("wasmscaler-guest")
            .enable_all()
            .build()?;
        Ok(GuestRuntime {
            runtime: Some(runtime),
        })
    }

    /// Runs `call` where it is awaited until `long_running` is set (by the call's first
    /// epoch yield), then moves the rest of it to the guest runtime and waits for it there.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        long_running: Arc<AtomicBool>,
        call: impl Future<Output = Result<T, SandboxError>> + Send + 'static,
    ) -> Result<T, SandboxError> {
        let mut call = Box::pin(call);
        let inline = std::future::poll_fn(|cx| match call.as_mut().poll(cx) {
            Poll::Ready(result) => Poll::Ready(Some(result)),
            Poll::Pending if long_running.load(Ordering::Relaxed) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        })
        .await;
        if let Some(result) = inline {
            return result;
        }
        let Some(runtime) = &self.runtime else {
            return Err(SandboxError::Internal(
                "the guest runtime is shut down".into(),
            ));
        };
        // Aborting on drop keeps a cancelled caller (a stopped autoscaler) from leaving its
        // guest running.
        let mut task = AbortOnDrop(runtime.spawn(call));
        match (&mut task.0).await {
            Ok(result) => result,
            Err(e) => Err(SandboxError::Internal(format!("guest task failed: {e}"))),
        }
    }
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Drop for GuestRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
