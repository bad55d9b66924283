//! The OpenAI backend of the `xlt-provider` traits: files, supervised fine-tuning jobs, chat
//! completions and batches, over reqwest. Any OpenAI-compatible server (vLLM, llama.cpp,
//! Ollama, a gateway) serves inference through it: set `OPENAI_BASE_URL`.
//!
//! The core types are [`OpenAiConfig`] (read from the environment in
//! [`OpenAiConfig::from_env`]; the key is redacted in `Debug` and never logged) and
//! [`OpenAiClient`], which implements `ChatModel`, `FineTuner` and `BatchRunner`. HTTP
//! failures become `ProviderError`s: a 429 `rate_limit_exceeded` is `RateLimited` (with
//! Retry-After), a 429 `insufficient_quota` is `QuotaExhausted` (never retried), a 404 is
//! `NotFound` with the API's message.
//!
//! [`VllmServer`] evaluates locally fine-tuned models (`<base>+<adapter dir>`, LoRA adapters
//! in PEFT format) on a vLLM server: a `ModelServer` that loads each adapter before its
//! evaluation (`POST /v1/load_lora_adapter`) and unloads it after, and a `ChatModel` that
//! names the adapter in the requests. `OPENAI_API_KEY` is optional for such a server.
//!
//! ```no_run
//! use xlt_openai::OpenAiClient;
//! use xlt_provider::{ChatMessage, ChatModel, ChatRequest, Role};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = OpenAiClient::from_env()?; // OPENAI_API_KEY, OPENAI_BASE_URL
//! let mut request = ChatRequest::new(
//!     "gpt-4.1-nano-2025-04-14",
//!     vec![ChatMessage::new(Role::User, "2 + 2 = ?\nA. 3\nB. 4\nC. 5\nD. 22")],
//! );
//! request.top_logprobs = Some(5);
//! let response = client.chat(&request).await?;
//! println!("{} {:?}", response.text, response.top_logprobs);
//! # Ok(())
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod client;
mod config;
#[cfg(feature = "testing")]
pub mod testing;
mod vllm;
mod wire;

pub use client::{HttpMethod, OpenAiClient, parse_rate_limit, parse_reset, retry_after};
pub use config::{DEFAULT_BASE_URL, LogprobsDialect, OpenAiConfig, timeout_from_env};
pub use vllm::{ADAPTER_SEPARATOR, PathMap, VllmConfig, VllmServer, split_adapter_model};
