//! The `prepare` example's command-line contract.

mod common;

use std::collections::BTreeSet;

use common::*;
use xlt::data::{Domain, Manifest};

#[test]
fn default_run_on_fixtures_is_leak_free_and_reproducible() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    for dir in [&a, &b] {
        let out = run_example(
            "prepare",
            &[
                "--out",
                dir.path().to_str().unwrap(),
                "--languages",
                "en,de,ar,yo",
            ],
        );
        assert!(out.status.success(), "{}", describe(&out));
    }
    // Byte-identical outputs for the same inputs and seed.
    assert_eq!(snapshot_dir(a.path()), snapshot_dir(b.path()));

    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(a.path().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest.seed, 42);
    assert_eq!(manifest.train_fraction, 0.7);
    assert_eq!(manifest.slices.len(), 4 * 3);
    let all_test: BTreeSet<&String> = manifest
        .slices
        .iter()
        .flat_map(|s| s.test_ids.iter())
        .collect();
    for domain in Domain::STUDY {
        let trains: Vec<&Vec<String>> = manifest
            .slices
            .iter()
            .filter(|s| s.domain == domain)
            .map(|s| &s.train_ids)
            .collect();
        assert_eq!(trains.len(), 4);
        assert!(
            trains.windows(2).all(|w| w[0] == w[1]),
            "{domain} train ids differ"
        );
        assert!(trains[0].iter().all(|id| !all_test.contains(id)));
    }
    assert!(manifest.leakage().is_clean());
    for s in &manifest.slices {
        let name = Manifest::slice_name(s.language, s.domain);
        let ft = std::fs::read_to_string(a.path().join(format!("finetune/{name}.jsonl"))).unwrap();
        let ev = std::fs::read_to_string(a.path().join(format!("eval/{name}.jsonl"))).unwrap();
        assert_eq!(ft.lines().count(), s.train_ids.len(), "{name}");
        assert_eq!(ev.lines().count(), s.test_ids.len(), "{name}");
    }
    // The raw JSON keeps the contract's key names and domain spellings.
    let raw: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.path().join("manifest.json")).unwrap()).unwrap();
    for key in [
        "seed",
        "train_fraction",
        "slices",
        "dropped_duplicates",
        "dropped_unaligned",
        "dropped_ambiguous_key",
        "dropped_inconsistent",
    ] {
        assert!(raw.get(key).is_some(), "manifest lacks {key}");
    }
    assert!(a.path().join("finetune/yo-humanities.jsonl").exists());
}

#[test]
fn other_seed_and_fraction_change_the_split() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_example(
        "prepare",
        &[
            "--out",
            dir.path().to_str().unwrap(),
            "--languages",
            "en,yo",
            "--domains",
            "medical",
            "--train-fraction",
            "0.5",
            "--seed",
            "7",
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(dir.path().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest.seed, 7);
    assert_eq!(manifest.slices.len(), 2);
    // 36 Medical questions in Lite: half on each side.
    assert_eq!(manifest.slices[0].train_ids.len(), 18);
    assert_eq!(manifest.slices[0].test_ids.len(), 18);
}

#[test]
fn bad_input_fails_naming_the_file_and_writes_nothing() {
    let data = tempfile::tempdir().unwrap();
    let bad = data.path().join("en.test.csv");
    let text =
        std::fs::read_to_string(root().join("fixtures/global-mmlu/lite/en.test.csv")).unwrap();
    // Second data row: answer C becomes Z. Row 1 of the fixture ends in ",C,...CS,True".
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[1] = lines[1].replacen(",C,\"[", ",Z,\"[", 1);
    std::fs::write(&bad, lines.join("\n")).unwrap();

    let out_dir = tempfile::tempdir().unwrap();
    let target = out_dir.path().join("out");
    let out = run_example(
        "prepare",
        &[
            "--out",
            target.to_str().unwrap(),
            "--data",
            bad.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("en.test.csv: row 1: column `answer`: `Z`"),
        "{err}"
    );
    assert!(!target.exists(), "no output may be left behind");
}

#[test]
fn unknown_language_fails_before_reading() {
    let out_dir = tempfile::tempdir().unwrap();
    let target = out_dir.path().join("out");
    let out = run_example(
        "prepare",
        &["--out", target.to_str().unwrap(), "--languages", "en,qq"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown language code `qq`"), "{err}");
    assert!(!target.exists());
    // A near miss names the nearest known code and the languages the data has (the
    // shipped AfriMMLU files), not all 117 codes; an empty list says so plainly.
    let afrimmlu = format!(
        "afrimmlu:{}",
        xlt::fixtures_dir().join("afrimmlu").display()
    );
    let t = target.to_str().unwrap();
    let out = run_example(
        "prepare",
        &["--out", t, "--data", &afrimmlu, "--languages", "ig,ibb"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown language code `ibb`; nearest known codes: ig (Igbo); the data has am (Amharic), en (English), ig (Igbo), yo (Yoruba); every known code is listed in docs/DATA.md"),
        "{err}"
    );
    assert!(!err.contains(", zh, zu"), "{err}");
    let out = run_example(
        "prepare",
        &["--out", t, "--data", &afrimmlu, "--languages="],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("languages: the list is empty; name at least one language code"),
        "{err}"
    );
    assert!(!target.exists());
}

/// An empty item in a list is refused naming its position, before anything is read.
#[test]
fn an_empty_item_in_a_list_is_refused_naming_its_position() {
    let out_dir = tempfile::tempdir().unwrap();
    let target = out_dir.path().join("out");
    let t = target.to_str().unwrap();
    for (flag, list) in [("--languages", "en,,de"), ("--domains", "stem,,medical")] {
        let out = run_example("prepare", &["--out", t, flag, list]);
        assert!(!out.status.success(), "{flag} {list} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("item 2 of 3 in `{list}` is empty")) && !err.contains('"'),
            "{flag} {list}: {err}"
        );
        assert!(!target.exists());
    }
}

#[test]
fn language_missing_from_data_is_an_empty_slice() {
    let out_dir = tempfile::tempdir().unwrap();
    let target = out_dir.path().join("out");
    let out = run_example(
        "prepare",
        &["--out", target.to_str().unwrap(), "--languages", "en,ig"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("language ig was selected but the data has no question"),
        "{err}"
    );
    assert!(!target.exists());
}

#[test]
fn preparing_over_an_experiment_of_other_settings_stops_and_fresh_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("exp");
    let out_s = out.to_str().unwrap();
    let prepare = |seed: &str, fresh: bool| {
        let mut args = small_experiment(&out, &["--seed", seed]);
        if fresh {
            args.push("--fresh");
        }
        run_example("prepare", &args)
    };
    let o = prepare("1", false);
    assert!(o.status.success(), "{}", describe(&o));
    let o = run_example("finetune", &["--out", out_s]);
    assert!(o.status.success(), "{}", describe(&o));
    assert!(out.join("models.json").exists());
    let before = snapshot_dir(&out);
    // The same settings again: the same files, the results kept.
    let o = prepare("1", false);
    assert!(o.status.success(), "{}", describe(&o));
    assert!(snapshot_dir(&out) == before, "a rerun changed files");
    // Another seed: stops, names what changed, touches nothing.
    assert_stopped_for_change(&prepare("2", false), "seed: 1 -> 2");
    assert!(
        snapshot_dir(&out) == before,
        "the refused run changed files"
    );
    // With --fresh: the old results go, the new split is written, and the next step
    // records its own settings without asking for --fresh again.
    let o = prepare("2", true);
    assert!(o.status.success(), "{}", describe(&o));
    assert!(!out.join("models.json").exists());
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest.seed, 2);
    let o = run_example("finetune", &["--out", out_s, "--seed", "7"]);
    assert!(o.status.success(), "{}", describe(&o));
}

#[test]
fn reproduce_runs_on_what_prepare_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("exp");
    let args = small_experiment(&out, &[]);
    let o = run_example("prepare", &args);
    assert!(o.status.success(), "{}", describe(&o));
    // prepare records only the prepared part of the fingerprint; reproduce adds the rest.
    let o = run_example("reproduce", &args);
    assert!(o.status.success(), "{}", describe(&o));
    let fp = read_json(&out.join("fingerprint.json"));
    assert_eq!(fp["settings"]["provider"], "embedded");
    assert_eq!(fp["settings"]["seed"], "42");
}

/// Found by a new-user trial: `finetune` recorded its settings in `fingerprint.json` before
/// the provider refused them, so the corrected rerun was taken for another experiment.
#[test]
fn a_finetune_refused_before_its_first_job_leaves_the_fingerprint_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let o = run_example(
        "prepare",
        &["--out", out, "--languages", "en", "--domains", "stem"],
    );
    assert!(o.status.success(), "{}", describe(&o));
    let before = snapshot_dir(dir.path());
    // The embedded provider trains no adapters: refused in the plan, before any job.
    let o = run_example(
        "finetune",
        &[
            "--out",
            out,
            "--provider",
            "embedded",
            "--yes",
            "--lora-rank",
            "8",
        ],
    );
    assert!(!o.status.success(), "{}", describe(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("lora"),
        "{}",
        describe(&o)
    );
    assert_eq!(snapshot_dir(dir.path()), before);
    // The corrected command runs.
    let o = run_example(
        "finetune",
        &["--out", out, "--provider", "embedded", "--yes"],
    );
    assert!(o.status.success(), "{}", describe(&o));
}
