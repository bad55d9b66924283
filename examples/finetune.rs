//! Fine-tunes one model per training slice of a prepared experiment, through the job ledger
//! (a rerun resumes jobs instead of paying twice), and records the model ids in
//! `<DIR>/models.json`.
//!
//! ```text
//! cargo run --release --example finetune -- --out <DIR> [--provider embedded|openai] \
//!     [--base-model M] [--train-slices en-stem,ig-medical] [--yes]
//! ```

mod common;

use std::process::ExitCode;

use clap::Parser;

/// Fine-tune every training slice.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    study: common::StudyArgs,
    #[command(flatten)]
    tune: common::TuneArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    xlt_cli::init_logging();
    xlt_cli::exit::exit_code(run(Args::parse()).await)
}

async fn run(args: Args) -> anyhow::Result<()> {
    xlt::study::check_out_dir(&args.study.out)?;
    let backend = args.study.backend()?;
    let (options, bars) = (args.study.options(), xlt_cli::Bars::new());
    let study = xlt::study::Study::new(&backend, &options, &bars);
    let models = study
        .run_finetune(&args.tune.settings(), xlt_cli::interrupted())
        .await?;
    for (slice, m) in &models.fine_tuned {
        xlt_cli::outln!("{slice}\t{}", m.model)?;
    }
    Ok(())
}
