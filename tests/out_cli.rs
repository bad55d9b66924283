//! `--out` that cannot be a directory is refused before anything is read or written, with a
//! message that says why: a file, a parent that is a file, a place where nothing can be
//! created.

mod common;

use std::path::Path;

use common::*;

/// Every example that takes `--out`, with the rest of its arguments.
fn examples() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        (
            "prepare",
            vec!["--languages", "en,yo", "--domains", "medical"],
        ),
        (
            "reproduce",
            vec!["--languages", "en,yo", "--domains", "medical"],
        ),
        ("finetune", vec![]),
        ("evaluate", vec![]),
        ("analyze", vec!["--table", "fixtures/paper/table1.tsv"]),
        ("chat", vec!["--provider", "embedded"]),
    ]
}

/// Runs every example with `--out out` and checks that it stops naming `message`, leaving
/// `dir` as it was.
fn check(dir: &Path, out: &Path, message: &str) {
    let before = snapshot_dir(dir);
    for (name, args) in examples() {
        let mut all = args;
        all.extend(["--out", out.to_str().unwrap()]);
        // chat reads its requests first: give it one.
        let request = r#"{"id": 1, "messages": [{"role": "user", "content": "A, B, C or D?"}]}"#;
        let o = run_example_with_stdin(name, &all, Some(request));
        assert!(!o.status.success(), "{name}: {}", describe(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(message), "{name}: {err}");
        assert!(
            snapshot_dir(dir) == before,
            "{name} changed {}",
            dir.display()
        );
    }
}

#[test]
fn out_that_is_a_file_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("results.txt");
    std::fs::write(&file, "keep me\n").unwrap();
    check(
        dir.path(),
        &file,
        &format!("--out {} is a file, not a directory", file.display()),
    );
    let under = file.join("exp");
    check(
        dir.path(),
        &under,
        &format!(
            "--out {}: {} is a file, not a directory",
            under.display(),
            file.display()
        ),
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me\n");
}

/// sysfs refuses every new file, to every user (root included), so this holds wherever the
/// tests run on Linux.
#[cfg(target_os = "linux")]
#[test]
fn out_where_nothing_can_be_created_is_refused() {
    let out = Path::new("/sys/xlt-test-out");
    let dir = tempfile::tempdir().unwrap();
    check(
        dir.path(),
        out,
        "--out /sys/xlt-test-out: cannot create it in /sys",
    );
    assert!(!out.exists());
}
