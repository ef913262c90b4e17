//! The fuzz targets in every test run: each target's corpus (`tests/fuzz/corpus/TARGET`) is
//! replayed, then mutated for a few seconds (`WASMSCALER_FUZZ_SECONDS`, default 3 per target)
//! with byte flips, insertions, deletions, splices and tokens of the input's language. This
//! is not coverage-guided, so it is a smoke test of the same entry points `cargo fuzz` drives
//! (see tests/fuzz): a panic fails the test, prints the input and keeps it under
//! `target/fuzz-failures/` to be added to the corpus as a regression case.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wasmscaler::fuzzing::TARGETS;
use wasmscaler_tests::repo_root;

/// Tokens worth inserting, by target: what a mutation of random bytes rarely produces.
fn dictionary(target: &str) -> &'static [&'static str] {
    match target {
        "config_file" => &[
            "autoscalers:\n",
            "  - name: x\n",
            "policy: ",
            "target:",
            "local:",
            "kubernetes:",
            "awsAsg:",
            "minReplicas: ",
            "maxReplicas: ",
            "interval: ",
            "1ms",
            "99999h",
            "-1",
            "4294967296",
            "{",
            "}",
            "[",
            "]",
            "&a ",
            "*a",
            "<<: ",
            "!!binary ",
            "~",
            "\"",
            "'",
            "behavior:",
            "policies:",
            "selectPolicy: Disabled",
            "stabilizationWindowSeconds: ",
            "fallback:",
            "limits:",
            "fuel: ",
            "sandbox:",
            "compile:",
            "pooling:",
            "capabilities:",
            "http:",
            "allow: [",
            "{replica}",
            "oci://",
            "https://",
            "@sha256:",
            "\n",
            "  ",
        ],
        "context_json" => &[
            "{",
            "}",
            "[",
            "]",
            "\"",
            ":",
            ",",
            "null",
            "true",
            "1e999",
            "-0",
            "18446744073709551616",
            "\"autoscalerName\"",
            "\"replicas\"",
            "\"config\"",
            "\"target\"",
            "\"nowMs\"",
            "\"value\"",
            "\"name\"",
            "\"labels\"",
            "\"\\ud800\"",
            "\"\\u0000\"",
        ],
        "policy_reference" => &[
            "file:",
            "file://",
            "https://",
            "http://",
            "oci://",
            "policy:",
            "@sha256:",
            ":",
            "/",
            "@",
            "..",
            "%00",
            "0123456789abcdef",
            "[::1]",
            ":65536",
        ],
        "http_allow_list" => &[
            "*",
            "{replica}",
            "http://",
            "https://",
            "\n",
            "/",
            ":",
            "@",
            "?",
            "#",
            "%2f",
            "[",
            "]",
            "::1",
            ".",
            "xn--",
            ":0",
            ":65535",
        ],
        _ => &[
            "{",
            "}",
            "\"",
            "\"Message\"",
            "\"Type\"",
            "\"Notification\"",
            "\"detail\"",
            "\"LifecycleTransition\"",
            "\"autoscaling:EC2_INSTANCE_TERMINATING\"",
            "\"EC2InstanceId\"",
            "\"LifecycleActionToken\"",
            "\\\"",
            "null",
            "[]",
        ],
    }
}

/// xorshift64*: enough randomness for mutations, and reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>], tokens: &[&str]) {
    for _ in 0..=rng.below(4) {
        let at = rng.below(input.len() + 1);
        match rng.below(6) {
            0 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] ^= 1 << rng.below(8);
            }
            1 => input.insert(at, rng.next() as u8),
            2 if !input.is_empty() => {
                let end = (at + rng.below(16)).min(input.len());
                input.drain(at.min(end)..end);
            }
            3 => {
                let token = tokens[rng.below(tokens.len())].as_bytes();
                input.splice(at..at, token.iter().copied());
            }
            4 if !corpus.is_empty() => {
                let other = &corpus[rng.below(corpus.len())];
                let from = rng.below(other.len());
                let end = (from + rng.below(64)).min(other.len());
                input.splice(at..at, other[from..end].iter().copied());
            }
            _ if !input.is_empty() => {
                // Repeat a chunk: deep nesting, long runs.
                let from = rng.below(input.len());
                let end = (from + rng.below(8) + 1).min(input.len());
                let chunk = input[from..end].to_vec();
                for _ in 0..rng.below(64) {
                    input.splice(at..at, chunk.iter().copied());
                }
            }
            _ => {}
        }
    }
    input.truncate(1 << 16);
}

fn corpus(target: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    let dir = repo_root().join("tests/fuzz/corpus").join(target);
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    entries
        .iter()
        .map(|p| std::fs::read(p).map_err(Into::into))
        .collect()
}

fn keep_failure(target: &str, input: &[u8]) -> PathBuf {
    let dir = repo_root().join("target/fuzz-failures");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!(
        "{target}-{}",
        wasmscaler::sandbox::sha256(input)
            .map(|b| format!("{b:02x}"))
            .concat()
    ));
    let _ = std::fs::write(&path, input);
    path
}

fn run(target: &str, entry: fn(&[u8]), input: &[u8]) -> Result<(), PathBuf> {
    std::panic::catch_unwind(|| entry(input)).map_err(|_| keep_failure(target, input))
}

#[test]
fn every_corpus_replays_and_survives_mutation() -> anyhow::Result<()> {
    let seconds: u64 = std::env::var("WASMSCALER_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    println!("fuzz seed {seed}, {seconds} s per target");
    let mut failures = Vec::new();
    for (target, entry) in TARGETS {
        let corpus = corpus(target)?;
        anyhow::ensure!(!corpus.is_empty(), "no corpus for {target}");
        for input in &corpus {
            if let Err(path) = run(target, entry, input) {
                failures.push(path);
            }
        }
        let mut rng = Rng(seed);
        let started = Instant::now();
        let mut executions = 0u64;
        while started.elapsed() < Duration::from_secs(seconds) {
            let mut input = corpus[rng.below(corpus.len())].clone();
            mutate(&mut rng, &mut input, &corpus, dictionary(target));
            executions += 1;
            if let Err(path) = run(target, entry, &input) {
                failures.push(path);
                break;
            }
        }
        println!(
            "{target}: {} corpus entries, {executions} mutated inputs",
            corpus.len()
        );
    }
    assert!(
        failures.is_empty(),
        "inputs that panicked (add each to its corpus once fixed): {:?}",
        failures
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
    );
    Ok(())
}

#[test]
fn corpora_exist_for_every_target() {
    for (target, _) in TARGETS {
        let dir: &Path = &repo_root().join("tests/fuzz/corpus").join(target);
        assert!(dir.is_dir(), "missing corpus {}", dir.display());
    }
}
