//! Small helpers for the on-disk stores: stable hashes and atomic writes.

use std::io::Write;
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::ProviderError;

/// SHA-256 of a value's canonical JSON (serde's field order), in hex.
pub fn stable_hash<T: Serialize>(value: &T) -> String {
    let bytes = serde_json::to_vec(value).expect("value serializes");
    hex(&Sha256::digest(&bytes))
}

/// SHA-256 of bytes, in hex.
pub fn bytes_hash(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn storage_err(path: &Path, e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Storage {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Writes through a temporary file in the same directory and a rename, so that a killed
/// process never leaves half a file. No fsync: the cache writes thousands of small entries,
/// and after a power loss an entry lost or left empty is read as a miss and asked again.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ProviderError> {
    write(path, bytes, false)
}

/// As [`write_atomic`], and flushed to disk before the rename: for the job ledger, whose
/// entries stand for paid work.
pub(crate) fn write_durable(path: &Path, bytes: &[u8]) -> Result<(), ProviderError> {
    write(path, bytes, true)
}

/// A temporary file in `dir` created with the mode any new file gets (0o666 less the
/// process's umask: 0o644 under umask 022), not `tempfile`'s owner-only 0o600, so that the
/// file it is renamed to is as readable as any tool's output.
fn tempfile_with_umask(dir: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    let mut builder = tempfile::Builder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    builder.tempfile_in(dir)
}

fn write(path: &Path, bytes: &[u8], sync: bool) -> Result<(), ProviderError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| storage_err(parent, e))?;
    let mut tmp = tempfile_with_umask(parent).map_err(|e| storage_err(path, e))?;
    tmp.write_all(bytes).map_err(|e| storage_err(path, e))?;
    if sync {
        tmp.as_file().sync_all().map_err(|e| storage_err(path, e))?;
    }
    tmp.persist(path).map_err(|e| storage_err(path, e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A written file has the mode `File::create` gives a new file in the same directory
    /// (the process's umask: 0o644 under umask 022), not `tempfile`'s 0o600.
    #[cfg(unix)]
    #[test]
    fn written_files_get_the_umask_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let reference = dir.path().join("reference");
        std::fs::File::create(&reference).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let written = dir.path().join("written");
        write_atomic(&written, b"{}").unwrap();
        let durable = dir.path().join("durable");
        write_durable(&durable, b"{}").unwrap();
        assert_eq!(
            mode(&durable),
            mode(&reference),
            "durable {:o}",
            mode(&durable)
        );
        assert_eq!(
            mode(&written),
            mode(&reference),
            "written {:o}, File::create {:o}",
            mode(&written),
            mode(&reference)
        );
    }
}
