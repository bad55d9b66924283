//! The whole study in one command: prepare, plan (and confirm before paying), fine-tune,
//! evaluate, grade and analyze. With no other argument it runs offline on the shipped
//! fixtures with the embedded provider.
//!
//! ```text
//! cargo run --release --example reproduce -- --out <DIR> [--provider embedded|openai|together|local]
//!     [--base-model M] [--data PATH|hf:Org/Name[@rev]...] [--languages en,de] [--domains stem,medical]
//!     [--train-slices en-stem,...] [--grader regex|llm|regex+llm] [--batch]
//!     [--max-requests-per-minute N] [--concurrency N] [--seed 42] [--yes]
//!     [--learning-rate 2e-4] [--lora-rank 16] [--lora-alpha 32] [--lora-dropout 0.05]
//!     [--lora-targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]
//!     [--device cpu|cuda:N] [--dtype f32|bf16]
//! ```
//! With `--provider local` the base model (`--base-model DIR|Org/Name|FILE.gguf`) is
//! fine-tuned on this machine with LoRA, one adapter per slice in PEFT format under
//! `<DIR>/local/jobs/<job>/adapter/`, and every model is evaluated here.
//! Killing it and running the same command again finishes the study without repeating a
//! finished fine-tuning job or a cached request, with the same results. Running it into a
//! directory that holds the results of other settings stops before doing anything, naming
//! what changed; `--fresh` discards those results first.

mod common;

use std::process::ExitCode;

use clap::Parser;

/// Run the whole study.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    study: common::StudyArgs,
    #[command(flatten)]
    tune: common::TuneArgs,
    #[command(flatten)]
    eval: common::EvalArgs,
    #[command(flatten)]
    data: common::DataArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    xlt_cli::init_logging();
    xlt_cli::exit::exit_code(run(Args::parse()).await)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let out = &args.study.out;
    xlt::study::check_out_dir(out)?;
    // Prepared in memory first: nothing is written if the data or the directory refuses.
    let prepared = args.data.prepare(args.study.seed)?;
    let resource_map = args.data.resource_map()?;
    // The prepared data's table is shown by the study, unless nothing is left to do.
    let backend = args.study.backend()?;
    let (options, bars) = (args.study.options(), xlt_cli::Bars::new());
    let study = xlt::study::Study::new(&backend, &options, &bars);
    let done = study
        .reproduce(
            &prepared,
            &args.tune.settings(),
            &args.eval.settings(),
            xlt_cli::interrupted(),
        )
        .await?;
    let done = match resource_map {
        // Kept in the experiment, so that every later analysis classifies the same way.
        Some(map) => {
            xlt::study::save_resource_map(out, &map)?;
            let (analysis, files) = xlt::study::analyze_experiment(out)?;
            xlt::study::Reproduced {
                analysis,
                files,
                ..done
            }
        }
        None => done,
    };
    // A baseline has no instance to count: it says what it is instead.
    let analysed = if done.analysis.grid.rows.is_empty() {
        done.analysis.what_was_analysed()
    } else {
        format!("{} instances analysed", done.analysis.grid.rows.len())
    };
    xlt_cli::outln!(
        "{analysed}; {} in {}; {} retries",
        done.files.join(", "),
        out.display(),
        backend.retries.total()
    )?;
    xlt_cli::outln!("{}", done.analysis.closing_summary())?;
    Ok(())
}
