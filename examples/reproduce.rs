//! The whole study in one command: prepare, plan (and confirm before paying), fine-tune,
//! evaluate, grade and analyze. With no other argument it runs offline on the shipped
//! fixtures with the embedded provider.
//!
//! ```text
//! cargo run --release --example reproduce -- --out <DIR> [--provider embedded|openai]
//!     [--base-model M] [--data PATH...] [--languages en,de] [--domains stem,medical]
//!     [--train-slices en-stem,...] [--grader regex|llm|regex+llm] [--batch]
//!     [--max-requests-per-minute N] [--concurrency N] [--seed 42] [--yes]
//! ```
//! Killing it and running the same command again finishes the study without repeating a
//! finished fine-tuning job or a cached request, with the same results.

mod common;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use xlt::data::{Domain, Language, PrepareConfig, Selection, SplitConfig};

/// Run the whole study.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    study: common::StudyArgs,
    /// Data files or directories (default: the shipped fixtures).
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
}

#[tokio::main]
async fn main() -> ExitCode {
    common::init_logging();
    common::exit_code(run(Args::parse()).await)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let study = &args.study;
    let out = &study.out;
    // 1. Prepare (the same inputs give the same files, so a rerun rewrites them unchanged).
    let languages = match &args.languages {
        Some(l) => Language::parse_list(l)?,
        None => Vec::new(),
    };
    let domains = Domain::parse_list(&args.domains)?;
    let paths = if args.data.is_empty() {
        vec![xlt::fixtures_dir().join("global-mmlu/lite")]
    } else {
        args.data.clone()
    };
    let config = PrepareConfig {
        selection: Selection {
            languages,
            domains,
            ..Selection::default()
        },
        split: SplitConfig {
            train_fraction: args.train_fraction,
            seed: study.seed,
        },
        ..PrepareConfig::default()
    };
    let prepared = xlt::data::prepare(xlt::data::load_paths(&paths)?, &config)?;
    prepared.write_to(out)?;
    let exp = xlt::study::Experiment::open(out)?;
    // 2. Plan, and confirm before any paid call.
    let backend = common::backend(study.provider, out)?;
    let plan = common::plan(study, &backend, &exp).await?;
    // 3. Fine-tune, 4. evaluate and grade.
    let bars = common::Bars::new();
    let models = common::finetune(study, &backend, &exp, &plan, &bars).await?;
    common::evaluate(study, &backend, &exp, &models, &bars).await?;
    // 5. Analyze.
    let analysis = xlt::study::analyze_outcomes(&out.join("outcomes"), &Default::default())?;
    let files = xlt::study::write_analysis(&analysis, out)?;
    let run = serde_json::json!({
        "provider": backend.name,
        "base_model": plan.base_model,
        "fine_tuned": models.fine_tuned.len(),
        "grader": study.grader,
        "departures_from_study": plan.departures,
    });
    xlt::data::write_atomic(
        &out.join("run.json"),
        (serde_json::to_string_pretty(&run)? + "\n").as_bytes(),
    )?;
    println!(
        "{} instances analysed; {} in {}",
        analysis.grid.rows.len(),
        files.join(", "),
        out.display()
    );
    Ok(())
}
