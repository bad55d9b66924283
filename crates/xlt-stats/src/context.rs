//! What produced the outcomes a report analyses, as the caller knows it: statistics reads no
//! file, so the study passes this in.

use serde::{Deserialize, Serialize};
use xlt_data::{Domain, Language};

/// The settings behind a report, printed at its head and kept in `summary.json` under
/// `context`. Every field is the caller's word; nothing here is checked against the outcomes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportContext {
    /// The provider that answered and fine-tuned (`openai`, `together`, `local`,
    /// `embedded`).
    pub provider: String,
    /// The base model as the provider names it (a model id, a Hub id, a GGUF path).
    pub base_model: String,
    /// What pins the base model: a Hub revision or commit, or a file's SHA-256 digest
    /// (`sha256:...`); `None` when the provider gives none (a hosted model id).
    pub base_model_version: Option<String>,
    /// The benchmark and its source (`Global-MMLU, hf:CohereLabs/Global-MMLU@<commit>`).
    pub benchmark: String,
    /// The languages of the study.
    pub languages: Vec<Language>,
    /// The domains of the study.
    pub domains: Vec<Domain>,
    /// How an answer was obtained (`generation, max 16 tokens, temperature 0`, or
    /// `first-token log-probabilities`).
    pub scoring: String,
    /// How a letter was read from an answer (`rules`, `rules then LLM judge`).
    pub grader: String,
    /// The judge model, when an LLM judge graded answers the rules could not read.
    pub judge_model: Option<String>,
    /// When the study ran, as the caller formats it (RFC 3339 is a good choice).
    pub date: String,
    /// Anything else a reader must know before trusting a number, one sentence each (for
    /// the embedded provider: that it is a linear scorer, not a language model).
    pub notes: Vec<String>,
    /// Where the questions came from, the domain scheme and what the data audits
    /// excluded (see [`DataContext::from_manifest`]); shown in the report's Input section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataContext>,
}

/// The data behind a report, as the experiment's manifest records it: each source with its
/// benchmark, the domain scheme, and the rows each audit excluded. Plain text, so that
/// statistics need not know the audits' types.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataContext {
    /// One per recorded source: `AfriMMLU: afrimmlu:fixtures/afrimmlu (12 files)`. Empty:
    /// the files were given by a plain path and read as Global-MMLU (not recorded).
    pub sources: Vec<String>,
    /// The domain scheme the domains belong to: `study` or `mmlu`.
    pub domain_scheme: String,
    /// What the audits excluded, one sentence each, in the order they run (whole
    /// languages, blocks of a file, answer keys, duplicates, alignment, consistency);
    /// empty when they excluded nothing.
    pub excluded: Vec<String>,
}

impl DataContext {
    /// The data context of an experiment prepared as `manifest`. Rows are counted as the
    /// manifest counts them: a misaligned language or block by its rows; an id dropped by
    /// the id-by-id audits in every one of the experiment's languages, so as ids times
    /// languages.
    pub fn from_manifest(manifest: &xlt_data::Manifest) -> DataContext {
        let sources = manifest
            .sources
            .iter()
            .map(|s| {
                let pinned = if s.commit.is_empty() {
                    String::new()
                } else {
                    format!("@{}", &s.commit[..s.commit.len().min(12)])
                };
                let source = s.source.split('@').next().unwrap_or(&s.source);
                format!(
                    "{}: {source}{pinned} ({} files)",
                    s.benchmark().title(),
                    s.files.len()
                )
            })
            .collect();
        let mut languages: Vec<Language> = manifest.slices.iter().map(|s| s.language).collect();
        languages.sort();
        languages.dedup();
        let n_languages = languages.len();
        let ids = |n: usize, what: &str, audit: &str| {
            format!(
                "{what} ({audit}): {n} question{} x {n_languages} language{} = {} rows",
                if n == 1 { "" } else { "s" },
                if n_languages == 1 { "" } else { "s" },
                n * n_languages
            )
        };
        let mut excluded = Vec::new();
        for w in &manifest.misaligned_languages {
            excluded.push(format!(
                "language {} ({}) misaligned as a whole (whole-language audit): {} rows; its answer keys agree with the other languages' at chance (at best {:.1}% with {}, chance {:.1}%)",
                w.language,
                w.language.name(),
                w.dropped_rows,
                100.0 * w.agreement,
                w.closest,
                100.0 * w.chance
            ));
        }
        for b in &manifest.misaligned_files {
            excluded.push(format!(
                "{} {} in {} misaligned (block audit): {} rows; agreement {:.1}%, chance {:.1}%",
                b.language,
                b.subject,
                b.file.display(),
                b.dropped_rows,
                100.0 * b.agreement,
                100.0 * b.chance
            ));
        }
        for l in manifest.excluded_languages.iter().filter(|l| {
            !manifest
                .misaligned_languages
                .iter()
                .any(|w| w.language == **l)
        }) {
            excluded.push(format!(
                "language {l} ({}) left out: every row of it is in a misaligned block",
                l.name()
            ));
        }
        let counts = [
            (
                manifest.dropped_ambiguous_key.len(),
                "ambiguous answer keys, in any domain",
                "answer-key audit",
            ),
            (
                manifest.dropped_duplicates,
                "duplicate questions",
                "de-duplication",
            ),
        ];
        for (n, what, audit) in counts {
            if n > 0 {
                excluded.push(ids(n, what, audit));
            }
        }
        // An unaligned id is missing from at least one language (those of a misaligned
        // block, counted above, among them), so its rows are fewer than ids x languages.
        let n = manifest.dropped_unaligned;
        if n > 0 {
            excluded.push(format!(
                "questions missing from some language (alignment): {n} question{}, dropped in each language that holds {}: fewer than {} rows",
                if n == 1 { "" } else { "s" },
                if n == 1 { "it" } else { "them" },
                n * n_languages
            ));
        }
        let n = manifest.dropped_inconsistent.len();
        if n > 0 {
            excluded.push(ids(
                n,
                "questions whose answer or numbers differ between languages",
                "consistency audit",
            ));
        }
        DataContext {
            sources,
            domain_scheme: manifest.domain_scheme.to_string(),
            excluded,
        }
    }
}

impl ReportContext {
    /// Whether the judge is the model under test: the base model itself, or a model whose id
    /// begins with the base model's (a fine-tune of it named `<base>+<adapter>`, or
    /// `<base>:ft-...`).
    pub fn judge_is_model_under_test(&self) -> bool {
        let base = self.base_model.trim();
        self.judge_model
            .as_deref()
            .map(str::trim)
            .is_some_and(|j| !base.is_empty() && j.starts_with(base))
    }
}
