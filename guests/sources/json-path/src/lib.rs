//! A number at a JSON path of an HTTP response as a metric source (the `metric-source`
//! world): KEDA's `metrics-api` scaler, inside the sandbox.
//!
//! `gather` sends `GET {url}` through the `http` capability and reads the number at
//! `valueLocation` (`a.b[0].c`; a string holding a number counts). One sample, named
//! `metricName` (default `value`).
//!
//! Config: `url`, `valueLocation` required; `metricName`. Grant `http` with `url` on the
//! allow-list.

wit_bindgen::generate!({ path: "../../../wit", world: "metric-source" });

use exports::wasmscaler::policy::metrics;
use wasmscaler::policy::http;
use wasmscaler::policy::types::{Context, Error, Sample};
use wasmscaler_guest::Config;
use wasmscaler_guest::json::{PathError, number_at};

struct JsonPath;

impl metrics::Guest for JsonPath {
    fn gather(ctx: Context) -> Result<Vec<Sample>, Error> {
        let config = Config(&ctx.config);
        let url = config
            .required("url")
            .map_err(|e| Error::InvalidConfig(e.0))?;
        let path = config
            .required("valueLocation")
            .map_err(|e| Error::InvalidConfig(e.0))?;
        let response = http::get(url, &[("accept".into(), "application/json".into())])?;
        if !(200..300).contains(&response.status) {
            return Err(Error::Unavailable(format!(
                "{url} answered {}",
                response.status
            )));
        }
        let document: serde_json::Value = serde_json::from_slice(&response.body)
            .map_err(|e| Error::Unavailable(format!("{url} did not return JSON: {e}")))?;
        let value = number_at(&document, path).map_err(|e| match e {
            PathError::Config(e) => Error::InvalidConfig(format!("valueLocation: {}", e.0)),
            PathError::Missing(why) => Error::Unavailable(format!("{url}: {why}")),
        })?;
        Ok(vec![Sample {
            name: config.get("metricName").unwrap_or("value").to_owned(),
            value,
            replica: None,
            labels: Vec::new(),
        }])
    }
}

export!(JsonPath);
