use std::process::ExitCode;

use clap::Parser;

// Every guest call allocates and frees many small objects (stores, WASI contexts, lowered
// values); glibc malloc was ~11 % of host CPU in the fleet benchmark.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = wasmscaler::cli::Cli::parse();
    wasmscaler::telemetry::init(cli.log_json);
    wasmscaler::cli::run(cli).await
}
