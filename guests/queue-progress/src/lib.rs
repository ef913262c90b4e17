//! Asperathos KubeJobs' progress controller as a wasmscaler policy.
//!
//! A batch job must finish its queue by a deadline. `gather` asks the queue service how many
//! items exist and how many are done (`GET queueUrl` → `{"total": N, "processed": M}`, through
//! the `http` capability) and compares job progress (`processed / total`) with time progress
//! (`elapsed / expectedTimeSeconds`). The job's start time is remembered in the `state`
//! capability on the first run. `evaluate` scales up by `actuationSize` when the job is behind
//! schedule by more than `triggerUp`, and down when it is ahead by more than `triggerDown`.
//!
//! Config: `queueUrl`, `expectedTimeSeconds` (required); `triggerUp`, `triggerDown`
//! (default 0.1); `actuationSize` (default 1).

wit_bindgen::generate!({ path: "../../wit", world: "policy" });

use exports::wasmscaler::policy::{evaluation, metrics};
use wasmscaler::policy::types::{Context, Decision, Error, Sample};
use wasmscaler::policy::{http, state};

struct QueueProgress;

const START_KEY: &str = "job-start-ms";

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

fn sample(name: &str, value: f64) -> Sample {
    Sample { name: name.into(), value, replica: None, labels: Vec::new() }
}

/// The job's start: remembered on the first run, so progress survives host restarts.
fn job_start(now_ms: i64) -> Result<i64, Error> {
    if let Some(bytes) = state::get(START_KEY) {
        if let Ok(raw) = <[u8; 8]>::try_from(bytes.as_slice()) {
            return Ok(i64::from_le_bytes(raw));
        }
    }
    state::set(START_KEY, &now_ms.to_le_bytes())?;
    Ok(now_ms)
}

impl metrics::Guest for QueueProgress {
    fn gather(ctx: Context) -> Result<Vec<Sample>, Error> {
        let url = config(&ctx, "queueUrl").ok_or_else(|| Error::InvalidConfig("queueUrl is required".into()))?;
        let expected_ms = number(&ctx, "expectedTimeSeconds", None)? * 1000.0;
        let response = http::get(url, &[("accept".into(), "application/json".into())])?;
        if response.status != 200 {
            return Err(Error::Unavailable(format!("{url} answered {}", response.status)));
        }
        let body: serde_json::Value = serde_json::from_slice(&response.body)
            .map_err(|e| Error::Unavailable(format!("{url} did not return JSON: {e}")))?;
        let field = |name: &str| {
            body.get(name)
                .and_then(serde_json::Value::as_f64)
                .ok_or_else(|| Error::Unavailable(format!("{url}: missing number {name:?}")))
        };
        let (total, processed) = (field("total")?, field("processed")?);
        let job_progress = if total > 0.0 { (processed / total).min(1.0) } else { 1.0 };
        let elapsed = (ctx.now_ms - job_start(ctx.now_ms)?) as f64;
        let time_progress = if expected_ms > 0.0 { (elapsed / expected_ms).min(1.0) } else { 1.0 };
        Ok(vec![
            sample("job-progress", job_progress),
            sample("time-progress", time_progress),
            sample("remaining", total - processed),
        ])
    }
}

impl evaluation::Guest for QueueProgress {
    fn evaluate(ctx: Context, samples: Vec<Sample>) -> Result<Decision, Error> {
        let find = |name: &str| {
            samples
                .iter()
                .find(|s| s.name == name)
                .map(|s| s.value)
                .ok_or_else(|| Error::Unavailable(format!("no {name} sample")))
        };
        let (job, time) = (find("job-progress")?, find("time-progress")?);
        let trigger_up = number(&ctx, "triggerUp", Some(0.1))?;
        let trigger_down = number(&ctx, "triggerDown", Some(0.1))?;
        let step = number(&ctx, "actuationSize", Some(1.0))? as u32;
        let current = ctx.target.current_replicas;
        // Positive error: ahead of schedule; negative: behind.
        let error = job - time;
        let (desired, verdict) = if find("remaining")? <= 0.0 {
            (0, "queue drained")
        } else if error < 0.0 && -error >= trigger_up {
            (current.saturating_add(step), "behind schedule")
        } else if error > 0.0 && error >= trigger_down {
            (current.saturating_sub(step), "ahead of schedule")
        } else {
            (current, "on schedule")
        };
        Ok(Decision {
            target_replicas: desired,
            reason: Some(format!(
                "{verdict}: job {:.0}% done at {:.0}% of the time: {current} -> {desired}",
                job * 100.0,
                time * 100.0
            )),
            remove_first: None,
        })
    }
}

export!(QueueProgress);
