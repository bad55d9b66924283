//! Provider-neutral fine-tuning and inference. The rest of the workspace sees three small
//! traits, [`ChatModel`], [`FineTuner`] and [`BatchRunner`], one error type,
//! [`ProviderError`], and plain request and response types ([`ChatRequest`],
//! [`FineTuneSpec`]); backends (OpenAI, Together, the [`EmbeddedProvider`]) implement them.
//!
//! Wrappers compose over any backend: [`Retry`] (exponential backoff with jitter, honouring
//! Retry-After, around every call of every trait, with resends of writes made safe by a
//! lookup first; retries counted in a [`RetryCounter`]), [`Limited`] (requests and tokens per minute, following the provider's own
//! rate-limit reports), [`Cached`] (an on-disk response cache) and, for fine-tuning, the
//! [`JobLedger`] (a resubmitted spec resumes its job). [`run_chat`] streams many requests
//! through them with bounded concurrency and [`Progress`].
//!
//! ```
//! use xlt_provider::{ChatMessage, ChatRequest, FineTuneSpec, Hyperparameters, Role};
//!
//! let request = ChatRequest::new(
//!     "gpt-4.1-nano-2025-04-14",
//!     vec![ChatMessage::new(Role::User, "2 + 2 = ?\nA. 3\nB. 4\nC. 5\nD. 22")],
//! );
//! assert_eq!(request.model, "gpt-4.1-nano-2025-04-14");
//! let spec = FineTuneSpec {
//!     base_model: request.model.clone(),
//!     training_file: "file-abc123".into(),
//!     validation_file: None,
//!     hyperparameters: Hyperparameters::study(),
//!     suffix: Some("stem-ig".into()),
//!     seed: Some(42),
//!     lora: None,
//! };
//! assert_eq!(serde_json::to_value(&spec)?["hyperparameters"]["batch_size"], 8);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod cache;
mod embedded;
mod error;
mod ledger;
mod letters;
mod limit;
mod retry;
mod routes;
mod run;
mod secret;
mod store;
mod traits;
mod types;

pub use cache::{Cached, ResponseCache};
pub use embedded::{EMBEDDED_BASE_MODEL, EmbeddedProvider};
pub use error::ProviderError;
pub use ledger::{JobLedger, LedgerJob, SERVER_FAILURE_RESUBMISSIONS};
pub use letters::{
    LETTERS, LetterLogprobs, LetterScore, LetterSource, TOP_LOGPROBS_MAX, letter_request,
    letters_of, log_add_exp, score_letters,
};
pub use limit::{
    LOGGED_PAUSE, Limited, MAX_PROVIDER_PAUSE, RATE_LIMIT_BACKOFF_START, RateLimiter, RateLimits,
    rate_limit_backoff,
};
pub use retry::{Retry, RetryCounter, RetryPolicy};
pub use routes::ServedRoutes;
pub use run::{Progress, RunOptions, run_chat};
pub use secret::Secret;
pub use store::{
    STALE_TEMP_AGE, TEMP_PREFIX, bytes_hash, stable_hash, sweep_temp_files, tempfile_with_umask,
};
pub use traits::{
    BatchRunner, ChatModel, FineTuner, ModelServer, ServeState, Served, WaitOptions, wait_for_job,
};
pub use types::{
    Batch, BatchResult, BatchStatus, Capabilities, ChatMessage, ChatRequest, ChatResponse,
    FilePurpose, FineTuneJob, FineTuneSpec, Hyperparameters, JobEvent, JobStatus,
    LORA_TARGET_MODULES, LearningRate, LoraSpec, Param, RateLimitInfo, Role, TokenLogprob,
    UploadedFile, Usage,
};
