//! The table-driven corpus: realistic responses in many languages with the letter a careful
//! reader takes from each (fixtures/grading/corpus.jsonl, made by make_corpus.py beside it).

use std::collections::BTreeSet;

use serde::Deserialize;
use xlt_data::AnswerLetter;
use xlt_grade::extract;

#[derive(Deserialize)]
struct Case {
    language: String,
    response: String,
    expected: Option<AnswerLetter>,
    options: Option<[String; 4]>,
}

#[test]
fn corpus_reads_as_a_person_would() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/grading/corpus.jsonl"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let cases: Vec<Case> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let languages: BTreeSet<&str> = cases.iter().map(|c| c.language.as_str()).collect();
    assert!(cases.len() >= 200, "corpus has {} cases", cases.len());
    assert!(
        languages.len() >= 15,
        "corpus has {} languages",
        languages.len()
    );
    let mut failures = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let got = extract(&c.response, c.options.as_ref());
        if got.letter != c.expected {
            failures.push(format!(
                "line {}: [{}] {:?}: expected {:?}, got {:?} ({})",
                i + 1,
                c.language,
                c.response,
                c.expected,
                got.letter,
                got.rule
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases fail:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
