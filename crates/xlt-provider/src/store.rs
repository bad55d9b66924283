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

/// The name prefix of every temporary file written before a rename (`.xlt-tmp-a1B2c3`), so
/// that a process killed between the two (`kill -9`) leaves a file that a later run
/// recognises as its own and removes ([`sweep_temp_files`]), and no other tool's.
pub const TEMP_PREFIX: &str = ".xlt-tmp-";

/// A temporary file in `dir` named [`TEMP_PREFIX`]..., created with the mode any new file
/// gets (0o666 less the process's umask: 0o644 under umask 022), not `tempfile`'s
/// owner-only 0o600, so that the file it is renamed to is as readable as any tool's output.
pub fn tempfile_with_umask(dir: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(TEMP_PREFIX);
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

/// How old a temporary file must be before [`sweep_temp_files`] removes it: a file younger
/// than this may be another live process's write in progress.
pub const STALE_TEMP_AGE: std::time::Duration = std::time::Duration::from_secs(60);

/// Removes the temporary files ([`TEMP_PREFIX`]) under `dir`, at any depth, that are older
/// than [`STALE_TEMP_AGE`]: what a process killed between writing and renaming left. Files
/// of any other name, and symbolic links, are never touched; what cannot be read or
/// removed is skipped. Returns the paths removed.
pub fn sweep_temp_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut removed = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file()
                && entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX)
                && entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age >= STALE_TEMP_AGE)
                && std::fs::remove_file(&path).is_ok()
            {
                removed.push(path);
            }
        }
    }
    removed.sort();
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temporary file carries the prefix; the sweep removes only stale files with it.
    #[test]
    fn the_sweep_removes_only_our_stale_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = tempfile_with_umask(dir.path()).unwrap();
        let name = tmp
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(name.starts_with(TEMP_PREFIX), "{name}");
        let old = std::time::SystemTime::now() - 2 * STALE_TEMP_AGE;
        let make = |rel: &str, stale: bool| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            let f = std::fs::File::create(&p).unwrap();
            if stale {
                f.set_modified(old).unwrap();
            }
            p
        };
        let ours = make(".xlt-tmp-AbC123", true);
        let nested = make("cache/ab/.xlt-tmp-XyZ789", true);
        let live = make(".xlt-tmp-live00", false);
        let theirs = make(".tmpAbC123", true);
        let kept = make("ledger.json", true);
        let removed = sweep_temp_files(dir.path());
        assert_eq!(removed, vec![ours.clone(), nested.clone()]);
        for (p, exists) in [
            (&ours, false),
            (&nested, false),
            (&live, true),
            (&theirs, true),
            (&kept, true),
            (&tmp.path().to_owned(), true),
        ] {
            assert_eq!(p.exists(), exists, "{}", p.display());
        }
    }

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
