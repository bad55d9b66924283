//! Evaluates the base model and every fine-tuned model of `<DIR>/models.json` on every test
//! set of the experiment, through the response cache, retry and rate limiter, grades the
//! answers and writes `<DIR>/outcomes/<model>.jsonl`.
//!
//! ```text
//! cargo run --release --example evaluate -- --out <DIR> [--provider embedded|openai] \
//!     [--grader regex|llm|regex+llm] [--batch] [--max-requests-per-minute N] [--concurrency N]
//!     [--device cpu|cuda:N] [--dtype f32|bf16]
//! ```
//!
//! With `--provider openai` and `OPENAI_BASE_URL` set to a vLLM server, the models a local
//! fine-tune wrote (`<base>+<adapter dir>`) are evaluated there: each LoRA adapter is loaded
//! before its evaluation and unloaded after (see the README).

mod common;

use std::process::ExitCode;

use clap::Parser;

/// Evaluate every model on every test set.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    study: common::StudyArgs,
    #[command(flatten)]
    eval: common::EvalArgs,
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
    study
        .run_evaluate(&args.eval.settings(), xlt_cli::interrupted())
        .await?;
    xlt_cli::outln!("outcomes in {}", args.study.out.join("outcomes").display())?;
    Ok(())
}
