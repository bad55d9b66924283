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
