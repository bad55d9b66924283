//! The study's orchestration as a library: the fingerprint is checked before anything is
//! read or discarded (the stale-results sequence of issue #21), `evaluate` takes the base
//! model the experiment records, an analysis cannot land in another experiment (#26), and
//! a cancelled step says so.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use xlt_provider::{EMBEDDED_BASE_MODEL, EmbeddedProvider};
use xlt_study::{
    Backend, Capabilities, EvalSettings, FINGERPRINT_FILE, ModelsFile, Quiet, Study, StudyError,
    StudyOptions, TuneSettings,
};

/// An offline backend over the embedded provider, its state under `out/embedded`.
fn backend(out: &Path) -> Backend {
    let profile = Capabilities {
        free: true,
        instant_jobs: true,
        ..Capabilities::new("offline", EMBEDDED_BASE_MODEL)
    };
    Backend::new(
        profile,
        Arc::new(EmbeddedProvider::open(out.join("embedded"))),
    )
}

/// English and Yoruba, medical, prepared into `dir/study`.
fn prepared(dir: &Path) -> PathBuf {
    let out = dir.join("study");
    let data = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/global-mmlu/lite"
    );
    let sources = [xlt_data::DataSource::Path(data.into())];
    let p = xlt_study::prepare_data(&sources, Some("en,yo"), "medical", 0.7, 42).unwrap();
    xlt_study::write_prepared(&out, &p, false).unwrap();
    out
}

fn regex() -> EvalSettings {
    EvalSettings {
        grader: xlt_grade::Protocol::Regex,
        ..EvalSettings::default()
    }
}

fn recorded(out: &Path, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(out.join(FINGERPRINT_FILE)).unwrap();
    let fp: xlt_study::Fingerprint = serde_json::from_str(&text).unwrap();
    fp.settings.get(key).cloned()
}

/// A prepared and fine-tuned experiment in `dir/study`.
async fn fine_tuned(dir: &Path) -> PathBuf {
    let out = prepared(dir);
    let b = backend(&out);
    let options = StudyOptions::new(&out);
    let study = Study::new(&b, &options, &Quiet);
    let models = study
        .run_finetune(&TuneSettings::default(), std::future::pending())
        .await
        .unwrap();
    assert_eq!(models.fine_tuned.len(), 2, "{models:?}");
    out
}

/// `prepare -> finetune -> evaluate --base-model other --fresh`: before, `evaluate` read
/// `models.json`, then `--fresh` discarded it, and the models in memory were evaluated
/// anyway, leaving outcomes that disagreed with `fingerprint.json` and no `models.json`.
/// Now a base model other than the one the models were tuned from is refused first, with or
/// without `fresh` (which would discard the fine-tuned models and their ledger for a run
/// that cannot use them).
#[tokio::test]
async fn another_base_model_never_evaluates_stale_models() {
    let dir = tempfile::tempdir().unwrap();
    let out = fine_tuned(dir.path()).await;
    let b = backend(&out);
    for fresh in [false, true] {
        let options = StudyOptions {
            base_model: Some("some-other-model".to_owned()),
            fresh,
            ..StudyOptions::new(&out)
        };
        let study = Study::new(&b, &options, &Quiet);
        let e = study
            .run_evaluate(&regex(), std::future::pending())
            .await
            .unwrap_err();
        let msg = e.to_string();
        // Refused before the fingerprint check, with or without fresh: nothing is read
        // into an evaluation, and nothing (the fine-tuned models, their ledger) discarded.
        assert!(
            matches!(e, StudyError::Refused(_))
                && msg.contains("fine-tuned from")
                && msg.contains("some-other-model"),
            "fresh {fresh}: {msg}"
        );
        assert_eq!(
            recorded(&out, "base_model").as_deref(),
            Some(EMBEDDED_BASE_MODEL),
            "fresh {fresh}"
        );
        assert!(!out.join("outcomes").exists(), "fresh {fresh}: outcomes");
        assert!(
            out.join("models.json").exists(),
            "fresh {fresh}: models.json"
        );
        assert!(
            out.join("ledger.json").exists(),
            "fresh {fresh}: ledger.json"
        );
    }
}

/// `evaluate` without a base model evaluates the one the experiment's models were tuned
/// from, not the provider's default (#26: `evaluate --provider local` made one repeat it).
#[tokio::test]
async fn evaluate_takes_the_recorded_base_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = fine_tuned(dir.path()).await;
    // A provider whose default base model is not the one the models were tuned from.
    let mut b = backend(&out);
    b.profile.default_base_model = "a-default-never-used";
    let options = StudyOptions::new(&out);
    let study = Study::new(&b, &options, &Quiet);
    let models = study
        .run_evaluate(&regex(), std::future::pending())
        .await
        .unwrap();
    assert_eq!(models.base_model, EMBEDDED_BASE_MODEL);
    assert_eq!(
        ModelsFile::read(&out).unwrap().base_model,
        EMBEDDED_BASE_MODEL
    );
    let outcomes = std::fs::read_dir(out.join("outcomes")).unwrap().count();
    assert_eq!(outcomes, 3, "base and two tuned models");
}

/// A cancel future that resolves stops the evaluation with what it said, before any model
/// is complete.
#[tokio::test]
async fn a_cancelled_evaluation_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let out = fine_tuned(dir.path()).await;
    let b = backend(&out);
    let options = StudyOptions::new(&out);
    let study = Study::new(&b, &options, &Quiet);
    let e = study
        .run_evaluate(&regex(), async { "interrupted (test)".to_owned() })
        .await
        .unwrap_err();
    assert!(
        matches!(&e, StudyError::Interrupted(w)
            if *w == format!("interrupted (test) while evaluating: {}", xlt_study::EVALUATION_RESUMES)),
        "{e}"
    );
}

/// An analysis goes into an experiment's directory only if it is of that experiment's own
/// outcomes, `fresh` or not (it never removes an experiment's results); without a
/// directory, the experiment holding the outcomes.
#[tokio::test]
async fn analysis_of_other_outcomes_is_refused_in_an_experiment() {
    let dir = tempfile::tempdir().unwrap();
    let out = prepared(dir.path());
    std::fs::create_dir_all(out.join("outcomes")).unwrap();
    let other = dir.path().join("elsewhere/outcomes");
    std::fs::create_dir_all(&other).unwrap();
    // Its own outcomes: fine.
    xlt_study::check_analysis_dir(&out, &out.join("outcomes"), false).unwrap();
    // Another's, with or without fresh: refused by one message that names both and says
    // one thing (another --out), never "pass --fresh", which is refused too.
    for fresh in [false, true] {
        let e = xlt_study::check_analysis_dir(&out, &other, fresh).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, StudyError::Refused(_)), "fresh {fresh}: {msg}");
        assert!(
            msg.contains("takes only the analysis of its own outcomes")
                && msg.contains("elsewhere")
                && msg.contains("another --out"),
            "fresh {fresh}: {msg}"
        );
        assert!(!msg.contains("pass --fresh"), "fresh {fresh}: {msg}");
    }
    // An analysis-only directory takes another analysis with fresh, and then the same again.
    let loose = dir.path().join("analysis");
    std::fs::create_dir_all(&loose).unwrap();
    xlt_study::check_analysis_dir(&loose, &other, false).unwrap();
    xlt_study::record_analysis(&loose, &other).unwrap();
    let e = xlt_study::check_analysis_dir(&loose, &out.join("outcomes"), false).unwrap_err();
    assert!(e.to_string().contains("--fresh"), "{e}");
    xlt_study::check_analysis_dir(&loose, &out.join("outcomes"), true).unwrap();
    // Defaults: an experiment's outcomes go to the experiment; loose ones nowhere.
    assert_eq!(
        xlt_study::default_analysis_dir(&out.join("outcomes")),
        Some(out.clone())
    );
    assert_eq!(xlt_study::default_analysis_dir(&other), None);
    assert_eq!(xlt_study::default_analysis_dir(dir.path()), None);
}

/// Letter scoring reads no text and samples nothing, so its fingerprint leaves out the
/// grader, the output-token limit and the temperature (#22): another `--grader` resumes a
/// letter-scored directory instead of refusing it. Generation keeps the three keys (its
/// fingerprints are those of earlier versions), and a directory evaluated one way is
/// refused the other way, naming the scoring. A letter-scored fingerprint of an earlier
/// version, with the three keys, resumes and is rewritten without them.
#[test]
fn letter_scoring_fingerprints_leave_out_what_letters_do_not_use() {
    use xlt_study::{Experiment, Scoring};
    let settings = |scoring: Scoring, grader: xlt_grade::Protocol, max_tokens: u32| EvalSettings {
        scoring: Some(scoring),
        grader,
        max_tokens,
        ..EvalSettings::default()
    };
    let keys = [
        "grader",
        "max_tokens",
        "temperature",
        "scoring",
        "rotations",
    ];
    let present = |out: &Path| -> Vec<&str> {
        keys.iter()
            .copied()
            .filter(|k| recorded(out, k).is_some())
            .collect()
    };
    // (first scoring, then scoring, then grader and max_tokens, expected: Ok(keys recorded)
    // or Err(a change the refusal names)).
    type Case = (
        Scoring,
        Scoring,
        xlt_grade::Protocol,
        u32,
        Result<Vec<&'static str>, &'static str>,
    );
    let cases: [Case; 4] = [
        (
            Scoring::Letters,
            Scoring::Letters,
            xlt_grade::Protocol::Llm,
            512,
            Ok(vec!["scoring", "rotations"]),
        ),
        (
            Scoring::Generate,
            Scoring::Generate,
            xlt_grade::Protocol::Regex,
            16,
            Ok(vec!["grader", "max_tokens", "temperature"]),
        ),
        (
            Scoring::Generate,
            Scoring::Letters,
            xlt_grade::Protocol::Regex,
            16,
            Err("scoring: (none) -> letters"),
        ),
        (
            Scoring::Letters,
            Scoring::Generate,
            xlt_grade::Protocol::Regex,
            16,
            Err("scoring: letters -> (none)"),
        ),
    ];
    for (first, then, grader, max_tokens, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let out = prepared(dir.path());
        let b = backend(&out);
        let options = StudyOptions::new(&out);
        let study = Study::new(&b, &options, &Quiet);
        let exp = Experiment::open(&out).unwrap();
        let e1 = settings(first, xlt_grade::Protocol::Regex, 16);
        study.check_fingerprint(None, Some(&e1), &exp).unwrap();
        let e2 = settings(then, grader, max_tokens);
        let got = study.check_fingerprint(None, Some(&e2), &exp);
        match expected {
            Ok(keys) => {
                let fp = got.unwrap_or_else(|e| panic!("{first} then {then}: {e}"));
                assert_eq!(present(&out), keys, "{first} then {then}: recorded");
                let own: Vec<&str> = keys
                    .iter()
                    .copied()
                    .filter(|k| fp.settings.contains_key(*k))
                    .collect();
                assert_eq!(own, keys, "{first} then {then}: the step's fingerprint");
            }
            Err(change) => {
                let msg = got.expect_err("refused").to_string();
                assert!(msg.contains(change), "{first} then {then}: {msg}");
            }
        }
    }

    // A letter-scored fingerprint written by an earlier version, with the keys letters do
    // not use: it resumes, and is rewritten without them.
    let dir = tempfile::tempdir().unwrap();
    let out = prepared(dir.path());
    let b = backend(&out);
    let options = StudyOptions::new(&out);
    let study = Study::new(&b, &options, &Quiet);
    let exp = Experiment::open(&out).unwrap();
    let letters = settings(Scoring::Letters, xlt_grade::Protocol::Regex, 16);
    study.check_fingerprint(None, Some(&letters), &exp).unwrap();
    let path = out.join(FINGERPRINT_FILE);
    let mut old: xlt_study::Fingerprint =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for (k, v) in [
        ("grader", "\"regex\""),
        ("max_tokens", "128"),
        ("temperature", "0"),
    ] {
        old.settings.insert(k.to_owned(), v.to_owned());
    }
    std::fs::write(&path, serde_json::to_string(&old).unwrap()).unwrap();
    study
        .check_fingerprint(None, Some(&letters), &exp)
        .unwrap_or_else(|e| panic!("an earlier version's letters fingerprint: {e}"));
    assert_eq!(present(&out), ["scoring", "rotations"]);
}

/// Records every job event an observer is given.
#[derive(Default)]
struct Events(std::sync::Mutex<Vec<(String, String)>>);

impl xlt_study::Observer for Events {
    fn job_event(&self, slice: &str, event: &xlt_provider::JobEvent) {
        let mut seen = self.0.lock().unwrap();
        seen.push((slice.to_owned(), event.message.clone()));
    }
}

/// A job's events are shown once, as they are written: a rerun over jobs that already have
/// events on disk (a finished job; a killed one resumed from its checkpoint) does not
/// replay them before what the rerun adds (#26: "resumed at step N" came after the old
/// steps). The embedded provider stands in for one that trains on this machine.
#[tokio::test]
async fn a_rerun_replays_no_earlier_job_events() {
    let dir = tempfile::tempdir().unwrap();
    let out = prepared(dir.path());
    let mut b = backend(&out);
    b.profile.on_device = true;
    let options = StudyOptions::new(&out);
    let tune = TuneSettings::default();
    let run = || async {
        let events = Events::default();
        let study = Study::new(&b, &options, &events);
        let models = study
            .run_finetune(&tune, std::future::pending())
            .await
            .unwrap();
        assert_eq!(models.fine_tuned.len(), 2, "{models:?}");
        events.0.into_inner().unwrap()
    };
    let first = run().await;
    let slices: std::collections::BTreeSet<&str> = first.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        slices,
        ["en-medical", "yo-medical"].into(),
        "first run's events: {first:?}"
    );
    let again = run().await;
    assert!(again.is_empty(), "replayed on the rerun: {again:?}");
}

/// A `kill -9` between a write and its rename (the ledger's, an outcome file's) leaves a
/// `.xlt-tmp-*` file in `--out`; the next run that opens the experiment removes it (once a
/// minute old: a younger one may be a live process's write), and nothing of another name.
#[test]
fn opening_an_experiment_sweeps_what_a_killed_run_left() {
    let dir = tempfile::tempdir().unwrap();
    let out = prepared(dir.path());
    let old = std::time::SystemTime::now() - 2 * xlt_provider::STALE_TEMP_AGE;
    let make = |rel: &str, stale: bool| {
        let p = out.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let f = std::fs::File::create(&p).unwrap();
        if stale {
            f.set_modified(old).unwrap();
        }
        p
    };
    let left = [
        make(".xlt-tmp-Ab12Cd", true),
        make("outcomes/.xlt-tmp-Ef34Gh", true),
        make("cache/offline/ab/.xlt-tmp-Ij56Kl", true),
    ];
    let kept = [
        make(".xlt-tmp-live01", false),
        make(".tmpAb12Cd", true),
        make("notes.txt", true),
    ];
    xlt_study::Experiment::open(&out).unwrap();
    for p in &left {
        assert!(!p.exists(), "not swept: {}", p.display());
    }
    for p in &kept {
        assert!(p.exists(), "removed: {}", p.display());
    }
    // What the study wrote itself (fingerprint.json) went through such a file, renamed:
    // the only one left is the live one.
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n == "fingerprint.json"), "{names:?}");
    let temporary: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with(".xlt-tmp-"))
        .collect();
    assert_eq!(temporary, [".xlt-tmp-live01"], "{names:?}");
}

/// A machine that computes in the given numerics (`Machine::numerics`), as the local
/// provider does with `--dtype`; it loads anything and trains nothing.
struct Numerics(&'static str);

#[async_trait::async_trait]
impl xlt_study::Machine for Numerics {
    fn device(&self) -> String {
        "cpu".to_owned()
    }

    fn numerics(&self) -> Option<String> {
        Some(self.0.to_owned())
    }

    async fn load(&self, _model: &str) -> Result<(), xlt_provider::ProviderError> {
        Ok(())
    }

    async fn calibrate(
        &self,
        _spec: xlt_provider::FineTuneSpec,
        _files: Vec<PathBuf>,
    ) -> Result<xlt_study::MachineTraining, xlt_provider::ProviderError> {
        unreachable!("evaluation calibrates nothing")
    }
}

/// A directory evaluated at other numerics than the default (trial F: `--dtype bf16` into
/// an f32 directory reused the f32 answers): they are in the fingerprint (a directory
/// recorded without them, as this one's fine-tuning was, takes them), so a rerun at the
/// default is refused naming them, and they have a response cache of their own, which
/// `--fresh` keeps, so that neither run reads the other's answers.
#[tokio::test]
async fn other_numerics_are_another_experiment_with_a_cache_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let out = fine_tuned(dir.path()).await;
    let mut bf16 = backend(&out);
    bf16.machine = Some(Arc::new(Numerics("bf16 on cpu")));
    let options = StudyOptions::new(&out);
    Study::new(&bf16, &options, &Quiet)
        .run_evaluate(&regex(), std::future::pending())
        .await
        .unwrap();
    assert_eq!(recorded(&out, "numerics").as_deref(), Some("bf16 on cpu"));
    let cache = xlt_study::cache_dir(&bf16, &out);
    assert_eq!(cache, out.join("cache").join("offline-bf16-on-cpu"));
    assert!(cache.is_dir(), "{}", cache.display());
    let mut f32 = backend(&out);
    f32.machine = Some(Arc::new(Numerics("f32 on cpu")));
    assert_eq!(xlt_study::cache_dir(&f32, &out), out.join("cache/offline"));
    let e = Study::new(&f32, &options, &Quiet)
        .run_evaluate(&regex(), std::future::pending())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("numerics: bf16 on cpu -> f32 on cpu"), "{e}");
}
