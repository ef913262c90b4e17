//! The fleet benchmark's constant policy: it gathers one sample (the current count) and
//! decides that count, importing nothing. A fleet of it measures what the host spends per
//! run around the guests — sandbox, target, status — as the issue's "policy deciding a
//! constant".

wit_bindgen::generate!({ path: "../../../wit", world: "policy" });

use exports::wasmscaler::policy::{evaluation, metrics};
use wasmscaler::policy::types::{Context, Decision, Error, Sample};

struct Hold;

impl metrics::Guest for Hold {
    fn gather(ctx: Context) -> Result<Vec<Sample>, Error> {
        Ok(vec![Sample {
            name: "current".into(),
            value: f64::from(ctx.target.current_replicas),
            replica: None,
            labels: Vec::new(),
        }])
    }
}

impl evaluation::Guest for Hold {
    fn evaluate(ctx: Context, samples: Vec<Sample>) -> Result<Decision, Error> {
        let current = samples
            .iter()
            .find(|s| s.name == "current")
            .map_or(ctx.target.current_replicas, |s| s.value as u32);
        Ok(Decision {
            target_replicas: current,
            reason: Some("holding".into()),
            remove_first: None,
        })
    }
}

export!(Hold);
