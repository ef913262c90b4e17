//! Hostile guests: each must end with its own typed error, within its budget, and leave the
//! host serving other calls.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use wasmscaler::contract::model::{Context, GuestError, Sample};
use wasmscaler::sandbox::{
    CallEnv, CallOutcome, Capabilities, Capability, GuestComponent, HttpGrant, Limits, MemoryState,
    Sandbox, SandboxError, StateGrant, StateStore,
};
use wasmscaler_tests::{build_rust_guest, hostile_wat, test_sandbox};

fn ctx(attack: &str) -> Context {
    Context {
        autoscaler_name: "hostile".into(),
        target: wasmscaler::contract::model::Target {
            kind: "test".into(),
            name: "victim".into(),
            current_replicas: 1,
            max_replicas: 5,
            ..Default::default()
        },
        config: BTreeMap::from([("attack".into(), attack.into())]),
        ..Default::default()
    }
}

fn env(limits: Limits) -> CallEnv {
    CallEnv {
        limits,
        capabilities: Capabilities {
            log: true,
            state: Some(StateGrant::default()),
            ..Default::default()
        },
        ..Default::default()
    }
}

async fn hostile(sandbox: &Sandbox) -> anyhow::Result<Arc<GuestComponent>> {
    let wasm = build_rust_guest("tests/hostile/rust-hostile")?;
    Ok(sandbox.load_file(&wasm).await?.component)
}

/// After any attack, the same component still serves a well-behaved call.
async fn still_serves(guest: &GuestComponent) -> anyhow::Result<()> {
    let out = guest.gather(&ctx("none"), &env(Limits::default())).await?;
    assert_eq!(out.value.len(), 1);
    let decision = guest
        .evaluate(&ctx("none"), &out.value, &env(Limits::default()))
        .await?;
    assert_eq!(decision.value.target_replicas, 3);
    Ok(())
}

async fn attack(guest: &GuestComponent, name: &str, limits: Limits) -> SandboxError {
    match guest.gather(&ctx(name), &env(limits)).await {
        Ok(out) => panic!("attack {name} succeeded: {:?}", out.value.len()),
        Err(e) => e,
    }
}

#[tokio::test]
async fn infinite_loop_runs_out_of_fuel() -> anyhow::Result<()> {
    let sandbox = test_sandbox()?;
    let guest = hostile(&sandbox).await?;
    let limits = Limits::default();
    let err = attack(&guest, "loop", limits.clone()).await;
    assert!(
        matches!(err, SandboxError::FuelExhausted { budget } if budget == limits.fuel),
        "{err}"
    );
    still_serves(&guest).await
}

#[tokio::test]
async fn infinite_loop_with_unbounded_fuel_hits_the_deadline() -> anyhow::Result<()> {
    let sandbox = test_sandbox()?;
    let guest = hostile(&sandbox).await?;
    let limits = Limits {
        fuel: u64::MAX / 2,
        timeout_ms: 200,
        ..Limits::default()
    };
    let started = std::time::Instant::now();
    let err = attack(&guest, "loop", limits).await;
    assert!(
        matches!(err, SandboxError::DeadlineExceeded { timeout } if timeout.as_millis() == 200),
        "{err}"
    );
    // Generous bound: the point is that it ends at all, not how precisely.
    assert!(started.elapsed().as_secs() < 10);
    still_serves(&guest).await
}

#[tokio::test]
async fn memory_growth_stops_at_the_cap() -> anyhow::Result<()> {
    let sandbox = test_sandbox()?;
    let guest = hostile(&sandbox).await?;
    let limits = Limits {
        memory_bytes: 16 << 20,
        ..Limits::default()
    };
    let err = attack(&guest, "memory", limits).await;
    assert!(
        matches!(err, SandboxError::MemoryLimit { limit, requested } if limit == 16 << 20 && requested > limit),
        "{err}"
    );
    still_serves(&guest).await
}

#[tokio::test]
async fn deep_recursion_is_a_stack_overflow_trap_with_backtrace() -> anyhow::Result<()> {
    let sandbox = test_sandbox()?;
    let guest = hostile(&sandbox).await?;
    let err = attack(&guest, "recursion", Limits::default()).await;
    match &err {
        SandboxError::GuestTrap { message, backtrace } => {
            assert!(message.contains("call stack exhausted"), "{message}");
            assert!(
                backtrace.as_deref().is_some_and(|b| b.contains("recurse")),
                "{backtrace:?}"
            );
        }
        other => panic!("expected a trap, got {other}"),
    }
    still_serves(&guest).await
}

#[tokio::test]
async fn panic_is_a_trap_that_quotes_the_panic_message() -> anyhow::Result<()> {
    let sandbox = test_sandbox()?;
    let guest = hostile(&sandbox).await?;
    let err = attack(&guest, "panic", Limits::default()).await;
    assert!(
        matches!(&err, SandboxError::GuestTrap { message, .. } if message.contains("hostile guest panics on purpose")),
        "{err}"
    );
    still_serves(&guest).await
}

#[tokio::test]
async fn oversized_output_is_refused() -> anyhow::Result<()> {
    let sandbox = test_sandbox()?;
    let guest = hostile(&sandbox).await?;
    let limits = Limits::default();
    let err = attack(&guest, "output", limits.clone()).await;
    assert!(
        matches!(err, SandboxError::OutputTooLarge { size, limit } if limit == limits.max_output_bytes && size > limit),
        "{err}"
    );
    still_serves(&guest).await
}

#[tokio::test]
async fn import_flood_hits_the_host_call_limit() -> anyhow::Result<()> {
    let sandbox = test_sandbox()?;
    let guest = hostile(&sandbox).await?;
    let err = attack(&guest, "import-loop", Limits::default()).await;
    assert!(
        matches!(err, SandboxError::HostCallLimit { limit: 1000 }),
        "{err}"
    );
    still_serves(&guest).await
}

#[tokio::test]
async fn state_is_committed_only_by_successful_calls() -> anyhow::Result<()> {
    let sandbox = test_sandbox()?;
    let guest = hostile(&sandbox).await?;
    let store = Arc::new(MemoryState::new());
    let env = CallEnv {
        state: Some(store.clone()),
        ..env(Limits::default())
    };
    let err = guest
        .gather(&ctx("state-then-panic"), &env)
        .await
        .unwrap_err();
    assert!(matches!(err, SandboxError::GuestTrap { .. }), "{err}");
    assert!(
        !store.load()?.contains_key("poisoned"),
        "a failed call's write leaked"
    );

    for expected in 1..=2u8 {
        let out = guest.gather(&ctx("state-write"), &env).await?;
        assert_eq!(out.value[0].value, f64::from(expected));
    }
    assert_eq!(store.load()?.get("runs"), Some(&vec![2u8]));

    // Over quota: the write is denied and the guest's error comes back typed.
    let tiny = CallEnv {
        capabilities: Capabilities {
            state: Some(StateGrant { max_bytes: 3 }),
            log: true,
            ..Default::default()
        },
        state: Some(Arc::new(MemoryState::new())),
        ..env.clone()
    };
    let err = guest.gather(&ctx("state-write"), &tiny).await.unwrap_err();
    assert!(
        matches!(&err, SandboxError::Guest(GuestError::Denied(m)) if m.contains("quota")),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn ungranted_capability_is_refused_before_the_guest_runs() -> anyhow::Result<()> {
    let sandbox = test_sandbox()?;
    let guest = hostile(&sandbox).await?;
    let no_log = CallEnv {
        capabilities: Capabilities {
            state: Some(StateGrant::default()),
            ..Default::default()
        },
        ..Default::default()
    };
    let err = guest.gather(&ctx("none"), &no_log).await.unwrap_err();
    assert!(
        matches!(&err, SandboxError::CapabilityNotGranted { capability: Capability::Log, import } if import == "wasmscaler:policy/log@0.1.1"),
        "{err}"
    );

    let capacity = sandbox
        .load_file(&build_rust_guest("guests/capacity")?)
        .await?
        .component;
    let err = capacity
        .gather(&ctx("none"), &CallEnv::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            SandboxError::CapabilityNotGranted {
                capability: Capability::Http,
                ..
            }
        ),
        "{err}"
    );
    // Granting something else does not help.
    let wrong_grant = CallEnv {
        capabilities: Capabilities {
            state: Some(StateGrant::default()),
            log: true,
            kubernetes_metrics: true,
            http: None,
        },
        ..Default::default()
    };
    assert!(
        capacity
            .evaluate(&ctx("none"), &[], &wrong_grant)
            .await
            .is_err()
    );
    // With the grant it runs (and answers for itself).
    let granted = CallEnv {
        capabilities: Capabilities {
            http: Some(HttpGrant::allow(["http://{replica}/"])),
            ..Default::default()
        },
        ..Default::default()
    };
    let out = capacity.gather(&ctx("none"), &granted).await?;
    assert!(out.value.is_empty(), "no replicas, no samples");
    Ok(())
}

#[tokio::test]
async fn wrong_world_is_named_with_what_was_found() -> anyhow::Result<()> {
    let sandbox = test_sandbox()?;
    let err = sandbox
        .load(hostile_wat("wrong-world.wat")?)
        .await
        .unwrap_err();
    match &err {
        SandboxError::WorldMismatch { expected, found } => {
            assert!(
                expected.contains("wasmscaler:policy/metrics@0.1.1"),
                "{expected}"
            );
            assert_eq!(found, &["example:other/greeter@1.0.0".to_string()]);
        }
        other => panic!("expected a world mismatch, got {other}"),
    }

    let err = sandbox
        .load(hostile_wat("core-module.wat")?)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SandboxError::InvalidComponent { reason } if reason.contains("core WebAssembly module")),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn malformed_bytes_are_invalid_components() -> anyhow::Result<()> {
    let sandbox = test_sandbox()?;
    let err = sandbox
        .load(b"definitely not wasm".to_vec())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SandboxError::InvalidComponent { reason } if reason.contains("magic")),
        "{err}"
    );

    let mut truncated = std::fs::read(build_rust_guest("guests/cpu-target")?)?;
    truncated.truncate(truncated.len() / 2);
    let err = sandbox.load(truncated).await.unwrap_err();
    assert!(
        matches!(err, SandboxError::InvalidComponent { .. }),
        "{err}"
    );

    let err = sandbox.load(Vec::new()).await.unwrap_err();
    assert!(
        matches!(err, SandboxError::InvalidComponent { .. }),
        "{err}"
    );

    // The sandbox still loads and runs a good component afterwards.
    let guest = hostile(&sandbox).await?;
    still_serves(&guest).await
}

#[tokio::test(flavor = "current_thread")]
async fn a_spinning_guest_does_not_stall_other_calls_on_the_same_thread() -> anyhow::Result<()> {
    let sandbox = test_sandbox()?;
    let guest = hostile(&sandbox).await?;
    let spinner = {
        let guest = guest.clone();
        let limits = Limits {
            fuel: u64::MAX / 2,
            timeout_ms: 3_000,
            ..Limits::default()
        };
        tokio::spawn(async move { guest.gather(&ctx("loop"), &env(limits)).await })
    };
    tokio::task::yield_now().await;
    // On a single-threaded runtime this can only complete if the spinner yields.
    still_serves(&guest).await?;
    assert!(
        !spinner.is_finished(),
        "the spinner should still be running"
    );
    let err = spinner.await?.unwrap_err();
    assert!(
        matches!(err, SandboxError::DeadlineExceeded { .. }),
        "{err}"
    );
    Ok(())
}

/// A guest spinning until its `timeout_ms` deadline in the sandbox's only slot (waited for
/// until it holds it), its limits, and its task.
async fn spin_in_the_only_slot(
    sandbox: &Sandbox,
    timeout_ms: u64,
) -> anyhow::Result<(
    Arc<GuestComponent>,
    Limits,
    tokio::task::JoinHandle<Result<CallOutcome<Vec<Sample>>, SandboxError>>,
)> {
    let guest = hostile(sandbox).await?;
    let limits = Limits {
        fuel: u64::MAX / 2,
        timeout_ms,
        memory_bytes: 64 << 20,
        ..Limits::default()
    };
    let spinner = {
        let (guest, limits) = (guest.clone(), limits.clone());
        tokio::spawn(async move { guest.gather(&ctx("loop"), &env(limits)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok((guest, limits, spinner))
}

#[tokio::test]
async fn a_full_pool_answers_busy_and_recovers() -> anyhow::Result<()> {
    let sandbox = wasmscaler_tests::one_slot_sandbox()?;
    let (guest, limits, spinner) = spin_in_the_only_slot(&sandbox, 1_000).await?;
    let err = guest
        .gather(&ctx("none"), &env(limits.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, SandboxError::Busy(1)), "{err}");
    assert!(spinner.await?.is_err());
    guest.gather(&ctx("none"), &env(limits)).await?;

    // Limits the pool cannot honour are refused up front.
    let too_big = Limits {
        memory_bytes: 1 << 30,
        ..Limits::default()
    };
    let err = guest.gather(&ctx("none"), &env(too_big)).await.unwrap_err();
    assert!(matches!(err, SandboxError::InvalidLimits(_)), "{err}");
    Ok(())
}

#[tokio::test]
async fn a_call_waits_its_turn_for_a_slot_within_max_slot_wait() -> anyhow::Result<()> {
    let sandbox = wasmscaler_tests::one_slot_sandbox_waiting(Duration::from_secs(10))?;
    let (guest, limits, spinner) = spin_in_the_only_slot(&sandbox, 600).await?;
    // A call the engine can never honour is refused at once, not after queueing for the slot.
    let too_big = Limits {
        memory_bytes: 1 << 30,
        ..limits.clone()
    };
    let err = guest.gather(&ctx("none"), &env(too_big)).await.unwrap_err();
    assert!(matches!(err, SandboxError::InvalidLimits(_)), "{err}");
    assert!(
        !spinner.is_finished(),
        "refused while the slot was still taken"
    );
    // The slot is taken: this call queues behind the spinner, and runs once its deadline
    // has freed the slot, with its own full timeout (not what is left of the wait).
    let waited = std::time::Instant::now();
    let outcome = guest.gather(&ctx("none"), &env(limits)).await?;
    assert!(waited.elapsed() >= Duration::from_millis(300), "it waited");
    assert!(outcome.duration < Duration::from_millis(600), "{outcome:?}");
    let err = spinner.await?.unwrap_err();
    assert!(
        matches!(err, SandboxError::DeadlineExceeded { .. }),
        "{err}"
    );
    Ok(())
}
