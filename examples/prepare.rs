//! Prepares an experiment from Global-MMLU (or AfriMMLU, Belebele, MMMLU): selects languages and domains, drops duplicates,
//! aligns languages, splits by sample id and writes `manifest.json`, `finetune/*.jsonl` and
//! `eval/*.jsonl`.
//!
//! ```text
//! cargo run --release --example prepare -- --out <DIR> [--data <PATH|hf:Org/Name[@rev]>...] \
//!     [--languages en,de,ar] [--domains stem,humanities,medical] \
//!     [--train-fraction 0.7] [--seed 42] [--fresh]
//! ```
//! Into a directory that holds an experiment prepared otherwise (its `fingerprint.json`),
//! it stops before writing anything and names what changed; `--fresh` discards the old
//! prepared files and results there first (the response cache is kept).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
mod common;

/// Prepare fine-tuning and evaluation files from Global-MMLU, AfriMMLU, Belebele or MMMLU.
#[derive(Parser)]
struct Args {
    /// Output directory.
    #[arg(long, help_heading = "Run")]
    out: PathBuf,
    #[command(flatten)]
    data: common::DataArgs,
    /// Seed of the split.
    #[arg(long, default_value_t = 42, help_heading = "Run")]
    seed: u64,
    /// Discard an experiment prepared with other settings in `--out` (its prepared files and
    /// results; the response cache is kept).
    #[arg(long, help_heading = "Run")]
    fresh: bool,
}

fn main() -> ExitCode {
    xlt_cli::exit::exit_code(run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    xlt::study::check_out_dir(&args.out)?;
    let prepared = args.data.prepare(args.seed)?;
    let resource_map = args.data.resource_map()?;
    xlt::study::write_prepared(&args.out, &prepared, args.fresh)?;
    if let Some(map) = resource_map {
        xlt::study::save_resource_map(&args.out, &map)?;
    }
    xlt_cli::outln!(
        "{}wrote {} files to {}",
        prepared.summary(),
        prepared.files().len(),
        args.out.display()
    )?;
    Ok(())
}
