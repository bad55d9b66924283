//! Analyzes a cross-lingual transfer study: gains by transfer type and resource direction,
//! intervals, significance, a Markdown report, a JSON summary, a CSV grid and SVG heatmaps.
//!
//! ```text
//! cargo run --release --example analyze -- --out <DIR> (--table <TSV> | --outcomes <DIR>)
//! ```
//! `--table` reads an accuracy matrix in the published layout (see
//! `fixtures/paper/table1.tsv`); `--outcomes` reads per-question outcomes, one JSON Lines
//! file per model: `base.jsonl` for the base model and `<lang>-<domain>.jsonl` for the model
//! fine-tuned on that slice. Writes `report.md`, `summary.json`, `grid.csv` and `*.svg`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{ArgGroup, Parser};
use xlt::data::write_atomic;
use xlt::stats::{AccuracyMatrix, Analysis, AnalysisConfig, Grid, ModelOutcomes, Slice};

/// Analyze a transfer study.
#[derive(Parser)]
#[command(group(ArgGroup::new("input").required(true).args(["table", "outcomes"])))]
struct Args {
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// An accuracy matrix (tab-separated, published layout).
    #[arg(long)]
    table: Option<PathBuf>,
    /// A directory of per-question outcomes (`base.jsonl`, `<lang>-<domain>.jsonl`).
    #[arg(long)]
    outcomes: Option<PathBuf>,
    /// Bootstrap resamples.
    #[arg(long, default_value_t = 1000)]
    bootstrap: usize,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_outcomes(dir: &Path) -> anyhow::Result<Vec<ModelOutcomes>> {
    let mut models = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for path in entries {
        if path.extension().and_then(|e| e.to_str()) != Some("jsonl") {
            continue;
        }
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let source = if stem == "base" {
            None
        } else {
            Some(Slice::from_file_stem(stem).with_context(|| format!("{}", path.display()))?)
        };
        let file = std::fs::File::open(&path).with_context(|| format!("{}", path.display()))?;
        let outcomes =
            xlt::grade::read_jsonl(std::io::BufReader::new(file), &path.display().to_string())?;
        models.push(ModelOutcomes {
            label: source.map_or_else(|| "Base".to_owned(), |s| s.to_string()),
            source,
            outcomes,
        });
    }
    if models.is_empty() {
        bail!("{}: no outcome file (*.jsonl)", dir.display());
    }
    Ok(models)
}

fn run(args: Args) -> anyhow::Result<()> {
    let config = AnalysisConfig {
        bootstrap: xlt::stats::BootstrapConfig {
            resamples: args.bootstrap,
            seed: args.seed,
        },
        ..AnalysisConfig::default()
    };
    let grid = match (&args.table, &args.outcomes) {
        (Some(table), _) => {
            let text =
                std::fs::read_to_string(table).with_context(|| format!("{}", table.display()))?;
            AccuracyMatrix::parse_tsv(&text)
                .with_context(|| format!("{}", table.display()))?
                .grid(&config.resource_map)
        }
        (None, Some(dir)) => Grid::from_outcomes(&load_outcomes(dir)?, &config.resource_map)?,
        (None, None) => unreachable!("clap requires one input"),
    };
    if grid.rows.is_empty() {
        bail!(
            "no evaluation instance: no model has both its own and the base model's accuracy on any test set"
        );
    }
    let analysis = Analysis::new(grid, &config);
    // Everything is computed before the first write.
    let mut files = vec![
        ("report.md".to_owned(), analysis.report_markdown()),
        (
            "summary.json".to_owned(),
            serde_json::to_string_pretty(&analysis.summary_json())? + "\n",
        ),
        ("grid.csv".to_owned(), analysis.grid.to_csv()),
    ];
    files.extend(analysis.heatmaps());
    for (name, content) in &files {
        write_atomic(&args.out.join(name), content.as_bytes())?;
    }
    for w in &analysis.grid.warnings {
        eprintln!("warning: {w}");
    }
    println!(
        "{} instances; wrote {} files to {}",
        analysis.grid.rows.len(),
        files.len(),
        args.out.display()
    );
    Ok(())
}
