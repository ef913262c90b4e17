//! A predictive policy: the HPA's CPU formula, raised to a forecast of the load at
//! `now + lookahead`, as the Predictive Horizontal Pod Autoscaler does, inside the sandbox.
//!
//! `gather` reads each ready replica's CPU from the `kubernetes-metrics` capability, as
//! `cpu-target` does. `evaluate` adds the run's load (the replicas' total CPU, in percent of
//! one request) to a history kept in the `state` capability, forecasts the load at
//! `now + lookahead` (Holt-Winters once a whole season is seen, linear regression until
//! then or when asked), and decides the larger of the reactive HPA count and
//! `ceil(forecast / targetUtilization)`. Scaling up ahead of demand is what covers the
//! startup delay; the reactive count still answers anything the forecast missed.
//!
//! Config (every duration in seconds):
//! - `targetUtilization`: percent, required; `tolerance`: default 0.1 (the reactive part);
//! - `method`: `holt-winters` (default) or `linear`;
//! - `lookahead`: how far ahead to provision, default 120 (cover the replicas' startup);
//! - `seasonLength`: default 86400 (a day); `seasonBuckets`: default 96 (15-minute buckets);
//! - `alpha`, `beta`, `gamma`: Holt-Winters smoothing of level, trend and season, defaults
//!   0.5, 0.05, 0.3;
//! - `window`: observations the linear regression fits, default 20.
//!
//! Grants: `kubernetes-metrics` and `state` (about 1 KiB at the defaults).

wit_bindgen::generate!({ path: "../../wit", world: "policy" });

mod forecast;

use exports::wasmscaler::policy::{evaluation, metrics};
use forecast::{History, Params};
use wasmscaler::policy::types::{Context, Decision, Error, Sample};
use wasmscaler::policy::{kubernetes_metrics, state};

const HISTORY_KEY: &str = "history";

struct Predictive;

fn config<'a>(ctx: &'a Context, key: &str) -> Option<&'a str> {
    ctx.config
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn number(ctx: &Context, key: &str, default: Option<f64>) -> Result<f64, Error> {
    match config(ctx, key) {
        Some(text) => text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| {
                Error::InvalidConfig(format!("{key} must be a non-negative number, got {text:?}"))
            }),
        None => default.ok_or_else(|| Error::InvalidConfig(format!("{key} is required"))),
    }
}

fn fraction(ctx: &Context, key: &str, default: f64) -> Result<f64, Error> {
    let value = number(ctx, key, Some(default))?;
    if value > 1.0 {
        return Err(Error::InvalidConfig(format!(
            "{key} must be between 0 and 1, got {value}"
        )));
    }
    Ok(value)
}

fn params(ctx: &Context) -> Result<Params, Error> {
    let season = number(ctx, "seasonLength", Some(86_400.0))?;
    let buckets = number(ctx, "seasonBuckets", Some(96.0))?;
    if !(1.0..=4096.0).contains(&buckets) || buckets.fract() != 0.0 {
        return Err(Error::InvalidConfig(format!(
            "seasonBuckets must be a whole number from 1 to 4096, got {buckets}"
        )));
    }
    if season < buckets {
        return Err(Error::InvalidConfig(format!(
            "seasonLength must be at least a second per bucket, got {season}"
        )));
    }
    let window = number(ctx, "window", Some(20.0))?;
    if !(2.0..=1024.0).contains(&window) {
        return Err(Error::InvalidConfig(format!(
            "window must be from 2 to 1024 observations, got {window}"
        )));
    }
    Ok(Params {
        season_ms: (season * 1000.0) as i64,
        buckets: buckets as usize,
        alpha: fraction(ctx, "alpha", 0.5)?,
        beta: fraction(ctx, "beta", 0.05)?,
        gamma: fraction(ctx, "gamma", 0.3)?,
        window: window as usize,
    })
}

impl metrics::Guest for Predictive {
    fn gather(ctx: Context) -> Result<Vec<Sample>, Error> {
        let pods = kubernetes_metrics::pod_metrics()?;
        let mut samples = Vec::new();
        for replica in &ctx.replicas {
            let Some(pod) = pods.iter().find(|p| p.pod == replica.name) else {
                continue;
            };
            let request = pod
                .cpu_request_millicores
                .filter(|r| *r > 0)
                .ok_or_else(|| {
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

impl evaluation::Guest for Predictive {
    fn evaluate(ctx: Context, samples: Vec<Sample>) -> Result<Decision, Error> {
        let target = number(&ctx, "targetUtilization", None)?;
        if target == 0.0 {
            return Err(Error::InvalidConfig(
                "targetUtilization must be above 0".into(),
            ));
        }
        let tolerance = number(&ctx, "tolerance", Some(0.1))?;
        let lookahead = number(&ctx, "lookahead", Some(120.0))?;
        let linear_only = match config(&ctx, "method").unwrap_or("holt-winters") {
            "holt-winters" => false,
            "linear" => true,
            other => {
                return Err(Error::InvalidConfig(format!(
                    "method must be holt-winters or linear, got {other:?}"
                )));
            }
        };
        let params = params(&ctx)?;
        let values: Vec<f64> = samples
            .iter()
            .filter(|s| s.name == "cpu")
            .map(|s| s.value)
            .collect();
        if values.is_empty() {
            return Err(Error::Unavailable("no cpu samples".into()));
        }
        let total: f64 = values.iter().sum();
        let average = total / values.len() as f64;
        let current = ctx.target.current_replicas;

        // The reactive count, as the HPA computes it.
        let ratio = average / target;
        let reactive = if (ratio - 1.0).abs() <= tolerance {
            current
        } else {
            (current as f64 * ratio).ceil() as u32
        };

        let mut history = state::get(HISTORY_KEY)
            .and_then(|b| History::from_bytes(&b))
            .unwrap_or_default();
        history.observe(ctx.now_ms, total, &params);
        let at = ctx.now_ms + (lookahead * 1000.0) as i64;
        let (method, forecast) = match (linear_only, history.holt_winters(at, &params)) {
            (false, Some(load)) => ("holt-winters", Some(load)),
            _ => ("linear", history.linear(at)),
        };
        state::set(HISTORY_KEY, &history.to_bytes())?;

        let predicted = forecast.map(|load| (load / target).ceil().min(u32::MAX as f64) as u32);
        let desired = reactive.max(predicted.unwrap_or(0));
        let reason = match (forecast, predicted) {
            (Some(load), Some(replicas)) => format!(
                "reactive {reactive} (average cpu {average:.1}% against {target}%), {method} forecast {load:.0}% in {lookahead}s needs {replicas}: {current} -> {desired}"
            ),
            _ => format!(
                "reactive {reactive} (average cpu {average:.1}% against {target}%), no forecast yet: {current} -> {desired}"
            ),
        };
        Ok(Decision {
            target_replicas: desired,
            reason: Some(reason),
            remove_first: None,
        })
    }
}

export!(Predictive);
