//! Loading real Global-MMLU rows from every format, and every schema error on real rows.

mod common;

use std::path::Path;

use common::*;
use xlt_data::{DataError, Domain, Language, load_file, load_paths};

fn check_err(path: &Path, expected: &str) {
    let err = load_file(path, None).expect_err("should fail");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "error should name the file: {msg}"
    );
    assert!(msg.contains(expected), "expected `{expected}` in: {msg}");
}

#[test]
fn loads_every_lite_fixture_aligned() {
    let ds = load_paths(&[fixtures().join("global-mmlu/lite")]).unwrap();
    assert_eq!(ds.languages().len(), 9);
    assert_eq!(ds.len(), 9 * 400);
    let (aligned, report) = ds.align();
    assert_eq!(report.dropped_ids, 0);
    assert_eq!(aligned.items().len(), 400);
    let stem = aligned
        .items()
        .iter()
        .filter(|i| i.domain == Domain::Stem)
        .count();
    assert_eq!(stem, 46);
}

#[test]
fn loads_full_slice_and_dev_jsonl() {
    let dev = load_file(&fixtures().join("global-mmlu/full/en.dev.jsonl"), None).unwrap();
    assert_eq!(dev.len(), 285);
    assert_eq!(dev[0].sample_id, "abstract_algebra/dev/0");
    assert_eq!(
        dev[0].question,
        "Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field."
    );
    let slice = load_file(&fixtures().join("global-mmlu/full/en.test-slice.csv"), None).unwrap();
    assert_eq!(slice.len(), 780);
    // The whole fixture tree loads: the slice was cut to avoid Lite's ids.
    let all = load_paths(&[fixtures().join("global-mmlu")]).unwrap();
    assert_eq!(all.len(), 9 * 400 + 780 + 285);
}

#[test]
fn parquet_in_hugging_face_layout_reads_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    for lang in ["en", "yo", "ar"] {
        csv_to_parquet(
            &lite(lang),
            &dir.path()
                .join(format!("{lang}/test-00000-of-00001.parquet")),
        );
    }
    let from_parquet = load_paths(&[dir.path()]).unwrap();
    let from_csv = load_paths(&[lite("en"), lite("yo"), lite("ar")]).unwrap();
    assert_eq!(from_parquet.len(), 1200);
    assert_eq!(from_parquet, from_csv);
    // A single parquet file named by its language loads too.
    let single = dir.path().join("yo.test.parquet");
    std::fs::copy(dir.path().join("yo/test-00000-of-00001.parquet"), &single).unwrap();
    let rows = load_file(&single, None).unwrap();
    assert_eq!(rows.len(), 400);
    assert_eq!(rows[0].language, Language::Yoruba);
}

#[test]
fn explicit_language_overrides_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("questions.csv");
    std::fs::copy(lite("de"), &p).unwrap();
    assert!(matches!(
        load_file(&p, None),
        Err(DataError::LanguageNotInPath { .. })
    ));
    assert_eq!(
        load_file(&p, Some(Language::German)).unwrap()[0].language,
        Language::German
    );
}

/// Writes the first rows of the English fixture, changed by `edit`, to `name` in a new
/// temporary directory.
fn corrupted(
    name: &str,
    edit: impl FnOnce(&mut Vec<String>, &mut Vec<Vec<String>>),
) -> (tempfile::TempDir, std::path::PathBuf) {
    let (mut header, mut rows) = rows(&lite("en"), 5);
    edit(&mut header, &mut rows);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    write_csv(&path, &header, &rows);
    (dir, path)
}

#[test]
fn missing_column() {
    let (_d, p) = corrupted("en.test.csv", |h, rows| {
        let i = col(h, "answer");
        h.remove(i);
        rows.iter_mut().for_each(|r| {
            r.remove(i);
        });
    });
    check_err(&p, "missing column `answer`");
}

#[test]
fn answer_outside_a_to_d() {
    let (_d, p) = corrupted("en.test.csv", |h, rows| {
        rows[2][col(h, "answer")] = "E".into()
    });
    check_err(&p, "row 3: column `answer`: `E` is not one of A, B, C, D");
}

#[test]
fn lower_case_answer_is_rejected() {
    let (_d, p) = corrupted("en.test.csv", |h, rows| {
        rows[0][col(h, "answer")] = "b".into()
    });
    check_err(&p, "row 1: column `answer`");
}

#[test]
fn empty_question() {
    let (_d, p) = corrupted("en.test.csv", |h, rows| {
        rows[1][col(h, "question")] = String::new()
    });
    check_err(&p, "row 2: column `question` is empty");
}

#[test]
fn empty_option() {
    let (_d, p) = corrupted("en.test.csv", |h, rows| {
        rows[4][col(h, "option_c")] = "  ".into()
    });
    check_err(&p, "row 5: column `option_c` is empty");
}

#[test]
fn unknown_subject_category() {
    let (_d, p) = corrupted("en.test.csv", |h, rows| {
        rows[3][col(h, "subject_category")] = "Astrology".into()
    });
    check_err(
        &p,
        "row 4: column `subject_category`: unknown domain `Astrology`",
    );
}

#[test]
fn duplicate_sample_id_within_a_file() {
    let (_d, p) = corrupted("en.test.csv", |h, rows| {
        let c = col(h, "sample_id");
        rows[3][c] = rows[0][c].clone();
    });
    check_err(
        &p,
        "row 4: duplicate sample_id `astronomy/test/58` in language en",
    );
}

#[test]
fn duplicate_sample_id_across_files_of_one_language() {
    let (dir, _) = corrupted("en.a.csv", |_, _| {});
    let (h, r) = rows(&lite("en"), 2);
    let second = dir.path().join("en.b.csv");
    write_csv(&second, &h, &r);
    let err = load_paths(&[dir.path()]).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("en.b.csv: row 1: duplicate sample_id"),
        "{msg}"
    );
    assert!(
        msg.contains("first seen in") && msg.contains("en.a.csv"),
        "{msg}"
    );
}

#[test]
fn unknown_language_code_in_file_name() {
    let (_d, p) = corrupted("xx.test.csv", |_, _| {});
    let err = load_file(&p, None).unwrap_err();
    assert!(matches!(err, DataError::UnknownLanguage { ref code, .. } if code == "xx"));
    assert!(err.to_string().contains("xx.test.csv"), "{err}");
}

#[test]
fn ragged_csv_row_is_malformed() {
    let (_d, p) = corrupted("en.test.csv", |_, rows| rows[2].push("extra".into()));
    // A record longer than the header: the reader must refuse it, not truncate it.
    check_err(&p, "malformed CSV file");
}

#[test]
fn garbage_parquet_is_malformed() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("en.test.parquet");
    std::fs::write(&p, b"PAR1 this is not parquet").unwrap();
    check_err(&p, "malformed parquet file");
}

#[test]
fn broken_json_line_is_located() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("en.dev.jsonl");
    let text = std::fs::read_to_string(fixtures().join("global-mmlu/full/en.dev.jsonl")).unwrap();
    let mut lines: Vec<&str> = text.lines().take(5).collect();
    lines[2] = r#"{"sample_id": "abstract_algebra/dev/2", "subject": "#;
    std::fs::write(&p, lines.join("\n")).unwrap();
    check_err(&p, "malformed JSON Lines file: line 3");
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let err = load_paths(&[Path::new("/nonexistent/en.test.csv")]).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }));
    assert!(err.to_string().contains("/nonexistent/en.test.csv"));
    // The cause is in the message and not repeated as a source, so a report that prints
    // the whole chain prints it once.
    assert!(err.to_string().contains("No such file or directory"));
    assert!(std::error::Error::source(&err).is_none());
}

#[test]
fn header_only_file_names_the_file_with_no_rows() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("de.test.csv");
    let text = std::fs::read_to_string(fixtures().join("global-mmlu/lite/de.test.csv")).unwrap();
    std::fs::write(&p, format!("{}\n", text.lines().next().unwrap())).unwrap();
    let err = load_paths(&[&p]).unwrap_err();
    assert!(matches!(err, DataError::NoRows { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!("{}: no data rows (the file has only a header)", p.display())
    );
}

#[test]
fn directory_without_data_is_an_empty_slice() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("README.md"), "nothing").unwrap();
    assert!(matches!(
        load_paths(&[dir.path()]),
        Err(DataError::EmptySlice { .. })
    ));
}

#[test]
fn short_csv_row_reports_the_missing_field() {
    // Row 3 ends after `option_d`: its `answer` and later fields are missing, not empty.
    let mut columns = 0;
    let (_d, p) = corrupted("en.test.csv", |h, rows| {
        columns = h.len();
        rows[2].truncate(col(h, "answer"));
    });
    let fields = {
        let (h, _) = rows(&lite("en"), 1);
        col(&h, "answer")
    };
    check_err(
        &p,
        &format!(
            "row 3: {fields} fields for {columns} columns; column `answer` is missing (a short row)"
        ),
    );
    // An empty cell in a full row is still an empty cell.
    let (_d, p) = corrupted("en.test.csv", |h, rows| {
        rows[2][col(h, "answer")] = String::new()
    });
    check_err(&p, "row 3: column `answer` is empty");
}

#[test]
fn a_language_missing_from_the_data_names_the_languages_it_has() {
    let dataset = load_paths(&[lite("en"), lite("de")]).unwrap();
    let config = xlt_data::PrepareConfig {
        selection: xlt_data::Selection {
            languages: vec![Language::Amharic],
            ..xlt_data::Selection::default()
        },
        ..xlt_data::PrepareConfig::default()
    };
    let err = xlt_data::prepare(dataset, &config).unwrap_err().to_string();
    assert!(
        err.contains(
            "language am was selected but the data has no question in it; the data has de, en"
        ),
        "{err}"
    );
}
