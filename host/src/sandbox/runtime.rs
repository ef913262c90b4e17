//! The runtime that runs guest calls, apart from the one serving the API and the control
//! plane.
//!
//! A guest call is CPU work with await points only at host calls and at the yields the store
//! is told to make (every epoch tick and every `fuelYieldInterval` units of fuel). On a shared
//! runtime, a few busy guests would still delay health checks, watch streams and lease
//! renewals by up to one slice each; on their own runtime they can only delay each other.

use std::future::Future;

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

    /// Runs `call` on the guest runtime and waits for it from any runtime.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        call: impl Future<Output = Result<T, SandboxError>> + Send + 'static,
    ) -> Result<T, SandboxError> {
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
