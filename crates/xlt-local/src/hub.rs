//! Read-only resolution of a model id in the local Hugging Face cache. Nothing here
//! downloads: a model that is not there is an error that says how to get it. (A Hub client
//! that downloads into the same cache can replace this module without touching the rest.)
//!
//! The layout (`huggingface_hub`'s): `$HF_HUB_CACHE` (default `$HF_HOME/hub`, default
//! `~/.cache/huggingface/hub`) holds `models--{org}--{name}/refs/main` (a commit hash) and
//! `models--{org}--{name}/snapshots/{commit}/` (the files).

use std::path::{Path, PathBuf};

use crate::LocalError;

/// The hub cache directory from the environment: `HF_HUB_CACHE`, else `HF_HOME/hub`, else
/// `XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`. `None` when none of
/// these can be formed.
pub fn hub_cache_dir() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("HF_HUB_CACHE")
        .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
        .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| var("XDG_CACHE_HOME").map(|c| c.join("huggingface").join("hub")))
        .or_else(|| var("HOME").map(|h| h.join(".cache").join("huggingface").join("hub")))
}

/// The snapshot directory of model `id` (`Org/Name`) at `revision` (default `main`) in the
/// cache at `cache`.
///
/// # Errors
/// [`LocalError::NotInCache`] when the model, the ref or the snapshot is missing, saying
/// where it looked and how to download the model; [`LocalError::Invalid`] for an id that is
/// not `org/name`.
pub fn resolve_in_cache(
    cache: &Path,
    id: &str,
    revision: Option<&str>,
) -> Result<PathBuf, LocalError> {
    let parts: Vec<&str> = id.split('/').collect();
    if parts.len() != 2
        || parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err(LocalError::Invalid(format!(
            "model id {id:?} is not of the form org/name"
        )));
    }
    let repo = cache.join(format!("models--{}--{}", parts[0], parts[1]));
    let not_found = |searched: &Path| LocalError::NotInCache {
        id: id.to_owned(),
        searched: searched.display().to_string(),
    };
    let revision = revision.unwrap_or("main");
    let snapshots = repo.join("snapshots");
    // A commit hash names a snapshot directly; a branch or tag goes through refs/.
    let direct = snapshots.join(revision);
    if revision.len() == 40 && direct.is_dir() {
        return Ok(direct);
    }
    let ref_file = repo.join("refs").join(revision);
    let commit = std::fs::read_to_string(&ref_file).map_err(|_| not_found(&ref_file))?;
    let snapshot = snapshots.join(commit.trim());
    if snapshot.is_dir() {
        Ok(snapshot)
    } else {
        Err(not_found(&snapshot))
    }
}

/// [`resolve_in_cache`] in [`hub_cache_dir`].
///
/// # Errors
/// As [`resolve_in_cache`]; [`LocalError::NotInCache`] when no cache directory can be
/// formed from the environment.
pub fn resolve_model_id(id: &str) -> Result<PathBuf, LocalError> {
    let cache = hub_cache_dir().ok_or_else(|| LocalError::NotInCache {
        id: id.to_owned(),
        searched: "no cache directory: HF_HUB_CACHE, HF_HOME and HOME are unset".into(),
    })?;
    resolve_in_cache(&cache, id, None)
}
