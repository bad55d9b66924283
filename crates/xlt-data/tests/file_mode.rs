//! Outputs are created with the process's umask, as any tool's output would be.

use std::path::Path;

/// A written file has the mode `File::create` gives a new file in the same directory
/// (the process's umask: 0o644 under umask 022), not `tempfile`'s 0o600.
#[cfg(unix)]
#[test]
fn written_files_get_the_umask_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    std::fs::File::create(&reference).unwrap();
    let written = dir.path().join("written");
    xlt_data::write_atomic(&written, b"{}").unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode(&written),
        mode(&reference),
        "written {:o}, File::create {:o}",
        mode(&written),
        mode(&reference)
    );
}
