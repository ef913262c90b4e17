//! `wasmscaler policy push|list|delete`: manage uploaded policies on a running host.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub(super) struct PolicyArgs {
    /// The host's REST API.
    #[arg(long, default_value = "http://127.0.0.1:8080", global = true)]
    server: String,
    /// File holding the bearer token (or set WASMSCALER_API_TOKEN).
    #[arg(long, value_name = "FILE", global = true)]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Upload FILE as policy NAME; the host validates it before accepting it.
    Push {
        /// Policy name (lowercase letters, digits, '-').
        name: String,
        /// The component (.wasm).
        file: PathBuf,
    },
    /// List the uploaded policies.
    List,
    /// Delete policy NAME (refused while an autoscaler uses it).
    Delete {
        /// Policy name.
        name: String,
    },
}

fn token(args: &PolicyArgs) -> anyhow::Result<Option<String>> {
    match &args.token_file {
        Some(path) => Ok(Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the API token from {}", path.display()))?
                .trim()
                .to_owned(),
        )),
        None => Ok(std::env::var("WASMSCALER_API_TOKEN").ok()),
    }
}

/// The server's JSON error message, or the status line.
async fn fail(response: reqwest::Response) -> anyhow::Error {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or(text);
    anyhow::anyhow!("{status}: {message}")
}

pub(super) async fn run(args: PolicyArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let base = args.server.trim_end_matches('/');
    let auth = |request: reqwest::RequestBuilder| -> anyhow::Result<reqwest::RequestBuilder> {
        Ok(match token(&args)? {
            Some(token) => request.bearer_auth(token),
            None => request,
        })
    };
    let response = match &args.command {
        PolicyCommand::Push { name, file } => {
            let bytes =
                std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            auth(
                client
                    .put(format!("{base}/api/v1/policies/{name}"))
                    .body(bytes),
            )?
        }
        PolicyCommand::List => client.get(format!("{base}/api/v1/policies")),
        PolicyCommand::Delete { name } => {
            auth(client.delete(format!("{base}/api/v1/policies/{name}")))?
        }
    }
    .send()
    .await
    .with_context(|| format!("contacting {base}"))?;
    if !response.status().is_success() {
        return Err(fail(response).await);
    }
    match &args.command {
        PolicyCommand::Delete { name } => println!("deleted {name}"),
        _ => {
            let body: serde_json::Value = response.json().await.context("reading the answer")?;
            println!("{}", serde_json::to_string_pretty(&body)?);
        }
    }
    Ok(())
}
