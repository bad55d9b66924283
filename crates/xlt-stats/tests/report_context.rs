//! A report says what it is and what it cannot show: on outcomes shaped like the local
//! SmolLM2 study of issue #26 (two models, two test sets of 14 questions, a base model below
//! chance that answers `A` on 20 of 28 questions whose key has `A` twice, 7 answers graded by
//! a judge that is the base model itself).

use xlt_data::{AnswerLetter, Domain, Language, ResourceMap};
use xlt_grade::OutcomeRecord;
use xlt_stats::{Analysis, AnalysisConfig, Grid, ModelOutcomes, ReportContext, Slice};

const BASE_MODEL: &str = "HuggingFaceTB/SmolLM2-135M-Instruct";

/// The key of question `i`: `A` for question 0 only, then B, C, D in turn, so that `A` is
/// the key of 2 of the 28 questions of the two test sets.
fn key(i: usize) -> AnswerLetter {
    if i == 0 {
        AnswerLetter::A
    } else {
        AnswerLetter::ALL[1 + (i - 1) % 3]
    }
}

/// A wrong letter for question `i` other than `A`.
fn wrong(i: usize) -> AnswerLetter {
    let guess = AnswerLetter::ALL[1 + i % 3];
    if guess == key(i) {
        AnswerLetter::ALL[1 + (i + 1) % 3]
    } else {
        guess
    }
}

fn outcome(
    model: &str,
    language: Language,
    i: usize,
    letter: Option<AnswerLetter>,
    method: &str,
) -> OutcomeRecord {
    OutcomeRecord {
        sample_id: format!("q{i}"),
        language,
        domain: Domain::Stem,
        model: model.to_owned(),
        response: letter.map_or_else(|| "maybe".to_owned(), |l| l.to_string()),
        letter,
        method: method.to_owned(),
        answer: key(i),
        correct: letter == Some(key(i)),
        finish_reason: Some("stop".to_owned()),
        letters: None,
    }
}

/// The base model: `A` on questions 0-9 of both test sets (right only on question 0).
/// English: 10 and 11 right, 12 and 13 wrong, all four read by the judge (3 of 14 right).
/// German: 10 right, 11 and 12 wrong, by the judge; 13 no letter (2 of 14 right).
/// So 5 of 28 right (17.9%), 7 answers judged, `A` chosen 20 times.
fn base() -> Vec<OutcomeRecord> {
    let mut v = Vec::new();
    for lang in [Language::English, Language::German] {
        for i in 0..10 {
            v.push(outcome(BASE_MODEL, lang, i, Some(AnswerLetter::A), "bare"));
        }
    }
    let en = Language::English;
    v.push(outcome(BASE_MODEL, en, 10, Some(key(10)), "llm"));
    v.push(outcome(BASE_MODEL, en, 11, Some(key(11)), "llm"));
    v.push(outcome(BASE_MODEL, en, 12, Some(wrong(12)), "llm"));
    v.push(outcome(BASE_MODEL, en, 13, Some(wrong(13)), "llm"));
    let de = Language::German;
    v.push(outcome(BASE_MODEL, de, 10, Some(key(10)), "llm"));
    v.push(outcome(BASE_MODEL, de, 11, Some(wrong(11)), "llm"));
    v.push(outcome(BASE_MODEL, de, 12, Some(wrong(12)), "llm"));
    v.push(outcome(BASE_MODEL, de, 13, None, "hedge"));
    v
}

/// A fine-tuned model right on the first `en` questions in English and `de` in German.
fn tuned(label: &str, en: usize, de: usize) -> Vec<OutcomeRecord> {
    let mut v = Vec::new();
    for (lang, right) in [(Language::English, en), (Language::German, de)] {
        for i in 0..14 {
            let letter = if i < right { key(i) } else { wrong(i) };
            v.push(outcome(label, lang, i, Some(letter), "bare"));
        }
    }
    v
}

fn context() -> ReportContext {
    ReportContext {
        provider: "local".to_owned(),
        base_model: BASE_MODEL.to_owned(),
        base_model_version: Some("sha256:3f2e0c1d".to_owned()),
        benchmark: "Global-MMLU (fixtures)".to_owned(),
        languages: vec![Language::English, Language::German],
        domains: vec![Domain::Stem],
        scoring: "generation, max 16 tokens, temperature 0".to_owned(),
        grader: "rules, then LLM judge".to_owned(),
        judge_model: Some(BASE_MODEL.to_owned()),
        date: "2026-12-06".to_owned(),
        notes: Vec::new(),
        data: None,
    }
}

fn analysis() -> Analysis {
    let slice = |l| Slice {
        domain: Domain::Stem,
        language: l,
    };
    let models = [
        ModelOutcomes {
            label: "Base".to_owned(),
            source: None,
            outcomes: base(),
        },
        ModelOutcomes {
            label: "STEM en".to_owned(),
            source: Some(slice(Language::English)),
            outcomes: tuned("en", 9, 7),
        },
        ModelOutcomes {
            label: "STEM de".to_owned(),
            source: Some(slice(Language::German)),
            outcomes: tuned("de", 6, 8),
        },
    ];
    let grid = Grid::from_outcomes(&models, &ResourceMap::study()).unwrap();
    let config = AnalysisConfig {
        context: Some(context()),
        ..AnalysisConfig::default()
    };
    Analysis::new(grid, &config)
}

/// Asserts that `text` contains `want`, printing both when it does not.
fn has(text: &str, want: &str) {
    assert!(text.contains(want), "expected {want:?} in:\n{text}");
}

#[test]
fn report_head_names_what_produced_it() {
    let report = analysis().report_markdown();
    has(&report, "| provider | local |");
    has(
        &report,
        "| base model | HuggingFaceTB/SmolLM2-135M-Instruct (sha256:3f2e0c1d) |",
    );
    has(&report, "| languages | en, de |");
    has(&report, "| domains | STEM |");
    has(
        &report,
        "| grader | rules, then LLM judge (judge: HuggingFaceTB/SmolLM2-135M-Instruct) |",
    );
    has(&report, "| date | 2026-12-06 |");
    let bare = Analysis::new(analysis().grid, &AnalysisConfig::default()).report_markdown();
    has(&bare, "The caller gave no context");
}

#[test]
fn accuracy_table_flags_chance_level() {
    let report = analysis().report_markdown();
    // Columns by language code: de, en. Base: 2/14 = 14.3%, 3/14 = 21.4%, 5/28 = 17.9%;
    // exact binomial p against 0.25 of 5 in 28 is 0.5136 (see `binomial_test`'s test).
    has(
        &report,
        "| Base | 14.3 (14) † | 21.4 (14) † | 17.9 (28) † |",
    );
    // STEM en: 7/14 = 50.0% in German (p = 0.056: flagged), 9/14 = 64.3% (p = 0.0022),
    // 16/28 = 57.1% (p = 0.00029); p-values by the same exact definition in Python.
    has(&report, "| STEM en | 50.0 (14) † | 64.3 (14) | 57.1 (28) |");
    has(
        &report,
        "**Not distinguishable from chance** over all its test sets: Base (17.9% of 28, p = 0.514).",
    );
    let summary = analysis().summary_json();
    let p = summary["models"][0]["p_chance"].as_f64().unwrap();
    assert!((p - 0.513_649_192_674_978_8).abs() < 1e-12, "p_chance {p}");
    assert_eq!(
        summary["models"][0]["correct"], 5,
        "{}",
        summary["models"][0]
    );
}

#[test]
fn judge_share_and_self_judging_are_reported() {
    let a = analysis();
    let report = a.report_markdown();
    has(
        &report,
        "7 of 84 answers (8.3%) were graded by the LLM judge",
    );
    has(&report, "| Base | 28 | 7 (25.0%) | 1 |");
    has(&report, "**Warning:** the judge is the model under test");
    assert_eq!(a.summary_json()["judge_is_model_under_test"], true);
    // Another judge: no warning.
    let mut config = a.config.clone();
    config.context.as_mut().unwrap().judge_model = Some("gpt-4o-mini".to_owned());
    let other = Analysis::new(a.grid.clone(), &config).report_markdown();
    assert!(!other.contains("**Warning:**"), "{other}");
}

#[test]
fn lopsided_letters_are_shown_beside_the_key() {
    let report = analysis().report_markdown();
    has(&report, "## Chosen letters");
    // A chosen 20 times; the key has A twice, B 9, C 9, D 8 (questions 1-13 cycle B, C, D).
    has(&report, "| Base | 20 / 2 |");
}

#[test]
fn too_few_instances_give_no_regression_interval_or_colour() {
    let a = analysis();
    let report = a.report_markdown();
    assert!(
        !report.contains("SE 0.00") && !report.contains("| 0.00 |"),
        "{report}"
    );
    // In plain words: what the fit has, what it needs, and what selection gives enough.
    has(
        &report,
        "Not fitted: too few instances: its 3 terms need at least 6 instances (2 per term) from at least 3 training slices and 3 test sets, and it has 4 instances from 2 training slices x 2 test sets; a selection of at least 3 language-domain slices, each fine-tuned and tested, gives enough",
    );
    has(
        &report,
        "The transfer regression was not fitted: too few instances: its 3 terms need at least 6 instances (2 per term) from at least 3 training slices and 3 test sets, and it has 4 instances from 2 training slices x 2 test sets",
    );
    assert!(!report.contains("model: too few"), "{report}");
    has(&report, "too few");
    let svgs = a.heatmaps();
    let gain = &svgs[1].1;
    assert_eq!(
        gain.matches("too few").count(),
        4,
        "every gain cell rests on 14 questions, under 30:\n{gain}"
    );
    assert!(gain.contains("n=14"), "{gain}");
    // Every cell (46 x 30 pixels) is the light grey of "too few", and there is no legend.
    let cells: Vec<&str> = gain
        .split("<rect")
        .filter(|r| r.contains(r#"width="46" height="30""#) && r.contains(r#"stroke="none""#))
        .collect();
    assert_eq!(cells.len(), 4, "{gain}");
    for c in cells {
        assert!(
            c.contains("#EEEEEE"),
            "a cell resting on too few questions is coloured: {c}"
        );
    }
    assert!(gain.contains("no cell is coloured"), "{gain}");
    // summary.json keeps each group's primary interval but says where the report prints
    // "too few" (2 models x 2 test sets: under 3 clusters).
    let json = a.summary_json();
    let types = json["transfer_types"].as_object().unwrap();
    assert!(!types.is_empty(), "{json}");
    for (name, g) in types {
        assert_eq!(g["primary"]["too_few"], true, "{name}: {}", g["primary"]);
    }
}

#[test]
fn closing_summary_says_what_was_found() {
    let text = analysis().closing_summary();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "Base model: 17.9% correct on 28 questions (chance 25.0%; not distinguishable from chance, exact binomial p = 0.514).",
        "{text}"
    );
    has(&text, "Largest gains (pp): ");
    has(&text, "too few questions for an interval, n = 14");
    has(&text, "No gain survives correction for 4 tests");
    has(
        &text,
        "Warning: 7 answers were graded by a judge that is the model under test.",
    );
    // The report ends with the same lines.
    has(&analysis().report_markdown(), &format!("- {}", lines[0]));
}

#[test]
fn local_study_report_snapshot() {
    insta::assert_snapshot!(analysis().report_markdown());
}

/// A manifest of an AfriMMLU experiment under MMLU's scheme whose audits excluded a whole
/// language, one block of a file, two ambiguous keys and one inconsistent id.
fn afrimmlu_manifest() -> xlt_data::Manifest {
    use xlt_data::{
        AmbiguousKey, Benchmark, DomainScheme, Inconsistency, Manifest, ManifestSlice,
        MisalignedFile, MisalignedLanguage, SourceRecord,
    };
    Manifest {
        seed: 42,
        train_fraction: 0.7,
        slices: [Language::English, Language::German]
            .map(|language| ManifestSlice {
                language,
                domain: Domain::Stem,
                train_ids: vec!["elementary_mathematics/test/1".into()],
                test_ids: vec!["elementary_mathematics/test/2".into()],
            })
            .to_vec(),
        sources: vec![SourceRecord {
            source: "afrimmlu:fixtures/afrimmlu".to_owned(),
            revision: String::new(),
            commit: String::new(),
            files: vec!["eng.test.tsv".to_owned(), "deu.test.tsv".to_owned()],
            benchmark: Some(Benchmark::AfriMmlu),
        }],
        dropped_ambiguous_key: ["a/test/1", "a/test/2"]
            .map(|id| AmbiguousKey {
                sample_id: id.to_owned(),
                languages: vec![Language::English],
            })
            .to_vec(),
        dropped_unaligned: 3,
        dropped_inconsistent: vec![Inconsistency {
            sample_id: "b/test/3".to_owned(),
            languages: vec![Language::German],
            fields: vec!["answer".to_owned()],
        }],
        domain_scheme: DomainScheme::Mmlu,
        misaligned_files: vec![MisalignedFile {
            language: Language::English,
            file: "fixtures/afrimmlu/eng.test.tsv".into(),
            subject: "international_law".to_owned(),
            agreement: 0.19,
            chance: 0.28,
            compared: 100,
            dropped_rows: 100,
        }],
        excluded_languages: vec![Language::Amharic],
        misaligned_languages: vec![MisalignedLanguage {
            language: Language::Amharic,
            files: vec!["fixtures/afrimmlu/amh.test.tsv".into()],
            closest: Language::English,
            agreement: 0.276,
            chance: 0.253,
            compared: 601,
            dropped_rows: 608,
        }],
        ..Manifest::default()
    }
}

/// The report's `## Input` section, up to the next section.
fn input_section(report: &str) -> &str {
    let start = report.find("## Input").expect("an Input section");
    let end = report[start + 1..]
        .find("\n## ")
        .map_or(report.len(), |e| start + 1 + e);
    &report[start..end]
}

#[test]
fn input_names_benchmark_source_scheme_and_what_the_audits_excluded() {
    let mut config = AnalysisConfig {
        context: Some(context()),
        ..AnalysisConfig::default()
    };
    let data = xlt_stats::DataContext::from_manifest(&afrimmlu_manifest());
    config.context.as_mut().unwrap().data = Some(data);
    let report = Analysis::new(analysis().grid, &config).report_markdown();
    let input = input_section(&report);
    has(
        input,
        "Data: AfriMMLU: afrimmlu:fixtures/afrimmlu (2 files). Domain scheme: mmlu.",
    );
    assert!(!input.contains("files given by path"), "{input}");
    has(
        input,
        "- language am (Amharic) misaligned as a whole (whole-language audit): 608 rows; its answer keys agree with the other languages' at chance (at best 27.6% with en, chance 25.3%)",
    );
    has(
        input,
        "- en international_law in fixtures/afrimmlu/eng.test.tsv misaligned (block audit): 100 rows; agreement 19.0%, chance 28.0%",
    );
    has(
        input,
        "- ambiguous answer keys, in any domain (answer-key audit): 2 questions x 2 languages = 4 rows",
    );
    has(
        input,
        "- questions missing from some language (alignment): 3 questions, dropped in each language that holds them: fewer than 6 rows",
    );
    has(
        input,
        "- questions whose answer or numbers differ between languages (consistency audit): 1 question x 2 languages = 2 rows",
    );
    insta::assert_snapshot!(input);

    // Without a recorded source (Global-MMLU files given by a plain path) and no exclusion.
    let mut clean = afrimmlu_manifest();
    clean.sources.clear();
    clean.misaligned_files.clear();
    clean.misaligned_languages.clear();
    clean.excluded_languages.clear();
    clean.dropped_ambiguous_key.clear();
    clean.dropped_inconsistent.clear();
    clean.dropped_unaligned = 0;
    clean.domain_scheme = xlt_data::DomainScheme::Study;
    config.context.as_mut().unwrap().data = Some(xlt_stats::DataContext::from_manifest(&clean));
    let report = Analysis::new(analysis().grid, &config).report_markdown();
    let input = input_section(&report);
    has(
        input,
        "Data: files given by path, read as Global-MMLU. Domain scheme: study.",
    );
    has(input, "The data audits excluded no row.");
}
