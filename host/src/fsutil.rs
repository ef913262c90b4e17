//! Small filesystem helpers shared by the caches and state files.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Makes temporary names unique within the process, so concurrent writers of the same file
/// (e.g. per-replica gathers committing guest state) never share a temporary file.
static NEXT_TMP: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` so that readers see either the old or the new file, never a torn
/// one: write a sibling temporary file, flush it, then rename it over the target.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)?;
    }
    let file_name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} has no file name", path.display())))?;
    let mut tmp_name = file_name.to_os_string();
    let unique = NEXT_TMP.fetch_add(1, Ordering::Relaxed);
    tmp_name.push(format!(".tmp{}.{unique}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Checks that the generated document `docs/NAME` matches `generated`; with
/// `WASMSCALER_BLESS` set, rewrites it first. `test` is the test's name filter, for the
/// message's command.
#[cfg(test)]
pub(crate) fn assert_doc_current(name: &str, generated: &str, test: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs")
        .join(name);
    if std::env::var_os("WASMSCALER_BLESS").is_some() {
        std::fs::write(&path, generated).unwrap_or_else(|e| panic!("writing docs/{name}: {e}"));
    }
    let written = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        written == generated,
        "docs/{name} is not current: run `WASMSCALER_BLESS=1 cargo test -p wasmscaler --lib {test}`"
    );
}
