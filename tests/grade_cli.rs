//! The `grade` example's contract: JSON Lines in, one line out per input, in order.

mod common;

use common::*;

#[test]
fn grades_in_input_order_and_tolerates_unparseable() {
    let input = concat!(
        r#"{"id": "q1", "language": "de", "response": "Antwort: A ... Antwort: C"}"#,
        "\n",
        r#"{"id": "q2", "language": "ar", "response": "الإجابة الصحيحة هي ب"}"#,
        "\n\n",
        r#"{"id": "q3", "language": "en", "response": "A or B"}"#,
        "\n",
        r#"{"id": "q4", "language": "en", "response": "Five kilograms of feathers", "options": ["A kilogram of feathers", "Five pounds of bricks", "Five kilograms of feathers", "A kilogram of bricks"]}"#,
        "\n",
    );
    let out = run_example_with_stdin("grade", &[], Some(input));
    assert!(out.status.success(), "{}", describe(&out));
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let expected = [
        r#"{"id":"q1","letter":"C","method":"phrase"}"#,
        r#"{"id":"q2","letter":"B","method":"phrase"}"#,
        r#"{"id":"q3","letter":null,"method":"hedge"}"#,
        r#"{"id":"q4","letter":"C","method":"option_text"}"#,
    ];
    let expected: Vec<serde_json::Value> = expected
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, expected);
}

#[test]
fn malformed_line_fails_with_its_number() {
    let input = concat!(
        r#"{"id": "q1", "language": "en", "response": "B"}"#,
        "\n",
        r#"{"id": "q2", "language": "en", "response": "#,
        "\n",
    );
    let out = run_example_with_stdin("grade", &[], Some(input));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stdin: line 2:"), "{err}");
}

#[test]
fn unknown_language_is_a_malformed_line() {
    let input = r#"{"id": "q1", "language": "qq", "response": "B"}"#;
    let out = run_example_with_stdin("grade", &[], Some(input));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 1") && err.contains("unknown language code `qq`"),
        "{err}"
    );
}
