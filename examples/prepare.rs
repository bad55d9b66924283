//! Prepares an experiment from Global-MMLU: selects languages and domains, drops duplicates,
//! aligns languages, splits by sample id and writes `manifest.json`, `finetune/*.jsonl` and
//! `eval/*.jsonl`.
//!
//! ```text
//! cargo run --release --example prepare -- --out <DIR> [--data <PATH>...] \
//!     [--languages en,de,ar] [--domains stem,humanities,medical] \
//!     [--train-fraction 0.7] [--seed 42]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use xlt::data::{self, Domain, Language, PrepareConfig, Selection, SplitConfig};

/// Prepare fine-tuning and evaluation files from Global-MMLU.
#[derive(Parser)]
struct Args {
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Data files or directories (CSV, parquet, JSON Lines); default: the shipped fixtures.
    #[arg(long, num_args = 1..)]
    data: Vec<PathBuf>,
    /// Comma-separated language codes; default: every language found.
    #[arg(long)]
    languages: Option<String>,
    /// Comma-separated domains.
    #[arg(long, default_value = "stem,humanities,medical")]
    domains: String,
    /// Fraction of each subject on the training side.
    #[arg(long, default_value_t = 0.7)]
    train_fraction: f64,
    /// Seed of the split.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), data::DataError> {
    // Parse the lists first: a typo should fail before any file is read.
    let languages = match &args.languages {
        Some(list) => Language::parse_list(list)?,
        None => Vec::new(),
    };
    let domains = Domain::parse_list(&args.domains)?;
    let paths = if args.data.is_empty() {
        vec![xlt::fixtures_dir().join("global-mmlu/lite")]
    } else {
        args.data
    };
    let dataset = data::load_paths(&paths)?;
    let config = PrepareConfig {
        selection: Selection {
            languages,
            domains,
            ..Selection::default()
        },
        split: SplitConfig {
            train_fraction: args.train_fraction,
            seed: args.seed,
        },
        ..PrepareConfig::default()
    };
    let prepared = data::prepare(dataset, &config)?;
    prepared.write_to(&args.out)?;
    print!("{}", prepared.summary());
    println!(
        "wrote {} files to {}",
        prepared.files().len(),
        args.out.display()
    );
    Ok(())
}
