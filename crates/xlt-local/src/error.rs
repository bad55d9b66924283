//! The crate's one error type.

use std::path::PathBuf;

/// What went wrong loading or running a local model. Every variant about a file names it;
/// those about a tensor or a metadata key name that too.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalError {
    /// A file could not be read.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The system's message.
        message: String,
    },
    /// A JSON file (config, tokenizer config, index) is not what Hugging Face writes.
    #[error("{path}: invalid {what}: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// Which file it is meant to be (`config.json`).
        what: &'static str,
        /// The parser's message.
        message: String,
    },
    /// A tensor is missing or has the wrong shape or dtype.
    #[error("{path}: tensor {tensor}: {message}")]
    Tensor {
        /// The weights file (or directory).
        path: PathBuf,
        /// The tensor's name in the checkpoint.
        tensor: String,
        /// What is wrong.
        message: String,
    },
    /// A GGUF metadata key is missing or has the wrong type.
    #[error("{path}: metadata key {key}: {message}")]
    Metadata {
        /// The GGUF file.
        path: PathBuf,
        /// The key (`llama.block_count`).
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The model is of an architecture or format this crate does not run.
    #[error("{path}: unsupported: {message}")]
    Unsupported {
        /// The file or directory.
        path: PathBuf,
        /// What is not supported.
        message: String,
    },
    /// A model id is not in the local Hugging Face cache.
    #[error(
        "model {id} is not in the local Hugging Face cache ({searched}); download it first, e.g. `huggingface-cli download {id}` (or `hf download {id}`), or pass a model directory or a .gguf file"
    )]
    NotInCache {
        /// The model id (`Qwen/Qwen2.5-0.5B-Instruct`).
        id: String,
        /// Where it was looked for.
        searched: String,
    },
    /// The [`Fetcher`](crate::Fetcher) given to the provider could not produce a model id's
    /// files (offline with nothing cached, a gated model without a token, no network); its
    /// message is shown as is.
    #[error("{message}")]
    Fetch {
        /// The model id (`Qwen/Qwen2.5-0.5B-Instruct`).
        id: String,
        /// The fetcher's message.
        message: String,
    },
    /// The tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template failed to parse or render.
    #[error("chat template: {0}")]
    Template(String),
    /// A tensor operation failed.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// A device or dtype setting is not one this build can use.
    #[error("{setting} {value:?}: {message}")]
    Setting {
        /// Where the value came from (`--device`, `XLT_DTYPE`).
        setting: String,
        /// The value given.
        value: String,
        /// What is wrong, and what to do.
        message: String,
    },
    /// A request cannot be served (empty prompt, a token outside the vocabulary).
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl LocalError {
    pub(crate) fn io(path: impl Into<PathBuf>, e: impl std::fmt::Display) -> Self {
        LocalError::Io {
            path: path.into(),
            message: e.to_string(),
        }
    }
}
