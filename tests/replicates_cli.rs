//! `reproduce --replicates N` offline on the embedded provider (issue #24): N models per
//! slice labelled `<slice>#<k>` with distinct derived seeds, a report with the replicate
//! section, a kill mid-run resumed without a duplicate job, and a rerun with another N
//! stopped by the fingerprint.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::*;

fn args<'a>(out: &'a Path, replicates: &'a str) -> Vec<&'a str> {
    vec![
        "--out",
        out.to_str().unwrap(),
        "--languages",
        "en,yo",
        "--domains",
        "stem,medical",
        "--replicates",
        replicates,
    ]
}

/// The seeds of every job the embedded provider created, by suffix. A `.xlt-tmp-*` file is
/// a write a kill interrupted (never renamed into place, swept by a later run once a minute
/// old), not a job.
fn job_seeds(out: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = std::fs::read_dir(out.join("embedded/jobs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            !p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".xlt-tmp-")
        })
        .map(|p| {
            let job = read_json(&p);
            (
                job["spec"]["suffix"].as_str().unwrap().to_owned(),
                job["spec"]["seed"].as_u64().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn replicates_resume_after_a_kill_without_a_duplicate_job() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    let o = run_example("reproduce", &args(&a, "3"));
    assert!(o.status.success(), "{}", describe(&o));

    // Three models per slice, labelled <slice>#1..3, each evaluated.
    let models = read_json(&a.join("models.json"));
    let labels: BTreeSet<String> = models["fine_tuned"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let expected: BTreeSet<String> = ["en-medical", "en-stem", "yo-medical", "yo-stem"]
        .iter()
        .flat_map(|s| (1..=3).map(move |k| format!("{s}#{k}")))
        .collect();
    assert_eq!(labels, expected);
    for l in &expected {
        assert!(a.join(format!("outcomes/{l}.jsonl")).is_file(), "{l}");
    }
    // Each job its own seed: replicate 1 the run's (42), the others derived and distinct.
    let seeds = job_seeds(&a);
    println!("{seeds:?}");
    assert_eq!(seeds.len(), 12);
    assert!(
        seeds
            .iter()
            .filter(|(s, _)| !s.contains("-r"))
            .all(|(_, seed)| *seed == 42)
    );
    let distinct: BTreeSet<u64> = seeds.iter().map(|(_, s)| *s).collect();
    assert_eq!(distinct.len(), 1 + 8, "42 for replicate 1, 8 derived seeds");
    // Plan, run.json and the analysis count them.
    let plan = read_json(&a.join("plan.json"));
    assert_eq!(plan["jobs"].as_array().unwrap().len(), 12);
    let run = read_json(&a.join("run.json"));
    assert_eq!(
        (run["fine_tuned"].as_u64(), run["replicates"].as_u64()),
        (Some(12), Some(3))
    );
    assert_eq!(run["fingerprint"]["settings"]["replicates"], "3");
    let summary = read_json(&a.join("summary.json"));
    let reps = &summary["replicates"];
    assert_eq!(reps["estimable"], true, "{reps}");
    assert_eq!(reps["max_replicates"], 3);
    assert!(
        reps["decomposition"]["result"]["components"].is_array(),
        "{reps}"
    );
    let noise = reps["gain_noise"]["groups"].as_array().unwrap();
    assert!(!noise.is_empty(), "{reps}");
    // The replicates differ: some slice's accuracy spreads across them.
    let spread = reps["spread"].as_array().unwrap();
    let max_sd = spread
        .iter()
        .filter_map(|s| s["sd_accuracy"].as_f64())
        .fold(0.0, f64::max);
    println!("largest between-replicate sd: {max_sd} pp");
    assert!(
        max_sd > 0.0,
        "replicates gave identical accuracies everywhere"
    );
    let report = std::fs::read_to_string(a.join("report.md")).unwrap();
    assert!(report.contains("## Fine-tuning noise (seed replicates)"));
    assert!(report.contains("### Variance decomposition of the gains"));
    assert!(
        report.contains("| transfer types | cross-lingual |"),
        "{report}"
    );

    // Killed during fine-tuning and during evaluation, then resumed: the same files, and no
    // job created twice.
    let b_args = args(&b, "3");
    kill_twice_then_resume(&b_args, &b, 100);
    assert_same_files(
        &a,
        &b,
        &[
            "models.json",
            "summary.json",
            "report.md",
            "grid.csv",
            "outcomes/en-stem#2.jsonl",
            "outcomes/yo-medical#3.jsonl",
        ],
    );
    let ledger = read_json(&b.join("ledger.json"));
    assert_eq!(ledger["jobs"].as_object().unwrap().len(), 12);
    assert_eq!(
        job_seeds(&b),
        seeds,
        "the provider holds one job per replicate"
    );
}

#[test]
fn a_rerun_with_another_replicate_count_stops_on_the_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("study");
    let run = |n: &'static str| {
        let a = small_experiment(&out, &["--replicates", n]);
        run_example("reproduce", &a)
    };
    let o = run("2");
    assert!(o.status.success(), "{}", describe(&o));
    let before = snapshot_dir(&out);
    assert_stopped_for_change(&run("3"), "replicates: 2 -> 3");
    assert_stopped_for_change(&run("1"), "replicates: 2 -> 1");
    assert!(
        snapshot_dir(&out) == before,
        "the refused run changed files"
    );
    // `finetune` alone checks it too.
    let o = run_example(
        "finetune",
        &["--out", out.to_str().unwrap(), "--replicates", "4"],
    );
    assert_stopped_for_change(&o, "replicates: 2 -> 4");
    // One fine-tune per slice: the report says the noise cannot be estimated, in one line.
    let single = dir.path().join("single");
    let o = run_example("reproduce", &small_experiment(&single, &[]));
    assert!(o.status.success(), "{}", describe(&o));
    let report = std::fs::read_to_string(single.join("report.md")).unwrap();
    assert!(report.contains(
        "One fine-tune per slice: replicate (fine-tuning seed) noise cannot be estimated"
    ));
    assert_eq!(
        read_json(&single.join("summary.json"))["replicates"]["estimable"],
        false
    );
    assert!(
        single.join("outcomes/en-medical.jsonl").is_file(),
        "N = 1 keeps the slice labels"
    );
}

/// A baseline study (`--train-slices none`) fine-tunes nothing: `--replicates 3` with it is
/// refused naming both flags, before anything is written.
#[test]
fn replicates_of_a_baseline_study_are_refused_naming_both_flags() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("study");
    let a = small_experiment(&out, &["--replicates", "3", "--train-slices", "none"]);
    let o = run_example("reproduce", &a);
    assert!(!o.status.success(), "{}", describe(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--replicates 3") && err.contains("--train-slices none"),
        "{err}"
    );
    assert!(!out.exists(), "the refused run left {}", out.display());
}
