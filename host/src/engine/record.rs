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
}
