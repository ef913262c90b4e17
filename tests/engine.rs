//! The engine's pipeline around a real guest: clamping, tolerance, zero, pause, fallback,
//! dry-run, per-replica gathering, and a restart that keeps the stabilization history.
//! Decisions come from the `scripted` guest, which reads them over real HTTP.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use wasmscaler::engine::behavior::ScalingRules;
use wasmscaler::engine::store::{FileBackend, NoPersistence, StateBackend};
use wasmscaler::engine::{Autoscaler, AutoscalerSpec, Clock, Fallback, Guests, Outcome, RunMode};
use wasmscaler::sandbox::HttpGrant;
use wasmscaler::targets::TargetError;
use wasmscaler_tests::{JsonServer, MemoryTarget, build_rust_guest, scripted_spec, test_sandbox};

const T0: i64 = 1_763_776_800_000;

struct Harness {
    server: JsonServer,
    target: Arc<MemoryTarget>,
    now: Arc<AtomicI64>,
    guests: Guests,
}

impl Harness {
    async fn new(current: u32) -> anyhow::Result<Self> {
        let sandbox = test_sandbox()?;
        let wasm = build_rust_guest("tests/hostile/scripted")?;
        let component = sandbox.load_file(&wasm).await?.component;
        Ok(Harness {
            server: JsonServer::start()?,
            target: MemoryTarget::new(current),
            now: Arc::new(AtomicI64::new(T0)),
            guests: Guests::pair(component.clone(), component),
        })
    }

    fn spec(&self) -> AutoscalerSpec {
        let mut spec = scripted_spec("test", &format!("http://{}/decide", self.server.addr));
        spec.scaling.max_concurrent_gathers = 4;
        spec
    }

    fn autoscaler(
        &self,
        spec: AutoscalerSpec,
        backend: Arc<dyn StateBackend>,
    ) -> anyhow::Result<Autoscaler> {
        let now = self.now.clone();
        let clock: Clock = Arc::new(move || now.load(Ordering::SeqCst));
        Autoscaler::builder(spec, self.target.clone(), self.guests.clone())
            .persistence(backend)
            .clock(clock)
            .build()
            .map_err(anyhow::Error::msg)
    }

    fn decide(&self, body: &str) {
        self.server.route("/decide", 200, body);
    }

    fn advance(&self, ms: i64) {
        self.now.fetch_add(ms, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn decisions_are_clamped_to_min_and_max() -> anyhow::Result<()> {
    let h = Harness::new(3).await?;
    let a = h.autoscaler(h.spec(), Arc::new(NoPersistence))?;
    h.decide(r#"{"replicas": 50}"#);
    let r = a.run_once().await;
    assert_eq!(r.clamped, Some(10));
    // The default scale-up policy (max of +4 pods or +100% per 15 s) allows 3 → 7 first.
    assert_eq!(r.outcome, Outcome::Scaled { from: 3, to: 7 });
    h.advance(16_000);
    assert_eq!(
        a.run_once().await.outcome,
        Outcome::Scaled { from: 7, to: 10 }
    );
    h.decide(r#"{"replicas": 0}"#);
    h.advance(16_000);
    let r = a.run_once().await;
    assert_eq!(r.clamped, Some(1));
    assert_eq!(r.outcome, Outcome::Scaled { from: 10, to: 1 });
    Ok(())
}

#[tokio::test]
async fn tolerance_holds_small_changes() -> anyhow::Result<()> {
    let h = Harness::new(10).await?;
    let mut spec = h.spec();
    spec.scaling.max_replicas = 20;
    spec.scaling.tolerance = Some(0.1);
    let a = h.autoscaler(spec, Arc::new(NoPersistence))?;
    h.decide(r#"{"replicas": 11}"#);
    let r = a.run_once().await;
    assert!(r.within_tolerance, "{r:?}");
    assert_eq!(r.outcome, Outcome::Unchanged);
    h.decide(r#"{"replicas": 12}"#);
    let r = a.run_once().await;
    assert!(!r.within_tolerance);
    assert_eq!(r.outcome, Outcome::Scaled { from: 10, to: 12 });
    Ok(())
}

#[tokio::test]
async fn scale_to_and_from_zero_when_min_is_zero_and_pause_at_zero_otherwise() -> anyhow::Result<()>
{
    let h = Harness::new(2).await?;
    let mut spec = h.spec();
    spec.scaling.min_replicas = 0;
    let a = h.autoscaler(spec.clone(), Arc::new(NoPersistence))?;
    h.decide(r#"{"replicas": 0}"#);
    assert_eq!(
        a.run_once().await.outcome,
        Outcome::Scaled { from: 2, to: 0 }
    );
    h.decide(r#"{"replicas": 3}"#);
    h.advance(16_000);
    assert_eq!(
        a.run_once().await.outcome,
        Outcome::Scaled { from: 0, to: 3 }
    );

    // minReplicas > 0 and someone scaled the target to 0: the HPA's "paused" semantics.
    let b = h.autoscaler(h.spec(), Arc::new(NoPersistence))?;
    h.target.set(0);
    let calls = h.target.scale_calls().len();
    let r = b.run_once().await;
    assert!(matches!(r.outcome, Outcome::Paused { .. }), "{r:?}");
    assert_eq!(h.target.scale_calls().len(), calls, "nothing written");
    Ok(())
}

#[tokio::test]
async fn paused_autoscalers_do_not_call_the_guest_and_hold_paused_replicas() -> anyhow::Result<()> {
    let h = Harness::new(5).await?;
    let mut spec = h.spec();
    spec.scaling.paused = true;
    let a = h.autoscaler(spec.clone(), Arc::new(NoPersistence))?;
    h.decide(r#"{"replicas": 9}"#);
    assert!(matches!(a.run_once().await.outcome, Outcome::Paused { .. }));
    assert!(
        h.server
            .requests
            .lock()
            .map(|r| r.is_empty())
            .unwrap_or(false),
        "guest not called"
    );

    spec.scaling.paused_replicas = Some(2);
    let b = h.autoscaler(spec, Arc::new(NoPersistence))?;
    assert_eq!(
        b.run_once().await.outcome,
        Outcome::Scaled { from: 5, to: 2 }
    );
    assert!(matches!(b.run_once().await.outcome, Outcome::Paused { .. }));
    Ok(())
}

#[tokio::test]
async fn failures_hold_until_the_fallback_threshold() -> anyhow::Result<()> {
    let h = Harness::new(4).await?;
    let mut spec = h.spec();
    spec.scaling.fallback = Some(Fallback {
        failure_threshold: 3,
        replicas: Some(8),
        behavior: Default::default(),
    });
    let a = h.autoscaler(spec, Arc::new(NoPersistence))?;
    h.decide(r#"{"error": "metrics backend down"}"#);
    for _ in 0..2 {
        let r = a.run_once().await;
        assert!(
            matches!(&r.outcome, Outcome::Held { reason } if reason.contains("metrics backend down")),
            "{r:?}"
        );
        assert_eq!(r.error_kind.as_deref(), Some("guest-error"));
    }
    assert!(h.target.scale_calls().is_empty(), "failures hold the count");
    let r = a.run_once().await;
    assert!(r.fallback);
    assert_eq!(r.outcome, Outcome::Scaled { from: 4, to: 8 });
    // A good run resets the count.
    h.decide(r#"{"replicas": 8}"#);
    assert_eq!(a.run_once().await.outcome, Outcome::Unchanged);
    assert_eq!(a.engine_state().await.consecutive_failures, 0);

    // A target that cannot be read is a hold too, with its own kind.
    *h.target
        .fail_observe
        .lock()
        .map_err(|_| anyhow::anyhow!("lock"))? = Some(TargetError::Unavailable("503".into()));
    let r = a.run_once().await;
    assert_eq!(r.error_kind.as_deref(), Some("target"));
    assert!(matches!(r.outcome, Outcome::Held { .. }));
    Ok(())
}

#[tokio::test]
async fn fallback_without_replicas_holds_the_current_count() -> anyhow::Result<()> {
    let h = Harness::new(4).await?;
    let mut spec = h.spec();
    spec.scaling.fallback = Some(Fallback {
        failure_threshold: 1,
        replicas: None,
        behavior: Default::default(),
    });
    let a = h.autoscaler(spec, Arc::new(NoPersistence))?;
    h.decide(r#"{"error": "down"}"#);
    let r = a.run_once().await;
    assert!(r.fallback);
    assert_eq!(r.outcome, Outcome::Unchanged);
    assert!(h.target.scale_calls().is_empty());
    Ok(())
}

#[tokio::test]
async fn dry_run_decides_but_never_writes() -> anyhow::Result<()> {
    let h = Harness::new(2).await?;
    let mut spec = h.spec();
    spec.scaling.dry_run = true;
    let a = h.autoscaler(spec, Arc::new(NoPersistence))?;
    h.decide(r#"{"replicas": 6}"#);
    let r = a.run_once().await;
    assert_eq!(r.outcome, Outcome::WouldScale { from: 2, to: 6 });
    assert!(h.target.scale_calls().is_empty());
    assert_eq!(h.target.current(), 2);
    Ok(())
}

#[tokio::test]
async fn per_replica_mode_gathers_once_per_replica() -> anyhow::Result<()> {
    let h = Harness::new(3).await?;
    let mut spec = h.spec();
    spec.scaling.run_mode = RunMode::PerReplica;
    spec.scaling
        .config
        .insert("perReplica".into(), "yes".into());
    let a = h.autoscaler(spec, Arc::new(NoPersistence))?;
    h.decide(r#"{"replicas": 3}"#);
    let r = a.run_once().await;
    assert_eq!(r.sample_count, 3);
    let mut paths = h
        .server
        .requests
        .lock()
        .map_err(|_| anyhow::anyhow!("lock"))?
        .clone();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/decide?replica=r-0",
            "/decide?replica=r-1",
            "/decide?replica=r-2"
        ]
    );
    Ok(())
}

#[tokio::test]
async fn removal_list_reaches_the_target() -> anyhow::Result<()> {
    let h = Harness::new(4).await?;
    let a = h.autoscaler(h.spec(), Arc::new(NoPersistence))?;
    h.decide(r#"{"replicas": 2, "removeFirst": ["r-1", "r-3"]}"#);
    a.run_once().await;
    assert_eq!(
        h.target.scale_calls(),
        [(2, vec!["r-1".to_string(), "r-3".to_string()])]
    );
    Ok(())
}

fn stabilized_spec(h: &Harness) -> AutoscalerSpec {
    let mut spec = h.spec();
    spec.scaling.behavior.scale_down = Some(ScalingRules {
        stabilization_window_seconds: Some(300),
        ..Default::default()
    });
    spec
}

#[tokio::test]
async fn a_restart_mid_window_does_not_scale_down_early() -> anyhow::Result<()> {
    let h = Harness::new(8).await?;
    let dir = tempfile::tempdir()?;
    let state_file = dir.path().join("test.json");
    {
        let a = h.autoscaler(stabilized_spec(&h), Arc::new(FileBackend::new(&state_file)))?;
        h.decide(r#"{"replicas": 8}"#);
        assert_eq!(a.run_once().await.outcome, Outcome::Unchanged);
        h.advance(60_000);
        h.decide(r#"{"replicas": 2}"#);
        let r = a.run_once().await;
        assert_eq!(
            r.stabilized,
            Some(8),
            "the 8 of a minute ago is still in the window"
        );
    }
    // Restart: a new autoscaler over the same state file.
    h.advance(60_000);
    let restarted = h.autoscaler(stabilized_spec(&h), Arc::new(FileBackend::new(&state_file)))?;
    let r = restarted.run_once().await;
    assert_eq!(r.outcome, Outcome::Unchanged, "{r:?}");
    // Once the window has passed, the scale-down happens.
    h.advance(200_000);
    assert_eq!(
        restarted.run_once().await.outcome,
        Outcome::Scaled { from: 8, to: 2 }
    );

    // The contrast: without persisted history the restart scales down at once.
    let h2 = Harness::new(8).await?;
    h2.decide(r#"{"replicas": 8}"#);
    h2.autoscaler(stabilized_spec(&h2), Arc::new(NoPersistence))?
        .run_once()
        .await;
    h2.advance(120_000);
    h2.decide(r#"{"replicas": 2}"#);
    let amnesiac = h2.autoscaler(stabilized_spec(&h2), Arc::new(NoPersistence))?;
    assert_eq!(
        amnesiac.run_once().await.outcome,
        Outcome::Scaled { from: 8, to: 2 }
    );
    Ok(())
}

#[tokio::test]
async fn runs_are_recorded_in_a_bounded_ring() -> anyhow::Result<()> {
    let h = Harness::new(2).await?;
    let a = h.autoscaler(h.spec(), Arc::new(NoPersistence))?;
    h.decide(r#"{"replicas": 2}"#);
    for _ in 0..40 {
        a.run_once().await;
    }
    // Runs that end alike fold into one record with a count (the first run scales 1 -> 2,
    // every later one finds 2 and holds).
    let records = a.records();
    assert_eq!(
        records.iter().map(|r| r.runs()).sum::<u64>(),
        40,
        "{records:#?}"
    );
    assert!(records.len() <= 2, "{records:#?}");
    // Decisions that differ each run keep a record each, the last 16 of them.
    for i in 0..40 {
        h.decide(if i % 2 == 0 {
            r#"{"replicas": 2}"#
        } else {
            r#"{"replicas": 3}"#
        });
        a.run_once().await;
    }
    let records = a.records();
    assert_eq!(records.len(), 16);
    assert!(records.iter().all(|r| r.repeats == 0));
    assert!(records.iter().all(|r| r.fuel > 0 && r.decision.is_some()));
    Ok(())
}

#[tokio::test]
async fn a_stuck_autoscaler_does_not_delay_another() -> anyhow::Result<()> {
    use wasmscaler::engine::{Fleet, HumanDuration};
    let h = Harness::new(2).await?;
    h.decide(r#"{"replicas": 2}"#);
    // An endpoint that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0")?;
    let silent_url = format!("http://{}/decide", silent.local_addr()?);

    let mut fast = h.spec();
    fast.name = "fast".into();
    fast.scaling.interval = HumanDuration(std::time::Duration::from_millis(100));
    let mut stuck = fast.clone();
    stuck.name = "stuck".into();
    stuck
        .scaling
        .config
        .insert("url".into(), silent_url.clone());
    stuck.scaling.capabilities.http = Some(HttpGrant::allow([silent_url]));
    stuck.scaling.limits.timeout_ms = 10_000;
    let clock = wasmscaler::engine::system_clock();
    let make = |spec: AutoscalerSpec| {
        Autoscaler::builder(spec, MemoryTarget::new(2), h.guests.clone())
            .clock(clock.clone())
            .build()
            .map(Arc::new)
            .map_err(anyhow::Error::msg)
    };
    let engine = Fleet::new(vec![make(fast)?, make(stuck)?]);
    let stop = tokio_util::sync::CancellationToken::new();
    let stopper = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
            stop.cancel();
        })
    };
    engine.run(stop).await;
    stopper.await?;
    let all = engine.autoscalers();
    let [fast, stuck] = all.as_slice() else {
        anyhow::bail!("two autoscalers")
    };
    // The stuck one is still in its first run (its HTTP call waits for 2 s); the fast one
    // kept its 100 ms rhythm meanwhile.
    let runs = |a: &Autoscaler| a.records().iter().map(|r| r.runs()).sum::<u64>();
    assert!(runs(fast) >= 8, "fast ran {} times", runs(fast));
    assert!(runs(stuck) <= 1, "stuck ran {} times", runs(stuck));
    Ok(())
}
