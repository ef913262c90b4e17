//! The structured record of one autoscaler run.

use serde::Serialize;

use super::behavior::LimitReason;
use crate::contract::model::Decision;

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum Outcome {
    /// The target was scaled.
    Scaled {
        /// From this count.
        from: u32,
        /// To this count.
        to: u32,
    },
    /// Dry run: the target would have been scaled.
    WouldScale {
        /// From this count.
        from: u32,
        /// To this count.
        to: u32,
    },
    /// The target already had the right count.
    Unchanged,
    /// Nothing was decided or written; the count was held.
    Held {
        /// Why.
        reason: String,
    },
    /// Autoscaling is paused.
    Paused {
        /// Why.
        reason: String,
    },
}

/// One run, as logged and kept for the API.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// The autoscaler.
    pub autoscaler: String,
    /// Start of the run, ms since the Unix epoch.
    pub at_ms: i64,
    /// Replicas observed at the start.
    pub current_replicas: Option<u32>,
    /// Replicas listed by the target.
    pub replica_count: usize,
    /// Samples gathered.
    pub sample_count: usize,
    /// What the guest decided.
    pub decision: Option<Decision>,
    /// After clamping to [min, max].
    pub clamped: Option<u32>,
    /// Whether the tolerance held the count.
    pub within_tolerance: bool,
    /// After the stabilization windows.
    pub stabilized: Option<u32>,
    /// After the rate policies.
    pub limited: Option<(u32, LimitReason)>,
    /// Whether the fallback decided instead of the guest.
    pub fallback: bool,
    /// How the run ended.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// The error, if any step failed.
    pub error: Option<String>,
    /// Its kind (sandbox error kind, `target`, ...).
    pub error_kind: Option<String>,
    /// Fuel used by the guests.
    pub fuel: u64,
    /// Wall-clock time spent in guest calls, in microseconds.
    pub guest_micros: u64,
    /// Wall-clock duration of the run in microseconds.
    pub duration_micros: u64,
    /// Guest log records dropped over the per-call budgets.
    pub logs_dropped: u32,
    /// Bytes of guest log records and stdout/stderr dropped or cut over the budgets.
    pub log_bytes_dropped: u64,
    /// With `metrics:` as a list: what became of each source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<crate::contract::model::SourceStatus>,
    /// How many runs right before this one ended exactly as it did and were folded into it
    /// (as Kubernetes folds repeated Events into a count); `at_ms`, `fuel` and the durations
    /// are the last run's.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub repeats: u32,
    /// With `repeats`: when the first of the folded runs started, ms since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_at_ms: Option<i64>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl RunRecord {
    /// Whether `self` ended exactly as `last` did: everything but its time and cost is equal.
    /// Every field is named, so a new one must be placed on one side or the other.
    pub fn repeats_the_result_of(&self, last: &RunRecord) -> bool {
        let RunRecord {
            autoscaler,
            at_ms: _,
            current_replicas,
            replica_count,
            sample_count,
            decision,
            clamped,
            within_tolerance,
            stabilized,
            limited,
            fallback,
            outcome,
            error,
            error_kind,
            fuel: _,
            guest_micros: _,
            duration_micros: _,
            logs_dropped,
            log_bytes_dropped,
            sources,
            repeats: _,
            first_at_ms: _,
        } = self;
        *autoscaler == last.autoscaler
            && *current_replicas == last.current_replicas
            && *replica_count == last.replica_count
            && *sample_count == last.sample_count
            && *decision == last.decision
            && *clamped == last.clamped
            && *within_tolerance == last.within_tolerance
            && *stabilized == last.stabilized
            && *limited == last.limited
            && *fallback == last.fallback
            && *outcome == last.outcome
            && *error == last.error
            && *error_kind == last.error_kind
            && *logs_dropped == last.logs_dropped
            && *log_bytes_dropped == last.log_bytes_dropped
            && *sources == last.sources
    }

    /// Folds `self`, a run that repeats `last`'s result, into `last`: one more repeat, and
    /// the time and cost of the latest run.
    pub fn fold_into(&self, last: &mut RunRecord) {
        last.first_at_ms.get_or_insert(last.at_ms);
        last.repeats = last.repeats.saturating_add(1);
        last.at_ms = self.at_ms;
        last.fuel = self.fuel;
        last.guest_micros = self.guest_micros;
        last.duration_micros = self.duration_micros;
    }

    /// The runs this record stands for: itself and the ones folded into it.
    pub fn runs(&self) -> u64 {
        1 + u64::from(self.repeats)
    }
}
