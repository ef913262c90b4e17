//! A guest that attacks the host in the way `config["attack"]` names, in `gather`:
//!
//! - `none`: behaves (one sample, decision of 3 replicas);
//! - `loop`: spins forever (fuel, or the deadline when fuel is plentiful);
//! - `memory`: allocates until the memory cap stops it;
//! - `recursion`: recurses without bound (stack overflow);
//! - `panic`: panics;
//! - `output`: returns megabytes of samples;
//! - `import-loop`: calls the `log` import forever;
//! - `state-then-panic`: writes state, then panics (the write must not persist);
//! - `state-write`: writes state and succeeds;
//! - `log-flood`: logs records of 8 MiB each, as many as it may;
//! - `log-forge`: logs a message with a newline and a fake host log line after it;
//! - `stdout-flood`: prints 4 MiB to stdout and 4 MiB to stderr, then succeeds.

wit_bindgen::generate!({ path: "../../../wit", world: "policy" });

use exports::wasmscaler::policy::{evaluation, metrics};
use wasmscaler::policy::types::{Context, Decision, Error, Sample};
use wasmscaler::policy::{log, state};

struct Hostile;

fn attack(ctx: &Context) -> &str {
    ctx.config.iter().find(|(k, _)| k == "attack").map_or("none", |(_, v)| v.as_str())
}

#[inline(never)]
#[allow(unconditional_recursion)] // the point of the `recursion` attack
fn recurse(depth: u64, trail: &mut [u64; 16]) -> u64 {
    trail[(depth % 16) as usize] = depth;
    recurse(std::hint::black_box(depth + 1), trail) + trail[0]
}

impl metrics::Guest for Hostile {
    fn gather(ctx: Context) -> Result<Vec<Sample>, Error> {
        match attack(&ctx) {
            "loop" => {
                let mut n = 0u64;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "memory" => loop {
                // Grow by 1 MiB at a time, as an allocator would, and abort like one when the
                // host refuses.
                if core::arch::wasm32::memory_grow(0, 16) == usize::MAX {
                    std::process::abort();
                }
            },
            "recursion" => {
                let mut trail = [0u64; 16];
                let depth = recurse(0, &mut trail);
                Ok(vec![sample("depth", depth as f64)])
            }
            "panic" => panic!("hostile guest panics on purpose"),
            "output" => {
                let name = "x".repeat(1_000);
                Ok((0..2_000).map(|i| sample(&name, f64::from(i))).collect())
            }
            "import-loop" => loop {
                log::log(log::Level::Debug, "flooding the host");
            },
            "state-then-panic" => {
                state::set("poisoned", b"yes")?;
                panic!("panics after writing state");
            }
            "state-write" => {
                let runs = state::get("runs").map_or(0, |v| v.first().copied().unwrap_or(0));
                state::set("runs", &[runs + 1])?;
                Ok(vec![sample("runs", f64::from(runs + 1))])
            }
            "log-flood" => {
                let record = "x".repeat(8 << 20);
                for _ in 0..200 {
                    log::log(log::Level::Info, &record);
                }
                Ok(vec![sample("flooded", 1.0)])
            }
            "log-forge" => {
                log::log(
                    log::Level::Info,
                    "innocent\n2026-01-01T00:00:00.000000Z  INFO wasmscaler: FORGED host line\r\u{1b}[31m",
                );
                Ok(vec![sample("forged", 1.0)])
            }
            "stdout-flood" => {
                let chunk = "y".repeat(1 << 20);
                for _ in 0..4 {
                    println!("{chunk}");
                    eprintln!("{chunk}");
                }
                Ok(vec![sample("printed", 1.0)])
            }
            _ => Ok(vec![sample("ok", 1.0)]),
        }
    }
}

fn sample(name: &str, value: f64) -> Sample {
    Sample { name: name.into(), value, replica: None, labels: Vec::new() }
}

impl evaluation::Guest for Hostile {
    fn evaluate(ctx: Context, _samples: Vec<Sample>) -> Result<Decision, Error> {
        // The run's time in the reason makes every run's record differ, so none folds into
        // the one before: the containment tests read each run's start from the records.
        let reason = format!("hostile guest at rest (run at {} ms)", ctx.now_ms);
        Ok(Decision { target_replicas: 3, reason: Some(reason), remove_first: None })
    }
}

export!(Hostile);
