//! Prepares an experiment from Global-MMLU: selects languages and domains, drops duplicates,
//! aligns languages, splits by sample id and writes `manifest.json`, `finetune/*.jsonl` and
//! `eval/*.jsonl`.
//!
//! ```text
//! cargo run --release --example prepare -- --out <DIR> [--data <PATH|hf:Org/Name[@rev]>...] \
//!     [--languages en,de,ar] [--domains stem,humanities,medical] \
//!     [--train-fraction 0.7] [--seed 42]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
mod common;

/// Prepare fine-tuning and evaluation files from Global-MMLU.
#[derive(Parser)]
struct Args {
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    data: common::DataArgs,
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

fn run(args: Args) -> Result<(), xlt::data::DataError> {
    let prepared = args.data.prepare(args.seed)?;
    prepared.write_to(&args.out)?;
    print!("{}", prepared.summary());
    println!(
        "wrote {} files to {}",
        prepared.files().len(),
        args.out.display()
    );
    Ok(())
}
