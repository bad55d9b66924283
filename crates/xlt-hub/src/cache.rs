//! The cache on disk, laid out as the Python client lays it out:
//!
//! ```text
//! <cache>/datasets--Org--Name/
//!     blobs/<etag>                      file contents, by ETag
//!     refs/<revision>                   the commit hash a branch or tag pointed to
//!     snapshots/<commit>/<path>         links into blobs/, one tree per commit
//! ```
//!
//! A file is in the cache only once its link exists under `snapshots/`; downloads in
//! progress live beside the blobs (`<etag>.sync.part` here, `<etag>.incomplete` in Python)
//! and are never read as data.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use globset::GlobMatcher;

use crate::error::HubError;
use crate::repo::{HubRepo, is_commit};

/// File patterns, Python's `allow_patterns`: `*` and `?` as in a shell, except that they do
/// not cross `/` (so `*.safetensors` means the top-level weights only).
#[derive(Debug, Clone)]
pub(crate) struct Patterns {
    items: Vec<(String, GlobMatcher)>,
}

impl Patterns {
    pub(crate) fn new(patterns: &[&str]) -> Result<Patterns, HubError> {
        if patterns.is_empty() {
            return Err(HubError::Invalid {
                value: String::new(),
                reason: "no file pattern given".to_owned(),
            });
        }
        let items = patterns
            .iter()
            .map(|p| {
                let glob = globset::GlobBuilder::new(p)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| HubError::Invalid {
                        value: (*p).to_owned(),
                        reason: e.kind().to_string(),
                    })?;
                Ok(((*p).to_owned(), glob.compile_matcher()))
            })
            .collect::<Result<_, HubError>>()?;
        Ok(Patterns { items })
    }

    /// The files each pattern matches, in pattern order.
    pub(crate) fn matches<'a>(&self, files: &'a [String]) -> Vec<(&str, Vec<&'a str>)> {
        self.items
            .iter()
            .map(|(p, m)| {
                let hits = files
                    .iter()
                    .filter(|f| m.is_match(f.as_str()))
                    .map(String::as_str)
                    .collect();
                (p.as_str(), hits)
            })
            .collect()
    }

    /// The patterns the files do not satisfy: those that match nothing, and those whose
    /// matches include an incomplete shard series (`x-00000-of-00002.parquet` without
    /// `x-00001-of-00002.parquet`).
    pub(crate) fn unsatisfied(&self, files: &[String]) -> Vec<String> {
        self.matches(files)
            .into_iter()
            .filter(|(_, hits)| hits.is_empty() || !shards_complete(hits))
            .map(|(p, _)| p.to_owned())
            .collect()
    }
}

/// Whether every shard series among `files` (`<stem>-<i>-of-<n><rest>`) has `n` members.
/// Counting members makes it indifferent to numbering from 0 (datasets) or 1 (models).
fn shards_complete(files: &[&str]) -> bool {
    let mut series: BTreeMap<(String, String, usize), BTreeSet<usize>> = BTreeMap::new();
    for f in files {
        if let Some((key, index)) = shard_of(f) {
            series.entry(key).or_default().insert(index);
        }
    }
    series
        .iter()
        .all(|((_, _, total), seen)| seen.len() == *total)
}

fn shard_of(file: &str) -> Option<((String, String, usize), usize)> {
    let at = file.find("-of-")?;
    let (head, tail) = (&file[..at], &file[at + 4..]);
    let dash = head.rfind('-')?;
    let index: usize = head[dash + 1..].parse().ok()?;
    let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
    let total: usize = tail[..digits].parse().ok()?;
    Some((
        (head[..dash].to_owned(), tail[digits..].to_owned(), total),
        index,
    ))
}

/// `<cache>/<folder of repo>`.
pub(crate) fn repo_dir(cache_dir: &Path, repo: &HubRepo) -> PathBuf {
    cache_dir.join(repo.folder_name())
}

/// `<cache>/<folder>/snapshots/<commit>`.
pub(crate) fn snapshot_dir(cache_dir: &Path, repo: &HubRepo, commit: &str) -> PathBuf {
    repo_dir(cache_dir, repo).join("snapshots").join(commit)
}

/// The commit the cache knows for the repository's revision: the revision itself when it is
/// a commit hash with a snapshot, else the content of `refs/<revision>`.
pub(crate) fn cached_commit(cache_dir: &Path, repo: &HubRepo) -> Option<String> {
    if repo.revision_is_commit() {
        let dir = snapshot_dir(cache_dir, repo, &repo.revision);
        return dir.is_dir().then(|| repo.revision.clone());
    }
    let path = repo_dir(cache_dir, repo).join("refs").join(&repo.revision);
    let commit = std::fs::read_to_string(path).ok()?.trim().to_owned();
    is_commit(&commit).then_some(commit)
}

/// Every complete file of a snapshot, as repository paths with `/`, sorted. A link whose
/// blob is missing does not count.
pub(crate) fn snapshot_files(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(dir)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_map(Result::ok)
    {
        if entry.file_type().is_file()
            && let Ok(rel) = entry.path().strip_prefix(dir)
        {
            let parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            files.push(parts.join("/"));
        }
    }
    files
}

/// A temporary file in `dir` created with the mode any new file gets (0o666 less the
/// process's umask: 0o644 under umask 022), not `tempfile`'s owner-only 0o600, so that the
/// file it is renamed to is as readable as any tool's output.
///
/// Its name is recognizable ([`TEMP_PREFIX`]`XXXXXX.part`), so that one a killed process left
/// behind is known as ours and swept ([`sweep_stale_temps`]).
fn tempfile_with_umask(dir: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(TEMP_PREFIX).suffix(".part");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    builder.tempfile_in(dir)
}

/// The prefix of the temporary files this crate writes in the cache.
pub(crate) const TEMP_PREFIX: &str = ".xlt-tmp-";

/// How old a temporary file must be to count as left by a killed process: writing a ref
/// takes microseconds, so one a minute old belongs to no live writer.
const STALE_TEMP: std::time::Duration = std::time::Duration::from_secs(60);

/// Removes from `dir` the temporary files a killed process left: this crate's
/// ([`TEMP_PREFIX`]) and, when `legacy` (a `refs/` directory), `tempfile`'s default
/// `.tmpXXXXXX`, which earlier versions wrote there and which Python's `scan_cache_dir`
/// would read as a ref. Only files older than a minute go; errors are ignored (a sweep
/// is housekeeping, never a reason to fail).
pub(crate) fn sweep_stale_temps(dir: &Path, legacy: bool) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let ours = name.starts_with(TEMP_PREFIX)
            || (legacy && name.starts_with(".tmp") && name.len() == ".tmp".len() + 6);
        let stale = e
            .metadata()
            .ok()
            .filter(std::fs::Metadata::is_file)
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= STALE_TEMP);
        if ours && stale {
            match std::fs::remove_file(e.path()) {
                Ok(()) => {
                    tracing::debug!(path = %e.path().display(), "removed a stale temporary file")
                }
                Err(err) => {
                    tracing::debug!(path = %e.path().display(), "stale temporary file: {err}")
                }
            }
        }
    }
}

/// Records that `revision` points at `commit` (`refs/<revision>`), atomically, as Python
/// does for every revision that is not itself a commit hash. The temporary file is
/// written in the repository's folder, beside `refs/`, where Python's cache scan never
/// looks, so that one left by a `kill -9` cannot be read as a ref; stale ones are swept.
pub(crate) fn write_ref(cache_dir: &Path, repo: &HubRepo, commit: &str) -> Result<(), HubError> {
    if repo.revision_is_commit() {
        return Ok(());
    }
    let folder = repo_dir(cache_dir, repo);
    let path = folder.join("refs").join(&repo.revision);
    let parent = path.parent().expect("refs/<revision> has a parent");
    std::fs::create_dir_all(parent).map_err(|e| HubError::io(parent, e))?;
    sweep_stale_temps(&folder, false);
    sweep_stale_temps(parent, true);
    let tmp = tempfile_with_umask(&folder).map_err(|e| HubError::io(&path, e))?;
    std::fs::write(tmp.path(), commit).map_err(|e| HubError::io(&path, e))?;
    tmp.persist(&path)
        .map_err(|e| HubError::io(&path, e.error))?;
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
        let repo = HubRepo::model("Org/Name", Some("main")).unwrap();
        write_ref(
            dir.path(),
            &repo,
            "0123456789abcdef0123456789abcdef01234567",
        )
        .unwrap();
        let written = repo_dir(dir.path(), &repo)
            .join("refs")
            .join(&repo.revision);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode(&written),
            mode(&reference),
            "written {:o}, File::create {:o}",
            mode(&written),
            mode(&reference)
        );
    }

    /// A temporary file a killed process left (0 bytes, a minute old) is swept at the next
    /// write, ours and the old `.tmpXXXXXX` in `refs/`; a fresh one (a live writer's) and
    /// other files stay; the ref is written, and no temporary file of ours is in `refs/`.
    #[test]
    fn stale_temporary_files_are_swept_and_none_is_left_in_refs() {
        let dir = tempfile::tempdir().unwrap();
        let repo = HubRepo::model("Org/Name", Some("main")).unwrap();
        let folder = repo_dir(dir.path(), &repo);
        let refs = folder.join("refs");
        std::fs::create_dir_all(&refs).unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        let make = |p: PathBuf, stale: bool| {
            let f = std::fs::File::create(&p).unwrap();
            if stale {
                f.set_modified(old).unwrap();
            }
            p
        };
        let stale_ours = make(folder.join(format!("{TEMP_PREFIX}abc123.part")), true);
        let stale_legacy = make(refs.join(".tmpAbC123"), true);
        let live = make(folder.join(format!("{TEMP_PREFIX}live01.part")), false);
        let other = make(refs.join("v1.0"), true);
        let commit = "0123456789abcdef0123456789abcdef01234567";
        write_ref(dir.path(), &repo, commit).unwrap();
        for (p, kept) in [
            (&stale_ours, false),
            (&stale_legacy, false),
            (&live, true),
            (&other, true),
        ] {
            assert_eq!(
                p.exists(),
                kept,
                "{}: exists {}, expected {kept}",
                p.display(),
                p.exists()
            );
        }
        assert_eq!(std::fs::read_to_string(refs.join("main")).unwrap(), commit);
        let names: Vec<String> = std::fs::read_dir(&refs)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| !n.starts_with('.')),
            "a temporary file in refs/: {names:?}"
        );
    }

    #[test]
    fn patterns_and_shards() {
        let files: Vec<String> = [
            "README.md",
            "am/test-00000-of-00001.parquet",
            "am/dev-00000-of-00001.parquet",
            "en/test-00000-of-00002.parquet",
            "model-00001-of-00002.safetensors",
            "model.safetensors.index.json",
            "onnx/model.safetensors",
        ]
        .map(String::from)
        .to_vec();
        let check = |patterns: &[&str], unsatisfied: &[&str]| {
            let p = Patterns::new(patterns).unwrap();
            assert_eq!(p.unsatisfied(&files), unsatisfied, "{patterns:?}");
        };
        check(&["am/test-*.parquet"], &[]);
        // One of two shards: incomplete.
        check(&["en/test-*.parquet"], &["en/test-*.parquet"]);
        check(&["de/test-*.parquet"], &["de/test-*.parquet"]);
        check(&["*.safetensors*"], &["*.safetensors*"]);
        let p = Patterns::new(&["*.safetensors"]).unwrap();
        assert_eq!(p.matches(&files)[0].1, ["model-00001-of-00002.safetensors"]);
        assert!(Patterns::new(&[]).is_err());
        assert!(Patterns::new(&["a[b"]).is_err());
        assert_eq!(
            shard_of("m-00002-of-00003.safetensors"),
            Some((("m".into(), ".safetensors".into(), 3), 2))
        );
        assert_eq!(shard_of("config.json"), None);
    }
}
