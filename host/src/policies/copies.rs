//! Last-good local copies of fetched policies, so that a registry or web server being down
//! never stops an autoscaler from restarting or from taking a spec edit.
//!
//! Content is kept by its sha256 (`blobs/HEX`); each reference records which content it
//! last resolved to (`refs/SHA256-OF-REFERENCE`). A copy is checked against its digest
//! whenever it is read, so a corrupted copy is ignored rather than run.

use std::path::{Path, PathBuf};

use super::reference::PolicyRef;
use crate::fsutil::write_atomic;

/// The copies kept in one directory.
#[derive(Debug, Clone)]
pub(crate) struct LocalCopies {
    dir: PathBuf,
}

impl LocalCopies {
    /// Copies in `dir` (created if missing).
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir.join("blobs"))?;
        std::fs::create_dir_all(dir.join("refs"))?;
        Ok(LocalCopies {
            dir: dir.to_path_buf(),
        })
    }

    /// Whether copies are kept for this kind of reference: remote ones only (files and
    /// uploads are local already).
    pub fn keeps(reference: &PolicyRef) -> bool {
        matches!(reference, PolicyRef::Url { .. } | PolicyRef::Oci(_))
    }

    fn ref_path(&self, reference: &PolicyRef) -> PathBuf {
        let key = hex::encode(crate::sandbox::sha256(reference.to_raw_string().as_bytes()));
        self.dir.join("refs").join(key)
    }

    /// The content `reference` last resolved to, if kept and intact.
    pub fn get(&self, reference: &PolicyRef) -> Option<Vec<u8>> {
        let digest = std::fs::read_to_string(self.ref_path(reference)).ok()?;
        let digest = digest.trim();
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let bytes = std::fs::read(self.dir.join("blobs").join(digest)).ok()?;
        (hex::encode(crate::sandbox::sha256(&bytes)) == digest).then_some(bytes)
    }

    /// Records `bytes` as what `reference` resolves to.
    pub fn put(&self, reference: &PolicyRef, bytes: &[u8]) -> std::io::Result<()> {
        let digest = hex::encode(crate::sandbox::sha256(bytes));
        let blob = self.dir.join("blobs").join(&digest);
        if !blob.exists() {
            write_atomic(&blob, bytes)?;
        }
        write_atomic(&self.ref_path(reference), digest.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_round_trips_and_a_corrupt_one_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let copies = LocalCopies::open(dir.path()).unwrap();
        let reference = PolicyRef::Oci("registry.example/acme/cpu:v1".into());
        assert_eq!(copies.get(&reference), None);
        copies.put(&reference, b"component bytes").unwrap();
        assert_eq!(
            copies.get(&reference).as_deref(),
            Some(&b"component bytes"[..])
        );
        let digest = hex::encode(crate::sandbox::sha256(b"component bytes"));
        std::fs::write(dir.path().join("blobs").join(digest), b"tampered").unwrap();
        assert_eq!(copies.get(&reference), None);
    }
}
