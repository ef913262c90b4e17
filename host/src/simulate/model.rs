//! The simulated system: replicas that serve load, start slowly and drain, and the metrics a
//! sync would read from them.
//!
//! Each ready replica serves `capacity` units/s. A replica added at `t` is ready at
//! `t + startup`; a replica removed keeps serving for `drain` (0: it stops at once). Load
//! beyond the ready capacity queues (carried over to the next step) or is dropped. Every
//! ready replica reports the same CPU: the ready replicas' utilization times its request,
//! optionally with measurement noise, as of `metricDelay` before the sync (and at least one
//! step before it: a metrics window ends before the sync that reads it).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::contract::model::{PodMetrics, Replica};
use crate::duration::HumanDuration;

/// The domain of the replicas' addresses (`replica-3.replicas.sim`): an `http` GET to one
/// is answered with that replica's status.
pub(crate) const REPLICA_DOMAIN: &str = "replicas.sim";

/// What load beyond the ready capacity does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "camelCase")]
pub enum Overflow {
    /// Waits in a backlog served first by later capacity.
    Queue,
    /// Is lost.
    Drop,
}

/// The model's parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SystemModel {
    /// Work units per second one ready replica serves.
    pub capacity: f64,
    /// From a replica's creation until it is ready.
    pub startup: HumanDuration,
    /// How long a removed replica keeps serving.
    pub drain: HumanDuration,
    /// Load beyond the ready capacity queues or is dropped.
    pub overflow: Overflow,
    /// Relative standard deviation of each measured CPU value (0: exact).
    pub noise: f64,
    /// How old the metrics a sync reads are.
    pub metric_delay: HumanDuration,
    /// Each replica's CPU request, in millicores.
    pub cpu_request_millicores: u64,
    /// Replicas at the start; `None`: the autoscaler's `minReplicas`.
    pub initial_replicas: Option<u32>,
    /// Utilization of the ready capacity above which a minute counts as an SLO violation.
    pub slo_utilization: f64,
    /// The model's time step.
    pub step: HumanDuration,
    /// Seed of the measurement noise.
    pub seed: u64,
}

impl Default for SystemModel {
    fn default() -> Self {
        SystemModel {
            capacity: 10.0,
            startup: HumanDuration(std::time::Duration::from_secs(60)),
            drain: HumanDuration(std::time::Duration::ZERO),
            overflow: Overflow::Queue,
            noise: 0.0,
            metric_delay: HumanDuration(std::time::Duration::ZERO),
            cpu_request_millicores: 1000,
            initial_replicas: None,
            slo_utilization: 0.9,
            step: HumanDuration(std::time::Duration::from_secs(1)),
            seed: 1,
        }
    }
}

/// A model parameter that cannot be simulated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("model {field}: {message}")]
pub struct ModelError {
    /// The parameter.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

impl SystemModel {
    /// Refuses parameters the model cannot run with.
    pub fn validate(&self) -> Result<(), ModelError> {
        let error = |field, message: &str| {
            Err(ModelError {
                field,
                message: message.to_owned(),
            })
        };
        if !(self.capacity.is_finite() && self.capacity > 0.0) {
            return error("capacity", "must be a number above 0");
        }
        if !(self.noise.is_finite() && self.noise >= 0.0) {
            return error("noise", "must be a number, 0 or above");
        }
        if !(self.slo_utilization.is_finite() && self.slo_utilization > 0.0) {
            return error("sloUtilization", "must be a number above 0");
        }
        if self.step.0.is_zero() {
            return error("step", "must be above 0");
        }
        if self.cpu_request_millicores == 0 {
            return error("cpuRequestMillicores", "must be above 0");
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct SimReplica {
    name: String,
    created: f64,
    ready_at: f64,
    /// Set when removed: it stops serving at this time.
    leaving_at: Option<f64>,
}

/// What one step cost and served, for the report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct StepOutcome {
    /// Offered load per second.
    pub load: f64,
    /// Ready capacity per second.
    pub capacity: f64,
    /// Replicas that exist (starting and draining included): what is paid for.
    pub replicas: u32,
    /// Backlog after the step, in units.
    pub backlog: f64,
    /// Units dropped in the step.
    pub dropped: f64,
}

/// The system's state as time advances.
pub(crate) struct System {
    model: SystemModel,
    replicas: Vec<SimReplica>,
    next_name: u64,
    backlog: f64,
    /// Units arrived and served since the start.
    arrived: f64,
    served: f64,
    /// Utilization of the ready capacity per step, newest last, as long as the metric delay
    /// needs.
    utilization: VecDeque<(f64, f64)>,
    rng: fastrand::Rng,
    epoch_ms: i64,
}

impl System {
    pub(crate) fn new(model: SystemModel, replicas: u32, epoch_ms: i64) -> Self {
        let rng = fastrand::Rng::with_seed(model.seed);
        let mut system = System {
            model,
            replicas: Vec::new(),
            next_name: 0,
            backlog: 0.0,
            arrived: 0.0,
            served: 0.0,
            utilization: VecDeque::new(),
            rng,
            epoch_ms,
        };
        // The starting replicas are ready from the start.
        for _ in 0..replicas {
            system.add(f64::NEG_INFINITY);
        }
        system
    }

    fn add(&mut self, now: f64) {
        let name = format!("replica-{}", self.next_name);
        self.next_name += 1;
        self.replicas.push(SimReplica {
            name,
            created: now,
            ready_at: now + self.model.startup.0.as_secs_f64(),
            leaving_at: None,
        });
    }

    fn ms(&self, time: f64) -> i64 {
        self.epoch_ms + (time * 1000.0) as i64
    }

    /// Replicas asked for and not removed.
    pub(crate) fn desired(&self) -> u32 {
        u32::try_from(
            self.replicas
                .iter()
                .filter(|r| r.leaving_at.is_none())
                .count(),
        )
        .unwrap_or(u32::MAX)
    }

    /// The replicas a sync at `now` sees: the ones not removed, ready or starting.
    pub(crate) fn visible(&self, now: f64) -> Vec<Replica> {
        self.replicas
            .iter()
            .filter(|r| r.leaving_at.is_none())
            .map(|r| Replica {
                name: r.name.clone(),
                ready: r.ready_at <= now,
                start_time_ms: r.created.is_finite().then(|| self.ms(r.created)),
                labels: Default::default(),
                address: Some(format!("{}.{REPLICA_DOMAIN}", r.name)),
            })
            .collect()
    }

    /// Sets the count to `target` at `now`: new replicas start; on scale-in the named ones
    /// go first, then the newest (starting before ready ones).
    pub(crate) fn scale(&mut self, now: f64, target: u32, remove_first: &[String]) {
        let current = self.desired();
        if target > current {
            for _ in current..target {
                self.add(now);
            }
            return;
        }
        let mut to_remove = current - target;
        let drain = self.model.drain.0.as_secs_f64();
        let mut order: Vec<usize> = (0..self.replicas.len())
            .filter(|&i| self.replicas[i].leaving_at.is_none())
            .collect();
        // Named first, then newest first.
        order.sort_by(|&a, &b| {
            let (ra, rb) = (&self.replicas[a], &self.replicas[b]);
            let named = |r: &SimReplica| !remove_first.contains(&r.name);
            named(ra)
                .cmp(&named(rb))
                .then(rb.created.total_cmp(&ra.created))
                // Replicas are kept in creation order: a later index is newer.
                .then(b.cmp(&a))
        });
        for i in order {
            if to_remove == 0 {
                break;
            }
            let replica = &mut self.replicas[i];
            // A replica that was never ready has nothing to drain.
            replica.leaving_at = Some(if replica.ready_at <= now {
                now + drain
            } else {
                now
            });
            to_remove -= 1;
        }
        self.replicas
            .retain(|r| r.leaving_at.is_none_or(|at| at > now));
    }

    /// Gives the first sync something to read: the system ran before the trace began, at
    /// the trace's first load, so the step before time 0 is measured at `load`.
    pub(crate) fn prime(&mut self, load: f64) {
        let dt = self.model.step.0.as_secs_f64();
        let ready = self.replicas.iter().filter(|r| r.ready_at <= 0.0).count() as f64;
        let capacity = ready * self.model.capacity;
        let utilization = if capacity > 0.0 {
            (load / capacity).min(1.0)
        } else {
            0.0
        };
        self.utilization.push_back((-dt, utilization));
    }

    /// Advances from `now` by one step at `load` units/s.
    pub(crate) fn step(&mut self, now: f64, load: f64) -> StepOutcome {
        let dt = self.model.step.0.as_secs_f64();
        self.replicas
            .retain(|r| r.leaving_at.is_none_or(|at| at > now));
        let ready = self.replicas.iter().filter(|r| r.ready_at <= now).count() as f64;
        let capacity = ready * self.model.capacity;
        let demand = load * dt + self.backlog;
        let served = demand.min(capacity * dt);
        let unserved = demand - served;
        let (backlog, dropped) = match self.model.overflow {
            Overflow::Queue => (unserved, 0.0),
            Overflow::Drop => (0.0, unserved),
        };
        self.backlog = backlog;
        self.arrived += load * dt;
        self.served += served;
        let utilization = if capacity > 0.0 {
            served / (capacity * dt)
        } else {
            0.0
        };
        self.utilization.push_back((now, utilization));
        let keep = self.model.metric_delay.0.as_secs_f64() + 2.0 * dt;
        while self
            .utilization
            .front()
            .is_some_and(|&(t, _)| t < now - keep)
        {
            self.utilization.pop_front();
        }
        StepOutcome {
            load,
            capacity,
            replicas: u32::try_from(self.replicas.len()).unwrap_or(u32::MAX),
            backlog,
            dropped,
        }
    }

    /// The ready replicas' utilization as a sync at `now` reads it: the last step ending at
    /// or before `now - metricDelay`.
    fn measured_utilization(&self, now: f64) -> f64 {
        let dt = self.model.step.0.as_secs_f64();
        let as_of = now - self.model.metric_delay.0.as_secs_f64();
        self.utilization
            .iter()
            .rev()
            .find(|&&(t, _)| t + dt <= as_of + 1e-9)
            .map_or(0.0, |&(_, u)| u)
    }

    /// What a replica's status endpoint answers at `now`, as the `capacity` guest reads it:
    /// its free slots of `capacity`. The measured load is packed onto the oldest ready
    /// replicas first, as a dispatcher fills job slots, so surplus replicas report idle.
    /// `None` for a replica not ready or gone (it does not answer).
    pub(crate) fn replica_status(&self, now: f64, name: &str) -> Option<serde_json::Value> {
        let ready: Vec<&SimReplica> = self
            .replicas
            .iter()
            .filter(|r| r.leaving_at.is_none() && r.ready_at <= now)
            .collect();
        let rank = ready.iter().position(|r| r.name == name)? as f64;
        let per_replica = self.model.capacity;
        let busy_total = self.measured_utilization(now) * ready.len() as f64 * per_replica;
        let busy = (busy_total - rank * per_replica).clamp(0.0, per_replica);
        Some(serde_json::json!({ "available": per_replica - busy, "terminate": false }))
    }

    /// What a queue endpoint answers: the backlog, and the units arrived and served so far.
    pub(crate) fn queue_status(&self) -> serde_json::Value {
        serde_json::json!({
            "length": self.backlog,
            "total": self.arrived,
            "processed": self.served,
        })
    }

    /// The pod metrics a sync at `now` reads: one per ready replica.
    pub(crate) fn pod_metrics(&mut self, now: f64) -> Vec<PodMetrics> {
        let utilization = self.measured_utilization(now);
        let request = self.model.cpu_request_millicores;
        let noise = self.model.noise;
        let timestamp_ms = self.ms(now);
        let names: Vec<String> = self
            .replicas
            .iter()
            .filter(|r| r.leaving_at.is_none() && r.ready_at <= now)
            .map(|r| r.name.clone())
            .collect();
        names
            .into_iter()
            .map(|pod| {
                let factor = if noise > 0.0 {
                    (1.0 + noise * gaussian(&mut self.rng)).max(0.0)
                } else {
                    1.0
                };
                PodMetrics {
                    pod,
                    cpu_millicores: (utilization * factor * request as f64).round() as u64,
                    memory_bytes: 0,
                    cpu_request_millicores: Some(request),
                    memory_request_bytes: None,
                    timestamp_ms,
                }
            })
            .collect()
    }
}

/// A standard normal draw (Box–Muller).
fn gaussian(rng: &mut fastrand::Rng) -> f64 {
    let u1 = rng.f64().max(f64::MIN_POSITIVE);
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn model(startup: u64, drain: u64, overflow: Overflow) -> SystemModel {
        SystemModel {
            capacity: 10.0,
            startup: HumanDuration(Duration::from_secs(startup)),
            drain: HumanDuration(Duration::from_secs(drain)),
            overflow,
            ..SystemModel::default()
        }
    }

    #[test]
    fn new_replicas_serve_after_the_startup_delay() {
        let mut system = System::new(model(30, 0, Overflow::Drop), 1, 0);
        system.scale(0.0, 2, &[]);
        assert_eq!(system.step(29.0, 15.0).capacity, 10.0);
        let at_30 = system.step(30.0, 15.0);
        assert_eq!((at_30.capacity, at_30.replicas), (20.0, 2));
        assert_eq!(system.visible(29.0).iter().filter(|r| r.ready).count(), 1);
    }

    #[test]
    fn overflow_queues_or_drops() {
        let mut queued = System::new(model(0, 0, Overflow::Queue), 1, 0);
        assert_eq!(queued.step(0.0, 15.0).backlog, 5.0);
        // The backlog is served first by capacity to spare.
        assert_eq!(queued.step(1.0, 7.0).backlog, 2.0);
        let mut dropped = System::new(model(0, 0, Overflow::Drop), 1, 0);
        let out = dropped.step(0.0, 15.0);
        assert_eq!((out.backlog, out.dropped), (0.0, 5.0));
    }

    #[test]
    fn removal_takes_the_named_then_the_newest_and_drains() {
        let mut system = System::new(model(0, 20, Overflow::Drop), 3, 0);
        system.scale(5.0, 1, &["replica-0".into()]);
        let left: Vec<String> = system.visible(5.0).into_iter().map(|r| r.name).collect();
        assert_eq!(left, ["replica-1"]);
        // Draining replicas still serve (and are paid for) until the drain ends.
        assert_eq!(system.step(10.0, 0.0).replicas, 3);
        assert_eq!(system.step(25.0, 0.0).replicas, 1);
    }

    #[test]
    fn metrics_are_read_as_of_the_delay() {
        let mut system = System::new(
            SystemModel {
                metric_delay: HumanDuration(Duration::from_secs(2)),
                ..model(0, 0, Overflow::Drop)
            },
            1,
            0,
        );
        for (t, load) in [(0.0, 2.0), (1.0, 4.0), (2.0, 6.0), (3.0, 8.0)] {
            system.step(t, load);
        }
        // At 4 s with a 2 s delay: the step [1, 2) at 40 %.
        assert_eq!(system.pod_metrics(4.0)[0].cpu_millicores, 400);
    }

    #[test]
    fn status_endpoints_answer_from_the_model() {
        let mut system = System::new(model(30, 0, Overflow::Queue), 1, 0);
        system.prime(4.0);
        assert_eq!(
            system.replica_status(0.0, "replica-0"),
            Some(serde_json::json!({ "available": 6.0, "terminate": false }))
        );
        system.scale(0.0, 2, &[]);
        assert_eq!(
            system.visible(0.0)[1].address.as_deref(),
            Some("replica-1.replicas.sim")
        );
        assert_eq!(
            system.replica_status(0.0, "replica-1"),
            None,
            "still starting"
        );
        assert_eq!(system.replica_status(0.0, "nobody"), None);
        // Packed onto the oldest: at 15 of 20, replica-0 is full and replica-1 half busy.
        let mut packed = System::new(model(0, 0, Overflow::Queue), 2, 0);
        packed.prime(15.0);
        let free = |name| {
            packed
                .replica_status(0.0, name)
                .map(|s| s["available"].clone())
        };
        assert_eq!(free("replica-0"), Some(serde_json::json!(0.0)));
        assert_eq!(free("replica-1"), Some(serde_json::json!(5.0)));
        for t in 0..3 {
            system.step(f64::from(t), 15.0);
        }
        assert_eq!(
            system.queue_status(),
            serde_json::json!({ "length": 15.0, "total": 45.0, "processed": 30.0 })
        );
    }

    #[test]
    fn the_first_sync_reads_the_first_load() {
        let mut system = System::new(model(0, 0, Overflow::Queue), 2, 0);
        system.prime(5.0);
        let pods = system.pod_metrics(0.0);
        assert_eq!(pods.len(), 2);
        assert!(pods.iter().all(|p| p.cpu_millicores == 250), "{pods:?}");
    }

    #[test]
    fn the_same_seed_gives_the_same_noise() {
        let noisy = SystemModel {
            noise: 0.2,
            ..model(0, 0, Overflow::Drop)
        };
        let draw = |seed| {
            let mut system = System::new(
                SystemModel {
                    seed,
                    ..noisy.clone()
                },
                3,
                0,
            );
            system.step(0.0, 15.0);
            system.pod_metrics(1.0)
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }
}
