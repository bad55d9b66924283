//! Letter scoring: a multiple-choice question answered by the probability of each answer
//! letter at the first position of the reply, not by parsing generated text.
//!
//! The protocol (issue #22; lm-evaluation-harness scores `global_mmlu` the same way, by
//! likelihood): the prompt is the chat request as any other (the model's chat template,
//! generation prompt added); one forward pass; a log-softmax over the full vocabulary at the
//! first reply position; the log-probability of a letter is the log-sum-exp over every token
//! whose text, with surrounding white space removed, is that letter (for SmolLM2's
//! tokenizer: `A` and ` A`).
//!
//! A backend that computes the whole distribution (the local provider) answers a request
//! with [`ChatRequest::letters`] set by filling [`ChatResponse::letter_logprobs`] exactly. An
//! OpenAI-compatible server (vLLM, OpenAI models that return log-probabilities) is asked for
//! one token with its 20 most likely alternatives ([`letter_request`]), and the letters are
//! read from those ([`LetterLogprobs::from_top_logprobs`]): a letter outside the top 20 is
//! `None`, and counted. [`score_letters`] does either, through any [`ChatModel`].

use serde::{Deserialize, Serialize};

use crate::error::ProviderError;
use crate::traits::ChatModel;
use crate::types::{ChatRequest, ChatResponse, TokenLogprob};

/// The answer letters scored, in order.
pub const LETTERS: [char; 4] = ['A', 'B', 'C', 'D'];

/// The most alternatives OpenAI's API returns for a token (`top_logprobs` at most 20).
pub const TOP_LOGPROBS_MAX: u8 = 20;

/// The natural-log probability of each answer letter A-D at the first reply position, over
/// the full vocabulary (not renormalized). `None` for a letter the provider did not report
/// (outside its top alternatives). Serialized as `{"A": .., "B": .., "C": .., "D": ..}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LetterLogprobs {
    /// Letter A, nats.
    #[serde(rename = "A")]
    pub a: Option<f64>,
    /// Letter B, nats.
    #[serde(rename = "B")]
    pub b: Option<f64>,
    /// Letter C, nats.
    #[serde(rename = "C")]
    pub c: Option<f64>,
    /// Letter D, nats.
    #[serde(rename = "D")]
    pub d: Option<f64>,
}

impl LetterLogprobs {
    /// From four values in the order A-D.
    pub fn from_array(v: [Option<f64>; 4]) -> Self {
        let [a, b, c, d] = v;
        LetterLogprobs { a, b, c, d }
    }

    /// The four values in the order A-D.
    pub fn to_array(self) -> [Option<f64>; 4] {
        [self.a, self.b, self.c, self.d]
    }

    /// The letters read from a token's top alternatives: for each letter, the log-sum-exp
    /// of the log-probabilities of every alternative whose text, trimmed of white space,
    /// is that letter (upper case only); `None` where no alternative is.
    pub fn from_top_logprobs(top: &[TokenLogprob]) -> Self {
        let mut v: [Option<f64>; 4] = [None; 4];
        for t in top {
            let text = t.token.trim();
            let Some(k) = LETTERS.iter().position(|l| {
                let mut chars = text.chars();
                chars.next() == Some(*l) && chars.next().is_none()
            }) else {
                continue;
            };
            v[k] = Some(match v[k] {
                None => t.logprob,
                Some(acc) => log_add_exp(acc, t.logprob),
            });
        }
        Self::from_array(v)
    }

    /// How many letters have no value.
    pub fn missing(&self) -> usize {
        self.to_array().iter().filter(|v| v.is_none()).count()
    }

    /// The total probability of the four letters, `Σ exp(logprob)` over those present.
    pub fn mass(&self) -> f64 {
        self.to_array().iter().flatten().map(|l| l.exp()).sum()
    }

    /// The letters' probabilities renormalized over the four (a missing letter counts as
    /// probability 0). All zero when none is present.
    pub fn renormalized(&self) -> [f64; 4] {
        let mass = self.mass();
        self.to_array().map(|l| match l {
            Some(l) if mass > 0.0 => l.exp() / mass,
            _ => 0.0,
        })
    }

    /// The index (0 = A) of the most probable letter present; ties go to the earlier
    /// letter. `None` when no letter is present.
    pub fn argmax(&self) -> Option<usize> {
        let mut best: Option<(usize, f64)> = None;
        for (k, l) in self.to_array().into_iter().enumerate() {
            if let Some(l) = l
                && best.is_none_or(|(_, b)| l > b)
            {
                best = Some((k, l));
            }
        }
        best.map(|(k, _)| k)
    }
}

/// `ln(e^a + e^b)` without overflow.
pub fn log_add_exp(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

/// The request that scores `request`'s letters: [`ChatRequest::letters`] set, one output
/// token, greedy, and the [`TOP_LOGPROBS_MAX`] most likely alternatives (what an
/// OpenAI-compatible server needs to answer it; a backend that computes the letters
/// exactly ignores the rest).
pub fn letter_request(request: &ChatRequest) -> ChatRequest {
    ChatRequest {
        letters: true,
        max_tokens: Some(1),
        temperature: Some(0.0),
        top_logprobs: Some(TOP_LOGPROBS_MAX),
        ..request.clone()
    }
}

/// The letters of a response to a [`letter_request`]: the backend's exact
/// [`ChatResponse::letter_logprobs`], else those among the first token's top alternatives;
/// `None` when it carries neither.
pub fn letters_of(response: &ChatResponse) -> Option<(LetterLogprobs, LetterSource)> {
    match (&response.letter_logprobs, &response.top_logprobs) {
        (Some(l), _) => Some((*l, LetterSource::FullVocabulary)),
        (None, Some(top)) if !top.is_empty() => Some((
            LetterLogprobs::from_top_logprobs(top),
            LetterSource::TopLogprobs,
        )),
        _ => None,
    }
}

/// How the letters of a [`LetterScore`] were obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LetterSource {
    /// Over the full vocabulary, by the backend (exact).
    FullVocabulary,
    /// From the top [`TOP_LOGPROBS_MAX`] alternatives the provider returned; a letter
    /// outside them is `None`.
    TopLogprobs,
}

/// One scored prompt: the letters, how they were read, and the response they came in.
#[derive(Debug, Clone, PartialEq)]
pub struct LetterScore {
    /// The letters' log-probabilities.
    pub logprobs: LetterLogprobs,
    /// How they were obtained.
    pub source: LetterSource,
    /// The provider's response (usage, the one generated token).
    pub response: ChatResponse,
}

/// Scores `request`'s answer letters through `model` ([`letter_request`]): the backend's
/// exact [`ChatResponse::letter_logprobs`] where it gives them, else the letters among the
/// first token's top alternatives.
///
/// # Errors
/// The model's error; [`ProviderError::Unsupported`] when the response carries neither
/// letter log-probabilities nor top alternatives (a provider without log-probabilities
/// cannot score letters).
pub async fn score_letters(
    model: &dyn ChatModel,
    request: &ChatRequest,
) -> Result<LetterScore, ProviderError> {
    let response = model.chat(&letter_request(request)).await?;
    let (logprobs, source) = match letters_of(&response) {
        Some(l) => l,
        None => {
            return Err(ProviderError::Unsupported {
                provider: model.provider().to_owned(),
                what: format!(
                    "letter scoring: model {} was answered without log-probabilities \
                     (use --scoring generate)",
                    request.model
                ),
            });
        }
    };
    Ok(LetterScore {
        logprobs,
        source,
        response,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alt(token: &str, logprob: f64) -> TokenLogprob {
        TokenLogprob {
            token: token.into(),
            logprob,
        }
    }

    #[test]
    fn a_token_with_a_space_counts_for_its_letter_and_the_rest_are_missing() {
        let l = LetterLogprobs::from_top_logprobs(&[
            alt("A", (0.3f64).ln()),
            alt(" A", (0.2f64).ln()),
            alt("B", (0.1f64).ln()),
            alt("a", (0.1f64).ln()),
            alt("AB", (0.05f64).ln()),
            alt("The", (0.1f64).ln()),
        ]);
        let a = l.a.unwrap();
        assert!((a - 0.5f64.ln()).abs() < 1e-12, "A: {a} against ln 0.5");
        assert!((l.b.unwrap() - 0.1f64.ln()).abs() < 1e-12, "B: {:?}", l.b);
        assert_eq!((l.c, l.d, l.missing()), (None, None, 2));
        assert!((l.mass() - 0.6).abs() < 1e-12, "mass {}", l.mass());
        let p = l.renormalized();
        assert!((p[0] - 0.5 / 0.6).abs() < 1e-12, "p(A) {}", p[0]);
        assert_eq!(p[2], 0.0);
        assert_eq!(l.argmax(), Some(0));
    }

    #[test]
    fn letters_serialize_by_name_with_null_for_missing() {
        let l = LetterLogprobs::from_array([Some(-1.0), None, Some(-2.0), Some(-3.0)]);
        let v = serde_json::to_value(l).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"A": -1.0, "B": null, "C": -2.0, "D": -3.0})
        );
        let back: LetterLogprobs = serde_json::from_value(v).unwrap();
        assert_eq!(back, l);
        assert_eq!(LetterLogprobs::default().argmax(), None);
    }

    #[test]
    fn log_add_exp_is_stable() {
        assert!((log_add_exp(-1000.0, -1000.0) - (-1000.0 + 2f64.ln())).abs() < 1e-9);
        assert_eq!(log_add_exp(f64::NEG_INFINITY, -3.0), -3.0);
        assert!((log_add_exp(0.1f64.ln(), 0.2f64.ln()) - 0.3f64.ln()).abs() < 1e-12);
    }
}
