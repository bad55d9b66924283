//! The process's peak memory per phase of a study, for the log: the resident set's
//! high-water mark (`VmHWM` in `/proc/self/status`), reset between phases by writing `5`
//! to `/proc/self/clear_refs` (Linux 4.0 and later; see `proc(5)`). Elsewhere, or where
//! `/proc` cannot be written, nothing is logged.

/// Resets the process's peak resident set to its current size, so that the next
/// [`log_peak`] covers only what ran in between.
pub(crate) fn reset_peak() {
    #[cfg(target_os = "linux")]
    {
        let _ = std::fs::write("/proc/self/clear_refs", "5");
    }
}

/// The process's peak resident set since it started or since the last [`reset_peak`], in
/// bytes; `None` where `/proc/self/status` is not there.
pub(crate) fn peak_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Logs (at `info`, target `xlt_study::memory`) the peak resident set of the phase that
/// just ended, then resets it for the next one.
pub(crate) fn log_peak(phase: &str) {
    if let Some(bytes) = peak_bytes() {
        tracing::info!(
            target: "xlt_study::memory",
            phase,
            peak_mib = bytes / (1024 * 1024),
            "peak resident memory of the phase"
        );
    }
    reset_peak();
}
