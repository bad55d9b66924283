//! Grading with a language model as judge, and from first-token log-probabilities.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use xlt_data::AnswerLetter;
use xlt_provider::{ChatMessage, ChatModel, ChatRequest, ProviderError, Role, TokenLogprob};

use crate::extract::{Extractor, RuleExtractor};

/// Which graders read a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Protocol {
    /// Deterministic extraction only.
    #[serde(rename = "regex")]
    Regex,
    /// The LLM judge for every response: the study's protocol.
    #[serde(rename = "llm")]
    Llm,
    /// Deterministic extraction, and the judge only for what it cannot parse. The default:
    /// most responses cost no call.
    #[default]
    #[serde(rename = "regex+llm")]
    RegexThenLlm,
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "regex" => Ok(Protocol::Regex),
            "llm" => Ok(Protocol::Llm),
            "regex+llm" => Ok(Protocol::RegexThenLlm),
            other => Err(format!(
                "unknown grader `{other}` (expected regex, llm or regex+llm)"
            )),
        }
    }
}

/// A grader's verdict on one response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The letter, or none.
    pub letter: Option<AnswerLetter>,
    /// `llm`, `logprob`, or the extraction rule's name.
    pub method: String,
}

/// The judge prompt. `{options}` and `{response}` are filled in.
pub const JUDGE_PROMPT: &str = "A model answered a multiple-choice question whose options are labelled A, B, C and D.\n\
Options:\n{options}\n\
Model's answer:\n\"\"\"\n{response}\n\"\"\"\n\
Which option did the model choose as its final answer? Reply with exactly one letter: A, B, C or D, \
or N if it chose none, several, or refused.";

/// An LLM asked to read the letter from a response, as the study did with its base model.
pub struct LlmJudge {
    model: Arc<dyn ChatModel>,
    model_id: String,
    max_tokens: u32,
}

/// The judge's default output-token limit: room for `Answer: C` or a short sentence from a
/// chatty model. A reasoning model needs hundreds more; set it with
/// [`LlmJudge::with_max_tokens`].
pub const JUDGE_MAX_TOKENS: u32 = 64;

impl LlmJudge {
    /// A judge that asks `model_id` through `model`, at temperature 0.
    pub fn new(model: Arc<dyn ChatModel>, model_id: impl Into<String>) -> LlmJudge {
        LlmJudge {
            model,
            model_id: model_id.into(),
            max_tokens: JUDGE_MAX_TOKENS,
        }
    }

    /// The same judge with an output-token limit of `max_tokens` (at least 1).
    #[must_use]
    pub fn with_max_tokens(mut self, max_tokens: u32) -> LlmJudge {
        self.max_tokens = max_tokens.max(1);
        self
    }

    /// The request sent for `response`.
    pub fn request(&self, response: &str, options: Option<&[String; 4]>) -> ChatRequest {
        let options = match options {
            Some(o) => AnswerLetter::ALL
                .iter()
                .map(|l| format!("{l}. {}", o[l.index()]))
                .collect::<Vec<_>>()
                .join("\n"),
            None => "(not given)".to_owned(),
        };
        let prompt = JUDGE_PROMPT
            .replace("{options}", &options)
            .replace("{response}", response);
        let mut req = ChatRequest::new(
            self.model_id.clone(),
            vec![ChatMessage::new(Role::User, prompt)],
        );
        req.temperature = Some(0.0);
        req.max_tokens = Some(self.max_tokens);
        req
    }

    /// Asks the judge. Its reply is read with the full extractor (a bare letter, `Answer: C`,
    /// a reasoning block before the answer); `N`, or a reply with no letter, is no letter.
    ///
    /// # Errors
    /// The provider's error.
    pub async fn judge(
        &self,
        response: &str,
        options: Option<&[String; 4]>,
    ) -> Result<Verdict, ProviderError> {
        let reply = self.model.chat(&self.request(response, options)).await?;
        let letter = RuleExtractor.extract(&reply.text, None).letter;
        Ok(Verdict {
            letter,
            method: "llm".to_owned(),
        })
    }
}

/// Reads the letter from first-token log-probabilities: the most probable alternative that is
/// a letter A-D (after trimming spaces), with its probability. `None` if no alternative is.
pub fn grade_logprobs(top: &[TokenLogprob]) -> Option<(AnswerLetter, f64)> {
    top.iter()
        .filter_map(|t| {
            let tok = t.token.trim();
            let mut chars = tok.chars();
            let c = chars.next()?;
            if chars.next().is_some() {
                return None;
            }
            let l = AnswerLetter::from_char(c).filter(|_| c.is_ascii_uppercase())?;
            Some((l, t.logprob))
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(l, lp)| (l, lp.exp()))
}

/// Grades responses by a [`Protocol`]: deterministic extraction, an LLM judge, or both.
pub struct Grader {
    protocol: Protocol,
    extractor: Arc<dyn Extractor>,
    judge: Option<LlmJudge>,
}

impl Grader {
    /// Deterministic extraction only, with the default rules.
    pub fn regex() -> Grader {
        Grader {
            protocol: Protocol::Regex,
            extractor: Arc::new(RuleExtractor),
            judge: None,
        }
    }

    /// A grader by `protocol`; `judge` is needed unless the protocol is [`Protocol::Regex`].
    ///
    /// # Errors
    /// [`ProviderError::InvalidRequest`] if the protocol needs a judge and none is given.
    pub fn new(
        protocol: Protocol,
        extractor: Arc<dyn Extractor>,
        judge: Option<LlmJudge>,
    ) -> Result<Grader, ProviderError> {
        if protocol != Protocol::Regex && judge.is_none() {
            return Err(ProviderError::InvalidRequest(
                "the llm and regex+llm graders need a judge model".to_owned(),
            ));
        }
        Ok(Grader {
            protocol,
            extractor,
            judge,
        })
    }

    /// The protocol.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Grades one response.
    ///
    /// # Errors
    /// The judge's provider error, when the judge is asked.
    pub async fn grade(
        &self,
        response: &str,
        options: Option<&[String; 4]>,
    ) -> Result<Verdict, ProviderError> {
        if self.protocol != Protocol::Llm {
            let e = self.extractor.extract(response, options);
            if e.letter.is_some() || self.protocol == Protocol::Regex {
                return Ok(Verdict {
                    letter: e.letter,
                    method: e.rule.as_str().to_owned(),
                });
            }
        }
        let judge = self.judge.as_ref().expect("checked in Grader::new");
        judge.judge(response, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use std::sync::Mutex;
    use xlt_provider::{Capabilities, ChatResponse, Usage};

    /// Replies with a fixed text and records prompts.
    struct Scripted {
        reply: &'static str,
        seen: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl ChatModel for Scripted {
        fn provider(&self) -> &str {
            "scripted"
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities {
                chat: true,
                ..Capabilities::default()
            }
        }
        async fn chat(&self, r: &ChatRequest) -> Result<ChatResponse, ProviderError> {
            self.seen
                .lock()
                .unwrap()
                .push(r.messages[0].content.clone());
            Ok(ChatResponse {
                model: r.model.clone(),
                text: self.reply.to_owned(),
                finish_reason: Some("stop".into()),
                usage: Usage::default(),
                top_logprobs: None,
                letter_logprobs: None,
                rate_limit: None,
            })
        }
    }

    fn judge(reply: &'static str) -> (Arc<Scripted>, LlmJudge) {
        let m = Arc::new(Scripted {
            reply,
            seen: Mutex::new(Vec::new()),
        });
        (m.clone(), LlmJudge::new(m, "judge-model"))
    }

    #[tokio::test]
    async fn regex_then_llm_asks_only_for_unparseable() {
        let (m, j) = judge("B");
        let g = Grader::new(Protocol::RegexThenLlm, Arc::new(RuleExtractor), Some(j)).unwrap();
        let v = g.grade("Answer: C", None).await.unwrap();
        assert_eq!(
            (v.letter, v.method.as_str()),
            (Some(AnswerLetter::C), "phrase")
        );
        assert!(m.seen.lock().unwrap().is_empty());
        let v = g
            .grade("A is wrong, B is wrong, C is right", None)
            .await
            .unwrap();
        assert_eq!(
            (v.letter, v.method.as_str()),
            (Some(AnswerLetter::B), "llm")
        );
        let prompts = m.seen.lock().unwrap();
        assert_eq!(prompts.len(), 1);
        assert!(prompts[0].contains("C is right"));
    }

    #[tokio::test]
    async fn llm_protocol_asks_every_time_and_n_is_none() {
        let (m, j) = judge("N");
        let opts = ["w".to_string(), "x".into(), "y".into(), "z".into()];
        let g = Grader::new(Protocol::Llm, Arc::new(RuleExtractor), Some(j)).unwrap();
        let v = g.grade("Answer: C", Some(&opts)).await.unwrap();
        assert_eq!((v.letter, v.method.as_str()), (None, "llm"));
        assert!(m.seen.lock().unwrap()[0].contains("D. z"));
        assert!(Grader::new(Protocol::Llm, Arc::new(RuleExtractor), None).is_err());
        assert_eq!(
            "regex+llm".parse::<Protocol>().unwrap(),
            Protocol::RegexThenLlm
        );
        assert!("judge".parse::<Protocol>().is_err());
    }

    #[tokio::test]
    async fn judge_replies_are_read_with_the_full_extractor() {
        for (reply, want) in [
            ("B", Some(AnswerLetter::B)),
            ("Answer: C", Some(AnswerLetter::C)),
            ("The model chose D.", Some(AnswerLetter::D)),
            ("N", None),
        ] {
            let (_, j) = judge(reply);
            let v = j.judge("whatever", None).await.unwrap();
            assert_eq!(v.letter, want, "{reply}");
        }
        let (_, j) = judge("B");
        assert_eq!(j.request("r", None).max_tokens, Some(JUDGE_MAX_TOKENS));
        let j = j.with_max_tokens(512);
        assert_eq!(j.request("r", None).max_tokens, Some(512));
    }

    #[test]
    fn logprobs_pick_the_likeliest_letter() {
        let lp = |t: &str, l: f64| TokenLogprob {
            token: t.into(),
            logprob: l,
        };
        let top = [
            lp("The", -0.1),
            lp(" C", -0.5),
            lp("B", -1.2),
            lp("E", -0.01),
        ];
        let (l, p) = grade_logprobs(&top).unwrap();
        assert_eq!(l, AnswerLetter::C);
        assert!((p - (-0.5f64).exp()).abs() < 1e-12);
        assert_eq!(grade_logprobs(&[lp("x", -0.1)]), None);
    }
}
