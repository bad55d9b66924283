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

fn write(path: &Path, bytes: &[u8], sync: bool) -> Result<(), ProviderError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| storage_err(parent, e))?;
    let mut tmp = tempfile::NamedTempFile::new_in(parent).map_err(|e| storage_err(path, e))?;
    tmp.write_all(bytes).map_err(|e| storage_err(path, e))?;
    if sync {
        tmp.as_file().sync_all().map_err(|e| storage_err(path, e))?;
    }
    tmp.persist(path).map_err(|e| storage_err(path, e.error))?;
    Ok(())
}
