//! Local processes as replicas: the embedded default, no cluster needed.
//!
//! Runs N copies of a command, each with `REPLICA_INDEX` and `PORT` in its environment
//! (`PORT = basePort + index`, address `127.0.0.1:PORT`), restarts crashed ones (with a
//! crash-loop backoff, as the kubelet does), and stops surplus ones gracefully: SIGTERM, then
//! SIGKILL after the grace period, to the replica's whole process group. On scale-in the
//! replicas named in the removal list go first, then the highest indexes.
//!
//! Replicas never outlive their host: each runs in its own process group with a parent-death
//! signal (SIGKILL when the host dies, even by SIGKILL), and the groups are recorded in a file
//! so that a restarted host reclaims whatever a crash left behind (a replica's own children).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use super::{Observation, Target, TargetError, TargetIdentity};
use crate::contract::model::Replica;
use crate::duration::HumanDuration;
use crate::sandbox::BoxFuture;

/// `target.local` in the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalSpec {
    /// The program and its arguments.
    pub command: Vec<String>,
    /// Extra environment for every replica.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory (default: the host's).
    #[serde(default)]
    pub working_dir: Option<PathBuf>,
    /// Port of replica 0; replica `i` gets `basePort + i`.
    pub base_port: u16,
    /// Time between SIGTERM and SIGKILL when stopping a replica (default 5s).
    #[serde(default = "default_grace")]
    pub grace_period: HumanDuration,
    /// Replicas to start with (default: the autoscaler's minimum).
    #[serde(default)]
    pub initial_replicas: Option<u32>,
    /// Pass the replicas' stdout/stderr through instead of discarding them.
    #[serde(default)]
    pub inherit_output: bool,
}

fn default_grace() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

struct Slot {
    /// The running process; `None` while a crashed replica waits out its backoff.
    child: Option<Child>,
    started_ms: i64,
    restarts: u32,
    /// Crashes in a row, each within [`STABLE_AFTER`] of its start.
    quick_crashes: u32,
    /// When a crashed replica may start again.
    restart_at: Option<std::time::Instant>,
}

/// First wait before restarting a replica that crashed soon after starting; it doubles with
/// every further quick crash up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between restarts of a crash-looping replica.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A replica that ran this long before exiting was not crash-looping: its backoff resets.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// The wait before the next start after `quick_crashes` crashes in a row.
fn backoff(quick_crashes: u32) -> Duration {
    if quick_crashes <= 1 {
        return Duration::ZERO;
    }
    FIRST_BACKOFF
        .saturating_mul(1 << (quick_crashes - 2).min(16))
        .min(MAX_BACKOFF)
}

/// The environment variable naming the target a replica belongs to: reclaiming a recorded
/// process group checks it, so a reused process id is never killed.
const REPLICA_OF: &str = "WASMSCALER_REPLICA_OF";

struct State {
    slots: BTreeMap<u32, Slot>,
    /// The count the target is set to; crashed replicas are restarted to keep it.
    desired: u32,
}

/// N local processes.
pub struct LocalProcesses {
    name: String,
    spec: LocalSpec,
    state: Arc<Mutex<State>>,
    stop: CancellationToken,
    /// Where the replicas' process groups are recorded, if anywhere.
    groups_file: Option<PathBuf>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl LocalProcesses {
    /// Starts `initial` replicas and a supervisor that restarts crashed ones.
    pub fn start(name: &str, spec: LocalSpec, initial: u32) -> Result<Arc<Self>, TargetError> {
        Self::start_recorded(name, spec, initial, None)
    }

    /// [`LocalProcesses::start`], recording the replicas' process groups in `groups_file`:
    /// groups a previous host left there (it crashed) are killed first.
    pub fn start_recorded(
        name: &str,
        spec: LocalSpec,
        initial: u32,
        groups_file: Option<PathBuf>,
    ) -> Result<Arc<Self>, TargetError> {
        if spec.command.is_empty() {
            return Err(TargetError::Refused("target.local.command is empty".into()));
        }
        if let Some(file) = &groups_file {
            reclaim(name, file);
        }
        let target = Arc::new(LocalProcesses {
            name: name.to_owned(),
            spec,
            state: Arc::new(Mutex::new(State {
                slots: BTreeMap::new(),
                desired: 0,
            })),
            stop: CancellationToken::new(),
            groups_file,
        });
        target.grow_to(initial)?;
        let supervisor = Arc::downgrade(&target);
        let stop = target.stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let Some(target) = supervisor.upgrade() else {
                    break;
                };
                target.restart_crashed();
            }
        });
        Ok(target)
    }

    fn port(&self, index: u32) -> Result<u16, TargetError> {
        u16::try_from(u32::from(self.spec.base_port) + index).map_err(|_| {
            TargetError::Refused(format!("replica {index} would need a port above 65535"))
        })
    }

    fn replica_name(&self, index: u32) -> String {
        format!("{}-{index}", self.name)
    }

    fn spawn(&self, index: u32) -> Result<Child, TargetError> {
        let port = self.port(index)?;
        let mut command = Command::new(&self.spec.command[0]);
        command
            .args(&self.spec.command[1..])
            .envs(&self.spec.env)
            .env("REPLICA_INDEX", index.to_string())
            .env("PORT", port.to_string())
            .env(REPLICA_OF, &self.name)
            .stdin(Stdio::null())
            // Its own group: stopping it reaches its children too.
            .process_group(0)
            // A host that dies abruptly must not leave orphans holding ports.
            .kill_on_drop(true);
        let parent = nix::unistd::getpid();
        // SAFETY: between fork and exec only async-signal-safe calls are made (prctl and
        // getppid), with no allocation.
        unsafe {
            command.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
                // The host died before the signal was armed: it would never come, so do not
                // start (the spawn fails).
                if nix::unistd::getppid() != parent {
                    return Err(nix::errno::Errno::ESRCH.into());
                }
                Ok(())
            });
        }
        if !self.spec.inherit_output {
            command.stdout(Stdio::null()).stderr(Stdio::null());
        }
        if let Some(dir) = &self.spec.working_dir {
            command.current_dir(dir);
        }
        command.spawn().map_err(|e| {
            TargetError::Unavailable(format!("cannot start {:?}: {e}", self.spec.command[0]))
        })
    }

    /// Writes the running replicas' process groups (each replica leads its own).
    fn record_groups(&self, state: &State) {
        let Some(file) = &self.groups_file else {
            return;
        };
        let groups: Vec<u32> = state
            .slots
            .values()
            .filter_map(|s| s.child.as_ref().and_then(Child::id))
            .collect();
        let text = serde_json::to_string(&groups).unwrap_or_default();
        if let Err(error) = crate::fsutil::write_atomic(file, text.as_bytes()) {
            tracing::warn!(target = %self.name, %error, "cannot record the replicas' process groups");
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>, TargetError> {
        self.state
            .lock()
            .map_err(|_| TargetError::Unavailable("local target state poisoned".into()))
    }

    /// Starts replicas at the lowest free indexes until there are `n`.
    fn grow_to(&self, n: u32) -> Result<(), TargetError> {
        let mut state = self.lock()?;
        state.desired = n;
        let mut index = 0;
        while (state.slots.len() as u32) < n {
            if let std::collections::btree_map::Entry::Vacant(slot) = state.slots.entry(index) {
                let child = self.spawn(index)?;
                tracing::info!(target = %self.name, replica = %self.replica_name(index), "replica started");
                slot.insert(Slot {
                    child: Some(child),
                    started_ms: now_ms(),
                    restarts: 0,
                    quick_crashes: 0,
                    restart_at: None,
                });
            }
            index += 1;
        }
        self.record_groups(&state);
        Ok(())
    }

    /// Notices exited replicas and starts them again once their backoff has passed.
    fn restart_crashed(&self) {
        let Ok(mut state) = self.lock() else { return };
        let now = std::time::Instant::now();
        let mut changed = false;
        let indexes: Vec<u32> = state.slots.keys().copied().collect();
        for index in indexes {
            let Some(slot) = state.slots.get_mut(&index) else {
                continue;
            };
            if let Some(child) = slot.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let ran_ms = now_ms().saturating_sub(slot.started_ms);
                slot.quick_crashes = if ran_ms >= STABLE_AFTER.as_millis() as i64 {
                    1
                } else {
                    slot.quick_crashes + 1
                };
                let wait = backoff(slot.quick_crashes);
                slot.child = None;
                slot.restart_at = Some(now + wait);
                changed = true;
                tracing::warn!(target = %self.name, replica = %self.replica_name(index), %status, restart_in = ?wait, "replica exited");
            }
            if slot.child.is_none() && slot.restart_at.is_some_and(|at| at <= now) {
                match self.spawn(index) {
                    Ok(child) => {
                        slot.child = Some(child);
                        slot.started_ms = now_ms();
                        slot.restarts += 1;
                        slot.restart_at = None;
                        changed = true;
                    }
                    Err(error) => {
                        tracing::error!(target = %self.name, %error, "cannot restart replica");
                        slot.quick_crashes += 1;
                        slot.restart_at = Some(now + backoff(slot.quick_crashes));
                    }
                }
            }
        }
        if changed {
            self.record_groups(&state);
        }
    }

    /// Chooses the replicas to stop: the named ones first, then the highest indexes.
    fn victims(&self, slots: &BTreeMap<u32, Slot>, n: u32, remove_first: &[String]) -> Vec<u32> {
        let surplus = (slots.len() as u32).saturating_sub(n) as usize;
        let mut chosen: Vec<u32> = Vec::new();
        for name in remove_first {
            if let Some(index) = slots.keys().find(|i| self.replica_name(**i) == *name)
                && !chosen.contains(index)
                && chosen.len() < surplus
            {
                chosen.push(*index);
            }
        }
        for index in slots.keys().rev() {
            if chosen.len() >= surplus {
                break;
            }
            if !chosen.contains(index) {
                chosen.push(*index);
            }
        }
        chosen
    }

    async fn stop_children(&self, children: Vec<(u32, Option<Child>)>) {
        let grace = self.spec.grace_period.0;
        let stops = children.into_iter().map(|(index, child)| {
            let name = self.replica_name(index);
            async move {
                let Some(mut child) = child else { return };
                let group = child.id().and_then(|p| i32::try_from(p).ok());
                if let Some(group) = group {
                    signal_group(group, nix::sys::signal::Signal::SIGTERM);
                }
                match tokio::time::timeout(grace, child.wait()).await {
                    Ok(_) => tracing::info!(replica = %name, "replica stopped"),
                    Err(_) => {
                        let _ = child.kill().await;
                        tracing::warn!(replica = %name, "replica ignored SIGTERM; killed");
                    }
                }
                // Whatever the replica started dies with it.
                if let Some(group) = group {
                    signal_group(group, nix::sys::signal::Signal::SIGKILL);
                }
            }
        });
        futures::future::join_all(stops).await;
        if let Ok(state) = self.lock() {
            self.record_groups(&state);
        }
    }
}

fn signal_group(group: i32, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(group), signal);
}

/// Kills the process groups a previous host of target `name` recorded in `file`, checking
/// that each still holds a replica of `name` (process ids are reused).
fn reclaim(name: &str, file: &std::path::Path) {
    let Ok(text) = std::fs::read_to_string(file) else {
        return;
    };
    let groups: Vec<u32> = serde_json::from_str(&text).unwrap_or_default();
    let marker = format!("{REPLICA_OF}={name}");
    for group in groups {
        let Ok(group) = i32::try_from(group) else {
            continue;
        };
        let members = group_members(group);
        let ours = members.iter().any(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == marker.as_bytes()))
        });
        if ours {
            tracing::warn!(target = %name, group, processes = members.len(), "reclaiming replicas a previous host left running");
            signal_group(group, nix::sys::signal::Signal::SIGKILL);
        }
    }
    let _ = std::fs::remove_file(file);
}

/// Process ids in process group `group` (from /proc).
fn group_members(group: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            // Field 5 of /proc/PID/stat is the process group; the command (field 2) may
            // contain spaces, so count from its closing parenthesis.
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(2)?.parse::<i32>().ok())
                    == Some(group)
            })
        })
        .collect()
}

async fn accepting(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr)
        )
        .await,
        Ok(Ok(_))
    )
}

impl Target for LocalProcesses {
    fn identity(&self) -> TargetIdentity {
        TargetIdentity {
            kind: "local".into(),
            name: self.name.clone(),
            namespace: String::new(),
        }
    }

    fn observe(&self) -> BoxFuture<'_, Result<Observation, TargetError>> {
        Box::pin(async move {
            let (desired, slots): (u32, Vec<(u32, i64, u32, bool)>) = {
                let mut state = self.lock()?;
                let desired = state.desired;
                let slots = state
                    .slots
                    .iter_mut()
                    .map(|(i, s)| {
                        (
                            *i,
                            s.started_ms,
                            s.restarts,
                            s.child
                                .as_mut()
                                .is_some_and(|c| matches!(c.try_wait(), Ok(None))),
                        )
                    })
                    .collect();
                (desired, slots)
            };
            // Readiness probes run concurrently: replicas still starting must not add their
            // probe timeouts up in front of every run.
            let probes = slots
                .into_iter()
                .map(|(index, started_ms, restarts, alive)| async move {
                    let addr = SocketAddr::from(([127, 0, 0, 1], self.port(index)?));
                    Ok(Replica {
                        name: self.replica_name(index),
                        ready: alive && accepting(addr).await,
                        start_time_ms: Some(started_ms),
                        labels: BTreeMap::from([
                            ("index".to_owned(), index.to_string()),
                            ("restarts".to_owned(), restarts.to_string()),
                        ]),
                        address: Some(addr.to_string()),
                    })
                });
            let replicas = futures::future::join_all(probes)
                .await
                .into_iter()
                .collect::<Result<Vec<_>, TargetError>>()?;
            Ok(Observation {
                current: desired,
                replicas,
                object: serde_json::json!({ "command": self.spec.command, "basePort": self.spec.base_port }).into(),
                version: None,
            })
        })
    }

    fn scale<'a>(
        &'a self,
        observed: &'a Observation,
        replicas: u32,
        remove_first: &'a [String],
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        Box::pin(async move {
            let to_stop = {
                let mut state = self.lock()?;
                if state.desired != observed.current {
                    return Err(TargetError::Conflict(format!(
                        "set to {} replicas since observed at {}",
                        state.desired, observed.current
                    )));
                }
                if replicas >= state.slots.len() as u32 {
                    drop(state);
                    return self.grow_to(replicas);
                }
                let victims = self.victims(&state.slots, replicas, remove_first);
                state.desired = replicas;
                victims
                    .into_iter()
                    .filter_map(|i| state.slots.remove(&i).map(|s| (i, s.child)))
                    .collect::<Vec<_>>()
            };
            self.stop_children(to_stop).await;
            Ok(())
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.stop.cancel();
            let children: Vec<(u32, Option<Child>)> = match self.lock() {
                Ok(mut state) => {
                    state.desired = 0;
                    std::mem::take(&mut state.slots)
                        .into_iter()
                        .map(|(i, s)| (i, s.child))
                        .collect()
                }
                Err(_) => Vec::new(),
            };
            self.stop_children(children).await;
        })
    }
}

/// Indexes currently running, for tests and the API.
impl LocalProcesses {
    /// The running replicas' indexes.
    pub fn indexes(&self) -> BTreeSet<u32> {
        self.lock()
            .map(|s| s.slots.keys().copied().collect())
            .unwrap_or_default()
    }

    /// The process id of replica `index`, if it runs.
    pub fn pid(&self, index: u32) -> Option<u32> {
        self.lock()
            .ok()?
            .slots
            .get(&index)
            .and_then(|s| s.child.as_ref()?.id())
    }
}
