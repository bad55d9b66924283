//! Numeric flags out of range are refused before anything runs, naming the flag and the
//! range: a count or a limit of 0 would hang, divide by zero or do nothing, and a learning
//! rate that is negative or not a number would train nothing useful.

mod common;

use common::*;

/// Runs `name` with `args` (and `--out` in a fresh directory where the example takes one)
/// and checks that it stopped naming `flag` and `message`, with nothing written.
fn check(name: &str, args: &[&str], flag: &str, message: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut all = args.to_vec();
    if !name.starts_with("bench") {
        all.extend(["--out", out.to_str().unwrap()]);
    }
    let o = run_example(name, &all);
    assert!(!o.status.success(), "{name} {args:?}: {}", describe(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(flag) && err.contains(message),
        "{name} {args:?}: {err}"
    );
    assert_eq!(count_files(dir.path()), 0, "{name} {args:?} wrote files");
}

#[test]
fn out_of_range_numbers_are_refused_naming_the_flag() {
    let at_least_one = "must be at least 1";
    let positive = "must be a finite number above 0";
    for (name, args, flag, message) in [
        (
            "analyze",
            &["--table", "fixtures/paper/table1.tsv", "--bootstrap", "0"][..],
            "--bootstrap",
            "must be at least 40: the 95% interval",
        ),
        (
            "analyze",
            &["--table", "fixtures/paper/table1.tsv", "--bootstrap", "39"],
            "--bootstrap",
            "at least 40",
        ),
        (
            "reproduce",
            &["--max-requests-per-minute", "0"],
            "--max-requests-per-minute",
            at_least_one,
        ),
        (
            "evaluate",
            &["--max-tokens-per-minute", "0"],
            "--max-tokens-per-minute",
            at_least_one,
        ),
        (
            "evaluate",
            &["--concurrency", "0"],
            "--concurrency",
            at_least_one,
        ),
        (
            "reproduce",
            &["--concurrency", "0"],
            "--concurrency",
            at_least_one,
        ),
        ("finetune", &["--epochs", "0"], "--epochs", at_least_one),
        (
            "finetune",
            &["--batch-size", "0"],
            "--batch-size",
            at_least_one,
        ),
        (
            "finetune",
            &["--learning-rate=-1e-5"],
            "--learning-rate",
            positive,
        ),
        (
            "finetune",
            &["--learning-rate", "NaN"],
            "--learning-rate",
            positive,
        ),
        (
            "reproduce",
            &["--learning-rate-multiplier", "inf"],
            "--learning-rate-multiplier",
            positive,
        ),
        (
            "reproduce",
            &["--poll-interval=-1"],
            "--poll-interval",
            "0 or more",
        ),
        (
            "prepare",
            &["--train-fraction", "1"],
            "--train-fraction",
            "strictly between 0 and 1",
        ),
        (
            "chat",
            &["--concurrency", "0"],
            "--concurrency",
            at_least_one,
        ),
        ("bench_throughput", &["--rpm", "0"], "--rpm", at_least_one),
        ("bench_data", &["--repeat", "0"], "--repeat", at_least_one),
    ] {
        check(name, args, flag, message);
    }
}
