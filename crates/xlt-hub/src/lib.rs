//! Datasets and models by name from the Hugging Face Hub, in the cache the Python tools
//! share (`huggingface_hub`, `datasets`, `transformers`): files they downloaded are used
//! without a request, and files downloaded here are theirs too.
//!
//! The core types are [`HubConfig`] (cache, endpoint, token, offline; read from `HF_HOME`,
//! `HF_HUB_CACHE`, `HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_OFFLINE` in
//! [`HubConfig::from_env`], as the Python client reads them), [`HubRepo`] (a dataset or model
//! at a revision) and [`HubClient`], whose [`HubClient::snapshot`] returns the files matching
//! some patterns, from the cache or downloaded, with the commit they came from. For models,
//! [`resolve_model`] gives the snapshot directory of a model's config, tokenizer and weights.
//! The network goes through the `hf-hub` crate; this crate adds the environment, the
//! offline mode, listing and selection, and errors that say what to do.
//!
//! It knows nothing of Global-MMLU, parquet or model formats: callers choose the patterns.
//!
//! ```
//! use xlt_hub::{HubClient, HubConfig, HubRepo};
//!
//! // An empty cache, offline: the error says what is missing and where it would go.
//! let cache = tempfile::tempdir()?;
//! let mut config = HubConfig::new(cache.path());
//! config.offline = true;
//! let client = HubClient::new(config)?;
//! let repo = HubRepo::dataset("CohereLabs/Global-MMLU", None)?;
//! let err = xlt_hub::block_on(client.snapshot(&repo, &["am/test-*.parquet"])).unwrap_err();
//! assert!(err.to_string().contains("datasets--CohereLabs--Global-MMLU"));
//! assert!(err.to_string().contains("am/test-*.parquet"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod cache;
mod client;
mod config;
mod error;
mod repo;
#[cfg(feature = "testing")]
pub mod testing;

pub use client::{
    HubClient, Listing, MODEL_FILES, Snapshot, block_on, resolve_model, resolve_model_blocking,
};
pub use config::{DEFAULT_ENDPOINT, HubConfig};
pub use error::HubError;
pub use repo::{DEFAULT_REVISION, HubRepo, RepoKind};
