//! The `chat` example's contract for its input, on the embedded provider (no model to
//! fetch): every line is checked before the first request is sent, so a bad line costs
//! nothing; good lines are answered in input order.

mod common;

use common::*;

const GOOD: &str = r#"{"id": 1, "messages": [{"role": "user", "content": "A, B, C or D?"}]}"#;

fn chat(dir: &std::path::Path, stdin: &str) -> std::process::Output {
    run_example_with_stdin(
        "chat",
        &["--provider", "embedded", "--out", dir.to_str().unwrap()],
        Some(stdin),
    )
}

#[test]
fn a_bad_line_stops_chat_before_any_request_naming_its_line() {
    let dir = tempfile::tempdir().unwrap();
    for (input, message) in [
        (
            format!(
                "{GOOD}\n\n{}\n{{\"id\": 4}}\n",
                GOOD.replace(r#""id": 1"#, r#""id": 3"#)
            ),
            "stdin line 4: not a chat request",
        ),
        (
            format!("{GOOD}\n{{\"id\": 2, \"messages\": []}}\n{GOOD}\n"),
            "stdin line 2: no messages",
        ),
        (
            format!("{GOOD}\nnot json\n"),
            "stdin line 2: not a chat request",
        ),
        (
            GOOD.replace(r#""messages""#, r#""max_tokens": 0, "messages""#),
            "stdin line 1: max_tokens must be at least 1",
        ),
        (
            GOOD.replace(r#""messages""#, r#""temperature": -1, "messages""#),
            "stdin line 1: temperature -1 is outside [0, 2]",
        ),
        (
            GOOD.replace(r#""messages""#, r#""top_logprobs": 21, "messages""#),
            "stdin line 1: top_logprobs 21 is above 20",
        ),
        (
            format!("{GOOD}\n{GOOD}\n"),
            "stdin line 2: id 1 is already used on line 1",
        ),
    ] {
        let o = chat(dir.path(), &input);
        assert!(!o.status.success(), "{}", describe(&o));
        assert!(
            o.stdout.is_empty(),
            "answered before every line was checked: {}",
            describe(&o)
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(message), "{err}");
    }
    let help = run_example("chat", &["--help"]);
    assert!(
        String::from_utf8_lossy(&help.stdout).contains("before the first request is sent"),
        "{}",
        describe(&help)
    );
}

#[test]
fn good_lines_are_answered_in_input_order() {
    let dir = tempfile::tempdir().unwrap();
    let input: String = (1..=5)
        .map(|i| GOOD.replace(r#""id": 1"#, &format!(r#""id": {i}"#)) + "\n")
        .collect();
    let o = chat(dir.path(), &input);
    assert!(o.status.success(), "{}", describe(&o));
    let ids: Vec<u64> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(ids, [1, 2, 3, 4, 5]);
}
