//! The `openstack` target against a real OpenStack on loopback (keystone, nova with its fake
//! virt driver, neutron, placement, glance: `tests/openstack/start.sh`, which `tests/run.sh`
//! runs). Servers go ACTIVE and get addresses; nothing boots.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use std::sync::Arc;

use wasmscaler::contract::lifecycle_model::{Instance, Transition};
use wasmscaler::engine::{Autoscaler, AutoscalerSpec, Guests, Outcome};
use wasmscaler::hooks::{Joined, state_tag};
use wasmscaler::sandbox::{Capabilities, HttpGrant};
use wasmscaler::targets::lifecycle::{
    Delivered, DeliveredLifecycleSpec, InstanceStore, LifecycleDelivery,
};
use wasmscaler::targets::openstack::api::Api;
use wasmscaler::targets::openstack::{
    Credentials, InstanceIdSources, NovaInstances, OpenStackSpec, OpenStackTarget, PoolKey,
};
use wasmscaler::targets::{Target, TargetError};
use wasmscaler_tests::{JsonServer, build_rust_guest, placeholder_target, test_sandbox};

/// The tests share one cloud and run side by side (each on a pool of its own), except the
/// quota check, which changes the project's quota: it holds the write side alone, once every
/// other test's servers are gone.
static CLOUD: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// The test cloud's `clouds.yaml`, once start.sh has made it ready (waiting while it starts:
/// tests/run.sh starts it beside the build).
fn cloud() -> anyhow::Result<PathBuf> {
    let root = wasmscaler_tests::repo_root().join(".cache/openstack");
    let run = root.join("run");
    let deadline = Instant::now() + Duration::from_secs(300);
    while !run.join("ready").exists() && root.join("starting").exists() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the test OpenStack did not start in 5 minutes: {}",
            root.join("start.log").display()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    anyhow::ensure!(
        run.join("ready").exists(),
        "the test OpenStack is not running: bash tests/openstack/install.sh && bash tests/openstack/start.sh (tests/run.sh does both; its log: {})",
        root.join("start.log").display()
    );
    Ok(run.join("clouds.yaml"))
}

/// The `openstack` client of the test cloud's venv, as admin.
fn openstack(args: &[&str]) -> anyhow::Result<String> {
    let root = wasmscaler_tests::repo_root();
    let out = Command::new(root.join(".cache/openstack/venv/bin/openstack"))
        .args(args)
        .env("OS_CLIENT_CONFIG_FILE", cloud()?)
        .env("OS_CLOUD", "admin")
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "openstack {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn spec(value: &str) -> OpenStackSpec {
    OpenStackSpec {
        cloud: Some("admin".into()),
        pool: PoolKey {
            key: "pool".into(),
            value: value.into(),
        },
        flavor: "m1.tiny".into(),
        image: "tiny".into(),
        network: "private".into(),
        key_name: None,
        user_data_file: None,
        name_template: "{value}-{id}".into(),
        metadata: Default::default(),
        ip_version: 4,
        floating_network: Some("public".into()),
        lifecycle: None,
    }
}

async fn connect(value: &str) -> anyhow::Result<OpenStackTarget> {
    let credentials = Credentials::from_clouds_file(&cloud()?, "admin")?;
    Ok(OpenStackTarget::connect_with(spec(value), credentials, None).await?)
}

/// Observes until every replica is ready with an address, or fails after a minute.
async fn settled(
    target: &OpenStackTarget,
    n: u32,
) -> anyhow::Result<wasmscaler::targets::Observation> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let seen = target.observe().await?;
        if seen.current == n && seen.replicas.iter().all(|r| r.ready && r.address.is_some()) {
            return Ok(seen);
        }
        anyhow::ensure!(Instant::now() < deadline, "not settled at {n}: {seen:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Scales the pool to zero and waits until Nova lists none of its servers (deleting ones
/// included: they still count toward the quota) and none of its floating IPs is left.
async fn emptied(target: &OpenStackTarget, value: &str) -> anyhow::Result<()> {
    target.scale(&target.observe().await?, 0, &[]).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    // Observing, as every run does, resumes what a killed host left (a server terminating).
    while target.observe().await?.current > 0
        || !target.floating_addresses().await?.is_empty()
        || !openstack(&[
            "server",
            "list",
            "--tags",
            &format!("pool={value}"),
            "-f",
            "value",
            "-c",
            "Name",
        ])?
        .lines()
        .all(|n| n == "impostor")
    {
        anyhow::ensure!(Instant::now() < deadline, "the pool {value} did not empty");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_scales_out_and_in_with_floating_ips_and_touches_nothing_else() -> anyhow::Result<()>
{
    let _cloud = CLOUD.read().await;
    // What a failed earlier run may have left.
    let target = connect("web").await?;
    emptied(&target, "web").await?;
    for id in openstack(&[
        "server",
        "list",
        "--name",
        "^impostor$",
        "-f",
        "value",
        "-c",
        "ID",
    ])?
    .lines()
    {
        openstack(&["server", "delete", "--wait", id])?;
    }
    // An impostor: tagged like the pool but with other metadata. It must never be counted,
    // addressed or deleted.
    openstack(&[
        "server",
        "create",
        "--flavor",
        "m1.tiny",
        "--image",
        "tiny",
        "--network",
        "private",
        "--tag",
        "pool=web",
        "--property",
        "pool=impostor",
        "impostor",
    ])?;
    assert_eq!(
        target.observe().await?.current,
        0,
        "the impostor is not in the pool"
    );

    // Two servers: counted at once while they build, then ACTIVE with floating addresses.
    let before = target.observe().await?;
    target.scale(&before, 2, &[]).await?;
    let building = target.observe().await?;
    assert_eq!(building.current, 2, "BUILD servers count: {building:?}");
    let up = settled(&target, 2).await?;
    for replica in &up.replicas {
        assert_eq!(replica.labels.get("pool").map(String::as_str), Some("web"));
        assert!(
            replica
                .address
                .as_deref()
                .is_some_and(|a| a.starts_with("172.24.4.")),
            "a floating address: {replica:?}"
        );
    }
    assert_eq!(target.floating_addresses().await?.len(), 2);

    // Scale in with a removal list: the named server goes, its floating IP is released.
    let named = up.replicas[0].name.clone();
    target.scale(&up, 1, std::slice::from_ref(&named)).await?;
    let after = settled(&target, 1).await?;
    assert_ne!(after.replicas[0].name, named);
    assert_eq!(
        target.floating_addresses().await?.len(),
        1,
        "no floating IP leaked"
    );

    // The token is revoked under the target: the next call gets a 401, renews and goes on.
    let (token, _) = target.session().token_for("compute", None).await?;
    let issued = target.session().tokens_issued();
    openstack(&["token", "revoke", &token])?;
    assert_eq!(target.observe().await?.current, 1);
    assert_eq!(target.session().tokens_issued(), issued + 1, "renewed once");
    // Over quota: refused with Nova's message, and the pool is as it was.
    // The quota set to what the project uses now (the impostor and one server), with no other
    // test's server alive.
    drop(_cloud);
    let quota = CLOUD.write().await;
    let used = openstack(&["server", "list", "-f", "value", "-c", "ID"])?
        .lines()
        .count();
    openstack(&["quota", "set", "--instances", &used.to_string(), "admin"])?;
    let seen = target.observe().await?;
    let refused = target.scale(&seen, 2, &[]).await;
    openstack(&["quota", "set", "--instances", "20", "admin"])?;
    drop(quota);
    let _cloud = CLOUD.read().await;
    assert!(
        matches!(&refused, Err(TargetError::Refused(m)) if m.contains("Quota exceeded")),
        "{refused:?}"
    );
    assert_eq!(target.observe().await?.current, 1);
    // Down to zero: every pool server and floating IP gone, the impostor untouched.
    emptied(&target, "web").await?;
    assert!(
        openstack(&["server", "list", "-f", "value", "-c", "Name"])?
            .lines()
            .any(|n| n == "impostor")
    );
    openstack(&["server", "delete", "--wait", "impostor"])?;
    Ok(())
}

#[tokio::test]
async fn unknown_names_and_bad_credentials_are_refused_by_name() -> anyhow::Result<()> {
    let credentials = Credentials::from_clouds_file(&cloud()?, "admin")?;
    let mut bad = spec("x");
    bad.flavor = "m9.huge".into();
    let err = OpenStackTarget::connect_with(bad, credentials.clone(), None)
        .await
        .err();
    assert!(
        matches!(&err, Some(TargetError::Refused(m)) if m.contains("no flavor \"m9.huge\"")),
        "{err:?}"
    );
    let mut bad = spec("x");
    bad.network = "nowhere".into();
    let err = OpenStackTarget::connect_with(bad, credentials.clone(), None)
        .await
        .err();
    assert!(
        matches!(&err, Some(TargetError::Refused(m)) if m.contains("no network \"nowhere\"")),
        "{err:?}"
    );
    // By id as well as by name (ids are read directly, names listed server-side).
    let network = openstack(&["network", "show", "private", "-f", "value", "-c", "id"])?;
    let mut by_id = spec("x");
    by_id.flavor = "1".into();
    by_id.network = network;
    let target = OpenStackTarget::connect_with(by_id, credentials.clone(), None).await?;
    // User data over Nova's limit is refused before anything is created.
    let dir = tempfile::tempdir()?;
    let big = dir.path().join("cloud-init.yaml");
    std::fs::write(&big, vec![b'#'; 50_000])?;
    let mut heavy = spec("x");
    heavy.user_data_file = Some(big);
    let heavy = OpenStackTarget::connect_with(heavy, credentials.clone(), None).await?;
    let seen = heavy.observe().await?;
    let refused = heavy.scale(&seen, 1, &[]).await;
    assert!(
        matches!(&refused, Err(TargetError::Refused(m)) if m.contains("over Nova's 49151")),
        "{refused:?}"
    );
    assert_eq!(target.observe().await?.current, 0, "nothing was created");
    let text = std::fs::read_to_string(cloud()?)?.replace("password: secret", "password: wrong");
    std::fs::write(dir.path().join("clouds.yaml"), text)?;
    let wrong = Credentials::from_clouds_file(&dir.path().join("clouds.yaml"), "admin")?;
    let err = OpenStackTarget::connect_with(spec("x"), wrong, None)
        .await
        .err();
    let message = format!("{err:?}");
    assert!(
        matches!(&err, Some(TargetError::Refused(m)) if m.contains("keystone refused")),
        "{message}"
    );
    assert!(
        !message.contains("wrong"),
        "the password is not in the error: {message}"
    );

    // An application credential (id and secret, no project: it is scoped by itself) works
    // as a password does.
    let made = openstack(&[
        "application",
        "credential",
        "create",
        &format!("wasmscaler-{}", std::process::id()),
        // The role named, not taken from the CLI's token: once, on a loaded machine, that
        // token listed a role the user does not hold and keystone refused the credential.
        "--role",
        "admin",
        "-f",
        "value",
        "-c",
        "id",
        "-c",
        "secret",
    ])?;
    let mut fields = made.lines();
    let (id, secret) = (
        fields.next().unwrap_or_default(),
        fields.next().unwrap_or_default(),
    );
    let yaml = format!(
        "clouds:\n  app:\n    auth_type: v3applicationcredential\n    auth:\n      auth_url: http://127.0.0.1:5000/v3\n      application_credential_id: {id}\n      application_credential_secret: {secret}\n    region_name: RegionOne\n"
    );
    std::fs::write(dir.path().join("app.yaml"), yaml)?;
    let app = Credentials::from_clouds_file(&dir.path().join("app.yaml"), "app")?;
    assert!(!format!("{app:?}").contains(secret), "the secret is hidden");
    let target = OpenStackTarget::connect_with(spec("app"), app, None).await?;
    assert_eq!(target.observe().await?.current, 0);
    Ok(())
}

/// SimpleScaleVM end to end: the `capacity` guest decides for an OpenStack pool. The servers
/// boot nothing, so their capacity API is a mock on loopback, which the guest reaches through
/// its allow-list (`apiUrl`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_capacity_guest_scales_an_openstack_pool() -> anyhow::Result<()> {
    let _cloud = CLOUD.read().await;
    let guest = test_sandbox()?
        .load_file(&build_rust_guest("guests/capacity")?)
        .await?
        .component;
    let mock = JsonServer::start()?;
    let target = Arc::new(connect("capacity").await?);
    emptied(&target, "capacity").await?;
    // The pool starts with one server (an autoscaler does not scale up from zero).
    target.scale(&target.observe().await?, 1, &[]).await?;
    let first = settled(&target, 1).await?.replicas[0].name.clone();
    mock.route(
        &format!("/{first}/status"),
        200,
        r#"{"available": 0, "terminate": false}"#,
    );

    let mut spec = AutoscalerSpec::new("capacity", placeholder_target(), "unused.wasm", 4);
    spec.scaling.config = [
        ("replicaCapacity", "4"),
        ("minAvailableResources", "2"),
        ("apiUrl", &format!("http://{}/{{name}}/status", mock.addr)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    spec.scaling.capabilities = Capabilities {
        http: Some(HttpGrant::allow([format!("http://{}/*/status", mock.addr)])),
        ..Default::default()
    };
    spec.scaling.behavior.scale_down = Some(wasmscaler::engine::behavior::ScalingRules {
        stabilization_window_seconds: Some(0),
        ..Default::default()
    });
    let autoscaler =
        Autoscaler::builder(spec, target.clone(), Guests::pair(guest.clone(), guest)).build()?;

    // Nothing available: one more server.
    let record = autoscaler.run_once().await;
    assert_eq!(
        record.outcome,
        Outcome::Scaled { from: 1, to: 2 },
        "{record:?}"
    );
    let two = settled(&target, 2).await?;
    let second = two
        .replicas
        .iter()
        .map(|r| r.name.clone())
        .find(|n| *n != first)
        .unwrap_or_default();
    // Eight available, and the first asks to be terminated: it goes, the second stays.
    mock.route(
        &format!("/{first}/status"),
        200,
        r#"{"available": 4, "terminate": true}"#,
    );
    mock.route(
        &format!("/{second}/status"),
        200,
        r#"{"available": 4, "terminate": false}"#,
    );
    let record = autoscaler.run_once().await;
    assert_eq!(
        record.outcome,
        Outcome::Scaled { from: 2, to: 1 },
        "{record:?}"
    );
    let left = settled(&target, 1).await?;
    assert_eq!(left.replicas[0].name, second);

    emptied(&target, "capacity").await?;
    Ok(())
}

/// Passes every event on to the real handler, and records it with the server as it was right
/// after the handler finished (still there, its handler state persisted in its metadata).
struct Recorded {
    handler: wasmscaler::hooks::HostDelivered,
    seen: std::sync::Mutex<Vec<Delivery>>,
}

#[derive(Debug, Clone)]
struct Delivery {
    transition: Transition,
    server: String,
    /// The server's place in the lifecycle when the event began.
    lifecycle_state: String,
    /// The server's tags once the handler finished.
    after: std::collections::BTreeMap<String, String>,
    defaulted: Option<String>,
}

impl LifecycleDelivery for Recorded {
    fn deliver(
        &self,
        transition: Transition,
        instance: Instance,
        store: Arc<dyn InstanceStore>,
    ) -> wasmscaler::sandbox::BoxFuture<'_, Delivered> {
        Box::pin(async move {
            let (server, lifecycle_state) = (instance.id.clone(), instance.lifecycle_state.clone());
            let delivered = self
                .handler
                .deliver(transition, instance, store.clone())
                .await;
            let after = store.instance(&server, "").await.tags;
            if let Ok(mut seen) = self.seen.lock() {
                seen.push(Delivery {
                    transition,
                    server,
                    lifecycle_state,
                    after,
                    defaulted: delivered.defaulted.clone(),
                });
            }
            delivered
        })
    }
}

impl Recorded {
    fn seen(&self) -> Vec<Delivery> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// A pool whose `lifecycle:` handler is the `lifecycle-join` guest, with `metadata` as the
/// hook's metadata.
async fn hooked(
    value: &str,
    handler: &Arc<wasmscaler::sandbox::GuestComponent>,
    metadata: Option<&str>,
) -> anyhow::Result<(OpenStackTarget, Arc<Recorded>)> {
    let lifecycle: DeliveredLifecycleSpec = serde_json::from_value(serde_json::json!({
        "handler": "lifecycle-join.wasm",
        "metadata": metadata,
    }))?;
    let mut spec = spec(value);
    spec.lifecycle = Some(Box::new(lifecycle.clone()));
    let recorded = Arc::new(Recorded {
        handler: wasmscaler::hooks::HostDelivered::new(value, lifecycle, handler.clone())?,
        seen: Default::default(),
    });
    let credentials = Credentials::from_clouds_file(&cloud()?, "admin")?;
    let target = OpenStackTarget::connect_with(spec, credentials, Some(recorded.clone())).await?;
    Ok((target, recorded))
}

/// A lifecycle handler that never finishes: a host killed in the middle of an event.
#[derive(Default)]
struct Stuck(std::sync::Mutex<Vec<(Transition, String)>>);

impl LifecycleDelivery for Stuck {
    fn deliver(
        &self,
        transition: Transition,
        instance: Instance,
        _: Arc<dyn InstanceStore>,
    ) -> wasmscaler::sandbox::BoxFuture<'_, Delivered> {
        if let Ok(mut started) = self.0.lock() {
            started.push((transition, instance.id));
        }
        Box::pin(std::future::pending())
    }
}

impl Stuck {
    fn started(&self) -> Vec<(Transition, String)> {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// The pool `value` as a host whose lifecycle events never finish sees it.
async fn stuck_host(value: &str) -> anyhow::Result<(OpenStackTarget, Arc<Stuck>)> {
    let mut spec = spec(value);
    spec.lifecycle = Some(Box::new(serde_json::from_value(
        serde_json::json!({ "handler": "never-loaded.wasm" }),
    )?));
    let stuck = Arc::new(Stuck::default());
    let credentials = Credentials::from_clouds_file(&cloud()?, "admin")?;
    let target = OpenStackTarget::connect_with(spec, credentials, Some(stuck.clone())).await?;
    Ok((target, stuck))
}

/// Nova's metadata of a server, as `openstack server show` prints it.
fn nova_metadata(server: &str) -> anyhow::Result<serde_json::Value> {
    let shown: serde_json::Value = serde_json::from_str(&openstack(&[
        "server",
        "show",
        server,
        "-f",
        "json",
        "-c",
        "properties",
    ])?)?;
    Ok(shown["properties"].clone())
}

/// OpenStack has no lifecycle hooks: the host delivers `launch` once a server it created is
/// ACTIVE (not ready until the handler continues) and `terminate` before it deletes one; a
/// handler that fails gets the default result (ABANDON: the new server is deleted). Then
/// `join` on one of the servers, as `wasmscaler agent --provider openstack` runs it, its id
/// read from the metadata service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_delivers_launch_and_terminate_around_its_creates_and_deletes()
-> anyhow::Result<()> {
    let _cloud = CLOUD.read().await;
    let handler = test_sandbox()?
        .load_file(&build_rust_guest("guests/lifecycle-join")?)
        .await?
        .component;
    let (target, recorded) = hooked("hooked", &handler, None).await?;
    let (failing, failed) = hooked("hooked-bad", &handler, Some(r#"{"fail":"trap"}"#)).await?;
    emptied(&target, "hooked").await?;
    emptied(&failing, "hooked-bad").await?;

    target.scale(&target.observe().await?, 2, &[]).await?;
    failing.scale(&failing.observe().await?, 1, &[]).await?;
    // Created servers count at once, launched or not.
    assert_eq!(target.observe().await?.current, 2);
    let two = settled(&target, 2).await?;
    // (Servers a killed run left were drained and deleted by `emptied`.)
    let launches: Vec<Delivery> = recorded
        .seen()
        .into_iter()
        .filter(|d| d.transition == Transition::Launch)
        .collect();
    assert_eq!(launches.len(), 2, "one launch per server: {launches:?}");
    let launch_state = state_tag(Transition::Launch);
    for launch in &launches {
        assert_eq!(launch.lifecycle_state, "Pending:Wait", "{launch:?}");
        assert_eq!(
            launch.after.get(&launch_state).map(String::as_str),
            Some("registered"),
            "the handler's state is kept on the server: {launch:?}"
        );
    }
    for replica in &two.replicas {
        let metadata = nova_metadata(&replica.name)?;
        assert_eq!(metadata["wasmscaler.dev:lifecycle-state"], "InService");
        assert_eq!(metadata["wasmscaler.dev:launch-state"], "registered");
    }

    // The failing handler's server is deleted: ABANDON is the default result.
    let deadline = Instant::now() + Duration::from_secs(90);
    // Observing, as every run does, is what starts the launch once the server is ACTIVE.
    while failing.observe().await?.current != 0 || failed.seen().is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the abandoned server is still there: {:?}",
            failed.seen()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let abandoned = &failed.seen()[0];
    assert_eq!(abandoned.transition, Transition::Launch);
    assert!(
        abandoned
            .defaulted
            .as_deref()
            .is_some_and(|why| why.contains("trap")),
        "{abandoned:?}"
    );

    // join, on the first server, its id from the metadata service.
    let first = two.replicas[0].name.clone();
    let first_id = openstack(&["server", "show", &first, "-f", "value", "-c", "id"])?;
    let metadata_service = JsonServer::start()?;
    metadata_service.route(
        "/openstack/latest/meta_data.json",
        200,
        format!(r#"{{"uuid": "{first_id}", "name": "{first}"}}"#),
    );
    let no_drive = tempfile::tempdir()?;
    let id = wasmscaler::targets::openstack::own_instance_id(InstanceIdSources {
        config_drive: no_drive.path(),
        metadata_url: &format!("http://{}", metadata_service.addr),
    })
    .await?;
    assert_eq!(id, first_id);
    let credentials = Credentials::from_clouds_file(&cloud()?, "admin")?;
    let stepper = wasmscaler::hooks::Stepper {
        handler: handler.clone(),
        env: Default::default(),
        store: Arc::new(NovaInstances::new(
            Arc::new(Api::new(credentials)?),
            None,
            4,
        )),
        max_steps: 20,
    };
    assert_eq!(
        wasmscaler::hooks::join(&stepper, &id, None).await?,
        Joined::Enrolled
    );
    let metadata = nova_metadata(&first)?;
    assert_eq!(metadata["wasmscaler.dev:enrolled"], "true");
    assert_eq!(metadata["wasmscaler.dev:join-state"], "ready");
    assert!(metadata["wasmscaler.dev:private-address"].is_string());
    assert!(matches!(
        wasmscaler::hooks::join(&stepper, &id, None).await?,
        Joined::AlreadyEnrolled { state: Some(state) } if state == "ready"
    ));

    // Scale-in by a host killed mid-event: its handler never finishes, and the host goes.
    // The next host (`target`) finds the server marked terminating, does not count it, and
    // drains and deletes it.
    let (killed, stuck) = stuck_host("hooked").await?;
    let seen = killed.observe().await?;
    killed.scale(&seen, 1, std::slice::from_ref(&first)).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while stuck.started().is_empty() {
        anyhow::ensure!(Instant::now() < deadline, "the terminate never began");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stuck.started(), [(Transition::Terminate, first_id.clone())]);
    drop(killed);
    assert_eq!(
        nova_metadata(&first)?["wasmscaler.dev:lifecycle-state"],
        "Terminating:Wait"
    );
    let now = target.observe().await?;
    assert_eq!(now.current, 1, "a terminating server no longer counts");
    assert!(now.replicas.iter().all(|r| r.name != first));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !openstack(&[
        "server",
        "list",
        "--tags",
        "pool=hooked",
        "-f",
        "value",
        "-c",
        "Name",
    ])?
    .lines()
    .all(|n| n != first)
    {
        anyhow::ensure!(Instant::now() < deadline, "{first} was not deleted");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let terminate = recorded
        .seen()
        .into_iter()
        .find(|d| d.transition == Transition::Terminate && d.server == first_id)
        .ok_or_else(|| anyhow::anyhow!("no terminate event: {:?}", recorded.seen()))?;
    assert_eq!(terminate.lifecycle_state, "Terminating:Wait");
    assert_eq!(
        terminate
            .after
            .get(&state_tag(Transition::Terminate))
            .map(String::as_str),
        Some("drained"),
        "drained while the server still existed: {terminate:?}"
    );
    assert!(terminate.defaulted.is_none());

    emptied(&target, "hooked").await?;
    emptied(&failing, "hooked-bad").await?;
    Ok(())
}

/// The example config parses, and a `lifecycle:` handler that is not one is refused by name
/// when the host starts, before any server is touched (no cloud needed).
#[tokio::test]
async fn the_example_config_parses_and_a_wrong_handler_is_refused() -> anyhow::Result<()> {
    let path = wasmscaler_tests::repo_root().join("guests/demo/openstack.yaml");
    let mut config = wasmscaler::config::ConfigFile::load(&path)?;
    let wasmscaler::targets::TargetSpec::Openstack(openstack) = &mut config.autoscalers[0].target
    else {
        anyhow::bail!(
            "not an openstack target: {:?}",
            config.autoscalers[0].target
        );
    };
    assert_eq!(openstack.pool.value, "workers");
    let lifecycle = openstack
        .lifecycle
        .as_mut()
        .ok_or_else(|| anyhow::anyhow!("no lifecycle"))?;
    assert_eq!(lifecycle.heartbeat_timeout.0, Duration::from_secs(600));

    // The policy given as the handler: it exports no lifecycle interface.
    let capacity = build_rust_guest("guests/capacity")?;
    lifecycle.handler = capacity.as_path().into();
    config.autoscalers[0].scaling.policy = Some(capacity.as_path().into());
    let state = tempfile::tempdir()?;
    config.state_dir = state.path().to_owned();
    config.sandbox.compile = wasmscaler_tests::compile_config();
    config.sandbox.cache_dir = Some(wasmscaler_tests::test_cache_dir());
    let refused = |config: wasmscaler::config::ConfigFile| async move {
        wasmscaler::host::Host::from_config(&config, None)
            .await
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default()
    };
    let error = refused(config.clone()).await;
    assert!(
        error.contains("workers: target.openstack.lifecycle: capability `http` is not granted"),
        "{error}"
    );
    if let wasmscaler::targets::TargetSpec::Openstack(openstack) = &mut config.autoscalers[0].target
        && let Some(lifecycle) = openstack.lifecycle.as_mut()
    {
        lifecycle.capabilities.http = Some(HttpGrant::allow(["http://*/status"]));
    }
    let error = refused(config).await;
    assert!(
        error.contains("workers: target.openstack.lifecycle: the handler does not export wasmscaler:policy/lifecycle"),
        "{error}"
    );
    Ok(())
}
