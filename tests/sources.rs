//! The stock metric sources of `guests/sources`, each against a real server on loopback:
//! Debian's Prometheus (scraping a test endpoint), Redis behind webdis, and a JSON endpoint;
//! then a source paired with the `target-value` evaluator scaling a target through the engine.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmscaler::contract::model::FailureHandling;
use wasmscaler::contract::model::{Context, GuestError, Sample};
use wasmscaler::engine::{Autoscaler, AutoscalerSpec, Guests, MetricsSpec, Outcome};
use wasmscaler::policies::PolicyRef;
use wasmscaler::sandbox::{CallEnv, Capabilities, GuestComponent, HttpGrant, SandboxError};
use wasmscaler_tests::daemons::{prometheus, redis, redis_cli, webdis};
use wasmscaler_tests::{
    JsonServer, MemoryTarget, build_rust_guest, placeholder_target, test_sandbox,
};

async fn load(name: &str) -> anyhow::Result<Arc<GuestComponent>> {
    let wasm = build_rust_guest(&format!("guests/sources/{name}"))?;
    Ok(test_sandbox()?.load_file(&wasm).await?.component)
}

fn ctx(config: &[(&str, &str)]) -> Context {
    Context {
        autoscaler_name: "source".into(),
        config: config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        ..Default::default()
    }
}

fn http_env(allow: &str) -> CallEnv {
    CallEnv {
        capabilities: Capabilities {
            http: Some(HttpGrant::allow([allow])),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn label<'a>(sample: &'a Sample, key: &str) -> Option<&'a str> {
    sample.labels.get(key).map(String::as_str)
}

/// A raw HTTP/1.1 GET on loopback: (status, body).
fn http_get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((status, body))
}

#[tokio::test]
async fn the_prometheus_source_reads_vectors_and_scalars_from_a_real_prometheus()
-> anyhow::Result<()> {
    let guest = load("prometheus").await?;
    let app = JsonServer::start()?;
    app.route(
        "/metrics",
        200,
        "# TYPE queue_depth gauge\nqueue_depth{queue=\"a\"} 12\nqueue_depth{queue=\"b\"} 30\n",
    );
    let server = prometheus(&app.addr.to_string())?;
    let address = format!("http://{}", server.addr);
    let env = http_env(&format!("{address}/api/v1/query*"));
    let gather = |query: &str, extra: &[(&str, &str)]| {
        let mut config = vec![
            ("serverAddress", address.as_str()),
            ("query", query),
            ("metricName", "depth"),
        ];
        config.extend_from_slice(extra);
        let ctx = ctx(&config);
        let (guest, env) = (guest.clone(), env.clone());
        async move { guest.gather(&ctx, &env).await.map(|o| o.value) }
    };

    // Until Prometheus has scraped the endpoint, the query has no series.
    let started = Instant::now();
    let series = loop {
        let samples = gather("queue_depth", &[]).await?;
        if samples.len() == 2 {
            break samples;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "Prometheus never scraped {}: {samples:?}",
            app.addr
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // A vector: one sample per series, labelled.
    let mut by_queue: Vec<(String, f64)> = series
        .iter()
        .map(|s| (label(s, "queue").unwrap_or("?").to_owned(), s.value))
        .collect();
    by_queue.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(by_queue, [("a".to_owned(), 12.0), ("b".to_owned(), 30.0)]);
    assert!(
        series
            .iter()
            .all(|s| s.name == "depth" && label(s, "job") == Some("app"))
    );

    // An aggregation, and a scalar.
    let sum = gather("sum(queue_depth)", &[]).await?;
    assert_eq!((sum.len(), sum[0].value), (1, 42.0), "{sum:?}");
    let scalar = gather("scalar(sum(queue_depth)) * 2", &[]).await?;
    assert_eq!((scalar.len(), scalar[0].value), (1, 84.0), "{scalar:?}");

    // No series: 0, as KEDA reads it, unless told otherwise.
    let none = gather("queue_depth{queue=\"nope\"}", &[]).await?;
    assert_eq!((none.len(), none[0].value), (1, 0.0));
    let strict = gather(
        "queue_depth{queue=\"nope\"}",
        &[("ignoreNullValues", "false")],
    )
    .await;
    assert!(
        matches!(&strict, Err(SandboxError::Guest(GuestError::Unavailable(m))) if m.contains("no series")),
        "{strict:?}"
    );

    // Bad PromQL is a config error carrying Prometheus's own message.
    let bad = gather("sum(", &[]).await;
    assert!(
        matches!(&bad, Err(SandboxError::Guest(GuestError::InvalidConfig(m))) if m.contains("bad_data")),
        "{bad:?}"
    );
    // Off the allow-list (another path of the same server): denied by the host.
    let ctx = ctx(&[("serverAddress", &address), ("query", "up")]);
    let denied = guest
        .gather(&ctx, &http_env(&format!("{address}/metrics")))
        .await;
    assert!(
        matches!(&denied, Err(SandboxError::Guest(GuestError::Denied(_)))),
        "{denied:?}"
    );
    Ok(())
}

#[tokio::test]
async fn the_queue_length_source_reads_redis_lists_through_webdis_and_nothing_else()
-> anyhow::Result<()> {
    let guest = load("queue-length").await?;
    let redis = redis()?;
    let webdis = webdis(&redis)?;
    redis_cli(
        &redis,
        &["RPUSH", "jobs", "a", "b", "c", "d", "e", "f", "g"],
    )?;
    redis_cli(&redis, &["RPUSH", "urgent", "x"])?;
    let base = format!("http://{}", webdis.addr);
    let env = http_env(&format!("{base}/LLEN/*"));
    let ctx = ctx(&[("webdisUrl", &base), ("queues", "jobs, urgent, empty")]);
    let samples = guest.gather(&ctx, &env).await?.value;
    let lengths: Vec<(&str, f64)> = samples
        .iter()
        .map(|s| (label(s, "queue").unwrap_or("?"), s.value))
        .collect();
    assert_eq!(lengths, [("jobs", 7.0), ("urgent", 1.0), ("empty", 0.0)]);
    assert!(samples.iter().all(|s| s.name == "queue-length"));

    // webdis's ACL confines HTTP clients to LLEN: a write through it is refused, and the
    // queue is untouched.
    let (status, _) = http_get(&webdis.addr, "/DEL/jobs")?;
    assert_eq!(status, 403);
    assert_eq!(redis_cli(&redis, &["LLEN", "jobs"])?, "7");

    // Redis gone: unavailable, naming the URL.
    drop(webdis);
    let gone = guest.gather(&ctx, &env).await;
    assert!(
        matches!(&gone, Err(SandboxError::Guest(GuestError::Unavailable(_)))),
        "{gone:?}"
    );
    Ok(())
}

#[tokio::test]
async fn the_json_path_source_reads_a_number_where_it_is_told() -> anyhow::Result<()> {
    let guest = load("json-path").await?;
    let server = JsonServer::start()?;
    server.route(
        "/stats",
        200,
        r#"{"stats": {"queues": [{"depth": 3}, {"depth": "5"}]}}"#,
    );
    let url = format!("http://{}/stats", server.addr);
    let env = http_env(&url);
    let read = |path: &str| {
        let ctx = ctx(&[("url", url.as_str()), ("valueLocation", path)]);
        let (guest, env) = (guest.clone(), env.clone());
        async move { guest.gather(&ctx, &env).await.map(|o| o.value) }
    };
    let first = read("stats.queues[0].depth").await?;
    assert_eq!((first[0].name.as_str(), first[0].value), ("value", 3.0));
    assert_eq!(read("$.stats.queues[1].depth").await?[0].value, 5.0);
    let missing = read("stats.queues[2].depth").await;
    assert!(
        matches!(&missing, Err(SandboxError::Guest(GuestError::Unavailable(m))) if m.contains("queues[2]")),
        "{missing:?}"
    );
    let malformed = read("stats[x").await;
    assert!(
        matches!(&malformed, Err(SandboxError::Guest(GuestError::InvalidConfig(m))) if m.contains("valueLocation")),
        "{malformed:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_source_and_the_target_value_evaluator_scale_a_target() -> anyhow::Result<()> {
    let (source, evaluator) = (load("queue-length").await?, load("target-value").await?);
    let redis = redis()?;
    let webdis = webdis(&redis)?;
    redis_cli(
        &redis,
        &["RPUSH", "jobs", "1", "2", "3", "4", "5", "6", "7"],
    )?;
    let base = format!("http://{}", webdis.addr);
    let mut spec = AutoscalerSpec::new("queue", placeholder_target(), "unused.wasm", 10);
    spec.scaling.policy = None;
    spec.scaling.metrics = Some(MetricsSpec::One(PolicyRef::File(
        "queue_length.wasm".into(),
    )));
    spec.scaling.evaluator = Some(PolicyRef::File("target_value.wasm".into()));
    spec.scaling.config = [
        ("webdisUrl", base.as_str()),
        ("queues", "jobs"),
        ("targetValue", "3"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    spec.scaling.capabilities = Capabilities {
        http: Some(HttpGrant::allow([format!("{base}/LLEN/*")])),
        ..Default::default()
    };
    let target = MemoryTarget::new(1);
    let autoscaler =
        Autoscaler::builder(spec, target.clone(), Guests::pair(source, evaluator)).build()?;
    // Seven items at three per replica: three replicas.
    let record = autoscaler.run_once().await;
    assert_eq!(
        record.outcome,
        Outcome::Scaled { from: 1, to: 3 },
        "{record:?}"
    );
    assert_eq!(target.current(), 3);
    Ok(())
}

/// `metrics:` as a list: three json-path sources, each with its own config and its own
/// allow-list, and the target-value evaluator taking the largest count (the HPA's rule).
#[tokio::test]
async fn listed_sources_fail_alone_and_the_evaluator_sees_which() -> anyhow::Result<()> {
    let (source, evaluator) = (load("json-path").await?, load("target-value").await?);
    let server = JsonServer::start()?;
    server.route("/rps", 200, r#"{"rps": 250}"#);
    server.route("/queue", 200, r#"{"depth": 20}"#);
    let base = format!("http://{}", server.addr);
    // Written as a user writes it; `sneaky` asks for /queue but may only fetch /rps.
    let scaling = serde_json::json!({
        "metrics": [
            {"name": "rps", "component": "file:json_path.wasm", "onFailure": "ignore",
             "config": {"url": format!("{base}/rps"), "valueLocation": "rps"},
             "capabilities": {"http": {"allow": [format!("{base}/rps")]}}},
            {"name": "queue", "component": "file:json_path.wasm",
             "config": {"url": format!("{base}/queue"), "valueLocation": "depth"},
             "capabilities": {"http": {"allow": [format!("{base}/queue")]}}},
            {"name": "sneaky", "component": "file:json_path.wasm", "onFailure": "ignore",
             "config": {"url": format!("{base}/queue"), "valueLocation": "depth"},
             "capabilities": {"http": {"allow": [format!("{base}/rps")]}}},
        ],
        "evaluator": "file:target_value.wasm",
        "maxReplicas": 10,
        "config": {"targetValue": "100", "targetValue.queue": "4"},
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}},
    });
    let mut spec = AutoscalerSpec::new("listed", placeholder_target(), "unused.wasm", 10);
    spec.scaling = serde_json::from_value(scaling)?;
    let guests = Guests {
        metrics: source.clone(),
        evaluator,
        sources: vec![source.clone(), source.clone(), source],
    };
    let target = MemoryTarget::new(1);
    let autoscaler = Autoscaler::builder(spec, target.clone(), guests).build()?;

    // rps 250 at 100: 3; queue 20 at 4: 5. The larger wins; sneaky was denied its URL.
    let record = autoscaler.run_once().await;
    assert_eq!(
        record.outcome,
        Outcome::Scaled { from: 1, to: 5 },
        "{record:?}"
    );
    let statuses: Vec<_> = record
        .sources
        .iter()
        .map(|s| (s.name.as_str(), s.samples, s.handling))
        .collect();
    assert_eq!(
        statuses,
        [
            ("rps", 1, None),
            ("queue", 1, None),
            ("sneaky", 0, Some(FailureHandling::Ignored))
        ]
    );
    assert!(
        matches!(&record.sources[2].failure, Some(GuestError::Denied(m)) if m.contains("/queue")),
        "{:?}",
        record.sources[2]
    );

    // rps fails and is ignored; the queue alone would go to 2, but a missing source might ask
    // for more, so the evaluator holds 5.
    server.route("/rps", 503, "down");
    server.route("/queue", 200, r#"{"depth": 8}"#);
    let record = autoscaler.run_once().await;
    let reason = record
        .decision
        .as_ref()
        .and_then(|d| d.reason.clone())
        .unwrap_or_default();
    assert_eq!(record.outcome, Outcome::Unchanged, "{record:?}");
    assert!(
        reason.contains("holding 5: source rps, sneaky failed"),
        "{reason}"
    );
    assert_eq!(record.sources[0].consecutive_failures, 1);

    // rps is back (its streak resets); sneaky, still denied, still keeps the count from
    // going down.
    server.route("/rps", 200, r#"{"rps": 50}"#);
    let record = autoscaler.run_once().await;
    assert_eq!(record.outcome, Outcome::Unchanged, "{record:?}");
    assert_eq!(record.sources[0].consecutive_failures, 0);
    assert_eq!(record.sources[2].consecutive_failures, 3);
    let reason = record.decision.and_then(|d| d.reason).unwrap_or_default();
    assert!(
        reason.contains("holding 5: source sneaky failed"),
        "{reason}"
    );

    // The queue source may not fail: the run holds, naming it, and the target is untouched.
    server.route("/queue", 500, "boom");
    let record = autoscaler.run_once().await;
    assert!(matches!(record.outcome, Outcome::Held { .. }), "{record:?}");
    let error = record.error.unwrap_or_default();
    assert!(
        error.contains("source queue") && error.contains("500"),
        "{error}"
    );
    assert_eq!(target.current(), 5);
    Ok(())
}
