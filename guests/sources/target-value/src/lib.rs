//! An evaluator (the `evaluator` world) for any metric source: replicas =
//! `ceil(total / targetValue)`, KEDA's `AverageValue` target, where `total` is the sum of the
//! samples named `metric` (every sample when unset). At or below `activationValue` (default 0)
//! the decision is 0, which `minReplicas` turns into its floor (KEDA's activation; scale to
//! zero with `minReplicas: 0`).
//!
//! Config: `targetValue` (above 0) required; `metric`, `activationValue`.

wit_bindgen::generate!({ path: "../../../wit", world: "evaluator" });

use exports::wasmscaler::policy::evaluation;
use wasmscaler::policy::types::{Context, Decision, Error, Sample};
use wasmscaler_guest::Config;

struct TargetValue;

impl evaluation::Guest for TargetValue {
    fn evaluate(ctx: Context, samples: Vec<Sample>) -> Result<Decision, Error> {
        let config = Config(&ctx.config);
        let invalid = |e: wasmscaler_guest::ConfigError| Error::InvalidConfig(e.0);
        let target = config.number("targetValue", None).map_err(invalid)?;
        if target <= 0.0 {
            return Err(Error::InvalidConfig(format!(
                "targetValue must be above 0, got {target}"
            )));
        }
        let activation = config
            .number("activationValue", Some(0.0))
            .map_err(invalid)?;
        let metric = config.get("metric");
        let chosen: Vec<&Sample> = samples
            .iter()
            .filter(|s| metric.is_none_or(|m| s.name == m))
            .collect();
        if chosen.is_empty() {
            return Err(Error::Unavailable(format!(
                "no samples{}",
                metric.map(|m| format!(" named {m:?}")).unwrap_or_default()
            )));
        }
        let total: f64 = chosen.iter().map(|s| s.value).sum();
        let desired = if total <= activation {
            0
        } else {
            (total / target).ceil().min(f64::from(u32::MAX)) as u32
        };
        Ok(Decision {
            target_replicas: desired,
            reason: Some(format!(
                "{total} over {} samples at {target} per replica: {desired}",
                chosen.len()
            )),
            remove_first: None,
        })
    }
}

export!(TargetValue);
