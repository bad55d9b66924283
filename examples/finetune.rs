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
    // A local model that cannot be loaded stops here, before anything is written.
    common::load_local_model(&backend, &args.base_model(&backend)).await?;
    // The fingerprint records this run's settings; a run refused before its first job (an
    // option the provider refuses, a declined plan) puts the recorded one back, so that the
    // corrected rerun is not taken for another experiment.
    let recorded = exp.dir.join(xlt::study::FINGERPRINT_FILE);
    let before = std::fs::read(&recorded).ok();
    args.check_fingerprint(&backend, Some(&tune), None, &exp)?;
    let plan = match common::plan(&args, &tune, None, &backend, &exp).await {
        Ok(plan) => plan,
        Err(e) => {
            restore(&recorded, before.as_deref())?;
            return Err(e);
        }
    };
    let bars = common::Bars::new();
    let models = common::finetune(&args, &tune, &backend, &exp, &plan, &bars).await?;
    for (slice, m) in &models.fine_tuned {
        common::outln!("{slice}\t{}", m.model)?;
    }
    Ok(())
}

/// Puts `path` back as it was: `before`'s bytes (written whole, then renamed), or no file.
fn restore(path: &std::path::Path, before: Option<&[u8]>) -> anyhow::Result<()> {
    match before {
        Some(bytes) => {
            let tmp = path.with_extension("json.tmp");
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, path)?;
        }
        None => match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        },
    }
    Ok(())
}
