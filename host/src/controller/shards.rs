//! Sharding over controller replicas: every replica runs autoscalers, each autoscaler on one
//! replica at a time.
//!
//! - **Shards.** A resource belongs to shard `fnv1a(namespace/name) mod S`. Each shard is a
//!   Lease (`NAME-shard-K`) with the leader-election semantics of [`super::lease`]: its holder
//!   runs the shard's autoscalers and stops them before it can lose the lease; another
//!   replica takes it only once it is released or has expired by its own clock.
//! - **Members.** Each replica renews a member Lease (`NAME-member-S-IDENTITY`); the live ones
//!   (changed within a lease duration, by this replica's clock) are the members. Shards are
//!   spread over them by rendezvous hashing, so a member joining or leaving moves only its own
//!   share. A replica gives up a shard that is no longer its own only after stopping the
//!   shard's autoscalers; the new owner then finds it released.
//! - **Failure.** A replica that dies stops renewing: within a lease duration its member Lease
//!   and its shards' Leases expire, and the others take its shards over.
//! - **One shard count.** The count is in the member Leases' names; a replica acts only while
//!   every live member uses its count, so a rollout that changes it cannot run an autoscaler
//!   twice (the new replicas wait for the old ones to go).
//!
//! History moves with a shard: it lives in each resource's status.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::lease::{LeaderElector, LeaseEnd, LeaseSettings};
use super::reconciler::{ReconcileEnv, Reconciler};

/// FNV-1a (64 bit): stable across processes, versions and architectures, unlike std's
/// hashers, so every replica computes the same shard.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in *part {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        hash ^= 0xff;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The shard of resource `key` (`namespace/name`) among `shards`.
pub(crate) fn shard_of(key: &str, shards: u32) -> u32 {
    (fnv1a(&[key.as_bytes()]) % u64::from(shards.max(1))) as u32
}

/// The owner of each shard: rendezvous hashing (each shard prefers the members in the order
/// of their score) with bounded loads (no member takes more than `ceil(shards / members)`),
/// so the shares are even and every replica that sees the same members computes the same.
pub(crate) fn owners(shards: u32, members: &[String]) -> Vec<Option<&String>> {
    if members.is_empty() {
        return vec![None; shards as usize];
    }
    let cap = (shards as usize).div_ceil(members.len());
    let mut load = vec![0usize; members.len()];
    (0..shards)
        .map(|shard| {
            let mut ranked: Vec<usize> = (0..members.len()).collect();
            ranked.sort_by_key(|&i| {
                std::cmp::Reverse((
                    fnv1a(&[&shard.to_le_bytes(), members[i].as_bytes()]),
                    members[i].as_str(),
                ))
            });
            let chosen = ranked.into_iter().find(|&i| load[i] < cap)?;
            load[chosen] += 1;
            Some(&members[chosen])
        })
        .collect()
}

/// Sharding settings: the shard count and the lease timing and names.
#[derive(Debug, Clone)]
pub struct ShardSettings {
    /// Number of shards (the same on every replica).
    pub shards: u32,
    /// The lease base name, namespace, this replica's identity and the timing.
    pub lease: LeaseSettings,
}

impl ShardSettings {
    fn lease_for(&self, name: String) -> LeaseSettings {
        LeaseSettings {
            name,
            ..self.lease.clone()
        }
    }

    fn shard_lease(&self, shard: u32) -> String {
        format!("{}-shard-{shard}", self.lease.name)
    }

    fn member_prefix(&self) -> String {
        format!("{}-member-", self.lease.name)
    }

    fn member_lease(&self) -> String {
        format!(
            "{}{}-{}",
            self.member_prefix(),
            self.shards,
            self.lease.identity
        )
    }
}

/// A held shard: its term (the reconciler and the renewals) and how to end it.
struct Held {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// What this replica has seen of one member Lease.
struct Seen {
    version: String,
    at: Instant,
}

/// The live members and their shard counts, from the member Leases.
struct Members {
    api: Api<Lease>,
    prefix: String,
    seen: HashMap<String, Seen>,
    duration: Duration,
}

impl Members {
    /// (identity, shard count) of every member Lease that changed within a lease duration,
    /// and every Lease listed; member Leases dead for ten durations are deleted.
    async fn live(&mut self) -> Result<(Vec<(String, u32)>, Vec<Lease>), kube::Error> {
        let leases = self.api.list(&ListParams::default()).await?;
        let all = leases.items.clone();
        let mut live = Vec::new();
        let mut present = Vec::new();
        for lease in leases.items {
            let Some(name) = lease.metadata.name.clone() else {
                continue;
            };
            let Some((count, identity)) = name
                .strip_prefix(&self.prefix)
                .and_then(|rest| rest.split_once('-'))
                .and_then(|(count, identity)| Some((count.parse::<u32>().ok()?, identity)))
            else {
                continue;
            };
            present.push(name.clone());
            let version = lease.metadata.resource_version.clone().unwrap_or_default();
            let seen = self.seen.entry(name.clone()).or_insert_with(|| Seen {
                version: version.clone(),
                at: Instant::now(),
            });
            if seen.version != version {
                *seen = Seen {
                    version,
                    at: Instant::now(),
                };
            }
            let released = lease
                .spec
                .as_ref()
                .is_none_or(|s| s.holder_identity.is_none());
            if !released && seen.at.elapsed() < self.duration {
                live.push((identity.to_owned(), count));
            } else if seen.at.elapsed() >= self.duration * 10 {
                // Its replica is long gone (pods of a Deployment get new names).
                let _ = self.api.delete(&name, &DeleteParams::default()).await;
            }
        }
        self.seen.retain(|name, _| present.contains(name));
        live.sort();
        Ok((live, all))
    }
}

/// Runs this replica's share of the autoscalers until `stop`, then stops them all at once
/// and releases its shards and its membership.
pub async fn run(
    shared: Arc<ReconcileEnv>,
    lease_client: Client,
    settings: ShardSettings,
    stop: CancellationToken,
) {
    let api: Api<Lease> = Api::namespaced(lease_client.clone(), &settings.lease.namespace);
    let member = LeaderElector::new(
        lease_client.clone(),
        settings.lease_for(settings.member_lease()),
    );
    let electors: Vec<Arc<LeaderElector>> = (0..settings.shards)
        .map(|k| {
            Arc::new(LeaderElector::new(
                lease_client.clone(),
                settings.lease_for(settings.shard_lease(k)),
            ))
        })
        .collect();
    let mut members = Members {
        api: api.clone(),
        prefix: settings.member_prefix(),
        seen: HashMap::new(),
        duration: settings.lease.lease_duration,
    };
    let mut held: BTreeMap<u32, Held> = BTreeMap::new();
    let mut labelled = None;
    tracing::info!(identity = %settings.lease.identity, shards = settings.shards, "sharded controller starting");
    loop {
        // End the terms whose lease was lost (their tasks have finished).
        held.retain(|_, h| !h.task.is_finished());
        if let Err(error) = member.try_once().await {
            tracing::warn!(%error, "cannot renew this replica's membership");
        }
        match members.live().await {
            Ok((live, leases)) => {
                // Every shard Lease's last change, so a dead holder's expiry counts from it.
                for lease in &leases {
                    let name = lease.metadata.name.as_deref().unwrap_or_default();
                    let version = lease
                        .metadata
                        .resource_version
                        .as_deref()
                        .unwrap_or_default();
                    if let Some(k) = (0..settings.shards).find(|k| settings.shard_lease(*k) == name)
                    {
                        electors[k as usize].note_seen(version).await;
                    }
                }
                let mine = settings.lease.identity.clone();
                let mut names: Vec<String> = live.iter().map(|(m, _)| m.clone()).collect();
                if !names.contains(&mine) {
                    names.push(mine.clone());
                }
                let agreed = live.iter().all(|(_, count)| *count == settings.shards);
                if !agreed {
                    tracing::warn!(
                        members = ?live,
                        shards = settings.shards,
                        "live members use another shard count; taking no shard until they are gone"
                    );
                }
                names.sort();
                let owners = owners(settings.shards, &names);
                let mut handed_over = Vec::new();
                for k in 0..settings.shards {
                    let ours = agreed && owners[k as usize] == Some(&mine);
                    match (ours, held.contains_key(&k)) {
                        (true, false) => {
                            // Taken only once released or expired by our own clock.
                            let elector = &electors[k as usize];
                            if let Ok(true) = elector.try_once().await {
                                tracing::info!(shard = k, "took shard");
                                let term = start_term(&shared, elector, k, settings.shards, &stop);
                                held.insert(k, term);
                            }
                        }
                        (false, true) => {
                            if let Some(term) = held.remove(&k) {
                                tracing::info!(shard = k, "handing shard over");
                                term.stop.cancel();
                                handed_over.push(term.task);
                            }
                        }
                        _ => {}
                    }
                }
                // Each term stops its autoscalers, then releases its lease.
                futures::future::join_all(handed_over).await;
            }
            Err(error) => tracing::warn!(%error, "cannot list the member leases"),
        }
        let leading = !held.is_empty();
        if labelled != Some(leading) {
            super::lease::mark_role(&lease_client, &settings.lease, leading).await;
            labelled = Some(leading);
        }
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(settings.lease.renew_period) => {}
        }
    }
    // Every shard's autoscalers are told to stop at once; each term then releases its lease.
    for term in held.values() {
        term.stop.cancel();
    }
    for (_, term) in held {
        let _ = term.task.await;
    }
    member.release().await;
    super::lease::mark_role(&lease_client, &settings.lease, false).await;
    tracing::info!("sharded controller stopped");
}

/// One shard's term: its reconciler runs while the lease is renewed. On a stop (shutdown or
/// hand-over) the autoscalers finish their runs within the renew deadline and the lease is
/// released; on a lost lease they are ended at once.
fn start_term(
    shared: &Arc<ReconcileEnv>,
    elector: &Arc<LeaderElector>,
    shard: u32,
    shards: u32,
    stop: &CancellationToken,
) -> Held {
    let term = stop.child_token();
    let task = tokio::spawn({
        let (shared, elector, term) = (shared.clone(), elector.clone(), term.clone());
        async move {
            let mut reconciler = Reconciler::new(shared).only_shard(shard, shards);
            let run = term.child_token();
            let lost = tokio::select! {
                end = elector.hold(&term) => match end {
                    LeaseEnd::Lost(why) => Some(why),
                    LeaseEnd::Stopped => None,
                },
                _ = reconciler.run(&run) => None,
            };
            run.cancel();
            let within = elector.settings().renew_deadline;
            match lost {
                Some(why) => {
                    tracing::warn!(shard, %why, "lost the shard; stopping its autoscalers at once");
                    reconciler.shutdown(true, within).await;
                }
                None => {
                    reconciler.shutdown(false, within).await;
                    elector.release().await;
                }
            }
        }
    });
    Held { stop: term, task }
}

#[cfg(test)]
mod tests {
    use super::{owners, shard_of};

    #[test]
    fn shards_spread_resources_and_shares_are_even() {
        let mut counts = [0u32; 8];
        for i in 0..8000 {
            counts[shard_of(&format!("ns-{}/app-{i}", i % 13), 8) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
        // The same key always lands in the same shard.
        assert_eq!(shard_of("a/b", 8), shard_of("a/b", 8));

        for (shards, members) in [
            (6, vec!["a", "b", "c"]),
            (8, vec!["a", "b"]),
            (8, vec!["x", "y", "z"]),
        ] {
            let members: Vec<String> = members.into_iter().map(String::from).collect();
            let assigned = owners(shards, &members);
            assert!(
                assigned.iter().all(Option::is_some),
                "every shard has an owner"
            );
            for m in &members {
                let share = assigned.iter().filter(|o| **o == Some(m)).count();
                let even = shards as usize / members.len();
                assert!(
                    share == even || share == even + 1,
                    "{m} has {share} of {shards}"
                );
            }
            assert_eq!(assigned, owners(shards, &members), "deterministic");
        }
        assert_eq!(owners(4, &[]), vec![None; 4]);
    }
}
