//! xlt: cross-lingual transfer experiments on language models.
//!
//! This crate is a thin facade: each capability lives in its own crate and is re-exported
//! here under a short name, so that a project can depend on `xlt` alone.
//!
//! - [`data`]: Global-MMLU loading, leak-free splits, fine-tuning and evaluation files
//!   ([`xlt_data`]).
//! - [`hub`]: datasets and models by name from the Hugging Face Hub, in the shared cache
//!   ([`xlt_hub`]).
//! - [`provider`]: provider-neutral fine-tuning and chat traits ([`xlt_provider`]).
//! - [`grade`]: reading the chosen letter from a response, grader agreement ([`xlt_grade`]).
//! - [`stats`]: transfer statistics, significance, reports and heatmaps ([`xlt_stats`]).
//! - [`openai`]: the OpenAI backend of the provider traits ([`xlt_openai`]).
//! - [`together`]: the Together AI backend, open-weight models ([`xlt_together`]).
//! - [`local`]: open-weights models on this machine, on candle ([`xlt_local`]).
//! - [`study`]: the whole study over any provider: plan, fine-tune, evaluate, analyze
//!   ([`xlt_study`]).
//! - [`backends`]: the provider registry: a provider by name, its capabilities, a retried
//!   backend ([`xlt_backends`]).
//!
//! ```
//! let dataset = xlt::data::load_paths(&[xlt::fixtures_dir().join("global-mmlu/lite")])?;
//! assert!(dataset.languages().contains(&xlt::data::Language::Yoruba));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub use xlt_backends as backends;
pub use xlt_data as data;
pub use xlt_grade as grade;
pub use xlt_hub as hub;
pub use xlt_local as local;
pub use xlt_openai as openai;
pub use xlt_provider as provider;
pub use xlt_stats as stats;
pub use xlt_study as study;
pub use xlt_together as together;

/// The `fixtures/` directory of this workspace, where the shipped Global-MMLU rows, recorded
/// HTTP exchanges and the study's table live. Examples use it as their default data.
pub fn fixtures_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}
