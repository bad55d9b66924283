//! Grading multiple-choice answers: read the letter a model chose, deterministically first,
//! with an LLM judge only where needed, and measure how far graders agree.
//!
//! The core items are [`extract`] (the default rules, as [`RuleExtractor`]), the
//! [`Extractor`] trait for custom extractors, [`Grader`] (extraction, an [`LlmJudge`] through
//! any `xlt_provider::ChatModel`, or both, by [`Protocol`]), [`grade_logprobs`],
//! [`OutcomeRecord`] (one graded answer, one JSON line) and [`agreement`] (Cohen's kappa
//! between two graders).
//!
//! ```
//! use xlt_grade::{extract, Rule};
//! use xlt_data::AnswerLetter;
//!
//! // The final stated answer wins, in any language.
//! let e = extract("Antwort: A ... nein, Antwort: C", None);
//! assert_eq!((e.letter, e.rule), (Some(AnswerLetter::C), Rule::Phrase));
//! // Arabic letters map to A-D.
//! assert_eq!(extract("الإجابة الصحيحة هي ج", None).letter, Some(AnswerLetter::C));
//! // A hedge is not an answer.
//! assert_eq!(extract("It is either A or B.", None).rule, Rule::Hedge);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod agreement;
mod extract;
mod judge;
mod outcome;

use serde::{Deserialize, Serialize};

pub use agreement::{AgreementReport, Disagreement, agreement};
pub use extract::{Extraction, Extractor, Rule, RuleExtractor, extract};
pub use judge::{
    Grader, JUDGE_MAX_TOKENS, JUDGE_PROMPT, LlmJudge, Protocol, Verdict, grade_logprobs,
};
pub use outcome::{OutcomeRecord, read_jsonl, to_jsonl};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GradeError {
    /// An input line is not what it should be.
    #[error("{source_name}: line {line}: {message}")]
    BadLine {
        /// The input's name (a file, or `stdin`).
        source_name: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// One line of the `grade` example's input: a response to grade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GradeRequest {
    /// The caller's id for the response.
    pub id: String,
    /// The language of the question (ISO 639-1 code).
    pub language: xlt_data::Language,
    /// The model's response.
    pub response: String,
    /// The option texts A-D, if known.
    #[serde(default)]
    pub options: Option<[String; 4]>,
}

/// One line of the `grade` example's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GradeResult {
    /// The request's id.
    pub id: String,
    /// The letter, `null` when unparseable.
    pub letter: Option<xlt_data::AnswerLetter>,
    /// The rule that fired, or why there is no letter.
    pub method: String,
}

impl GradeRequest {
    /// Parses one JSON line; `line` is its 1-based number, for the error.
    ///
    /// # Errors
    /// [`GradeError::BadLine`] naming `source` and `line`.
    pub fn parse(text: &str, source: &str, line: usize) -> Result<GradeRequest, GradeError> {
        serde_json::from_str(text).map_err(|e| GradeError::BadLine {
            source_name: source.to_owned(),
            line,
            message: e.to_string(),
        })
    }

    /// Grades the request with `extractor`.
    pub fn grade(&self, extractor: &dyn Extractor) -> GradeResult {
        let e = extractor.extract(&self.response, self.options.as_ref());
        GradeResult {
            id: self.id.clone(),
            letter: e.letter,
            method: e.rule.as_str().to_owned(),
        }
    }
}
