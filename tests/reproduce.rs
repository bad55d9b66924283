//! `reproduce` end to end: offline on the embedded provider, against a wiremock OpenAI built
//! from the recorded exchanges, and killed mid-run then resumed.

mod common;

use std::path::Path;

use common::*;
use wiremock::MockServer;
use xlt_openai::testing::{TEST_KEY, exchange, mount};

fn lines(p: &Path) -> usize {
    std::fs::read_to_string(p).unwrap().lines().count()
}

#[test]
fn offline_run_writes_every_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("study");
    let o = run_example("reproduce", &small_experiment(&out, &[]));
    assert!(o.status.success(), "{}", describe(&o));
    // What prepare writes.
    let manifest = read_json(&out.join("manifest.json"));
    assert_eq!(manifest["slices"].as_array().unwrap().len(), 2);
    assert!(out.join("finetune/en-medical.jsonl").exists());
    // models.json: one model per training slice.
    let models = read_json(&out.join("models.json"));
    assert_eq!(models["provider"], "embedded");
    assert_eq!(models["base_model"], "xlt-embedded-base");
    let tuned = models["fine_tuned"].as_object().unwrap();
    assert_eq!(tuned.len(), 2);
    assert!(
        tuned["en-medical"]["model"]
            .as_str()
            .unwrap()
            .starts_with("ft:")
    );
    // outcomes: base and each tuned model on both test sets (11 Medical test questions each).
    for label in ["base", "en-medical", "yo-medical"] {
        assert_eq!(
            lines(&out.join(format!("outcomes/{label}.jsonl"))),
            22,
            "{label}"
        );
    }
    // What analyze writes.
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["n_instances"], 4);
    assert_eq!(summary["transfer_types"]["in_domain"]["n"], 2);
    assert_eq!(summary["transfer_types"]["cross_lingual"]["n"], 2);
    assert!(summary["significance"]["tests"].as_u64().unwrap() == 4);
    for f in [
        "report.md",
        "grid.csv",
        "gain.svg",
        "accuracy.svg",
        "plan.json",
        "run.json",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
    // Typological distances per instance, one primary interval, the transfer regression's
    // section (issue #24).
    let grid = std::fs::read_to_string(out.join("grid.csv")).unwrap();
    assert!(
        grid.lines()
            .next()
            .unwrap()
            .ends_with(",wals_distance,wals_shared_features,genealogical_distance,same_family"),
        "{grid}"
    );
    let instances = summary["typology"]["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 4);
    for i in instances {
        let same = i["source"].as_str().unwrap().split(' ').nth(1)
            == i["target"].as_str().unwrap().split(' ').nth(1);
        // English (Indo-European) and Yoruba (Atlantic-Congo): 0 within, 1 across.
        let want = if same { 0.0 } else { 1.0 };
        assert_eq!(i["genealogical_distance"].as_f64(), Some(want), "{i}");
        assert!(i["wals_shared_features"].as_u64().unwrap() >= 20, "{i}");
    }
    assert_eq!(summary["interval_methods"]["primary"], "ci95_wild_cluster");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for needle in [
        "95% CI (wild cluster bootstrap)",
        "It is primary because",
        "## Typology and transfer",
    ] {
        assert!(report.contains(needle), "{needle} not in\n{report}");
    }
    let run = read_json(&out.join("run.json"));
    assert!(
        run["departures_from_study"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d.as_str().unwrap().contains("base model xlt-embedded-base"))
    );
}

#[test]
fn unknown_slice_and_bad_language_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("study");
    let o = run_example(
        "reproduce",
        &small_experiment(&out, &["--train-slices", "ig-medical"]),
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("training slice `ig-medical`"));
    let o = run_example(
        "reproduce",
        &["--out", out.to_str().unwrap(), "--languages", "en,xx"],
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown language code `xx`"));
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_against_a_recorded_openai() {
    let server = MockServer::start().await;
    mount(&server, "files_upload", 1).await;
    mount(&server, "ft_create", 1).await;
    let x = exchange("ft_get_succeeded");
    x.mock()
        .respond_with(x.template())
        .expect(1..)
        .mount(&server)
        .await;
    // Base and one tuned model, each on two test sets of 11 questions.
    let x = exchange("chat_completion");
    x.mock()
        .respond_with(x.template())
        .expect(44)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("study");
    let base_url = format!("{}/v1", server.uri());
    let out_c = out.clone();
    let o = tokio::task::spawn_blocking(move || {
        spawn_example(
            "reproduce",
            &small_experiment(
                &out_c,
                &[
                    "--provider",
                    "openai",
                    "--train-slices",
                    "en-medical",
                    "--grader",
                    "regex",
                    "--max-requests-per-minute",
                    "60000",
                    "--yes",
                ],
            ),
            &[("OPENAI_API_KEY", TEST_KEY), ("OPENAI_BASE_URL", &base_url)],
        )
        .wait_with_output()
        .unwrap()
    })
    .await
    .unwrap();
    assert!(o.status.success(), "{}", describe(&o));
    let models = read_json(&out.join("models.json"));
    assert_eq!(models["base_model"], "gpt-4.1-nano-2025-04-14");
    assert_eq!(
        models["fine_tuned"]["en-medical"]["model"],
        "ft:gpt-4.1-nano-2025-04-14:org-123:en-stem:7q8mpxmy"
    );
    // Every answer is "C": outcomes are graded against the real answers.
    let base = std::fs::read_to_string(out.join("outcomes/base.jsonl")).unwrap();
    assert_eq!(base.lines().count(), 22);
    assert!(base.lines().all(|l| l.contains("\"letter\":\"C\"")));
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["n_instances"], 2);
    // The plan priced the run and said where it departs from the study.
    let plan = read_json(&out.join("plan.json"));
    assert!(plan["cost_usd"].as_f64().unwrap() > 0.0);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains(TEST_KEY));
}

#[test]
fn paid_run_without_yes_is_refused_before_any_call() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("study");
    // Nothing listens on this port: if the plan did not stop the run, the upload would fail
    // with a transport error instead.
    let o = spawn_example(
        "reproduce",
        &small_experiment(&out, &["--provider", "openai"]),
        &[
            ("OPENAI_API_KEY", TEST_KEY),
            ("OPENAI_BASE_URL", "http://127.0.0.1:9/v1"),
        ],
    )
    .wait_with_output()
    .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("estimated cost:"), "{err}");
    assert!(err.contains("pass --yes"), "{err}");
    // A run that stops before its first paid call leaves no directory behind.
    assert!(!out.exists());
}

#[test]
fn a_rerun_with_other_settings_stops_and_fresh_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("study");
    let clean = dir.path().join("clean");
    let run = |out: &Path, seed: &str, fresh: bool| {
        let mut a = small_experiment(out, &["--seed", seed]);
        if fresh {
            a.push("--fresh");
        }
        run_example("reproduce", &a)
    };
    let o = run(&out, "1", false);
    assert!(o.status.success(), "{}", describe(&o));
    let before = snapshot_dir(&out);
    // Seed 2 into the same directory: stops, names what changed, touches nothing.
    assert_stopped_for_change(&run(&out, "2", false), "seed: 1 -> 2");
    assert!(
        snapshot_dir(&out) == before,
        "the refused run changed files"
    );
    // With --fresh: exactly the results of a clean seed-2 run.
    let o = run(&out, "2", true);
    assert!(o.status.success(), "{}", describe(&o));
    let o = run(&clean, "2", false);
    assert!(o.status.success(), "{}", describe(&o));
    for f in [
        "models.json",
        "report.md",
        "summary.json",
        "grid.csv",
        "manifest.json",
    ] {
        assert!(
            std::fs::read(out.join(f)).unwrap() == std::fs::read(clean.join(f)).unwrap(),
            "{f} differs from a clean seed-2 run"
        );
    }
    let outcomes = |d: &Path| snapshot_dir(&d.join("outcomes"));
    assert!(outcomes(&out) == outcomes(&clean));
    assert_eq!(
        read_json(&out.join("run.json"))["fingerprint"]["settings"]["seed"],
        "2"
    );
}

#[test]
fn evaluate_before_finetune_says_to_run_finetune_first() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("exp");
    let o = run_example("prepare", &small_experiment(&out, &[]));
    assert!(o.status.success(), "{}", describe(&o));
    let before = snapshot_dir(&out);
    let o = run_example("evaluate", &["--out", out.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("run `finetune` first"), "{err}");
    // It fails before writing anything (its settings are not added to fingerprint.json).
    assert!(
        snapshot_dir(&out) == before,
        "the refused run changed files"
    );
}

#[test]
fn killed_and_resumed_run_matches_an_uninterrupted_one() {
    fn args(out: &Path) -> [&str; 6] {
        [
            "--out",
            out.to_str().unwrap(),
            "--languages",
            "en,yo,de,ar",
            "--domains",
            "stem,medical",
        ]
    }
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    let o = run_example("reproduce", &args(&a));
    assert!(o.status.success(), "{}", describe(&o));

    let b_args = args(&b);
    // Kill it once during fine-tuning and once during evaluation.
    kill_twice_then_resume(&b_args, &b, 200);
    assert_same_files(
        &a,
        &b,
        &[
            "models.json",
            "summary.json",
            "report.md",
            "grid.csv",
            "outcomes/base.jsonl",
            "outcomes/en-stem.jsonl",
            "outcomes/ar-medical.jsonl",
        ],
    );
    // No job was run twice: the ledger holds one job per slice.
    let ledger = read_json(&b.join("ledger.json"));
    assert_eq!(ledger["jobs"].as_object().unwrap().len(), 8);
}
