//! Real AWS parts for the tests: moto's server on loopback (Auto Scaling, SQS, EC2), and a
//! small recording proxy in front of it that answers the two lifecycle calls moto does not
//! implement (`CompleteLifecycleAction`, `RecordLifecycleActionHeartbeat`) the way AWS does,
//! records them, and forwards everything else to moto.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// moto's server, stopped on drop.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Starts `moto_server` (installed by tests/toolchains/install.sh moto) on a free port.
    pub fn start() -> anyhow::Result<Self> {
        super::toolchains_ready()?;
        let binary = super::repo_root().join(".cache/moto/bin/moto_server");
        anyhow::ensure!(
            binary.exists(),
            "{} is missing: run tests/toolchains/install.sh moto",
            binary.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let moto = Moto {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(30),
                "moto_server did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(moto)
    }
}

/// One recorded lifecycle call: the action and its form parameters.
pub type Recorded = (String, BTreeMap<String, String>);

#[derive(Default)]
struct ProxyState {
    upstream: String,
    recorded: Vec<Recorded>,
    completed_tokens: Vec<String>,
    hold_complete: Option<Duration>,
    faults: Vec<(String, String)>,
    faulted: Vec<String>,
}

/// The recording proxy.
#[derive(Clone)]
pub struct Proxy {
    /// `http://127.0.0.1:PORT`: the endpoint the code under test uses.
    pub url: String,
    state: Arc<Mutex<ProxyState>>,
}

const ANSWERED: [&str; 2] = ["CompleteLifecycleAction", "RecordLifecycleActionHeartbeat"];

fn xml_answer(action: &str) -> Response {
    let body = format!(
        r#"<{action}Response xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/"><{action}Result/><ResponseMetadata><RequestId>proxy</RequestId></ResponseMetadata></{action}Response>"#
    );
    (StatusCode::OK, [("content-type", "text/xml")], body).into_response()
}

fn xml_error(code: &str, message: &str) -> Response {
    let body = format!(
        r#"<ErrorResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>proxy</RequestId></ErrorResponse>"#
    );
    (
        StatusCode::BAD_REQUEST,
        [("content-type", "text/xml")],
        body,
    )
        .into_response()
}

async fn handle(
    State(state): State<Arc<Mutex<ProxyState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params: BTreeMap<String, String> = url::form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let action = params.get("Action").cloned().unwrap_or_default();
    {
        let Ok(mut s) = state.lock() else {
            return xml_error("InternalFailure", "poisoned");
        };
        if let Some(i) = s.faults.iter().position(|(a, _)| *a == action) {
            let (_, code) = s.faults.remove(i);
            s.faulted.push(action.clone());
            // Server-side codes come with a 5xx, as AWS sends them.
            let response = xml_error(&code, "injected by the test proxy");
            return if matches!(code.as_str(), "InternalFailure" | "ServiceUnavailable") {
                let (mut parts, body) = response.into_parts();
                parts.status = StatusCode::INTERNAL_SERVER_ERROR;
                Response::from_parts(parts, body)
            } else {
                response
            };
        }
    }
    if ANSWERED.contains(&action.as_str()) {
        let hold = {
            let Ok(mut s) = state.lock() else {
                return xml_error("InternalFailure", "poisoned");
            };
            s.recorded.push((action.clone(), params.clone()));
            if action == "CompleteLifecycleAction" {
                s.hold_complete
            } else {
                None
            }
        };
        if let Some(hold) = hold {
            tokio::time::sleep(hold).await;
        }
        let token = params
            .get("LifecycleActionToken")
            .cloned()
            .unwrap_or_default();
        let Ok(mut s) = state.lock() else {
            return xml_error("InternalFailure", "poisoned");
        };
        // As AWS: a token can be completed once; after that the action is gone.
        if s.completed_tokens.contains(&token) {
            return xml_error(
                "ValidationError",
                &format!("No active Lifecycle Action found with token {token}"),
            );
        }
        if action == "CompleteLifecycleAction" {
            s.completed_tokens.push(token);
        }
        return xml_answer(&action);
    }
    let upstream = match state.lock() {
        Ok(s) => s.upstream.clone(),
        Err(_) => return xml_error("InternalFailure", "poisoned"),
    };
    let url = format!(
        "{upstream}{}",
        uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let client = reqwest::Client::new();
    let mut request = client.request(method, url).body(body.to_vec());
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    match request.send().await {
        Ok(answer) => {
            let status = answer.status();
            let mut builder = Response::builder().status(status.as_u16());
            for (name, value) in answer.headers() {
                if name != "content-length" && name != "transfer-encoding" && name != "connection" {
                    builder = builder.header(name.as_str(), value.as_bytes());
                }
            }
            let bytes = answer.bytes().await.unwrap_or_default();
            builder
                .body(axum::body::Body::from(bytes))
                .unwrap_or_else(|_| xml_error("InternalFailure", "response"))
        }
        Err(e) => xml_error("InternalFailure", &format!("upstream: {e}")),
    }
}

impl Proxy {
    /// Starts the proxy in front of `upstream` (moto's URL) on a free loopback port.
    pub async fn start(upstream: &str) -> anyhow::Result<Self> {
        let state = Arc::new(Mutex::new(ProxyState {
            upstream: upstream.to_owned(),
            ..ProxyState::default()
        }));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Proxy {
            url: format!("http://{addr}"),
            state,
        })
    }

    /// The lifecycle calls answered so far.
    pub fn recorded(&self) -> Vec<Recorded> {
        self.state
            .lock()
            .map(|s| s.recorded.clone())
            .unwrap_or_default()
    }

    /// Completions (token, result) so far, in order.
    pub fn completions(&self) -> Vec<(String, String)> {
        self.recorded()
            .into_iter()
            .filter(|(a, _)| a == "CompleteLifecycleAction")
            .map(|(_, p)| {
                (
                    p.get("LifecycleActionToken").cloned().unwrap_or_default(),
                    p.get("LifecycleActionResult").cloned().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Heartbeats so far for `token`.
    pub fn heartbeats(&self, token: &str) -> usize {
        self.recorded()
            .iter()
            .filter(|(a, p)| {
                a == "RecordLifecycleActionHeartbeat"
                    && p.get("LifecycleActionToken").map(String::as_str) == Some(token)
            })
            .count()
    }

    /// Answers the next call of `action` with the error `code` (e.g. throttling).
    pub fn fail_next(&self, action: &str, code: &str) {
        if let Ok(mut s) = self.state.lock() {
            s.faults.push((action.to_owned(), code.to_owned()));
        }
    }

    /// Actions answered with an injected error so far.
    pub fn faulted(&self) -> Vec<String> {
        self.state
            .lock()
            .map(|s| s.faulted.clone())
            .unwrap_or_default()
    }

    /// Holds every CompleteLifecycleAction this long before answering (a slow AWS, or a
    /// window to kill the host in).
    pub fn hold_complete(&self, hold: Option<Duration>) {
        if let Ok(mut s) = self.state.lock() {
            s.hold_complete = hold;
        }
    }
}

/// A lifecycle notification as the hook sends it to SQS.
pub fn lifecycle_message(
    group: &str,
    hook: &str,
    transition: &str,
    instance: &str,
    token: &str,
    metadata: &str,
) -> String {
    serde_json::json!({
        "Origin": "EC2", "Destination": "AutoScalingGroup", "Service": "AWS Auto Scaling",
        "Time": "2026-11-22T04:00:00.000Z", "AccountId": "123456789012", "RequestId": format!("req-{token}"),
        "LifecycleTransition": transition, "LifecycleActionToken": token,
        "EC2InstanceId": instance, "LifecycleHookName": hook, "AutoScalingGroupName": group,
        "NotificationMetadata": metadata,
    })
    .to_string()
}
