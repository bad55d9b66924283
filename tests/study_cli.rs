//! The study's command-line steps over the library: the stale-results sequence of issue
//! #21, `analyze` into an experiment (#26), and progress without a terminal.

mod common;

use common::*;

/// `prepare -> finetune -> evaluate --base-model other [--fresh]` cannot leave outcomes that
/// disagree with `fingerprint.json` and `models.json`, nor discard the fine-tuned models:
/// a base model other than the one they were tuned from is refused first.
#[test]
fn evaluate_with_another_base_model_leaves_nothing_stale() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("d");
    let o = run_example("prepare", &small_experiment(&out, &[]));
    assert!(o.status.success(), "{}", describe(&o));
    let d = out.to_str().unwrap();
    let o = run_example("finetune", &["--out", d, "--yes"]);
    assert!(o.status.success(), "{}", describe(&o));
    for fresh in [false, true] {
        let mut args = vec!["--out", d, "--base-model", "some-other-model"];
        args.extend(fresh.then_some("--fresh"));
        let o = run_example("evaluate", &args);
        assert!(!o.status.success(), "{}", describe(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("fine-tuned from xlt-embedded-base") && err.contains("some-other-model"),
            "fresh {fresh}: {err}"
        );
        assert!(
            out.join("models.json").exists(),
            "fresh {fresh}: models.json"
        );
        assert!(!out.join("outcomes").exists(), "{}", describe(&o));
    }
    let fp = read_json(&out.join("fingerprint.json"));
    if out.join("models.json").exists() {
        let models = read_json(&out.join("models.json"));
        assert_eq!(
            models["base_model"], fp["settings"]["base_model"],
            "models.json and fingerprint.json disagree"
        );
    }
    // Without --base-model, evaluate takes the recorded one: no model repeated.
    let o = run_example(
        "finetune",
        &[
            "--out",
            d,
            "--yes",
            "--base-model",
            "xlt-embedded-base",
            "--fresh",
        ],
    );
    assert!(o.status.success(), "{}", describe(&o));
    let o = run_example("evaluate", &["--out", d, "--grader", "regex"]);
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(count_files(&out.join("outcomes")), 3);
}

/// `analyze` of other outcomes into an experiment is refused, with or without `--fresh`, by
/// a message that says one thing: write to another `--out` (never "pass --fresh", which
/// would be refused too).
fn assert_refused_into_an_experiment(o: &std::process::Output) {
    assert!(!o.status.success(), "{}", describe(o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("holds an experiment"), "{err}");
    assert!(err.contains("to another --out"), "{err}");
    assert!(!err.contains("pass --fresh"), "contradicts itself: {err}");
    assert!(
        !err.contains("different experiment"),
        "contradicts itself: {err}"
    );
}

/// `analyze` cannot replace a finished study's analysis with another experiment's:
/// refused naming what differs, written with `--fresh`; `--outcomes <exp>/outcomes`
/// without `--out` writes into that experiment; loose outcomes need `--out`. The progress
/// written to a file (not a terminal) has no escape codes.
#[test]
fn analyze_into_an_experiment_checks_what_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("study");
    let o = run_example("reproduce", &small_experiment(&out, &["--grader", "regex"]));
    assert!(o.status.success(), "{}", describe(&o));
    assert!(!o.stderr.contains(&0x1b), "escape codes:\n{}", describe(&o));
    // A rerun with nothing left to do says so in one line, without the plan.
    let again = run_example("reproduce", &small_experiment(&out, &["--grader", "regex"]));
    assert!(again.status.success(), "{}", describe(&again));
    let err = String::from_utf8_lossy(&again.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.len() == 1 && lines[0].contains("nothing left to do"),
        "not one line:\n{err}"
    );
    assert!(
        !err.contains("fine-tuning jobs") && !err.contains("train tokens"),
        "{err}"
    );
    let report = std::fs::read(out.join("report.md")).unwrap();
    let d = out.to_str().unwrap();
    let other = root().join("fixtures/stats/outcomes");
    let other = other.to_str().unwrap();
    let o = run_example("analyze", &["--out", d, "--outcomes", other]);
    assert_refused_into_an_experiment(&o);
    assert_eq!(std::fs::read(out.join("report.md")).unwrap(), report);
    // Its own outcomes, no --out: into the experiment.
    let own = out.join("outcomes");
    let o = run_example("analyze", &["--outcomes", own.to_str().unwrap()]);
    assert!(o.status.success(), "{}", describe(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(d),
        "{}",
        describe(&o)
    );
    // Loose outcomes, no --out: refused, nothing written beside them.
    let o = run_example("analyze", &["--outcomes", other]);
    assert!(!o.status.success(), "{}", describe(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--out is required"));
    assert!(!root().join("fixtures/stats/outcomes/report.md").exists());
    // --fresh does not remove an experiment's results, nor replace its analysis with
    // another experiment's: refused, nothing touched.
    let before = snapshot_dir(&out);
    let o = run_example("analyze", &["--out", d, "--outcomes", other, "--fresh"]);
    assert_refused_into_an_experiment(&o);
    assert!(
        snapshot_dir(&out) == before,
        "analyze --fresh changed the experiment"
    );
    // In a directory holding only an analysis, --fresh replaces the analysis files and
    // nothing else.
    let only = dir.path().join("analysis");
    let a = only.to_str().unwrap();
    let own = own.to_str().unwrap();
    let o = run_example("analyze", &["--out", a, "--outcomes", own]);
    assert!(o.status.success(), "{}", describe(&o));
    let first = std::fs::read(only.join("report.md")).unwrap();
    std::fs::write(only.join("notes.txt"), "mine").unwrap();
    let o = run_example("analyze", &["--out", a, "--outcomes", other]);
    assert_stopped_for_change(&o, "analyzed");
    let o = run_example("analyze", &["--out", a, "--outcomes", other, "--fresh"]);
    assert!(o.status.success(), "{}", describe(&o));
    assert_ne!(std::fs::read(only.join("report.md")).unwrap(), first);
    assert_eq!(
        std::fs::read_to_string(only.join("notes.txt")).unwrap(),
        "mine"
    );
}

/// `--fresh` leaves the directory as a clean run would find it, in every command: results,
/// analysis, the job ledger and the provider's state go; the response cache, endpoints
/// still to stop and (for steps after `prepare`) the prepared files stay. The report's
/// date is the day the experiment was prepared, recorded once in `fingerprint.json`.
#[test]
fn fresh_means_a_clean_run_and_the_report_keeps_the_prepared_day() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("study");
    let d = out.to_str().unwrap();
    let o = run_example("reproduce", &small_experiment(&out, &["--grader", "regex"]));
    assert!(o.status.success(), "{}", describe(&o));
    for kept in ["ledger.json", "embedded", "cache"] {
        assert!(out.join(kept).exists(), "{kept} missing after a run");
    }
    // The recorded day is the report's, whatever day the outcomes were written.
    let fp_path = out.join("fingerprint.json");
    let mut fp = read_json(&fp_path);
    assert!(fp["prepared_on"].is_string(), "{fp}");
    fp["prepared_on"] = "2001-02-03".into();
    std::fs::write(&fp_path, serde_json::to_string_pretty(&fp).unwrap()).unwrap();
    let o = run_example(
        "analyze",
        &["--outcomes", out.join("outcomes").to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", describe(&o));
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("| date | 2001-02-03 |"), "{report}");
    // A resumed run keeps the day.
    let o = run_example("reproduce", &small_experiment(&out, &["--grader", "regex"]));
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(read_json(&fp_path)["prepared_on"], "2001-02-03");
    // evaluate --fresh with another grader: models, ledger and provider state go with the
    // outcomes and analysis; the cache and the prepared files stay.
    std::fs::write(out.join("endpoints.json"), "{}").unwrap();
    let o = run_example(
        "evaluate",
        &["--out", d, "--grader", "regex+llm", "--fresh"],
    );
    assert!(
        !o.status.success(),
        "the discarded models cannot be evaluated: {}",
        describe(&o)
    );
    for gone in [
        "models.json",
        "outcomes",
        "ledger.json",
        "embedded",
        "report.md",
        "summary.json",
        "grid.csv",
        "plan.json",
    ] {
        assert!(
            !out.join(gone).exists(),
            "{gone} survived --fresh: {}",
            describe(&o)
        );
    }
    for kept in [
        "cache",
        "endpoints.json",
        "manifest.json",
        "finetune",
        "eval",
    ] {
        assert!(out.join(kept).exists(), "{kept} was removed by --fresh");
    }
    assert_ne!(read_json(&fp_path)["prepared_on"], "2001-02-03");
}

/// The embedded provider refuses what it cannot use: a device, an absolute learning rate.
#[test]
fn the_embedded_provider_refuses_a_device_and_an_absolute_learning_rate() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("study");
    for (extra, says) in [
        (&["--device", "cuda:0"][..], "--device cuda:0"),
        (
            &["--learning-rate", "1e-4"][..],
            "takes a learning-rate multiplier",
        ),
    ] {
        let o = run_example("reproduce", &small_experiment(&out, extra));
        assert!(!o.status.success(), "{}", describe(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(says), "{err}");
        assert!(!out.exists(), "{extra:?}: the new directory is removed");
    }
}
