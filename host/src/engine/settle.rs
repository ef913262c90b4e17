//! The safety steps between a policy's decision and a scale, as one pure function: clamp to
//! [min, max], tolerance, stabilization, rate policies. No I/O, no clock: the engine, its unit
//! tests and a simulator all call the same code.

use super::behavior::{History, LimitReason, ResolvedRules, ScalingRules};
use super::spec::ScalingSpec;

/// The spec's safety settings, resolved once per autoscaler.
#[derive(Debug, Clone)]
pub struct Safety {
    /// `minReplicas`.
    pub min: u32,
    /// `maxReplicas`.
    pub max: u32,
    /// The relative change up under which the current count is kept (`None`: any change
    /// acts): `behavior.scaleUp.tolerance`, else `tolerance`.
    pub tolerance_up: Option<f64>,
    /// The same for a change down: `behavior.scaleDown.tolerance`, else `tolerance`.
    pub tolerance_down: Option<f64>,
    /// Scale-up rules with the HPA's defaults filled in.
    pub up: ResolvedRules,
    /// Scale-down rules with the HPA's defaults filled in.
    pub down: ResolvedRules,
}

impl Safety {
    /// The settings of `scaling`.
    pub fn of(scaling: &ScalingSpec) -> Self {
        let (up, down) = scaling.behavior.resolve();
        let direction =
            |rules: Option<&ScalingRules>| rules.and_then(|r| r.tolerance).or(scaling.tolerance);
        Safety {
            min: scaling.min_replicas,
            max: scaling.max_replicas,
            tolerance_up: direction(scaling.behavior.scale_up.as_ref()),
            tolerance_down: direction(scaling.behavior.scale_down.as_ref()),
            up,
            down,
        }
    }
}

/// What each step made of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// The decision clamped to [min, max].
    pub clamped: u32,
    /// Whether the clamped count was within the tolerance of the current one (and so the
    /// current count was kept).
    pub within_tolerance: bool,
    /// After the stabilization windows.
    pub stabilized: u32,
    /// After the rate policies: the count to scale to.
    pub limited: u32,
    /// Why the rate step produced `limited`.
    pub reason: LimitReason,
}

/// Settles `decided` (what the policy asked for) against `current` at `now_ms`, recording the
/// recommendation in `history` (the stabilization windows look back over it).
pub fn settle(
    current: u32,
    decided: u32,
    safety: &Safety,
    history: &mut History,
    now_ms: i64,
) -> Settled {
    let clamped = decided.clamp(safety.min, safety.max);
    // The epsilon keeps the boundary inclusive despite rounding (11 / 10 - 1 > 0.1).
    let tolerance = if clamped > current {
        safety.tolerance_up
    } else {
        safety.tolerance_down
    };
    let within_tolerance = tolerance.is_some_and(|t| {
        current > 0 && (f64::from(clamped) / f64::from(current) - 1.0).abs() <= t + 1e-9
    });
    let desired = if within_tolerance { current } else { clamped };
    let stabilized = history.stabilize(now_ms, current, desired, &safety.up, &safety.down);
    let (limited, reason) = history.limit_rate(
        now_ms,
        current,
        stabilized,
        (safety.min, safety.max),
        &safety.up,
        &safety.down,
    );
    Settled {
        clamped,
        within_tolerance,
        stabilized,
        limited,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::behavior::{Behavior, ScalingRules};

    fn safety(min: u32, max: u32, tolerance: Option<f64>, behavior: Behavior) -> Safety {
        let (up, down) = behavior.resolve();
        Safety {
            min,
            max,
            tolerance_up: tolerance,
            tolerance_down: tolerance,
            up,
            down,
        }
    }

    /// No stabilization and no rate limits: only clamp and tolerance act.
    fn immediate() -> Behavior {
        let free = || ScalingRules {
            stabilization_window_seconds: Some(0),
            ..ScalingRules::default()
        };
        Behavior {
            scale_up: Some(free()),
            scale_down: Some(free()),
        }
    }

    #[test]
    fn a_decision_outside_min_and_max_is_clamped() {
        let s = safety(2, 10, None, immediate());
        let mut history = History::default();
        let high = settle(5, 50, &s, &mut history, 1_000);
        assert_eq!((high.clamped, high.limited), (10, 10), "{high:?}");
        let low = settle(5, 0, &s, &mut history, 2_000);
        assert_eq!((low.clamped, low.limited), (2, 2), "{low:?}");
    }

    #[test]
    fn a_change_within_the_tolerance_keeps_the_current_count_and_its_boundary_is_inclusive() {
        let s = safety(1, 100, Some(0.1), immediate());
        let mut history = History::default();
        let within = settle(10, 11, &s, &mut history, 1_000);
        assert!(within.within_tolerance, "{within:?}");
        assert_eq!(within.limited, 10);
        let beyond = settle(10, 12, &s, &mut history, 2_000);
        assert!(!beyond.within_tolerance, "{beyond:?}");
        assert_eq!(beyond.limited, 12);
    }

    #[test]
    fn each_direction_has_its_own_tolerance_defaulting_to_the_global_one() {
        let mut spec = ScalingSpec::new(crate::policies::PolicyRef::File("p.wasm".into()), 100);
        spec.tolerance = Some(0.1);
        spec.behavior = immediate();
        // Up: any change acts; down: the global 10 % still holds.
        if let Some(up) = spec.behavior.scale_up.as_mut() {
            up.tolerance = Some(0.0);
        }
        let s = Safety::of(&spec);
        let mut history = History::default();
        assert_eq!(settle(10, 11, &s, &mut history, 1_000).limited, 11);
        assert_eq!(settle(10, 9, &s, &mut history, 2_000).limited, 10);
        // Down widened to 50 %: 10 -> 6 holds, 10 -> 4 acts.
        if let Some(down) = spec.behavior.scale_down.as_mut() {
            down.tolerance = Some(0.5);
        }
        let s = Safety::of(&spec);
        assert_eq!(settle(10, 6, &s, &mut history, 3_000).limited, 10);
        assert_eq!(settle(10, 4, &s, &mut history, 4_000).limited, 4);
    }

    #[test]
    fn the_default_scale_down_window_holds_the_highest_recent_recommendation() {
        // The HPA's defaults: a 300 s scale-down window.
        let s = safety(1, 100, None, Behavior::default());
        let mut history = History::default();
        assert_eq!(settle(4, 8, &s, &mut history, 0).limited, 8);
        // 60 s later the policy wants 3, but 8 was recommended within the window.
        let held = settle(8, 3, &s, &mut history, 60_000);
        assert_eq!(held.stabilized, 8, "{held:?}");
        // Past the window, the lower count applies.
        let after = settle(8, 3, &s, &mut history, 400_000);
        assert_eq!(after.limited, 3, "{after:?}");
    }

    #[test]
    fn the_default_scale_up_policy_limits_how_fast_replicas_are_added() {
        // The HPA's default scale-up: the larger of +100 % and +4 pods per 15 s.
        let s = safety(1, 1_000, None, Behavior::default());
        let mut history = History::default();
        let first = settle(10, 100, &s, &mut history, 0);
        assert_eq!(first.limited, 20, "{first:?}");
        assert_eq!(first.reason, LimitReason::ScaleUpLimit);
    }
}
