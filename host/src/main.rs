use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = wasmscaler::cli::Cli::parse();
    wasmscaler::telemetry::init(cli.log_json);
    wasmscaler::cli::run(cli).await
}
