//! A client-side request budget for the Kubernetes client: client-go's QPS and burst, as a
//! tower layer under kube-rs's client.
//!
//! kube-rs has no client-side rate limit, so a controller with thousands of autoscalers sends
//! as fast as its runs come due and the API server's priority-and-fairness answers 429s and
//! 504s. Here every request takes a token from a bucket (`burst` deep, refilled at `qps`); a
//! request without a token waits for one. Requests are delayed, never failed, and the waits
//! are counted for `/metrics`.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use tower::{Layer, Service};

/// The budget: a steady rate and a burst above it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct BudgetConfig {
    /// Requests per second, sustained.
    pub qps: f64,
    /// Requests that may go at once after a quiet period.
    pub burst: u32,
}

impl Default for BudgetConfig {
    /// 100 requests/s with bursts of 200: kube-controller-manager's client runs at 20/30; a
    /// wasmscaler controller carries more objects per request budget than one HPA controller
    /// loop but must not take the API server over (it saturated 2 cores at 165 requests/s).
    fn default() -> Self {
        BudgetConfig {
            qps: 100.0,
            burst: 200,
        }
    }
}

#[derive(Debug)]
struct Bucket {
    /// Tokens left; negative while requests are reserved ahead of the refill.
    tokens: f64,
    refilled: Instant,
}

/// The shared budget of one client, and its throttling counters.
#[derive(Debug, Clone)]
pub struct RequestBudget {
    config: BudgetConfig,
    bucket: Arc<Mutex<Bucket>>,
    /// Requests that had to wait for a token.
    pub throttled: Counter,
    /// Seconds requests spent waiting, all together.
    pub waited_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
}

impl RequestBudget {
    /// A full bucket for `config`.
    pub fn new(config: BudgetConfig) -> Self {
        RequestBudget {
            bucket: Arc::new(Mutex::new(Bucket {
                tokens: f64::from(config.burst.max(1)),
                refilled: Instant::now(),
            })),
            config,
            throttled: Counter::default(),
            waited_seconds: Counter::default(),
        }
    }

    /// Takes a token now and says how long to wait before using it: zero if one was left,
    /// else until the refill reaches this request (tokens are reserved in order, so waiting
    /// requests keep their turn).
    fn reserve(&self) -> Duration {
        let qps = self.config.qps.max(0.001);
        let Ok(mut bucket) = self.bucket.lock() else {
            return Duration::ZERO;
        };
        let now = Instant::now();
        let refill = now.duration_since(bucket.refilled).as_secs_f64() * qps;
        bucket.tokens = (bucket.tokens + refill).min(f64::from(self.config.burst.max(1)));
        bucket.refilled = now;
        bucket.tokens -= 1.0;
        if bucket.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-bucket.tokens / qps)
        }
    }
}

impl<S> Layer<S> for RequestBudget {
    type Service = Budgeted<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Budgeted {
            inner,
            budget: self.clone(),
            wait: None,
            reserved: false,
        }
    }
}

/// A service whose requests each wait for a token of the budget.
pub struct Budgeted<S> {
    inner: S,
    budget: RequestBudget,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
    reserved: bool,
}

impl<S, R> Service<R> for Budgeted<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if !self.reserved {
            if self.wait.is_none() {
                let wait = self.budget.reserve();
                if wait.is_zero() {
                    self.reserved = true;
                } else {
                    self.budget.throttled.inc();
                    self.budget.waited_seconds.inc_by(wait.as_secs_f64());
                    self.wait = Some(Box::pin(tokio::time::sleep(wait)));
                }
            }
            if let Some(wait) = self.wait.as_mut() {
                if wait.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.wait = None;
                self.reserved = true;
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        self.reserved = false;
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_goes_at_once_and_the_rest_waits_its_turn() {
        let budget = RequestBudget::new(BudgetConfig {
            qps: 10.0,
            burst: 3,
        });
        let waits: Vec<Duration> = (0..5).map(|_| budget.reserve()).collect();
        assert!(waits[..3].iter().all(Duration::is_zero), "{waits:?}");
        // The 4th waits one refill (100 ms), the 5th two: in order, never refused.
        assert!((95..=100).contains(&waits[3].as_millis()), "{waits:?}");
        assert!((195..=200).contains(&waits[4].as_millis()), "{waits:?}");
    }

    #[tokio::test]
    async fn requests_over_the_budget_are_delayed_and_counted() {
        use tower::ServiceExt;
        let budget = RequestBudget::new(BudgetConfig {
            qps: 20.0,
            burst: 2,
        });
        let mut service = budget.layer(tower::service_fn(|n: u32| async move {
            Ok::<u32, std::convert::Infallible>(n)
        }));
        let started = tokio::time::Instant::now();
        for n in 0..6 {
            let answer = service.ready().await.unwrap().call(n).await.unwrap();
            assert_eq!(answer, n);
        }
        // 2 at once, then 4 more at 50 ms each: they cannot all have gone sooner.
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(190), "{elapsed:?}");
        assert_eq!(budget.throttled.get(), 4);
    }
}

#[cfg(test)]
mod buffered {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_behind_a_buffer_all_get_through() {
        use tower::ServiceExt;
        let budget = RequestBudget::new(BudgetConfig {
            qps: 50.0,
            burst: 2,
        });
        let service = tower::buffer::Buffer::new(
            budget.layer(tower::service_fn(|n: u32| async move {
                Ok::<u32, std::convert::Infallible>(n)
            })),
            1024,
        );
        let calls = (0..20).map(|n| {
            let service = service.clone();
            tokio::spawn(async move { service.oneshot(n).await })
        });
        let done =
            tokio::time::timeout(Duration::from_secs(5), futures::future::join_all(calls)).await;
        let results = done.expect("callers stuck behind the budget");
        assert_eq!(results.len(), 20);
    }
}
