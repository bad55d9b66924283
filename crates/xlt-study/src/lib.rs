//! A whole cross-lingual transfer study over any provider: plan it and price it before
//! spending anything, fine-tune every training slice, evaluate the base model and every
//! fine-tuned model on every test set, grade, and analyze. Each step is resumable: jobs go
//! through the provider's job ledger, answers through its response cache, and every output
//! file is written atomically once complete.
//!
//! The core items are [`Study`] (the steps on one [`Backend`] with one [`StudyOptions`]:
//! [`Study::plan`], [`Study::finetune`], [`Study::evaluate`], and the whole
//! [`Study::reproduce`]), [`Experiment`] (what `prepare` wrote), [`Plan`] (jobs, tokens,
//! requests, cost, and departures from the study's settings) and [`analyze_outcomes`].
//! Nothing here knows which provider runs: a [`Backend`] is trait objects and a
//! [`Capabilities`] profile (the `xlt-backends` crate opens one by name). A [`Fingerprint`]
//! of everything that determines the results is recorded in the directory and checked
//! before anything there is read or discarded. Progress goes to an [`Observer`];
//! cancellation is a future the caller passes (Ctrl-C, a timeout).
//!
//! The whole study, offline, on the embedded provider and a tiny slice of the shipped data:
//!
//! ```
//! use std::sync::Arc;
//! use xlt_provider::{EMBEDDED_BASE_MODEL, EmbeddedProvider};
//! use xlt_study::{Backend, Capabilities, EvalSettings, Study, StudyOptions, TuneSettings};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let out = dir.path().join("study");
//! // Prepare: English and Yoruba, medical questions, from the shipped fixtures.
//! let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/global-mmlu/lite");
//! let sources = [xlt_data::DataSource::Path(data.into())];
//! let prepared = xlt_study::prepare_data(&sources, Some("en,yo"), "medical", 0.7, 42)?;
//! xlt_study::write_prepared(&out, &prepared, false)?;
//! // A backend: any ChatModel + FineTuner, with what it can do.
//! let profile = Capabilities {
//!     free: true,
//!     instant_jobs: true,
//!     ..Capabilities::new("offline", EMBEDDED_BASE_MODEL)
//! };
//! let backend = Backend::new(profile, Arc::new(EmbeddedProvider::open(out.join("embedded"))));
//! let options = StudyOptions::new(&out);
//! let study = Study::new(&backend, &options, &xlt_study::Quiet);
//! let (tune, eval) = (TuneSettings::default(), EvalSettings {
//!     grader: xlt_grade::Protocol::Regex,
//!     ..EvalSettings::default()
//! });
//! // Plan, fine-tune, evaluate: each step checks the fingerprint first.
//! let exp = xlt_study::Experiment::open(&out)?;
//! study.check_fingerprint(Some(&tune), Some(&eval), &exp)?;
//! let plan = study.plan(&tune, Some(&eval), &exp).await?;
//! assert_eq!(plan.jobs, ["en-medical", "yo-medical"]);
//! let models = study.finetune(&tune, &exp, &plan).await?;
//! assert_eq!(models.fine_tuned.len(), 2);
//! study.evaluate(&eval, &exp, &models, std::future::pending()).await?;
//! // Analyze: 2 models x 2 test sets.
//! let (analysis, files) = xlt_study::analyze_experiment(&out)?;
//! assert_eq!(analysis.grid.rows.len(), 4);
//! assert!(files.contains(&"report.md".to_owned()));
//! # Ok(())
//! # }
//! ```
//!
//! A plan alone, priced:
//!
//! ```
//! use xlt_study::{Plan, PlanInput, PriceTable, Experiment};
//! use xlt_provider::Hyperparameters;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // An experiment prepared by xlt-data (here: a tiny one made on the spot).
//! let dir = tempfile::tempdir()?;
//! let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/global-mmlu/lite");
//! let config = xlt_data::PrepareConfig {
//!     selection: xlt_data::Selection {
//!         languages: vec![xlt_data::Language::English, xlt_data::Language::Yoruba],
//!         domains: vec![xlt_data::Domain::Medical],
//!         ..Default::default()
//!     },
//!     ..Default::default()
//! };
//! xlt_data::prepare(xlt_data::load_paths(&[data])?, &config)?.write_to(dir.path())?;
//! let exp = Experiment::open(dir.path())?;
//! let jobs = exp.training_slices(&[])?;
//! let plan = Plan::new(&exp, &PlanInput {
//!     provider: "openai",
//!     base_model: "gpt-4.1-nano-2025-04-14",
//!     jobs: &jobs,
//!     hyperparameters: Hyperparameters::study(),
//!     max_tokens: 16,
//!     grader: xlt_grade::Protocol::RegexThenLlm,
//!     scoring: xlt_study::Scoring::Generate,
//!     rotations: 1,
//!     prices: PriceTable::known("gpt-4.1-nano-2025-04-14"),
//!     serving: None,
//! })?;
//! assert_eq!(plan.jobs, ["en-medical", "yo-medical"]);
//! // 3 models (base + 2) x 2 test sets x 11 questions.
//! assert_eq!(plan.eval_requests, 66);
//! assert!(plan.cost_usd.unwrap() > 0.0);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod atomic;
mod backend;
mod experiment;
mod fingerprint;
mod memory;
mod progress;
mod run;
mod study;

use std::path::PathBuf;

pub use backend::{Backend, Capabilities, DEFAULT_NUMERICS, LoraSupport, Machine};
pub use experiment::{
    Experiment, MachineTraining, Plan, PlanInput, PriceTable, STUDY_BASE_MODEL, TestSet,
};
pub use fingerprint::{
    Discard, FINGERPRINT_FILE, Fingerprint, FingerprintCheck, PREPARED_ON_KEY, RunSettings,
    check_fingerprint, prepared_on,
};
pub use progress::{PLAIN_LINE_EVERY, ProgressLines, TrainingStep, format_duration, resumed_at};
pub use run::{
    BATCH_ROUNDS, BatchOptions, DEFAULT_MAX_TOKENS, EvalOptions, FinetuneOptions, ModelsFile,
    Scoring, Serving, TunedModel, endpoint_name, evaluate, evaluate_batch, finetune, labels,
    provider_training_estimate, replicate_jobs, replicate_seed, stop_started_endpoints,
};
pub use study::{
    ANALYZED_KEY, EVAL_KEYS, EVALUATION_RESUMES, EvalSettings, LoraOptions, Observer, Quiet,
    RESOURCE_MAP_FILE, Reproduced, Study, StudyOptions, TuneSettings, analysis_config,
    analyze_experiment, cache_dir, check_analysis_dir, check_out_dir, check_partial_fingerprint,
    default_analysis_dir, prepare_data, prepare_data_in, record_analysis, report_context,
    save_resource_map, write_prepared,
};

use xlt_provider::ProviderError;
use xlt_stats::{Analysis, AnalysisConfig, Grid, ModelOutcomes, Slice};

/// Errors of a study run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StudyError {
    /// A file could not be read or written.
    #[error("{}: {message}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// A file or setting is not what it should be.
    #[error("{what}: {message}")]
    Invalid {
        /// Which file, line or setting.
        what: String,
        /// What is wrong.
        message: String,
    },
    /// The provider failed.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// Some evaluation requests failed after retries.
    #[error(
        "{failed} request(s) for model `{model}` failed (answered ones are cached; {}); first: {first}",
        requests_hint(first)
    )]
    Requests {
        /// The model's label.
        model: String,
        /// How many failed.
        failed: usize,
        /// The first error.
        first: ProviderError,
    },
    /// A fine-tuning job ended without a model, or a rerun will not pay for it again
    /// without being told (see `xlt_provider::JobLedger`).
    #[error("fine-tuning `{slice}` (training file {}): {source}", file.display())]
    FineTune {
        /// The slice.
        slice: String,
        /// Its training file, the one to fix when the data is at fault.
        file: PathBuf,
        /// The provider's failure.
        source: ProviderError,
    },
    /// The provider says a model does not exist: its evaluation stopped at the first answer.
    #[error(
        "model `{model}` ({label}{}) does not exist at the provider: {message}; its evaluation stopped. {}",
        job.as_ref().map(|j| format!(", fine-tuned by job {j}")).unwrap_or_default(),
        if job.is_some() {
            format!("To fine-tune `{label}` again (paid again), remove `{label}` from models.json and its job from ledger.json, then rerun")
        } else {
            "Choose a model your account can use (--base-model)".to_owned()
        }
    )]
    ModelNotFound {
        /// The model's label (`base`, a slice).
        label: String,
        /// The model id.
        model: String,
        /// The job that made it, for a fine-tuned model.
        job: Option<String>,
        /// The provider's message.
        message: String,
    },
    /// The directory holds results of an experiment with other settings; nothing was done.
    #[error(
        "{} holds the results of a different experiment (changed: {}); write to another --out, or pass --fresh to discard the old results there",
        dir.display(), changes.join("; ")
    )]
    Changed {
        /// The experiment directory.
        dir: PathBuf,
        /// One line per changed setting: `seed: 1 -> 2`.
        changes: Vec<String>,
    },
    /// A setting the provider or the experiment does not take; nothing was spent.
    #[error("{0}")]
    Refused(String),
    /// The run was cancelled (the caller's cancel future resolved): what it said.
    #[error("{0}")]
    Interrupted(String),
    /// Data handling failed.
    #[error(transparent)]
    Data(#[from] xlt_data::DataError),
    /// Analysis failed.
    #[error(transparent)]
    Stats(#[from] xlt_stats::StatsError),
}

/// Reads a directory of outcome files, `base.jsonl` and `<lang>-<domain>.jsonl` (one per
/// fine-tuned model, named by its training slice), and analyzes them (see
/// `xlt_stats::Analysis`).
///
/// # Errors
/// Reading or parsing the outcome files (naming file and line); a file name that is neither
/// `base` nor a slice; a grid without exactly one base model.
pub fn analyze_outcomes(
    dir: &std::path::Path,
    config: &AnalysisConfig,
) -> Result<Analysis, StudyError> {
    let dir = dir.to_owned();
    let mut models = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| StudyError::Io {
            path: dir.clone(),
            message: e.to_string(),
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    paths.sort();
    for path in paths {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        let invalid = |e: xlt_stats::StatsError| StudyError::Invalid {
            what: path.display().to_string(),
            message: e.to_string(),
        };
        // A seed replicate's file is `<slice>#<k>.jsonl` (issue #24).
        let (slice, replicate) = xlt_stats::split_label(&stem).map_err(invalid)?;
        let source = if stem == "base" {
            None
        } else {
            Some(Slice::from_file_stem(slice).map_err(invalid)?)
        };
        let text = experiment::read(&path)?;
        let outcomes = xlt_grade::read_jsonl(text.as_bytes(), &path.display().to_string())
            .map_err(|e| StudyError::Invalid {
                what: "outcomes".to_owned(),
                message: e.to_string(),
            })?;
        models.push(ModelOutcomes {
            label: source.map_or_else(
                || "Base".to_owned(),
                |s| {
                    xlt_stats::ReplicateLabel {
                        slice: s.to_string(),
                        replicate,
                    }
                    .to_string()
                },
            ),
            source,
            outcomes,
        });
    }
    if models.is_empty() {
        return Err(StudyError::Invalid {
            what: dir.display().to_string(),
            message: "no outcome file (*.jsonl)".to_owned(),
        });
    }
    let grid = Grid::from_outcomes(&models, &config.resource_map)?;
    Ok(Analysis::new(grid, config))
}

/// Writes an analysis as `analyze` does: `report.md`, `summary.json`, `grid.csv`, `*.svg`
/// under `dir`, each atomically, all computed before the first write.
///
/// # Errors
/// [`StudyError::Data`] naming a file that could not be written.
pub fn write_analysis(
    analysis: &Analysis,
    dir: &std::path::Path,
) -> Result<Vec<String>, StudyError> {
    let mut files = vec![
        ("report.md".to_owned(), analysis.report_markdown()),
        (
            "summary.json".to_owned(),
            serde_json::to_string_pretty(&analysis.summary_json()).expect("serializes") + "\n",
        ),
        ("grid.csv".to_owned(), analysis.grid_csv()),
    ];
    files.extend(analysis.heatmaps());
    for (name, content) in &files {
        crate::atomic::write_atomic(&dir.join(name), content.as_bytes())?;
    }
    Ok(files.into_iter().map(|(n, _)| n).collect())
}

/// What to do about failed evaluation requests: a transient failure (transport, timeout,
/// rate limit, a 5xx) goes away on a rerun; another (a refused request, a model or adapter
/// that cannot be loaded) needs its cause fixed first.
fn requests_hint(first: &ProviderError) -> &'static str {
    if first.is_retryable() {
        "rerun to retry the rest"
    } else {
        "the first failure is not transient: fix its cause, then rerun for the rest"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Failed requests say "rerun" only when a rerun can help.
    #[test]
    fn failed_requests_say_rerun_only_for_transient_failures() {
        let failed = |first| {
            StudyError::Requests {
                model: "en-stem".into(),
                failed: 3,
                first,
            }
            .to_string()
        };
        let transient = failed(ProviderError::Transport {
            request: "POST /v1/chat/completions".into(),
            message: "connection reset".into(),
        });
        assert!(transient.contains("rerun to retry the rest"), "{transient}");
        let broken = failed(ProviderError::InvalidRequest(
            "local model base+adapter: missing tensor".into(),
        ));
        assert!(broken.contains("not transient: fix its cause"), "{broken}");
        assert!(
            broken.contains("3 request(s) for model `en-stem`"),
            "{broken}"
        );
    }
}
