//! Where Global-MMLU comes from: local files, or a dataset on the Hugging Face Hub fetched
//! by name into the shared cache (through `xlt-hub`).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use xlt_hub::{HubClient, HubConfig, HubRepo};

use crate::dataset::Dataset;
use crate::error::DataError;
use crate::language::Language;
use crate::load::load_paths;

/// The prefix of a Hub source: `hf:CohereLabs/Global-MMLU`.
pub const HUB_PREFIX: &str = "hf:";

/// A source of Global-MMLU rows: a file or directory, or a Hub dataset.
///
/// Parsed from text (`FromStr`): `hf:Org/Name` or `hf:Org/Name@revision` is a Hub dataset
/// (a branch, tag or commit hash; `main` when left out), anything else a path.
///
/// ```
/// use xlt_data::DataSource;
///
/// let hub: DataSource = "hf:CohereLabs/Global-MMLU@main".parse()?;
/// assert!(matches!(hub, DataSource::Hub { ref revision, .. } if revision.as_deref() == Some("main")));
/// let local: DataSource = "data/global-mmlu".parse()?;
/// assert!(matches!(local, DataSource::Path(_)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    /// A data file or a directory of them (see [`crate::load_paths`]).
    Path(PathBuf),
    /// A dataset repository in the Hugging Face layout, `<lang>/<split>-NNNNN-of-NNNNN.parquet`
    /// (`CohereLabs/Global-MMLU`, `CohereLabs/Global-MMLU-Lite`).
    Hub {
        /// `Org/Name`.
        repo: String,
        /// Branch, tag or commit hash; `None` is `main`.
        revision: Option<String>,
    },
}

impl FromStr for DataSource {
    type Err = DataError;

    fn from_str(s: &str) -> Result<DataSource, DataError> {
        let Some(rest) = s.strip_prefix(HUB_PREFIX) else {
            return Ok(DataSource::Path(PathBuf::from(s)));
        };
        let (repo, revision) = match rest.split_once('@') {
            Some((repo, revision)) => (repo, Some(revision)),
            None => (rest, None),
        };
        // Validate now, so that a typo fails before anything is read.
        HubRepo::dataset(repo, revision)?;
        Ok(DataSource::Hub {
            repo: repo.to_owned(),
            revision: revision.map(str::to_owned),
        })
    }
}

impl fmt::Display for DataSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSource::Path(p) => write!(f, "{}", p.display()),
            DataSource::Hub {
                repo,
                revision: None,
            } => write!(f, "{HUB_PREFIX}{repo}"),
            DataSource::Hub {
                repo,
                revision: Some(r),
            } => write!(f, "{HUB_PREFIX}{repo}@{r}"),
        }
    }
}

/// What a Hub source resolved to, recorded in `manifest.json` so that a study says exactly
/// which data it used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// The source as given: `hf:CohereLabs/Global-MMLU` or `hf:...@revision`.
    pub source: String,
    /// The revision asked for (`main` when none was given).
    pub revision: String,
    /// The commit the files came from (40 hexadecimal digits).
    pub commit: String,
    /// The files read, as repository paths (`am/test-00000-of-00001.parquet`).
    pub files: Vec<String>,
}

/// How to load sources: which languages and split to fetch from the Hub, and how to reach
/// it.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Languages to fetch from a Hub source; empty: every language the dataset has. Local
    /// paths are read whole (the selection happens in [`crate::prepare`]).
    pub languages: Vec<Language>,
    /// The split to fetch from a Hub source: `test` (the default) or `dev`.
    pub split: String,
    /// Cache, endpoint, token and offline mode (usually [`HubConfig::from_env`]).
    pub hub: HubConfig,
}

impl LoadOptions {
    /// The `test` split of `languages`, with the Hub settings of the environment.
    pub fn from_env(languages: Vec<Language>) -> LoadOptions {
        LoadOptions {
            languages,
            split: "test".to_owned(),
            hub: HubConfig::from_env(),
        }
    }
}

/// Loads every source into one [`Dataset`], fetching Hub sources first: only the parquet
/// files of the selected languages and split (`<lang>/<split>-*.parquet`), from the cache
/// when it holds them, else downloaded into it (see `xlt_hub::HubClient::snapshot`).
/// Returns the dataset and one [`SourceRecord`] per Hub source.
///
/// # Errors
/// [`DataError::Hub`] when a Hub source cannot be fetched (offline with files missing, a
/// gated dataset without `HF_TOKEN`, a language the dataset lacks, a network failure);
/// then the errors of [`load_paths`].
pub fn load_sources(
    sources: &[DataSource],
    options: &LoadOptions,
) -> Result<(Dataset, Vec<SourceRecord>), DataError> {
    let mut paths = Vec::new();
    let mut records = Vec::new();
    let mut client = None;
    for source in sources {
        match source {
            DataSource::Path(p) => paths.push(p.clone()),
            DataSource::Hub { repo, revision } => {
                let repo = HubRepo::dataset(repo, revision.as_deref())?;
                if client.is_none() {
                    client = Some(HubClient::new(options.hub.clone())?);
                }
                let client = client.as_ref().expect("set above");
                let snapshot = xlt_hub::block_on(fetch(client, &repo, options))?;
                paths.extend(snapshot.paths());
                records.push(SourceRecord {
                    source: source.to_string(),
                    revision: repo.revision.clone(),
                    commit: snapshot.commit,
                    files: snapshot.files,
                });
            }
        }
    }
    Ok((load_paths(&paths)?, records))
}

async fn fetch(
    client: &HubClient,
    repo: &HubRepo,
    options: &LoadOptions,
) -> Result<xlt_hub::Snapshot, DataError> {
    let split = &options.split;
    let mut languages = options.languages.clone();
    if languages.is_empty() {
        // Every language: the cache cannot tell whether it holds them all, so ask the Hub
        // (offline, whatever the cache holds is all there is).
        let all = format!("*/{split}-*.parquet");
        let files = if client.config().offline {
            client
                .cached(repo, &[all.as_str()])?
                .map(|s| s.files)
                .unwrap_or_default()
        } else {
            client.list_files(repo).await?.files
        };
        languages = files
            .iter()
            .filter(|f| {
                f.rsplit('/')
                    .next()
                    .is_some_and(|n| n.starts_with(&format!("{split}-")) && n.ends_with(".parquet"))
            })
            .filter_map(|f| {
                f.split_once('/')
                    .and_then(|(dir, _)| Language::from_code(dir))
            })
            .collect();
        languages.sort();
        languages.dedup();
        if languages.is_empty() {
            // Let the snapshot say what is missing or what the repository has.
            return Ok(client.snapshot(repo, &[all.as_str()]).await?);
        }
    }
    let patterns: Vec<String> = languages
        .iter()
        .map(|l| format!("{}/{split}-*.parquet", l.code()))
        .collect();
    let patterns: Vec<&str> = patterns.iter().map(String::as_str).collect();
    Ok(client.snapshot(repo, &patterns).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_and_print_back() {
        let check = |text: &str, expected: DataSource| {
            let parsed: DataSource = text.parse().unwrap();
            assert_eq!(parsed, expected, "{text}");
            assert_eq!(parsed.to_string(), text);
        };
        check(
            "hf:CohereLabs/Global-MMLU",
            DataSource::Hub {
                repo: "CohereLabs/Global-MMLU".into(),
                revision: None,
            },
        );
        check(
            "hf:CohereLabs/Global-MMLU-Lite@0123456789abcdef0123456789abcdef01234567",
            DataSource::Hub {
                repo: "CohereLabs/Global-MMLU-Lite".into(),
                revision: Some("0123456789abcdef0123456789abcdef01234567".into()),
            },
        );
        check(
            "data/global-mmlu",
            DataSource::Path("data/global-mmlu".into()),
        );
        for bad in ["hf:", "hf:a/b/c", "hf:Org/Name@", "hf:../x"] {
            let err = bad.parse::<DataSource>().unwrap_err();
            assert!(matches!(err, DataError::Hub(_)), "{bad}: {err}");
        }
    }
}
