//! Transfer statistics for cross-lingual fine-tuning studies. It takes data (a published
//! accuracy matrix as text, or per-question outcomes) and returns tables; it reads no file
//! and touches no network.
//!
//! The core types are [`Grid`] (one [`GridRow`] per fine-tuned model and test set, with the
//! gain over the base model, its [`TransferType`] and resource [`Direction`]),
//! [`AccuracyMatrix`] (the published layout, ragged rows reported, not guessed) and
//! [`Analysis`] (summaries with two-way cluster-robust and pigeonhole-bootstrap intervals,
//! a headroom regression, exact McNemar tests with Holm and Benjamini-Hochberg corrections
//! and their power, a Markdown report, a JSON summary and SVG heatmaps).
//! Outcomes scored by letters also give the continuous outcome `p_correct`
//! ([`Grid::p_correct_grid`], [`PCorrectAnalysis`]: the same intervals, Wilcoxon
//! signed-rank tests and paired t-test power).
//!
//! ```
//! use xlt_stats::{AccuracyMatrix, Analysis, AnalysisConfig};
//! use xlt_data::ResourceMap;
//!
//! let table = "Model\tHum en\tHum ig\nBase\t0.80\t0.50\nHum ig\t0.85\t0.70\n";
//! let matrix = AccuracyMatrix::parse_tsv(table)?;
//! let analysis = Analysis::new(matrix.grid(&ResourceMap::study()), &AnalysisConfig::default());
//! let summary = analysis.summary_json();
//! // Fine-tuning on Igbo humanities: +20 points in-domain, +5 cross-lingual into English.
//! let in_domain = summary["transfer_types"]["in_domain"]["mean"].as_f64().unwrap();
//! assert!((in_domain - 20.0).abs() < 1e-9);
//! assert_eq!(summary["resource_directions"]["upward"]["n"], 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod answers;
mod bootstrap;
mod cluster;
mod context;
mod coverage;
mod grid;
mod heatmap;
mod pcorrect;
mod power;
mod published;
mod regression;
mod replicate;
mod report;
mod signif;
mod summary;
mod transfer;
mod wild;

pub use answers::{
    CHANCE, JUDGE_METHOD, LOPSIDED_EXCESS, MIN_QUESTIONS, ModelAnswers, PCorrectTally, Tally,
    binomial_test,
};
pub use bootstrap::BootstrapConfig;
pub use cluster::{Coefficient, TwoWayOls};
pub use context::{DataContext, ReportContext};
pub use coverage::{
    CoverageConfig, CoverageRow, IntervalMethod, PRIMARY_INTERVAL, PRIMARY_WHY, choose_primary,
    coverage_tolerance, simulate_coverage,
};
pub use grid::{
    AccuracyMatrix, Direction, Grid, GridRow, Measure, ModelOutcomes, Paired, RAGGED_POLICY, Slice,
    TransferType,
};
pub use heatmap::{ColorScale, Heatmap};
pub use pcorrect::{
    PCorrectAnalysis, PCorrectPowerRow, PCorrectTest, Wilcoxon, WilcoxonMethod,
    min_detectable_effect, paired_t_power, wilcoxon_signed_rank,
};
pub use power::{PowerRow, mcnemar_power, min_detectable_gain, power_table};
pub use published::{PublishedFigure, STUDY_FIGURES};
pub use regression::{
    HeadroomRegression, MIN_INSTANCES_PER_TERM, MIN_REGRESSION_CLUSTERS, headroom_regression,
};
pub use replicate::{
    DECOMPOSITION_METHOD, EXCEEDS_RULE, GainNoise, REPLICATE_SEPARATOR, ReplicateAnalysis,
    ReplicateLabel, ReplicateSpread, VarianceComponent, VarianceDecomposition, split_label,
};
pub use report::{Analysis, AnalysisConfig, MIN_HEATMAP_INSTANCES, MIN_INTERVAL_CLUSTERS};
pub use signif::{RowTest, Significance, benjamini_hochberg, holm, mcnemar_exact, significance};
pub use summary::{Grouping, Groups, SAME_LANGUAGE, Summary, group, summarize};
pub use transfer::{
    NEAR_ALIAS, TRANSFER_TERMS, TransferRegression, pair_distances, transfer_regression,
};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatsError {
    /// A published table cannot be read.
    #[error("table: {0}")]
    Table(String),
    /// Outcomes do not make a grid.
    #[error("outcomes: {0}")]
    Input(String),
    /// A model cannot be fitted (too few clusters, collinear regressors).
    #[error("model: {0}")]
    Model(String),
}
