//! Scaling behavior exactly as Kubernetes `autoscaling/v2` defines it: stabilization windows
//! and rate policies around a recommended replica count.
//!
//! Ported from the HPA controller (`pkg/controller/podautoscaler/horizontal.go`:
//! `stabilizeRecommendationWithBehaviors`, `convertDesiredReplicasWithBehaviorRate`,
//! `calculateScaleUpLimitWithScalingRules`, `calculateScaleDownLimitWithBehaviors`), including
//! its newer two-window stabilization and its netting of scale-up against scale-down events.
//! The history those functions keep in memory is a serializable [`History`] here, so it
//! survives restarts and fail-overs.

use serde::{Deserialize, Serialize};

/// `behavior` of an autoscaler, in the shape of `HorizontalPodAutoscalerBehavior`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Behavior {
    /// Rules for scaling up; the HPA's defaults when absent.
    #[serde(default)]
    pub scale_up: Option<ScalingRules>,
    /// Rules for scaling down; the HPA's defaults when absent.
    #[serde(default)]
    pub scale_down: Option<ScalingRules>,
}

/// `HPAScalingRules`: every field optional, defaulted per direction as the HPA does.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScalingRules {
    /// Seconds of past recommendations to consider (up: 0, down: 300 by default).
    #[serde(default)]
    #[schemars(range(max = 3600))]
    pub stabilization_window_seconds: Option<u32>,
    /// How to combine the policies (default `Max`).
    #[serde(default)]
    pub select_policy: Option<SelectPolicy>,
    /// Rate policies; the direction's defaults when absent or empty.
    #[serde(default)]
    pub policies: Option<Vec<ScalingPolicy>>,
    /// The tolerance in this direction (the HPA's per-direction tolerance, KEP-4951): hold
    /// the count while `|desired / current - 1|` is within it. Absent: the autoscaler's
    /// `tolerance`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub tolerance: Option<f64>,
}

/// `selectPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum SelectPolicy {
    /// The policy allowing the largest change.
    Max,
    /// The policy allowing the smallest change.
    Min,
    /// No scaling in this direction.
    Disabled,
}

/// `HPAScalingPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScalingPolicy {
    /// `Pods` or `Percent`.
    #[serde(rename = "type")]
    pub kind: PolicyType,
    /// Pods, or percent of the replicas at the period's start.
    pub value: u32,
    /// The window the change is measured over (1–1800 s).
    pub period_seconds: u32,
}

/// `HPAScalingPolicyType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum PolicyType {
    /// An absolute number of replicas.
    Pods,
    /// A percentage of the replicas.
    Percent,
}

/// Rules of one direction with every default filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedRules {
    /// Stabilization window in seconds.
    pub stabilization_window_seconds: u32,
    /// Policy selection.
    pub select_policy: SelectPolicy,
    /// Rate policies.
    pub policies: Vec<ScalingPolicy>,
}

impl ResolvedRules {
    /// `GenerateHPAScaleUpRules`: 0 s window; max of 4 pods or 100 % per 15 s.
    pub fn scale_up(rules: Option<&ScalingRules>) -> Self {
        Self::resolve(
            rules,
            0,
            vec![
                ScalingPolicy {
                    kind: PolicyType::Pods,
                    value: 4,
                    period_seconds: 15,
                },
                ScalingPolicy {
                    kind: PolicyType::Percent,
                    value: 100,
                    period_seconds: 15,
                },
            ],
        )
    }

    /// `GenerateHPAScaleDownRules`: 300 s window; 100 % per 15 s.
    pub fn scale_down(rules: Option<&ScalingRules>) -> Self {
        Self::resolve(
            rules,
            300,
            vec![ScalingPolicy {
                kind: PolicyType::Percent,
                value: 100,
                period_seconds: 15,
            }],
        )
    }

    fn resolve(rules: Option<&ScalingRules>, window: u32, policies: Vec<ScalingPolicy>) -> Self {
        let rules = rules.cloned().unwrap_or_default();
        ResolvedRules {
            stabilization_window_seconds: rules.stabilization_window_seconds.unwrap_or(window),
            select_policy: rules.select_policy.unwrap_or(SelectPolicy::Max),
            policies: rules.policies.filter(|p| !p.is_empty()).unwrap_or(policies),
        }
    }

    fn longest_period_ms(&self) -> i64 {
        self.policies
            .iter()
            .map(|p| i64::from(p.period_seconds) * 1000)
            .max()
            .unwrap_or(0)
    }
}

impl Behavior {
    /// Both directions with defaults filled in.
    pub(crate) fn resolve(&self) -> (ResolvedRules, ResolvedRules) {
        (
            ResolvedRules::scale_up(self.scale_up.as_ref()),
            ResolvedRules::scale_down(self.scale_down.as_ref()),
        )
    }
}

/// A past recommendation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Recommendation {
    /// Recommended replicas.
    pub replicas: u32,
    /// When, in ms since the Unix epoch.
    pub at_ms: i64,
}

/// A past scale change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleEvent {
    /// Replicas added (scale-up events) or removed (scale-down events).
    pub change: u32,
    /// When, in ms since the Unix epoch.
    pub at_ms: i64,
}

/// What stabilization and rate limits need to remember between runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct History {
    /// Recent recommendations (before stabilization).
    pub recommendations: Vec<Recommendation>,
    /// Recent scale-ups.
    pub scale_up_events: Vec<ScaleEvent>,
    /// Recent scale-downs.
    pub scale_down_events: Vec<ScaleEvent>,
}

/// Why the rate step produced what it did (the HPA's `ScalingLimited` reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum LimitReason {
    /// Nothing limited the recommendation.
    DesiredWithinRange,
    /// Raised to the minimum.
    TooFewReplicas,
    /// Lowered to the maximum.
    TooManyReplicas,
    /// Held back by the scale-up policies.
    ScaleUpLimit,
    /// Held back by the scale-down policies.
    ScaleDownLimit,
}

/// Sum of the changes within the last `period_ms` (`getReplicasChangePerPeriod`).
fn change_within(events: &[ScaleEvent], period_ms: i64, now_ms: i64) -> i64 {
    let cutoff = now_ms - period_ms;
    events
        .iter()
        .filter(|e| e.at_ms > cutoff)
        .map(|e| i64::from(e.change))
        .sum()
}

fn to_u32(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

impl History {
    /// Records `desired` and returns the stabilized recommendation: the current count moved
    /// up to the lowest recommendation of the scale-up window and down to the highest of the
    /// scale-down window (both windows include `desired`).
    pub(crate) fn stabilize(
        &mut self,
        now_ms: i64,
        current: u32,
        desired: u32,
        up: &ResolvedRules,
        down: &ResolvedRules,
    ) -> u32 {
        let window_ms = |r: &ResolvedRules| i64::from(r.stabilization_window_seconds) * 1000;
        let (up_cutoff, down_cutoff) = (now_ms - window_ms(up), now_ms - window_ms(down));
        let obsolete_cutoff = now_ms - window_ms(up).max(window_ms(down));
        let mut up_recommendation = desired;
        let mut down_recommendation = desired;
        let mut obsolete = None;
        for (i, rec) in self.recommendations.iter().enumerate() {
            if rec.at_ms > up_cutoff {
                up_recommendation = up_recommendation.min(rec.replicas);
            }
            if rec.at_ms > down_cutoff {
                down_recommendation = down_recommendation.max(rec.replicas);
            }
            if rec.at_ms < obsolete_cutoff {
                obsolete = Some(i);
            }
        }
        let newest = Recommendation {
            replicas: desired,
            at_ms: now_ms,
        };
        match obsolete {
            Some(i) => self.recommendations[i] = newest,
            None => self.recommendations.push(newest),
        }
        current.max(up_recommendation).min(down_recommendation)
    }

    /// Applies min/max and the rate policies to a stabilized recommendation.
    pub(crate) fn limit_rate(
        &self,
        now_ms: i64,
        current: u32,
        desired: u32,
        (min, max): (u32, u32),
        up: &ResolvedRules,
        down: &ResolvedRules,
    ) -> (u32, LimitReason) {
        if desired > current {
            let limit = self.scale_up_limit(now_ms, current, up).max(current);
            let (allowed, reason) = if max > limit {
                (limit, LimitReason::ScaleUpLimit)
            } else {
                (max, LimitReason::TooManyReplicas)
            };
            if desired > allowed {
                return (allowed, reason);
            }
        } else if desired < current {
            let limit = self.scale_down_limit(now_ms, current, down).min(current);
            let (allowed, reason) = if min < limit {
                (limit, LimitReason::ScaleDownLimit)
            } else {
                (min, LimitReason::TooFewReplicas)
            };
            if desired < allowed {
                return (allowed, reason);
            }
        }
        (desired, LimitReason::DesiredWithinRange)
    }

    fn scale_up_limit(&self, now_ms: i64, current: u32, rules: &ResolvedRules) -> u32 {
        let select: fn(i64, i64) -> i64 = match rules.select_policy {
            SelectPolicy::Disabled => return current,
            SelectPolicy::Min => i64::min,
            SelectPolicy::Max => i64::max,
        };
        let mut result: Option<i64> = None;
        for policy in &rules.policies {
            let period = i64::from(policy.period_seconds) * 1000;
            let start = i64::from(current) - change_within(&self.scale_up_events, period, now_ms)
                + change_within(&self.scale_down_events, period, now_ms);
            let proposed = match policy.kind {
                PolicyType::Pods => start + i64::from(policy.value),
                // Rounded up, or a small target could never grow.
                PolicyType::Percent => {
                    (start as f64 * (1.0 + f64::from(policy.value) / 100.0)).ceil() as i64
                }
            };
            result = Some(result.map_or(proposed, |r| select(r, proposed)));
        }
        to_u32(result.unwrap_or(i64::from(current)))
    }

    fn scale_down_limit(&self, now_ms: i64, current: u32, rules: &ResolvedRules) -> u32 {
        let select: fn(i64, i64) -> i64 = match rules.select_policy {
            SelectPolicy::Disabled => return current,
            // For scaling down, the smallest change is the highest count.
            SelectPolicy::Min => i64::max,
            SelectPolicy::Max => i64::min,
        };
        let mut result: Option<i64> = None;
        for policy in &rules.policies {
            let period = i64::from(policy.period_seconds) * 1000;
            let start = i64::from(current) + change_within(&self.scale_down_events, period, now_ms)
                - change_within(&self.scale_up_events, period, now_ms);
            let proposed = match policy.kind {
                PolicyType::Pods => start - i64::from(policy.value),
                PolicyType::Percent => {
                    (start as f64 * (1.0 - f64::from(policy.value) / 100.0)) as i64
                }
            };
            result = Some(result.map_or(proposed, |r| select(r, proposed)));
        }
        to_u32(result.unwrap_or(i64::from(current)))
    }

    /// Remembers a scale from `from` to `to`, forgetting events older than the direction's
    /// longest policy period (they can no longer limit anything).
    pub(crate) fn record_scale(
        &mut self,
        now_ms: i64,
        from: u32,
        to: u32,
        up: &ResolvedRules,
        down: &ResolvedRules,
    ) {
        let (events, rules, change) = match to.cmp(&from) {
            std::cmp::Ordering::Greater => (&mut self.scale_up_events, up, to - from),
            std::cmp::Ordering::Less => (&mut self.scale_down_events, down, from - to),
            std::cmp::Ordering::Equal => return,
        };
        let cutoff = now_ms - rules.longest_period_ms();
        events.retain(|e| e.at_ms > cutoff);
        events.push(ScaleEvent {
            change,
            at_ms: now_ms,
        });
    }
}

#[cfg(test)]
mod tests;
