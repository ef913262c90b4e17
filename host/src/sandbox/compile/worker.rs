//! The compile worker: the child side of bounded compilation, and the parent's reading of
//! how it ended.
//!
//! Protocol: `wasmscaler __compile-worker SETTINGS_JSON`, the component's bytes on stdin, the
//! serialized artifact on stdout, a one-line reason on stderr when it fails. Exit codes:
//! 0 compiled, 3 invalid component, 4 out of memory, 2 bad invocation.

use std::io::{Read, Write};
use std::process::{ExitCode, ExitStatus};

use serde::{Deserialize, Serialize};

use super::{CompileConfig, CompileLimit};
use crate::sandbox::SandboxError;

/// The first argument that turns the binary into a compile worker.
pub const COMPILE_WORKER_ARG: &str = "__compile-worker";

const EXIT_INVALID: u8 = 3;
const EXIT_OUT_OF_MEMORY: u8 = 4;
const EXIT_USAGE: u8 = 2;

/// What the worker is told: its budgets and the largest input it accepts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WorkerSettings {
    pub(crate) max_memory_bytes: u64,
    pub(crate) timeout_ms: u64,
    pub(crate) max_component_bytes: u64,
}

impl WorkerSettings {
    pub(crate) fn new(compile: &CompileConfig, max_component_bytes: u64) -> Self {
        WorkerSettings {
            max_memory_bytes: compile.max_memory_bytes,
            timeout_ms: compile.timeout_ms,
            max_component_bytes,
        }
    }
}

/// Runs the compile worker when the process was started as one; call it first thing in
/// `main`, before any runtime starts. Returns `None` in a normal start.
pub fn compile_worker_main() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(COMPILE_WORKER_ARG.as_ref()) {
        return None;
    }
    let settings = args
        .next()
        .and_then(|s| serde_json::from_str::<WorkerSettings>(&s.to_string_lossy()).ok());
    let Some(settings) = settings else {
        eprintln!("usage: wasmscaler {COMPILE_WORKER_ARG} SETTINGS_JSON < component.wasm");
        return Some(ExitCode::from(EXIT_USAGE));
    };
    Some(match work(&settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("{}", message.replace('\n', " "));
            ExitCode::from(code)
        }
    })
}

fn work(settings: &WorkerSettings) -> Result<(), (u8, String)> {
    confine(settings).map_err(|e| (EXIT_USAGE, format!("cannot set limits: {e}")))?;
    let mut bytes = Vec::new();
    std::io::stdin()
        .take(settings.max_component_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| (EXIT_USAGE, format!("reading the component: {e}")))?;
    let engine = wasmtime::Engine::new(&crate::sandbox::wasmtime_config())
        .map_err(|e| (EXIT_USAGE, format!("engine: {e:#}")))?;
    let component = wasmtime::component::Component::new(&engine, &bytes).map_err(|e| {
        let message = format!("{e:#}");
        if is_out_of_memory(&message) {
            (EXIT_OUT_OF_MEMORY, message)
        } else {
            (EXIT_INVALID, message)
        }
    })?;
    let artifact = component
        .serialize()
        .map_err(|e| (EXIT_OUT_OF_MEMORY, format!("serializing: {e:#}")))?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&artifact)
        .and_then(|()| stdout.flush())
        .map_err(|e| (EXIT_USAGE, format!("writing the artifact: {e}")))
}

/// Limits this process before it reads a single untrusted byte.
fn confine(settings: &WorkerSettings) -> nix::Result<()> {
    use nix::sys::resource::{Resource, setrlimit};
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
    setrlimit(Resource::RLIMIT_CORE, 0, 0)?;
    setrlimit(
        Resource::RLIMIT_AS,
        settings.max_memory_bytes,
        settings.max_memory_bytes,
    )?;
    // Parallel compilation spends CPU time on every core at once.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let cpu_seconds = settings
        .timeout_ms
        .div_ceil(1000)
        .saturating_mul(cores)
        .max(1);
    setrlimit(
        Resource::RLIMIT_CPU,
        cpu_seconds,
        cpu_seconds.saturating_add(1),
    )
}

fn is_out_of_memory(report: &str) -> bool {
    let report = report.to_ascii_lowercase();
    // Thread creation fails with EAGAIN when the address space is exhausted.
    [
        "memory allocation of",
        "cannot allocate memory",
        "out of memory",
        "resource temporarily unavailable",
    ]
    .iter()
    .any(|needle| report.contains(needle))
}

/// Turns how the worker ended into the compile's result.
pub(crate) fn classify(
    status: ExitStatus,
    report: &str,
    config: &CompileConfig,
    elapsed: std::time::Duration,
) -> Result<(), SandboxError> {
    use std::os::unix::process::ExitStatusExt;
    if status.success() {
        return Ok(());
    }
    let memory = || {
        SandboxError::from(CompileLimit::Memory {
            limit: config.max_memory_bytes,
        })
    };
    let time = || {
        SandboxError::from(CompileLimit::Time {
            limit_ms: config.timeout_ms,
        })
    };
    match (status.code(), status.signal()) {
        (Some(code), _) if code == i32::from(EXIT_INVALID) => Err(SandboxError::InvalidComponent {
            reason: report.to_owned(),
        }),
        (Some(code), _) if code == i32::from(EXIT_OUT_OF_MEMORY) => Err(memory()),
        _ if is_out_of_memory(report) => Err(memory()),
        (_, Some(signal)) if signal == nix::libc::SIGXCPU => Err(time()),
        // Killed before its deadline: the kernel's OOM killer (a container's memory limit
        // smaller than the budget); at or past it, the CPU limit's hard stop.
        (_, Some(signal)) if signal == nix::libc::SIGKILL => {
            if elapsed < config.timeout() {
                Err(memory())
            } else {
                Err(time())
            }
        }
        (_, Some(signal)) if signal == nix::libc::SIGSEGV && report.contains("overflowed") => {
            Err(SandboxError::InvalidComponent {
                reason: "the compiler overflowed its stack on this component".into(),
            })
        }
        _ => Err(SandboxError::Internal(format!(
            "the compile worker failed ({status}): {report}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn reads_how_the_worker_ended() {
        let config = CompileConfig::default();
        let exited = |code: i32| ExitStatus::from_raw(code << 8);
        let signalled = ExitStatus::from_raw;
        let soon = std::time::Duration::from_millis(10);
        let late = config.timeout();
        assert!(classify(exited(0), "", &config, soon).is_ok());
        let kind = |r: Result<(), SandboxError>| r.map_err(|e| e.to_string()).unwrap_err();
        assert!(kind(classify(exited(3), "bad magic", &config, soon)).contains("bad magic"));
        assert!(kind(classify(exited(4), "", &config, soon)).contains("maxMemoryBytes"));
        let abort = signalled(nix::libc::SIGABRT);
        let report = "memory allocation of 1024 bytes failed";
        assert!(kind(classify(abort, report, &config, soon)).contains("maxMemoryBytes"));
        let xcpu = signalled(nix::libc::SIGXCPU);
        assert!(kind(classify(xcpu, "", &config, soon)).contains("timeoutMs"));
        let killed = signalled(nix::libc::SIGKILL);
        assert!(kind(classify(killed, "", &config, soon)).contains("maxMemoryBytes"));
        assert!(kind(classify(killed, "", &config, late)).contains("timeoutMs"));
        assert!(kind(classify(exited(101), "panicked", &config, soon)).contains("internal"));
    }
}
