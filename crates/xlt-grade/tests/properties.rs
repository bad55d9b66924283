//! Properties of grading: what must not change the letter read from a response.
//!
//! Responses are drawn from the grading corpus (fixtures/grading/corpus.jsonl) and from
//! answer phrases of the study's languages around random letters and filler.

use proptest::prelude::*;
use unicode_normalization::UnicodeNormalization;
use xlt_grade::extract;

fn corpus() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/grading/corpus.jsonl"
    );
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["response"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// Answer phrases of the study's languages (NFC), with a slot for the letter.
const TEMPLATES: &[&str] = &[
    "Answer: {}",
    "The correct answer is {}.",
    "Antwort: {}",
    "الإجابة: {}",
    "תשובה: {}",
    "Cevap: {}",
    "Ìdáhùn: {}",
    "Ìdáhùn tó tọ́ ni {}",
    "Azịza: {}",
    "መልስ: {}",
    "Жооп: {}",
    "{}) ọ̀rọ̀ tó tọ́",
    "**{}**",
];

const LETTERS: &[&str] = &["A", "B", "C", "D", "أ", "ب", "ג", "ד", "Ｂ", "E"];

const FILLER: &[&str] = &[
    "",
    "Let's think step by step. ",
    "Ọ̀rọ̀ yìí ṣòro. ",
    "Ụ̀zọ̀ dị mfe. ",
    "الكتلة لا تتغير. ",
    "Kütle değişmez. ",
];

fn response() -> impl Strategy<Value = String> {
    let generated = (
        prop::sample::select(FILLER),
        prop::sample::select(TEMPLATES),
        prop::sample::select(LETTERS),
    )
        .prop_map(|(f, t, l)| format!("{f}{}", t.replace("{}", l)));
    prop_oneof![prop::sample::select(corpus()), generated]
}

fn invisible() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(
            &[
                ' ', '\n', '\t', '\u{200B}', '\u{2060}', '\u{FEFF}', '\u{00A0}',
            ][..],
        ),
        0..4,
    )
    .prop_map(|cs| cs.into_iter().collect())
}

proptest! {
    #[test]
    fn grading_is_invariant_under_nfc_and_nfd(r in response()) {
        let nfc: String = r.nfc().collect();
        let nfd: String = r.nfd().collect();
        let want = extract(&nfc, None);
        prop_assert_eq!(extract(&nfd, None), want);
        prop_assert_eq!(extract(&r, None), want);
    }

    #[test]
    fn grading_is_invariant_under_surrounding_white_space_and_zero_width_characters(
        r in response(),
        before in invisible(),
        after in invisible(),
    ) {
        let padded = format!("{before}{r}{after}");
        prop_assert_eq!(extract(&padded, None), extract(&r, None));
    }

    #[test]
    fn a_closed_reasoning_block_stating_another_letter_does_not_count(
        r in response(),
        thought in prop::sample::select(&[
            "The answer is {}.",
            "Antwort: {}",
            "תשובה: {}",
            "Cevap: {}?",
            "Ìdáhùn: {}",
            "{}",
        ][..]),
        other in prop::sample::select(&["A", "B", "C", "D"][..]),
        tags in prop::sample::select(&[
            ("<think>", "</think>"),
            ("<thinking>", "</thinking>"),
            ("<reasoning>", "</reasoning>"),
            ("", "</think>"),
            ("[THINK]", "[/THINK]"),
        ][..]),
    ) {
        let (open, close) = tags;
        let wrapped = format!("{open}{}{close}\n\n{r}", thought.replace("{}", other));
        prop_assert_eq!(extract(&wrapped, None), extract(&r, None));
    }
}
