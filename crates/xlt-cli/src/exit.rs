//! How a program ends: its exit code, and results on standard output that end the program
//! quietly when their reader has gone (`| head -1`), as ripgrep does.

use std::error::Error;
use std::fmt::Display;
use std::io::Write;
use std::ops::Deref;
use std::process::ExitCode;

/// The exit of a program: success; success when standard output was closed by its reader
/// ([`StdoutClosed`] anywhere in the error's chain); 130 (128 + SIGINT, as a shell reports a
/// process a signal ended) after printing the error when the study was interrupted
/// ([`xlt_study::StudyError::Interrupted`]: Ctrl-C or SIGTERM); 1 after printing the error
/// otherwise. Errors are printed to stderr as `error: ` and their `{:#}` form (anyhow's
/// chain, `a: b: c`).
///
/// `E` is any error that dereferences to a `dyn Error` (`anyhow::Error`,
/// `Box<dyn Error + Send + Sync>`).
pub fn exit_code<E>(result: Result<(), E>) -> ExitCode
where
    E: Deref<Target = dyn Error + Send + Sync + 'static> + Display,
{
    let Err(e) = result else {
        return ExitCode::SUCCESS;
    };
    let outer: &(dyn Error + 'static) = &*e;
    let chain = || chain(outer);
    if chain().any(is_stdout_closed) {
        return ExitCode::SUCCESS;
    }
    eprintln!("error: {e:#}");
    let interrupted = chain().any(|c| {
        matches!(
            c.downcast_ref(),
            Some(xlt_study::StudyError::Interrupted(_))
        )
    });
    if interrupted {
        ExitCode::from(130)
    } else {
        ExitCode::FAILURE
    }
}

/// `e` and its sources, outermost first.
fn chain<'a>(e: &'a (dyn Error + 'static)) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(e), |e| (*e).source())
}

/// A write to standard output failed because nobody reads it any more (`EPIPE`); carried
/// inside an `io::Error` of kind `BrokenPipe`, so that only a broken stdout, not a broken
/// connection to a provider, ends a program quietly.
#[derive(Debug)]
pub struct StdoutClosed;

impl Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl Error for StdoutClosed {}

fn is_stdout_closed(e: &(dyn Error + 'static)) -> bool {
    e.is::<StdoutClosed>()
        || e.downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| inner.is::<StdoutClosed>())
}

/// Standard output for results: a write the reader no longer takes is an error carrying
/// [`StdoutClosed`], not a panic (as `println!` would).
pub struct Stdout(std::io::Stdout);

/// Standard output, for results (see [`Stdout`]).
pub fn stdout() -> Stdout {
    Stdout(std::io::stdout())
}

fn mark_closed(e: std::io::Error) -> std::io::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::io::Error::new(std::io::ErrorKind::BrokenPipe, StdoutClosed)
    } else {
        e
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).map_err(mark_closed)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush().map_err(mark_closed)
    }
}

/// Writes `args` and a newline to [`stdout`] and flushes (what [`crate::outln!`] calls).
///
/// # Errors
/// The write's error; [`StdoutClosed`] inside it when the reader has gone.
pub fn print_line(args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    let mut out = stdout();
    out.write_fmt(args)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// `println!` for results, returning the write's `io::Result`: `xlt_cli::outln!("{x}")?`,
/// and [`exit_code`] ends the program quietly when standard output was closed.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::exit::print_line(format_args!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    type BoxError = Box<dyn Error + Send + Sync>;

    #[test]
    fn exit_codes_by_error() {
        let code = |r: Result<(), BoxError>| format!("{:?}", exit_code(r));
        let closed: BoxError =
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, StdoutClosed).into();
        let other_pipe: BoxError = std::io::Error::from(std::io::ErrorKind::BrokenPipe).into();
        let interrupted: BoxError =
            xlt_study::StudyError::Interrupted("interrupted (Ctrl-C)".into()).into();
        assert_eq!(code(Ok(())), format!("{:?}", ExitCode::SUCCESS));
        assert_eq!(code(Err(closed)), format!("{:?}", ExitCode::SUCCESS));
        // A broken pipe to anything but stdout (a provider's connection) is a failure.
        assert_eq!(code(Err(other_pipe)), format!("{:?}", ExitCode::FAILURE));
        assert_eq!(code(Err(interrupted)), format!("{:?}", ExitCode::from(130)));
    }
}
