//! Prometheus metrics of the engine (prometheus-client), fed by every completed run.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::engine::{AutoscalerSpec, Outcome, RunObserver, RunRecord};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AutoscalerLabels {
    autoscaler: String,
    namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    autoscaler: String,
    namespace: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    autoscaler: String,
    namespace: String,
    kind: String,
}

fn guest_histogram() -> Histogram {
    // 10 µs to ~2.6 s: a compiled guest call to an interpreter with HTTP in it.
    Histogram::new(exponential_buckets(1e-5, 4.0, 10))
}

/// The metric families and their registry.
pub struct Metrics {
    registry: Registry,
    runs: Family<OutcomeLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    fuel: Family<AutoscalerLabels, Counter>,
    guest_seconds: Family<AutoscalerLabels, Histogram, fn() -> Histogram>,
    replicas_current: Family<AutoscalerLabels, Gauge>,
    replicas_desired: Family<AutoscalerLabels, Gauge>,
    scale_events: Family<AutoscalerLabels, Counter>,
    logs_dropped: Family<AutoscalerLabels, Counter>,
    log_bytes_dropped: Family<AutoscalerLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every family under the `wasmscaler` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("wasmscaler");
        let metrics = Metrics {
            runs: Family::default(),
            failures: Family::default(),
            fuel: Family::default(),
            guest_seconds: Family::new_with_constructor(guest_histogram as fn() -> Histogram),
            replicas_current: Family::default(),
            replicas_desired: Family::default(),
            scale_events: Family::default(),
            logs_dropped: Family::default(),
            log_bytes_dropped: Family::default(),
            registry: Registry::default(),
        };
        registry.register("runs", "Autoscaler runs by outcome", metrics.runs.clone());
        registry.register(
            "failures",
            "Failed runs by error kind",
            metrics.failures.clone(),
        );
        registry.register(
            "fuel_used",
            "Fuel consumed by guest calls",
            metrics.fuel.clone(),
        );
        registry.register(
            "guest_call_duration_seconds",
            "Wall-clock time of a run's guest calls",
            metrics.guest_seconds.clone(),
        );
        registry.register(
            "replicas_current",
            "Replicas observed at the last run",
            metrics.replicas_current.clone(),
        );
        registry.register(
            "replicas_desired",
            "Replicas decided at the last run",
            metrics.replicas_desired.clone(),
        );
        registry.register(
            "scale_events",
            "Writes of a new replica count",
            metrics.scale_events.clone(),
        );
        registry.register(
            "guest_log_records_dropped",
            "Guest log records dropped over the per-call budgets",
            metrics.logs_dropped.clone(),
        );
        registry.register(
            "guest_log_bytes_dropped",
            "Bytes of guest logs and stdout/stderr dropped or cut over the per-call budgets",
            metrics.log_bytes_dropped.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Also exposes the throttling of a Kubernetes client's request budget.
    // Used by the `kubernetes` feature's code only.
    #[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
    pub(crate) fn with_client_budget(
        mut self,
        budget: &crate::targets::budget::RequestBudget,
    ) -> Self {
        self.registry.register(
            "kube_client_throttled_requests",
            "Kubernetes API requests that waited for the client-side budget",
            budget.throttled.clone(),
        );
        self.registry.register(
            "kube_client_throttled_seconds",
            "Seconds Kubernetes API requests waited for the client-side budget",
            budget.waited_seconds.clone(),
        );
        self
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

impl RunObserver for Metrics {
    fn observe(&self, spec: &AutoscalerSpec, record: &RunRecord) {
        let labels = AutoscalerLabels {
            autoscaler: spec.name.clone(),
            namespace: spec.namespace.clone(),
        };
        let outcome = match &record.outcome {
            Outcome::Scaled { .. } => "scaled",
            Outcome::WouldScale { .. } => "would-scale",
            Outcome::Unchanged => "unchanged",
            Outcome::Held { .. } => "held",
            Outcome::Paused { .. } => "paused",
        };
        self.runs
            .get_or_create(&OutcomeLabels {
                autoscaler: labels.autoscaler.clone(),
                namespace: labels.namespace.clone(),
                outcome: outcome.into(),
            })
            .inc();
        if let Some(kind) = &record.error_kind {
            self.failures
                .get_or_create(&FailureLabels {
                    autoscaler: labels.autoscaler.clone(),
                    namespace: labels.namespace.clone(),
                    kind: kind.clone(),
                })
                .inc();
        }
        self.fuel.get_or_create(&labels).inc_by(record.fuel);
        if record.logs_dropped > 0 {
            self.logs_dropped
                .get_or_create(&labels)
                .inc_by(u64::from(record.logs_dropped));
        }
        if record.log_bytes_dropped > 0 {
            self.log_bytes_dropped
                .get_or_create(&labels)
                .inc_by(record.log_bytes_dropped);
        }
        if record.guest_micros > 0 {
            self.guest_seconds
                .get_or_create(&labels)
                .observe(record.guest_micros as f64 / 1e6);
        }
        if let Some(current) = record.current_replicas {
            self.replicas_current
                .get_or_create(&labels)
                .set(i64::from(current));
        }
        let desired = match record.outcome {
            Outcome::Scaled { to, .. } | Outcome::WouldScale { to, .. } => Some(to),
            _ => record.limited.map(|(n, _)| n),
        };
        if let Some(desired) = desired {
            self.replicas_desired
                .get_or_create(&labels)
                .set(i64::from(desired));
        }
        if matches!(record.outcome, Outcome::Scaled { .. }) {
            self.scale_events.get_or_create(&labels).inc();
        }
    }
}
