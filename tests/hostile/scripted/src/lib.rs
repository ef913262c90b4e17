//! A well-behaved test guest whose decisions the test drives: `gather` GETs `config["url"]`
//! (with `?replica=NAME` when `config["perReplica"]` is set) and expects `{"replicas": n}` (optionally
//! `"removeFirst": [...]`) or `{"error": "..."}`; `evaluate` returns the largest `replicas`
//! sample and the `removeFirst` list it was given.

wit_bindgen::generate!({ path: "../../../wit", world: "policy" });

use exports::wasmscaler::policy::{evaluation, metrics};
use wasmscaler::policy::http;
use wasmscaler::policy::types::{Context, Decision, Error, Sample};

struct Scripted;

fn sample(name: &str, value: f64, replica: Option<String>, labels: Vec<(String, String)>) -> Sample {
    Sample { name: name.into(), value, replica, labels }
}

impl metrics::Guest for Scripted {
    fn gather(ctx: Context) -> Result<Vec<Sample>, Error> {
        let base = ctx.config.iter().find(|(k, _)| k == "url").map(|(_, v)| v.clone())
            .ok_or_else(|| Error::InvalidConfig("url is required".into()))?;
        let replica = match ctx.replicas.as_slice() {
            [one] if ctx.config.iter().any(|(k, _)| k == "perReplica") => Some(one.name.clone()),
            _ => None,
        };
        let url = match &replica {
            Some(name) => format!("{base}?replica={name}"),
            None => base,
        };
        let response = http::get(&url, &[])?;
        let body: serde_json::Value = serde_json::from_slice(&response.body)
            .map_err(|e| Error::Unavailable(format!("bad JSON: {e}")))?;
        if let Some(error) = body.get("error").and_then(|e| e.as_str()) {
            return Err(Error::Unavailable(error.into()));
        }
        let replicas = body.get("replicas").and_then(|r| r.as_f64())
            .ok_or_else(|| Error::Unavailable("no replicas in response".into()))?;
        let remove: Vec<(String, String)> = body.get("removeFirst").and_then(|r| r.as_array())
            .map(|names| names.iter().enumerate().filter_map(|(i, n)| Some((format!("{i:03}"), n.as_str()?.to_owned()))).collect())
            .unwrap_or_default();
        Ok(vec![sample("replicas", replicas, replica, remove)])
    }
}

impl evaluation::Guest for Scripted {
    fn evaluate(_ctx: Context, samples: Vec<Sample>) -> Result<Decision, Error> {
        let best = samples.iter().filter(|s| s.name == "replicas")
            .max_by(|a, b| a.value.total_cmp(&b.value))
            .ok_or_else(|| Error::Unavailable("no samples".into()))?;
        let mut labels = best.labels.clone();
        labels.sort();
        let remove: Vec<String> = labels.into_iter().map(|(_, v)| v).collect();
        Ok(Decision {
            target_replicas: best.value as u32,
            reason: Some(format!("scripted: {} sample(s)", samples.len())),
            remove_first: (!remove.is_empty()).then_some(remove),
        })
    }
}

export!(Scripted);
