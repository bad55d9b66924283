//! Every example answers `--help` with its own flags, and the benchmarks run with no
//! argument on the shipped fixtures.

mod common;

use common::*;

/// `name --help` succeeds and its text has every flag of `has` and none of `lacks`.
fn check(name: &str, has: &[&str], lacks: &[&str]) {
    let out = run_example(name, &["--help"]);
    assert!(out.status.success(), "{name} --help: {}", describe(&out));
    let help = String::from_utf8_lossy(&out.stdout);
    // Whole words, so that `--batch` is not found in `--batch-size`.
    let words: Vec<&str> = help.split_whitespace().collect();
    let shows = |flag: &str| {
        words
            .iter()
            .any(|w| w.trim_matches(|c: char| c == ',' || c == '`') == flag)
    };
    for flag in has {
        assert!(shows(flag), "{name} --help lacks {flag}:\n{help}");
    }
    for flag in lacks {
        assert!(!shows(flag), "{name} --help shows {flag}:\n{help}");
    }
}

#[test]
fn each_example_shows_only_its_own_flags() {
    let tune = [
        "--train-slices",
        "--epochs",
        "--learning-rate",
        "--prices",
        "--yes",
    ];
    let eval = [
        "--grader",
        "--batch",
        "--concurrency",
        "--max-requests-per-minute",
    ];
    let data = ["--data", "--languages", "--domains", "--train-fraction"];
    check(
        "finetune",
        &[&["--out", "--provider", "--seed"][..], &tune].concat(),
        &[&eval[..], &data].concat(),
    );
    check(
        "evaluate",
        &[&["--out", "--provider", "--seed"][..], &eval].concat(),
        &[&tune[..], &data].concat(),
    );
    check("reproduce", &[&tune[..], &eval, &data].concat(), &[]);
    check("prepare", &data, &[&tune[..], &eval].concat());
    check("analyze", &["--table", "--outcomes", "--bootstrap"], &tune);
    check("grade", &["stdin"], &["--out"]);
    check("bench_grade", &["second"], &["--out"]);
    check("bench_data", &["--full", "--lite", "--repeat"], &["--out"]);
}

#[test]
fn bench_data_runs_on_the_shipped_fixtures() {
    let out = run_example("bench_data", &[]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("inputs: 9 files, 3600 rows"), "{text}");
    assert!(text.contains("total:"), "{text}");
}
