//! Provider-neutral request and response types.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Who speaks a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions.
    System,
    /// The user.
    User,
    /// The model.
    Assistant,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who speaks.
    pub role: Role,
    /// What is said.
    pub content: String,
}

impl ChatMessage {
    /// A message from `role`.
    pub fn new(role: Role, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role,
            content: content.into(),
        }
    }
}

/// One chat completion request. Serializes canonically (fields in declaration order), which
/// the response cache hashes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The model id.
    pub model: String,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Sampling temperature; `None` leaves the provider's default.
    pub temperature: Option<f32>,
    /// Maximum output tokens.
    pub max_tokens: Option<u32>,
    /// Seed, for providers that honour one.
    pub seed: Option<u64>,
    /// Ask for this many alternatives with log-probabilities for the first output token.
    pub top_logprobs: Option<u8>,
    /// Score the answer letters A-D at the first reply position instead of generating
    /// ([`crate::score_letters`]): a backend that computes them over the full vocabulary
    /// answers with [`ChatResponse::letter_logprobs`]; others answer as to any request
    /// (one token, its top alternatives). Left out of the serialized request when false,
    /// so the response cache's keys of generated answers are unchanged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub letters: bool,
}

impl ChatRequest {
    /// A request with the provider's defaults for everything but model and messages.
    pub fn new(model: impl Into<String>, messages: Vec<ChatMessage>) -> ChatRequest {
        ChatRequest {
            model: model.into(),
            messages,
            temperature: None,
            max_tokens: None,
            seed: None,
            top_logprobs: None,
            letters: false,
        }
    }

    /// A rough token count of the prompt, for rate limiting before the provider counts:
    /// UTF-8 bytes / 4 plus 4 a message, plus `max_tokens`.
    pub fn estimated_tokens(&self) -> u32 {
        let prompt: usize = self
            .messages
            .iter()
            .map(|m| 4 + m.content.len().div_ceil(4))
            .sum();
        (prompt as u32).saturating_add(self.max_tokens.unwrap_or(16))
    }

    /// Refuses, before anything is sent (or paid for), what OpenAI's chat API refuses: no
    /// messages, `max_tokens` 0, `temperature` outside [0, 2], `top_logprobs` above
    /// [`TOP_LOGPROBS_MAX`](crate::TOP_LOGPROBS_MAX) (OpenAPI spec, `CreateChatCompletionRequest`).
    ///
    /// # Errors
    /// [`ProviderError::InvalidRequest`](crate::ProviderError::InvalidRequest) naming the
    /// field and its value.
    pub fn check(&self) -> Result<(), crate::ProviderError> {
        let refuse = |m: String| Err(crate::ProviderError::InvalidRequest(m));
        let max = crate::TOP_LOGPROBS_MAX;
        match (self.max_tokens, self.temperature, self.top_logprobs) {
            _ if self.messages.is_empty() => refuse("no messages".to_owned()),
            (Some(0), _, _) => refuse("max_tokens must be at least 1".to_owned()),
            (_, Some(t), _) if !(0.0..=2.0).contains(&t) => {
                refuse(format!("temperature {t} is outside [0, 2]"))
            }
            (_, _, Some(n)) if n > max => refuse(format!("top_logprobs {n} is above {max}")),
            _ => Ok(()),
        }
    }
}

/// Tokens a request used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Completion tokens.
    pub completion_tokens: u32,
}

/// One alternative for the first output token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    /// The token's text.
    pub token: String,
    /// Its natural-log probability.
    pub logprob: f64,
}

/// What a provider says of its rate limits in a response (OpenAI's `x-ratelimit-*` headers
/// and their equivalents).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RateLimitInfo {
    /// Requests left in the current window.
    pub remaining_requests: Option<u64>,
    /// Tokens left in the current window.
    pub remaining_tokens: Option<u64>,
    /// Until the request window resets.
    pub reset_requests: Option<Duration>,
    /// Until the token window resets.
    pub reset_tokens: Option<Duration>,
}

/// One chat completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The model that answered, as the provider names it.
    pub model: String,
    /// The text of the first choice.
    pub text: String,
    /// Why generation stopped (`stop`, `length`, ...), if said.
    pub finish_reason: Option<String>,
    /// Tokens used.
    pub usage: Usage,
    /// The first token's alternatives, most likely first, when asked for and offered.
    pub top_logprobs: Option<Vec<TokenLogprob>>,
    /// The answer letters' log-probabilities over the full vocabulary, from a backend that
    /// computes them, for a request with [`ChatRequest::letters`] set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub letter_logprobs: Option<crate::LetterLogprobs>,
    /// Rate-limit state after this request, when the provider reports it. Not cached.
    #[serde(skip)]
    pub rate_limit: Option<RateLimitInfo>,
}

/// A hyperparameter that is either chosen by the provider or set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Param<T> {
    /// The provider chooses (`"auto"`).
    #[default]
    #[serde(with = "auto")]
    Auto,
    /// A set value.
    Value(T),
}

mod auto {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("auto")
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<(), D::Error> {
        let s = String::deserialize(d)?;
        if s == "auto" {
            Ok(())
        } else {
            Err(serde::de::Error::custom(format!(
                "expected \"auto\", got {s:?}"
            )))
        }
    }
}

impl<T: fmt::Display> fmt::Display for Param<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Param::Auto => f.write_str("auto"),
            Param::Value(v) => v.fmt(f),
        }
    }
}

/// The learning rate, in the two incompatible forms providers take. OpenAI takes a
/// *multiplier* of a base rate it does not publish; Together and most open-weight trainers
/// take an *absolute* rate. The two are not convertible, and a backend given the form it
/// does not take refuses it rather than guessing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LearningRate {
    /// The provider chooses.
    #[default]
    Auto,
    /// A multiplier of the provider's base rate (OpenAI's `learning_rate_multiplier`).
    Multiplier(f64),
    /// An absolute learning rate.
    Absolute(f64),
}

/// Training hyperparameters.
///
/// `warmup_ratio` and `gradient_accumulation_steps` are left out of the serialized form
/// when unset, so that specs written before they existed hash as they did (the job ledger
/// and the fingerprint hash specs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Hyperparameters {
    /// Passes over the training data.
    pub epochs: Param<u32>,
    /// Examples per batch.
    pub batch_size: Param<u32>,
    /// Learning rate.
    pub learning_rate: LearningRate,
    /// The fraction of the optimizer steps over which the learning rate rises linearly from
    /// zero before it decays linearly to zero (Together's and `transformers`' `warmup_ratio`);
    /// `None` leaves the provider's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_ratio: Option<f64>,
    /// Batches whose gradients are summed before each optimizer step, so that an optimizer
    /// step sees `batch_size * gradient_accumulation_steps` examples; `None` means 1. Only
    /// trainers on the user's machine take it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradient_accumulation_steps: Option<u32>,
}

impl Hyperparameters {
    /// The study's settings: one epoch, batch size 8, learning-rate multiplier 0.4.
    pub fn study() -> Hyperparameters {
        Hyperparameters {
            epochs: Param::Value(1),
            batch_size: Param::Value(8),
            learning_rate: LearningRate::Multiplier(0.4),
            warmup_ratio: None,
            gradient_accumulation_steps: None,
        }
    }
}

/// The modules LoRA can adapt in a Llama-family decoder, by PEFT's names: the attention's
/// four projections and the MLP's three. [`LoraSpec::default`] adapts all seven.
pub const LORA_TARGET_MODULES: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// Low-rank adaptation (LoRA, Hu et al. 2021, <https://arxiv.org/abs/2106.09685>) settings,
/// in PEFT's meaning: the update `B A` of rank `rank`, scaled by `alpha / rank`, with dropout
/// on the adapter's input while training, on the `target_modules`. One thing for every
/// backend that trains adapters (Together's `lora_r`, `lora_alpha`, `lora_dropout`,
/// `lora_trainable_modules`; PEFT's `r`, `lora_alpha`, `lora_dropout`, `target_modules`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraSpec {
    /// The rank `r` of the update.
    pub rank: u32,
    /// `lora_alpha`: the update is scaled by `alpha / rank`.
    pub alpha: f64,
    /// Dropout probability on the adapter's input, while training, in `[0, 1)`.
    pub dropout: f64,
    /// The modules adapted, by PEFT's names (a subset of [`LORA_TARGET_MODULES`]).
    pub target_modules: Vec<String>,
}

impl Default for LoraSpec {
    /// What LoRA recipes use: r = 16, alpha = 32, dropout 0.05, all seven projections.
    fn default() -> Self {
        LoraSpec {
            rank: 16,
            alpha: 32.0,
            dropout: 0.05,
            target_modules: LORA_TARGET_MODULES.map(String::from).to_vec(),
        }
    }
}

impl LoraSpec {
    /// Checks the values: a positive rank, a positive finite alpha, a dropout in `[0, 1)`,
    /// and target modules that are known projection names, each once, at least one.
    ///
    /// # Errors
    /// [`crate::ProviderError::InvalidRequest`] naming the field and the value.
    pub fn validate(&self) -> Result<(), crate::ProviderError> {
        let bad = |m: String| Err(crate::ProviderError::InvalidRequest(m));
        if self.rank == 0 {
            return bad("LoRA rank must be at least 1".into());
        }
        if !self.alpha.is_finite() || self.alpha <= 0.0 {
            return bad(format!(
                "LoRA alpha must be a positive number, not {}",
                self.alpha
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!(
                "LoRA dropout must be in [0, 1), not {}",
                self.dropout
            ));
        }
        if self.target_modules.is_empty() {
            return bad("LoRA target modules are empty".into());
        }
        for (i, m) in self.target_modules.iter().enumerate() {
            if !LORA_TARGET_MODULES.contains(&m.as_str()) {
                return bad(format!(
                    "unknown LoRA target module {m:?}; known: {}",
                    LORA_TARGET_MODULES.join(", ")
                ));
            }
            if self.target_modules[..i].contains(m) {
                return bad(format!("LoRA target module {m:?} is named twice"));
            }
        }
        Ok(())
    }

    /// A short readable form, for plans and fingerprints:
    /// `r=16 alpha=32 dropout=0.05 targets=q_proj,k_proj,...`.
    pub fn summary(&self) -> String {
        format!(
            "r={} alpha={} dropout={} targets={}",
            self.rank,
            self.alpha,
            self.dropout,
            self.target_modules.join(",")
        )
    }
}

/// What to fine-tune. Serializes canonically; the job ledger hashes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FineTuneSpec {
    /// The base model id.
    pub base_model: String,
    /// The uploaded training file's id.
    pub training_file: String,
    /// The uploaded validation file's id, if any.
    pub validation_file: Option<String>,
    /// Hyperparameters.
    pub hyperparameters: Hyperparameters,
    /// A suffix for the fine-tuned model's name.
    pub suffix: Option<String>,
    /// Seed of the training run.
    pub seed: Option<u64>,
    /// LoRA settings, for backends that train adapters; `None` leaves the provider's choice
    /// (full fine-tuning, or its default adapter). A backend that cannot train adapters
    /// refuses a spec with `Some`. Left out of the serialized form when `None`, so that specs
    /// written before it existed hash as they did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraSpec>,
}

/// The state of a fine-tuning job, provider-neutral. The provider's own word is kept beside
/// it in [`FineTuneJob::provider_status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Checking the training data.
    ValidatingFiles,
    /// Waiting for capacity.
    Queued,
    /// Training.
    Running,
    /// Done; a model exists.
    Succeeded,
    /// Ended without a model.
    Failed,
    /// Cancelled.
    Cancelled,
}

impl JobStatus {
    /// Whether the job will not change any more.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        )
    }

    /// Snake-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::ValidatingFiles => "validating_files",
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }
}

/// A fine-tuning job as last seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FineTuneJob {
    /// The provider's job id.
    pub id: String,
    /// Neutral state.
    pub status: JobStatus,
    /// The provider's own status word.
    pub provider_status: String,
    /// The base model.
    pub base_model: String,
    /// The fine-tuned model's id, once it exists.
    pub fine_tuned_model: Option<String>,
    /// Why the job failed, if it did.
    pub error: Option<String>,
    /// The provider's error code for a failed job (`invalid_training_file`), if it gave one.
    #[serde(default)]
    pub error_code: Option<String>,
    /// The request parameter the failure is about (`training_file`), if the provider said.
    #[serde(default)]
    pub error_param: Option<String>,
    /// Tokens trained on, when reported.
    pub trained_tokens: Option<u64>,
}

impl FineTuneJob {
    /// Whether the job failed because of its training data (the error's code or parameter
    /// names a file or the data), so that resubmitting the same data would fail again.
    pub fn failed_on_training_data(&self) -> bool {
        if self.status != JobStatus::Failed {
            return false;
        }
        let names_data = |s: &Option<String>| {
            s.as_deref().is_some_and(|s| {
                let s = s.to_ascii_lowercase();
                s.contains("file") || s.contains("data") || s.contains("example")
            })
        };
        names_data(&self.error_code) || names_data(&self.error_param)
    }
}

/// One event of a job's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    /// Unix seconds.
    pub created_at: i64,
    /// `info`, `warn`, `error`.
    pub level: String,
    /// The text.
    pub message: String,
}

/// What a file is uploaded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FilePurpose {
    /// Training or validation data.
    FineTune,
    /// Batch requests.
    Batch,
}

/// An uploaded file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadedFile {
    /// The provider's file id.
    pub id: String,
    /// The name it was uploaded under.
    pub filename: String,
    /// Its size.
    pub bytes: u64,
}

/// The state of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    /// Accepted, not finished.
    InProgress,
    /// Finished; results can be fetched.
    Completed,
    /// Ended without running (the input was refused); the reasons are in [`Batch::errors`].
    Failed,
    /// Expired or cancelled before finishing; the lines that did finish have results.
    Cancelled,
}

/// A batch as last seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// The provider's batch id.
    pub id: String,
    /// Neutral state.
    pub status: BatchStatus,
    /// The provider's own status word.
    pub provider_status: String,
    /// Requests completed so far.
    pub completed: u64,
    /// Requests failed so far.
    pub failed: u64,
    /// Requests in all.
    pub total: u64,
    /// The provider's reasons when the batch as a whole failed (OpenAI's `errors.data`), each
    /// as `message (code, line n)`.
    #[serde(default)]
    pub errors: Vec<String>,
}

/// One result of a batch, joined to its request by `custom_id`.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchResult {
    /// The id given with the request.
    pub custom_id: String,
    /// The completion, or the provider's error for this request.
    pub result: Result<ChatResponse, crate::ProviderError>,
}

/// What a backend can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// Chat completions.
    pub chat: bool,
    /// First-token log-probabilities.
    pub logprobs: bool,
    /// Fine-tuning.
    pub fine_tuning: bool,
    /// Batch API.
    pub batch: bool,
}

#[cfg(test)]
mod tests {

    #[test]
    fn check_refuses_what_openai_refuses() {
        let ok = ChatRequest::new("m", vec![ChatMessage::new(Role::User, "q")]);
        assert!(ok.check().is_ok());
        type Change = fn(&mut ChatRequest);
        let cases: [(Change, &str); 4] = [
            (|r| r.messages.clear(), "no messages"),
            (|r| r.max_tokens = Some(0), "max_tokens must be at least 1"),
            (
                |r| r.temperature = Some(2.5),
                "temperature 2.5 is outside [0, 2]",
            ),
            (|r| r.top_logprobs = Some(21), "top_logprobs 21 is above 20"),
        ];
        for (change, message) in cases {
            let mut r = ok.clone();
            change(&mut r);
            let e = r.check().unwrap_err().to_string();
            assert!(e.contains(message), "{e:?} should say {message:?}");
        }
    }
    use super::*;

    #[test]
    fn params_serialize_as_auto_or_number() {
        let h = Hyperparameters::study();
        let v = serde_json::to_value(h).unwrap();
        assert_eq!(v["epochs"], 1);
        assert_eq!(v["batch_size"], 8);
        assert_eq!(v["learning_rate"]["multiplier"], 0.4);
        let auto = serde_json::to_value(Hyperparameters::default()).unwrap();
        assert_eq!(auto["epochs"], "auto");
        let back: Param<u32> = serde_json::from_str("\"auto\"").unwrap();
        assert_eq!(back, Param::Auto);
        let back: Param<u32> = serde_json::from_str("3").unwrap();
        assert_eq!(back, Param::Value(3));
        assert!(serde_json::from_str::<Param<u32>>("\"sometimes\"").is_err());
    }

    #[test]
    fn unset_new_fields_keep_the_old_serialized_form() {
        let v = serde_json::to_value(Hyperparameters::study()).unwrap();
        assert_eq!(
            v.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["batch_size", "epochs", "learning_rate"]
        );
    }

    #[test]
    fn lora_spec_validation_names_the_field() {
        let check = |spec: LoraSpec, expected: Option<&str>| {
            let got = spec.validate().err().map(|e| e.to_string());
            match (got, expected) {
                (None, None) => {}
                (Some(g), Some(e)) => assert!(g.contains(e), "{g:?} lacks {e:?}"),
                (g, e) => panic!("got {g:?}, expected {e:?}"),
            }
        };
        let d = LoraSpec::default;
        check(d(), None);
        check(LoraSpec { rank: 0, ..d() }, Some("rank"));
        check(LoraSpec { alpha: -1.0, ..d() }, Some("alpha"));
        check(
            LoraSpec {
                dropout: 1.0,
                ..d()
            },
            Some("dropout"),
        );
        let targets = |t: &[&str]| t.iter().map(|s| s.to_string()).collect();
        check(
            LoraSpec {
                target_modules: targets(&["q_proj", "qkv"]),
                ..d()
            },
            Some("\"qkv\""),
        );
        check(
            LoraSpec {
                target_modules: targets(&["q_proj", "q_proj"]),
                ..d()
            },
            Some("twice"),
        );
        check(
            LoraSpec {
                target_modules: Vec::new(),
                ..d()
            },
            Some("empty"),
        );
        assert_eq!(
            d().summary(),
            "r=16 alpha=32 dropout=0.05 targets=q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
        );
    }

    #[test]
    fn estimated_tokens_counts_prompt_and_output() {
        let mut r = ChatRequest::new("m", vec![ChatMessage::new(Role::User, "abcdefgh")]);
        r.max_tokens = Some(1);
        assert_eq!(r.estimated_tokens(), 4 + 2 + 1);
    }
}
