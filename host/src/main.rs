use std::process::ExitCode;

use clap::Parser;

// Every guest call allocates and frees many small objects (stores, WASI contexts, lowered
// values); glibc malloc was ~11 % of host CPU in the fleet benchmark.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // A compile worker (a child this binary starts to compile one component under limits)
    // must not start a runtime or parse the command line first.
    if let Some(code) = wasmscaler::sandbox::compile::compile_worker_main() {
        return code;
    }
    let cli = wasmscaler::cli::Cli::parse();
    wasmscaler::telemetry::init(cli.log_json, cli.default_log_filter());
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(wasmscaler::cli::run(cli)),
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            ExitCode::FAILURE
        }
    }
}
