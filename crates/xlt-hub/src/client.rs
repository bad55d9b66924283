//! The client: list a repository's files, fetch the selected ones into the cache, serve
//! them from the cache when they are there.

use std::future::Future;
use std::path::PathBuf;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget};
use serde::Deserialize;

use crate::cache::{self, Patterns};
use crate::config::HubConfig;
use crate::error::HubError;
use crate::repo::HubRepo;

/// The files of a repository at one commit, as the Hub lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The repository, at the revision asked for.
    pub repo: HubRepo,
    /// The commit the revision resolved to.
    pub commit: String,
    /// Every file, as a repository path with `/`, sorted.
    pub files: Vec<String>,
}

/// Files of a repository at one commit, present in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The repository, at the revision asked for.
    pub repo: HubRepo,
    /// The commit the files come from (40 hexadecimal digits): record it to say exactly
    /// which data or weights a run used.
    pub commit: String,
    /// `<cache>/<folder>/snapshots/<commit>`: each file lies at `dir/<repository path>`.
    pub dir: PathBuf,
    /// The selected files, as repository paths with `/`, sorted.
    pub files: Vec<String>,
    /// How many of them this call downloaded (0: all came from the cache).
    pub downloaded: usize,
}

impl Snapshot {
    /// The local path of every selected file, in [`Snapshot::files`] order.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.files.iter().map(|f| self.dir.join(f)).collect()
    }
}

#[derive(Deserialize)]
struct RepoInfoWire {
    sha: String,
    #[serde(default)]
    siblings: Vec<SiblingWire>,
}

#[derive(Deserialize)]
struct SiblingWire {
    rfilename: String,
}

/// A Hub client over one cache: `hf-hub`'s async API for the network, plain file reads for
/// the cache.
///
/// [`HubClient::snapshot`] is the one entry point most callers need: it serves the files
/// matching some patterns from the cache when they are all there (no request at all), and
/// otherwise lists the repository once and downloads only the missing files.
#[derive(Debug)]
pub struct HubClient {
    config: HubConfig,
    api: hf_hub::api::tokio::Api,
    bars: MultiProgress,
}

impl HubClient {
    /// A client for `config` (see [`HubConfig::from_env`]).
    ///
    /// # Errors
    /// [`HubError::Invalid`] if the token cannot be sent as a header; [`HubError::Http`] if
    /// the HTTP client cannot be built.
    pub fn new(config: HubConfig) -> Result<HubClient, HubError> {
        let api = hf_hub::api::tokio::ApiBuilder::from_cache(hf_hub::Cache::new(
            config.cache_dir.clone(),
        ))
        .with_endpoint(config.endpoint.clone())
        .with_token(config.token.clone())
        .with_progress(false)
        .build()
        .map_err(|e| HubError::Invalid {
            value: "Hub client settings".to_owned(),
            reason: e.to_string(),
        })?;
        let bars = MultiProgress::with_draw_target(if config.progress {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        Ok(HubClient { config, api, bars })
    }

    /// The configuration.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// The repository's folder in the cache, whether or not it exists yet.
    pub fn repo_dir(&self, repo: &HubRepo) -> PathBuf {
        cache::repo_dir(&self.config.cache_dir, repo)
    }

    /// Lists the repository's files at its revision (`GET /api/datasets/{id}/revision/{rev}`
    /// or `/api/models/...`, through `hf-hub`). Always asks the network.
    ///
    /// # Errors
    /// [`HubError::NotCached`] when offline; [`HubError::Unauthorized`],
    /// [`HubError::NotFound`] or [`HubError::Http`] as the Hub answers.
    pub async fn list_files(&self, repo: &HubRepo) -> Result<Listing, HubError> {
        if self.config.offline {
            return Err(self.not_cached(repo, "HF_HUB_OFFLINE is set", vec!["*".to_owned()]));
        }
        let request = self.api.repo(repo.hf()).info_request();
        let url = format!(
            "{}/api/{}s/{}/revision/{}",
            self.config.endpoint,
            repo.kind.as_str(),
            repo.id,
            repo.revision
        );
        let what = "listing files";
        let response = request
            .send()
            .await
            .map_err(|e| self.http_error(repo, &url, what, e))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(self.status_error(repo, &url, what, status.as_u16(), &body));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| self.http_error(repo, &url, what, e))?;
        let info: RepoInfoWire = serde_json::from_slice(&body).map_err(|e| HubError::Http {
            repo: repo.clone(),
            what: what.to_owned(),
            status: Some(status.as_u16()),
            message: format!(
                "cannot read the answer ({e}): {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ),
        })?;
        let mut files: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
        files.sort();
        Ok(Listing {
            repo: repo.clone(),
            commit: info.sha,
            files,
        })
    }

    /// The files matching `patterns` if the cache holds all of them for the repository's
    /// revision, without any request: each pattern matches at least one cached file and
    /// every shard series (`-00000-of-00002`) is complete. Works offline; reads files
    /// written by the Python client as well as by this one.
    ///
    /// # Errors
    /// [`HubError::Invalid`] for a malformed pattern.
    pub fn cached(&self, repo: &HubRepo, patterns: &[&str]) -> Result<Option<Snapshot>, HubError> {
        let patterns = Patterns::new(patterns)?;
        Ok(self.cached_with(repo, &patterns))
    }

    fn cached_with(&self, repo: &HubRepo, patterns: &Patterns) -> Option<Snapshot> {
        let commit = cache::cached_commit(&self.config.cache_dir, repo)?;
        let dir = cache::snapshot_dir(&self.config.cache_dir, repo, &commit);
        let all = cache::snapshot_files(&dir);
        if !patterns.unsatisfied(&all).is_empty() {
            return None;
        }
        let files = select(patterns, &all);
        Some(Snapshot {
            repo: repo.clone(),
            commit,
            dir,
            files,
            downloaded: 0,
        })
    }

    /// The files of `repo` matching `patterns` (`am/test-*.parquet`, `config.json`,
    /// `*.safetensors`; `*` does not cross `/`), in the cache.
    ///
    /// From the cache alone when it holds them all (see [`HubClient::cached`]): a revision
    /// already resolved is not asked about again, so pass a commit hash, or remove
    /// `refs/<revision>`, to move to a newer one. Otherwise one listing request resolves the
    /// revision to a commit, and each missing file is downloaded by `hf-hub` from
    /// `/{datasets/}{id}/resolve/{commit}/{path}` into `blobs/` (through a `.sync.part`
    /// file that a later call resumes, renamed only when complete) and linked under
    /// `snapshots/<commit>/`, with a progress bar per file when the configuration asks.
    ///
    /// # Errors
    /// [`HubError::NotCached`] when offline (or the Hub is unreachable) and the cache lacks
    /// a file, naming the patterns and where they would go; [`HubError::Unauthorized`]
    /// (naming `HF_TOKEN`) for a gated or private repository; [`HubError::NoMatch`] when a
    /// pattern matches no file of the repository; [`HubError::NotFound`],
    /// [`HubError::Http`], [`HubError::Io`] otherwise.
    pub async fn snapshot(&self, repo: &HubRepo, patterns: &[&str]) -> Result<Snapshot, HubError> {
        let patterns = Patterns::new(patterns)?;
        if let Some(snapshot) = self.cached_with(repo, &patterns) {
            tracing::debug!(%repo, commit = %snapshot.commit, "served from the cache");
            return Ok(snapshot);
        }
        let missing = || {
            let commit = cache::cached_commit(&self.config.cache_dir, repo);
            let files = commit
                .map(|c| {
                    cache::snapshot_files(&cache::snapshot_dir(&self.config.cache_dir, repo, &c))
                })
                .unwrap_or_default();
            patterns.unsatisfied(&files)
        };
        if self.config.offline {
            return Err(self.not_cached(repo, "HF_HUB_OFFLINE is set", missing()));
        }
        let listing = match self.list_files(repo).await {
            Ok(listing) => listing,
            Err(HubError::Http {
                status: None,
                message,
                ..
            }) => {
                let reason = format!(
                    "the Hub at {} is unreachable ({message})",
                    self.config.endpoint
                );
                return Err(self.not_cached(repo, &reason, missing()));
            }
            Err(e) => return Err(e),
        };
        let mut files = Vec::new();
        for (pattern, hits) in patterns.matches(&listing.files) {
            if hits.is_empty() {
                return Err(HubError::NoMatch {
                    repo: repo.clone(),
                    commit: listing.commit.clone(),
                    pattern: pattern.to_owned(),
                    available: listing.files.clone(),
                });
            }
            files.extend(hits.into_iter().map(str::to_owned));
        }
        files.sort();
        files.dedup();

        let dir = cache::snapshot_dir(&self.config.cache_dir, repo, &listing.commit);
        let at_commit = repo.at(&listing.commit);
        let api_repo = self.api.repo(at_commit.hf());
        let mut downloaded = 0;
        for file in &files {
            if dir.join(file).is_file() {
                continue;
            }
            let bar = self.bars.add(ProgressBar::new(0));
            let result = api_repo.download_with_progress(file, bar.clone()).await;
            bar.finish_and_clear();
            self.bars.remove(&bar);
            let path = result.map_err(|e| self.api_error(repo, file, e))?;
            if !path.starts_with(&dir) {
                let downloaded = path
                    .strip_prefix(self.repo_dir(repo).join("snapshots"))
                    .ok()
                    .and_then(|p| p.components().next())
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .unwrap_or_else(|| path.display().to_string());
                return Err(HubError::RevisionMoved {
                    repo: repo.clone(),
                    listed: listing.commit.clone(),
                    downloaded,
                });
            }
            downloaded += 1;
        }
        // hf-hub records the revision it downloaded at (here the commit itself) under refs/;
        // Python keeps refs/ for branch and tag names only, and so do we.
        let stray = self.repo_dir(repo).join("refs").join(&listing.commit);
        if !repo.revision_is_commit() && stray.is_file() {
            std::fs::remove_file(&stray).map_err(|e| HubError::io(&stray, e))?;
        }
        cache::write_ref(&self.config.cache_dir, repo, &listing.commit)?;
        tracing::info!(%repo, commit = %listing.commit, files = files.len(), downloaded, "snapshot ready");
        Ok(Snapshot {
            repo: repo.clone(),
            commit: listing.commit,
            dir,
            files,
            downloaded,
        })
    }

    fn not_cached(&self, repo: &HubRepo, reason: &str, missing: Vec<String>) -> HubError {
        HubError::NotCached {
            repo: repo.clone(),
            reason: reason.to_owned(),
            missing,
            cache_dir: self.repo_dir(repo),
        }
    }

    fn status_error(
        &self,
        repo: &HubRepo,
        url: &str,
        what: &str,
        status: u16,
        body: &str,
    ) -> HubError {
        match status {
            401 | 403 => HubError::Unauthorized {
                repo: repo.clone(),
                status,
                url: url.to_owned(),
                token_sent: self.config.token.is_some(),
            },
            404 => HubError::NotFound {
                repo: repo.clone(),
                url: url.to_owned(),
            },
            _ => HubError::Http {
                repo: repo.clone(),
                what: what.to_owned(),
                status: Some(status),
                message: hub_message(body),
            },
        }
    }

    fn http_error(&self, repo: &HubRepo, url: &str, what: &str, e: hf_reqwest::Error) -> HubError {
        match e.status() {
            Some(status) => self.status_error(repo, url, what, status.as_u16(), ""),
            None => HubError::Http {
                repo: repo.clone(),
                what: what.to_owned(),
                status: None,
                // Without the URL's query: a CDN URL carries signatures.
                message: without_url(&e),
            },
        }
    }

    fn api_error(&self, repo: &HubRepo, file: &str, e: hf_hub::api::tokio::ApiError) -> HubError {
        use hf_hub::api::tokio::ApiError;
        let what = format!("downloading {file}");
        let url = format!(
            "{}/{}resolve/{}/{file}",
            self.config.endpoint,
            match repo.kind {
                crate::RepoKind::Dataset => format!("datasets/{}/", repo.id),
                crate::RepoKind::Model => format!("{}/", repo.id),
            },
            repo.revision
        );
        match e {
            ApiError::RequestError(e) => self.http_error(repo, &url, &what, e),
            ApiError::TooManyRetries(inner) => match *inner {
                ApiError::RequestError(e) => self.http_error(repo, &url, &what, e),
                other => HubError::Http {
                    repo: repo.clone(),
                    what,
                    status: None,
                    message: other.to_string(),
                },
            },
            ApiError::IoError(source) => HubError::Io {
                path: self.repo_dir(repo),
                source,
            },
            other => HubError::Http {
                repo: repo.clone(),
                what,
                status: None,
                message: other.to_string(),
            },
        }
    }
}

/// The Hub's own error message (`{"error": "..."}`), else the body's start.
fn hub_message(body: &str) -> String {
    #[derive(Deserialize)]
    struct Wire {
        error: String,
    }
    match serde_json::from_str::<Wire>(body) {
        Ok(w) => w.error,
        Err(_) => body.chars().take(300).collect(),
    }
}

fn without_url(e: &hf_reqwest::Error) -> String {
    let mut message = e.to_string();
    if let Some(url) = e.url() {
        let mut bare = url.clone();
        bare.set_query(None);
        message = message.replace(url.as_str(), bare.as_str());
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(&format!(": {s}"));
        source = s.source();
    }
    message
}

fn select(patterns: &Patterns, files: &[String]) -> Vec<String> {
    let mut selected: Vec<String> = patterns
        .matches(files)
        .into_iter()
        .flat_map(|(_, hits)| hits.into_iter().map(str::to_owned))
        .collect();
    selected.sort();
    selected.dedup();
    selected
}

/// Runs `future` to completion on a runtime of its own, on a thread of its own, so that
/// synchronous code can call this crate's async API whether or not it already runs inside
/// a tokio runtime (the examples' `#[tokio::main]`).
///
/// # Panics
/// If the runtime cannot be built, or `future` panics (the panic is passed on).
pub fn block_on<F>(future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        let handle = scope.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime for Hub downloads")
                .block_on(future)
        });
        match handle.join() {
            Ok(output) => output,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// The files a model backend needs, as patterns for [`resolve_model`]: the configuration,
/// the tokenizer files (`tokenizer.json`, `tokenizer_config.json` with its chat template,
/// `tokenizer.model`), and the safetensors weights, one file or shards with their index.
pub const MODEL_FILES: [&str; 3] = ["config.json", "tokenizer*", "*.safetensors*"];

/// Resolves a model by name to a directory holding its files, downloading what the cache
/// lacks; the entry point for a local backend's `--base-model Org/Name`.
///
/// `revision` is a branch, tag or commit (`None`: `main`); `patterns` select the files
/// (`MODEL_FILES` for the usual config, tokenizer and safetensors; each pattern must match
/// at least one file of the repository). The returned directory is the cache's
/// `models--Org--Name/snapshots/<commit>/`: read `config.json`, `tokenizer.json` and the
/// `*.safetensors` (or the shards that `model.safetensors.index.json` names) from it. It
/// works offline (`HF_HUB_OFFLINE=1`, or `config.offline`) when the cache, Python's
/// included, holds the files, and never sends a request then.
///
/// ```no_run
/// let config = xlt_hub::HubConfig::from_env();
/// let dir = xlt_hub::block_on(xlt_hub::resolve_model(
///     &config,
///     "Qwen/Qwen2.5-0.5B-Instruct",
///     None,
///     &xlt_hub::MODEL_FILES,
/// ))?;
/// assert!(dir.join("config.json").is_file());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// As [`HubClient::snapshot`]: [`HubError::NotCached`] offline with files missing (naming
/// them and the cache folder), [`HubError::Unauthorized`] for a gated model without a
/// token (naming `HF_TOKEN`), [`HubError::Invalid`] for a malformed id or pattern.
pub async fn resolve_model(
    config: &HubConfig,
    repo_id: &str,
    revision: Option<&str>,
    patterns: &[&str],
) -> Result<PathBuf, HubError> {
    let repo = HubRepo::model(repo_id, revision)?;
    let client = HubClient::new(config.clone())?;
    Ok(client.snapshot(&repo, patterns).await?.dir)
}

/// [`resolve_model`] for synchronous callers (see [`block_on`]).
///
/// # Errors
/// As [`resolve_model`].
pub fn resolve_model_blocking(
    config: &HubConfig,
    repo_id: &str,
    revision: Option<&str>,
    patterns: &[&str],
) -> Result<PathBuf, HubError> {
    block_on(resolve_model(config, repo_id, revision, patterns))
}
