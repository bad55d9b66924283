//! Per-question outcome records.

use std::io::BufRead;

use serde::{Deserialize, Serialize};
use xlt_data::{AnswerLetter, Domain, Language};
use xlt_provider::LetterLogprobs;

use crate::GradeError;

/// How one model did on one question: what it said, what letter was read, by which method,
/// and whether that letter is correct. One line of `outcomes/<model>.jsonl`.
///
/// Scored by letters ([`OutcomeRecord::from_letters`]), `method` is `letters`, `response` is
/// empty, and [`OutcomeRecord::letters`] holds the letters' log-probabilities, their mass
/// and `p_correct` (flattened into the same JSON object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Letter scoring's continuous outcome, for `method: "letters"`; `None` otherwise.
    #[serde(flatten, default)]
    pub letters: Option<LetterOutcome>,
}

/// What letter scoring adds to an outcome (issue #22), as fields of the outcome line.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LetterOutcome {
    /// Each letter's log-probability at the first reply position (nats, over the full
    /// vocabulary; `null` for a letter outside a provider's top alternatives).
    pub letter_logprobs: LetterLogprobs,
    /// The total probability of the four letters.
    pub letter_mass: f64,
    /// The correct letter's probability renormalized over the four (0 when it is missing).
    pub p_correct: f64,
    /// Which cyclic rotation of the options was shown (0: as in the data; `r`: option `i`
    /// shown as letter `(i - r) mod 4`, [`xlt_data::Question::rotated`]). `answer` and
    /// `letter` are in the shown order.
    #[serde(default)]
    pub rotation: u8,
    /// Letters that had no log-probability (outside a provider's top alternatives).
    #[serde(default)]
    pub letters_missing: u8,
}

impl OutcomeRecord {
    /// The outcome of a letter-scored question: the letter is the most probable of the four
    /// (`None`, and incorrect, when none has a log-probability), `method` is `letters`.
    pub fn from_letters(
        sample_id: &str,
        language: Language,
        domain: Domain,
        model: &str,
        answer: AnswerLetter,
        logprobs: LetterLogprobs,
        rotation: u8,
    ) -> OutcomeRecord {
        let letter = logprobs.argmax().map(|k| AnswerLetter::ALL[k]);
        OutcomeRecord {
            sample_id: sample_id.to_owned(),
            language,
            domain,
            model: model.to_owned(),
            response: String::new(),
            letter,
            method: "letters".to_owned(),
            answer,
            correct: letter == Some(answer),
            finish_reason: None,
            letters: Some(LetterOutcome {
                letter_logprobs: logprobs,
                letter_mass: logprobs.mass(),
                p_correct: logprobs.renormalized()[answer.index()],
                rotation,
                letters_missing: logprobs.missing() as u8,
            }),
        }
    }

    /// `p_correct` of a letter-scored outcome.
    pub fn p_correct(&self) -> Option<f64> {
        self.letters.map(|l| l.p_correct)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_letters_outcome_is_one_flat_json_line_and_a_generated_one_has_no_letter_fields() {
        let lp = LetterLogprobs::from_array([Some(-0.5), Some(-1.5), None, Some(-3.0)]);
        let r = OutcomeRecord::from_letters(
            "s/test/1",
            "de".parse().unwrap(),
            Domain::Stem,
            "m",
            AnswerLetter::B,
            lp,
            2,
        );
        assert_eq!((r.letter, r.correct), (Some(AnswerLetter::A), false));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["method"], "letters");
        assert_eq!(v["letter_logprobs"]["C"], serde_json::Value::Null);
        assert_eq!(v["rotation"], 2);
        assert_eq!(v["letters_missing"], 1);
        let mass = (-0.5f64).exp() + (-1.5f64).exp() + (-3.0f64).exp();
        let p = v["p_correct"].as_f64().unwrap();
        assert!((p - (-1.5f64).exp() / mass).abs() < 1e-12, "p_correct {p}");
        let back: OutcomeRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);

        let generated = OutcomeRecord {
            method: "phrase".into(),
            letters: None,
            ..r
        };
        let line = serde_json::to_string(&generated).unwrap();
        assert!(!line.contains("p_correct"), "{line}");
        let back: OutcomeRecord = serde_json::from_str(&line).unwrap();
        assert_eq!(back.letters, None);
        assert_eq!(back.p_correct(), None);
    }
}
