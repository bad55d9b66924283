//! The answer-key and cross-language consistency audits, on real Global-MMLU rows
//! (fixtures/data-audit, made by make_audit_fixtures.py beside them).

mod common;

use common::fixtures;
use xlt_data::{Language, PrepareConfig, load_paths, prepare};

fn ids<T>(items: &[T], id: impl Fn(&T) -> &str) -> Vec<String> {
    items.iter().map(|d| id(d).to_owned()).collect()
}

/// The four questions of the full English test split whose key is ambiguous.
const AMBIGUOUS: [&str; 4] = [
    "elementary_mathematics/test/113",
    "high_school_macroeconomics/test/183",
    "international_law/test/51",
    "sociology/test/197",
];

#[test]
fn ambiguous_keys_of_the_full_english_split_are_dropped() {
    let ds = load_paths(&[fixtures().join("data-audit/ambiguous-key")]).unwrap();
    assert_eq!(ds.len(), 4);
    let (kept, report) = ds.audit_answer_keys();
    assert!(kept.is_empty());
    assert_eq!(report.dropped_rows, 4);
    assert_eq!(ids(&report.dropped, |d| &d.sample_id), AMBIGUOUS);
    assert!(
        report
            .dropped
            .iter()
            .all(|d| d.languages == [Language::English])
    );
}

#[test]
fn prepare_reports_ambiguous_keys_by_id() {
    // The rows with ambiguous keys next to the ordinary slice of the full English split:
    // the audit sees every row of the selected languages, also outside the selected domains.
    let ds = load_paths(&[
        fixtures().join("global-mmlu/full/en.test-slice.csv"),
        fixtures().join("data-audit/ambiguous-key/en.test.csv"),
    ])
    .unwrap();
    let prepared = prepare(ds, &PrepareConfig::default()).unwrap();
    let m = &prepared.manifest;
    assert_eq!(ids(&m.dropped_ambiguous_key, |d| &d.sample_id), AMBIGUOUS);
    let summary = prepared.summary();
    assert!(summary.contains("dropped ambiguous key: 4"), "{summary}");
    for id in AMBIGUOUS {
        assert!(
            summary.contains(&format!("ambiguous key: {id} (en)")),
            "{summary}"
        );
        assert!(
            m.slices.iter().all(
                |s| !s.train_ids.iter().any(|t| t == id) && !s.test_ids.iter().any(|t| t == id)
            )
        );
    }
    let json = &prepared.files().last().unwrap().1;
    assert!(json.contains("\"dropped_ambiguous_key\""));
    assert!(json.contains("elementary_mathematics/test/113"));
}

#[test]
fn lite_world_history_ids_that_mean_other_questions_are_dropped() {
    // All 15 Lite languages; zh and ko hold other questions under these ids.
    let ds = load_paths(&[fixtures().join("data-audit/world-history")]).unwrap();
    assert_eq!(ds.languages().len(), 15);
    let (ds, align) = ds.align();
    assert_eq!(align.dropped_ids, 0);
    let (kept, report) = ds.audit_consistency();
    let by_id = |id: &str| {
        report
            .dropped
            .iter()
            .find(|d| d.sample_id == id)
            .unwrap_or_else(|| panic!("{id} not dropped: {report:?}"))
    };
    use Language::{Chinese as Zh, Korean as Ko};
    // The answer letter of zh or ko differs from the 13 or 14 others.
    let answers: &[(&str, &[Language])] = &[
        ("high_school_world_history/test/33", &[Ko, Zh]),
        ("high_school_world_history/test/58", &[Ko, Zh]),
        ("high_school_world_history/test/87", &[Ko, Zh]),
        ("high_school_world_history/test/93", &[Ko, Zh]),
        ("high_school_world_history/test/115", &[Ko, Zh]),
        ("high_school_world_history/test/145", &[Ko, Zh]),
        ("high_school_world_history/test/157", &[Zh]),
        ("high_school_world_history/test/187", &[Zh]),
    ];
    for (id, langs) in answers {
        let d = by_id(id);
        assert!(d.fields.contains(&"answer".to_owned()), "{d:?}");
        for l in *langs {
            assert!(d.languages.contains(l), "{d:?}");
        }
    }
    // test/93: a different question in zh and ko, whose years contradict the others'.
    let d = by_id("high_school_world_history/test/93");
    assert_eq!(d.languages, [Ko, Zh]);
    assert_eq!(d.fields, ["answer", "question"]);
    // Two ids whose letters agree, but whose zh text is another question (other years).
    for id in [
        "high_school_world_history/test/67",
        "high_school_world_history/test/225",
    ] {
        let d = by_id(id);
        assert_eq!(d.fields, ["question"], "{d:?}");
        assert!(d.languages.contains(&Zh), "{d:?}");
    }
    // Dropped in every language: no row of a dropped id is left.
    assert_eq!(report.dropped_rows, 15 * report.dropped.len());
    assert!(
        kept.questions()
            .iter()
            .all(|q| report.dropped.iter().all(|d| d.sample_id != q.sample_id))
    );
}

#[test]
fn prepare_on_the_lite_fixtures_reports_the_inconsistent_world_history_ids() {
    let ds = load_paths(&[fixtures().join("global-mmlu/lite")]).unwrap();
    let prepared = prepare(ds, &PrepareConfig::default()).unwrap();
    let m = &prepared.manifest;
    // Chinese high-school world history is misaligned as a whole in Lite (its answer keys
    // agree with the others' on 3 of its 10 ids): the block goes, and its ids with it, in
    // every language, before the id-by-id audit.
    assert_eq!(m.misaligned_files.len(), 1, "{:#?}", m.misaligned_files);
    let block = &m.misaligned_files[0];
    assert_eq!(
        (block.language, block.subject.as_str(), block.compared),
        (Language::Chinese, "high_school_world_history", 10)
    );
    assert!(block.file.ends_with("zh.test.csv"));
    assert!(
        (block.agreement - 0.3).abs() < 1e-9,
        "agreement {}",
        block.agreement
    );
    let summary = prepared.summary();
    assert!(
        summary.contains("zh.test.csv: language zh is misaligned in subject high_school_world_history: its answer keys agree with the other languages' on 30.0% of 10 ids (chance 24.0%)"),
        "{summary}"
    );
    for n in [33, 58, 87, 93, 145, 157, 187] {
        let id = format!("high_school_world_history/test/{n}");
        assert!(
            m.slices
                .iter()
                .all(|s| !s.train_ids.contains(&id) && !s.test_ids.contains(&id)),
            "{id} is still in a slice"
        );
    }
    // international_law/test/51 is in Lite too, with two identical options in English.
    assert!(
        m.dropped_ambiguous_key
            .iter()
            .any(|d| d.sample_id == "international_law/test/51")
    );
    assert!(m.leakage().is_clean());
}

#[test]
fn a_key_ambiguous_only_in_an_unselected_language_does_not_drop_the_question() {
    use xlt_data::Selection;
    // international_law/test/42 has two identical options in Swahili only.
    let prepare_in = |languages: Vec<Language>| {
        let ds = load_paths(&[fixtures().join("global-mmlu/lite")]).unwrap();
        let config = PrepareConfig {
            selection: Selection {
                languages,
                ..Selection::default()
            },
            ..PrepareConfig::default()
        };
        let m = prepare(ds, &config).unwrap().manifest;
        ids(&m.dropped_ambiguous_key, |d| &d.sample_id)
    };
    let with_sw = prepare_in(vec![Language::English, Language::Swahili]);
    assert!(
        with_sw.contains(&"international_law/test/42".to_owned()),
        "{with_sw:?}"
    );
    let without = prepare_in(vec![Language::English, Language::Yoruba]);
    assert_eq!(without, ["international_law/test/51"]);
}
