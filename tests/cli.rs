//! `wasmscaler eval` and `inspect` as a user runs them.

use std::process::Command;

#[allow(dead_code)] // shared helpers, not all of which the CLI tests use
#[path = "support/lib.rs"]
mod support;

use support::{build_rust_guest, fixture};

fn wasmscaler_bin() -> anyhow::Result<&'static str> {
    Ok(env!("CARGO_BIN_EXE_wasmscaler"))
}

#[test]
fn eval_prints_samples_decision_and_fuel() -> anyhow::Result<()> {
    let wasm = build_rust_guest("guests/cpu-target")?;
    let cache = tempfile::tempdir()?;
    let run = || {
        Command::new(wasmscaler_bin()?)
            .arg("eval")
            .arg("--policy")
            .arg(&wasm)
            .arg("--context")
            .arg(fixture("cpu-context.json"))
            .arg("--pod-metrics")
            .arg(fixture("pod-metrics.json"))
            .arg("--cache-dir")
            .arg(cache.path())
            .output()
            .map_err(anyhow::Error::from)
    };
    let first = run()?;
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&first.stdout)?;
    assert_eq!(report["decision"]["targetReplicas"], 6);
    assert_eq!(report["samples"].as_array().map(Vec::len), Some(3));
    assert!(report["fuelConsumed"].as_u64().is_some_and(|f| f > 0));
    assert!(report["durationMicros"].as_u64().is_some());
    assert_eq!(report["components"][0]["loadedFrom"], "compiled");

    let second = run()?;
    let report: serde_json::Value = serde_json::from_slice(&second.stdout)?;
    assert_eq!(report["components"][0]["loadedFrom"], "disk");
    assert_eq!(report["decision"]["targetReplicas"], 6);
    Ok(())
}

#[test]
fn eval_fails_with_one_line_errors() -> anyhow::Result<()> {
    let wasm = build_rust_guest("guests/cpu-target")?;
    let eval = |extra: &[&str]| {
        let mut cmd = Command::new(wasmscaler_bin()?);
        cmd.arg("eval")
            .arg("--no-cache")
            .arg("--context")
            .arg(fixture("cpu-context.json"))
            .args(extra);
        cmd.output().map_err(anyhow::Error::from)
    };
    let wasm = wasm.to_string_lossy().into_owned();

    // Capability not granted.
    let out = eval(&["--policy", &wasm])?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("kubernetes-metrics") && stderr.contains("not granted"),
        "{stderr}"
    );

    // Fuel too small for the guest.
    let pods = fixture("pod-metrics.json").to_string_lossy().into_owned();
    let out = eval(&["--policy", &wasm, "--pod-metrics", &pods, "--fuel", "100"])?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("fuel exhausted"));

    // Not a component.
    let bogus = fixture("cpu-context.json").to_string_lossy().into_owned();
    let out = eval(&["--policy", &bogus])?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a WebAssembly binary"));

    // A context file with an unknown key names it.
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("ctx.json");
    std::fs::write(
        &bad,
        r#"{"autoscalerName":"x","nowMs":0,"target":{"kind":"k","name":"n","currentReplicas":1,"maxReplicas":2},"replicaz":[]}"#,
    )?;
    let mut cmd = Command::new(wasmscaler_bin()?);
    let out = cmd
        .args(["eval", "--no-cache", "--policy", &wasm, "--context"])
        .arg(&bad)
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("replicaz"));
    Ok(())
}

#[test]
fn inspect_names_world_capabilities_and_digest() -> anyhow::Result<()> {
    let wasm = build_rust_guest("guests/capacity")?;
    let out = Command::new(wasmscaler_bin()?)
        .args(["inspect", "--json", "--no-cache"])
        .arg(&wasm)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(info["world"], "policy");
    assert_eq!(info["capabilities"], serde_json::json!(["http"]));
    let bytes = std::fs::read(&wasm)?;
    assert_eq!(info["size"], bytes.len());
    assert_eq!(
        info["sha256"],
        wasmscaler::sandbox::sha256(&bytes)
            .map(|b| format!("{b:02x}"))
            .concat()
    );
    Ok(())
}
