//! A Prometheus instant query as a metric source (the `metric-source` world): KEDA's
//! `prometheus` scaler, inside the sandbox.
//!
//! `gather` sends `GET {serverAddress}/api/v1/query?query={query}` through the `http`
//! capability and turns the answer into samples named `metricName`:
//! - a `vector` result: one sample per series, its labels as the sample's labels;
//! - a `scalar` result: one sample;
//! - an empty vector: one sample of 0 with `ignoreNullValues: "true"` (the default, as in
//!   KEDA), else `unavailable`.
//!
//! Config: `serverAddress` (e.g. `http://prometheus:9090`), `query` (PromQL) required;
//! `metricName` (default `prometheus`). Grant `http` with the query endpoint on the allow-list,
//! e.g. `http://prometheus:9090/api/v1/query*`.

wit_bindgen::generate!({ path: "../../../wit", world: "metric-source" });

use exports::wasmscaler::policy::metrics;
use serde_json::Value;
use wasmscaler::policy::http;
use wasmscaler::policy::types::{Context, Error, Sample};
use wasmscaler_guest::config::encode_component;
use wasmscaler_guest::{Config, ConfigError};

struct Prometheus;

fn invalid(error: ConfigError) -> Error {
    Error::InvalidConfig(error.0)
}

/// A Prometheus sample value: `[timestamp, "value"]`.
fn value_of(pair: &Value) -> Option<f64> {
    pair.get(1)?.as_str()?.parse::<f64>().ok()
}

impl metrics::Guest for Prometheus {
    fn gather(ctx: Context) -> Result<Vec<Sample>, Error> {
        let config = Config(&ctx.config);
        let server = config.required("serverAddress").map_err(invalid)?;
        let query = config.required("query").map_err(invalid)?;
        let name = config.get("metricName").unwrap_or("prometheus");
        let ignore_null = config.flag("ignoreNullValues", true).map_err(invalid)?;
        let url = format!(
            "{}/api/v1/query?query={}",
            server.trim_end_matches('/'),
            encode_component(query)
        );
        let response = http::get(&url, &[("accept".into(), "application/json".into())])?;
        let body: Value = serde_json::from_slice(&response.body).map_err(|e| {
            Error::Unavailable(format!(
                "{server} answered {} without JSON: {e}",
                response.status
            ))
        })?;
        if body["status"] != "success" {
            // Prometheus names a bad query in `error` (with status 400).
            let kind = body["errorType"].as_str().unwrap_or("error");
            let error = body["error"].as_str().unwrap_or("no error message");
            let message = format!("query {query:?}: {kind}: {error}");
            return Err(if kind == "bad_data" {
                Error::InvalidConfig(message)
            } else {
                Error::Unavailable(message)
            });
        }
        let data = &body["data"];
        let sample = |value: f64, labels: Vec<(String, String)>| Sample {
            name: name.to_owned(),
            value,
            replica: None,
            labels,
        };
        let unusable = |what: &str| Error::Unavailable(format!("query {query:?}: {what}"));
        match data["resultType"].as_str() {
            Some("scalar") => {
                let value = value_of(&data["result"]).ok_or_else(|| unusable("no scalar value"))?;
                Ok(vec![sample(value, Vec::new())])
            }
            Some("vector") => {
                let series = data["result"].as_array().cloned().unwrap_or_default();
                if series.is_empty() {
                    return if ignore_null {
                        Ok(vec![sample(0.0, Vec::new())])
                    } else {
                        Err(unusable("no series (set ignoreNullValues to read it as 0)"))
                    };
                }
                series
                    .iter()
                    .map(|s| {
                        let value = value_of(&s["value"])
                            .ok_or_else(|| unusable("a series without a value"))?;
                        let labels = s["metric"]
                            .as_object()
                            .map(|m| {
                                m.iter()
                                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                                    .collect()
                            })
                            .unwrap_or_default();
                        Ok(sample(value, labels))
                    })
                    .collect()
            }
            other => Err(unusable(&format!(
                "result type {other:?}: use a query giving a vector or a scalar"
            ))),
        }
    }
}

export!(Prometheus);
