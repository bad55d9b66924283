//! From a loaded dataset to an experiment's files: manifest, fine-tuning and evaluation sets.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::audit::{AmbiguousKey, Inconsistency, MisalignedFile, MisalignedLanguage};
use crate::dataset::{Dataset, Selection};
use crate::error::DataError;
use crate::export::{PromptTemplate, estimate_chat_tokens};
use crate::language::Language;
use crate::question::{Domain, compare_sample_ids};
use crate::scheme::DomainScheme;
use crate::source::SourceRecord;
use crate::split::{Split, SplitConfig, leakage_audit, shuffle_key, split_items};

/// What to prepare: which questions, how to split them, how to prompt.
#[derive(Debug, Clone, Default)]
pub struct PrepareConfig {
    /// Languages and domains (and optionally subjects and cultural labels) to keep. Empty
    /// languages mean every language in the data; empty domains mean the study's three.
    pub selection: Selection,
    /// Train fraction and seed.
    pub split: SplitConfig,
    /// The prompt for training and evaluation.
    pub template: PromptTemplate,
    /// The Hub sources the dataset came from (see [`crate::load_sources`]), copied into
    /// the manifest.
    pub sources: Vec<SourceRecord>,
    /// How subjects are grouped into domains; `selection.domains` name domains of this
    /// scheme. Recorded in the manifest.
    pub domain_scheme: DomainScheme,
}

/// One language-domain slice in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestSlice {
    /// Language of the slice.
    pub language: Language,
    /// Domain of the slice.
    pub domain: Domain,
    /// Training ids, in sample-id order.
    pub train_ids: Vec<String>,
    /// Test ids, in sample-id order.
    pub test_ids: Vec<String>,
}

/// `manifest.json`: the split, reproducible from the seed.
///
/// Fields added after the first release are left out of the file when they hold their
/// default (the `study` scheme, no misaligned file), so that an experiment prepared from
/// Global-MMLU before them has the same bytes, and the same fingerprint, as before.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The split's seed.
    pub seed: u64,
    /// The split's training fraction.
    pub train_fraction: f64,
    /// Every slice, by language then domain.
    pub slices: Vec<ManifestSlice>,
    /// Sample ids dropped as duplicates (in every language).
    pub dropped_duplicates: usize,
    /// Sample ids dropped because some language lacks them.
    pub dropped_unaligned: usize,
    /// The Hub datasets the rows came from, each with the commit it resolved to, and the
    /// local sources of a named or recognised benchmark other than Global-MMLU, as given
    /// (absent when every source was a plain path to Global-MMLU files).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceRecord>,
    /// Sample ids dropped (in every language) because the correct option's text equals
    /// another option's (see [`Dataset::audit_answer_keys`]); audited on every loaded row of
    /// the selected languages, before domains and subjects are selected.
    #[serde(default)]
    pub dropped_ambiguous_key: Vec<AmbiguousKey>,
    /// Sample ids dropped (in every language) because the languages disagree on the answer
    /// letter or on the numbers of the question (see [`Dataset::audit_consistency`]).
    #[serde(default)]
    pub dropped_inconsistent: Vec<Inconsistency>,
    /// The domain scheme the slices' domains belong to (`study` or `mmlu`; absent from the
    /// file: `study`).
    #[serde(default, skip_serializing_if = "is_study")]
    pub domain_scheme: DomainScheme,
    /// Subjects of files excluded because their language's answer keys agree with the
    /// others' no better than chance (see [`Dataset::audit_file_alignment`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub misaligned_files: Vec<MisalignedFile>,
    /// Selected languages left out because every row of theirs was misaligned (as a whole,
    /// [`Manifest::misaligned_languages`], or subject by subject).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_languages: Vec<Language>,
    /// Languages whose answer keys agree with every other language's at chance, excluded
    /// whole before the other audits (see [`Dataset::audit_language_alignment`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub misaligned_languages: Vec<MisalignedLanguage>,
}

fn is_study(scheme: &DomainScheme) -> bool {
    *scheme == DomainScheme::Study
}

impl Manifest {
    /// The file stem of a slice: `<lang>-<domain slug>`, e.g. `en-stem`.
    pub fn slice_name(language: Language, domain: Domain) -> String {
        format!("{}-{}", language.code(), domain.slug())
    }

    /// Audits the manifest's own slices for leakage (see [`leakage_audit`]).
    pub fn leakage(&self) -> crate::split::LeakageReport {
        leakage_audit(
            self.slices
                .iter()
                .flat_map(|s| s.train_ids.iter().map(move |id| (s.language, id.as_str()))),
            self.slices
                .iter()
                .flat_map(|s| s.test_ids.iter().map(move |id| (s.language, id.as_str()))),
        )
    }
}

/// Counts of one slice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceStats {
    /// Language.
    pub language: Language,
    /// Domain.
    pub domain: Domain,
    /// Training questions.
    pub train: usize,
    /// Test questions.
    pub test: usize,
    /// Estimated training tokens for one epoch (see [`crate::estimate_tokens`]).
    pub train_tokens: usize,
}

/// A prepared experiment, in memory: nothing is written until [`Prepared::write_to`].
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The manifest.
    pub manifest: Manifest,
    /// Counts per slice, in manifest order.
    pub stats: Vec<SliceStats>,
    files: Vec<(PathBuf, String)>,
}

impl Prepared {
    /// The output files, as (path relative to the output directory, content), manifest last.
    pub fn files(&self) -> &[(PathBuf, String)] {
        &self.files
    }

    /// Writes every file under `dir`, each atomically (a temporary file renamed into place),
    /// `manifest.json` last so that its presence means the rest is complete.
    ///
    /// # Errors
    /// [`DataError::Io`] naming the file that could not be written.
    pub fn write_to(&self, dir: &Path) -> Result<(), DataError> {
        for (rel, content) in &self.files {
            write_atomic(&dir.join(rel), content.as_bytes())?;
        }
        Ok(())
    }

    /// A plain-text table of the slice counts.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<8} {:<12} {:>6} {:>6} {:>12}",
            "language", "domain", "train", "test", "train tokens"
        );
        for st in &self.stats {
            let _ = writeln!(
                s,
                "{:<8} {:<12} {:>6} {:>6} {:>12}",
                st.language.code(),
                st.domain.name(),
                st.train,
                st.test,
                st.train_tokens
            );
        }
        let m = &self.manifest;
        let _ = writeln!(
            s,
            "dropped duplicates: {}, dropped unaligned: {}, dropped ambiguous key: {}, dropped inconsistent: {}",
            m.dropped_duplicates,
            m.dropped_unaligned,
            m.dropped_ambiguous_key.len(),
            m.dropped_inconsistent.len()
        );
        for l in &m.misaligned_languages {
            let _ = writeln!(s, "  {l}");
        }
        for f in &m.misaligned_files {
            let _ = writeln!(s, "  {f}");
        }
        for l in m
            .excluded_languages
            .iter()
            .filter(|l| !m.misaligned_languages.iter().any(|w| w.language == **l))
        {
            let _ = writeln!(
                s,
                "  language {l} ({}) is excluded: every row of it is misaligned",
                l.name()
            );
        }
        for d in &m.dropped_ambiguous_key {
            let langs: Vec<&str> = d.languages.iter().map(|l| l.code()).collect();
            let _ = writeln!(s, "  ambiguous key: {} ({})", d.sample_id, langs.join(","));
        }
        for d in &m.dropped_inconsistent {
            let langs: Vec<&str> = d.languages.iter().map(|l| l.code()).collect();
            let _ = writeln!(
                s,
                "  inconsistent: {} (disagreeing: {}; fields: {})",
                d.sample_id,
                langs.join(","),
                d.fields.join(",")
            );
        }
        s
    }
}

/// A temporary file in `dir` created with the mode any new file gets (0o666 less the
/// process's umask: 0o644 under umask 022), not `tempfile`'s owner-only 0o600, so that the
/// file it is renamed to is as readable as any tool's output. Named `.xlt-tmp-*`, the prefix
/// of every temporary file the workspace writes (`xlt_provider::TEMP_PREFIX`, which this crate
/// does not depend on), so that a study opening an experiment sweeps what a killed `prepare`
/// left.
fn tempfile_with_umask(dir: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(".xlt-tmp-");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    builder.tempfile_in(dir)
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so a
/// reader never sees half a file. Creates the parent directories. The file gets the mode of
/// any new file (the umask's), not a temporary file's 0o600.
///
/// # Errors
/// [`DataError::Io`] naming `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e))?;
    let mut tmp = tempfile_with_umask(parent).map_err(|e| DataError::io(path, e))?;
    tmp.write_all(bytes).map_err(|e| DataError::io(path, e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| DataError::io(path, e))?;
    tmp.persist(path)
        .map_err(|e| DataError::io(path, e.error))?;
    Ok(())
}

/// Excludes languages misaligned as a whole, audits answer keys (every row of the other
/// selected languages) and misaligned blocks, selects, de-duplicates, aligns, audits
/// cross-language consistency and splits `dataset`, and renders every file of the
/// experiment: `manifest.json`, `finetune/<lang>-<domain>.jsonl` (chat format, in seeded
/// shuffled order) and `eval/<lang>-<domain>.jsonl` (in sample-id order).
///
/// # Errors
/// [`DataError::EmptySlice`] if a selected language is not in the data, or a selected
/// language-domain slice has no training or no test question;
/// [`DataError::DomainNotInData`] if a selected domain has no question in the selected
/// languages, naming the domains they have; split errors as
/// [`split_items`].
pub fn prepare(dataset: Dataset, config: &PrepareConfig) -> Result<Prepared, DataError> {
    let found = dataset.languages();
    let mut selection = config.selection.clone();
    for l in &selection.languages {
        if !found.contains(l) {
            return Err(DataError::EmptySlice {
                what: format!(
                    "language {l} was selected but the data has no question in it; the data has {}",
                    found
                        .iter()
                        .map(|l| l.code())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
    }
    if selection.languages.is_empty() {
        selection.languages = found;
    }
    let scheme = config.domain_scheme;
    if selection.domains.is_empty() {
        selection.domains = scheme.default_domains();
    }
    if let Some(d) = selection
        .domains
        .iter()
        .find(|d| !scheme.domains().contains(d))
    {
        return Err(DataError::InvalidConfig(format!(
            "domain {d} is not one of the {scheme} scheme's"
        )));
    }
    // Answer keys are audited in the experiment's languages (less those misaligned as a
    // whole) but in every domain and subject, so that `prepare` reports each flawed key of
    // the data it was given.
    let languages_only = Selection {
        languages: selection.languages.clone(),
        ..Selection::default()
    };
    // Whole languages whose keys agree with every other's at chance go first, so that they
    // cannot outvote the aligned languages in the block and id-by-id audits below, nor
    // drop an id in every language for a flawed key of a row that is not the same question.
    let (dataset, misaligned_languages) =
        dataset.select(&languages_only).audit_language_alignment();
    let (dataset, keys) = dataset.audit_answer_keys();
    // Whole blocks (a subject of a file) whose keys agree with the other languages' at chance are not the same
    // questions: they go before the id-by-id audits, and a language left with no row is
    // left out of the experiment.
    let (dataset, misaligned_files) = dataset.audit_file_alignment();
    let remaining = dataset.languages();
    let excluded_languages: Vec<Language> = selection
        .languages
        .iter()
        .copied()
        .filter(|l| !remaining.contains(l))
        .collect();
    selection.languages.retain(|l| remaining.contains(l));
    let dataset = dataset.with_scheme(scheme);
    // A selected domain with no question at all (MMMLU rows of a few subjects, AfriMMLU
    // under the study scheme's default Medical) is named with the domains the data has.
    // (The dataset holds the selected languages only, since the answer-key audit.)
    let available: Vec<Domain> = dataset
        .domains()
        .into_iter()
        .filter(|d| scheme.domains().contains(d))
        .collect();
    if let Some(&domain) = selection.domains.iter().find(|d| !available.contains(d)) {
        return Err(DataError::DomainNotInData {
            domain,
            scheme: scheme.to_string(),
            available,
        });
    }
    let (dataset, dedup) = dataset.select(&selection).dedup();
    let (dataset, align) = dataset.align();
    let (dataset, consistency) = dataset.audit_consistency();
    let split = split_items(&dataset.items(), &config.split)?;

    let mut languages = selection.languages.clone();
    languages.sort();
    languages.dedup();
    let mut domains = selection.domains.clone();
    domains.sort();
    domains.dedup();

    let mut slices = Vec::new();
    let mut stats = Vec::new();
    let mut files = Vec::new();
    for &language in &languages {
        for &domain in &domains {
            let (slice, stat, ft, ev) = render_slice(&dataset, &split, language, domain, config)?;
            let name = Manifest::slice_name(language, domain);
            files.push((PathBuf::from(format!("finetune/{name}.jsonl")), ft));
            files.push((PathBuf::from(format!("eval/{name}.jsonl")), ev));
            slices.push(slice);
            stats.push(stat);
        }
    }
    let manifest = Manifest {
        seed: config.split.seed,
        train_fraction: config.split.train_fraction,
        slices,
        dropped_duplicates: dedup.dropped_ids.len(),
        dropped_unaligned: align.dropped_ids,
        sources: config.sources.clone(),
        dropped_ambiguous_key: keys.dropped,
        dropped_inconsistent: consistency.dropped,
        domain_scheme: scheme,
        misaligned_files,
        excluded_languages,
        misaligned_languages,
    };
    let leaks = manifest.leakage();
    assert!(
        leaks.is_clean(),
        "a split by sample id cannot leak; audit found {:?}",
        leaks.leaked.first()
    );
    let mut json = serde_json::to_string_pretty(&manifest).expect("manifest serializes");
    json.push('\n');
    files.push((PathBuf::from("manifest.json"), json));
    Ok(Prepared {
        manifest,
        stats,
        files,
    })
}

type RenderedSlice = (ManifestSlice, SliceStats, String, String);

fn render_slice(
    dataset: &Dataset,
    split: &Split,
    language: Language,
    domain: Domain,
    config: &PrepareConfig,
) -> Result<RenderedSlice, DataError> {
    let (mut train, test): (Vec<_>, Vec<_>) = dataset
        .slice(language, domain)
        .partition(|q| split.is_train(&q.sample_id));
    let name = Manifest::slice_name(language, domain);
    if train.is_empty() || test.is_empty() {
        return Err(DataError::EmptySlice {
            what: format!(
                "{name} has {} training and {} test questions after selection, de-duplication and alignment",
                train.len(),
                test.len()
            ),
        });
    }
    let mut train_tokens = 0;
    let mut ft = String::new();
    train.sort_by_cached_key(|q| shuffle_key(config.split.seed, &q.sample_id));
    for q in &train {
        let rec = config.template.finetune_record(q);
        train_tokens += estimate_chat_tokens(&rec.messages);
        ft.push_str(&serde_json::to_string(&rec).expect("record serializes"));
        ft.push('\n');
    }
    let mut ev = String::new();
    for q in &test {
        ev.push_str(&serde_json::to_string(&config.template.eval_record(q)).expect("serializes"));
        ev.push('\n');
    }
    let mut train_ids: Vec<String> = train.iter().map(|q| q.sample_id.clone()).collect();
    train_ids.sort_by(|a, b| compare_sample_ids(a, b));
    let test_ids: Vec<String> = test.iter().map(|q| q.sample_id.clone()).collect();
    let stat = SliceStats {
        language,
        domain,
        train: train_ids.len(),
        test: test_ids.len(),
        train_tokens,
    };
    let slice = ManifestSlice {
        language,
        domain,
        train_ids,
        test_ids,
    };
    Ok((slice, stat, ft, ev))
}

#[cfg(test)]
mod tests {
    /// A killed `prepare` leaves its temporary file under the prefix a study's sweep removes
    /// (`xlt_provider::TEMP_PREFIX`).
    #[test]
    fn temporary_files_carry_the_workspace_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = super::tempfile_with_umask(dir.path()).unwrap();
        let name = tmp
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(name.starts_with(".xlt-tmp-"), "temporary file named {name}");
    }
}
