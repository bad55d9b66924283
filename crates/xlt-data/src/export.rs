//! The prompt template, and the fine-tuning and evaluation records written as JSON Lines.

use serde::{Deserialize, Serialize};

use crate::error::DataError;
use crate::language::Language;
use crate::question::{AnswerLetter, Domain, Question};

/// One chat message as the fine-tuning and evaluation files carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl Message {
    fn new(role: &str, content: String) -> Message {
        Message {
            role: role.to_owned(),
            content,
        }
    }
}

/// One line of a fine-tuning file: the chat format OpenAI and Together both accept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinetuneRecord {
    /// System, user (question and options), assistant (the letter).
    pub messages: Vec<Message>,
}

/// One line of an evaluation file: the prompt and what grading needs beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// The question instance.
    pub sample_id: String,
    /// Language of the text.
    pub language: Language,
    /// Domain of the question.
    pub domain: Domain,
    /// MMLU subject.
    pub subject: String,
    /// The correct letter.
    pub answer: AnswerLetter,
    /// The option texts, A to D, so that a grader can match an answer given as text.
    pub options: [String; 4],
    /// The prompt: system (if the template has one) and user messages.
    pub messages: Vec<Message>,
}

const PLACEHOLDERS: [&str; 6] = ["question", "A", "B", "C", "D", "subject"];

/// How a question becomes a prompt. Defined once and used for training and evaluation alike,
/// so that a model is tested on exactly the format it was tuned on.
///
/// The user template may use `{question}`, `{A}`, `{B}`, `{C}`, `{D}` (the option texts)
/// and `{subject}` (with underscores as spaces); `{{` and `}}` are literal braces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTemplate {
    system: Option<String>,
    user: String,
}

impl Default for PromptTemplate {
    /// Asks for the letter only, in English, whatever the language of the question (as the
    /// study did).
    fn default() -> Self {
        PromptTemplate {
            system: Some(
                "You answer multiple-choice questions. Reply with the letter of the correct option (A, B, C or D) and nothing else."
                    .to_owned(),
            ),
            user: "{question}\n\nA. {A}\nB. {B}\nC. {C}\nD. {D}\n\nAnswer with the letter only."
                .to_owned(),
        }
    }
}

impl PromptTemplate {
    /// A template with an optional system message and a user message.
    ///
    /// # Errors
    /// [`DataError::UnknownPlaceholder`] if the user template names a placeholder not listed
    /// above; [`DataError::InvalidConfig`] if it does not use `{question}`, or a brace is
    /// unbalanced.
    pub fn new(system: Option<String>, user: String) -> Result<PromptTemplate, DataError> {
        let mut used = Vec::new();
        scan(&user, |name| {
            used.push(name.to_owned());
            Ok(String::new())
        })?;
        if !used.iter().any(|u| u == "question") {
            return Err(DataError::InvalidConfig(
                "prompt template does not use {question}".to_owned(),
            ));
        }
        Ok(PromptTemplate { system, user })
    }

    /// The system message, if any.
    pub fn system(&self) -> Option<&str> {
        self.system.as_deref()
    }

    /// The user message for `q`.
    pub fn render_user(&self, q: &Question) -> String {
        scan(&self.user, |name| {
            Ok(match name {
                "question" => q.question.clone(),
                "A" => q.options[0].clone(),
                "B" => q.options[1].clone(),
                "C" => q.options[2].clone(),
                "D" => q.options[3].clone(),
                "subject" => q.subject.replace('_', " "),
                other => return Err(DataError::UnknownPlaceholder(other.to_owned())),
            })
        })
        .expect("placeholders validated in PromptTemplate::new")
    }

    /// The prompt messages for `q`: system (if any), then user.
    pub fn prompt(&self, q: &Question) -> Vec<Message> {
        let mut m = Vec::with_capacity(2);
        if let Some(s) = &self.system {
            m.push(Message::new("system", s.clone()));
        }
        m.push(Message::new("user", self.render_user(q)));
        m
    }

    /// The fine-tuning record of `q`: the prompt, and the letter as the assistant's reply.
    pub fn finetune_record(&self, q: &Question) -> FinetuneRecord {
        let mut messages = self.prompt(q);
        messages.push(Message::new("assistant", q.answer.as_str().to_owned()));
        FinetuneRecord { messages }
    }

    /// The evaluation record of `q`.
    pub fn eval_record(&self, q: &Question) -> EvalRecord {
        EvalRecord {
            sample_id: q.sample_id.clone(),
            language: q.language,
            domain: q.domain,
            subject: q.subject.clone(),
            answer: q.answer,
            options: q.options.clone(),
            messages: self.prompt(q),
        }
    }
}

/// Expands `{name}` with `f`, `{{`/`}}` to braces.
fn scan(
    template: &str,
    mut f: impl FnMut(&str) -> Result<String, DataError>,
) -> Result<String, DataError> {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
        } else if tail.starts_with('}') {
            return Err(DataError::InvalidConfig(
                "prompt template has an unmatched `}`".to_owned(),
            ));
        } else {
            let end = tail.find('}').ok_or_else(|| {
                DataError::InvalidConfig("prompt template has an unmatched `{`".to_owned())
            })?;
            let name = &tail[1..end];
            if !PLACEHOLDERS.contains(&name) {
                return Err(DataError::UnknownPlaceholder(name.to_owned()));
            }
            out.push_str(&f(name)?);
            rest = &tail[end + 1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Estimated tokens of a text: UTF-8 bytes / 4, rounded up.
///
/// This is an approximation, not a tokenizer. Byte-pair tokenizers such as OpenAI's
/// `o200k_base` average about four characters a token in English; a character of Cyrillic,
/// Arabic or Hebrew takes two UTF-8 bytes and of Ethiopic, Devanagari or Han three, and these
/// scripts get correspondingly fewer characters a token. Bytes / 4 follows both trends; treat
/// the figure as within a factor of about 1.5 of the true count, fine for a cost plan.
pub fn estimate_tokens(text: &str) -> usize {
    text.len().div_ceil(4)
}

/// Estimated tokens of a chat example: [`estimate_tokens`] of each message plus 4 tokens a
/// message and 3 an example for the chat format's framing (OpenAI's published rule of thumb).
pub fn estimate_chat_tokens(messages: &[Message]) -> usize {
    3 + messages
        .iter()
        .map(|m| 4 + estimate_tokens(&m.content))
        .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::question::CulturalLabel;

    fn question() -> Question {
        Question {
            sample_id: "anatomy/test/3".into(),
            subject: "college_medicine".into(),
            domain: Domain::Medical,
            language: Language::German,
            question: "Was ist {x}?".into(),
            options: ["eins".into(), "zwei".into(), "drei".into(), "vier".into()],
            answer: AnswerLetter::C,
            cultural_label: CulturalLabel::Unannotated,
        }
    }

    #[test]
    fn default_template_renders_letters_and_options() {
        let t = PromptTemplate::default();
        let rec = t.finetune_record(&question());
        assert_eq!(rec.messages.len(), 3);
        assert_eq!(rec.messages[0].role, "system");
        assert_eq!(
            rec.messages[1].content,
            "Was ist {x}?\n\nA. eins\nB. zwei\nC. drei\nD. vier\n\nAnswer with the letter only."
        );
        assert_eq!(rec.messages[2].role, "assistant");
        assert_eq!(rec.messages[2].content, "C");
        let line = serde_json::to_string(&rec).unwrap();
        assert!(line.starts_with(r#"{"messages":[{"role":"system","content":"#));
    }

    #[test]
    fn eval_record_carries_grading_fields() {
        let r = PromptTemplate::default().eval_record(&question());
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["sample_id"], "anatomy/test/3");
        assert_eq!(v["language"], "de");
        assert_eq!(v["domain"], "Medical");
        assert_eq!(v["answer"], "C");
        assert_eq!(v["options"][3], "vier");
        assert_eq!(v["messages"].as_array().unwrap().len(), 2);
        let back: EvalRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn custom_templates_are_validated() {
        let t =
            PromptTemplate::new(None, "[{subject}] {{{question}}} {A}|{B}|{C}|{D}".into()).unwrap();
        assert_eq!(
            t.render_user(&question()),
            "[college medicine] {Was ist {x}?} eins|zwei|drei|vier"
        );
        assert_eq!(t.prompt(&question()).len(), 1);
        assert!(matches!(
            PromptTemplate::new(None, "{question} {E}".into()),
            Err(DataError::UnknownPlaceholder(p)) if p == "E"
        ));
        assert!(PromptTemplate::new(None, "{A}".into()).is_err());
        assert!(PromptTemplate::new(None, "{question".into()).is_err());
        assert!(PromptTemplate::new(None, "{question}}".into()).is_err());
    }

    #[test]
    fn token_estimate_follows_bytes() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("abcd"), 1);
        assert_eq!(estimate_tokens("abcde"), 2);
        // Three Ethiopic characters are nine bytes.
        assert_eq!(estimate_tokens("መልስ"), 3);
        let m = vec![Message::new("user", "abcd".into())];
        assert_eq!(estimate_chat_tokens(&m), 3 + 4 + 1);
    }
}
