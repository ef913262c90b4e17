//! The Horizontal Pod Autoscaler's CPU formula as a wasmscaler policy.
//!
//! `gather` reads each replica's CPU usage and request from the `kubernetes-metrics`
//! capability and emits one `cpu` sample per replica: utilization in percent of the request.
//! `evaluate` applies `desired = ceil(current × average / target)`, holding the current count
//! while the ratio is within the tolerance, as the HPA does.
//!
//! Config: `targetUtilization` (percent, required), `tolerance` (default 0.1).

wit_bindgen::generate!({ path: "../../wit", world: "policy" });

use exports::wasmscaler::policy::{evaluation, metrics};
use wasmscaler::policy::kubernetes_metrics;
use wasmscaler::policy::types::{Context, Decision, Error, Sample};

struct CpuTarget;

fn config<'a>(ctx: &'a Context, key: &str) -> Option<&'a str> {
    ctx.config.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn number(ctx: &Context, key: &str, default: Option<f64>) -> Result<f64, Error> {
    match config(ctx, key) {
        Some(text) => text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| Error::InvalidConfig(format!("{key} must be a non-negative number, got {text:?}"))),
        None => default.ok_or_else(|| Error::InvalidConfig(format!("{key} is required"))),
    }
}

impl metrics::Guest for CpuTarget {
    fn gather(ctx: Context) -> Result<Vec<Sample>, Error> {
        let pods = kubernetes_metrics::pod_metrics()?;
        let mut samples = Vec::new();
        for replica in &ctx.replicas {
            let Some(pod) = pods.iter().find(|p| p.pod == replica.name) else {
                continue; // no metrics yet: the HPA leaves such pods out of the average too
            };
            let request = pod.cpu_request_millicores.filter(|r| *r > 0).ok_or_else(|| {
                Error::InvalidConfig(format!("pod {} has no CPU request", pod.pod))
            })?;
            samples.push(Sample {
                name: "cpu".into(),
                value: pod.cpu_millicores as f64 * 100.0 / request as f64,
                replica: Some(pod.pod.clone()),
                labels: Vec::new(),
            });
        }
        Ok(samples)
    }
}

impl evaluation::Guest for CpuTarget {
    fn evaluate(ctx: Context, samples: Vec<Sample>) -> Result<Decision, Error> {
        let target = number(&ctx, "targetUtilization", None)?;
        if target == 0.0 {
            return Err(Error::InvalidConfig("targetUtilization must be above 0".into()));
        }
        let tolerance = number(&ctx, "tolerance", Some(0.1))?;
        let values: Vec<f64> = samples.iter().filter(|s| s.name == "cpu").map(|s| s.value).collect();
        if values.is_empty() {
            return Err(Error::Unavailable("no cpu samples".into()));
        }
        let average = values.iter().sum::<f64>() / values.len() as f64;
        let current = ctx.target.current_replicas;
        let ratio = average / target;
        let desired = if (ratio - 1.0).abs() <= tolerance {
            current
        } else {
            (current as f64 * ratio).ceil() as u32
        };
        Ok(Decision {
            target_replicas: desired,
            reason: Some(format!(
                "average cpu {average:.1}% against target {target}%: {current} -> {desired}"
            )),
            remove_first: None,
        })
    }
}

export!(CpuTarget);
