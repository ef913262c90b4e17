//! SimpleScaleVM's capacity algorithm as a wasmscaler policy.
//!
//! Each replica holds `replicaCapacity` resources and reports over HTTP how many are still
//! available and whether it wants to be terminated (`GET http://ADDRESS/PATH` →
//! `{"available": 3, "terminate": false}`, through the `http` capability; grant it as
//! `http://{replica}/PATH`). `evaluate` keeps at least `minAvailableResources` available on
//! replicas that stay: it adds replicas when short, removes idle ones when there is a whole
//! replica's worth to spare, and lists the replicas asking for termination first for removal.
//!
//! Config: `replicaCapacity`, `minAvailableResources` (required); `apiPath` (default `/`),
//! `capacityKey` (default `available`), `terminationKey` (default `terminate`); `apiUrl`, a
//! URL template with `{address}` and `{name}` instead of `http://{address}{apiPath}` (e.g. a
//! mock serving every replica's API on loopback, as SimpleScaleVM's `make mock` does).

wit_bindgen::generate!({ path: "../../wit", world: "policy" });

use exports::wasmscaler::policy::{evaluation, metrics};
use wasmscaler::policy::http;
use wasmscaler::policy::types::{Context, Decision, Error, Sample};

struct Capacity;

fn config<'a>(ctx: &'a Context, key: &str) -> Option<&'a str> {
    ctx.config.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn number(ctx: &Context, key: &str) -> Result<f64, Error> {
    let text = config(ctx, key).ok_or_else(|| Error::InvalidConfig(format!("{key} is required")))?;
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| Error::InvalidConfig(format!("{key} must be a non-negative number, got {text:?}")))
}

fn per_replica(name: &str, value: f64, replica: &str) -> Sample {
    Sample { name: name.into(), value, replica: Some(replica.into()), labels: Vec::new() }
}

impl metrics::Guest for Capacity {
    fn gather(ctx: Context) -> Result<Vec<Sample>, Error> {
        let path = config(&ctx, "apiPath").unwrap_or("/");
        let capacity_key = config(&ctx, "capacityKey").unwrap_or("available");
        let termination_key = config(&ctx, "terminationKey").unwrap_or("terminate");
        let mut samples = Vec::new();
        // Replicas still starting are not asked (they count as fully available below).
        let template = config(&ctx, "apiUrl");
        for replica in ctx.replicas.iter().filter(|r| r.ready) {
            let Some(address) = &replica.address else { continue };
            let url = match template {
                Some(t) => t.replace("{address}", address).replace("{name}", &replica.name),
                None => format!("http://{address}{path}"),
            };
            let response = http::get(&url, &[])?;
            if response.status != 200 {
                return Err(Error::Unavailable(format!("{url} answered {}", response.status)));
            }
            let body: serde_json::Value = serde_json::from_slice(&response.body)
                .map_err(|e| Error::Unavailable(format!("{url} did not return JSON: {e}")))?;
            let available = body
                .get(capacity_key)
                .and_then(serde_json::Value::as_f64)
                .ok_or_else(|| Error::Unavailable(format!("{url}: missing number {capacity_key:?}")))?;
            let terminate = body.get(termination_key).and_then(serde_json::Value::as_bool).unwrap_or(false);
            samples.push(per_replica("available", available, &replica.name));
            samples.push(per_replica("terminate", if terminate { 1.0 } else { 0.0 }, &replica.name));
        }
        Ok(samples)
    }
}

impl evaluation::Guest for Capacity {
    fn evaluate(ctx: Context, samples: Vec<Sample>) -> Result<Decision, Error> {
        let capacity = number(&ctx, "replicaCapacity")?;
        let min_available = number(&ctx, "minAvailableResources")?;
        if capacity <= 0.0 {
            return Err(Error::InvalidConfig("replicaCapacity must be above 0".into()));
        }
        let value = |name: &str, replica: &str| {
            samples
                .iter()
                .find(|s| s.name == name && s.replica.as_deref() == Some(replica))
                .map(|s| s.value)
        };
        let mut terminating = Vec::new();
        let mut idle = Vec::new();
        let mut available = 0.0;
        let mut staying = 0u32;
        for replica in &ctx.replicas {
            let Some(free) = value("available", &replica.name) else { continue };
            if value("terminate", &replica.name) == Some(1.0) {
                terminating.push(replica.name.clone());
                continue;
            }
            staying += 1;
            available += free;
            if free >= capacity {
                idle.push(replica.name.clone());
            }
        }
        // Replicas without a report yet (just started) count as fully available.
        let unreported = ctx.target.current_replicas.saturating_sub(staying + terminating.len() as u32);
        available += f64::from(unreported) * capacity;
        let staying = staying + unreported;

        let mut remove_first = terminating.clone();
        let desired = if available < min_available {
            staying + ((min_available - available) / capacity).ceil() as u32
        } else {
            let mut removed = 0u32;
            for name in idle {
                if available - capacity < min_available {
                    break;
                }
                available -= capacity;
                removed += 1;
                remove_first.push(name);
            }
            staying - removed
        };
        Ok(Decision {
            target_replicas: desired,
            reason: Some(format!(
                "{available} resources available (minimum {min_available}), {} replica(s) asking to terminate",
                terminating.len()
            )),
            remove_first: (!remove_first.is_empty()).then_some(remove_first),
        })
    }
}

export!(Capacity);
