//! Answers cut off by the output-token limit are counted per model, warned about in the
//! report and listed in `summary.json`.

use xlt_data::{AnswerLetter, Domain, Language, ResourceMap};
use xlt_grade::OutcomeRecord;
use xlt_stats::{Analysis, AnalysisConfig, Grid, ModelOutcomes, Slice};

fn outcome(id: usize, model: &str, finish_reason: &str) -> OutcomeRecord {
    let cut = finish_reason == "length";
    OutcomeRecord {
        sample_id: format!("s/test/{id}"),
        language: Language::Igbo,
        domain: Domain::Stem,
        model: model.to_owned(),
        response: if cut { String::new() } else { "A".to_owned() },
        letter: (!cut).then_some(AnswerLetter::A),
        method: if cut { "empty" } else { "bare" }.to_owned(),
        answer: AnswerLetter::A,
        correct: !cut,
        finish_reason: Some(finish_reason.to_owned()),
        letters: None,
    }
}

#[test]
fn truncated_answers_are_counted_per_model_and_warned_about() {
    let base = ModelOutcomes {
        label: "Base".into(),
        source: None,
        outcomes: (0..10).map(|i| outcome(i, "base", "stop")).collect(),
    };
    // 3 of the tuned model's 10 answers were cut off.
    let tuned = ModelOutcomes {
        label: "STEM ig".into(),
        source: Some(Slice::parse("STEM ig").unwrap()),
        outcomes: (0..10)
            .map(|i| outcome(i, "ft", if i < 3 { "length" } else { "stop" }))
            .collect(),
    };
    let grid = Grid::from_outcomes(&[base, tuned], &ResourceMap::study()).unwrap();
    assert_eq!(grid.truncated, [("STEM ig".to_owned(), 3)]);
    let a = Analysis::new(grid, &AnalysisConfig::default());
    let summary = a.summary_json();
    assert_eq!(
        summary["truncated_answers"],
        serde_json::json!({"STEM ig": 3})
    );
    let report = a.report_markdown();
    assert!(!report.contains("No warnings"), "{report}");
    assert!(
        report.contains("model `STEM ig`: 3 of 10 answers were cut off by the output-token limit"),
        "{report}"
    );
}
