//! One authenticated client of a cloud's APIs: every call carries a token from the Keystone
//! session (renewed once on a 401), its answer read up to a cap, and a failure mapped to a
//! [`TargetError`] that keeps OpenStack's own message.

use std::time::Duration;

use serde_json::Value;

use super::auth::{Credentials, Session};
use crate::targets::TargetError;

/// The largest answer read from any OpenStack API (a detailed list of a few thousand servers
/// is a few MiB); a larger one fails the call instead of growing the host's memory.
pub const MAX_RESPONSE_BYTES: usize = 32 << 20;

/// Reads an answer's body up to `cap` bytes; over it, the call fails naming the cap.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
    what: &str,
) -> Result<Vec<u8>, TargetError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| TargetError::Unavailable(format!("openstack: {what}: {e}")))?
    {
        if body.len() + chunk.len() > cap {
            return Err(TargetError::Unavailable(format!(
                "openstack: {what}: the answer is over {cap} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The compute microversion: tags on create (2.52) and in server lists.
const COMPUTE_MICROVERSION: &str = "2.72";

/// A Keystone session and the HTTP client its calls go through.
pub struct Api {
    pub(super) session: Session,
    http: reqwest::Client,
}

impl Api {
    /// A client that authenticates with `credentials` on first use.
    pub fn new(credentials: Credentials) -> Result<Self, TargetError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| TargetError::Unavailable(format!("openstack: HTTP client: {e}")))?;
        Ok(Api {
            session: Session::new(credentials, http.clone()),
            http,
        })
    }

    /// One call to `service`, renewing the token once if it was refused with 401.
    pub(super) async fn call(
        &self,
        service: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Value, TargetError> {
        let mut stale: Option<String> = None;
        let mut resent = false;
        loop {
            let (token, endpoint) = self.session.token_for(service, stale.as_deref()).await?;
            let mut request = self
                .http
                .request(method.clone(), format!("{endpoint}{path}"))
                .header("X-Auth-Token", &token)
                .header(
                    "OpenStack-API-Version",
                    format!("compute {COMPUTE_MICROVERSION}"),
                );
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = match request.send().await {
                Ok(response) => response,
                // A kept-alive connection the server closed as the request went out (gunicorn
                // closes idle ones after 2 s): an idempotent call is sent once more, on a new
                // connection. A create (POST) never is: it could create twice.
                Err(e)
                    if !resent
                        && method != reqwest::Method::POST
                        && e.is_request()
                        && !e.is_timeout() =>
                {
                    resent = true;
                    tracing::debug!(%what, error = %e, "sent again on a new connection");
                    continue;
                }
                Err(e) => return Err(TargetError::Unavailable(format!("openstack: {what}: {e}"))),
            };
            let status = response.status();
            if status.as_u16() == 401 && stale.is_none() {
                stale = Some(token);
                continue;
            }
            let body = read_capped(response, MAX_RESPONSE_BYTES, what).await?;
            let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if !status.is_success() {
                return Err(call_error(what, status, &value));
            }
            return Ok(value);
        }
    }
}

/// The error of a failed call, with OpenStack's own message.
pub(super) fn call_error(what: &str, status: reqwest::StatusCode, body: &Value) -> TargetError {
    let message = ["message", "detail"]
        .iter()
        .find_map(|k| {
            body.as_object()?
                .values()
                .find_map(|v| v.get(*k))
                .and_then(Value::as_str)
        })
        .or_else(|| body["NeutronError"]["message"].as_str())
        .unwrap_or("")
        .to_owned();
    let text = format!("openstack: {what}: {status} {message}");
    match status.as_u16() {
        404 => TargetError::NotFound(text),
        // Not the engine's conflict (a change since the observation): e.g. no address left.
        400 | 401 | 403 | 413 => TargetError::Refused(text),
        _ => TargetError::Unavailable(text),
    }
}

/// Percent-encodes a query value.
pub(super) fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn an_answer_over_the_cap_fails_the_call_naming_it() {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten().take(2) {
                // The request first: an answer sent before it is one hyper refuses.
                let mut reader = std::io::BufReader::new(&stream);
                let mut line = String::new();
                while std::io::BufRead::read_line(&mut reader, &mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let mut stream = &stream;
                let body = "x".repeat(4096);
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        let get = || reqwest::get(format!("http://{addr}/"));
        let over = read_capped(get().await.expect("get"), 1024, "listing servers").await;
        assert!(
            matches!(&over, Err(TargetError::Unavailable(m)) if m.contains("over 1024 bytes")),
            "{over:?}"
        );
        let within = read_capped(get().await.expect("get"), 8192, "listing servers").await;
        assert_eq!(within.expect("read").len(), 4096);
    }

    #[test]
    fn openstack_errors_keep_their_message_and_map_to_target_errors() {
        let quota = json!({"forbidden": {"code": 403, "message": "Quota exceeded for instances: Requested 1, but already used 3 of 3 instances"}});
        let err = call_error("creating server x", reqwest::StatusCode::FORBIDDEN, &quota);
        assert!(
            matches!(&err, TargetError::Refused(m) if m.contains("Quota exceeded")),
            "{err}"
        );
        let neutron = json!({"NeutronError": {"message": "No more IP addresses available"}});
        let err = call_error("allocating", reqwest::StatusCode::CONFLICT, &neutron);
        assert!(
            matches!(&err, TargetError::Unavailable(m) if m.contains("No more IP")),
            "{err}"
        );
        let err = call_error("listing", reqwest::StatusCode::BAD_GATEWAY, &Value::Null);
        assert!(matches!(err, TargetError::Unavailable(_)));
    }
}
