//! Reasoning blocks: the thinking a reasoning model writes before its answer, removed
//! before extraction so that a letter stated while thinking never beats the answer.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What [`strip_reasoning`] did to a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Reasoning {
    /// The response has no reasoning block; it is read as it is.
    Absent,
    /// A closed reasoning block was removed; the letter is read from the text after it.
    Stripped,
    /// The reasoning block never closed: the response was cut off (by `max_tokens`, say)
    /// before its answer. It grades as no answer, [`Rule::TruncatedReasoning`](crate::Rule).
    Truncated,
}

impl Reasoning {
    /// The name as written in outputs: `none`, `reasoning_stripped`, `truncated_reasoning`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reasoning::Absent => "none",
            Reasoning::Stripped => "reasoning_stripped",
            Reasoning::Truncated => "truncated_reasoning",
        }
    }
}

impl fmt::Display for Reasoning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Opening and closing tags of the reasoning blocks models write: Qwen3 and the
/// DeepSeek-R1 distills (`<think>`), other open models (`<thinking>`, `<reasoning>`,
/// `<thought>`), Magistral (`[THINK]`).
const TAGS: &[(&str, &str)] = &[
    ("<think>", "</think>"),
    ("<thinking>", "</thinking>"),
    ("<reasoning>", "</reasoning>"),
    ("<thought>", "</thought>"),
    ("[THINK]", "[/THINK]"),
];

/// gpt-oss (the harmony format): thinking in the `analysis` channel, the answer in `final`.
const HARMONY_FINAL: &str = "<|channel|>final";
const HARMONY_ANALYSIS: &str = "<|channel|>analysis";
const HARMONY_MESSAGE: &str = "<|message|>";
const HARMONY_ENDS: &[&str] = &["<|return|>", "<|end|>", "<|call|>"];

/// Ollama's command-line rendering of thinking.
const PREAMBLE_OPEN: &str = "Thinking...";
const PREAMBLE_CLOSE: &str = "...done thinking.";

/// Splits the reasoning off a response: returns what was done and the text to read the
/// answer from (all of `response` when there is no block; what follows the last closed
/// block when there is one; empty when the block never closed).
///
/// Recognised: `<think>...</think>` (also a response that starts inside the block, whose
/// opening tag was part of the prompt), `<thinking>`, `<reasoning>`, `<thought>`,
/// `[THINK]...[/THINK]`, gpt-oss's `<|channel|>analysis ... <|channel|>final<|message|>`,
/// and a `Thinking... ...done thinking.` preamble. A block is unfinished when an opening
/// tag comes after the last closing tag, or when an analysis channel or a `Thinking...`
/// preamble has no final part.
///
/// ```
/// use xlt_grade::{Reasoning, strip_reasoning};
///
/// let (r, answer) = strip_reasoning("<think>Maybe A.</think>\n\nFinal: **C**");
/// assert_eq!((r, answer), (Reasoning::Stripped, "\n\nFinal: **C**"));
/// assert_eq!(strip_reasoning("<think>Maybe A, or").0, Reasoning::Truncated);
/// assert_eq!(strip_reasoning("Answer: B"), (Reasoning::Absent, "Answer: B"));
/// ```
pub fn strip_reasoning(response: &str) -> (Reasoning, &str) {
    let bytes = response.as_bytes();
    let has_tag = bytes.iter().any(|&b| b == b'<' || b == b'[');
    let preamble = response.trim_start().starts_with(PREAMBLE_OPEN);
    if !has_tag && !preamble {
        return (Reasoning::Absent, response);
    }
    if has_tag {
        if let Some(i) = response.rfind(HARMONY_FINAL) {
            let rest = &response[i + HARMONY_FINAL.len()..];
            let rest = match rest.find(HARMONY_MESSAGE) {
                Some(j) => &rest[j + HARMONY_MESSAGE.len()..],
                None => rest,
            };
            let end = HARMONY_ENDS
                .iter()
                .filter_map(|e| rest.find(e))
                .min()
                .unwrap_or(rest.len());
            return (Reasoning::Stripped, &rest[..end]);
        }
        if response.contains(HARMONY_ANALYSIS) {
            return (Reasoning::Truncated, "");
        }
        let last_close = TAGS
            .iter()
            .filter_map(|(_, close)| response.rfind(close).map(|i| i + close.len()))
            .max();
        let last_open = TAGS
            .iter()
            .filter_map(|(open, _)| response.rfind(open))
            .max();
        match (last_open, last_close) {
            (Some(_), None) => return (Reasoning::Truncated, ""),
            (Some(open), Some(close)) if open >= close => return (Reasoning::Truncated, ""),
            (_, Some(close)) => return (Reasoning::Stripped, &response[close..]),
            (None, None) => {}
        }
    }
    if preamble {
        return match response.find(PREAMBLE_CLOSE) {
            Some(i) => (Reasoning::Stripped, &response[i + PREAMBLE_CLOSE.len()..]),
            None => (Reasoning::Truncated, ""),
        };
    }
    (Reasoning::Absent, response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_block_format_is_split() {
        let cases: &[(&str, Reasoning, &str)] = &[
            ("B", Reasoning::Absent, "B"),
            ("<think>A?</think>C", Reasoning::Stripped, "C"),
            ("A? maybe</think>\nC", Reasoning::Stripped, "\nC"),
            ("<thinking>A</thinking> D", Reasoning::Stripped, " D"),
            ("<reasoning>A</reasoning>B", Reasoning::Stripped, "B"),
            ("[THINK]A[/THINK]B", Reasoning::Stripped, "B"),
            (
                "<|channel|>analysis<|message|>A?<|end|><|start|>assistant<|channel|>final<|message|>B<|return|>",
                Reasoning::Stripped,
                "B",
            ),
            (
                "<|channel|>analysis<|message|>A, so",
                Reasoning::Truncated,
                "",
            ),
            (
                "Thinking...\nA?\n...done thinking.\n\nC",
                Reasoning::Stripped,
                "\n\nC",
            ),
            ("Thinking...\nA? or B", Reasoning::Truncated, ""),
            ("<think>A</think>B<think>maybe C", Reasoning::Truncated, ""),
            ("<think>A? B?", Reasoning::Truncated, ""),
            ("[C]", Reasoning::Absent, "[C]"),
        ];
        for (input, reasoning, rest) in cases {
            assert_eq!(strip_reasoning(input), (*reasoning, *rest), "{input:?}");
        }
    }
}
