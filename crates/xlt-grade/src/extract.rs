//! Deterministic extraction of the chosen letter from a model's response.

use std::borrow::Cow;
use std::fmt;
use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use serde::{Deserialize, Serialize};
use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};
use xlt_data::AnswerLetter;

use crate::reasoning::{Reasoning, strip_reasoning};

/// Which rule produced an extraction, or why none could.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Rule {
    /// The whole response is one letter, perhaps wrapped: `B`, `(B)`, `B.`, `**B**`, `ب`.
    Bare,
    /// The last `\boxed{B}`.
    Boxed,
    /// The letter after the last answer phrase: `Answer: B`, `Die Antwort ist B`, `答案：B`.
    Phrase,
    /// The one letter the response states, with no answer phrase: `B) 42`, `<answer>B</answer>`.
    Letter,
    /// The response gives an option's text, and only one option matches.
    OptionText,
    /// Nothing to read.
    Empty,
    /// The response hedges between letters (`A or B`), or names several with no final one.
    Hedge,
    /// The response declines to answer.
    Refusal,
    /// The response names a letter outside A-D.
    OutOfRange,
    /// No answer found.
    NoAnswer,
    /// The response's reasoning block never closed (cut off by `max_tokens`, say): an
    /// unfinished answer, not a vote for the last letter its thinking mentioned.
    TruncatedReasoning,
}

impl Rule {
    /// The rule's name as written in outputs: `bare`, `boxed`, `phrase`, `letter`,
    /// `option_text`, `empty`, `hedge`, `refusal`, `out_of_range`, `no_answer`,
    /// `truncated_reasoning`.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Bare => "bare",
            Rule::Boxed => "boxed",
            Rule::Phrase => "phrase",
            Rule::Letter => "letter",
            Rule::OptionText => "option_text",
            Rule::Empty => "empty",
            Rule::Hedge => "hedge",
            Rule::Refusal => "refusal",
            Rule::OutOfRange => "out_of_range",
            Rule::NoAnswer => "no_answer",
            Rule::TruncatedReasoning => "truncated_reasoning",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of extraction: a letter, or none, and the rule that decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extraction {
    /// The chosen letter; `None` if the response is unparseable.
    pub letter: Option<AnswerLetter>,
    /// The rule that fired, or the reason there is no letter.
    pub rule: Rule,
}

impl Extraction {
    fn found(letter: AnswerLetter, rule: Rule) -> Extraction {
        Extraction {
            letter: Some(letter),
            rule,
        }
    }

    fn none(rule: Rule) -> Extraction {
        Extraction { letter: None, rule }
    }
}

/// Anything that reads a letter from a response. Implement it to plug a custom extractor
/// into the graders of this crate.
///
/// ```
/// use xlt_grade::{Extraction, Extractor, Rule, RuleExtractor};
/// use xlt_data::AnswerLetter;
///
/// /// Reads "Option 1".."Option 4" as A-D, else defers to the default rules.
/// struct Numbered;
/// impl Extractor for Numbered {
///     fn extract(&self, response: &str, options: Option<&[String; 4]>) -> Extraction {
///         let t = response.trim();
///         if let Some(n) = t.strip_prefix("Option ").and_then(|n| n.parse::<usize>().ok()) {
///             if let Some(l) = n.checked_sub(1).and_then(AnswerLetter::from_index) {
///                 return Extraction { letter: Some(l), rule: Rule::Letter };
///             }
///         }
///         RuleExtractor.extract(response, options)
///     }
/// }
/// assert_eq!(Numbered.extract("Option 3", None).letter, Some(AnswerLetter::C));
/// assert_eq!(Numbered.extract("Answer: D", None).letter, Some(AnswerLetter::D));
/// ```
pub trait Extractor: Send + Sync {
    /// Extracts the letter from `response`; `options` (A-D texts), when given, let a
    /// response that quotes an option's text be matched.
    fn extract(&self, response: &str, options: Option<&[String; 4]>) -> Extraction;
}

/// The default extractor: the rules of [`Rule`], in that order, with answer phrases in the
/// 42 Global-MMLU languages. See [`extract`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RuleExtractor;

impl Extractor for RuleExtractor {
    fn extract(&self, response: &str, options: Option<&[String; 4]>) -> Extraction {
        extract(response, options)
    }
}

/// Answer phrases, by language. Sources, word by word, in the crate docs' table "Answer
/// words": OpenAI's and NVIDIA's simple-evals answer patterns; inflections and synonyms
/// models write are marked there as unconfirmed.
const PHRASES: &[(&str, &[&str])] = &[
    (
        "en",
        &[
            "answer",
            "option",
            "choice",
            "i choose",
            "i pick",
            "i'd pick",
            "i would pick",
            "i'd choose",
            "i would choose",
            "i'd go with",
            "i would go with",
            "i select",
        ],
    ),
    ("de", &["antwort", "lösung", "auswahl"]),
    ("es", &["respuesta", "opción", "opcion", "alternativa"]),
    ("fr", &["réponse", "RÉPONSE", "Réponse", "reponse"]),
    ("pt", &["resposta", "opção", "alternativa correta"]),
    ("it", &["risposta", "opzione"]),
    ("nl", &["antwoord"]),
    ("sv", &["svar", "svaret"]),
    ("pl", &["odpowiedź", "Odpowiedź", "odpowiedz"]),
    ("cs", &["odpověď", "Odpověď", "odpoved"]),
    (
        "ro",
        &["răspuns", "Răspuns", "raspuns", "răspunsul", "Răspunsul"],
    ),
    ("lt", &["atsakymas"]),
    ("id", &["jawaban", "jawabannya", "pilihan"]),
    ("ms", &["jawapan", "jawapannya"]),
    ("fil", &["sagot", "ang sagot"]),
    (
        "tr",
        &[
            "cevap", "cevabı", "cevabım", "yanıt", "yanit", "seçenek", "şık",
        ],
    ),
    ("sw", &["jibu", "chaguo"]),
    (
        "yo",
        &["ìdáhùn", "Ìdáhùn", "idahun", "idáhùn", "ìdáhun", "àṣàyàn"],
    ),
    ("ig", &["azịza", "Azịza", "aziza", "azịzị"]),
    ("ha", &["amsa", "amsar"]),
    ("so", &["jawaab", "jawaabta"]),
    ("sn", &["mhinduro"]),
    ("ny", &["yankho"]),
    ("mg", &["valiny"]),
    (
        "vi",
        &["đáp án", "Đáp án", "ĐÁP ÁN", "câu trả lời", "Câu trả lời"],
    ),
    ("am", &["መልስ", "መልሱ", "ምላሽ"]),
    (
        "ar",
        &["الإجابة", "الاجابة", "إجابة", "اجابة", "الجواب", "جواب"],
    ),
    ("fa", &["پاسخ", "جواب"]),
    ("he", &["תשובה", "התשובה", "תשובתי"]),
    ("ky", &["жооп", "Жооп", "ЖООП", "жообу", "Жообу"]),
    ("ru", &["ответ", "Ответ", "ОТВЕТ"]),
    ("uk", &["відповідь", "Відповідь"]),
    ("sr", &["одговор", "Одговор", "odgovor"]),
    ("el", &["απάντηση", "Απάντηση", "ΑΠΑΝΤΗΣΗ"]),
    ("hi", &["उत्तर", "जवाब"]),
    ("ne", &["उत्तर", "जवाफ"]),
    ("bn", &["উত্তর", "উত্তরঃ"]),
    ("si", &["පිළිතුර"]),
    ("te", &["సమాధానం", "జవాబు"]),
    ("zh", &["答案", "答", "选项", "正确选项", "答案是"]),
    ("ja", &["答え", "正解", "回答", "解答"]),
    ("ko", &["정답", "답", "답변"]),
];

/// Words that, right before a letter, mean the letter is rejected ("C, not A").
const NEGATIONS: &[&str] = &[
    "not", "nicht", "kein", "pas", "non", "no", "não", "nao", "nie", "niet", "inte", "değil",
    "sio", "bukan", "tidak", "не", "לא", "ليس", "ليست", "لا", "不是", "不", "非", "아니", "ikke",
    "nu", "δεν",
];

/// Words between two letters that make a hedge ("A or B").
const HEDGES: &[&str] = &[
    "or", "oder", "ou", "o", "of", "eller", "lub", "albo", "nebo", "sau", "veya", "ya", "yoksa",
    "au", "atau", "atawa", "или", "або", "או", "أو", "او", "或", "或者", "还是", "또는", "か", "/",
    "bzw",
];

/// Words before the last letter that mark a self-correction: the later letter wins.
const CORRECTIONS: &[&str] = &[
    "actually",
    "wait",
    "correction",
    "i mean",
    "on second thought",
    "eigentlich",
    "korrektur",
    "en realidad",
    "en fait",
    "na verdade",
    "anzi",
    "aslında",
    "sebenarnya",
    "kwa kweli",
    "на самом деле",
    "实际上",
    "其实",
    "更正",
    "実は",
    "사실",
];

/// Phrases that mark a refusal, when no letter is found.
const REFUSALS: &[&str] = &[
    "i cannot",
    "i can't",
    "i can not",
    "i'm unable",
    "i am unable",
    "i'm sorry",
    "i am sorry",
    "i don't know",
    "i do not know",
    "cannot determine",
    "can't determine",
    "none of the",
    "no correct",
    "ich kann nicht",
    "keine der",
    "no puedo",
    "ninguna de",
    "je ne peux pas",
    "aucune des",
    "não posso",
    "nenhuma das",
    "non posso",
    "nessuna delle",
    "无法",
    "不能",
    "できません",
    "할 수 없",
    "لا أستطيع",
    "لا يمكنني",
    "אינני יכול",
    "אני לא יכול",
    "cevap veremem",
    "siwezi",
    "tidak dapat",
    "не могу",
];

/// Weak phrases name an option rather than state the answer ("option A is wrong"): they
/// count only when no strong phrase gives a letter.
const WEAK: &[&str] = &[
    "option",
    "choice",
    "opción",
    "opcion",
    "alternativa",
    "opzione",
    "opção",
    "seçenek",
    "şık",
    "chaguo",
    "选项",
    "pilihan",
    "auswahl",
];

struct Tables {
    phrases: AhoCorasick,
    phrase_latin: Vec<bool>,
    phrase_weak: Vec<bool>,
}

static TABLES: LazyLock<Tables> = LazyLock::new(|| {
    // Responses are read in NFC (see `normalize_text`), so the phrases are put in NFC too.
    let mut patterns: Vec<String> = PHRASES
        .iter()
        .flat_map(|(_, ps)| ps.iter().map(|p| p.nfc().collect::<String>()))
        .collect();
    patterns.sort_unstable();
    patterns.dedup();
    let phrase_latin = patterns.iter().map(|p| is_spaced_script(p)).collect();
    let phrase_weak = patterns
        .iter()
        .map(|p| WEAK.iter().any(|w| w.nfc().eq(p.chars())))
        .collect();
    let phrases = AhoCorasickBuilder::new()
        .ascii_case_insensitive(true)
        .match_kind(MatchKind::LeftmostLongest)
        .build(&patterns)
        .expect("phrase table builds");
    Tables {
        phrases,
        phrase_latin,
        phrase_weak,
    }
});

/// Scripts that separate words with spaces and where a phrase must stand as a word of its
/// own (Latin, Greek, Cyrillic); elsewhere (Hebrew and Arabic prefixes, CJK, Ethiopic) a
/// phrase may be attached to its neighbours.
fn is_spaced_script(p: &str) -> bool {
    p.chars().next().is_some_and(|c| (c as u32) < 0x0590)
}

/// Maps a character to a letter: A-D, full-width Ａ-Ｄ, Arabic أ ب ج د (and bare alif),
/// Hebrew א ב ג ד. Lower-case a-d and ａ-ｄ map too; callers decide where those count.
fn letter_of(c: char) -> Option<AnswerLetter> {
    use AnswerLetter::*;
    match c {
        'A' | 'a' | 'Ａ' | 'ａ' | 'أ' | 'ا' | 'א' => Some(A),
        'B' | 'b' | 'Ｂ' | 'ｂ' | 'ب' | 'ב' => Some(B),
        'C' | 'c' | 'Ｃ' | 'ｃ' | 'ج' | 'ג' => Some(C),
        'D' | 'd' | 'Ｄ' | 'ｄ' | 'د' | 'ד' => Some(D),
        _ => None,
    }
}

fn is_lower_latin(c: char) -> bool {
    matches!(c, 'a'..='d' | 'ａ'..='ｄ')
}

/// A character that continues a word. Han, kana and Hangul do not: those scripts attach
/// particles to a letter (`答案是C`, `정답은 C입니다`) without a space.
fn is_word(c: char) -> bool {
    ((c.is_alphanumeric() || c == '_') && !is_unspaced(c)) || is_combining(c)
}

/// Combining diacritics (Yoruba tone marks written decomposed, Arabic harakat, Hebrew
/// points): part of the word they sit on.
fn is_combining(c: char) -> bool {
    matches!(c as u32,
        0x0300..=0x036F | 0x0591..=0x05C7 | 0x064B..=0x065F | 0x1AB0..=0x1AFF
        | 0x1DC0..=0x1DFF | 0x20D0..=0x20FF)
}

fn is_unspaced(c: char) -> bool {
    matches!(c as u32,
        0x1100..=0x11FF | 0x3040..=0x30FF | 0x3130..=0x318F | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF | 0xAC00..=0xD7AF | 0xF900..=0xFAFF | 0xFF00..=0xFFEF)
}

/// A letter token found in the text.
#[derive(Debug, Clone, Copy)]
enum Token {
    Letter(AnswerLetter),
    /// An upper-case Latin letter E-H standing alone (an option that does not exist).
    Other,
}

/// Is there a stand-alone letter at byte `i` (char `c`)? Returns the token and its end.
fn token_at(text: &str, i: usize, c: char, in_phrase: bool) -> Option<(Token, usize)> {
    let prev = text[..i].chars().next_back();
    let end = i + c.len_utf8();
    let next = text[end..].chars().next();
    if prev.is_some_and(is_word) || next.is_some_and(is_word) {
        return None;
    }
    if ('E'..='H').contains(&c) {
        return if in_phrase {
            Some((Token::Other, end))
        } else {
            None
        };
    }
    let letter = letter_of(c)?;
    if is_lower_latin(c) {
        // A lower-case letter counts only when formatted: `b)`, `(b`, `b.`, or at the end.
        let formatted = matches!(next, None | Some(')' | ']' | '.' | ':' | '*' | ',' | '\n'))
            || prev == Some('(');
        if !formatted {
            return None;
        }
    }
    Some((Token::Letter(letter), end))
}

/// The word before byte `i`, lower-cased, skipping white space and light punctuation.
fn word_before(text: &str, i: usize) -> String {
    let head = text[..i].trim_end_matches(|c: char| c.is_whitespace() || ",:;*\"'(“«".contains(c));
    let start = head
        .char_indices()
        .rev()
        .find(|(_, c)| !is_word(*c) && *c != '\'')
        .map(|(j, c)| j + c.len_utf8())
        .unwrap_or(0);
    let word = &head[start..];
    if word.is_empty() {
        // CJK has no spaces: take the last two characters.
        let tail: String = head
            .chars()
            .rev()
            .take(2)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return tail;
    }
    word.to_lowercase()
}

fn is_negated(text: &str, i: usize) -> bool {
    let w = word_before(text, i);
    NEGATIONS
        .iter()
        .any(|n| w == *n || (!n.is_ascii() && w.ends_with(n)))
}

/// After a letter ending at `end`: is it followed by a hedge word and another letter?
fn hedged_after(text: &str, end: usize) -> bool {
    let rest = text[end..].trim_start_matches(|c: char| c.is_whitespace() || ")].*,".contains(c));
    for h in HEDGES {
        let matches_word = rest.len() >= h.len()
            && rest.is_char_boundary(h.len())
            && rest[..h.len()].eq_ignore_ascii_case(h);
        if !matches_word {
            continue;
        }
        let after = &rest[h.len()..];
        if h.chars().all(char::is_alphabetic)
            && h.is_ascii()
            && after.chars().next().is_some_and(is_word)
        {
            continue;
        }
        let after = after.trim_start_matches(|c: char| c.is_whitespace() || "(*[".contains(c));
        if let Some(c) = after.chars().next() {
            let rest_after = &after[c.len_utf8()..];
            let standalone = !rest_after.chars().next().is_some_and(is_word);
            if standalone && letter_of(c).is_some() && !is_lower_latin(c) {
                return true;
            }
        }
    }
    false
}

/// Step 1: the whole response is a letter in some wrapping.
fn bare(text: &str) -> Option<Extraction> {
    let t = text
        .trim()
        .trim_start_matches("\\boxed")
        .trim_matches(|c: char| {
            c.is_whitespace() || "*()[]{}.:;,\"'`$「」『』。【】<>".contains(c)
        });
    let mut chars = t.chars();
    let c = chars.next()?;
    if chars.next().is_some() {
        return None;
    }
    if let Some(l) = letter_of(c) {
        return Some(Extraction::found(l, Rule::Bare));
    }
    if ('E'..='H').contains(&c) {
        return Some(Extraction::none(Rule::OutOfRange));
    }
    None
}

/// Step 2: the last `\boxed{...}` holding a letter.
fn boxed(text: &str) -> Option<Extraction> {
    let i = text.rfind("\\boxed{")?;
    let inner = &text[i + 7..];
    let inner = &inner[..inner.find('}')?];
    let inner = inner
        .trim()
        .trim_start_matches("\\text{")
        .trim_start_matches("\\mathrm{")
        .trim_matches(|c: char| c.is_whitespace() || "()}".contains(c));
    let mut chars = inner.chars();
    let c = chars.next()?;
    match (letter_of(c), chars.next()) {
        (Some(l), None) => Some(Extraction::found(l, Rule::Boxed)),
        (None, None) if ('E'..='H').contains(&c) => Some(Extraction::none(Rule::OutOfRange)),
        _ => None,
    }
}

/// What follows one answer phrase: the first letter within a short window, with at most
/// three other words before it ("is", "option", "la"), so that "This answer is correct
/// because option A is wrong" does not read as A.
///
/// The letter of an answer stands alone. A capital `A` that begins a phrase (`Answer: A
/// close look ... gives D`, `Risposta: A mio avviso la B`, `Réponse : A priori, c'est C`)
/// is a word, and a list of letters (`after excluding A and C, B`, `A dan D salah, jadi
/// B`) names eliminated options: in both cases the answer is the last stand-alone letter
/// of the sentence after them (none, for a list: a hedge).
fn after_phrase(text: &str, start: usize, options: Option<&[String; 4]>) -> Option<Extraction> {
    const WINDOW: usize = 60;
    const MAX_WORDS: usize = 3;
    let mut words = 0;
    let mut in_word = false;
    let window_end = text[start..]
        .char_indices()
        .nth(WINDOW)
        .map(|(j, _)| start + j)
        .unwrap_or(text.len());
    let mut seen_content = false;
    for (j, c) in text[start..window_end].char_indices() {
        let i = start + j;
        if c == '\n' && seen_content {
            break;
        }
        // A sentence ends: stop, unless the stop directly follows a letter (handled below).
        if is_sentence_end(text, i, c) && seen_content {
            break;
        }
        if !c.is_whitespace() && !":：-–—*#\"'“”«»(".contains(c) {
            seen_content = true;
        }
        if let Some((tok, end)) = token_at(text, i, c, true) {
            if is_negated(text, i) {
                continue;
            }
            let l = match tok {
                Token::Other => return Some(Extraction::none(Rule::OutOfRange)),
                Token::Letter(l) => l,
            };
            if hedged_after(text, end) {
                return Some(Extraction::none(Rule::Hedge));
            }
            let list_end = list_after(text, end);
            if let Some(list_end) = list_end {
                return Some(match last_standalone(text, list_end, options) {
                    Some(last) => Extraction::found(last, Rule::Phrase),
                    None => Extraction::none(Rule::Hedge),
                });
            }
            if c == 'A' && begins_phrase(text, end, l, options) {
                let last = last_standalone(text, end, options).unwrap_or(l);
                return Some(Extraction::found(last, Rule::Phrase));
            }
            return Some(Extraction::found(l, Rule::Phrase));
        }
        let w = is_word(c);
        if w && !in_word {
            words += 1;
            if words > MAX_WORDS {
                break;
            }
        }
        in_word = w;
    }
    None
}

/// A full stop, exclamation or question mark at byte `i` (char `c`) followed by white space
/// or the end.
fn is_sentence_end(text: &str, i: usize, c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '。' | '！' | '？' | '۔')
        && text[i + c.len_utf8()..]
            .chars()
            .next()
            .is_none_or(char::is_whitespace)
}

/// Words that join letters into a list ("A and C", "A dan D", "A ve C").
const CONJUNCTIONS: &[&str] = &[
    "and", "und", "et", "y", "e", "en", "och", "og", "i", "și", "si", "ve", "dan", "na", "da",
    "àti", "ati", "jana", "жана", "и", "і", "та", "ו", "و", "和", "与", "及", "과", "와", "&",
    "እና",
];

/// After a letter ending at `end`: is it the first of a list of at least two different
/// letters joined by conjunctions (and commas before one)? Returns where the list ends.
fn list_after(text: &str, end: usize) -> Option<usize> {
    let first = letter_before(text, end)?;
    let mut pos = end;
    let mut distinct = false;
    loop {
        let rest = &text[pos..];
        let trimmed = rest.trim_start_matches([' ', '*']);
        let (after_comma, comma) = match trimmed.strip_prefix(',') {
            Some(r) => (r.trim_start(), true),
            None => (trimmed, false),
        };
        let after_conj = CONJUNCTIONS.iter().find_map(|w| {
            let r = after_comma.strip_prefix(w)?;
            // a conjunction written as a word stands alone; CJK ones attach
            let attached = !w.chars().all(char::is_alphabetic) || is_unspaced(w.chars().next()?);
            if attached || r.starts_with(' ') {
                Some(r.trim_start())
            } else {
                None
            }
        });
        let (next, joined_by_conj) = match after_conj {
            Some(r) => (r, true),
            None if comma => (after_comma, false),
            None => break,
        };
        let Some(c) = next.chars().next() else { break };
        let at = text.len() - next.len();
        let Some((Token::Letter(l), tok_end)) = token_at(text, at, c, true) else {
            break;
        };
        if !joined_by_conj {
            // "A, C and D": a comma joins only when the list goes on after the letter.
            let after = text[tok_end..].trim_start();
            let goes_on = after.starts_with(',')
                || CONJUNCTIONS
                    .iter()
                    .any(|w| after.strip_prefix(w).is_some_and(|r| r.starts_with(' ')));
            if !goes_on {
                break;
            }
        }
        distinct |= l != first;
        pos = tok_end;
    }
    (distinct && pos > end).then_some(pos)
}

/// The letter that ends at byte `end`.
fn letter_before(text: &str, end: usize) -> Option<AnswerLetter> {
    text[..end].chars().next_back().and_then(letter_of)
}

/// Is the letter `l` ending at `end` the first word of a phrase rather than an answer?
/// It is when a lower-case word follows it that is not the start of option `l`'s text.
fn begins_phrase(text: &str, end: usize, l: AnswerLetter, options: Option<&[String; 4]>) -> bool {
    let rest = &text[end..];
    let Some(after) = rest.strip_prefix(' ') else {
        return false;
    };
    if !after.chars().next().is_some_and(char::is_lowercase) {
        return false;
    }
    if let Some(opts) = options {
        let option = normalize(&opts[l.index()]);
        if !option.is_empty() && normalize(after).starts_with(&option) {
            return false;
        }
    }
    true
}

/// The last letter after byte `from`, up to the end of its sentence, that stands alone:
/// not negated, and not followed by a lower-case word (unless that word begins its option).
fn last_standalone(text: &str, from: usize, options: Option<&[String; 4]>) -> Option<AnswerLetter> {
    const MAX_CHARS: usize = 300;
    let mut last = None;
    for (n, (j, c)) in text[from..].char_indices().enumerate() {
        let i = from + j;
        if n > MAX_CHARS || c == '\n' || (n > 0 && is_sentence_end(text, i, c)) {
            break;
        }
        let Some((Token::Letter(l), end)) = token_at(text, i, c, true) else {
            continue;
        };
        if is_negated(text, i) {
            continue;
        }
        if !begins_phrase(text, end, l, options) {
            last = Some(l);
        }
    }
    last
}

/// Step 3: the last strong answer phrase followed by a letter, else the last weak one.
fn phrase(text: &str, options: Option<&[String; 4]>) -> Option<Extraction> {
    let tables = &*TABLES;
    let mut last = None;
    let mut last_weak = None;
    for m in tables.phrases.find_iter(text) {
        if tables.phrase_latin[m.pattern().as_usize()] {
            let before = text[..m.start()].chars().next_back();
            let after = text[m.end()..].chars().next();
            if before.is_some_and(is_word) || after.is_some_and(char::is_alphabetic) {
                continue;
            }
        }
        if let Some(e) = after_phrase(text, m.end(), options) {
            if tables.phrase_weak[m.pattern().as_usize()] {
                last_weak = Some(e);
            } else {
                last = Some(e);
            }
        }
    }
    last.or(last_weak)
}

/// Step 4: the letters the response states without a phrase.
fn letters(text: &str) -> Option<Extraction> {
    let mut found: Vec<(usize, AnswerLetter)> = Vec::new();
    for (i, c) in text.char_indices() {
        if letter_of(c).is_none() {
            continue;
        }
        let Some((Token::Letter(l), end)) = token_at(text, i, c, false) else {
            continue;
        };
        if is_negated(text, i) {
            continue;
        }
        if hedged_after(text, end) {
            return Some(Extraction::none(Rule::Hedge));
        }
        // English article: "A kilogram of bricks".
        if c == 'A' {
            let mut rest = text[end..].chars();
            if rest.next() == Some(' ') && rest.next().is_some_and(char::is_lowercase) {
                continue;
            }
        }
        found.push((i, l));
    }
    let (&(last_pos, last), rest) = found.split_last()?;
    if rest.iter().all(|(_, l)| *l == last) {
        return Some(Extraction::found(last, Rule::Letter));
    }
    let lower = text[..last_pos].to_lowercase();
    if CORRECTIONS.iter().any(|c| lower.contains(c)) {
        return Some(Extraction::found(last, Rule::Letter));
    }
    Some(Extraction::none(Rule::Hedge))
}

fn normalize(s: &str) -> String {
    let s: String = s.nfc().collect();
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
        .trim_matches(|c: char| c.is_ascii_punctuation() || c == '。')
        .to_owned()
}

/// Step 5: the response quotes exactly one option's text (or one that contains the others).
fn option_text(text: &str, options: &[String; 4]) -> Option<Extraction> {
    let resp = normalize(text);
    let opts: Vec<String> = options.iter().map(|o| normalize(o)).collect();
    if let Some(i) = opts.iter().position(|o| !o.is_empty() && *o == resp) {
        if opts.iter().filter(|o| **o == resp).count() == 1 {
            return AnswerLetter::from_index(i).map(|l| Extraction::found(l, Rule::OptionText));
        }
        return None;
    }
    let contained: Vec<usize> = (0..4)
        .filter(|&i| opts[i].chars().count() >= 2 && contains_phrase(&resp, &opts[i]))
        .collect();
    let longest = *contained.iter().max_by_key(|&&i| opts[i].len())?;
    let unambiguous = contained
        .iter()
        .all(|&i| i == longest || (opts[longest].contains(&opts[i]) && opts[longest] != opts[i]));
    if unambiguous {
        AnswerLetter::from_index(longest).map(|l| Extraction::found(l, Rule::OptionText))
    } else {
        None
    }
}

/// `needle` in `hay` at word boundaries.
fn contains_phrase(hay: &str, needle: &str) -> bool {
    hay.match_indices(needle).any(|(i, _)| {
        let before = hay[..i].chars().next_back();
        let after = hay[i + needle.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

fn is_refusal(text: &str) -> bool {
    let lower = text.to_lowercase();
    REFUSALS.iter().any(|r| lower.contains(r))
}

/// An echoed option list: lines labelled A, B, C and D, in that order (other lines may sit
/// between them). Returns the text after the line of the last label, if any is left.
fn after_echoed_options(text: &str) -> Option<&str> {
    let mut expected = 0;
    let mut list_end = 0;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        let start = pos;
        pos += line.len();
        let label = line
            .trim_start()
            .trim_start_matches(['*', '(', '[', '#', '-', ' ']);
        let mut chars = label.chars();
        let (Some(c), next) = (chars.next(), chars.next()) else {
            continue;
        };
        let labelled = matches!(next, Some(')' | '.' | ':' | ']' | '）' | '．' | '*' | '-'));
        if labelled && letter_of(c).map(AnswerLetter::index) == Some(expected) {
            expected += 1;
            if expected == 4 {
                list_end = start + line.len();
                break;
            }
        }
    }
    let rest = &text[list_end..];
    (expected == 4 && !rest.trim().is_empty()).then_some(rest)
}

/// Step 0: text as the rules read it. NFC, so that decomposed tone marks (Yoruba `Ìdáhùn`,
/// Igbo `Azịza`) and the Arabic `أ` (alif and a combining hamza) match; NFKC only for the
/// compatibility forms that are letters in disguise (full-width `Ｂ`, Arabic presentation
/// forms, mathematical `𝐁`, circled `Ⓑ`), since NFKC elsewhere would also rewrite digits
/// and symbols; zero-width characters removed. ASCII text and text already in NFC with
/// none of those characters, nearly every response, is borrowed, not copied.
fn normalize_text(s: &str) -> Cow<'_, str> {
    if s.is_ascii() {
        return Cow::Borrowed(s);
    }
    // One pass: what needs mapping, and whether an NFC check is needed at all (every
    // character below U+0300 is NFC as it stands).
    let (mut mapped, mut fullwidth_only, mut beyond_latin1) = (false, true, false);
    let (mut after_mapped, mut combining_after_mapped) = (false, false);
    for c in s.chars() {
        if after_mapped && is_combining(c) {
            combining_after_mapped = true;
        }
        after_mapped = is_zero_width(c) || is_compat_letter(c);
        if after_mapped {
            mapped = true;
            fullwidth_only &= is_zero_width(c) || is_fullwidth_ascii(c);
        } else if c as u32 >= 0x300 {
            beyond_latin1 = true;
        }
    }
    let nfc = !beyond_latin1 || is_nfc_quick(s.chars()) == IsNormalized::Yes;
    if nfc && !mapped {
        return Cow::Borrowed(s);
    }
    if nfc && fullwidth_only && !combining_after_mapped {
        // Full-width ASCII's NFKC is ASCII (U+FF01..U+FF5E to U+0021..U+007E), and with no
        // combining mark after it nothing can compose: NFC holds without a second pass.
        return Cow::Owned(
            s.chars()
                .filter(|c| !is_zero_width(*c))
                .map(|c| {
                    if is_fullwidth_ascii(c) {
                        char::from_u32(c as u32 - 0xFEE0).unwrap_or(c)
                    } else {
                        c
                    }
                })
                .collect(),
        );
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if is_zero_width(c) {
            continue;
        }
        if is_compat_letter(c) {
            out.extend(std::iter::once(c).nfkc());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out.nfc().collect())
}

fn is_fullwidth_ascii(c: char) -> bool {
    matches!(c, '\u{FF01}'..='\u{FF5E}')
}

fn is_zero_width(c: char) -> bool {
    matches!(
        c,
        '\u{200B}' | '\u{200C}' | '\u{200D}' | '\u{2060}' | '\u{FEFF}' | '\u{00AD}'
    )
}

/// Compatibility characters whose NFKC form is an ASCII letter, digit or punctuation mark, or
/// a base Arabic letter.
fn is_compat_letter(c: char) -> bool {
    matches!(c as u32,
        0xFF01..=0xFF5E | 0xFB50..=0xFDFF | 0xFE70..=0xFEFC | 0x1D400..=0x1D7FF
        | 0x24B6..=0x24E9 | 0x1F130..=0x1F149)
}

/// Extracts the chosen letter from a response; see [`extract_with_reasoning`], which also
/// says what was done to a reasoning block.
pub fn extract(response: &str, options: Option<&[String; 4]>) -> Extraction {
    extract_with_reasoning(response, options).1
}

/// Extracts the chosen letter from a response, and says what was done to its reasoning.
///
/// Before any rule, the response is normalized (NFC; NFKC for letters in compatibility
/// forms such as `Ｂ`; zero-width characters removed) and its reasoning block is removed
/// with [`strip_reasoning`]: a letter stated while thinking (`<think>Maybe A.</think>
/// Final: C`) never counts, and a block that never closed grades as no answer
/// ([`Rule::TruncatedReasoning`]). Then the rules, in order:
///
/// 1. **bare**: the whole response is one letter, perhaps wrapped (`B`, `(B)`, `B.`,
///    `**B**`, `\boxed{B}`, `Ｂ`, `ب`, `ב`);
/// 2. **boxed**: the last `\boxed{B}`;
/// 3. **phrase**: the letter after the *last* answer phrase that has one (`Answer: A ...
///    Answer: C` gives C), in any of the 42 languages (`Antwort`, `الإجابة`, `תשובה`, `Cevap`,
///    `Azịza`, `Ìdáhùn`, `መልስ`, `Жооп`, `答案`, ...); a negated letter (`not A`) is skipped;
///    a capital `A` that begins a phrase (`Answer: A close look ... gives D`) is a word,
///    and after a list of eliminated options (`Answer: after excluding A and C, B`) the
///    remaining letter is the answer;
/// 4. **letter**: after an echoed option list (`A) 3`, `B) 4`, `C) 5`, `D) 6`), the
///    letter stated after it; else the letters stated anywhere (`B) 42`, `<b>B</b>`), if
///    they agree, or the last after a self-correction (`A. Wait, actually C.`); the article
///    "A" of "A kilogram" and negated letters do not count;
/// 5. **option_text**: with `options`, a response that quotes one option's text.
///
/// The final stated answer wins throughout: the last answer phrase, the last self-
/// correction, the text after the reasoning and after an echoed option list.
///
/// Letters map from Latin A-D, full-width Ａ-Ｄ, Arabic أ ب ج د and Hebrew א ב ג ד; lower-case
/// a-d count only when formatted (`b)`, `(b)`). Unparseable: an empty response, a hedge
/// (`A or B`, several letters with no final one), a refusal, a letter outside A-D, an
/// unfinished reasoning block.
///
/// ```
/// use xlt_grade::{extract_with_reasoning, Reasoning, Rule};
/// use xlt_data::AnswerLetter;
///
/// let (r, e) = extract_with_reasoning("<think>Maybe the answer is A.</think>\n\nFinal: **C**", None);
/// assert_eq!((r, e.letter), (Reasoning::Stripped, Some(AnswerLetter::C)));
/// let (r, e) = extract_with_reasoning("<think>The answer is A, unless", None);
/// assert_eq!((r, e.letter, e.rule), (Reasoning::Truncated, None, Rule::TruncatedReasoning));
/// ```
pub fn extract_with_reasoning(
    response: &str,
    options: Option<&[String; 4]>,
) -> (Reasoning, Extraction) {
    let text = normalize_text(response);
    let (reasoning, answer) = strip_reasoning(text.trim());
    let e = match reasoning {
        Reasoning::Truncated => Extraction::none(Rule::TruncatedReasoning),
        _ => extract_answer(answer.trim(), options),
    };
    (reasoning, e)
}

/// The rules of [`extract_with_reasoning`] on normalized text with no reasoning block.
fn extract_answer(response: &str, options: Option<&[String; 4]>) -> Extraction {
    if response.is_empty() {
        return Extraction::none(Rule::Empty);
    }
    if let Some(e) = bare(response) {
        return e;
    }
    if let Some(e) = boxed(response) {
        return e;
    }
    if let Some(e) = phrase(response, options) {
        return e;
    }
    if let Some(rest) = after_echoed_options(response) {
        let rest = rest.trim();
        let e = bare(rest).or_else(|| letters(rest));
        if let Some(e) = e
            && let Some(l) = e.letter
        {
            return Extraction::found(l, Rule::Letter);
        }
    }
    let from_letters = letters(response);
    if let Some(e) = from_letters
        && e.letter.is_some()
    {
        return e;
    }
    if let Some(opts) = options
        && let Some(e) = option_text(response, opts)
    {
        return e;
    }
    if let Some(e) = from_letters {
        return e;
    }
    if is_refusal(response) {
        return Extraction::none(Rule::Refusal);
    }
    Extraction::none(Rule::NoAnswer)
}
