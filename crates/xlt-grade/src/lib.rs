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
//!
//! Reasoning models' thinking (`<think>...</think>` and the like) is removed before the
//! rules run ([`strip_reasoning`]); a block that never closed grades as no answer
//! ([`Rule::TruncatedReasoning`]). [`extract_with_reasoning`] says which ([`Reasoning`]).
//!
//! # Answer words
//!
//! The answer phrases [`extract`] looks for, by language, and where each was checked.
//! **S**: OpenAI simple-evals, `common.py`, `MULTILINGUAL_ANSWER_REGEXES` (the answer words
//! of its multilingual MMLU). **N**: NVIDIA's simple-evals (PyPI `nvidia-simple-evals`
//! 25.11, `simple_evals/common.py`), which extends that list to every language of its
//! `mmlu_<lang>` tasks, the 42 of Global-MMLU (am, he, ig, ky and tr among them). Words
//! marked *(u)* are unconfirmed: inflections, spelling variants and synonyms that models
//! write, not found in a written source. Matching is case-insensitive for ASCII, in NFC.
//!
//! | language | confirmed | unconfirmed *(u)* |
//! |---|---|---|
//! | am | መልስ (N) | መልሱ, ምላሽ |
//! | ar | الإجابة, الجواب, إجابة (S) | الاجابة, اجابة, جواب |
//! | bn | উত্তর, উত্তরঃ (S) | |
//! | cs | odpověď (N) | odpoved |
//! | de | antwort (S) | lösung, auswahl |
//! | el | απάντηση (N) | |
//! | en | answer (S) | option, choice, i choose, i pick, i'd go with, ... |
//! | es | respuesta (S) | opción, opcion, alternativa |
//! | fa | پاسخ, جواب (N) | |
//! | fil | sagot (N) | ang sagot |
//! | fr | réponse (S) | reponse |
//! | ha | amsa (N) | amsar |
//! | he | תשובה (N) | התשובה, תשובתי |
//! | hi | उत्तर (S) | जवाब |
//! | id | jawaban (S) | jawabannya, pilihan |
//! | ig | azịza (N) | aziza, azịzị |
//! | it | risposta (S) | opzione |
//! | ja | 答え, 回答, 解答 (S) | 正解 |
//! | ko | 정답, 답, 답변 (S) | |
//! | ky | жооп (N) | жообу |
//! | lt | atsakymas (N) | |
//! | mg | valiny (N) | |
//! | ms | jawapan (N) | jawapannya |
//! | ne | | उत्तर (hi's word, S), जवाफ |
//! | nl | antwoord (N) | |
//! | ny | yankho (N) | |
//! | pl | odpowiedź (N) | odpowiedz |
//! | pt | resposta (S) | opção, alternativa correta |
//! | ro | răspuns (N) | raspuns, răspunsul |
//! | ru | ответ (N) | |
//! | si | පිළිතුර (N) | |
//! | sn | mhinduro (N) | |
//! | so | jawaab (N) | jawaabta |
//! | sr | odgovor (N) | одговор |
//! | sv | svar (N) | svaret |
//! | sw | jibu (S) | chaguo |
//! | te | సమాధానం (N) | జవాబు |
//! | tr | cevap (N) | cevabı, cevabım, yanıt, yanit, seçenek, şık |
//! | uk | відповідь (N) | |
//! | vi | câu trả lời (N) | đáp án |
//! | yo | ìdáhùn, idahun, àṣàyàn (S) | idáhùn, ìdáhun |
//! | zh | 答案, 答 (S) | 选项, 正确选项, 答案是 |
//!
//! For the study's languages this means: he `תשובה`, tr `Cevap`, ig `Azịza`, am `መልስ` and ky
//! `Жооп` are each confirmed by source N; their inflected forms are not.
#![deny(missing_docs)]

mod agreement;
mod extract;
mod judge;
mod outcome;
mod reasoning;

use serde::{Deserialize, Serialize};

pub use agreement::{AgreementReport, Disagreement, agreement};
pub use extract::{Extraction, Extractor, Rule, RuleExtractor, extract, extract_with_reasoning};
pub use judge::{
    Grader, JUDGE_MAX_TOKENS, JUDGE_PROMPT, LlmJudge, Protocol, Verdict, grade_logprobs,
};
pub use outcome::{LetterOutcome, OutcomeRecord, read_jsonl, to_jsonl};
pub use reasoning::{Reasoning, strip_reasoning};

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
