//! The length of Redis lists as a metric source (the `metric-source` world): the work queues
//! of Asperathos KubeJobs, which keeps a job's items in a Redis list.
//!
//! Redis is reached through webdis, its HTTP front: `GET {webdisUrl}/LLEN/{queue}` answers
//! `{"LLEN": n}`. Why HTTP and not a Redis capability in the host: the `http` capability
//! already carries the allow-list, the timeout and the body cap, and webdis's own ACL can
//! confine the client to `LLEN` (see README.md), so a policy can read a queue's length and
//! nothing else. A host capability speaking Redis would be a second network path to police,
//! with a protocol whose every command can write.
//!
//! One sample per queue, named `queue-length`, labelled `queue=NAME`.
//!
//! Config: `webdisUrl` (e.g. `http://webdis:7379`), `queues` (comma-separated list names)
//! required. Grant `http` with `{webdisUrl}/LLEN/*` on the allow-list.

wit_bindgen::generate!({ path: "../../../wit", world: "metric-source" });

use exports::wasmscaler::policy::metrics;
use wasmscaler::policy::http;
use wasmscaler::policy::types::{Context, Error, Sample};
use wasmscaler_guest::Config;
use wasmscaler_guest::config::encode_component;
use wasmscaler_guest::json::number_at;

struct QueueLength;

impl metrics::Guest for QueueLength {
    fn gather(ctx: Context) -> Result<Vec<Sample>, Error> {
        let config = Config(&ctx.config);
        let invalid = |e: wasmscaler_guest::ConfigError| Error::InvalidConfig(e.0);
        let base = config.required("webdisUrl").map_err(invalid)?;
        let queues: Vec<&str> = config
            .required("queues")
            .map_err(invalid)?
            .split(',')
            .map(str::trim)
            .filter(|q| !q.is_empty())
            .collect();
        if queues.is_empty() {
            return Err(Error::InvalidConfig("queues names no list".into()));
        }
        let mut samples = Vec::with_capacity(queues.len());
        for queue in queues {
            let url = format!(
                "{}/LLEN/{}",
                base.trim_end_matches('/'),
                encode_component(queue)
            );
            let response = http::get(&url, &[])?;
            if response.status != 200 {
                // webdis answers 403 for a command its ACL refuses.
                return Err(Error::Unavailable(format!(
                    "{url} answered {}",
                    response.status
                )));
            }
            let body: serde_json::Value = serde_json::from_slice(&response.body)
                .map_err(|e| Error::Unavailable(format!("{url} did not return JSON: {e}")))?;
            let length = number_at(&body, "LLEN")
                .map_err(|_| Error::Unavailable(format!("{url}: no list length in {body}")))?;
            samples.push(Sample {
                name: "queue-length".into(),
                value: length,
                replica: None,
                labels: vec![("queue".into(), queue.to_owned())],
            });
        }
        Ok(samples)
    }
}

export!(QueueLength);
