//! The AWS target and lifecycle hooks against real parts: moto's server on loopback (Auto
//! Scaling, SQS, EC2) behind a recording proxy that answers CompleteLifecycleAction and
//! RecordLifecycleActionHeartbeat as AWS does (moto answers them with 500), real SQS
//! messages, real `wasmscaler` processes (one killed mid-action), and the agent.
//!
//! A custom harness: AWS credentials and region come from the environment, as in production,
//! and the environment is set here once, before any thread exists; the scenarios then run one
//! after another.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_autoscaling::Client as AutoScaling;
use aws_sdk_sqs::Client as Sqs;
use wasmscaler::contract::lifecycle_model::ActionResult;
use wasmscaler::engine::{Outcome, TargetSpec};
use wasmscaler::hooks::{Handled, LifecycleProcessor, LifecycleSpec, state_tag};
use wasmscaler::targets::Target;
use wasmscaler::targets::aws::{AsgSpec, AsgTarget, AwsEndpoint};

use wasmscaler_tests as support;

use support::aws::{Moto, Proxy, lifecycle_message};
use support::{JsonServer, build_rust_guest, scripted_spec, test_sandbox};

const LAUNCHING: &str = "autoscaling:EC2_INSTANCE_LAUNCHING";

struct World {
    _moto: Moto,
    proxy: Proxy,
    endpoint: AwsEndpoint,
    autoscaling: AutoScaling,
    sqs: Sqs,
    queue: String,
    ec2: wasmscaler::targets::aws::ec2::Ec2,
}

/// moto with a group `web` (min 1, max 6, desired 2), a launch hook (default ABANDON) and its
/// queue.
async fn world() -> anyhow::Result<World> {
    let moto = Moto::start()?;
    let proxy = Proxy::start(&moto.url).await?;
    let endpoint = AwsEndpoint {
        region: Some("us-east-1".into()),
        endpoint_url: Some(proxy.url.clone()),
    };
    let config = endpoint.sdk_config().await;
    let autoscaling = AutoScaling::new(&config);
    let sqs = Sqs::new(&config);
    autoscaling
        .create_launch_configuration()
        .launch_configuration_name("nodes")
        .image_id("ami-12c6146b")
        .instance_type("t2.micro")
        .send()
        .await?;
    autoscaling
        .create_auto_scaling_group()
        .auto_scaling_group_name("web")
        .launch_configuration_name("nodes")
        .min_size(1)
        .max_size(6)
        .desired_capacity(2)
        .availability_zones("us-east-1a")
        .send()
        .await?;
    autoscaling
        .put_lifecycle_hook()
        .auto_scaling_group_name("web")
        .lifecycle_hook_name("launch")
        .lifecycle_transition(LAUNCHING)
        .default_result("ABANDON")
        .heartbeat_timeout(300)
        .send()
        .await?;
    let queue = sqs
        .create_queue()
        .queue_name("lifecycle")
        .send()
        .await?
        .queue_url()
        .unwrap_or_default()
        .to_owned();
    Ok(World {
        ec2: wasmscaler::targets::aws::ec2::Ec2::new(&config).map_err(anyhow::Error::msg)?,
        _moto: moto,
        proxy,
        endpoint,
        autoscaling,
        sqs,
        queue,
    })
}

impl World {
    async fn instances(&self) -> anyhow::Result<(i32, Vec<String>)> {
        let answer = self
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names("web")
            .send()
            .await?;
        let group = answer
            .auto_scaling_groups()
            .first()
            .ok_or_else(|| anyhow::anyhow!("no group"))?;
        Ok((
            group.desired_capacity().unwrap_or_default(),
            group
                .instances()
                .iter()
                .filter_map(|i| i.instance_id().map(str::to_owned))
                .collect(),
        ))
    }

    async fn tag(&self, instance: &str, key: &str) -> anyhow::Result<Option<String>> {
        let found = self
            .ec2
            .describe_instances(&[instance.to_owned()])
            .await
            .map_err(anyhow::Error::msg)?;
        Ok(found.first().and_then(|i| i.tags.get(key).cloned()))
    }

    async fn send(&self, body: &str) -> anyhow::Result<()> {
        self.sqs
            .send_message()
            .queue_url(&self.queue)
            .message_body(body)
            .send()
            .await?;
        Ok(())
    }

    async fn queued(&self) -> anyhow::Result<usize> {
        let answer = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.queue)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
            .send()
            .await?;
        let count = |name: aws_sdk_sqs::types::QueueAttributeName| {
            answer
                .attributes()
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0)
        };
        Ok(
            count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
                + count(
                    aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
                ),
        )
    }

    fn spec(&self, handler: &std::path::Path) -> LifecycleSpec {
        serde_json::from_value(serde_json::json!({
            "name": "nodes",
            "handler": handler,
            "queueUrl": self.queue,
            "region": "us-east-1",
            "endpointUrl": self.proxy.url,
            "visibilityTimeout": "2s",
            "waitTime": "1s",
        }))
        .unwrap_or_else(|e| panic!("lifecycle spec: {e}"))
    }
}

async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < timeout {
        if check().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("timed out after {timeout:?} waiting for {what}")
}

/// Scale out and in through a guest decision; the removal list is honoured; a protected
/// instance is kept.
async fn the_guest_scales_the_group_out_and_in() -> anyhow::Result<()> {
    let w = world().await?;
    let (_, start) = w.instances().await?;
    let protected = start[0].clone();
    w.autoscaling
        .set_instance_protection()
        .auto_scaling_group_name("web")
        .instance_ids(&protected)
        .protected_from_scale_in(true)
        .send()
        .await?;
    let target: Arc<dyn Target> = Arc::new(
        AsgTarget::connect(AsgSpec {
            group_name: "web".into(),
            endpoint: w.endpoint.clone(),
        })
        .await?,
    );
    let observed = target.observe().await?;
    assert_eq!(observed.current, 2);
    assert_eq!(observed.replicas.len(), 2);
    assert!(
        observed.replicas.iter().all(|r| r.address.is_some()),
        "{observed:?}"
    );
    let decisions = JsonServer::start()?;
    let url = format!("http://{}/decide", decisions.addr);
    let guest = test_sandbox()?
        .load_file(&build_rust_guest("tests/hostile/scripted")?)
        .await?
        .component;
    let mut spec = scripted_spec("web", &url);
    spec.target = TargetSpec::AwsAsg(AsgSpec {
        group_name: "web".into(),
        endpoint: w.endpoint.clone(),
    });
    spec.scaling.max_replicas = 6;
    let autoscaler = support::autoscaler_with(spec, target, guest)?;

    decisions.route("/decide", 200, r#"{"replicas": 4}"#);
    // AWS is busy with another activity at first: the write is retried, not lost.
    w.proxy
        .fail_next("SetDesiredCapacity", "ScalingActivityInProgress");
    w.proxy.fail_next("SetDesiredCapacity", "Throttling");
    let record = autoscaler.run_once().await;
    assert_eq!(
        w.proxy.faulted(),
        ["SetDesiredCapacity", "SetDesiredCapacity"]
    );
    assert_eq!(
        record.outcome,
        Outcome::Scaled { from: 2, to: 4 },
        "{record:?}"
    );
    let (desired, four) = w.instances().await?;
    assert_eq!((desired, four.len()), (4, 4));

    // Scale in to 2, removing the protected instance and a chosen one first.
    let chosen = four
        .iter()
        .find(|i| **i != protected)
        .cloned()
        .unwrap_or_default();
    decisions.route(
        "/decide",
        200,
        serde_json::json!({"replicas": 2, "removeFirst": [protected, chosen]}).to_string(),
    );
    // AWS refuses the final SetDesiredCapacity after the chosen instance is gone: the group
    // is at 3, and the engine records 4 -> 3 for the rate policies.
    w.proxy.fail_next("SetDesiredCapacity", "ValidationError");
    let record = autoscaler.run_once().await;
    assert!(
        record
            .error
            .as_deref()
            .is_some_and(|e| e.contains("scaled only to 3")),
        "{record:?}"
    );
    assert_eq!(w.instances().await?.0, 3);
    let history = autoscaler.engine_state().await.history;
    assert_eq!(
        history
            .scale_down_events
            .iter()
            .map(|e| e.change)
            .sum::<u32>(),
        1,
        "the partial scale-in is not in the history: {history:?}"
    );
    let record = autoscaler.run_once().await;
    assert_eq!(
        record.outcome,
        Outcome::Scaled { from: 3, to: 2 },
        "{record:?}"
    );
    let (desired, left) = w.instances().await?;
    assert_eq!(desired, 2);
    assert!(
        left.contains(&protected),
        "the protected instance was removed: {left:?}"
    );
    assert!(
        !left.contains(&chosen),
        "the chosen instance was kept: {left:?}"
    );

    // Someone else changes the group between observation and write: nothing is written.
    let observed = autoscaler.target().observe().await?;
    w.autoscaling
        .set_desired_capacity()
        .auto_scaling_group_name("web")
        .desired_capacity(3)
        .send()
        .await?;
    let err = autoscaler
        .target()
        .scale(&observed, 5, &[])
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a stale write went through"))?;
    assert!(err.to_string().contains("changed"), "{err}");
    assert_eq!(w.instances().await?.0, 3);
    Ok(())
}

/// Launch → guest steps, state persisted as a tag, a heartbeat, CONTINUE; a trapping guest →
/// the hook's default; a duplicate → handled once; messages deleted after completion.
async fn lifecycle_events_are_stepped_and_completed_once() -> anyhow::Result<()> {
    let w = world().await?;
    let handler_path = build_rust_guest("guests/lifecycle-join")?;
    let handler = test_sandbox()?.load_file(&handler_path).await?.component;
    let processor = Arc::new(
        LifecycleProcessor::new(w.spec(&handler_path), handler, None)
            .await
            .map_err(anyhow::Error::msg)?,
    );
    let (_, instances) = w.instances().await?;
    let (first, second) = (instances[0].clone(), instances[1].clone());

    let stop = tokio_util::sync::CancellationToken::new();
    let running = {
        let (processor, stop) = (processor.clone(), stop.clone());
        tokio::spawn(async move { processor.run(stop).await })
    };
    w.send(r#"{"AccountId":"123456789012","RequestId":"r","AutoScalingGroupName":"web","Service":"AWS Auto Scaling","Event":"autoscaling:TEST_NOTIFICATION","Time":"2026-11-22T04:00:00Z"}"#).await?;
    let launch = lifecycle_message("web", "launch", LAUNCHING, &first, "token-1", "{}");
    w.send(&launch).await?;
    // The same launch in an SNS envelope, as a second delivery: handled once.
    w.send(
        &serde_json::json!({"Type": "Notification", "MessageId": "m-2", "Message": launch})
            .to_string(),
    )
    .await?;
    w.send(&lifecycle_message(
        "web",
        "launch",
        LAUNCHING,
        &second,
        "token-2",
        r#"{"fail":"trap"}"#,
    ))
    .await?;
    wait_for(
        "every message handled and deleted",
        Duration::from_secs(30),
        || async { w.queued().await.unwrap_or(1) == 0 && w.proxy.completions().len() >= 2 },
    )
    .await?;
    stop.cancel();
    running.await?;

    let completions = w.proxy.completions();
    assert_eq!(
        completions,
        vec![
            ("token-1".to_owned(), "CONTINUE".to_owned()),
            ("token-2".to_owned(), "ABANDON".to_owned())
        ],
        "each action completed once, the trapping one with the hook's default"
    );
    assert_eq!(w.proxy.heartbeats("token-1"), 1, "{:?}", w.proxy.recorded());
    assert_eq!(
        w.tag(
            &first,
            &state_tag(wasmscaler::contract::lifecycle_model::Transition::Launch)
        )
        .await?
        .as_deref(),
        Some("registered")
    );
    assert_eq!(
        w.tag(
            &second,
            &state_tag(wasmscaler::contract::lifecycle_model::Transition::Launch)
        )
        .await?,
        None
    );

    // A terminating instance is drained by the same handler.
    let terminate = lifecycle_message(
        "web",
        "terminate",
        "autoscaling:EC2_INSTANCE_TERMINATING",
        &first,
        "token-t",
        "{}",
    );
    assert_eq!(
        processor.handle_message(&terminate).await,
        Handled::Completed {
            instance: first.clone(),
            result: ActionResult::Continue,
            defaulted: false
        }
    );
    let drained = state_tag(wasmscaler::contract::lifecycle_model::Transition::Terminate);
    assert_eq!(w.tag(&first, &drained).await?.as_deref(), Some("drained"));

    // Direct calls show what the loop did with each message.
    assert_eq!(processor.handle_message(&launch).await, Handled::Duplicate);
    let again = lifecycle_message(
        "web",
        "launch",
        LAUNCHING,
        &second,
        "token-3",
        r#"{"abandon":true}"#,
    );
    assert_eq!(
        processor.handle_message(&again).await,
        Handled::Completed {
            instance: second.clone(),
            result: ActionResult::Abandon,
            defaulted: false
        }
    );
    Ok(())
}

/// Nothing is lost on an AWS fault: a failed completion leaves the message; a failed hook
/// describe caches nothing and guesses no default; a message being handled stays invisible to
/// a second host for as long as it takes.
async fn lifecycle_messages_survive_aws_faults() -> anyhow::Result<()> {
    let w = world().await?;
    // The hook's real default is CONTINUE: a cached guess (ABANDON) would show.
    w.autoscaling
        .put_lifecycle_hook()
        .auto_scaling_group_name("web")
        .lifecycle_hook_name("launch")
        .lifecycle_transition(LAUNCHING)
        .default_result("CONTINUE")
        .heartbeat_timeout(300)
        .send()
        .await?;
    let handler_path = build_rust_guest("guests/lifecycle-join")?;
    let handler = test_sandbox()?.load_file(&handler_path).await?.component;
    let processor = LifecycleProcessor::new(w.spec(&handler_path), handler.clone(), None)
        .await
        .map_err(anyhow::Error::msg)?;
    let (_, instances) = w.instances().await?;

    // CompleteLifecycleAction answers 500: not completed, so not final (the loop keeps the
    // message); the next delivery completes it.
    let launch = lifecycle_message("web", "launch", LAUNCHING, &instances[0], "token-f", "{}");
    // Three times: the SDK's standard retry makes three attempts.
    for _ in 0..3 {
        w.proxy
            .fail_next("CompleteLifecycleAction", "InternalFailure");
    }
    let first = processor.handle_message(&launch).await;
    assert!(
        matches!(&first, Handled::Retry(why) if why.contains("CompleteLifecycleAction")),
        "{first:?}"
    );
    assert!(!first.is_final());
    assert!(matches!(
        processor.handle_message(&launch).await,
        Handled::Completed {
            result: ActionResult::Continue,
            ..
        }
    ));

    // DescribeLifecycleHooks answers 500 while the handler traps: no default is guessed. (A
    // fresh processor: the first one knows the hook already.)
    let processor = LifecycleProcessor::new(w.spec(&handler_path), handler.clone(), None)
        .await
        .map_err(anyhow::Error::msg)?;
    let trapping = lifecycle_message(
        "web",
        "launch",
        LAUNCHING,
        &instances[1],
        "token-d",
        r#"{"fail":"trap"}"#,
    );
    for _ in 0..3 {
        w.proxy
            .fail_next("DescribeLifecycleHooks", "InternalFailure");
    }
    let guessed = processor.handle_message(&trapping).await;
    assert!(
        matches!(&guessed, Handled::Retry(why) if why.contains("unknown")),
        "{guessed:?}"
    );
    // Asked again, the hook's real default applies: nothing was cached from the failure.
    assert_eq!(
        processor.handle_message(&trapping).await,
        Handled::Completed {
            instance: instances[1].clone(),
            result: ActionResult::Continue,
            defaulted: true
        }
    );
    assert!(w.proxy.faulted().len() >= 2, "{:?}", w.proxy.faulted());

    // Two hosts on one queue; completion takes 5 s against a 2 s visibility timeout. The
    // handling host keeps the message invisible, so the other never runs the action.
    w.proxy.hold_complete(Some(Duration::from_secs(5)));
    let second = LifecycleProcessor::new(w.spec(&handler_path), handler, None)
        .await
        .map_err(anyhow::Error::msg)?;
    let processors = Arc::new([processor, second]);
    let stop = tokio_util::sync::CancellationToken::new();
    let mut running = Vec::new();
    for i in 0..2 {
        let (processors, stop) = (processors.clone(), stop.clone());
        running.push(tokio::spawn(async move { processors[i].run(stop).await }));
    }
    w.send(&lifecycle_message(
        "web",
        "launch",
        LAUNCHING,
        &instances[0],
        "token-v",
        "{}",
    ))
    .await?;
    wait_for(
        "the slow action handled and deleted",
        Duration::from_secs(40),
        || async {
            w.queued().await.unwrap_or(1) == 0
                && w.proxy.completions().iter().any(|(t, _)| t == "token-v")
        },
    )
    .await?;
    stop.cancel();
    for task in running {
        task.await?;
    }
    let attempts = w
        .proxy
        .recorded()
        .iter()
        .filter(|(action, p)| {
            action == "CompleteLifecycleAction"
                && p.get("LifecycleActionToken").map(String::as_str) == Some("token-v")
        })
        .count();
    assert_eq!(attempts, 1, "a second host ran the action being handled");
    Ok(())
}

fn wasmscaler() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wasmscaler"));
    command.stdout(Stdio::null()).stderr(Stdio::null());
    command
}

/// A host killed while completing an action: the message comes back and the next host
/// finishes the job from the persisted state.
async fn a_host_killed_mid_action_leaves_the_message_for_the_next() -> anyhow::Result<()> {
    let w = world().await?;
    let handler = build_rust_guest("guests/lifecycle-join")?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("wasmscaler.yaml");
    let spec = serde_json::to_value(w.spec(&handler))?;
    std::fs::write(
        &config,
        serde_yaml::to_string(&serde_json::json!({"lifecycle": [spec]}))?,
    )?;
    let (_, instances) = w.instances().await?;
    w.proxy.hold_complete(Some(Duration::from_secs(30)));
    w.send(&lifecycle_message(
        "web",
        "launch",
        LAUNCHING,
        &instances[0],
        "token-k",
        "{}",
    ))
    .await?;

    let mut first = wasmscaler()
        .args(["run", "--config"])
        .arg(&config)
        .spawn()?;
    wait_for(
        "the first host to complete",
        Duration::from_secs(60),
        || async { !w.proxy.completions().is_empty() },
    )
    .await?;
    first.kill()?;
    first.wait()?;
    w.proxy.hold_complete(None);
    let tag = state_tag(wasmscaler::contract::lifecycle_model::Transition::Launch);
    assert_eq!(
        w.tag(&instances[0], &tag).await?.as_deref(),
        Some("registered")
    );
    assert_eq!(w.queued().await?, 1, "the message must survive the crash");

    let mut second = wasmscaler()
        .args(["run", "--config"])
        .arg(&config)
        .spawn()?;
    let done = wait_for(
        "the second host to finish",
        Duration::from_secs(60),
        || async { w.queued().await.unwrap_or(1) == 0 },
    )
    .await;
    second.kill()?;
    second.wait()?;
    done?;
    let completions = w.proxy.completions();
    assert!(completions.len() >= 2, "{completions:?}");
    assert!(
        completions
            .iter()
            .all(|(t, r)| t == "token-k" && r == "CONTINUE"),
        "{completions:?}"
    );
    Ok(())
}

/// A fake instance metadata service (IMDSv2) for the agent.
async fn imds(instance: &str) -> anyhow::Result<String> {
    use axum::routing::{get, put};
    let id = instance.to_owned();
    let app = axum::Router::new()
        .route("/latest/api/token", put(|| async { "imds-token" }))
        .route(
            "/latest/meta-data/instance-id",
            get(move || {
                let id = id.clone();
                async move { id }
            }),
        )
        .route("/latest/meta-data/local-ipv4", get(|| async { "10.1.2.3" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(url)
}

/// `wasmscaler agent` on a new instance: JOIN fired once, enrolment recorded.
async fn the_agent_joins_once() -> anyhow::Result<()> {
    let w = world().await?;
    let (_, instances) = w.instances().await?;
    let instance = instances[0].clone();
    let metadata = imds(&instance).await?;
    let handler = build_rust_guest("guests/lifecycle-join")?;
    let proxy = w.proxy.url.clone();
    let agent = move || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_wasmscaler"));
        command
            .args(["agent", "--no-cache", "--lifecycle"])
            .arg(&handler)
            .args([
                "--metadata-url",
                &metadata,
                "--endpoint-url",
                &proxy,
                "--region",
                "us-east-1",
            ])
            // The metadata service (on 127.0.0.2) must be reached directly, never through a
            // proxy: this one accepts nothing. The AWS APIs (on 127.0.0.1) bypass it.
            .env("HTTP_PROXY", "http://127.0.0.1:9")
            .env("http_proxy", "http://127.0.0.1:9")
            .env("NO_PROXY", "127.0.0.1")
            .env("no_proxy", "127.0.0.1");
        command.output()
    };
    let first = tokio::task::spawn_blocking(agent.clone()).await??;
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&first.stdout)?;
    assert_eq!(report["status"], "enrolled");
    let join = state_tag(wasmscaler::contract::lifecycle_model::Transition::Join);
    assert_eq!(w.tag(&instance, &join).await?.as_deref(), Some("ready"));
    assert_eq!(
        w.tag(&instance, "wasmscaler.dev/enrolled")
            .await?
            .as_deref(),
        Some("true")
    );
    // The address EC2 reports wins over the metadata service's; either way it is recorded.
    assert!(
        w.tag(&instance, "wasmscaler.dev/private-address")
            .await?
            .is_some()
    );

    let second = tokio::task::spawn_blocking(agent).await??;
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&second.stdout)?;
    assert_eq!(report["status"], "already-enrolled", "JOIN fired twice");
    Ok(())
}

/// The example config (capacity guest on an ASG, lifecycle-join on its hook) is valid.
async fn the_example_config_is_valid() -> anyhow::Result<()> {
    let path = support::repo_root().join("guests/demo/aws-asg.yaml");
    let config = wasmscaler::config::ConfigFile::load(&path)?;
    assert_eq!(config.autoscalers.len(), 1);
    assert!(matches!(
        config.autoscalers[0].target,
        TargetSpec::AwsAsg(_)
    ));
    assert_eq!(config.lifecycle.len(), 1);
    // `validate` loads both guests and checks their worlds and grants.
    build_rust_guest("guests/capacity")?;
    build_rust_guest("guests/lifecycle-join")?;
    let out = Command::new(env!("CARGO_BIN_EXE_wasmscaler"))
        .arg("validate")
        .arg(&path)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1 autoscaler(s), 1 lifecycle handler(s) valid"),
        "{stdout}"
    );
    Ok(())
}

fn main() {
    // SAFETY: no other thread exists yet; the standard credential chain reads these.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::set_var("AWS_REGION", "us-east-1");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    }
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    type Scenario =
        fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>>>>;
    let scenarios: [(&str, Scenario); 6] = [
        ("the_example_config_is_valid", || {
            Box::pin(the_example_config_is_valid())
        }),
        ("the_guest_scales_the_group_out_and_in", || {
            Box::pin(the_guest_scales_the_group_out_and_in())
        }),
        ("lifecycle_events_are_stepped_and_completed_once", || {
            Box::pin(lifecycle_events_are_stepped_and_completed_once())
        }),
        ("lifecycle_messages_survive_aws_faults", || {
            Box::pin(lifecycle_messages_survive_aws_faults())
        }),
        (
            "a_host_killed_mid_action_leaves_the_message_for_the_next",
            || Box::pin(a_host_killed_mid_action_leaves_the_message_for_the_next()),
        ),
        ("the_agent_joins_once", || Box::pin(the_agent_joins_once())),
    ];
    let mut failed = 0;
    for (name, scenario) in scenarios {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        match runtime.block_on(scenario()) {
            Ok(()) => println!("test {name} ... ok"),
            Err(e) => {
                failed += 1;
                println!("test {name} ... FAILED\n{e:?}");
            }
        }
    }
    if failed > 0 {
        std::process::exit(1);
    }
}
