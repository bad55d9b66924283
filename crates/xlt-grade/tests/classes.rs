//! The four classes of input that public harnesses have had bug reports about, each a table
//! of cases in several languages (the study's am, ar, de, en, he, ig, ky, tr, yo among
//! them), with the letter a person reads and, where it matters, the rule or reason.

use unicode_normalization::UnicodeNormalization;
use xlt_data::AnswerLetter::{self, A, B, C, D};
use xlt_grade::{Reasoning, Rule, extract, extract_with_reasoning};

/// One boundary, one helper: `response` must read as `expected`.
fn check(cases: &[(&str, &str, Option<AnswerLetter>)]) {
    let mut failures = Vec::new();
    for (lang, response, expected) in cases {
        let got = extract(response, None);
        if got.letter != *expected {
            failures.push(format!(
                "[{lang}] {response:?}: expected {expected:?}, got {:?} ({})",
                got.letter, got.rule
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn reasoning_blocks_never_outvote_the_answer_after_them() {
    let cases: &[(&str, &str, Option<AnswerLetter>)] = &[
        (
            "en",
            "<think>Maybe the answer is A.</think>\n\nFinal: **C**",
            Some(C),
        ),
        ("en", "Hmm, A? No.\n</think>\n\nB", Some(B)),
        (
            "de",
            "<think>Vielleicht ist die Antwort A.</think>\nAntwort: D",
            Some(D),
        ),
        ("ar", "<think>ربما الإجابة أ</think>\nالإجابة: ج", Some(C)),
        ("he", "<think>אולי התשובה היא א</think>\nתשובה: ב", Some(B)),
        ("tr", "<think>Belki cevap A.</think>\nCevap: C", Some(C)),
        ("yo", "<think>Bóyá ìdáhùn ni A.</think>\nÌdáhùn: D", Some(D)),
        (
            "ig",
            "<think>Ma eleghị anya azịza bụ A.</think>\nAzịza: B",
            Some(B),
        ),
        ("am", "<think>ምናልባት መልሱ A ነው</think>\nመልስ: C", Some(C)),
        ("ky", "<think>Балким жооп A.</think>\nЖооп: D", Some(D)),
        (
            "en",
            "<|channel|>analysis<|message|>Maybe A.<|end|><|start|>assistant<|channel|>final<|message|>Answer: B<|return|>",
            Some(B),
        ),
        (
            "en",
            "[THINK]A seems right.[/THINK]The answer is D.",
            Some(D),
        ),
        (
            "en",
            "Thinking...\nI think A.\n...done thinking.\n\nC",
            Some(C),
        ),
        ("en", "<reasoning>Answer: A</reasoning>\nAnswer: B", Some(B)),
        // Thinking that never closed: cut off, no answer.
        (
            "en",
            "<think>Maybe the answer is A. Let me check the units",
            None,
        ),
        ("ky", "<think>Жооп: A, анткени", None),
        ("he", "<think>התשובה היא א כי", None),
        ("tr", "<think>Cevap: B olabilir ama", None),
        (
            "en",
            "<|channel|>analysis<|message|>The answer is C because",
            None,
        ),
        ("en", "Thinking...\nAnswer: B", None),
    ];
    check(cases);
    for (_, response, expected) in cases {
        let (reasoning, e) = extract_with_reasoning(response, None);
        if expected.is_some() {
            assert_eq!(reasoning, Reasoning::Stripped, "{response:?}");
        } else {
            assert_eq!(reasoning, Reasoning::Truncated, "{response:?}");
            assert_eq!(e.rule, Rule::TruncatedReasoning, "{response:?}");
            assert_eq!(e.rule.as_str(), "truncated_reasoning");
        }
    }
    assert_eq!(Reasoning::Stripped.as_str(), "reasoning_stripped");
    assert_eq!(
        extract_with_reasoning("Answer: B", None).0,
        Reasoning::Absent
    );
}

#[test]
fn decomposed_and_compatibility_forms_read_as_composed_ones() {
    let cases: &[(&str, &str, Option<AnswerLetter>)] = &[
        ("yo", "Ìdáhùn: B", Some(B)),
        ("yo", "Ìdáhùn tó tọ́ ni C", Some(C)),
        ("ig", "Azịza: D", Some(D)),
        ("ig", "Azịza ziri ezi bụ A", Some(A)),
        ("ar", "الإجابة: أ", Some(A)),
        ("ar", "الإجابة الصحيحة هي ج", Some(C)),
        ("ar", "الإجابة: ﺏ", Some(B)),
        ("he", "תשובה: \u{200B}ג", Some(C)),
        ("de", "Lösung: B", Some(B)),
        ("de", "Antwort: Ｃ", Some(C)),
        ("tr", "Cevap: 𝐁", Some(B)),
        ("tr", "Doğru cevap\u{00AD}: D", Some(D)),
        ("am", "መልስ: \u{200B}C", Some(C)),
        ("ky", "Жооп: 𝐃", Some(D)),
        ("en", "Answer:\u{2060} B", Some(B)),
        ("en", "Ⓑ", Some(B)),
        ("en", "\u{FEFF}Answer: A", Some(A)),
    ];
    check(cases);
    // Every case reads the same in NFD, and in NFKD where NFKD keeps the letter.
    let nfd: Vec<(&str, String, Option<AnswerLetter>)> = cases
        .iter()
        .map(|(l, r, e)| (*l, r.nfd().collect(), *e))
        .collect();
    for (lang, response, expected) in &nfd {
        assert_ne!(lang.len(), 0);
        assert_eq!(
            extract(response, None).letter,
            *expected,
            "NFD {response:?}"
        );
    }
    // The two the issue names: decomposed, they once read as no answer.
    let yo: String = "Ìdáhùn: B".nfd().collect();
    assert_ne!(yo, "Ìdáhùn: B");
    assert_eq!(extract(&yo, None).letter, Some(B));
    let ar: String = "الإجابة: أ".nfd().collect();
    assert!(ar.contains('\u{0654}'));
    assert_eq!(extract(&ar, None).letter, Some(A));
}

#[test]
fn a_capital_that_begins_a_word_or_a_list_of_eliminated_options_is_not_the_answer() {
    check(&[
        ("en", "Answer: A close look at the units gives D.", Some(D)),
        ("it", "Risposta: A mio avviso la B.", Some(B)),
        ("fr", "Réponse : A priori, c'est C.", Some(C)),
        ("es", "Respuesta: A partir de los datos, D.", Some(D)),
        ("pt", "Resposta: A meu ver, C.", Some(C)),
        ("en", "Answer: after excluding A and C, B.", Some(B)),
        ("id", "Jawaban: A dan D salah, jadi B.", Some(B)),
        ("de", "Antwort: A und C scheiden aus, also D.", Some(D)),
        ("tr", "Cevap: A ve B yanlış, yani C.", Some(C)),
        ("yo", "Ìdáhùn: A àti B kò tọ́, nítorí náà D.", Some(D)),
        ("ig", "Azịza: A na C ezighi ezi, ya mere B.", Some(B)),
        ("ar", "الإجابة: أ و ج خاطئتان، لذا ب.", Some(B)),
        ("am", "መልስ: A እና C ስህተት ናቸው፣ ስለዚህ B።", Some(B)),
        ("ky", "Жооп: A жана C туура эмес, демек D.", Some(D)),
        // A letter that is the answer stays the answer.
        ("en", "Answer: B because the mass does not change.", Some(B)),
        ("en", "Answer: A is correct.", Some(A)),
        ("en", "Answer: A.", Some(A)),
        ("en", "Answer: C Higher in the sky", Some(C)),
        ("en", "The answer is C, and C only.", Some(C)),
        ("he", "תשובה: ב כי המסה נשמרת", Some(B)),
        ("de", "Antwort: A, weil die Masse gleich bleibt.", Some(A)),
        ("tr", "Cevap: A, çünkü kütle değişmez.", Some(A)),
        // Two letters and nothing left: a hedge, not an answer.
        ("en", "Answer: A and C", None),
        ("tr", "Cevap: A ve C", None),
    ]);
    let opts = [
        "heller".to_owned(),
        "dunkler".to_owned(),
        "höher am Himmel".to_owned(),
        "tiefer am Himmel".to_owned(),
    ];
    // A lower-case word after the letter that is the option's own text.
    let e = extract("Antwort: A heller", Some(&opts));
    assert_eq!(e.letter, Some(A));
}

#[test]
fn a_letter_after_an_echoed_option_list_is_the_answer() {
    check(&[
        ("en", "A) 3\nB) 4\nC) 5\nD) 6\n\nB", Some(B)),
        (
            "en",
            "**A)** 3\n**B)** 4\n**C)** 5\n**D)** 6\n\n**D**",
            Some(D),
        ),
        (
            "de",
            "A) heller\nB) dunkler\nC) höher am Himmel\nD) tiefer am Himmel\n\nC",
            Some(C),
        ),
        ("ar", "أ) ٣\nب) ٤\nج) ٥\nد) ٦\n\nج", Some(C)),
        ("he", "א. 3\nב. 4\nג. 5\nד. 6\n\nד", Some(D)),
        (
            "tr",
            "A) Ankara\nB) İstanbul\nC) İzmir\nD) Bursa\n\nA",
            Some(A),
        ),
        ("yo", "A) ọ̀kan\nB) méjì\nC) mẹ́ta\nD) mẹ́rin\n\nD", Some(D)),
        ("ig", "A. otu\nB. abụọ\nC. atọ\nD. anọ\n\nB", Some(B)),
        ("am", "A) አንድ\nB) ሁለት\nC) ሶስት\nD) አራት\n\nC", Some(C)),
        ("ky", "A) бир\nB) эки\nC) үч\nD) төрт\n\nA", Some(A)),
        // The list alone, or the list and two letters: no answer.
        ("en", "A) 3\nB) 4\nC) 5\nD) 6", None),
        ("en", "A) 3\nB) 4\nC) 5\nD) 6\n\nB or C", None),
    ]);
}
