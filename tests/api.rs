//! The REST API over real HTTP: health, Prometheus metrics, status, CPA-style dry runs,
//! bearer-token auth, body limits and JSON errors.

use std::sync::Arc;

use wasmscaler::api::{ApiLimits, ApiState, Metrics, router};
use wasmscaler::engine::Fleet;
use wasmscaler::policies::PolicyStore;
use wasmscaler_tests::{JsonServer, MemoryTarget, build_rust_guest, scripted_spec, test_sandbox};

struct Api {
    base: String,
    policies: tempfile::TempDir,
    target: Arc<MemoryTarget>,
    engine: Arc<Fleet>,
    _decisions: JsonServer,
    http: reqwest::Client,
}

async fn start(token: Option<&str>) -> anyhow::Result<Api> {
    start_with(token, 64 << 20, ApiLimits::default()).await
}

async fn start_with_limit(token: Option<&str>, max_policy_bytes: u64) -> anyhow::Result<Api> {
    start_with(token, max_policy_bytes, ApiLimits::default()).await
}

async fn start_with(
    token: Option<&str>,
    max_policy_bytes: u64,
    limits: ApiLimits,
) -> anyhow::Result<Api> {
    let sandbox = Arc::new(test_sandbox()?);
    let guest = sandbox
        .load_file(&build_rust_guest("tests/hostile/scripted")?)
        .await?
        .component;
    let decisions = JsonServer::start()?;
    decisions.route("/decide", 200, r#"{"replicas": 5}"#);
    let url = format!("http://{}/decide", decisions.addr);
    let spec = scripted_spec("web", &url);
    let metrics = Arc::new(Metrics::new());
    let target = MemoryTarget::new(2);
    let autoscaler = wasmscaler_tests::autoscaler_with(spec, target.clone(), guest)?
        .with_observer(metrics.clone());
    let engine = Arc::new(Fleet::new(vec![Arc::new(autoscaler)]));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let policies = tempfile::tempdir()?;
    let store = PolicyStore::open(policies.path(), sandbox.clone(), max_policy_bytes)?;
    let app = router(Arc::new(
        ApiState::new(engine.clone(), metrics, token.map(str::to_owned))
            .with_policies(Arc::new(store))
            .with_limits(limits),
    ));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Api {
        base,
        policies,
        target,
        engine,
        _decisions: decisions,
        http: reqwest::Client::new(),
    })
}

impl Api {
    async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        self.get_as(path, None).await
    }

    async fn get_as(&self, path: &str, token: Option<&str>) -> anyhow::Result<(u16, String)> {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        Ok((response.status().as_u16(), response.text().await?))
    }

    async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let mut request = self.http.post(format!("{}{path}", self.base)).body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok((status, serde_json::from_str(&response.text().await?)?))
    }
}

#[tokio::test]
async fn health_status_and_metrics_after_a_run() -> anyhow::Result<()> {
    let api = start(Some("s3cret")).await?;
    assert_eq!(api.get("/healthz").await?, (200, "ok".to_string()));
    assert_eq!(api.get("/readyz").await?.0, 200);

    let (status, body) = api
        .post("/api/v1/autoscalers/web/evaluation", Some("s3cret"), vec![])
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "scaled");
    assert_eq!(api.target.current(), 5);

    let (status, text) = api.get("/metrics").await?;
    assert_eq!(status, 200);
    for line in [
        r#"wasmscaler_runs_total{autoscaler="web",namespace="",outcome="scaled"} 1"#,
        r#"wasmscaler_scale_events_total{autoscaler="web",namespace=""} 1"#,
        r#"wasmscaler_replicas_current{autoscaler="web",namespace=""} 2"#,
        r#"wasmscaler_replicas_desired{autoscaler="web",namespace=""} 5"#,
        r#"wasmscaler_guest_call_duration_seconds_count{autoscaler="web",namespace=""} 1"#,
    ] {
        assert!(text.contains(line), "missing {line} in:\n{text}");
    }
    assert!(text.contains("wasmscaler_fuel_used_total{"));

    let (status, list) = api.get("/api/v1/autoscalers").await?;
    let list: serde_json::Value = serde_json::from_str(&list)?;
    assert_eq!(status, 200);
    assert_eq!(list[0]["name"], "web");
    assert_eq!(list[0]["lastRun"]["outcome"], "scaled");
    let (status, one) = api.get("/api/v1/autoscalers/web").await?;
    let one: serde_json::Value = serde_json::from_str(&one)?;
    assert_eq!(status, 200);
    assert_eq!(one["records"].as_array().map(Vec::len), Some(1));
    assert_eq!(one["engineState"]["lastScaleMs"], one["records"][0]["atMs"]);

    let (status, missing) = api.get("/api/v1/autoscalers/nope").await?;
    let missing: serde_json::Value = serde_json::from_str(&missing)?;
    assert_eq!((status, missing["code"].as_u64()), (404, Some(404)));
    assert!(
        missing["error"]
            .as_str()
            .is_some_and(|e| e.contains("nope"))
    );
    Ok(())
}

#[tokio::test]
async fn dry_runs_decide_without_writing_or_remembering() -> anyhow::Result<()> {
    let token = Some("s3cret");
    let api = start(token).await?;
    // Dry runs run guests: without the token they are refused, before anything runs.
    let (status, _) = api
        .get("/api/v1/autoscalers/web/metrics?dry_run=true")
        .await?;
    assert_eq!(status, 401);
    let (status, _) = api
        .post(
            "/api/v1/autoscalers/web/evaluation?dry_run=true",
            None,
            vec![],
        )
        .await?;
    assert_eq!(status, 401);

    let (status, text) = api
        .get_as("/api/v1/autoscalers/web/metrics?dry_run=true", token)
        .await?;
    let samples: serde_json::Value = serde_json::from_str(&text)?;
    assert_eq!(status, 200, "{text}");
    assert_eq!(samples["samples"][0]["name"], "replicas");
    assert_eq!(samples["samples"][0]["value"], 5.0);

    let (status, record) = api
        .post(
            "/api/v1/autoscalers/web/evaluation?dry_run=true",
            token,
            vec![],
        )
        .await?;
    assert_eq!(status, 200, "{record}");
    assert_eq!(record["outcome"], "would-scale");
    assert_eq!(record["to"], 5);

    // Provided samples are evaluated instead of gathered.
    let body = br#"{"samples": [{"name": "replicas", "value": 7}]}"#.to_vec();
    let (status, record) = api
        .post(
            "/api/v1/autoscalers/web/evaluation?dry_run=true",
            token,
            body,
        )
        .await?;
    assert_eq!(status, 200, "{record}");
    assert_eq!(record["decision"]["targetReplicas"], 7);

    assert_eq!(api.target.current(), 2, "dry runs never write");
    assert!(api.target.scale_calls().is_empty());
    let autoscaler = &api.engine.autoscalers()[0];
    assert!(autoscaler.records().is_empty(), "dry runs are not recorded");
    assert!(
        autoscaler
            .engine_state()
            .await
            .history
            .recommendations
            .is_empty(),
        "nor remembered"
    );
    Ok(())
}

#[tokio::test]
async fn dry_runs_can_be_opened_to_clients_without_a_token() -> anyhow::Result<()> {
    let limits = ApiLimits {
        open_dry_runs: true,
        ..ApiLimits::default()
    };
    let api = start_with(Some("s3cret"), 64 << 20, limits).await?;
    let (status, text) = api
        .get("/api/v1/autoscalers/web/metrics?dry_run=true")
        .await?;
    assert_eq!(status, 200, "{text}");
    let path = "/api/v1/autoscalers/web/evaluation";
    let (status, record) = api
        .post(&format!("{path}?dry_run=true"), None, vec![])
        .await?;
    assert_eq!(status, 200, "{record}");
    // Opening dry runs opens nothing that can scale.
    let (status, _) = api.post(path, None, vec![]).await?;
    assert_eq!(status, 401);
    assert!(api.target.scale_calls().is_empty());
    Ok(())
}

#[tokio::test]
async fn runs_that_can_scale_need_the_bearer_token() -> anyhow::Result<()> {
    let path = "/api/v1/autoscalers/web/evaluation";
    let open = start(None).await?;
    let (status, body) = open.post(path, Some("anything"), vec![]).await?;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("no API token"))
    );

    let api = start(Some("s3cret")).await?;
    let (status, body) = api.post(path, None, vec![]).await?;
    assert_eq!((status, body["code"].as_u64()), (401, Some(401)));
    let (status, _) = api.post(path, Some("guess"), vec![]).await?;
    assert_eq!(status, 403);
    assert!(
        api.target.scale_calls().is_empty(),
        "refused calls change nothing"
    );
    let (status, _) = api.post(path, Some("s3cret"), vec![]).await?;
    assert_eq!(status, 200);
    assert_eq!(api.target.current(), 5);
    Ok(())
}

#[tokio::test]
async fn oversized_and_malformed_bodies_are_refused() -> anyhow::Result<()> {
    let api = start(Some("s3cret")).await?;
    let path = "/api/v1/autoscalers/web/evaluation?dry_run=true";
    let huge = vec![b' '; wasmscaler::api::MAX_BODY_BYTES + 1];
    let response = api
        .http
        .post(format!("{}{path}", api.base))
        .bearer_auth("s3cret")
        .body(huge)
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 413);
    let (status, body) = api
        .post(path, Some("s3cret"), br#"{"samplez": []}"#.to_vec())
        .await?;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("samplez"))
    );
    Ok(())
}

impl Api {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        Ok((
            status,
            if text.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::from_str(&text)?
            },
        ))
    }
}

#[tokio::test]
async fn policies_are_validated_stored_listed_and_deleted_only_when_unused() -> anyhow::Result<()> {
    use reqwest::Method;
    let api = start(Some("s3cret")).await?;
    let cpu = std::fs::read(build_rust_guest("guests/cpu-target")?)?;
    let scripted = std::fs::read(build_rust_guest("tests/hostile/scripted")?)?;

    let (status, record) = api
        .send(
            Method::PUT,
            "/api/v1/policies/cpu",
            Some("s3cret"),
            cpu.clone(),
        )
        .await?;
    assert_eq!(status, 201, "{record}");
    assert_eq!(record["world"], "policy");
    assert_eq!(
        record["capabilities"],
        serde_json::json!(["kubernetes-metrics"])
    );
    let sha = record["sha256"].as_str().unwrap_or_default().to_owned();
    assert!(
        api.policies
            .path()
            .join(format!("blobs/{sha}.wasm"))
            .exists()
    );
    let (_, list) = api
        .send(Method::GET, "/api/v1/policies", None, vec![])
        .await?;
    assert_eq!(list[0]["name"], "cpu");
    let (status, one) = api
        .send(Method::GET, "/api/v1/policies/cpu", None, vec![])
        .await?;
    assert_eq!((status, one["sha256"].as_str()), (200, Some(sha.as_str())));

    // Refusals, each with its reason, and none of them changes the store.
    // (path, token, body, expected status, words of the reason)
    type Refusal<'a> = (&'a str, Option<&'a str>, Vec<u8>, u16, &'a str);
    let cases: Vec<Refusal> = vec![
        (
            "/api/v1/policies/x",
            None,
            cpu.clone(),
            401,
            "missing bearer token",
        ),
        (
            "/api/v1/policies/x",
            Some("nope"),
            cpu.clone(),
            403,
            "wrong bearer token",
        ),
        (
            "/api/v1/policies/x",
            Some("s3cret"),
            b"not wasm at all".to_vec(),
            422,
            "not a WebAssembly binary",
        ),
        (
            "/api/v1/policies/x",
            Some("s3cret"),
            wasmscaler_tests::hostile_wat("wrong-world.wat")?,
            422,
            "world mismatch",
        ),
        (
            "/api/v1/policies/x",
            Some("s3cret"),
            wasmscaler_tests::hostile_wat("unknown-import.wat")?,
            422,
            "wasmscaler:policy/secrets@0.1.0",
        ),
        (
            "/api/v1/policies/Bad_Name",
            Some("s3cret"),
            cpu.clone(),
            422,
            "policy name",
        ),
    ];
    for (path, token, body, code, reason) in cases {
        let (status, error) = api.send(Method::PUT, path, token, body).await?;
        assert_eq!(status, code, "{error}");
        assert!(
            error["error"].as_str().is_some_and(|e| e.contains(reason)),
            "{reason}: {error}"
        );
    }
    let (_, list) = api
        .send(Method::GET, "/api/v1/policies", None, vec![])
        .await?;
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(1),
        "refused uploads changed nothing"
    );

    // The engine's autoscaler runs the scripted guest: its upload cannot be deleted.
    api.send(
        Method::PUT,
        "/api/v1/policies/scripted",
        Some("s3cret"),
        scripted,
    )
    .await?;
    let (status, error) = api
        .send(
            Method::DELETE,
            "/api/v1/policies/scripted",
            Some("s3cret"),
            vec![],
        )
        .await?;
    assert_eq!(status, 409, "{error}");
    assert!(error["error"].as_str().is_some_and(|e| e.contains("web")));
    let (status, _) = api
        .send(Method::DELETE, "/api/v1/policies/cpu", None, vec![])
        .await?;
    assert_eq!(status, 401);
    let (status, _) = api
        .send(
            Method::DELETE,
            "/api/v1/policies/cpu",
            Some("s3cret"),
            vec![],
        )
        .await?;
    assert_eq!(status, 204);
    assert!(
        !api.policies
            .path()
            .join(format!("blobs/{sha}.wasm"))
            .exists(),
        "unshared blob removed"
    );
    let (status, _) = api
        .send(Method::GET, "/api/v1/policies/cpu", None, vec![])
        .await?;
    assert_eq!(status, 404);

    // A new store over the same directory (a restarted host) still has the rest.
    let reopened = PolicyStore::open(api.policies.path(), Arc::new(test_sandbox()?), 1 << 20)?;
    assert_eq!(
        reopened
            .list()?
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        ["scripted"]
    );
    Ok(())
}

#[tokio::test]
async fn oversized_policies_are_refused_with_413() -> anyhow::Result<()> {
    let api = start_with_limit(Some("t"), 10_000).await?;
    let cpu = std::fs::read(build_rust_guest("guests/cpu-target")?)?;
    let (status, error) = api
        .send(reqwest::Method::PUT, "/api/v1/policies/big", Some("t"), cpu)
        .await?;
    assert_eq!(status, 413, "{error}");
    assert_eq!(error["code"], 413);
    Ok(())
}

/// A self-signed certificate for 127.0.0.1, made by the openssl command line.
fn self_signed(dir: &std::path::Path) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf)> {
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let status = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=wasmscaler",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        // A leaf, not a CA: rustls refuses a CA certificate as a server's.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "openssl could not make a certificate");
    Ok((cert, key))
}

#[tokio::test]
async fn the_api_serves_https_when_given_a_certificate() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (cert, key) = self_signed(dir.path())?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let state = Arc::new(ApiState::new(
        Arc::new(Fleet::default()),
        Arc::new(Metrics::new()),
        None,
    ));
    let stop = tokio_util::sync::CancellationToken::new();
    let server = wasmscaler::api::serve(
        addr,
        state,
        Some(wasmscaler::api::TlsFiles {
            cert: cert.clone(),
            key,
        }),
        stop.clone(),
    )
    .await?;
    let trusted = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&cert)?)?)
        .build()?;
    let response = trusted
        .get(format!("https://{addr}/healthz"))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await?, "ok");
    // Plain HTTP to the TLS port gets no API answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{addr}/healthz"))
        .send()
        .await;
    assert!(plain.map(|r| r.status() != 200).unwrap_or(true));
    // An untrusting client refuses the self-signed certificate: it is really TLS.
    assert!(
        reqwest::get(format!("https://{addr}/healthz"))
            .await
            .is_err()
    );
    stop.cancel();
    server.await?;

    // A missing key is an error at start, naming the files.
    let err = wasmscaler::api::serve(
        addr,
        Arc::new(ApiState::new(
            Arc::new(Fleet::default()),
            Arc::new(Metrics::new()),
            None,
        )),
        Some(wasmscaler::api::TlsFiles {
            cert,
            key: dir.path().join("absent.key"),
        }),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .err()
    .ok_or_else(|| anyhow::anyhow!("a missing key was accepted"))?;
    assert!(format!("{err:#}").contains("absent.key"), "{err:#}");
    Ok(())
}
