//! The one error type of this crate.

use std::path::PathBuf;

use crate::repo::HubRepo;

/// Everything that can go wrong while resolving or fetching Hub files.
///
/// Each variant names the repository (`dataset CohereLabs/Global-MMLU@main`) and, where one is
/// involved, the file or cache path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// A repository id, revision or file pattern that cannot be used.
    #[error("invalid Hub reference `{value}`: {reason}")]
    Invalid {
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The files are not in the cache and the network may not or cannot be used.
    #[error(
        "{repo}: {reason}, and the cache holds no complete copy of {}; with network, the \
         same command downloads them into {} (or: `huggingface-cli download {} --repo-type {} \
         --revision {} --include {}`)",
        missing.join(", "),
        cache_dir.display(),
        repo.id,
        repo.kind.as_str(),
        repo.revision,
        missing.iter().map(|p| format!("'{p}'")).collect::<Vec<_>>().join(" ")
    )]
    NotCached {
        /// The repository.
        repo: HubRepo,
        /// Why the network was not used: `HF_HUB_OFFLINE is set`, or the connection error.
        reason: String,
        /// The patterns the cache could not satisfy.
        missing: Vec<String>,
        /// Where the files would go: `<cache>/datasets--Org--Name`.
        cache_dir: PathBuf,
    },
    /// The Hub refused access: a gated or private repository and no token, or a token
    /// without access.
    #[error(
        "{repo}: {status} from {url}: {}",
        if *token_sent {
            "the token (HF_TOKEN, or the file `huggingface-cli login` wrote) was refused or has not been granted access to this repository; check it and that you accepted the repository's conditions on its Hub page"
        } else {
            "the repository is gated or private and no token was sent; accept its conditions on its Hub page, then set HF_TOKEN to an access token (or run `huggingface-cli login`)"
        }
    )]
    Unauthorized {
        /// The repository.
        repo: HubRepo,
        /// 401 or 403.
        status: u16,
        /// The URL requested (no credentials in it).
        url: String,
        /// Whether a token was sent.
        token_sent: bool,
    },
    /// The repository, revision or file does not exist.
    #[error("{repo}: not found on the Hub ({url} answered 404)")]
    NotFound {
        /// The repository.
        repo: HubRepo,
        /// The URL requested.
        url: String,
    },
    /// A pattern matched no file of the repository at the resolved commit.
    #[error(
        "{repo} (commit {commit}): no file matches `{pattern}`; the repository has {}",
        summarize(available)
    )]
    NoMatch {
        /// The repository.
        repo: HubRepo,
        /// The commit listed.
        commit: String,
        /// The pattern.
        pattern: String,
        /// The repository's files (for the message, the first few are shown).
        available: Vec<String>,
    },
    /// Any other HTTP or transport failure.
    #[error("{repo}: {what}: {message}")]
    Http {
        /// The repository.
        repo: HubRepo,
        /// What was being done: `listing files`, `downloading am/test-00000-of-00001.parquet`.
        what: String,
        /// The HTTP status, when there was a response.
        status: Option<u16>,
        /// The client's message, or the Hub's error body.
        message: String,
    },
    /// The revision moved to another commit while files were being fetched.
    #[error(
        "{repo}: the revision moved from commit {listed} to {downloaded} during the download; run again"
    )]
    RevisionMoved {
        /// The repository.
        repo: HubRepo,
        /// The commit the listing named.
        listed: String,
        /// The commit a download came from.
        downloaded: String,
    },
    /// Reading or writing the cache failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
}

impl HubError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> HubError {
        HubError::Io {
            path: path.into(),
            source,
        }
    }
}

fn summarize(files: &[String]) -> String {
    const SHOWN: usize = 12;
    if files.is_empty() {
        return "no file".to_owned();
    }
    let mut s = files
        .iter()
        .take(SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if files.len() > SHOWN {
        s.push_str(&format!(" and {} more", files.len() - SHOWN));
    }
    s
}
