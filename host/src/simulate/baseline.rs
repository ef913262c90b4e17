//! The HPA baseline a simulation is compared against: the `cpu-target` policy with the HPA's
//! default behavior. A component of it is built into the binary (the hand-written
//! `guests/cpu-target-wat`, which decides as the Rust, JavaScript, Python and C `cpu-target`
//! guests do, as the language tests check), so `simulate` compares against the HPA with
//! nothing to build first.

use crate::engine::AutoscalerSpec;
use crate::engine::behavior::Behavior;
use crate::policies::PolicyRef;
use crate::sandbox::Capabilities;

/// How the built-in baseline is named where a policy reference would be (`--baseline`).
pub const BUILTIN_BASELINE: &str = "builtin:cpu-target";

const CPU_TARGET_WAT: &str = include_str!("../../../guests/cpu-target-wat/cpu-target.wat");

/// The built-in `cpu-target` component, assembled from its text.
pub fn builtin_cpu_target() -> Result<Vec<u8>, wat::Error> {
    wat::parse_str(CPU_TARGET_WAT)
}

/// The HPA as a baseline beside `like`: the `cpu-target` component `policy` on `like`'s
/// replica bounds, interval and limits, at `utilization` percent, with the HPA's default
/// behavior and tolerance, no fallback, and only `kubernetes-metrics` granted.
pub fn hpa_baseline(like: &AutoscalerSpec, policy: PolicyRef, utilization: f64) -> AutoscalerSpec {
    let mut spec = like.clone();
    spec.name = "hpa (baseline)".into();
    let scaling = &mut spec.scaling;
    scaling.policy = Some(policy);
    scaling.metrics = None;
    scaling.evaluator = None;
    scaling.tolerance = None;
    scaling.behavior = Behavior::default();
    scaling.fallback = None;
    scaling.paused = false;
    scaling.paused_replicas = None;
    scaling.dry_run = false;
    scaling.config = [("targetUtilization".to_string(), utilization.to_string())].into();
    scaling.capabilities = Capabilities {
        kubernetes_metrics: true,
        ..Capabilities::default()
    };
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_baseline_assembles_to_a_component() {
        let bytes = builtin_cpu_target().expect("the built-in cpu-target assembles");
        assert!(wasmparser::Parser::is_component(&bytes));
    }
}
