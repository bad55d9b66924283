//! Every example that writes to standard output ends quietly and successfully when nobody
//! reads it any more (`grade ... | head -1`), instead of a broken-pipe panic (exit 101) or
//! error, and after the work that comes before its output is done.

mod common;

use common::*;

/// Runs `name` into a closed pipe and checks that it ended quietly.
fn check(name: &str, args: &[&str], stdin: Option<&str>) {
    let o = run_example_into_closed_pipe(name, args, stdin);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{name}: {}", describe(&o));
    assert!(
        !err.contains("panicked") && !err.contains("error"),
        "{name}: {err}"
    );
}

#[test]
fn a_closed_stdout_ends_each_example_quietly() {
    let dir = tempfile::tempdir().unwrap();
    // More output than a pipe buffers, so that grade meets the closed pipe mid-stream.
    let responses: String = (0..5000)
        .map(|i| format!("{{\"id\":\"q{i}\",\"language\":\"en\",\"response\":\"Answer: B\"}}\n"))
        .collect();
    check("grade", &[], Some(&responses));
    let exp = dir.path().join("exp");
    check("prepare", &small_experiment(&exp, &[]), None);
    assert!(
        exp.join("manifest.json").exists(),
        "prepare wrote its files"
    );
    let exp_s = exp.to_str().unwrap();
    check("finetune", &["--out", exp_s], None);
    assert!(
        exp.join("models.json").exists(),
        "finetune wrote its models"
    );
    check("evaluate", &["--out", exp_s], None);
    check(
        "analyze",
        &[
            "--outcomes",
            exp.join("outcomes").to_str().unwrap(),
            "--out",
            exp.join("analysis").to_str().unwrap(),
        ],
        None,
    );
    assert!(
        exp.join("analysis/report.md").exists(),
        "analyze wrote its report"
    );
    check("reproduce", &small_experiment(&exp, &[]), None);
    let request =
        r#"{"id": 1, "messages": [{"role": "user", "content": "Answer with A, B, C or D."}]}"#;
    check(
        "chat",
        &["--provider", "embedded", "--out", exp_s],
        Some(&format!(
            "{request}\n{}\n",
            request.replace(r#""id": 1"#, r#""id": 2"#)
        )),
    );
}
