//! Analyzes a cross-lingual transfer study: gains by transfer type and resource direction,
//! intervals, significance, a Markdown report, a JSON summary, a CSV grid and SVG heatmaps.
//!
//! ```text
//! cargo run --release --example analyze -- [--out <DIR>] (--table <TSV> | --outcomes <DIR>) [--fresh]
//! ```
//! `--table` reads an accuracy matrix in the published layout (see
//! `fixtures/paper/table1.tsv`); `--outcomes` reads per-question outcomes, one JSON Lines
//! file per model: `base.jsonl` for the base model and `<lang>-<domain>.jsonl` for the model
//! fine-tuned on that slice. Writes `report.md`, `summary.json`, `grid.csv` and `*.svg`.
//! When the table is the study's own (`fixtures/paper/table1.tsv`), the report sets the
//! study's published figures beside ours.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{ArgGroup, Parser};
use xlt::stats::{AccuracyMatrix, Analysis, AnalysisConfig, BootstrapConfig, STUDY_FIGURES};

/// Analyze a transfer study.
#[derive(Parser)]
#[command(group(ArgGroup::new("input").required(true).args(["table", "outcomes"])))]
struct Args {
    /// Output directory (default with `--outcomes <EXP>/outcomes`: the experiment <EXP>).
    /// An experiment directory takes only the analysis of its own outcomes.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replace the results of another experiment in `--out` with this analysis.
    #[arg(long)]
    fresh: bool,
    /// An accuracy matrix (tab-separated, published layout).
    #[arg(long)]
    table: Option<PathBuf>,
    /// A directory of per-question outcomes (`base.jsonl`, `<lang>-<domain>.jsonl`).
    #[arg(long)]
    outcomes: Option<PathBuf>,
    /// Pigeonhole bootstrap resamples (at least 40).
    #[arg(long, default_value_t = BootstrapConfig::default().resamples, value_parser = resamples)]
    bootstrap: usize,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// A file of resource levels, `code,level` per line, over the default classification
    /// (the study's map for its nine languages, Joshi et al. 2020 for the others) or the
    /// one the experiment keeps.
    #[arg(long)]
    resource_map: Option<PathBuf>,
}

fn main() -> ExitCode {
    xlt_cli::exit::exit_code(run(Args::parse()))
}

/// The smallest number of bootstrap resamples that gives a 95% percentile interval.
const MIN_RESAMPLES: usize = 40;

/// `--bootstrap`: at least [`MIN_RESAMPLES`].
fn resamples(s: &str) -> Result<usize, String> {
    let n: usize = s.trim().parse().map_err(|e| format!("{e}"))?;
    if n < MIN_RESAMPLES {
        return Err(format!(
            "must be at least {MIN_RESAMPLES}: the 95% interval cuts 2.5% of the resamples from each end, which needs {MIN_RESAMPLES} x 0.025 = 1 resample or more (default {})",
            BootstrapConfig::default().resamples
        ));
    }
    Ok(n)
}

fn run(args: Args) -> anyhow::Result<()> {
    let input = args.table.as_deref().or(args.outcomes.as_deref());
    let input = input.expect("clap requires one input");
    let out = match (&args.out, &args.outcomes) {
        (Some(out), _) => out.clone(),
        (None, Some(dir)) => xlt::study::default_analysis_dir(dir).with_context(|| {
            format!(
                "--out is required: {} is not the outcomes/ of an experiment",
                dir.display()
            )
        })?,
        (None, None) => bail!("--out is required with --table"),
    };
    xlt::study::check_out_dir(&out)?;
    // Before anything is read: an experiment's directory takes only its own analysis.
    xlt::study::check_analysis_dir(&out, input, args.fresh)?;
    // Outcomes inside an experiment: its fingerprint and manifest head the report, and its
    // kept resource map classifies the languages.
    let experiment = args.outcomes.as_deref().and_then(|d| d.parent());
    let mut config = match experiment {
        Some(dir) => xlt::study::analysis_config(dir)?,
        None => AnalysisConfig::default(),
    };
    config.bootstrap = BootstrapConfig {
        resamples: args.bootstrap,
        seed: args.seed,
    };
    if let Some(file) = &args.resource_map {
        config
            .resource_map
            .overlay(&xlt::data::ResourceMap::from_file(file)?);
    }
    let analysis = match (&args.table, &args.outcomes) {
        (Some(table), _) => {
            let text =
                std::fs::read_to_string(table).with_context(|| format!("{}", table.display()))?;
            let matrix =
                AccuracyMatrix::parse_tsv(&text).with_context(|| format!("{}", table.display()))?;
            if matrix.is_study_table() {
                // The study's own table: set its published figures beside ours.
                config.published = Some(STUDY_FIGURES.to_vec());
            }
            Analysis::new(matrix.grid(&config.resource_map), &config)
        }
        (None, Some(dir)) => xlt::study::analyze_outcomes(dir, &config)?,
        (None, None) => unreachable!("clap requires one input"),
    };
    if analysis.grid.rows.is_empty() && analysis.grid.answers.is_empty() {
        bail!(
            "no evaluation instance: no model has both its own and the base model's accuracy on any test set"
        );
    }
    let files = xlt::study::write_analysis(&analysis, &out)?;
    xlt::study::record_analysis(&out, input)?;
    for w in &analysis.grid.warnings {
        eprintln!("warning: {w}");
    }
    xlt_cli::outln!(
        "{} instances; wrote {} files to {}",
        analysis.grid.rows.len(),
        files.len(),
        out.display()
    )?;
    xlt_cli::outln!("{}", analysis.closing_summary())?;
    Ok(())
}
