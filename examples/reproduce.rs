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
    common::init_logging();
    common::exit_code(run(Args::parse()).await)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let study = &args.study;
    let out = &study.out;
    // Before `was_new`: a file given as `--out` must not be removed below.
    common::check_out_dir(out)?;
    // Whether `out` is new: a run that fails before its first paid call removes what it
    // wrote there, leaving the directory as it found it.
    let was_new = std::fs::read_dir(out).map_or(true, |mut d| d.next().is_none());
    let paid = std::cell::Cell::new(false);
    let result = run_in(&args, &paid).await;
    if result.is_err() && was_new && !paid.get() {
        let _ = std::fs::remove_dir_all(out);
    }
    result
}

async fn run_in(args: &Args, paid: &std::cell::Cell<bool>) -> anyhow::Result<()> {
    let study = &args.study;
    let out = &study.out;
    // 1. Prepare in memory, and stop before writing anything if `out` holds the results of
    // other settings (the same inputs give the same files, so a rerun rewrites them
    // unchanged).
    let prepared = args.data.prepare(study.seed)?;
    let backend = study.backend()?;
    // A local model that cannot be loaded stops here, with one error naming it, before
    // anything is written.
    common::load_local_model(&backend, &study.base_model(&backend)).await?;
    let mut fingerprint = study.fingerprint(
        &backend,
        Some(&args.tune),
        Some(&args.eval),
        &prepared.manifest,
        prepared.files(),
    )?;
    // After `prepare` (or `finetune`) alone, the recorded fingerprint lacks the settings of
    // the later steps: they are recorded, and the rest compared.
    common::check_partial_fingerprint(
        out,
        &mut fingerprint,
        study.fresh,
        xlt::study::Discard::ResultsAndPreparedFiles,
    )?;
    prepared.write_to(out)?;
    let exp = xlt::study::Experiment::open(out)?;
    // 2. Plan, and confirm before any paid call.
    let plan = common::plan(study, &args.tune, Some(&args.eval), &backend, &exp).await?;
    paid.set(true);
    // 3. Fine-tune, 4. evaluate and grade.
    let bars = common::Bars::new();
    let models = common::finetune(study, &args.tune, &backend, &exp, &plan, &bars).await?;
    common::evaluate(study, &args.eval, &backend, &exp, &models, &bars).await?;
    // 5. Analyze.
    let analysis = xlt::study::analyze_outcomes(&out.join("outcomes"), &Default::default())?;
    let files = xlt::study::write_analysis(&analysis, out)?;
    let run = serde_json::json!({
        "provider": backend.name,
        "base_model": plan.base_model,
        "fine_tuned": models.fine_tuned.len(),
        "grader": args.eval.grader,
        "departures_from_study": plan.departures,
        "retries": common::retries_record(&backend),
        "fingerprint": fingerprint,
    });
    xlt::data::write_atomic(
        &out.join("run.json"),
        (serde_json::to_string_pretty(&run)? + "\n").as_bytes(),
    )?;
    common::outln!(
        "{} instances analysed; {} in {}; {} retries",
        analysis.grid.rows.len(),
        files.join(", "),
        out.display(),
        backend.retries.total()
    )?;
    Ok(())
}
