//! Where the questions come from: local files (of a benchmark recognised from the file, or
//! named before the path), or a dataset on the Hugging Face Hub fetched by name into the
//! shared cache (through `xlt-hub`), in its own repository layout.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use xlt_hub::{HubClient, HubConfig, HubRepo};

use crate::benchmark::Benchmark;
use crate::dataset::Dataset;
use crate::error::DataError;
use crate::language::Language;
use crate::load::load_paths_as;

/// The prefix of a Hub source: `hf:CohereLabs/Global-MMLU`.
pub const HUB_PREFIX: &str = "hf:";

/// A source of questions: a file or directory, or a Hub dataset.
///
/// Parsed from text (`FromStr`): `hf:Org/Name` or `hf:Org/Name@revision` is a Hub dataset
/// (a branch, tag or commit hash; `main` when left out); `<benchmark>:<path>` a path read
/// as that benchmark (`afrimmlu:data/afrimmlu`, `belebele:`, `mmmlu:`, `global-mmlu:`; see
/// [`Benchmark`]); anything else a path whose files' benchmark is recognised from each
/// file ([`Benchmark::detect`]). So `--data afrimmlu:dir` needs no other flag.
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
    /// A data file or directory read as one benchmark.
    Named {
        /// The benchmark its files are read as.
        benchmark: Benchmark,
        /// The file or directory.
        path: PathBuf,
    },
    /// A dataset repository on the Hub, read in the layout of its benchmark
    /// ([`Benchmark::of_hub_repo`]): `<lang>/<split>-NNNNN-of-NNNNN.parquet`
    /// (`CohereLabs/Global-MMLU`, `CohereLabs/Global-MMLU-Lite`, any other repository),
    /// `data/<lang3>/<split>.tsv` (`masakhane/afrimmlu`), `data/<flores>.jsonl`
    /// (`facebook/belebele`), `test/mmlu_<LOCALE>.csv` (`openai/MMMLU`).
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
            if let Some((name, path)) = s.split_once(':')
                && let Ok(benchmark) = name.parse::<Benchmark>()
            {
                return Ok(DataSource::Named {
                    benchmark,
                    path: PathBuf::from(path),
                });
            }
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
            DataSource::Named { benchmark, path } => write!(f, "{benchmark}:{}", path.display()),
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
    /// The source as given: `hf:CohereLabs/Global-MMLU` or `hf:...@revision`; for local
    /// files, `afrimmlu:fixtures/afrimmlu` (the benchmark named before the path as given,
    /// also when it was recognised from the files).
    pub source: String,
    /// The revision asked for (`main` when none was given; empty for local files).
    pub revision: String,
    /// The commit the files came from (40 hexadecimal digits; empty for local files).
    pub commit: String,
    /// The files read, as repository paths (`am/test-00000-of-00001.parquet`), or for
    /// local files as paths below the source's (`ibo.test.tsv`).
    pub files: Vec<String>,
    /// The benchmark the files were read as; recorded for local files (absent for Hub
    /// sources, whose repository names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub benchmark: Option<Benchmark>,
}

impl SourceRecord {
    /// The benchmark the source's files were read as: the recorded one, else the one its
    /// Hub repository names ([`Benchmark::of_hub_repo`]).
    pub fn benchmark(&self) -> Benchmark {
        self.benchmark.unwrap_or_else(|| {
            let repo = self.source.strip_prefix(HUB_PREFIX).unwrap_or(&self.source);
            Benchmark::of_hub_repo(repo.split('@').next().unwrap_or(repo))
        })
    }
}

/// The record of local files read as `benchmark` from `path` (given as `shown`), or `None`
/// for Global-MMLU files given by a plain path: those are not recorded, so that an
/// experiment prepared from them keeps the manifest, and the fingerprint, it had before
/// sources were recorded for local files.
fn local_record(
    path: &std::path::Path,
    named: Option<Benchmark>,
) -> Result<Option<SourceRecord>, DataError> {
    let files = crate::load::data_files(path)?;
    let benchmark = match named {
        Some(b) => b,
        None => {
            let mut found = None;
            for f in &files {
                let b = Benchmark::detect(f)?;
                if b != Benchmark::GlobalMmlu {
                    found = Some(b);
                    break;
                }
            }
            match found {
                Some(b) => b,
                None => return Ok(None),
            }
        }
    };
    let files = files
        .iter()
        .map(|f| {
            f.strip_prefix(path)
                .ok()
                .filter(|r| !r.as_os_str().is_empty())
                .unwrap_or(f)
                .display()
                .to_string()
        })
        .collect();
    Ok(Some(SourceRecord {
        source: format!("{benchmark}:{}", path.display()),
        revision: String::new(),
        commit: String::new(),
        files,
        benchmark: Some(benchmark),
    }))
}

/// How to load sources: which languages and split to fetch from the Hub, and how to reach
/// it.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Languages to fetch from a Hub source; empty: every language the dataset has. Local
    /// paths are read whole (the selection happens in [`crate::prepare`]).
    pub languages: Vec<Language>,
    /// The split to fetch from a Hub source: `test` (the default), or `dev` (Global-MMLU,
    /// AfriMMLU) or `val` (AfriMMLU). Belebele and MMMLU have `test` only, fetched whatever
    /// this says.
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

/// Loads every source into one [`Dataset`], fetching Hub sources first: only the files of
/// the selected languages (and split) in the repository's layout (see
/// [`DataSource::Hub`]), from the cache when it holds them, else downloaded into it (see
/// `xlt_hub::HubClient::snapshot`).
/// Returns the dataset and one [`SourceRecord`] per Hub source and per local source of a
/// named benchmark (`afrimmlu:<path>`) or of files recognised as AfriMMLU, Belebele or
/// MMMLU (Global-MMLU files given by a plain path get none, as before local sources were
/// recorded).
///
/// # Errors
/// [`DataError::Hub`] when a Hub source cannot be fetched (offline with files missing, a
/// gated dataset without `HF_TOKEN`, a language the dataset lacks, a network failure);
/// then the errors of [`crate::load_paths`].
pub fn load_sources(
    sources: &[DataSource],
    options: &LoadOptions,
) -> Result<(Dataset, Vec<SourceRecord>), DataError> {
    let mut paths: Vec<(PathBuf, Option<Benchmark>)> = Vec::new();
    let mut records = Vec::new();
    let mut client = None;
    for source in sources {
        match source {
            DataSource::Path(p) => {
                records.extend(local_record(p, None)?);
                paths.push((p.clone(), None));
            }
            DataSource::Named { benchmark, path } => {
                records.extend(local_record(path, Some(*benchmark))?);
                paths.push((path.clone(), Some(*benchmark)));
            }
            DataSource::Hub {
                repo: name,
                revision,
            } => {
                let repo = HubRepo::dataset(name, revision.as_deref())?;
                if client.is_none() {
                    client = Some(HubClient::new(options.hub.clone())?);
                }
                let client = client.as_ref().expect("set above");
                let layout = Layout(Benchmark::of_hub_repo(name));
                let snapshot = xlt_hub::block_on(fetch(client, &repo, layout, options))?;
                paths.extend(snapshot.paths().into_iter().map(|p| (p, Some(layout.0))));
                records.push(SourceRecord {
                    source: source.to_string(),
                    revision: repo.revision.clone(),
                    commit: snapshot.commit,
                    files: snapshot.files,
                    benchmark: None,
                });
            }
        }
    }
    let paths: Vec<(&std::path::Path, Option<Benchmark>)> =
        paths.iter().map(|(p, b)| (p.as_path(), *b)).collect();
    Ok((load_paths_as(&paths)?, records))
}

/// The languages of the local files of `sources`, from their paths (see
/// [`crate::language_from_path`]), without reading them: what an error about a language
/// the user named can list as "the data has". Hub sources, and files whose language the
/// path does not tell, add nothing.
pub fn path_languages(sources: &[DataSource]) -> Vec<Language> {
    let mut found = std::collections::BTreeSet::new();
    for source in sources {
        let path = match source {
            DataSource::Path(p) | DataSource::Named { path: p, .. } => p,
            DataSource::Hub { .. } => continue,
        };
        for file in crate::load::data_files(path).unwrap_or_default() {
            if let Ok(l) = crate::load::language_from_path(&file) {
                found.insert(l);
            }
        }
    }
    found.into_iter().collect()
}

/// Where a benchmark's Hub repository keeps each language's files.
#[derive(Debug, Clone, Copy)]
struct Layout(Benchmark);

impl Layout {
    /// The pattern of one language's files of `split`.
    fn pattern(self, language: Language, split: &str) -> String {
        match self.0 {
            Benchmark::GlobalMmlu => format!("{}/{split}-*.parquet", language.code()),
            Benchmark::AfriMmlu => format!("data/{}/{split}.tsv", afrimmlu_code(language)),
            Benchmark::Belebele => format!("data/{}.jsonl", language.flores_code()),
            Benchmark::Mmmlu => format!("test/mmlu_{}-*.csv", language.code().to_ascii_uppercase()),
        }
    }

    /// The pattern of every language's files of `split`.
    fn all(self, split: &str) -> String {
        match self.0 {
            Benchmark::GlobalMmlu => format!("*/{split}-*.parquet"),
            Benchmark::AfriMmlu => format!("data/*/{split}.tsv"),
            Benchmark::Belebele => "data/*.jsonl".to_owned(),
            Benchmark::Mmmlu => "test/mmlu_*.csv".to_owned(),
        }
    }
}

/// AfriMMLU's folder name of a language: ISO 639-3, with the macrolanguage codes it uses
/// for Oromo (`orm`) and Swahili (`swa`).
fn afrimmlu_code(language: Language) -> &'static str {
    match language {
        Language::Oromo => "orm",
        Language::Swahili => "swa",
        l => l.iso639_3(),
    }
}

async fn fetch(
    client: &HubClient,
    repo: &HubRepo,
    layout: Layout,
    options: &LoadOptions,
) -> Result<xlt_hub::Snapshot, DataError> {
    let split = &options.split;
    let mut languages = options.languages.clone();
    if languages.is_empty() {
        // Every language: the cache cannot tell whether it holds them all, so ask the Hub
        // (offline, whatever the cache holds is all there is).
        let all = layout.all(split);
        let matcher = all_matcher(&all);
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
            .filter(|f| matcher(f))
            .filter_map(|f| crate::load::language_from_path(std::path::Path::new(f)).ok())
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
        .map(|l| layout.pattern(*l, split))
        .collect();
    let patterns: Vec<&str> = patterns.iter().map(String::as_str).collect();
    Ok(client.snapshot(repo, &patterns).await?)
}

/// Whether a repository path matches an "every language" pattern: the pattern's `*` stands
/// for one path segment's part, as in the Hub's `allow_patterns`.
fn all_matcher(pattern: &str) -> impl Fn(&str) -> bool + '_ {
    move |file: &str| glob_match(pattern.as_bytes(), file.as_bytes())
}

fn glob_match(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_match(&p[1..], s) || (!s.is_empty() && s[0] != b'/' && glob_match(p, &s[1..]))
        }
        (Some(a), Some(b)) if a == b => glob_match(&p[1..], &s[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_name_the_real_repository_paths() {
        let check = |b: Benchmark, l: Language, split: &str, path: &str| {
            let pattern = Layout(b).pattern(l, split);
            assert!(
                glob_match(pattern.as_bytes(), path.as_bytes()),
                "{pattern} / {path}"
            );
            assert!(
                glob_match(Layout(b).all(split).as_bytes(), path.as_bytes()),
                "{path}"
            );
            assert_eq!(
                crate::load::language_from_path(std::path::Path::new(path)).unwrap(),
                l,
                "{path}"
            );
        };
        check(
            Benchmark::GlobalMmlu,
            Language::Yoruba,
            "test",
            "yo/test-00000-of-00001.parquet",
        );
        check(
            Benchmark::AfriMmlu,
            Language::Igbo,
            "test",
            "data/ibo/test.tsv",
        );
        check(
            Benchmark::AfriMmlu,
            Language::Swahili,
            "dev",
            "data/swa/dev.tsv",
        );
        check(
            Benchmark::AfriMmlu,
            Language::Oromo,
            "val",
            "data/orm/val.tsv",
        );
        check(
            Benchmark::Belebele,
            Language::Amharic,
            "test",
            "data/amh_Ethi.jsonl",
        );
        check(
            Benchmark::Belebele,
            Language::Swahili,
            "test",
            "data/swh_Latn.jsonl",
        );
        check(
            Benchmark::Mmmlu,
            Language::Yoruba,
            "test",
            "test/mmlu_YO-NG.csv",
        );
        check(
            Benchmark::Mmmlu,
            Language::Arabic,
            "test",
            "test/mmlu_AR-XY.csv",
        );
        assert!(!glob_match(b"data/*.jsonl", b"data/x/y.jsonl"));
    }

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
        check(
            "afrimmlu:fixtures/afrimmlu",
            DataSource::Named {
                benchmark: Benchmark::AfriMmlu,
                path: "fixtures/afrimmlu".into(),
            },
        );
        check(
            "mmmlu:x/mmlu_YO-NG.csv",
            DataSource::Named {
                benchmark: Benchmark::Mmmlu,
                path: "x/mmlu_YO-NG.csv".into(),
            },
        );
        // A colon that names no benchmark is part of the path (`C:\data` on Windows).
        check("C:/data", DataSource::Path("C:/data".into()));
        for bad in ["hf:", "hf:a/b/c", "hf:Org/Name@", "hf:../x"] {
            let err = bad.parse::<DataSource>().unwrap_err();
            assert!(matches!(err, DataError::Hub(_)), "{bad}: {err}");
        }
    }
}
