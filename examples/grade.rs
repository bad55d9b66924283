//! Grades responses: JSON Lines on stdin, one line per input on stdout, in input order.
//!
//! Input: `{"id": "...", "language": "xx", "response": "...", "options": ["..", "..", "..", ".."]}`
//! (options optional). Output: `{"id": "...", "letter": "A" | "B" | "C" | "D" | null, "method": "..."}`.
//! Unparseable responses are not an error (exit 0); a malformed input line is (non-zero exit,
//! with its line number).
//!
//! ```text
//! echo '{"id":"1","language":"de","response":"Antwort: C"}' | cargo run --example grade
//! ```

use std::io::{BufRead, BufWriter, Write};
use std::process::ExitCode;

use clap::Parser;
use xlt::grade::{GradeRequest, RuleExtractor};

/// Grade responses: JSON Lines `{"id", "language", "response", "options"?}` on stdin, one
/// `{"id", "letter", "method"}` line per input on stdout, in input order, as the lines come.
/// An unparseable response is not an error (its letter is null); a malformed input line is:
/// the lines before it are written, then the run stops naming its line number.
#[derive(Parser)]
#[command(
    after_help = "Example: echo '{\"id\":\"1\",\"language\":\"de\",\"response\":\"Antwort: C\"}' | cargo run --example grade"
)]
struct Args {}

fn main() -> ExitCode {
    let Args {} = Args::parse();
    xlt_cli::exit::exit_code(run())
}

fn run() -> anyhow::Result<()> {
    let stdin = std::io::stdin().lock();
    // A reader that stops early (`| head`) ends the run quietly (see `xlt_cli::exit::exit_code`).
    let mut out = BufWriter::new(xlt_cli::exit::stdout());
    for (i, line) in stdin.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let request = GradeRequest::parse(&line, "stdin", i + 1)?;
        // Serialized first: serde_json would hide the closed stdout inside its own error.
        let graded = serde_json::to_string(&request.grade(&RuleExtractor))?;
        writeln!(out, "{graded}")?;
    }
    out.flush()?;
    Ok(())
}
