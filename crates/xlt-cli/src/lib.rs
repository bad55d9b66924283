//! The reusable parts of a command-line front end over [`xlt_study`], shared by the
//! workspace's example programs as candle shares its examples' helpers through
//! `candle-examples`: everything a program needs that is neither a flag of its own nor the
//! study itself.
//!
//! - [`parse`]: `value_parser`s for numbers with a range (`--epochs`, `--learning-rate`,
//!   `--train-fraction`) and [`parse::provider`], the registry's providers as `--provider`'s
//!   possible values.
//! - [`exit`]: the exit code of a program ([`exit::exit_code`]: 130 after Ctrl-C or SIGTERM,
//!   success when standard output was closed by its reader, as in ripgrep) and results
//!   written to standard output that stop quietly when the reader goes ([`outln!`]).
//! - [`Bars`]: the study's progress ([`xlt_study::Observer`]) as indicatif bars on a
//!   terminal, and as [`xlt_study::ProgressLines`] (plain lines at a bounded rate, no escape
//!   codes) without one.
//! - [`interrupted`]: Ctrl-C or SIGTERM as the cancel future a [`xlt_study::Study`] takes.
//! - [`init_logging`]: `tracing` to stderr, filtered by `RUST_LOG`.
//!
//! ```no_run
//! async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//!     xlt_cli::outln!("{}", "a result line")?;
//!     Ok(())
//! }
//!
//! #[tokio::main]
//! async fn main() -> std::process::ExitCode {
//!     xlt_cli::init_logging();
//!     xlt_cli::exit::exit_code(run().await)
//! }
//! ```

pub mod exit;
pub mod parse;
mod progress;

use std::io::IsTerminal;

pub use progress::Bars;

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM, with what happened
/// (`"interrupted (Ctrl-C)"`, `"terminated (SIGTERM)"`): the cancel future a study takes
/// ([`xlt_study::Study::reproduce`] and the other steps stop at their next safe point and mark
/// what they stopped, [`xlt_study::StudyError::Interrupted`]).
pub async fn interrupted() -> String {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            return tokio::select! {
                _ = tokio::signal::ctrl_c() => "interrupted (Ctrl-C)",
                _ = term.recv() => "terminated (SIGTERM)",
            }
            .to_owned();
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    "interrupted (Ctrl-C)".to_owned()
}

/// Logs to stderr, filtered by `RUST_LOG` (default: warnings); colours only on a terminal,
/// so that a log file gets no escape codes. A second call does nothing.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}
