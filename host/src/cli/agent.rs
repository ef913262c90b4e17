//! `wasmscaler agent`: runs on a new instance at boot (like Joule's snap), fires the
//! lifecycle handler's JOIN once, and records the enrolment on the instance (EC2 tags, or Nova
//! metadata on OpenStack).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};

use crate::hooks::{Joined, Stepper, join};
use crate::sandbox::{CallEnv, Capabilities, Limits};
use crate::targets::lifecycle::InstanceStore;

/// The cloud the instance runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Provider {
    /// EC2: the instance id from IMDSv2, enrolment as EC2 tags.
    Aws,
    /// OpenStack: the instance id from the config drive or the metadata service, enrolment
    /// as Nova metadata; credentials from `--cloud` or the `OS_*` variables.
    Openstack,
}

#[derive(Debug, Args)]
pub(super) struct AgentArgs {
    /// The lifecycle handler component (world lifecycle-handler).
    #[arg(long, value_name = "WASM")]
    lifecycle: PathBuf,
    /// The cloud the instance runs on.
    #[arg(long, value_enum, default_value_t = Provider::Aws)]
    provider: Provider,
    /// This instance's id; without it, read from the config drive (OpenStack) or asked from
    /// the instance metadata service.
    #[arg(long)]
    instance_id: Option<String>,
    /// The instance metadata service (IMDSv2 on AWS, `/openstack/latest/meta_data.json` on
    /// OpenStack).
    #[arg(long, default_value = "http://169.254.169.254")]
    metadata_url: String,
    /// OpenStack: where the config drive is mounted (read before the metadata service).
    #[arg(long, default_value = "/mnt/config")]
    config_drive: PathBuf,
    /// OpenStack: the `clouds.yaml` entry to authenticate with (default: the `OS_*`
    /// variables).
    #[arg(long)]
    cloud: Option<String>,
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
    let (instance_id, private_address, store) = match args.provider {
        Provider::Aws => aws_instance(&args).await?,
        Provider::Openstack => openstack_instance(&args).await?,
    };
    let stepper = Stepper {
        handler: handler.clone(),
        env: CallEnv {
            limits: Limits::default(),
            capabilities: args.capabilities()?,
            ..CallEnv::default()
        },
        store,
        max_steps: args.max_steps,
    };
    let report = |status: &str, state: Option<&String>| {
        serde_json::json!({"instance": instance_id, "status": status, "state": state}).to_string()
    };
    match join(&stepper, &instance_id, private_address).await? {
        Joined::AlreadyEnrolled { state } => {
            println!("{}", report("already-enrolled", state.as_ref()));
        }
        Joined::Enrolled => println!("{}", report("enrolled", None)),
    }
    if args.keep_serving {
        let stop = tokio_util::sync::CancellationToken::new();
        super::run::stop_on_signal(stop.clone(), None).await;
    }
    Ok(())
}

/// The instance's id and address, and where its tags go.
type Found = (String, Option<String>, Arc<dyn InstanceStore>);

#[cfg(feature = "aws")]
async fn aws_instance(args: &AgentArgs) -> anyhow::Result<Found> {
    use crate::targets::aws::{AwsEndpoint, AwsLifecycleApi};
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
    let store = Arc::new(AwsLifecycleApi::new(&config).map_err(anyhow::Error::msg)?);
    Ok((instance_id, private_address, store))
}

#[cfg(not(feature = "aws"))]
async fn aws_instance(_: &AgentArgs) -> anyhow::Result<Found> {
    bail!("--provider aws: this wasmscaler was built without the `aws` feature")
}

async fn openstack_instance(args: &AgentArgs) -> anyhow::Result<Found> {
    use crate::targets::openstack::{
        Credentials, InstanceIdSources, NovaInstances, api::Api, own_instance_id,
    };
    let instance_id = match &args.instance_id {
        Some(id) => id.clone(),
        None => own_instance_id(InstanceIdSources {
            config_drive: &args.config_drive,
            metadata_url: &args.metadata_url,
        })
        .await
        .context("this instance's id (or give --instance-id)")?,
    };
    let credentials = match &args.cloud {
        Some(cloud) => Credentials::from_clouds_yaml(cloud)?,
        None => Credentials::from_environment()?,
    };
    // The address comes from Nova's view of the server.
    let store = Arc::new(NovaInstances::new(
        Arc::new(Api::new(credentials)?),
        None,
        4,
    ));
    Ok((instance_id, None, store))
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
    fn the_agent_takes_an_openstack_instance() {
        let argv = [
            "wasmscaler",
            "agent",
            "--lifecycle",
            "join.wasm",
            "--provider",
            "openstack",
            "--cloud",
            "mycloud",
            "--config-drive",
            "/media/config-2",
        ];
        let Ok(Cli {
            command: Command::Agent(args),
            ..
        }) = Cli::try_parse_from(argv)
        else {
            panic!("agent flags did not parse");
        };
        assert_eq!(args.provider, super::Provider::Openstack);
        assert_eq!(args.cloud.as_deref(), Some("mycloud"));
        assert_eq!(args.config_drive, std::path::Path::new("/media/config-2"));
        assert!(args.instance_id.is_none());
        let wrong = Cli::try_parse_from([
            "wasmscaler",
            "agent",
            "--lifecycle",
            "j.wasm",
            "--provider",
            "gcp",
        ]);
        assert!(wrong.is_err_and(|e| e.to_string().contains("aws, openstack")));
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
