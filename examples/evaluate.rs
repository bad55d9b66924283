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
    common::init_logging();
    common::exit_code(run(Args::parse()).await)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let (eval, args) = (args.eval, args.study);
    common::check_out_dir(&args.out)?;
    let exp = xlt::study::Experiment::open(&args.out)?;
    let backend = args.backend()?;
    // models.json first: `evaluate` before `finetune` fails without touching the directory.
    let models = xlt::study::ModelsFile::read(&args.out)?;
    // A local model that cannot be loaded stops here, before anything is written.
    common::load_local_model(&backend, &models.base_model).await?;
    args.check_fingerprint(&backend, None, Some(&eval), &exp)?;
    let bars = common::Bars::new();
    common::evaluate(&args, &eval, &backend, &exp, &models, &bars).await?;
    common::outln!("outcomes in {}", args.out.join("outcomes").display())?;
    Ok(())
}
