//! The HPA controller's own behavior tests, ported table for table from
//! kubernetes/kubernetes `pkg/controller/podautoscaler/horizontal_test.go`:
//! `TestNormalizeDesiredReplicasWithBehavior` (stabilization, including which stored
//! recommendation is reused), `TestScalingWithRules` (rate policies, with scale events spread
//! as `generateEventsUniformDistribution` spreads them), `TestCalculateScaleUpLimitWithScalingRules`
//! and `TestCalculateScaleDownLimitWithBehaviors`. Names are the upstream case names.

use super::*;

const NOW: i64 = 1_700_000_000_000;
const MINUTE: i64 = 60_000;

fn rec(replicas: u32, ago_ms: i64) -> Recommendation {
    Recommendation {
        replicas,
        at_ms: NOW - ago_ms,
    }
}

fn window_rules(seconds: u32) -> ResolvedRules {
    ResolvedRules {
        stabilization_window_seconds: seconds,
        select_policy: SelectPolicy::Max,
        policies: Vec::new(),
    }
}

#[test]
fn normalize_desired_replicas_with_behavior() {
    // (name, stored, current, desired, expected, expected stored replicas, up window, down window)
    type Case = (
        &'static str,
        Vec<Recommendation>,
        u32,
        u32,
        u32,
        Option<Vec<u32>>,
        u32,
        u32,
    );
    let cases: Vec<Case> = vec![
        (
            "empty recommendations for scaling down",
            vec![],
            100,
            5,
            5,
            Some(vec![5]),
            0,
            0,
        ),
        (
            "simple scale down stabilization",
            vec![rec(4, 2 * MINUTE), rec(5, MINUTE)],
            100,
            3,
            5,
            Some(vec![4, 5, 3]),
            0,
            180,
        ),
        (
            "simple scale up stabilization",
            vec![rec(4, 2 * MINUTE), rec(5, MINUTE)],
            1,
            7,
            4,
            Some(vec![4, 5, 7]),
            300,
            0,
        ),
        (
            "no scale down stabilization",
            vec![rec(1, 2 * MINUTE), rec(2, MINUTE)],
            100,
            3,
            3,
            Some(vec![1, 2, 3]),
            300,
            0,
        ),
        (
            "no scale up stabilization",
            vec![rec(4, 2 * MINUTE), rec(5, MINUTE)],
            1,
            3,
            3,
            Some(vec![4, 5, 3]),
            0,
            300,
        ),
        (
            "no scale down stabilization, reuse recommendation element",
            vec![rec(10, 10 * MINUTE), rec(9, 9 * MINUTE)],
            100,
            3,
            3,
            Some(vec![10, 3]),
            0,
            0,
        ),
        (
            "no scale up stabilization, reuse recommendation element",
            vec![rec(10, 10 * MINUTE), rec(9, 9 * MINUTE)],
            1,
            100,
            100,
            Some(vec![10, 100]),
            0,
            0,
        ),
        (
            "scale down stabilization, reuse one of obsolete recommendation element",
            vec![
                rec(10, 10 * MINUTE),
                rec(4, MINUTE),
                rec(5, 2 * MINUTE),
                rec(9, 9 * MINUTE),
            ],
            100,
            3,
            5,
            Some(vec![10, 4, 5, 3]),
            0,
            180,
        ),
        (
            "scale up stabilization, reuse one of obsolete recommendation element",
            vec![
                rec(10, 100 * MINUTE),
                rec(6, MINUTE),
                rec(5, 2 * MINUTE),
                rec(9, 3 * MINUTE),
            ],
            1,
            100,
            5,
            Some(vec![100, 6, 5, 9]),
            300,
            0,
        ),
        (
            "scale up and down stabilization, do not scale up when prenormalized rec goes down",
            vec![rec(2, 100 * MINUTE), rec(3, 3 * MINUTE)],
            2,
            1,
            2,
            None,
            300,
            300,
        ),
        (
            "scale up and down stabilization, do not scale down when prenormalized rec goes up",
            vec![rec(2, 100 * MINUTE), rec(1, 3 * MINUTE)],
            2,
            3,
            2,
            None,
            300,
            300,
        ),
    ];
    for (name, stored, current, desired, expected, expected_stored, up, down) in cases {
        let mut history = History {
            recommendations: stored,
            ..History::default()
        };
        let got = history.stabilize(
            NOW,
            current,
            desired,
            &window_rules(up),
            &window_rules(down),
        );
        assert_eq!(got, expected, "{name}");
        if let Some(expected_stored) = expected_stored {
            let stored: Vec<u32> = history.recommendations.iter().map(|r| r.replicas).collect();
            assert_eq!(stored, expected_stored, "{name}: stored recommendations");
        }
    }
}

include!("hpa_rules.rs");

/// `generateEventsUniformDistribution`: each event in the middle of its segment of the last
/// `period_seconds`, truncated to whole seconds as the Go code's duration cast does.
fn events(raw: &[u32], period_seconds: u32) -> Vec<ScaleEvent> {
    let segment = f64::from(period_seconds) / raw.len() as f64;
    raw.iter()
        .enumerate()
        .map(|(i, &change)| {
            let ago =
                (f64::from(period_seconds) - segment * (i as f64 + 1.0) + segment / 2.0).trunc();
            ScaleEvent {
                change,
                at_ms: NOW - ago as i64 * 1000,
            }
        })
        .collect()
}

struct RateCase {
    name: &'static str,
    up_events: Vec<ScaleEvent>,
    down_events: Vec<ScaleEvent>,
    min: u32,
    max: u32,
    up: Option<ScalingRules>,
    down: Option<ScalingRules>,
    current: u32,
    desired: u32,
    expected: u32,
    reason: LimitReason,
}

fn case(
    name: &'static str,
    (min, max): (u32, u32),
    current: u32,
    desired: u32,
    expected: u32,
    reason: LimitReason,
) -> RateCase {
    RateCase {
        name,
        up_events: vec![],
        down_events: vec![],
        min,
        max,
        up: None,
        down: None,
        current,
        desired,
        expected,
        reason,
    }
}

impl RateCase {
    fn up(mut self, r: ScalingRules) -> Self {
        self.up = Some(r);
        self
    }
    fn down(mut self, r: ScalingRules) -> Self {
        self.down = Some(r);
        self
    }
    fn up_events(mut self, e: Vec<ScaleEvent>) -> Self {
        self.up_events = e;
        self
    }
    fn down_events(mut self, e: Vec<ScaleEvent>) -> Self {
        self.down_events = e;
        self
    }
}

#[test]
fn scaling_with_rules() {
    use LimitReason::*;
    let cases: Vec<RateCase> = include!("hpa_rate_cases.rs");
    for c in cases {
        let history = History {
            recommendations: vec![],
            scale_up_events: c.up_events.clone(),
            scale_down_events: c.down_events.clone(),
        };
        let up = ResolvedRules::scale_up(c.up.as_ref());
        let down = ResolvedRules::scale_down(c.down.as_ref());
        let got = history.limit_rate(NOW, c.current, c.desired, (c.min, c.max), &up, &down);
        assert_eq!(got, (c.expected, c.reason), "{}", c.name);
    }
}

fn min_select_rules() -> ResolvedRules {
    ResolvedRules {
        stabilization_window_seconds: 300,
        select_policy: SelectPolicy::Min,
        policies: vec![
            ScalingPolicy {
                kind: PolicyType::Pods,
                value: 2,
                period_seconds: 60,
            },
            ScalingPolicy {
                kind: PolicyType::Percent,
                value: 50,
                period_seconds: 60,
            },
        ],
    }
}

#[test]
fn calculate_scale_up_limit_with_scaling_rules() {
    assert_eq!(
        History::default().scale_up_limit(NOW, 1, &min_select_rules()),
        2
    );
}

#[test]
fn calculate_scale_down_limit_with_behaviors() {
    assert_eq!(
        History::default().scale_down_limit(NOW, 5, &min_select_rules()),
        3
    );
}

#[test]
fn disabled_select_policy_freezes_the_direction() {
    let disabled = ResolvedRules {
        select_policy: SelectPolicy::Disabled,
        ..min_select_rules()
    };
    let h = History::default();
    assert_eq!(
        h.limit_rate(NOW, 5, 9, (1, 10), &disabled, &disabled),
        (5, LimitReason::ScaleUpLimit)
    );
    assert_eq!(
        h.limit_rate(NOW, 5, 1, (1, 10), &disabled, &disabled),
        (5, LimitReason::ScaleDownLimit)
    );
}

#[test]
fn recorded_events_limit_the_next_period_and_expire() {
    let (up, down) = Behavior {
        scale_up: Some(rules(2, 60, 0, 0, 0)),
        scale_down: None,
    }
    .resolve();
    let mut h = History::default();
    h.record_scale(NOW, 4, 6, &up, &down);
    // Two pods were added 10 s ago: the 60 s budget of 2 pods is spent.
    assert_eq!(
        h.limit_rate(NOW + 10_000, 6, 10, (1, 20), &up, &down),
        (6, LimitReason::ScaleUpLimit)
    );
    // A minute later it is available again, and the old event is pruned on the next record.
    assert_eq!(
        h.limit_rate(NOW + 61_000, 6, 10, (1, 20), &up, &down),
        (8, LimitReason::ScaleUpLimit)
    );
    h.record_scale(NOW + 61_000, 6, 8, &up, &down);
    assert_eq!(h.scale_up_events.len(), 1);
}
