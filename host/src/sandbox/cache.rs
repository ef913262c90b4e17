//! The on-disk cache of precompiled components.
//!
//! Each entry is `<sha256 of the component>.cwasm`: a header naming the engine it was compiled
//! for and the digest of the artifact, then the artifact itself. An entry from another engine
//! (other wasmtime version or settings) or one whose digest does not match is discarded and
//! recompiled, so a stale or corrupted file costs a compile, never a crash.
//!
//! Deserializing an artifact trusts it as native code: the cache directory must be writable
//! by the host only, like any directory holding executables.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use wasmtime::Engine;

use crate::fsutil::write_atomic;

const MAGIC: &[u8; 8] = b"WSCWASM1";
const HEADER_LEN: usize = MAGIC.len() + 32 + 32;

/// A sha256 digest.
pub(crate) type Digest = [u8; 32];

/// Computes the sha256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> Digest {
    Sha256::digest(bytes).into()
}

/// Feeds a `Hash` implementation into sha256, so the engine's compatibility hash becomes a
/// value stable across processes (unlike `DefaultHasher`'s).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first)
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Why a cache entry was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Miss {
    Absent,
    Unreadable(String),
    OtherEngine,
    Corrupt,
}

pub(crate) struct DiskCache {
    dir: PathBuf,
    engine_key: Digest,
}

impl DiskCache {
    pub(crate) fn new(dir: &Path, engine: &Engine) -> Self {
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        DiskCache {
            dir: dir.to_path_buf(),
            engine_key: hasher.0.finalize().into(),
        }
    }

    pub(crate) fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(format!("{}.cwasm", hex::encode(digest)))
    }

    /// The verified artifact for `digest`, or why there is none.
    pub(crate) fn read(&self, digest: &Digest) -> Result<Vec<u8>, Miss> {
        let path = self.path(digest);
        let mut bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Miss::Absent),
            Err(e) => return Err(Miss::Unreadable(e.to_string())),
        };
        if bytes.len() < HEADER_LEN || &bytes[..MAGIC.len()] != MAGIC {
            return Err(Miss::Corrupt);
        }
        if bytes[MAGIC.len()..MAGIC.len() + 32] != self.engine_key {
            return Err(Miss::OtherEngine);
        }
        let expected = &bytes[MAGIC.len() + 32..HEADER_LEN];
        if sha256(&bytes[HEADER_LEN..])[..] != *expected {
            return Err(Miss::Corrupt);
        }
        bytes.drain(..HEADER_LEN);
        Ok(bytes)
    }

    pub(crate) fn write(&self, digest: &Digest, artifact: &[u8]) -> std::io::Result<()> {
        let mut bytes = Vec::with_capacity(HEADER_LEN + artifact.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&self.engine_key);
        bytes.extend_from_slice(&sha256(artifact));
        bytes.extend_from_slice(artifact);
        write_atomic(&self.path(digest), &bytes)
    }

    /// Drops an unusable entry so the next load does not trip over it again.
    pub(crate) fn remove(&self, digest: &Digest) {
        let _ = std::fs::remove_file(self.path(digest));
    }
}
