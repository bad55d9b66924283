//! The `analyze` example's contract.

mod common;

use common::*;
use xlt::data::{AnswerLetter, Domain, Language};
use xlt::grade::OutcomeRecord;

#[test]
fn published_table_reports_its_ragged_rows() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = run_example(
        "analyze",
        &[
            "--out",
            out_dir.path().to_str().unwrap(),
            "--table",
            "fixtures/paper/table1.tsv",
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.path().join("summary.json")).unwrap())
            .unwrap();
    // 12 models x 27 test sets, less the one cell the `Med he` row lacks.
    assert_eq!(summary["n_instances"], 323);
    let warnings: Vec<&str> = summary["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert_eq!(warnings.len(), 3);
    assert!(warnings[0].contains("`Med he` has 26 values"));
    assert!(warnings[1].contains("`Hum en` has 28 values"));
    assert!(warnings[2].contains("`STEM en` has 28 values"));
    for key in ["in_domain", "cross_lingual", "cross_domain", "cross_both"] {
        let s = &summary["transfer_types"][key];
        assert!(s["mean"].is_number() && s["n"].is_number() && s["sd"].is_number());
        assert_eq!(s["ci95_cluster"].as_array().unwrap().len(), 2);
        assert_eq!(s["ci95_bootstrap"].as_array().unwrap().len(), 2);
        assert_eq!(s["ci95_independent_t"].as_array().unwrap().len(), 2);
    }
    let n: u64 = ["in_domain", "cross_lingual", "cross_domain", "cross_both"]
        .iter()
        .map(|k| summary["transfer_types"][k]["n"].as_u64().unwrap())
        .sum();
    assert_eq!(n, 323);
    // 12 in-domain instances, one per model.
    assert_eq!(summary["transfer_types"]["in_domain"]["n"], 12);
    for key in ["downward", "upward", "lateral", "same_language"] {
        assert!(summary["resource_directions"][key]["mean"].is_number());
    }
    assert!(
        summary["resource_levels"]["high->low"]["n"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(
        summary["domain_matrix"]["STEM->Medical"]["n"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(summary["language_matrix"]["tr->ig"]["n"].as_u64().unwrap() > 0);
    let report = std::fs::read_to_string(out_dir.path().join("report.md")).unwrap();
    assert!(report.contains("Reading policy: Cells align with the header from the left"));
    assert!(report.contains("row `Med he` has 26 values"));
    // The study's table: its published figures beside ours, and the regression.
    assert!(report.contains("## The published figures beside ours"));
    assert_eq!(
        summary["published_comparison"].as_array().unwrap().len(),
        14
    );
    assert!(summary["regression"]["fit"]["coefficients"].is_array());
    let grid = std::fs::read_to_string(out_dir.path().join("grid.csv")).unwrap();
    assert_eq!(grid.lines().count(), 324);
    for svg in ["accuracy", "gain", "domain_transfer", "language_transfer"] {
        let text = std::fs::read_to_string(out_dir.path().join(format!("{svg}.svg"))).unwrap();
        assert!(text.starts_with("<svg"), "{svg}");
    }
}

fn rec(id: usize, lang: Language, correct: bool) -> OutcomeRecord {
    OutcomeRecord {
        sample_id: format!("anatomy/test/{id}"),
        language: lang,
        domain: Domain::Stem,
        model: "m".into(),
        response: "B".into(),
        letter: Some(AnswerLetter::B),
        method: "bare".into(),
        answer: if correct {
            AnswerLetter::B
        } else {
            AnswerLetter::C
        },
        correct,
        finish_reason: Some("stop".into()),
        letters: None,
    }
}

#[test]
fn outcomes_directory_gives_significance() {
    let dir = tempfile::tempdir().unwrap();
    let outcomes = dir.path().join("outcomes");
    std::fs::create_dir_all(&outcomes).unwrap();
    let mut base = Vec::new();
    let mut tuned = Vec::new();
    for lang in [Language::English, Language::Yoruba] {
        for i in 0..40 {
            base.push(rec(i, lang, i < 16));
            tuned.push(rec(i, lang, i < 34));
        }
    }
    std::fs::write(outcomes.join("base.jsonl"), xlt::grade::to_jsonl(&base)).unwrap();
    std::fs::write(outcomes.join("en-stem.jsonl"), xlt::grade::to_jsonl(&tuned)).unwrap();
    let out_dir = dir.path().join("analysis");
    let out = run_example(
        "analyze",
        &[
            "--out",
            out_dir.to_str().unwrap(),
            "--outcomes",
            outcomes.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["n_instances"], 2);
    // b = 0, c = 18 on each test set: p = 2^-17, far below any correction.
    assert_eq!(summary["significance"]["gains_surviving_holm"], 2);
    assert!(summary["transfer_types"]["in_domain"]["ci95_bootstrap"].is_array());
    assert_eq!(summary["pairs"].as_array().unwrap().len(), 2);
    assert_eq!(summary["test_set_sizes"]["STEM en"], 40);
    let report = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(!report.contains("Reading policy"));
    assert!(report.contains("## Power"));
}

#[test]
fn bad_inputs_fail_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.tsv");
    std::fs::write(&bad, "Model\tHum en\nBase\tzero\n").unwrap();
    let out_dir = dir.path().join("analysis");
    let out = run_example(
        "analyze",
        &[
            "--out",
            out_dir.to_str().unwrap(),
            "--table",
            bad.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.tsv") && err.contains("line 2"), "{err}");
    assert!(!out_dir.exists());

    let outcomes = dir.path().join("outcomes");
    std::fs::create_dir_all(&outcomes).unwrap();
    std::fs::write(outcomes.join("base.jsonl"), "{\"sample_id\": 1}\n").unwrap();
    let out = run_example(
        "analyze",
        &[
            "--out",
            out_dir.to_str().unwrap(),
            "--outcomes",
            outcomes.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("base.jsonl: line 1"));
    assert!(!out_dir.exists());

    // Neither input given: usage error.
    let out = run_example("analyze", &["--out", out_dir.to_str().unwrap()]);
    assert!(!out.status.success());
}
