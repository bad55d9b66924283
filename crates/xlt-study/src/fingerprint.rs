//! The fingerprint of an experiment directory: everything that determines its results, so
//! that a rerun with other settings cannot silently reuse (and mislabel) old results.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use xlt_data::Manifest;
use xlt_provider::{Hyperparameters, LoraSpec, bytes_hash};

use crate::StudyError;
use crate::atomic::write_atomic;
use crate::experiment::Experiment;

/// The file a fingerprint is kept in, in the experiment directory.
pub const FINGERPRINT_FILE: &str = "fingerprint.json";

/// Everything that determines an experiment's results, by name, each a short readable value
/// or a digest. Two runs with equal fingerprints give the same results; a rerun with another
/// fingerprint must not reuse the first run's outputs.
///
/// The names: `languages`, `domains`, `seed` and `train_fraction` (from the manifest);
/// `prepared_files` (SHA-256 of the manifest, fine-tuning and evaluation files, so of the
/// data rows selected, their split and the prompt template); `provider`, `base_model`,
/// `hyperparameters`, `train_slices`, `grader`, `max_tokens` and `temperature`;
/// `lora_rank`, `lora_alpha`, `lora_dropout` and `lora_targets` when the run trains adapters;
/// and the study adds `run_seed`, `replicates`, `scoring`, `rotations` and `numerics` (a
/// [`crate::Machine`]'s dtype and device) where they apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Setting name to value.
    pub settings: BTreeMap<String, String>,
}

/// The settings of a run that go into its [`Fingerprint`], besides the prepared files.
#[derive(Debug, Clone)]
pub struct RunSettings<'a> {
    /// The provider's name.
    pub provider: &'a str,
    /// The base model.
    pub base_model: &'a str,
    /// Training hyperparameters.
    pub hyperparameters: Hyperparameters,
    /// LoRA settings, when the run trains adapters.
    pub lora: Option<&'a LoraSpec>,
    /// The slices fine-tuned.
    pub train_slices: &'a [String],
    /// The grading protocol, as its command-line name (`regex+llm`).
    pub grader: &'a str,
    /// Output tokens per answer.
    pub max_tokens: u32,
    /// Sampling temperature.
    pub temperature: f32,
}

/// What [`check_fingerprint`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FingerprintCheck {
    /// No earlier run here: the fingerprint is recorded.
    New,
    /// An earlier run with the same fingerprint: resume it.
    Resume,
    /// An earlier run with another fingerprint, whose results were discarded (`fresh`).
    Discarded,
}

/// What [`check_fingerprint`] discards of an earlier run with `fresh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    /// Results only (models, outcomes, batches, plan, analysis), keeping the prepared
    /// files: for commands that run on a prepared experiment.
    Results,
    /// Results and the prepared files (manifest, `finetune/`, `eval/`): for commands that
    /// prepare the experiment themselves.
    ResultsAndPreparedFiles,
}

impl Fingerprint {
    /// The fingerprint of an experiment prepared as `manifest` with `files` (relative path
    /// and content, as `xlt_data::Prepared::files` gives them), run with `run`.
    pub fn new(manifest: &Manifest, files: &[(PathBuf, String)], run: &RunSettings<'_>) -> Self {
        let mut slices = run.train_slices.to_vec();
        slices.sort();
        let hyper = serde_json::to_string(&run.hyperparameters).expect("serializes");
        let mut fp = Fingerprint::of_prepared(manifest, files);
        fp.settings.extend(
            [
                ("provider", run.provider.to_owned()),
                ("base_model", run.base_model.to_owned()),
                ("hyperparameters", hyper),
                ("train_slices", slices.join(",")),
                ("grader", run.grader.to_owned()),
                ("max_tokens", run.max_tokens.to_string()),
                ("temperature", run.temperature.to_string()),
            ]
            .map(|(k, v)| (k.to_owned(), v)),
        );
        // One key a LoRA setting, so that a change names the setting.
        let lora = run.lora.into_iter().flat_map(|l| {
            [
                ("lora_rank", l.rank.to_string()),
                ("lora_alpha", l.alpha.to_string()),
                ("lora_dropout", l.dropout.to_string()),
                ("lora_targets", l.target_modules.join(",")),
            ]
        });
        fp.settings.extend(lora.map(|(k, v)| (k.to_owned(), v)));
        fp
    }

    /// The part of the fingerprint that preparing the experiment determines, alone:
    /// `languages`, `domains`, `seed`, `train_fraction` and `prepared_files`, for a command
    /// that only prepares (the `prepare` example), so that it can be compared with the
    /// same keys of a recorded [`Fingerprint::new`].
    pub fn of_prepared(manifest: &Manifest, files: &[(PathBuf, String)]) -> Self {
        let mut languages: Vec<&str> = manifest.slices.iter().map(|s| s.language.code()).collect();
        languages.sort_unstable();
        languages.dedup();
        let mut domains: Vec<&str> = manifest.slices.iter().map(|s| s.domain.slug()).collect();
        domains.sort_unstable();
        domains.dedup();
        let settings = [
            ("languages", languages.join(",")),
            ("domains", domains.join(",")),
            ("seed", manifest.seed.to_string()),
            ("train_fraction", manifest.train_fraction.to_string()),
            ("prepared_files", prepared_digest(files)),
        ];
        Fingerprint {
            settings: settings
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        }
    }

    /// The fingerprint of the experiment on disk (its manifest and the files it names), run
    /// with `run`.
    ///
    /// # Errors
    /// [`StudyError::Io`] naming a file that cannot be read.
    pub fn of_experiment(exp: &Experiment, run: &RunSettings<'_>) -> Result<Self, StudyError> {
        let mut files = Vec::new();
        for name in exp.slice_names() {
            for dir in ["finetune", "eval"] {
                let rel = PathBuf::from(format!("{dir}/{name}.jsonl"));
                files.push((rel.clone(), crate::experiment::read(&exp.dir.join(&rel))?));
            }
        }
        let manifest = PathBuf::from("manifest.json");
        files.push((
            manifest.clone(),
            crate::experiment::read(&exp.dir.join(&manifest))?,
        ));
        Ok(Fingerprint::new(&exp.manifest, &files, run))
    }

    /// What differs from `earlier`, one line a setting: `seed: 1 -> 2`.
    pub fn changes_from(&self, earlier: &Fingerprint) -> Vec<String> {
        let mut keys: Vec<&String> = self
            .settings
            .keys()
            .chain(earlier.settings.keys())
            .collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter_map(|k| {
                let (old, new) = (earlier.settings.get(k), self.settings.get(k));
                (old != new).then(|| describe_change(k, old, new))
            })
            .collect()
    }
}

/// One changed setting, readable: a JSON object (`hyperparameters`) names each field that
/// changed (`hyperparameters.warmup_ratio: 0.1 -> 2`), a value up to 200 characters (a
/// path, a model id) is shown whole, and a longer one (a digest) by its first 16.
fn describe_change(key: &str, old: Option<&String>, new: Option<&String>) -> String {
    let object = |v: Option<&String>| {
        v.and_then(|v| serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(v).ok())
    };
    if let (Some(a), Some(b)) = (object(old), object(new)) {
        let mut fields: Vec<&String> = a.keys().chain(b.keys()).collect();
        fields.sort();
        fields.dedup();
        let show = |v: Option<&serde_json::Value>| v.map_or("(none)".to_owned(), |v| v.to_string());
        let parts: Vec<String> = fields
            .into_iter()
            .filter(|f| a.get(*f) != b.get(*f))
            .map(|f| format!("{key}.{f}: {} -> {}", show(a.get(f)), show(b.get(f))))
            .collect();
        if !parts.is_empty() {
            return parts.join(", ");
        }
    }
    let show = |v: Option<&String>| match v {
        None => "(none)".to_owned(),
        Some(v) if v.chars().count() > 200 => {
            format!("{}...", v.chars().take(16).collect::<String>())
        }
        Some(v) => v.clone(),
    };
    format!("{key}: {} -> {}", show(old), show(new))
}

/// SHA-256 over the files sorted by path (path, length and content of each), hex.
fn prepared_digest(files: &[(PathBuf, String)]) -> String {
    let mut sorted: Vec<&(PathBuf, String)> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut buf = Vec::new();
    for (path, content) in sorted {
        buf.extend_from_slice(path.to_string_lossy().replace('\\', "/").as_bytes());
        buf.push(0);
        buf.extend_from_slice(content.len().to_string().as_bytes());
        buf.push(0);
        buf.extend_from_slice(content.as_bytes());
    }
    bytes_hash(&buf)
}

/// Files of a run's results, relative to the experiment directory: what a clean run
/// writes and `--fresh` discards (with the analysis, [`ANALYSIS`], and the SVG figures).
/// The job ledger and the providers' own state (`embedded/`, `local/`) are results too:
/// a clean run has neither, so a discard trains again.
const RESULTS: &[&str] = &[
    "models.json",
    "outcomes",
    "batches.json",
    "plan.json",
    "run.json",
    "ledger.json",
    "embedded",
    "local",
];

/// Files of an analysis, relative to its directory, besides the SVG figures (`*.svg`):
/// all that `analyze --fresh` ever discards.
pub(crate) const ANALYSIS: &[&str] = &["report.md", "summary.json", "grid.csv"];

/// Whether `dir` holds results of a run (not only prepared files).
fn has_results(dir: &Path) -> bool {
    ["models.json", "outcomes", "batches.json", "ledger.json"]
        .iter()
        .any(|f| dir.join(f).exists())
}

/// Compares `fingerprint` with the one recorded in `dir` and records it.
///
/// - No recorded fingerprint and no results: records it ([`FingerprintCheck::New`]).
/// - The same: [`FingerprintCheck::Resume`]; outputs already complete are reused.
/// - Another (or results without a fingerprint): with `fresh`, discards what `discard`
///   says, records the new fingerprint and returns [`FingerprintCheck::Discarded`];
///   without, fails and changes nothing.
///
/// A discard leaves the directory as a clean run would find it: results, analysis, the
/// job ledger and the providers' state (`embedded/`, `local/`) go. Kept: the response cache
/// (`cache/`, keyed by the whole request, so only what changed is asked again),
/// `endpoints.json` (endpoints and adapters still to stop, which a discard must not
/// forget), and the prepared files unless `discard` says otherwise. The date the experiment
/// was prepared ([`FINGERPRINT_FILE`]'s `prepared_on`) is today's after a discard.
///
/// # Errors
/// [`StudyError::Changed`] naming every setting that changed; [`StudyError::Io`].
pub fn check_fingerprint(
    dir: &Path,
    fingerprint: &Fingerprint,
    fresh: bool,
    discard: Discard,
) -> Result<FingerprintCheck, StudyError> {
    let path = dir.join(FINGERPRINT_FILE);
    let recorded: Option<Fingerprint> = match std::fs::read_to_string(&path) {
        Ok(text) => Some(
            serde_json::from_str(&text).map_err(|e| StudyError::Invalid {
                what: path.display().to_string(),
                message: e.to_string(),
            })?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(StudyError::Io {
                path,
                message: e.to_string(),
            });
        }
    };
    let changes = match &recorded {
        Some(r) if r == fingerprint => return Ok(FingerprintCheck::Resume),
        Some(r) => fingerprint.changes_from(r),
        None if has_results(dir) => {
            vec!["no fingerprint recorded beside the results (an older xlt wrote them)".to_owned()]
        }
        None => {
            write_fingerprint(dir, fingerprint, true)?;
            return Ok(FingerprintCheck::New);
        }
    };
    if !fresh {
        return Err(StudyError::Changed {
            dir: dir.to_owned(),
            changes,
        });
    }
    tracing::warn!(dir = %dir.display(), changes = %changes.join("; "), "discarding the results of a different experiment");
    let mut doomed: Vec<&str> = RESULTS.iter().chain(ANALYSIS).copied().collect();
    if discard == Discard::ResultsAndPreparedFiles {
        doomed.extend(["manifest.json", "finetune", "eval"]);
    }
    remove_outputs(dir, &doomed)?;
    write_fingerprint(dir, fingerprint, false)?;
    Ok(FingerprintCheck::Discarded)
}

/// Removes `names` (files or directories) and every `*.svg` file from `dir`; a name that is
/// not there is fine.
pub(crate) fn remove_outputs(dir: &Path, names: &[&str]) -> Result<(), StudyError> {
    let mut doomed: Vec<PathBuf> = names.iter().map(|f| dir.join(f)).collect();
    if let Ok(entries) = std::fs::read_dir(dir) {
        doomed.extend(
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "svg")),
        );
    }
    for p in doomed {
        let result = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        match result {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(StudyError::Io {
                    path: p,
                    message: e.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// The key of [`FINGERPRINT_FILE`] beside `settings` that records the UTC day
/// (`2026-12-07`) the experiment was first recorded (prepared, or started by a step),
/// which its reports give as their date. It is not part of the fingerprint's identity
/// ([`Fingerprint`] has only `settings`): a rerun on another day resumes, and its report
/// keeps the first day, so that a resumed run's report matches an uninterrupted one's.
pub const PREPARED_ON_KEY: &str = "prepared_on";

/// The day `dir`'s fingerprint records as [`PREPARED_ON_KEY`]; `None` when there is none
/// (no fingerprint, or one written before the date was recorded).
pub fn prepared_on(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(FINGERPRINT_FILE)).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value.get(PREPARED_ON_KEY)?.as_str().map(str::to_owned)
}

/// Writes `fingerprint` into `dir` with the day it was prepared: the recorded one when
/// `keep_date` and there is one, else today's (UTC).
pub(crate) fn write_fingerprint(
    dir: &Path,
    fingerprint: &Fingerprint,
    keep_date: bool,
) -> Result<(), StudyError> {
    let day = keep_date
        .then(|| prepared_on(dir))
        .flatten()
        .unwrap_or_else(|| utc_day(std::time::SystemTime::now()));
    let mut value = serde_json::to_value(fingerprint).expect("serializes");
    value
        .as_object_mut()
        .expect("a fingerprint is an object")
        .insert(PREPARED_ON_KEY.to_owned(), day.into());
    let mut json = serde_json::to_string_pretty(&value).expect("serializes");
    json.push('\n');
    write_atomic(&dir.join(FINGERPRINT_FILE), json.as_bytes())
}

/// The UTC day of `time`, as `2026-12-07` (Howard Hinnant's days-to-civil).
pub(crate) fn utc_day(time: std::time::SystemTime) -> String {
    let secs = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use xlt_data::{Domain, Language, ManifestSlice};

    fn manifest(seed: u64) -> Manifest {
        Manifest {
            seed,
            train_fraction: 0.7,
            slices: [Language::English, Language::Yoruba]
                .map(|language| ManifestSlice {
                    language,
                    domain: Domain::Medical,
                    train_ids: vec!["anatomy/test/1".into()],
                    test_ids: vec!["anatomy/test/2".into()],
                })
                .to_vec(),
            dropped_duplicates: 0,
            dropped_unaligned: 0,
            sources: Vec::new(),
            dropped_ambiguous_key: Vec::new(),
            dropped_inconsistent: Vec::new(),
            ..Manifest::default()
        }
    }

    fn fingerprint(seed: u64, base_model: &str, prompt: &str) -> Fingerprint {
        let files = vec![(PathBuf::from("eval/en-medical.jsonl"), prompt.to_owned())];
        Fingerprint::new(
            &manifest(seed),
            &files,
            &RunSettings {
                provider: "openai",
                base_model,
                hyperparameters: Hyperparameters::study(),
                lora: None,
                train_slices: &[],
                grader: "regex",
                max_tokens: 16,
                temperature: 0.0,
            },
        )
    }

    #[test]
    fn lora_settings_are_fingerprinted_one_key_each() {
        let files = vec![(PathBuf::from("eval/en-medical.jsonl"), "Q?".to_owned())];
        let with = |lora: Option<&LoraSpec>| {
            Fingerprint::new(
                &manifest(1),
                &files,
                &RunSettings {
                    provider: "local",
                    base_model: "m",
                    hyperparameters: Hyperparameters::default(),
                    lora,
                    train_slices: &[],
                    grader: "regex",
                    max_tokens: 16,
                    temperature: 0.0,
                },
            )
        };
        let none = with(None);
        assert!(!none.settings.keys().any(|k| k.starts_with("lora")));
        let r16 = with(Some(&LoraSpec::default()));
        let r8 = with(Some(&LoraSpec {
            rank: 8,
            target_modules: vec!["q_proj".into(), "v_proj".into()],
            ..LoraSpec::default()
        }));
        assert_eq!(
            r8.changes_from(&r16),
            [
                "lora_rank: 16 -> 8",
                "lora_targets: q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj -> q_proj,v_proj"
            ]
        );
    }

    #[test]
    fn changes_name_every_setting_that_differs() {
        let a = fingerprint(1, "gpt-4.1-nano", "Q?");
        assert_eq!(a.settings["languages"], "en,yo");
        assert_eq!(a.settings["domains"], "medical");
        assert!(a.changes_from(&a).is_empty());
        let b = fingerprint(2, "gpt-4.1-mini", "Q?");
        assert_eq!(
            b.changes_from(&a),
            ["base_model: gpt-4.1-nano -> gpt-4.1-mini", "seed: 1 -> 2"]
        );
        // A changed prompt template shows only as the prepared files' digest.
        let c = fingerprint(1, "gpt-4.1-nano", "Question?");
        let changes = c.changes_from(&a);
        assert_eq!(changes.len(), 1);
        assert!(changes[0].starts_with("prepared_files: "), "{changes:?}");
    }

    #[test]
    fn the_prepared_part_is_the_full_fingerprints_data_keys() {
        let full = fingerprint(1, "m", "Q?");
        let files = vec![(PathBuf::from("eval/en-medical.jsonl"), "Q?".to_owned())];
        let prepared = Fingerprint::of_prepared(&manifest(1), &files);
        let keys: Vec<&str> = prepared.settings.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "domains",
                "languages",
                "prepared_files",
                "seed",
                "train_fraction"
            ]
        );
        for (k, v) in &prepared.settings {
            assert_eq!(&full.settings[k], v, "{k}");
        }
    }

    #[test]
    fn check_records_resumes_refuses_and_discards() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let a = fingerprint(1, "m", "Q?");
        let b = fingerprint(2, "m", "Q?");
        let check = |fp: &Fingerprint, fresh| check_fingerprint(d, fp, fresh, Discard::Results);
        assert_eq!(check(&a, false).unwrap(), FingerprintCheck::New);
        assert_eq!(check(&a, false).unwrap(), FingerprintCheck::Resume);
        std::fs::create_dir_all(d.join("outcomes")).unwrap();
        std::fs::write(d.join("outcomes/base.jsonl"), "{}\n").unwrap();
        std::fs::create_dir_all(d.join("cache")).unwrap();
        std::fs::write(d.join("cache/x.json"), "{}").unwrap();
        std::fs::write(d.join("manifest.json"), "{}").unwrap();
        std::fs::write(d.join("ledger.json"), "{}").unwrap();
        std::fs::write(d.join("endpoints.json"), "{}").unwrap();
        std::fs::create_dir_all(d.join("local/jobs")).unwrap();
        std::fs::write(d.join("report.md"), "# old").unwrap();
        // The day it was prepared is recorded beside the settings, and kept by a resume.
        let day = prepared_on(d).expect("prepared_on recorded");
        assert_eq!(day.len(), "2026-12-07".len(), "{day}");
        match check(&b, false) {
            Err(StudyError::Changed { changes, .. }) => assert_eq!(changes, ["seed: 1 -> 2"]),
            other => panic!("{other:?}"),
        }
        assert!(d.join("outcomes/base.jsonl").exists());
        assert_eq!(check(&b, true).unwrap(), FingerprintCheck::Discarded);
        assert!(!d.join("outcomes").exists());
        // The cache (keyed by request) and, for `Discard::Results`, the prepared files stay.
        assert!(d.join("cache/x.json").exists() && d.join("manifest.json").exists());
        // A clean run's directory otherwise: the ledger, the provider's state and the
        // analysis go; the endpoints still to stop stay.
        for gone in ["ledger.json", "local", "report.md"] {
            assert!(!d.join(gone).exists(), "{gone} survived the discard");
        }
        assert!(d.join("endpoints.json").exists());
        assert_eq!(check(&b, false).unwrap(), FingerprintCheck::Resume);
        assert!(prepared_on(d).is_some());
    }

    #[test]
    fn a_changed_json_setting_names_its_fields_and_a_path_is_shown_whole() {
        let fp = |hyper: &str, base: &str| Fingerprint {
            settings: [
                ("hyperparameters".to_owned(), hyper.to_owned()),
                ("base_model".to_owned(), base.to_owned()),
            ]
            .into_iter()
            .collect(),
        };
        let long = "/root/.cache/xlt/models/SmolLM2-135M-Instruct.Q4_1.gguf";
        let a = fp(
            r#"{"epochs":1,"batch_size":8,"warmup_ratio":0.1}"#,
            "./typo.gguf",
        );
        let b = fp(r#"{"epochs":1,"batch_size":8,"warmup_ratio":2.0}"#, long);
        assert_eq!(
            b.changes_from(&a),
            vec![
                format!("base_model: ./typo.gguf -> {long}"),
                "hyperparameters.warmup_ratio: 0.1 -> 2.0".to_owned(),
            ]
        );
    }
}
