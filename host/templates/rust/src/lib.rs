//! {{name}}: a wasmscaler policy. It starts as the Horizontal Pod Autoscaler's CPU formula;
//! make it yours.
//!
//! `gather` reads each replica's CPU from the `kubernetes-metrics` capability and emits one
//! `cpu` sample per replica, in percent of its request. `evaluate` applies
//! `ceil(current × average / targetUtilization)`, holding within `tolerance`.
//!
//! Config: `targetUtilization` (percent, required), `tolerance` (default 0.1).
//! Build: `bash build.sh`; try: `bash test.sh`.

use wasmscaler_guest::{
    Config, Context, Decision, Error, EvaluationGuest, MetricsGuest, Sample, hpa,
    kubernetes_metrics,
};

struct Policy;

impl MetricsGuest for Policy {
    fn gather(ctx: Context) -> Result<Vec<Sample>, Error> {
        let pods = kubernetes_metrics::pod_metrics()?;
        let mut samples = Vec::new();
        for replica in &ctx.replicas {
            let Some(pod) = pods.iter().find(|p| p.pod == replica.name) else {
                continue; // no metrics yet
            };
            let request = pod
                .cpu_request_millicores
                .filter(|r| *r > 0)
                .ok_or_else(|| Error::InvalidConfig(format!("pod {} has no CPU request", pod.pod)))?;
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

impl EvaluationGuest for Policy {
    fn evaluate(ctx: Context, samples: Vec<Sample>) -> Result<Decision, Error> {
        let config = Config(&ctx.config);
        let target = config.positive("targetUtilization")?;
        let tolerance = config.fraction("tolerance", 0.1)?;
        let average = hpa::average(wasmscaler_guest::values(&samples, "cpu"))
            .ok_or_else(|| Error::Unavailable("no cpu samples".into()))?;
        let current = ctx.target.current_replicas;
        let desired = hpa::desired_replicas(current, average, target, tolerance);
        Ok(Decision {
            target_replicas: desired,
            reason: Some(format!(
                "average cpu {average:.1}% against {target}%: {current} -> {desired}"
            )),
            remove_first: None,
        })
    }
}

wasmscaler_guest::export_policy!(Policy);
