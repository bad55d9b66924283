//! Audits of the source data: answer keys that cannot be told apart, and sample ids that do
//! not mean the same question in every language.
//!
//! Both audits drop a sample id **in every language**, as [`Dataset::dedup`] does, so that
//! the dataset stays aligned and the paired design (one question instance, many languages)
//! holds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use unicode_normalization::{UnicodeNormalization, is_nfkc_quick};

use crate::dataset::Dataset;
use crate::language::Language;
use crate::question::{Question, compare_sample_ids};

/// One question dropped by [`Dataset::audit_answer_keys`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmbiguousKey {
    /// The sample id, dropped in every language.
    pub sample_id: String,
    /// The languages in which the key is ambiguous.
    pub languages: Vec<Language>,
}

/// What [`Dataset::audit_answer_keys`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerKeyReport {
    /// The questions dropped, in sample-id order.
    pub dropped: Vec<AmbiguousKey>,
    /// Rows removed, all languages together.
    pub dropped_rows: usize,
}

/// One sample id dropped by [`Dataset::audit_consistency`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inconsistency {
    /// The sample id, dropped in every language.
    pub sample_id: String,
    /// The languages that disagree with the others (all of them when there is no majority).
    pub languages: Vec<Language>,
    /// What disagrees: `answer` (the answer letter), `question` or `option_a`..`option_d`
    /// (the numbers written in that field).
    pub fields: Vec<String>,
}

/// What [`Dataset::audit_consistency`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyReport {
    /// The sample ids dropped, in sample-id order.
    pub dropped: Vec<Inconsistency>,
    /// Rows removed, all languages together.
    pub dropped_rows: usize,
}

/// One subject of one file whose answer keys agree with the other languages' no better than
/// chance: its rows are not the same questions, in the same order, as theirs (see
/// [`Dataset::audit_file_alignment`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MisalignedFile {
    /// The language of the file.
    pub language: Language,
    /// The file (`<unknown file>` for rows not loaded from a file).
    pub file: PathBuf,
    /// The subject whose rows are misaligned.
    pub subject: String,
    /// The fraction, 0 to 1, of its compared ids whose answer letter equals the other
    /// languages' majority letter.
    pub agreement: f64,
    /// The agreement two unrelated answer keys with these letter frequencies would have:
    /// the sum over letters of the file's share times the others' share.
    pub chance: f64,
    /// Ids compared: those for which at least two other languages have the id and agree
    /// on one most common letter.
    pub compared: usize,
    /// Rows removed (every row of the subject in the file).
    pub dropped_rows: usize,
}

impl std::fmt::Display for MisalignedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: language {} is misaligned in subject {}: its answer keys agree with the other languages' on {:.1}% of {} ids (chance {:.1}%); its {} rows are excluded",
            self.file.display(),
            self.language,
            self.subject,
            100.0 * self.agreement,
            self.compared,
            100.0 * self.chance,
            self.dropped_rows
        )
    }
}

/// A language whose answer keys agree with every other language's at no better than chance
/// (see [`Dataset::audit_language_alignment`]): its rows are not the same questions, in the
/// same order, as the others', and every row of it is excluded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MisalignedLanguage {
    /// The language.
    pub language: Language,
    /// The files its rows came from (empty for rows not loaded from a file).
    pub files: Vec<PathBuf>,
    /// The language it agrees with most: its best chance of being aligned.
    pub closest: Language,
    /// The fraction, 0 to 1, of the ids it shares with [`MisalignedLanguage::closest`] on
    /// which the two answer letters are equal.
    pub agreement: f64,
    /// The agreement two unrelated answer keys with these letter frequencies would have.
    pub chance: f64,
    /// Ids shared with [`MisalignedLanguage::closest`].
    pub compared: usize,
    /// Rows removed (every row of the language).
    pub dropped_rows: usize,
}

impl std::fmt::Display for MisalignedLanguage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let files: Vec<String> = self.files.iter().map(|p| p.display().to_string()).collect();
        write!(
            f,
            "language {} ({}) is misaligned as a whole: its answer keys agree with every other language's at chance (at best {:.1}% of {} ids, with {}; chance {:.1}%); its {} rows are excluded ({})",
            self.language,
            self.language.name(),
            100.0 * self.agreement,
            self.compared,
            self.closest,
            100.0 * self.chance,
            self.dropped_rows,
            if files.is_empty() {
                "<unknown file>".to_owned()
            } else {
                files.join(", ")
            }
        )
    }
}

/// Agreement of two answer keys on the ids they share: (agreed, compared, chance).
fn pair_agreement(a: &HashMap<&str, usize>, b: &HashMap<&str, usize>) -> (usize, usize, f64) {
    let (mut agreed, mut compared) = (0usize, 0usize);
    let (mut ca, mut cb) = ([0usize; 4], [0usize; 4]);
    for (id, &x) in a {
        if let Some(&y) = b.get(id) {
            compared += 1;
            agreed += usize::from(x == y);
            ca[x] += 1;
            cb[y] += 1;
        }
    }
    let n = compared.max(1) as f64;
    let chance = (0..4)
        .map(|k| (ca[k] as f64 / n) * (cb[k] as f64 / n))
        .sum();
    (agreed, compared, chance)
}

/// Whether an agreement rate is at chance: at most halfway between chance and 1.
fn at_chance(agreement: f64, chance: f64) -> bool {
    agreement <= (chance + 1.0) / 2.0
}

/// The fewest compared ids on which [`Dataset::audit_file_alignment`] judges a file.
pub const MIN_COMPARED_IDS: usize = 10;

/// Text as the audits compare it: trimmed, white space collapsed, NFKC (compatibility forms
/// such as full-width digits folded). Text already in NFKC, nearly all of it, is not copied
/// through the normalizer.
fn normalized(s: &str) -> String {
    let collapsed: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if is_nfkc_quick(collapsed.chars()) == unicode_normalization::IsNormalized::Yes {
        collapsed
    } else {
        collapsed.nfkc().collect()
    }
}

/// Whether a question's key is ambiguous: the correct option's text equals another option's
/// text, or all four options are the same.
pub(crate) fn has_ambiguous_key(q: &Question) -> bool {
    let options = q.options.each_ref().map(|o| normalized(o));
    let key = &options[q.answer.index()];
    let same_as_key = options.iter().filter(|o| *o == key).count();
    same_as_key > 1 || options.iter().all(|o| *o == options[0])
}

impl Dataset {
    /// Drops questions whose answer key cannot be told apart: the correct option's text
    /// equals another option's text (after trimming, collapsing white space and NFKC), or
    /// all options are identical. A model that picks the other identical option would be
    /// marked wrong. Such an id is dropped in every language.
    ///
    /// In the full English test split of Global-MMLU this drops four questions, e.g.
    /// `elementary_mathematics/test/113`, whose options A and B are both `687`.
    pub fn audit_answer_keys(self) -> (Dataset, AnswerKeyReport) {
        let mut flagged: BTreeMap<&str, Vec<Language>> = BTreeMap::new();
        for q in self.questions() {
            if has_ambiguous_key(q) {
                flagged.entry(&q.sample_id).or_default().push(q.language);
            }
        }
        let mut dropped: Vec<AmbiguousKey> = flagged
            .into_iter()
            .map(|(id, languages)| AmbiguousKey {
                sample_id: id.to_owned(),
                languages,
            })
            .collect();
        dropped.sort_by(|a, b| compare_sample_ids(&a.sample_id, &b.sample_id));
        let ids: BTreeSet<String> = dropped.iter().map(|d| d.sample_id.clone()).collect();
        let (dataset, dropped_rows) = self.without(&ids);
        (
            dataset,
            AnswerKeyReport {
                dropped,
                dropped_rows,
            },
        )
    }

    /// Finds the languages misaligned **as a whole** and removes every row of them: a
    /// language whose answer keys agree with each other language's at no better than chance
    /// (on the ids the two share, at most halfway between chance and full agreement),
    /// while at least two other languages agree with each other. Run it first, before
    /// [`Dataset::audit_file_alignment`] and [`Dataset::audit_consistency`]: those compare
    /// a row with the other languages' most common letter, and two misaligned languages
    /// would pollute that majority (they outvote a good language on the ids where they
    /// happen to agree), dropping correct rows of the good languages.
    ///
    /// A pair is judged on [`MIN_COMPARED_IDS`] shared ids or more; a language with no
    /// judged pair, or with none of the others aligned, is left to the later audits. When
    /// no two languages agree (every language misaligned with every other), there is no
    /// reference and nothing is removed here.
    pub fn audit_language_alignment(self) -> (Dataset, Vec<MisalignedLanguage>) {
        let mut keys: BTreeMap<Language, HashMap<&str, usize>> = BTreeMap::new();
        for q in self.questions() {
            keys.entry(q.language)
                .or_default()
                .insert(&q.sample_id, q.answer.index());
        }
        let languages: Vec<Language> = keys.keys().copied().collect();
        // For each language: whether it agrees with some other, and its best pair.
        let mut aligned: BTreeSet<Language> = BTreeSet::new();
        let mut best: BTreeMap<Language, (Language, f64, f64, usize)> = BTreeMap::new();
        for (i, &a) in languages.iter().enumerate() {
            for &b in &languages[i + 1..] {
                let (agreed, compared, chance) = pair_agreement(&keys[&a], &keys[&b]);
                if compared < MIN_COMPARED_IDS {
                    continue;
                }
                let rate = agreed as f64 / compared as f64;
                if !at_chance(rate, chance) {
                    aligned.insert(a);
                    aligned.insert(b);
                }
                for (me, other) in [(a, b), (b, a)] {
                    let entry = best.entry(me).or_insert((other, rate, chance, compared));
                    if rate > entry.1 {
                        *entry = (other, rate, chance, compared);
                    }
                }
            }
        }
        if aligned.len() < 2 {
            return (self, Vec::new());
        }
        let mut misaligned: Vec<MisalignedLanguage> = best
            .into_iter()
            .filter(|(l, _)| !aligned.contains(l))
            .map(
                |(language, (closest, agreement, chance, compared))| MisalignedLanguage {
                    language,
                    files: Vec::new(),
                    closest,
                    agreement,
                    chance,
                    compared,
                    dropped_rows: 0,
                },
            )
            .collect();
        if misaligned.is_empty() {
            return (self, misaligned);
        }
        let drop: BTreeSet<Language> = misaligned.iter().map(|m| m.language).collect();
        let mut files: BTreeMap<Language, BTreeSet<PathBuf>> = BTreeMap::new();
        let mut rows: BTreeMap<Language, usize> = BTreeMap::new();
        let mut kept = Vec::new();
        for q in self.questions() {
            if drop.contains(&q.language) {
                *rows.entry(q.language).or_default() += 1;
                if let Some(f) = self.origin(q) {
                    files.entry(q.language).or_default().insert(f.to_owned());
                }
            } else {
                kept.push(q.clone());
            }
        }
        for m in &mut misaligned {
            m.files = files
                .remove(&m.language)
                .unwrap_or_default()
                .into_iter()
                .collect();
            m.dropped_rows = rows.get(&m.language).copied().unwrap_or(0);
        }
        (self.replaced(kept), misaligned)
    }

    /// Finds the blocks of rows whose answer keys agree with the other languages' at no
    /// better than chance, and removes them: a language misaligned as a whole in one
    /// subject of one file (its rows ordered differently or other questions, as two
    /// subjects of AfriMMLU's English test split before the Hub's correction), whose ids
    /// name other questions than the same ids elsewhere. Run it before [`Dataset::align`],
    /// so that the ids such a block held are then dropped as missing from its language.
    ///
    /// A block is a language's rows of one subject loaded from one file
    /// ([`Dataset::origin`]): the unit in which benchmarks that carry no ids (AfriMMLU)
    /// are numbered, so the unit a misordering shows in. For each block, each id
    /// is compared with the most common answer letter of the **other** languages, where at
    /// least two of them hold the id and one letter is most common. The block is misaligned
    /// when at least [`MIN_COMPARED_IDS`] ids were compared and its agreement is at most
    /// halfway between chance ([`MisalignedFile::chance`], about 0.25) and full agreement:
    /// aligned translations agree on nearly every id, misordered rows on about a quarter.
    /// With two languages only, no file can be told from the other, and none is judged
    /// (the id-by-id [`Dataset::audit_consistency`] still applies).
    pub fn audit_file_alignment(self) -> (Dataset, Vec<MisalignedFile>) {
        use crate::question::AnswerLetter;
        let unknown = Path::new("<unknown file>");
        let mut by_id: HashMap<&str, Vec<(Language, AnswerLetter)>> = HashMap::new();
        for q in self.questions() {
            by_id
                .entry(&q.sample_id)
                .or_default()
                .push((q.language, q.answer));
        }
        // (language, file) -> [compared, agreed, file letter counts, majority letter counts, rows]
        type Counts = ([usize; 3], [usize; 4], [usize; 4]);
        let mut groups: BTreeMap<(Language, &Path, &str), Counts> = BTreeMap::new();
        for q in self.questions() {
            let file = self.origin(q).unwrap_or(unknown);
            let group = groups
                .entry((q.language, file, q.subject.as_str()))
                .or_default();
            group.0[2] += 1;
            let others: Vec<AnswerLetter> = by_id[q.sample_id.as_str()]
                .iter()
                .filter(|(l, _)| *l != q.language)
                .map(|(_, a)| *a)
                .collect();
            if others.len() < 2 {
                continue;
            }
            let mut counts = [0usize; 4];
            for a in &others {
                counts[a.index()] += 1;
            }
            let top = counts.iter().copied().max().unwrap_or(0);
            if counts.iter().filter(|&&n| n == top).count() != 1 {
                continue;
            }
            let majority = counts.iter().position(|&n| n == top).expect("a maximum");
            group.0[0] += 1;
            group.0[1] += usize::from(q.answer.index() == majority);
            group.1[q.answer.index()] += 1;
            group.2[majority] += 1;
        }
        let mut misaligned = Vec::new();
        for ((language, file, subject), ([compared, agreed, rows], mine, theirs)) in groups {
            if compared < MIN_COMPARED_IDS {
                continue;
            }
            let n = compared as f64;
            let chance: f64 = (0..4)
                .map(|k| (mine[k] as f64 / n) * (theirs[k] as f64 / n))
                .sum();
            let agreement = agreed as f64 / n;
            if agreement <= (chance + 1.0) / 2.0 {
                misaligned.push(MisalignedFile {
                    language,
                    file: file.to_owned(),
                    subject: subject.to_owned(),
                    agreement,
                    chance,
                    compared,
                    dropped_rows: rows,
                });
            }
        }
        if misaligned.is_empty() {
            return (self, misaligned);
        }
        let drop: BTreeSet<(Language, &Path, &str)> = misaligned
            .iter()
            .map(|m| (m.language, m.file.as_path(), m.subject.as_str()))
            .collect();
        let kept: Vec<Question> = self
            .questions()
            .iter()
            .filter(|q| {
                let block = (
                    q.language,
                    self.origin(q).unwrap_or(unknown),
                    q.subject.as_str(),
                );
                !drop.contains(&block)
            })
            .cloned()
            .collect();
        (self.replaced(kept), misaligned)
    }

    /// Checks that each sample id means the same question in every language, and drops the
    /// ids that do not, in every language. Run it after [`Dataset::align`].
    ///
    /// Two checks, each finding the languages that disagree with the majority of the others:
    ///
    /// * **answer**: Global-MMLU keeps the option order across languages, so the answer
    ///   letter must be the same in all of them; a language whose letter differs from the
    ///   most common one disagrees (every language, when no letter is most common);
    /// * **numbers**: the numbers written in the question and in each option, with every
    ///   script's decimal digits read as 0-9, must not contradict the other languages'. A
    ///   language contradicts another on a field when both write numbers there and none of
    ///   its numbers can equal one of the other's. Numbers are read leniently, because
    ///   translations write them differently: `1,000`, `1.000` and `1 000` are equal, `5,0`
    ///   equals `5.0` and `5`, `'90` or `90s` equals 1990, `3万` equals 30,000. A language
    ///   disagrees on a field when it contradicts more than half of the languages that
    ///   write numbers there.
    ///
    /// In Global-MMLU-Lite, `high_school_world_history/test/93` is a different question in
    /// Chinese and Korean than in the other languages, with a different answer letter.
    pub fn audit_consistency(self) -> (Dataset, ConsistencyReport) {
        let mut by_id: HashMap<&str, Vec<&Question>> = HashMap::new();
        for q in self.questions() {
            by_id.entry(&q.sample_id).or_default().push(q);
        }
        let mut dropped: Vec<Inconsistency> = by_id
            .into_iter()
            .filter_map(|(id, rows)| inconsistency(id, &rows))
            .collect();
        dropped.sort_by(|a, b| compare_sample_ids(&a.sample_id, &b.sample_id));
        let ids: BTreeSet<String> = dropped.iter().map(|d| d.sample_id.clone()).collect();
        let (dataset, dropped_rows) = self.without(&ids);
        (
            dataset,
            ConsistencyReport {
                dropped,
                dropped_rows,
            },
        )
    }

    fn without(self, ids: &BTreeSet<String>) -> (Dataset, usize) {
        if ids.is_empty() {
            return (self, 0);
        }
        let before = self.len();
        let kept: Vec<Question> = self
            .questions()
            .iter()
            .filter(|q| !ids.contains(&q.sample_id))
            .cloned()
            .collect();
        let dataset = self.replaced(kept);
        let removed = before - dataset.len();
        (dataset, removed)
    }
}

const FIELDS: [&str; 5] = ["question", "option_a", "option_b", "option_c", "option_d"];

fn inconsistency(id: &str, rows: &[&Question]) -> Option<Inconsistency> {
    if rows.len() < 2 {
        return None;
    }
    let mut languages: BTreeSet<Language> = BTreeSet::new();
    let mut fields = Vec::new();
    // Answer letters: the most common one, if it is unique, is the reference.
    let mut counts: BTreeMap<_, usize> = BTreeMap::new();
    for q in rows {
        *counts.entry(q.answer).or_default() += 1;
    }
    if counts.len() > 1 {
        let top = counts.values().copied().max().unwrap_or(0);
        let tops: Vec<_> = counts.iter().filter(|(_, n)| **n == top).collect();
        let majority = (tops.len() == 1).then(|| *tops[0].0);
        for q in rows {
            if majority != Some(q.answer) {
                languages.insert(q.language);
            }
        }
        fields.push("answer".to_owned());
    }
    for (f, name) in FIELDS.iter().enumerate() {
        let numbers: Vec<(Language, Vec<Number>)> = rows
            .iter()
            .map(|q| {
                let text = if f == 0 {
                    &q.question
                } else {
                    &q.options[f - 1]
                };
                (q.language, numbers_in(text))
            })
            .filter(|(_, n)| !n.is_empty())
            .collect();
        let mut disagree = false;
        for (i, (language, mine)) in numbers.iter().enumerate() {
            let others = numbers.len() - 1;
            if others == 0 {
                continue;
            }
            let contradicted = numbers
                .iter()
                .enumerate()
                .filter(|(j, (_, theirs))| *j != i && contradicts(mine, theirs))
                .count();
            if contradicted * 2 > others {
                languages.insert(*language);
                disagree = true;
            }
        }
        if disagree {
            fields.push((*name).to_owned());
        }
    }
    (!fields.is_empty()).then(|| Inconsistency {
        sample_id: id.to_owned(),
        languages: languages.into_iter().collect(),
        fields,
    })
}

/// The values a written number may have: each reading of its separators, times a CJK
/// unit (万, 億, 千) when one follows.
type Number = Vec<f64>;

/// The value of a decimal digit in any script that has one (Unicode's decimal-digit blocks
/// used by living languages: ASCII, Arabic-Indic, Persian, N'Ko, the Indic scripts, Thai,
/// Lao, Tibetan, Myanmar, Khmer, Mongolian, Javanese, Balinese, full-width, ...).
pub(crate) fn digit_value(c: char) -> Option<u32> {
    const ZEROS: &[u32] = &[
        0x30, 0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66,
        0xDE6, 0xE50, 0xED0, 0xF20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90,
        0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0,
        0xFF10,
    ];
    let u = c as u32;
    ZEROS
        .iter()
        .find(|&&z| (z..z + 10).contains(&u))
        .map(|z| u - z)
}

fn is_separator(c: char) -> bool {
    matches!(
        c,
        '.' | ',' | '\'' | ' ' | '\u{a0}' | '\u{202f}' | '\u{66b}' | '\u{66c}'
    )
}

fn cjk_unit(c: char) -> Option<f64> {
    match c {
        '千' | '천' => Some(1e3),
        '万' | '萬' | '만' => Some(1e4),
        '億' | '亿' | '억' => Some(1e8),
        _ => None,
    }
}

/// The numbers written in `text`: runs of digits, with single separators between digit
/// groups, each read every way its separators allow.
pub(crate) fn numbers_in(text: &str) -> Vec<Number> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if digit_value(chars[i]).is_none() {
            i += 1;
            continue;
        }
        // groups of digits, separated by one separator each
        let mut groups: Vec<String> = vec![String::new()];
        while i < chars.len() {
            if let Some(d) = digit_value(chars[i]) {
                groups
                    .last_mut()
                    .expect("one group")
                    .push(char::from_digit(d, 10).expect("0-9"));
                i += 1;
            } else if is_separator(chars[i])
                && chars.get(i + 1).and_then(|c| digit_value(*c)).is_some()
            {
                groups.push(String::new());
                i += 1;
            } else {
                break;
            }
        }
        let unit = {
            let mut j = i;
            if chars.get(j) == Some(&' ') {
                j += 1;
            }
            chars.get(j).copied().and_then(cjk_unit)
        };
        let mut values = Vec::new();
        let all: String = groups.concat();
        if let Ok(v) = all.parse::<f64>() {
            values.push(v);
        }
        if groups.len() > 1 {
            let (last, head) = groups.split_last().expect("two groups");
            if let Ok(v) = format!("{}.{}", head.concat(), last).parse::<f64>() {
                values.push(v);
            }
        }
        if let Some(u) = unit {
            let scaled: Vec<f64> = values.iter().map(|v| v * u).collect();
            values.extend(scaled);
        }
        if !values.is_empty() {
            out.push(values);
        }
    }
    out
}

/// Whether two values can be the same number: equal, or a two-digit decade and its year
/// (`'90`, `90s`, `90年代` against 1990).
fn same_value(a: f64, b: f64) -> bool {
    let decade = |x: f64, y: f64| {
        x.fract() == 0.0
            && y.fract() == 0.0
            && x < 100.0
            && (1000.0..=2100.0).contains(&y)
            && y % 100.0 == x
    };
    a == b || decade(a, b) || decade(b, a)
}

/// Whether no number of `a` can equal a number of `b`.
fn contradicts(a: &[Number], b: &[Number]) -> bool {
    !a.iter()
        .flatten()
        .any(|x| b.iter().flatten().any(|y| same_value(*x, *y)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(text: &str) -> Vec<Vec<f64>> {
        numbers_in(text)
    }

    #[test]
    fn numbers_are_read_in_every_script_and_spelling() {
        let cases: &[(&str, &[&[f64]])] = &[
            ("1,493", &[&[1493.0, 1.493]]),
            ("١٤٩٣ سنة", &[&[1493.0]]),
            ("१९४७", &[&[1947.0]]),
            ("３万", &[&[3.0, 30000.0]]),
            ("5,0 m and 7", &[&[50.0, 5.0], &[7.0]]),
            ("no digits", &[]),
        ];
        for (text, expected) in cases {
            let got = values(text);
            let want: Vec<Vec<f64>> = expected.iter().map(|v| v.to_vec()).collect();
            assert_eq!(got, want, "{text}");
        }
    }

    #[test]
    fn translations_of_the_same_number_do_not_contradict() {
        let same = [
            ("1,000 people", "1.000 Menschen"),
            ("in the 1990s", "negli anni '90"),
            ("5.0 kg", "5 كغ"),
            ("30,000 yen", "3万円"),
            ("١٩٤٧", "1947"),
        ];
        for (a, b) in same {
            assert!(!contradicts(&numbers_in(a), &numbers_in(b)), "{a} / {b}");
        }
        assert!(contradicts(&numbers_in("in 1599"), &numbers_in("15세기")));
    }
}
