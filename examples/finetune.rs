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
    common::init_logging();
    common::exit_code(run(Args::parse()).await)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let (tune, args) = (args.tune, args.study);
    common::check_out_dir(&args.out)?;
    let exp = xlt::study::Experiment::open(&args.out)?;
    let backend = args.backend()?;
    args.check_fingerprint(&backend, Some(&tune), None, &exp)?;
    let plan = common::plan(&args, &tune, None, &backend, &exp).await?;
    let bars = common::Bars::new();
    let models = common::finetune(&args, &tune, &backend, &exp, &plan, &bars).await?;
    for (slice, m) in &models.fine_tuned {
        common::outln!("{slice}\t{}", m.model)?;
    }
    Ok(())
}
