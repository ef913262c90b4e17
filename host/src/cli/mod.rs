//! The `wasmscaler` command line.

#[cfg(feature = "aws")]
mod agent;
#[cfg(feature = "kubernetes")]
mod controller;
mod eval;
mod inspect;
mod new;
mod policy;
mod reference;
mod run;
mod simulate;

pub use reference::reference;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::sandbox::{CompileConfig, Sandbox, SandboxConfig};

/// wasmscaler: autoscaling with your own logic, compiled to sandboxed WebAssembly.
///
/// Policies are WebAssembly components implementing the `wasmscaler:policy` WIT contract
/// (see wit/policy.wit). Start with `wasmscaler eval` to try a policy on a context file.
#[derive(Debug, Parser)]
#[command(name = "wasmscaler", version, propagate_version = true)]
pub struct Cli {
    /// Log as JSON lines instead of text (logs go to stderr; filter with RUST_LOG).
    #[arg(long, global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a policy once on a context file and print its samples and decision as JSON.
    ///
    /// Example: wasmscaler eval --policy cpu_target.wasm --context ctx.json
    Eval(Box<eval::EvalArgs>),
    /// Show which contract world a component implements, what it imports, its size and sha256.
    Inspect(inspect::InspectArgs),
    /// Run the autoscalers of a config file until Ctrl-C, SIGTERM or --duration.
    ///
    /// Example: wasmscaler run --config guests/demo/wasmscaler.yaml --duration 90s
    Run(run::RunArgs),
    /// Check a config file and load every policy it names, without starting anything.
    Validate(run::ValidateArgs),
    /// Replay a load trace through the autoscalers of config files in virtual time and
    /// compare them: under-provisioned minutes, replica-hours, churn, charts.
    ///
    /// Example: wasmscaler simulate --config a.yaml --compare b.yaml --trace load.csv --out report/
    Simulate(Box<simulate::SimulateArgs>),
    /// Upload, list or delete policies on a running host (`run --listen`).
    Policy(policy::PolicyArgs),
    /// Run in a cluster: reconcile WasmAutoscaler resources, with leader election.
    ///
    /// Example: wasmscaler controller --namespace apps --listen 0.0.0.0:8080
    #[cfg(feature = "kubernetes")]
    Controller(Box<controller::ControllerArgs>),
    /// Print the WasmAutoscaler CustomResourceDefinition (YAML) generated from the code.
    #[cfg(feature = "kubernetes")]
    Crd,
    /// Print the JSON schema of the config file, for editors (e.g. yaml-language-server's
    /// `# yaml-language-server: $schema=...`).
    ConfigSchema,
    /// Create a policy project that builds outside this repository: its source, the contract
    /// vendored, a build script, a sample context and a test running it with `eval`.
    ///
    /// Example: wasmscaler new --lang rust my-policy && bash my-policy/test.sh
    New(new::NewArgs),
    /// Make a component of a core module that carries its component type (a C policy built
    /// with wit-bindgen's bindings), WASI preview 1 adapted onto preview 2: what
    /// `wasm-tools component new --adapt` does, with nothing to install.
    ///
    /// Example: wasmscaler componentize core.wasm --out policy.wasm
    Componentize {
        /// The core module.
        core: PathBuf,
        /// Where to write the component.
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Write the contract (the WIT package `wasmscaler:policy`) into DIR as `policy.wit`,
    /// for building a policy outside this repository; without DIR, print it.
    ///
    /// Example: wasmscaler wit my-policy/wit
    Wit {
        /// The directory to write `policy.wit` into (created if missing).
        dir: Option<PathBuf>,
    },
    /// On a new cloud instance: fire the lifecycle handler's JOIN once and record enrolment.
    ///
    /// Example: wasmscaler agent --lifecycle join.wasm
    #[cfg(feature = "aws")]
    Agent(Box<agent::AgentArgs>),
}

impl Cli {
    /// The log filter when `RUST_LOG` is unset: `simulate` runs thousands of runs a second,
    /// so only warnings; everything else logs its runs.
    pub fn default_log_filter(&self) -> &'static str {
        match self.command {
            Command::Simulate(_) => "warn",
            _ => "info",
        }
    }
}

/// Where compiled components are cached.
#[derive(Debug, Args)]
struct CacheArgs {
    /// Directory of the compiled-component cache [default: $XDG_CACHE_HOME/wasmscaler or
    /// ~/.cache/wasmscaler].
    #[arg(long, env = "WASMSCALER_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Do not read or write the on-disk cache.
    #[arg(long, conflicts_with = "cache_dir")]
    no_cache: bool,
    #[command(flatten)]
    compile: CompileArgs,
}

/// The budgets of compiling a component.
#[derive(Debug, Args)]
struct CompileArgs {
    /// Wall-clock budget of compiling one component, in milliseconds [default: 60000].
    #[arg(long, value_name = "MS")]
    compile_timeout_ms: Option<u64>,
    /// Memory (address space) budget of compiling one component, in MiB [default: 3072];
    /// keep it below the container's memory limit.
    #[arg(long, value_name = "MIB")]
    compile_memory_mib: Option<u64>,
}

impl CompileArgs {
    fn config(&self) -> CompileConfig {
        let mut compile = CompileConfig::default();
        if let Some(ms) = self.compile_timeout_ms {
            compile.timeout_ms = ms;
        }
        if let Some(mib) = self.compile_memory_mib {
            compile.max_memory_bytes = mib.saturating_mul(1 << 20);
        }
        compile
    }
}

impl CacheArgs {
    fn sandbox(&self) -> anyhow::Result<Sandbox> {
        let cache_dir = if self.no_cache {
            None
        } else {
            self.cache_dir.clone().or_else(default_cache_dir)
        };
        let config = SandboxConfig {
            cache_dir,
            compile: self.compile.config(),
            ..SandboxConfig::default()
        };
        Ok(Sandbox::new(config)?)
    }
}

fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .map(|base| base.join("wasmscaler"))
}

/// `wasmscaler config-schema`.
fn config_schema() -> anyhow::Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(&crate::config::schema())?
    );
    Ok(())
}

/// `wasmscaler componentize`.
fn componentize(core: &std::path::Path, out: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    // Bounded before it is read: the size cap of a component applies to its core module too.
    let limit = crate::sandbox::SandboxConfig::default().max_component_bytes;
    let size = std::fs::metadata(core)
        .with_context(|| format!("reading {}", core.display()))?
        .len();
    anyhow::ensure!(
        size <= limit,
        "{}: {size} bytes, over the {limit}-byte limit of a component",
        core.display()
    );
    let bytes = std::fs::read(core).with_context(|| format!("reading {}", core.display()))?;
    let component = crate::sandbox::component_from_core_module(&bytes)
        .with_context(|| core.display().to_string())?;
    std::fs::write(out, component).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// `wasmscaler wit`: the contract this binary serves, as its WIT text.
fn wit(dir: Option<&std::path::Path>) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let Some(dir) = dir else {
        print!("{}", crate::contract::WIT);
        return Ok(());
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("policy.wit");
    std::fs::write(&path, crate::contract::WIT)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("{}", path.display());
    Ok(())
}

/// Runs a parsed command line; errors are printed on one line and give exit code 1.
pub async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Eval(args) => eval::run(*args).await,
        Command::Inspect(args) => inspect::run(args).await,
        Command::Run(args) => run::run(args).await,
        Command::Validate(args) => run::validate(args).await,
        Command::Simulate(args) => simulate::run(*args).await,
        Command::Policy(args) => policy::run(args).await,
        #[cfg(feature = "kubernetes")]
        Command::Controller(args) => controller::run(*args).await,
        #[cfg(feature = "kubernetes")]
        Command::Crd => controller::crd(),
        Command::ConfigSchema => config_schema(),
        Command::Wit { dir } => wit(dir.as_deref()),
        Command::New(args) => new::run(args),
        Command::Componentize { core, out } => componentize(&core, &out),
        #[cfg(feature = "aws")]
        Command::Agent(args) => agent::run(*args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The whole context chain on one line; a guest trap's backtrace stays out.
            // A sandbox error's summary already names its cause, so the chain stops there.
            // A cause whose text its wrapper already carries is not repeated.
            let mut message = String::new();
            for cause in error.chain() {
                let (text, last) = match cause.downcast_ref::<crate::sandbox::SandboxError>() {
                    Some(sandbox) => (sandbox.summary(), true),
                    None => (cause.to_string(), false),
                };
                if !message.contains(&text) {
                    if !message.is_empty() {
                        message.push_str(": ");
                    }
                    message.push_str(&text);
                }
                if last {
                    break;
                }
            }
            let message = crate::redact::redact(&message);
            eprintln!("error: {}", message.replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
