//! An evaluator (the `evaluator` world) for any metric source: replicas =
//! `ceil(total / targetValue)`, KEDA's `AverageValue` target, where `total` is the sum of the
//! samples named `metric` (every sample when unset). At or below `activationValue` (default 0)
//! the decision is 0, which `minReplicas` turns into its floor (KEDA's activation; scale to
//! zero with `minReplicas: 0`).
//!
//! With several sources (`metrics:` as a list) it follows the HPA's rules for several metrics:
//! each source's samples (the host tags them with the label `source`) give a count of their
//! own, against `targetValue.<source>` when set, and the largest count wins. When a source
//! failed and the run went on without it (the `sources` import says so), the decision never
//! goes below the current count: the missing source might have asked for more.
//!
//! Config: `targetValue` (above 0) required, `targetValue.<source>` per source; `metric`,
//! `activationValue`.

wit_bindgen::generate!({ path: "../../../wit", world: "evaluator" });

use std::collections::BTreeMap;

use exports::wasmscaler::policy::evaluation;
use wasmscaler::policy::sources;
use wasmscaler::policy::types::{Context, Decision, Error, Sample};
use wasmscaler_guest::Config;

struct TargetValue;

/// The sum of one source's chosen samples and how many there were.
#[derive(Default)]
struct Total {
    sum: f64,
    count: usize,
}

fn source_of(sample: &Sample) -> Option<&str> {
    sample
        .labels
        .iter()
        .find(|(k, _)| k == "source")
        .map(|(_, v)| v.as_str())
}

impl evaluation::Guest for TargetValue {
    fn evaluate(ctx: Context, samples: Vec<Sample>) -> Result<Decision, Error> {
        let config = Config(&ctx.config);
        let invalid = |e: wasmscaler_guest::ConfigError| Error::InvalidConfig(e.0);
        let target_for = |key: &str, default: Option<f64>| -> Result<f64, Error> {
            let target = config.number(key, default).map_err(invalid)?;
            if target <= 0.0 {
                return Err(Error::InvalidConfig(format!(
                    "{key} must be above 0, got {target}"
                )));
            }
            Ok(target)
        };
        let target = target_for("targetValue", None)?;
        let activation = config
            .number("activationValue", Some(0.0))
            .map_err(invalid)?;
        let metric = config.get("metric");
        let mut totals: BTreeMap<Option<&str>, Total> = BTreeMap::new();
        for sample in samples
            .iter()
            .filter(|s| metric.is_none_or(|m| s.name == m))
        {
            let total = totals.entry(source_of(sample)).or_default();
            total.sum += sample.value;
            total.count += 1;
        }
        if totals.is_empty() {
            return Err(Error::Unavailable(format!(
                "no samples{}",
                metric.map(|m| format!(" named {m:?}")).unwrap_or_default()
            )));
        }
        let mut desired = 0;
        let mut parts = Vec::new();
        for (source, total) in &totals {
            let target = match source {
                Some(name) => target_for(&format!("targetValue.{name}"), Some(target))?,
                None => target,
            };
            let wanted = if total.sum <= activation {
                0
            } else {
                (total.sum / target).ceil().min(f64::from(u32::MAX)) as u32
            };
            desired = desired.max(wanted);
            let label = source.map(|s| format!("{s}: ")).unwrap_or_default();
            parts.push(format!(
                "{label}{} over {} samples at {target} per replica: {wanted}",
                total.sum, total.count
            ));
        }
        let mut reason = parts.join("; ");
        let missing: Vec<String> = sources::statuses()
            .into_iter()
            .filter(|s| {
                s.failure.is_some() && s.handling == Some(sources::FailureHandling::Ignored)
            })
            .map(|s| s.name)
            .collect();
        let current = ctx.target.current_replicas;
        if !missing.is_empty() && desired < current {
            reason = format!(
                "{reason}; holding {current}: source {} failed and might ask for more",
                missing.join(", ")
            );
            desired = current;
        }
        Ok(Decision {
            target_replicas: desired,
            reason: Some(reason),
            remove_first: None,
        })
    }
}

export!(TargetValue);
