//! Benchmark of the data pipeline: load the full English test split and the Lite languages,
//! select, de-duplicate, align, split, render and write every file; prints the time of each
//! phase and the peak memory.
//!
//! ```text
//! cargo run --release --example bench_data -- \
//!     --full ../shared/data/global-mmlu/full/en.test.csv --lite ../shared/data/global-mmlu/lite
//! ```
//! Lite files of a language the full file already covers are skipped (their ids would be
//! duplicates). Target: under one second in release on two cores.

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use xlt::data::{self, PrepareConfig};

/// Time the data pipeline.
#[derive(Parser)]
struct Args {
    /// The full English test split (default: the shipped slice of it).
    #[arg(long)]
    full: Option<PathBuf>,
    /// A directory of Lite files (default: the shipped ones).
    #[arg(long)]
    lite: Option<PathBuf>,
    /// Repetitions; the best is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let fixtures = xlt::fixtures_dir().join("global-mmlu");
    let full = args
        .full
        .unwrap_or_else(|| fixtures.join("full/en.test-slice.csv"));
    let lite = args.lite.unwrap_or_else(|| fixtures.join("lite"));
    let full_lang = data::language_from_path(&full)?;
    let mut paths = vec![full.clone()];
    for f in data::data_files(&lite)? {
        if data::language_from_path(&f)? != full_lang {
            paths.push(f);
        }
    }
    let out = tempfile::tempdir()?;
    let mut best = [f64::INFINITY; 4];
    let mut rows = 0;
    let mut files = 0;
    for _ in 0..args.repeat.max(1) {
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
    println!(
        "inputs: {} files, {rows} rows (full: {})",
        paths.len(),
        full.display()
    );
    println!("load:    {:8.1} ms", best[0] * 1e3);
    println!(
        "prepare: {:8.1} ms (select, dedup, align, split, render)",
        best[1] * 1e3
    );
    println!("write:   {:8.1} ms ({files} files)", best[2] * 1e3);
    println!(
        "total:   {:8.1} ms (best of {})",
        best[3] * 1e3,
        args.repeat.max(1)
    );
    if let Some(kib) = peak_rss_kib() {
        println!("peak RSS: {:.1} MiB", kib as f64 / 1024.0);
    }
    Ok(())
}

/// Peak resident memory from /proc (Linux only).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
