//! What one policy did over a trace: the measures a user compares policies by, and the
//! series a chart draws.

use std::time::Duration;

use serde::Serialize;

use super::model::{StepOutcome, SystemModel};

/// The outcome of one policy over one trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyReport {
    /// The autoscaler's name.
    pub name: String,
    /// Runs of the engine.
    pub decisions: u64,
    /// Runs that ended in an error (the target then held, fail-static).
    pub failed_runs: u64,
    /// Minutes in which the offered load exceeded the ready capacity.
    pub under_provisioned_minutes: f64,
    /// Minutes in which the ready capacity's utilization exceeded the model's
    /// `sloUtilization`, or work waited in the backlog.
    pub slo_violation_minutes: f64,
    /// Replica-hours paid for (starting and draining replicas included).
    pub replica_hours: f64,
    /// Replica-hours beyond the fewest replicas that could have served the load.
    pub over_provisioned_replica_hours: f64,
    /// Changes of the replica count (churn).
    pub scale_events: u64,
    /// The largest backlog, in work units.
    pub peak_backlog: f64,
    /// Work units dropped (overflow `drop`).
    pub dropped_units: f64,
    /// Engine runs per second of wall time: the simulation's own speed.
    pub decisions_per_second: f64,
    /// Wall time of the simulation, in seconds.
    pub wall_seconds: f64,
    /// The sampled series (one point per run), for charts.
    #[serde(skip)]
    pub series: Vec<Point>,
}

/// One sample of the simulated system, taken at each run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Point {
    /// Seconds since the start of the trace.
    pub time: f64,
    /// Offered load, units/s.
    pub load: f64,
    /// Ready capacity, units/s.
    pub capacity: f64,
    /// Replicas that exist.
    pub replicas: u32,
    /// Replicas asked for after the run.
    pub desired: u32,
}

/// Accumulates a [`PolicyReport`] step by step.
pub(crate) struct Tally {
    step_secs: f64,
    per_replica: f64,
    slo_utilization: f64,
    decisions: u64,
    failed_runs: u64,
    under_secs: f64,
    slo_secs: f64,
    replica_secs: f64,
    over_replica_secs: f64,
    scale_events: u64,
    peak_backlog: f64,
    dropped: f64,
    series: Vec<Point>,
}

impl Tally {
    pub(crate) fn new(model: &SystemModel) -> Self {
        Tally {
            step_secs: model.step.0.as_secs_f64(),
            per_replica: model.capacity,
            slo_utilization: model.slo_utilization,
            decisions: 0,
            failed_runs: 0,
            under_secs: 0.0,
            slo_secs: 0.0,
            replica_secs: 0.0,
            over_replica_secs: 0.0,
            scale_events: 0,
            peak_backlog: 0.0,
            dropped: 0.0,
            series: Vec::new(),
        }
    }

    /// One engine run; `failed` when it ended in an error.
    pub(crate) fn run(&mut self, failed: bool) {
        self.decisions += 1;
        self.failed_runs += u64::from(failed);
    }

    /// The replica count changed.
    pub(crate) fn scale_event(&mut self) {
        self.scale_events += 1;
    }

    /// Samples the system at a run, for the series.
    pub(crate) fn point(&mut self, time: f64, step: &StepOutcome, desired: u32) {
        self.series.push(Point {
            time,
            load: step.load,
            capacity: step.capacity,
            replicas: step.replicas,
            desired,
        });
    }

    /// Counts one model step.
    pub(crate) fn step(&mut self, step: &StepOutcome) {
        let dt = self.step_secs;
        if step.load > step.capacity {
            self.under_secs += dt;
        }
        let saturated = if step.capacity > 0.0 {
            step.load / step.capacity > self.slo_utilization
        } else {
            step.load > 0.0
        };
        if saturated || step.backlog > 0.0 {
            self.slo_secs += dt;
        }
        self.replica_secs += f64::from(step.replicas) * dt;
        let needed = (step.load / self.per_replica).ceil();
        self.over_replica_secs += (f64::from(step.replicas) - needed).max(0.0) * dt;
        self.peak_backlog = self.peak_backlog.max(step.backlog);
        self.dropped += step.dropped;
    }

    pub(crate) fn finish(self, name: &str, wall: Duration) -> PolicyReport {
        let wall_seconds = wall.as_secs_f64();
        PolicyReport {
            name: name.to_owned(),
            decisions: self.decisions,
            failed_runs: self.failed_runs,
            under_provisioned_minutes: self.under_secs / 60.0,
            slo_violation_minutes: self.slo_secs / 60.0,
            replica_hours: self.replica_secs / 3600.0,
            over_provisioned_replica_hours: self.over_replica_secs / 3600.0,
            scale_events: self.scale_events,
            peak_backlog: self.peak_backlog,
            dropped_units: self.dropped,
            decisions_per_second: if wall_seconds > 0.0 {
                self.decisions as f64 / wall_seconds
            } else {
                0.0
            },
            wall_seconds,
            series: self.series,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(load: f64, capacity: f64, replicas: u32, backlog: f64) -> StepOutcome {
        StepOutcome {
            load,
            capacity,
            replicas,
            backlog,
            dropped: 0.0,
        }
    }

    #[test]
    fn steps_are_counted_by_what_they_served_and_cost() {
        let model = SystemModel::default(); // 10 units/s per replica, SLO at 90 %, 1 s steps
        let mut tally = Tally::new(&model);
        for _ in 0..60 {
            tally.step(&outcome(25.0, 20.0, 3, 0.0)); // under-provisioned, one replica starting
        }
        for _ in 0..120 {
            tally.step(&outcome(5.0, 30.0, 3, 0.0)); // over-provisioned by 2
        }
        for _ in 0..30 {
            tally.step(&outcome(9.5, 10.0, 1, 0.0)); // 95 %: an SLO violation, not under
        }
        let report = tally.finish("p", Duration::from_secs(1));
        assert_eq!(report.under_provisioned_minutes, 1.0);
        assert_eq!(report.slo_violation_minutes, 1.5);
        assert_eq!(report.replica_hours, (3.0 * 180.0 + 30.0) / 3600.0);
        assert_eq!(report.over_provisioned_replica_hours, 240.0 / 3600.0);
    }

    #[test]
    fn a_backlog_or_no_capacity_at_all_violates_the_slo() {
        let mut tally = Tally::new(&SystemModel::default());
        tally.step(&outcome(1.0, 10.0, 1, 4.0));
        tally.step(&outcome(1.0, 0.0, 1, 0.0));
        tally.step(&outcome(0.0, 0.0, 0, 0.0));
        let report = tally.finish("p", Duration::ZERO);
        assert_eq!(report.slo_violation_minutes, 2.0 / 60.0);
        assert_eq!(report.peak_backlog, 4.0);
        assert_eq!(report.decisions_per_second, 0.0);
    }
}
