//! Benchmark of deterministic answer extraction: responses per second on one core, for short
//! responses (what a letter-only prompt gets back) and for longer ones with reasoning.
//!
//! ```text
//! cargo run --release --example bench_grade
//! ```
//! Target: at least one million short responses per second per core.

use std::hint::black_box;
use std::time::Instant;

use clap::Parser;
use xlt::grade::extract;

/// Time deterministic answer extraction: responses per second on one thread, short and long
/// (target: one million short responses per second). Build with `--release`.
#[derive(Parser)]
struct Args {}

const SHORT: &[&str] = &[
    "A",
    "B",
    "C.",
    "D",
    "(B)",
    "**C**",
    "Answer: D",
    "Antwort: C",
    "الإجابة: ب",
    "答案：A",
    "Cevap: B",
    "תשובה: ג",
    "Jibu: D",
    "B)",
    " A\n",
    "Ｃ",
];

const LONG: &[&str] = &[
    "Let's think step by step. Mass does not change on the Moon, only weight does. Five kilograms is more than one kilogram or five pounds. The answer is C.",
    "Die Frage betrifft die Höhe des Polarsterns. Je weiter man nach Norden reist, desto höher steht er. Die richtige Antwort ist C, nicht A.",
    "A is wrong because it confuses mass and weight. B is wrong too. Wait, actually the answer is D.",
    "الإجابة الصحيحة هي ج لأن الكتلة لا تتغير على سطح القمر",
];

fn rate(responses: &[&str], target_secs: f64) -> f64 {
    let mut n: u64 = 0;
    let start = Instant::now();
    loop {
        for r in responses {
            black_box(extract(black_box(r), None));
        }
        n += responses.len() as u64;
        if start.elapsed().as_secs_f64() >= target_secs {
            break;
        }
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() -> std::process::ExitCode {
    let Args {} = Args::parse();
    xlt_cli::exit::exit_code(run())
}

fn run() -> anyhow::Result<()> {
    // Warm the phrase automaton.
    extract("Answer: A", None);
    let short = rate(SHORT, 1.0);
    let long = rate(LONG, 1.0);
    xlt_cli::outln!("short responses: {:>12.0} per second (one thread)", short)?;
    xlt_cli::outln!("long responses:  {:>12.0} per second (one thread)", long)?;
    Ok(())
}
