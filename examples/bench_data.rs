//! Benchmark of the data pipeline: load the full English test split (if given) and the Lite
//! languages,
//! select, de-duplicate, align, split, render and write every file; prints the time of each
//! phase and the peak memory.
//!
//! ```text
//! cargo run --release --example bench_data                  # the shipped fixtures
//! cargo run --release --example bench_data -- --full data/en.test.csv --lite data/lite
//! ```
//! Lite files of a language the full file already covers are skipped (their ids would be
//! duplicates). Target: under one second in release on two cores.

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use xlt::data::{self, PrepareConfig};

/// Time the data pipeline: load, select, de-duplicate, align, split, render and write.
/// With no argument it runs on the shipped Lite files (nine languages).
#[derive(Parser)]
struct Args {
    /// The full English test split, whose language then replaces Lite's (default: none, the
    /// shipped Lite languages alone).
    #[arg(long)]
    full: Option<PathBuf>,
    /// A directory of Lite files (default: the shipped ones).
    #[arg(long)]
    lite: Option<PathBuf>,
    /// Repetitions; the best is reported.
    #[arg(long, default_value_t = 3, value_parser = xlt_cli::parse::at_least_one::<usize>)]
    repeat: usize,
}

fn main() -> std::process::ExitCode {
    xlt_cli::exit::exit_code(run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    let lite = args
        .lite
        .unwrap_or_else(|| xlt::fixtures_dir().join("global-mmlu/lite"));
    // Without `--full`, the shipped Lite files alone (every language, English included): the
    // shipped slice of the full English split shares no sample id with them, so alignment
    // would leave nothing.
    let mut paths: Vec<PathBuf> = args.full.iter().cloned().collect();
    let full_lang = match &args.full {
        Some(full) => Some(data::language_from_path(full)?),
        None => None,
    };
    for f in data::data_files(&lite)? {
        if Some(data::language_from_path(&f)?) != full_lang {
            paths.push(f);
        }
    }
    let out = tempfile::tempdir()?;
    let mut best = [f64::INFINITY; 4];
    let mut rows = 0;
    let mut files = 0;
    for _ in 0..args.repeat {
        let t0 = Instant::now();
        let dataset = data::load_paths(&paths)?;
        rows = dataset.len();
        let t1 = Instant::now();
        let prepared = data::prepare(dataset, &PrepareConfig::default())?;
        let t2 = Instant::now();
        prepared.write_to(out.path())?;
        files = prepared.files().len();
        let t3 = Instant::now();
        let phases = [t1 - t0, t2 - t1, t3 - t2, t3 - t0].map(|d| d.as_secs_f64());
        for (b, p) in best.iter_mut().zip(phases) {
            *b = b.min(p);
        }
    }
    xlt_cli::outln!(
        "inputs: {} files, {rows} rows (full: {})",
        paths.len(),
        args.full
            .as_deref()
            .map_or_else(|| "none".to_owned(), |p| p.display().to_string())
    )?;
    xlt_cli::outln!("load:    {:8.1} ms", best[0] * 1e3)?;
    xlt_cli::outln!(
        "prepare: {:8.1} ms (select, dedup, align, split, render)",
        best[1] * 1e3
    )?;
    xlt_cli::outln!("write:   {:8.1} ms ({files} files)", best[2] * 1e3)?;
    xlt_cli::outln!(
        "total:   {:8.1} ms (best of {})",
        best[3] * 1e3,
        args.repeat
    )?;
    if let Some(kib) = peak_rss_kib() {
        xlt_cli::outln!("peak RSS: {:.1} MiB", kib as f64 / 1024.0)?;
    }
    Ok(())
}

/// Peak resident memory from /proc (Linux only).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
