//! Per-question outcome records.

use std::io::BufRead;

use serde::{Deserialize, Serialize};
use xlt_data::{AnswerLetter, Domain, Language};

use crate::GradeError;

/// How one model did on one question: what it said, what letter was read, by which method,
/// and whether that letter is correct. One line of `outcomes/<model>.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeRecord {
    /// The question instance.
    pub sample_id: String,
    /// Language of the test set.
    pub language: Language,
    /// Domain of the test set.
    pub domain: Domain,
    /// The model that answered (a provider's model id or a run's label for it).
    pub model: String,
    /// The model's raw response.
    pub response: String,
    /// The letter read from it, `null` when unparseable.
    pub letter: Option<AnswerLetter>,
    /// How the letter was read: an extraction rule (`phrase`, `bare`, ...), `llm`, `logprob`,
    /// or the reason for none (`hedge`, `refusal`, ...).
    pub method: String,
    /// The correct letter.
    pub answer: AnswerLetter,
    /// Whether `letter` equals `answer`; an unparseable response is incorrect.
    pub correct: bool,
    /// Why generation stopped, as the provider said (`stop`; `length` when the answer was
    /// cut off by the output-token limit); `null` when it did not say.
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// Writes records as JSON Lines.
pub fn to_jsonl(records: &[OutcomeRecord]) -> String {
    let mut out = String::new();
    for r in records {
        out.push_str(&serde_json::to_string(r).expect("outcome serializes"));
        out.push('\n');
    }
    out
}

/// Reads records from JSON Lines; `source` names the input in errors.
///
/// # Errors
/// [`GradeError::BadLine`] with the 1-based line number of the first line that is not an
/// outcome record.
pub fn read_jsonl(reader: impl BufRead, source: &str) -> Result<Vec<OutcomeRecord>, GradeError> {
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| GradeError::BadLine {
            source_name: source.to_owned(),
            line: i + 1,
            message: e.to_string(),
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let rec = serde_json::from_str(&line).map_err(|e| GradeError::BadLine {
            source_name: source.to_owned(),
            line: i + 1,
            message: e.to_string(),
        })?;
        out.push(rec);
    }
    Ok(out)
}
