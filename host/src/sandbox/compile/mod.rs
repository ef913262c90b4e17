//! Bounded compilation: every component is pre-checked for costly shapes, then compiled in a
//! child process of this same binary under an address-space limit and a deadline.
//!
//! Why a child process: Cranelift's memory and time grow with the shape of the code, and a
//! compile cannot be interrupted or capped from inside the process that runs it. A hostile
//! component could otherwise take the host down (observed: 22 GB for a few hundred KB of
//! nested blocks). The child runs with `RLIMIT_AS` (its whole address space), `RLIMIT_CPU`
//! and `RLIMIT_CORE = 0`, dies with its parent (`PR_SET_PDEATHSIG`), and is killed at the
//! wall-clock deadline. It hands back the serialized artifact, which the host deserializes
//! with the same engine settings. This is the split wasmtime recommends for untrusted code
//! (compile separately, load precompiled), and the one Kubewarden's policy-server approximates
//! with its own pre-compilation step.
//!
//! [`CompileIsolation::InProcess`] skips the child: only the pre-check bounds compilation
//! then. It exists for embedders and tests that have no `wasmscaler` binary to run.

mod precheck;
pub(crate) mod worker;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use super::SandboxError;
pub use precheck::{Shape, measure, precheck};
pub use worker::{COMPILE_WORKER_ARG, compile_worker_main};

/// Where compilation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CompileIsolation {
    /// In a child process under `maxMemoryBytes` and `timeoutMs` (the default).
    Process,
    /// In this process: bounded by the pre-check only. For embedding and tests.
    InProcess,
}

/// Budgets of compiling one component. Measured on this project's largest guests, on the
/// 2-core CI machine: the JavaScript component (12 MB, StarlingMonkey) compiles in ~9 s with a
/// peak of ~0.9 GiB; Python (18 MB) in ~7 s and ~0.8 GiB; Rust guests in ~0.1 s and ~60 MiB.
/// The deepest block nesting in any of them is 364, the most locals 7,520, the largest body
/// 1.3 MB, and the most function bodies 22,137. The defaults leave each at least a 3x margin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CompileConfig {
    /// Where compilation runs.
    pub isolation: CompileIsolation,
    /// Address space of the compiling process (`RLIMIT_AS`), in bytes. Bounds its memory.
    pub max_memory_bytes: u64,
    /// Wall-clock budget of one compilation, in milliseconds. The child's CPU time is limited
    /// to this times the number of cores (it compiles functions in parallel).
    pub timeout_ms: u64,
    /// Compilations that may run at the same time; more wait their turn.
    pub max_concurrent: u32,
    /// Deepest nesting of blocks, loops and ifs in any function.
    pub max_nesting_depth: u32,
    /// Most function bodies across every core module of the component.
    pub max_functions: u32,
    /// Largest single function body, in bytes.
    pub max_function_body_bytes: u32,
    /// Most locals one function may declare.
    pub max_locals: u32,
    /// The program run as the compile worker; default: the running executable.
    pub program: Option<PathBuf>,
}

impl Default for CompileConfig {
    fn default() -> Self {
        CompileConfig {
            isolation: CompileIsolation::Process,
            max_memory_bytes: 3 << 30,
            timeout_ms: 60_000,
            // One at a time: a compile already uses every core, and the memory budget then
            // bounds all compiling together.
            max_concurrent: 1,
            max_nesting_depth: 2_000,
            max_functions: 200_000,
            max_function_body_bytes: 4 << 20,
            max_locals: 25_000,
            program: None,
        }
    }
}

impl CompileConfig {
    /// The wall-clock budget as a [`Duration`].
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// Which compile budget a component broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileLimit {
    /// The compiler needed more memory than `maxMemoryBytes`.
    #[error("compiling needed more than sandbox.compile.maxMemoryBytes ({limit} bytes)")]
    Memory {
        /// The budget.
        limit: u64,
    },
    /// The compiler ran past `timeoutMs`.
    #[error("compiling took longer than sandbox.compile.timeoutMs ({limit_ms} ms)")]
    Time {
        /// The budget.
        limit_ms: u64,
    },
    /// A function nests blocks deeper than `maxNestingDepth`.
    #[error(
        "function {function} nests blocks deeper than sandbox.compile.maxNestingDepth ({limit})"
    )]
    NestingDepth {
        /// Index of the function body, counted across modules.
        function: u64,
        /// The limit.
        limit: u32,
    },
    /// More function bodies than `maxFunctions`.
    #[error("{found} function bodies, over sandbox.compile.maxFunctions ({limit})")]
    Functions {
        /// Bodies counted so far.
        found: u64,
        /// The limit.
        limit: u32,
    },
    /// A function body larger than `maxFunctionBodyBytes`.
    #[error(
        "function {function} is {found} bytes, over sandbox.compile.maxFunctionBodyBytes ({limit})"
    )]
    FunctionBodyBytes {
        /// Index of the function body.
        function: u64,
        /// Its size.
        found: u32,
        /// The limit.
        limit: u32,
    },
    /// A function with more locals than `maxLocals`.
    #[error(
        "function {function} declares {found} locals, over sandbox.compile.maxLocals ({limit})"
    )]
    Locals {
        /// Index of the function body.
        function: u64,
        /// Its locals.
        found: u32,
        /// The limit.
        limit: u32,
    },
}

/// Runs compilations: the pre-check, then the worker process (or the in-process compiler).
pub(crate) struct Compiler {
    config: CompileConfig,
    /// What the worker needs to build an engine that produces compatible artifacts.
    engine_settings: String,
    slots: Arc<Semaphore>,
}

impl Compiler {
    pub(crate) fn new(config: CompileConfig, engine_settings: String) -> Self {
        let slots = Arc::new(Semaphore::new(
            usize::try_from(config.max_concurrent.max(1)).unwrap_or(1),
        ));
        Compiler {
            config,
            engine_settings,
            slots,
        }
    }

    pub(crate) fn config(&self) -> &CompileConfig {
        &self.config
    }

    /// Pre-checks and compiles `bytes`: the component, and the serialized artifact when the
    /// worker produced one (so the disk cache need not serialize it again).
    pub(crate) async fn compile(
        &self,
        engine: &wasmtime::Engine,
        bytes: Arc<Vec<u8>>,
    ) -> Result<(wasmtime::component::Component, Option<Arc<Vec<u8>>>), SandboxError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| SandboxError::Internal("the compiler is shut down".into()))?;
        let checked = bytes.clone();
        let config = self.config.clone();
        tokio::task::spawn_blocking(move || precheck(&checked, &config))
            .await
            .map_err(|e| SandboxError::Internal(format!("pre-check task failed: {e}")))??;
        match self.config.isolation {
            CompileIsolation::InProcess => {
                let engine = engine.clone();
                tokio::task::spawn_blocking(move || {
                    wasmtime::component::Component::new(&engine, &bytes[..])
                        .map(|component| (component, None))
                        .map_err(|e| SandboxError::InvalidComponent {
                            reason: format!("{e:#}"),
                        })
                })
                .await
                .map_err(|e| SandboxError::Internal(format!("compile task failed: {e}")))?
            }
            CompileIsolation::Process => {
                let artifact = Arc::new(self.compile_in_child(&bytes).await?);
                let engine = engine.clone();
                tokio::task::spawn_blocking(move || {
                    // SAFETY: the artifact was produced just now by this project's own
                    // compile worker (a child process running this binary's code) for an
                    // engine with these exact settings; wasmtime checks the engine
                    // compatibility header and refuses a mismatch. The component's bytes
                    // can only shape the code Cranelift emits, never the artifact format.
                    unsafe { wasmtime::component::Component::deserialize(&engine, &artifact[..]) }
                        .map(|component| (component, Some(artifact)))
                        .map_err(|e| {
                            SandboxError::Internal(format!(
                                "the compile worker's artifact was refused: {e:#}"
                            ))
                        })
                })
                .await
                .map_err(|e| SandboxError::Internal(format!("load task failed: {e}")))?
            }
        }
    }

    async fn compile_in_child(&self, bytes: &[u8]) -> Result<Vec<u8>, SandboxError> {
        let program = match &self.config.program {
            Some(program) => program.clone(),
            None => std::env::current_exe().map_err(|e| {
                SandboxError::Internal(format!("cannot find this executable to compile: {e}"))
            })?,
        };
        let started = Instant::now();
        let mut child = tokio::process::Command::new(&program)
            .arg(COMPILE_WORKER_ARG)
            .arg(&self.engine_settings)
            // Nothing of the host's environment (tokens, cloud credentials) reaches the
            // process that parses hostile bytes.
            .env_clear()
            // mimalloc reserves 1 GiB of address space up front by default; the worker's
            // budget is address space, so it reserves in small steps instead.
            .env("MIMALLOC_ARENA_RESERVE", "32MiB")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                SandboxError::Internal(format!(
                    "cannot start the compile worker {}: {e}",
                    program.display()
                ))
            })?;
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(SandboxError::Internal(
                "the compile worker has no pipes".into(),
            ));
        };
        // The artifact is at most what the worker could hold in memory.
        let artifact_cap = self.config.max_memory_bytes;
        let exchange = async {
            let feed = async {
                // A worker that dies early closes its end; its exit status says why.
                let _ = stdin.write_all(bytes).await;
                drop(stdin);
            };
            let mut artifact = Vec::new();
            let mut report = Vec::new();
            let (mut stdout, mut stderr) = (stdout.take(artifact_cap), stderr.take(64 << 10));
            let read_artifact = stdout.read_to_end(&mut artifact);
            let read_report = stderr.read_to_end(&mut report);
            let (_, artifact_read, _) = tokio::join!(feed, read_artifact, read_report);
            let status = child.wait().await;
            (artifact_read.map(|_| artifact), report, status)
        };
        let timeout = self.config.timeout();
        let (artifact, report, status) = match tokio::time::timeout(timeout, exchange).await {
            Ok(done) => done,
            // Dropping the exchange drops the child, which kills it (`kill_on_drop`).
            Err(_) => {
                return Err(CompileLimit::Time {
                    limit_ms: self.config.timeout_ms,
                }
                .into());
            }
        };
        let report = String::from_utf8_lossy(&report).trim().to_owned();
        let status = status
            .map_err(|e| SandboxError::Internal(format!("waiting for the compile worker: {e}")))?;
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            ?status,
            "compile worker finished"
        );
        worker::classify(status, &report, &self.config, started.elapsed())?;
        let artifact =
            artifact.map_err(|e| SandboxError::Internal(format!("reading the artifact: {e}")))?;
        // wasmtime's artifacts are ELF images; anything else means the program is not a
        // compile worker (a test binary, another tool).
        if !artifact.starts_with(b"\x7fELF") {
            return Err(SandboxError::Internal(format!(
                "{} did not answer as a compile worker; set sandbox.compile.program to the \
                 wasmscaler binary, or sandbox.compile.isolation to in-process",
                program.display()
            )));
        }
        Ok(artifact)
    }
}
