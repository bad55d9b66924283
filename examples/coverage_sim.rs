//! The coverage simulation behind the report's primary interval (issue #24): simulated
//! studies at the study's sizes (12 slices, 27 test sets, 11-500 questions per test set) with
//! zero true transfer, with and without replicates; prints each interval method's coverage of
//! 0 per transfer type, and the method the rule chooses (`xlt::stats::choose_primary`).
//! Sequential and seeded. `docs/STATISTICS.md` records a run.
//!
//! ```text
//! cargo run --example coverage_sim -- --studies 2000 --resamples 999
//! ```

use clap::Parser;
use xlt::stats::{CoverageConfig, choose_primary, coverage_tolerance, simulate_coverage};

/// Coverage of the report's interval methods at the study's sizes.
#[derive(Parser)]
struct Args {
    /// Simulated studies per setting.
    #[arg(long, default_value_t = 2000)]
    studies: usize,
    /// Resamples of the two bootstraps.
    #[arg(long, default_value_t = 999)]
    resamples: usize,
    /// Seed.
    #[arg(long, default_value_t = CoverageConfig::default().seed)]
    seed: u64,
    /// Fine-tunes per slice in the replicated setting.
    #[arg(long, default_value_t = 3)]
    replicates: usize,
}

fn main() {
    let args = Args::parse();
    let mut rows = Vec::new();
    for replicates in [1, args.replicates] {
        let config = CoverageConfig {
            studies: args.studies,
            resamples: args.resamples,
            seed: args.seed,
            replicates,
            ..CoverageConfig::default()
        };
        rows.extend(simulate_coverage(&config));
    }
    println!(
        "{} studies per setting, {} resamples, seed {}; tolerance ±{:.1} points\n",
        args.studies,
        args.resamples,
        args.seed,
        100.0 * coverage_tolerance(args.studies)
    );
    println!("| replicates | group | method | coverage (%) | computed | mean width (pp) |");
    println!("|---:|---|---|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.1} | {} | {:.2} |",
            r.replicates,
            r.group.key(),
            r.method.label(),
            100.0 * r.coverage,
            r.computed,
            r.mean_width
        );
    }
    println!("\nprimary: {}", choose_primary(&rows, args.studies).label());
}
