//! Uploaded policies: validated before they are accepted, stored content-addressed on disk,
//! listed by name, deleted only when unused.
//!
//! Layout under the store's directory: `blobs/SHA256.wasm` (the bytes, shared by every name
//! with the same content) and `names/NAME.json` (the name's record). Both are written
//! atomically, blob first, so a crash never leaves a name pointing at nothing.
//!
//! Several controller replicas may share the directory (a ReadWriteMany volume): every
//! change is made under an exclusive lock on `store.lock`, the quotas are checked under it,
//! and a blob no name refers to any more (a replaced or deleted upload, or a crash's
//! leftover) is removed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::fsutil::write_atomic;
use crate::sandbox::{Capability, Sandbox, SandboxError, World};

/// An accepted policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRecord {
    /// Its name.
    pub name: String,
    /// Hex sha256 of its bytes.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// The contract world it implements.
    pub world: World,
    /// Capabilities it imports.
    pub capabilities: Vec<Capability>,
    /// When it was uploaded, ms since the Unix epoch.
    pub uploaded_ms: i64,
}

/// Why an upload or deletion was refused. Nothing is changed in either case.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The name is not a DNS label.
    #[error(
        "policy name {0:?} must be 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit"
    )]
    InvalidName(String),
    /// Over the size limit.
    #[error("policy is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Not a usable component (not wasm, wrong world, unknown import, ...).
    #[error("policy rejected: {0}")]
    Invalid(SandboxError),
    /// No policy of that name.
    #[error("no policy named {0:?}")]
    NotFound(String),
    /// An autoscaler still uses it.
    #[error("policy {name:?} is used by autoscaler(s) {users}")]
    InUse {
        /// The policy.
        name: String,
        /// Who uses it.
        users: String,
    },
    /// The upload would take the store over one of its quotas.
    #[error("policy store quota exceeded: {0}")]
    Quota(String),
    /// Whether it is in use could not be determined; nothing was deleted.
    #[error("cannot tell whether policy {name:?} is in use: {why}")]
    UsersUnknown {
        /// The policy.
        name: String,
        /// Why.
        why: String,
    },
    /// The store's disk failed.
    #[error("policy store: {0}")]
    Io(String),
}

/// How much the upload store may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct StoreQuota {
    /// Most names.
    pub max_policies: usize,
    /// Most bytes of content, all blobs together.
    pub max_total_bytes: u64,
}

impl Default for StoreQuota {
    fn default() -> Self {
        StoreQuota {
            max_policies: 100,
            max_total_bytes: 512 << 20,
        }
    }
}

/// The store.
pub struct PolicyStore {
    dir: PathBuf,
    sandbox: Arc<Sandbox>,
    max_bytes: u64,
    quota: StoreQuota,
}

/// The store's lock, held while it is changed (released when dropped).
struct Locked(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

fn valid_name(name: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    (1..=63).contains(&name.len())
        && name.chars().all(ok_char)
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn io(path: &Path, e: impl std::fmt::Display) -> PolicyError {
    PolicyError::Io(format!("{}: {e}", path.display()))
}

impl PolicyStore {
    /// A store in `dir` (created if missing) accepting policies up to `max_bytes`.
    pub fn open(
        dir: impl Into<PathBuf>,
        sandbox: Arc<Sandbox>,
        max_bytes: u64,
    ) -> Result<Self, PolicyError> {
        let dir = dir.into();
        for sub in ["blobs", "names"] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).map_err(|e| io(&path, e))?;
        }
        let store = PolicyStore {
            dir,
            sandbox,
            max_bytes,
            quota: StoreQuota::default(),
        };
        {
            let _locked = store.lock()?;
            store.collect_garbage()?;
        }
        Ok(store)
    }

    /// Limits the store to `quota`.
    pub fn with_quota(mut self, quota: StoreQuota) -> Self {
        self.quota = quota;
        self
    }

    fn lock(&self) -> Result<Locked, PolicyError> {
        let path = self.dir.join("store.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map(Locked)
            .map_err(|(_, e)| io(&path, e))
    }

    /// Removes blobs no name refers to and temporary files a crash left. Call with the lock.
    fn collect_garbage(&self) -> Result<(), PolicyError> {
        let referenced: std::collections::HashSet<String> = self
            .list()?
            .into_iter()
            .map(|r| format!("{}.wasm", r.sha256))
            .collect();
        let blobs = self.dir.join("blobs");
        for entry in std::fs::read_dir(&blobs).map_err(|e| io(&blobs, e))? {
            let path = entry.map_err(|e| io(&blobs, e))?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            if !referenced.contains(&name) {
                tracing::info!(blob = %name, "removing an unreferenced policy blob");
                std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
            }
        }
        Ok(())
    }

    /// Bytes of content held, all blobs together.
    fn total_bytes(&self) -> Result<u64, PolicyError> {
        let blobs = self.dir.join("blobs");
        let mut total = 0;
        for entry in std::fs::read_dir(&blobs).map_err(|e| io(&blobs, e))? {
            let entry = entry.map_err(|e| io(&blobs, e))?;
            total += entry.metadata().map_err(|e| io(&entry.path(), e))?.len();
        }
        Ok(total)
    }

    /// The largest policy accepted.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    fn name_path(&self, name: &str) -> PathBuf {
        self.dir.join("names").join(format!("{name}.json"))
    }

    /// Where the bytes of a stored digest live.
    pub(crate) fn blob_path(&self, sha256: &str) -> PathBuf {
        self.dir.join("blobs").join(format!("{sha256}.wasm"))
    }

    /// Validates `bytes` (size, component, world, imports) and stores them under `name`,
    /// replacing an earlier upload of that name.
    pub async fn put(
        &self,
        name: &str,
        bytes: Vec<u8>,
        now_ms: i64,
    ) -> Result<PolicyRecord, PolicyError> {
        if !valid_name(name) {
            return Err(PolicyError::InvalidName(name.to_owned()));
        }
        let size = bytes.len() as u64;
        if size > self.max_bytes {
            return Err(PolicyError::TooLarge {
                size,
                limit: self.max_bytes,
            });
        }
        let loaded = self
            .sandbox
            .load(bytes.clone())
            .await
            .map_err(PolicyError::Invalid)?;
        let info = loaded.component.info();
        let record = PolicyRecord {
            name: name.to_owned(),
            sha256: info.sha256,
            size,
            world: info.world,
            capabilities: info.capabilities,
            uploaded_ms: now_ms,
        };
        let _locked = self.lock()?;
        let replaced = self.get(name).ok();
        let others = self.list()?.len() - usize::from(replaced.is_some());
        if others + 1 > self.quota.max_policies {
            return Err(PolicyError::Quota(format!(
                "{} policies stored, the most allowed is {}",
                others, self.quota.max_policies
            )));
        }
        let blob = self.blob_path(&record.sha256);
        if !blob.exists() {
            let total = self.total_bytes()?;
            // The replaced content's blob goes if nothing else refers to it.
            let freed = replaced
                .as_ref()
                .filter(|old| old.sha256 != record.sha256)
                .filter(|old| !self.shared(&old.sha256, name))
                .map_or(0, |old| old.size);
            if total - freed.min(total) + size > self.quota.max_total_bytes {
                return Err(PolicyError::Quota(format!(
                    "{} more bytes would take the store to {}, over {} bytes",
                    size,
                    total - freed.min(total) + size,
                    self.quota.max_total_bytes
                )));
            }
            write_atomic(&blob, &bytes).map_err(|e| io(&blob, e))?;
        }
        let index = self.name_path(name);
        let json = serde_json::to_vec_pretty(&record).map_err(|e| io(&index, e))?;
        write_atomic(&index, &json).map_err(|e| io(&index, e))?;
        if let Some(old) = replaced.filter(|old| old.sha256 != record.sha256) {
            self.remove_blob_unless_shared(&old.sha256)?;
        }
        Ok(record)
    }

    /// Whether a name other than `except` refers to content `sha256`.
    fn shared(&self, sha256: &str, except: &str) -> bool {
        self.list()
            .map(|all| all.iter().any(|r| r.sha256 == sha256 && r.name != except))
            .unwrap_or(true)
    }

    fn remove_blob_unless_shared(&self, sha256: &str) -> Result<(), PolicyError> {
        if !self.list()?.iter().any(|other| other.sha256 == sha256) {
            let blob = self.blob_path(sha256);
            if let Err(e) = std::fs::remove_file(&blob)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return Err(io(&blob, e));
            }
        }
        Ok(())
    }

    /// Every stored policy, by name.
    pub fn list(&self) -> Result<Vec<PolicyRecord>, PolicyError> {
        let names = self.dir.join("names");
        let mut all = Vec::new();
        for entry in std::fs::read_dir(&names).map_err(|e| io(&names, e))? {
            let path = entry.map_err(|e| io(&names, e))?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
                all.push(serde_json::from_slice(&bytes).map_err(|e| io(&path, e))?);
            }
        }
        all.sort_by(|a: &PolicyRecord, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// One policy's record.
    pub fn get(&self, name: &str) -> Result<PolicyRecord, PolicyError> {
        if !valid_name(name) {
            return Err(PolicyError::NotFound(name.to_owned()));
        }
        let path = self.name_path(name);
        let bytes = std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => PolicyError::NotFound(name.to_owned()),
            _ => io(&path, e),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| io(&path, e))
    }

    /// Deletes `name` unless `users` (who refers to it or runs its content, as the caller
    /// found) names anyone; the blob goes too when no other name shares it.
    pub fn delete(&self, name: &str, users: &[String]) -> Result<(), PolicyError> {
        if !users.is_empty() {
            return Err(PolicyError::InUse {
                name: name.to_owned(),
                users: users.join(", "),
            });
        }
        let _locked = self.lock()?;
        let record = self.get(name)?;
        let index = self.name_path(name);
        std::fs::remove_file(&index).map_err(|e| io(&index, e))?;
        self.remove_blob_unless_shared(&record.sha256)
    }
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn names_are_dns_labels() {
        for ok in ["a", "cpu-target", "p1", &"x".repeat(63)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a/b", "../x", &"x".repeat(64)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
