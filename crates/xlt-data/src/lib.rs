//! Multiple-choice benchmarks for cross-lingual transfer experiments: load Global-MMLU,
//! AfriMMLU, Belebele or MMMLU (each [`Benchmark`] read into the same [`Question`]), select the
//! languages and domains an experiment needs, drop duplicates, audit and align languages, split
//! **by sample id** so that no question is trained on in one language and tested in another,
//! and write the fine-tuning and evaluation files. Languages carry a resource level with the
//! source that classified it ([`ResourceMap`]).
//!
//! The core types are [`Question`] (one question in one [`Language`]), [`Dataset`] (many,
//! with selection, [`Dataset::dedup`] and [`Dataset::align`]), [`Split`] (made by
//! [`split_items`], checked by [`leakage_audit`]) and [`Prepared`] (everything
//! [`prepare`] renders, written by [`Prepared::write_to`]).
//!
//! ```
//! use xlt_data::{load_paths, prepare, Domain, Language, PrepareConfig, Selection};
//!
//! let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/global-mmlu/lite");
//! let dataset = load_paths(&[fixtures])?;
//! let config = PrepareConfig {
//!     selection: Selection {
//!         languages: vec![Language::English, Language::Yoruba],
//!         domains: vec![Domain::Stem, Domain::Medical],
//!         ..Selection::default()
//!     },
//!     ..PrepareConfig::default()
//! };
//! let prepared = prepare(dataset, &config)?;
//! // Four slices; each language trains on the same ids and none of them is tested anywhere.
//! assert_eq!(prepared.manifest.slices.len(), 4);
//! assert!(prepared.manifest.leakage().is_clean());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod audit;
mod benchmark;
mod dataset;
mod error;
mod export;
mod language;
mod load;
mod prepare;
mod question;
mod scheme;
mod source;
mod split;
mod typology;

pub use audit::{
    AmbiguousKey, AnswerKeyReport, ConsistencyReport, Inconsistency, MIN_COMPARED_IDS,
    MisalignedFile, MisalignedLanguage,
};
pub use benchmark::Benchmark;
pub use dataset::{AlignReport, Dataset, DedupReport, Item, Selection};
pub use error::DataError;
pub use export::{
    EvalRecord, FinetuneRecord, Message, PromptTemplate, estimate_chat_tokens, estimate_tokens,
};
pub use language::{Language, LevelSource, ResourceLevel, ResourceMap, Script};
pub use load::{
    FileFormat, REQUIRED_COLUMNS, data_files, language_from_path, load_file, load_file_as,
    load_paths, load_paths_as,
};
pub use prepare::{
    Manifest, ManifestSlice, PrepareConfig, Prepared, SliceStats, prepare, write_atomic,
};
pub use question::{AnswerLetter, CulturalLabel, Domain, Question, compare_sample_ids};
pub use scheme::{DomainScheme, global_mmlu_category, mmlu_category};
pub use source::{DataSource, HUB_PREFIX, LoadOptions, SourceRecord, load_sources, path_languages};
pub use split::{
    LeakageReport, LeakedId, Split, SplitConfig, leakage_audit, shuffle_key, split_items,
};
pub use typology::{
    GenealogicalDistance, MIN_SHARED_FEATURES, PairDistance, Typology, WalsDistance,
};
