//! `wasmscaler agent`: runs on a new instance at boot (like Joule's snap), fires the
//! lifecycle handler's JOIN once, and records the enrolment as instance tags.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Args;

use crate::contract::lifecycle_model::{ActionResult, LifecycleEvent, Transition};
use crate::hooks::{Stepped, Stepper, state_tag};
use crate::sandbox::{CallEnv, Capabilities, Limits};
use crate::targets::aws::AwsEndpoint;
use crate::targets::aws::{AwsLifecycleApi, LifecycleApi};

/// The tag marking an instance whose JOIN completed.
pub(crate) const ENROLLED_TAG: &str = "wasmscaler.dev/enrolled";
/// The tag recording the instance's private address, for the host's view of its replicas.
pub(crate) const ADDRESS_TAG: &str = "wasmscaler.dev/private-address";

#[derive(Debug, Args)]
pub(super) struct AgentArgs {
    /// The lifecycle handler component (world lifecycle-handler).
    #[arg(long, value_name = "WASM")]
    lifecycle: PathBuf,
    /// This instance's id; without it, asked from the instance metadata service.
    #[arg(long)]
    instance_id: Option<String>,
    /// The instance metadata service (IMDSv2).
    #[arg(long, default_value = "http://169.254.169.254")]
    metadata_url: String,
    /// AWS region (default: the standard chain's).
    #[arg(long, env = "AWS_REGION")]
    region: Option<String>,
    /// Another endpoint for the AWS APIs.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    endpoint_url: Option<String>,
    /// Steps the JOIN may take.
    #[arg(long, default_value_t = 20)]
    max_steps: u32,
    /// Grant the handler HTTP GET to URLs matching this pattern (repeatable), e.g. to fetch
    /// a join token: `https://control-plane.internal/join-token`.
    #[arg(long = "allow-http", value_name = "PATTERN")]
    allow_http: Vec<String>,
    /// Grant the handler the log capability.
    #[arg(long)]
    allow_log: bool,
    /// After enrolling, keep running until SIGTERM (as a service) instead of exiting.
    #[arg(long)]
    keep_serving: bool,
    #[command(flatten)]
    cache: super::CacheArgs,
}

impl AgentArgs {
    /// The capabilities the flags grant; none by default.
    fn capabilities(&self) -> anyhow::Result<Capabilities> {
        let http = if self.allow_http.is_empty() {
            None
        } else {
            // Through serde, so the grant's own defaults (timeout, body size) apply.
            Some(serde_json::from_value(
                serde_json::json!({ "allow": self.allow_http }),
            )?)
        };
        Ok(Capabilities {
            log: self.allow_log,
            http,
            ..Capabilities::default()
        })
    }
}

/// What the instance metadata service knows.
struct Metadata {
    instance_id: String,
    private_address: Option<String>,
}

async fn metadata(base: &str) -> anyhow::Result<Metadata> {
    // IMDS answers only on the instance's own link: through a proxy (HTTP_PROXY is often set
    // for the AWS APIs) it would be the proxy's metadata, or a leak of the token request.
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(2))
        .no_proxy()
        .build()?;
    let token = http
        .put(format!("{base}/latest/api/token"))
        .header("X-aws-ec2-metadata-token-ttl-seconds", "60")
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("instance metadata at {base} (IMDSv2 token)"))?
        .text()
        .await?;
    let get = |path: &'static str| {
        let (http, token) = (http.clone(), token.clone());
        let url = format!("{base}/latest/meta-data/{path}");
        async move {
            http.get(&url)
                .header("X-aws-ec2-metadata-token", token)
                .send()
                .await
                .and_then(|r| r.error_for_status())?
                .text()
                .await
        }
    };
    Ok(Metadata {
        instance_id: get("instance-id")
            .await
            .context("instance metadata: instance-id")?,
        private_address: get("local-ipv4").await.ok(),
    })
}

pub(super) async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let sandbox = args.cache.sandbox()?;
    let handler = sandbox
        .load_file(&args.lifecycle)
        .await
        .with_context(|| format!("loading {}", args.lifecycle.display()))?
        .component;
    if handler.lifecycle.is_none() {
        bail!(
            "{} does not export {} (world lifecycle-handler)",
            args.lifecycle.display(),
            crate::contract::interface_name("lifecycle")
        );
    }
    let (instance_id, private_address) = match &args.instance_id {
        Some(id) => (id.clone(), None),
        None => {
            let found = metadata(&args.metadata_url).await?;
            (found.instance_id, found.private_address)
        }
    };
    let endpoint = AwsEndpoint {
        region: args.region.clone(),
        endpoint_url: args.endpoint_url.clone(),
    };
    let config = endpoint.sdk_config().await;
    let aws: std::sync::Arc<dyn LifecycleApi> =
        std::sync::Arc::new(AwsLifecycleApi::new(&config).map_err(anyhow::Error::msg)?);
    let stepper = Stepper {
        handler: handler.clone(),
        env: CallEnv {
            limits: Limits::default(),
            capabilities: args.capabilities()?,
            ..CallEnv::default()
        },
        aws: aws.clone(),
        max_steps: args.max_steps,
    };
    let mut instance = stepper.instance(&instance_id, "").await;
    if instance.private_address.is_none() {
        instance.private_address = private_address.clone();
    }
    let report = |status: &str, state: Option<&String>| {
        serde_json::json!({"instance": instance_id, "status": status, "state": state}).to_string()
    };
    if instance.tags.get(ENROLLED_TAG).map(String::as_str) == Some("true") {
        println!(
            "{}",
            report(
                "already-enrolled",
                instance.tags.get(&state_tag(Transition::Join))
            )
        );
    } else {
        let event = LifecycleEvent {
            transition: Transition::Join,
            state: instance.tags.get(&state_tag(Transition::Join)).cloned(),
            instance: instance.clone(),
            hook: None,
            step: 0,
        };
        match stepper.run(event, || async {}).await {
            Stepped::Finished(ActionResult::Continue) => {
                let mut tags = vec![(ENROLLED_TAG, "true")];
                if let Some(address) = &instance.private_address {
                    tags.push((ADDRESS_TAG, address.as_str()));
                }
                aws.tag_instance(&instance_id, &tags)
                    .await
                    .map_err(anyhow::Error::msg)
                    .context("recording the enrolment")?;
                tracing::info!(instance = %instance_id, "joined");
                println!("{}", report("enrolled", None));
            }
            Stepped::Finished(ActionResult::Abandon) => {
                bail!("{instance_id}: the handler abandoned the join")
            }
            // Not enrolled: the next boot (or run) tries again from the persisted state.
            Stepped::Failed(why) => bail!("{instance_id}: join failed: {why}"),
        }
    }
    if args.keep_serving {
        let stop = tokio_util::sync::CancellationToken::new();
        super::run::stop_on_signal(stop.clone(), None).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::{Cli, Command};

    fn capabilities(flags: &[&str]) -> crate::sandbox::Capabilities {
        let mut argv = vec!["wasmscaler", "agent", "--lifecycle", "join.wasm"];
        argv.extend_from_slice(flags);
        let Ok(Cli {
            command: Command::Agent(args),
            ..
        }) = Cli::try_parse_from(argv)
        else {
            panic!("agent flags did not parse");
        };
        args.capabilities().expect("capabilities")
    }

    #[test]
    fn the_agent_grants_only_what_its_flags_say() {
        let none = capabilities(&[]);
        assert!(!none.log && none.http.is_none());
        let granted = capabilities(&["--allow-log", "--allow-http", "https://cp/join-token"]);
        assert!(granted.log);
        let http = granted.http.expect("http granted");
        assert_eq!(http.allow, ["https://cp/join-token"]);
        assert!(http.timeout_ms > 0 && http.max_body_bytes > 0);
        assert!(!granted.kubernetes_metrics && granted.state.is_none());
    }
}
