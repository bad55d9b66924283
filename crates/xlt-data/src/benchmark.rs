//! Readers for the benchmarks beside Global-MMLU: AfriMMLU (TSV), Belebele (JSON Lines, the
//! official schema and a passage-grouped conversion) and MMMLU (CSV). Each reads into the
//! same [`Question`], with the file and the row in every error.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::DataError;
use crate::language::Language;
use crate::question::{AnswerLetter, CulturalLabel, Domain, Question};
use crate::scheme::global_mmlu_category;

/// A benchmark whose files this crate reads, each in its published format.
///
/// The format is recognised from the file (see [`Benchmark::detect`]), or named before a
/// path in a data source: `afrimmlu:data/afrimmlu`, `belebele:bele/`, `mmmlu:mmlu_YO-NG.csv`,
/// `global-mmlu:x.csv` (see [`crate::DataSource`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Benchmark {
    /// Global-MMLU (CohereLabs): CSV, parquet or JSON Lines with `sample_id`, `subject`,
    /// `subject_category`, `question`, `option_a`..`option_d`, `answer`.
    #[serde(rename = "global-mmlu")]
    GlobalMmlu,
    /// AfriMMLU (IrokoBench, masakhane/afrimmlu): TSV with `subject`, `question`, `choices`
    /// (a Python list literal of four strings), `answer`, in an order that differs by split;
    /// no ids. The id is `<subject>/<split>/<index within the subject, in file order>`,
    /// the split from the file name (`ibo.dev.tsv`, `data/ibo/test.tsv`).
    #[serde(rename = "afrimmlu")]
    AfriMmlu,
    /// Belebele (facebook/belebele): JSON Lines with `link`, `question_number`,
    /// `flores_passage`, `question`, `mc_answer1`..`4`, `correct_answer_num` (1-4). The
    /// passage is part of the question; the id is `<link>/<question_number>`; every
    /// question is in [`Domain::Reading`], subject `reading`. Also read: the
    /// passage-grouped conversion of saeub/item-evaluation (`text`, `items`, `metadata`).
    #[serde(rename = "belebele")]
    Belebele,
    /// MMMLU (openai/MMMLU): CSV with an unnamed row-index column, `Question`, `A`..`D`,
    /// `Answer`, `Subject`. The id is `<Subject>/test/<row index>`.
    #[serde(rename = "mmmlu")]
    Mmmlu,
}

impl Benchmark {
    /// Every benchmark.
    pub const ALL: [Benchmark; 4] = [
        Benchmark::GlobalMmlu,
        Benchmark::AfriMmlu,
        Benchmark::Belebele,
        Benchmark::Mmmlu,
    ];

    /// The name used as a prefix in a data source: `global-mmlu`, `afrimmlu`, `belebele`,
    /// `mmmlu`.
    pub fn name(self) -> &'static str {
        match self {
            Benchmark::GlobalMmlu => "global-mmlu",
            Benchmark::AfriMmlu => "afrimmlu",
            Benchmark::Belebele => "belebele",
            Benchmark::Mmmlu => "mmmlu",
        }
    }

    /// The benchmark's own spelling of its name, for people: `Global-MMLU`, `AfriMMLU`,
    /// `Belebele`, `MMMLU`.
    pub fn title(self) -> &'static str {
        match self {
            Benchmark::GlobalMmlu => "Global-MMLU",
            Benchmark::AfriMmlu => "AfriMMLU",
            Benchmark::Belebele => "Belebele",
            Benchmark::Mmmlu => "MMMLU",
        }
    }

    /// The benchmark of a Hub dataset repository, by its name (`masakhane/afrimmlu`,
    /// `facebook/belebele`, `openai/MMMLU`; anything else is read as Global-MMLU's layout).
    pub fn of_hub_repo(repo: &str) -> Benchmark {
        match repo.to_ascii_lowercase().as_str() {
            "masakhane/afrimmlu" => Benchmark::AfriMmlu,
            "facebook/belebele" => Benchmark::Belebele,
            "openai/mmmlu" => Benchmark::Mmmlu,
            _ => Benchmark::GlobalMmlu,
        }
    }

    /// Recognises a file's benchmark from its type and its first line: `.tsv` is AfriMMLU;
    /// a CSV whose header is MMMLU's (`,Question,A,B,C,D,Answer,Subject`) is MMMLU; a JSON
    /// Lines file whose first object has `flores_passage`, or `items` and `text`, is
    /// Belebele; anything else is Global-MMLU (whose reader names a missing column).
    ///
    /// # Errors
    /// [`DataError::Io`] if the file cannot be read.
    pub fn detect(path: &Path) -> Result<Benchmark, DataError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let first_line = || -> Result<String, DataError> {
            let file = File::open(path).map_err(|e| DataError::io(path, e))?;
            let mut reader = BufReader::new(file);
            let mut line = String::new();
            while line.trim().is_empty() {
                line.clear();
                if reader
                    .read_line(&mut line)
                    .map_err(|e| DataError::io(path, e))?
                    == 0
                {
                    break;
                }
            }
            Ok(line.trim_start_matches('\u{feff}').trim_end().to_owned())
        };
        Ok(match ext.as_str() {
            "tsv" => Benchmark::AfriMmlu,
            "csv" => {
                let header = first_line()?;
                let cells: Vec<&str> = header.split(',').map(|c| c.trim_matches('"')).collect();
                if cells.len() == 8 && cells[1..] == MMMLU_COLUMNS[1..] {
                    Benchmark::Mmmlu
                } else {
                    Benchmark::GlobalMmlu
                }
            }
            "jsonl" | "json" | "ndjson" => {
                let line = first_line()?;
                match serde_json::from_str::<serde_json::Value>(&line) {
                    Ok(serde_json::Value::Object(o))
                        if o.contains_key("flores_passage")
                            || (o.contains_key("items") && o.contains_key("text")) =>
                    {
                        Benchmark::Belebele
                    }
                    _ => Benchmark::GlobalMmlu,
                }
            }
            _ => Benchmark::GlobalMmlu,
        })
    }
}

impl fmt::Display for Benchmark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Benchmark {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let key = s.trim().to_ascii_lowercase().replace('_', "-");
        Benchmark::ALL
            .into_iter()
            .find(|b| b.name() == key || (key == "globalmmlu" && *b == Benchmark::GlobalMmlu))
            .ok_or_else(|| {
                DataError::InvalidConfig(format!(
                    "unknown benchmark `{s}` (expected global-mmlu, afrimmlu, belebele or mmmlu)"
                ))
            })
    }
}

/// MMMLU's header: pandas' unnamed index column, then the fields.
const MMMLU_COLUMNS: [&str; 8] = ["", "Question", "A", "B", "C", "D", "Answer", "Subject"];

/// The subject of every Belebele question.
pub(crate) const BELEBELE_SUBJECT: &str = "reading";

fn invalid(path: &Path, row: usize, column: &'static str, reason: String) -> DataError {
    DataError::InvalidValue {
        path: path.to_owned(),
        row,
        column,
        reason,
    }
}

fn malformed(path: &Path, format: &'static str, message: String) -> DataError {
    DataError::Malformed {
        path: path.to_owned(),
        format,
        message,
    }
}

fn nonempty<'a>(
    path: &Path,
    row: usize,
    column: &'static str,
    value: Option<&'a str>,
) -> Result<&'a str, DataError> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(DataError::EmptyField {
            path: path.to_owned(),
            row,
            column,
        }),
    }
}

fn domain_of(
    path: &Path,
    row: usize,
    column: &'static str,
    subject: &str,
) -> Result<Domain, DataError> {
    global_mmlu_category(subject).ok_or_else(|| {
        invalid(
            path,
            row,
            column,
            format!("`{subject}` is not one of MMLU's 57 subjects"),
        )
    })
}

/// Reads a delimited file with a header into (header, records), each record with its
/// 1-based data row; quoting as Python's `csv` module writes it (`"` quotes, `""` escapes).
fn read_delimited(
    path: &Path,
    delimiter: u8,
    format: &'static str,
    check_header: impl Fn(&[String]) -> Result<(), DataError>,
) -> Result<(Vec<String>, Vec<csv::StringRecord>), DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .from_reader(file);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| malformed(path, format, e.to_string()))?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').trim().to_owned())
        .collect();
    check_header(&header)?;
    let mut records = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| malformed(path, format, format!("row {}: {e}", i + 1)))?;
        records.push(record);
    }
    if records.is_empty() {
        return Err(DataError::NoRows {
            path: path.to_owned(),
        });
    }
    Ok((header, records))
}

fn column(path: &Path, header: &[String], name: &'static str) -> Result<usize, DataError> {
    header
        .iter()
        .position(|h| h == name)
        .ok_or_else(|| DataError::MissingColumn {
            path: path.to_owned(),
            column: name,
        })
}

/// The split an AfriMMLU file holds, from its name: `ibo.dev.tsv` and `dev.tsv` hold `dev`;
/// a name with no split part (`ibo.tsv`) holds `test`.
fn afrimmlu_split(path: &Path) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let last = stem.rsplit('.').next().unwrap_or(stem);
    if Language::from_code(last).is_some() || last.is_empty() {
        "test".to_owned()
    } else {
        last.to_ascii_lowercase()
    }
}

/// Reads one AfriMMLU TSV file (see [`Benchmark::AfriMmlu`]).
pub(crate) fn read_afrimmlu(path: &Path, language: Language) -> Result<Vec<Question>, DataError> {
    let (header, records) = read_delimited(path, b'\t', "TSV", |_| Ok(()))?;
    let [subject, question, choices, answer] =
        ["subject", "question", "choices", "answer"].map(|name| column(path, &header, name));
    let (subject, question, choices, answer) = (subject?, question?, choices?, answer?);
    let split = afrimmlu_split(path);
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(records.len());
    for (i, record) in records.iter().enumerate() {
        let row = i + 1;
        let subject_text = nonempty(path, row, "subject", record.get(subject))?.trim();
        let domain = domain_of(path, row, "subject", subject_text)?;
        let question_text = nonempty(path, row, "question", record.get(question))?;
        let choices_text = nonempty(path, row, "choices", record.get(choices))?;
        let options = parse_python_list(choices_text)
            .map_err(|reason| invalid(path, row, "choices", reason))?;
        let options: [String; 4] = options.try_into().map_err(|o: Vec<String>| {
            invalid(
                path,
                row,
                "choices",
                format!("{} options, expected 4", o.len()),
            )
        })?;
        let answer_text = nonempty(path, row, "answer", record.get(answer))?;
        let answer: AnswerLetter = answer_text.parse().map_err(|_| {
            invalid(
                path,
                row,
                "answer",
                format!("`{answer_text}` is not one of A, B, C, D"),
            )
        })?;
        let n = index.entry(subject_text.to_owned()).or_default();
        let sample_id = format!("{subject_text}/{split}/{n}");
        *n += 1;
        out.push(Question {
            sample_id,
            subject: subject_text.to_owned(),
            domain,
            language,
            question: question_text.to_owned(),
            options,
            answer,
            cultural_label: CulturalLabel::Unannotated,
        });
    }
    Ok(out)
}

/// Parses a Python list literal of strings, as `ast.literal_eval` would: `['a', "b's", 'c\u200b']`.
/// Strings in single or double quotes, with the escapes `\\ \' \" \n \t \r \xHH \uHHHH
/// \UHHHHHHHH`; adjacent literals are not joined. Returns the strings or what is wrong.
pub(crate) fn parse_python_list(text: &str) -> Result<Vec<String>, String> {
    let chars: Vec<char> = text.trim().chars().collect();
    let mut i = 0;
    let err = |at: usize, what: &str| {
        format!(
            "not a Python list of strings at character {}: {what}",
            at + 1
        )
    };
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    if chars.first() != Some(&'[') {
        return Err(err(0, "expected `[`"));
    }
    i += 1;
    let mut out = Vec::new();
    loop {
        skip_ws(&mut i);
        match chars.get(i) {
            Some(']') if out.is_empty() => {
                i += 1;
                break;
            }
            Some(&q) if q == '\'' || q == '"' => {
                i += 1;
                let mut s = String::new();
                loop {
                    match chars.get(i) {
                        None => return Err(err(i, "unterminated string")),
                        Some(&c) if c == q => {
                            i += 1;
                            break;
                        }
                        Some('\\') => {
                            let e = *chars
                                .get(i + 1)
                                .ok_or_else(|| err(i, "unterminated escape"))?;
                            i += 2;
                            let hex = |i: &mut usize, n: usize| -> Result<char, String> {
                                let digits: String = chars
                                    .get(*i..*i + n)
                                    .ok_or_else(|| err(*i, "short escape"))?
                                    .iter()
                                    .collect();
                                let v = u32::from_str_radix(&digits, 16)
                                    .map_err(|_| err(*i, "bad hex escape"))?;
                                *i += n;
                                char::from_u32(v).ok_or_else(|| err(*i, "escape is no character"))
                            };
                            match e {
                                '\\' | '\'' | '"' => s.push(e),
                                'n' => s.push('\n'),
                                't' => s.push('\t'),
                                'r' => s.push('\r'),
                                'x' => s.push(hex(&mut i, 2)?),
                                'u' => s.push(hex(&mut i, 4)?),
                                'U' => s.push(hex(&mut i, 8)?),
                                // Python keeps an unknown escape as written.
                                other => {
                                    s.push('\\');
                                    s.push(other);
                                }
                            }
                        }
                        Some(&c) => {
                            s.push(c);
                            i += 1;
                        }
                    }
                }
                out.push(s);
                skip_ws(&mut i);
                match chars.get(i) {
                    Some(',') => i += 1,
                    Some(']') => {
                        i += 1;
                        break;
                    }
                    _ => return Err(err(i, "expected `,` or `]`")),
                }
            }
            Some(']') => {
                // a trailing comma: `['a', 'b',]`
                i += 1;
                break;
            }
            _ => return Err(err(i, "expected a quoted string")),
        }
    }
    skip_ws(&mut i);
    if i != chars.len() {
        return Err(err(i, "text after `]`"));
    }
    Ok(out)
}

/// Reads one MMMLU CSV file (see [`Benchmark::Mmmlu`]).
pub(crate) fn read_mmmlu(path: &Path, language: Language) -> Result<Vec<Question>, DataError> {
    let (_, records) = read_delimited(path, b',', "CSV", |header| {
        if header.len() != 8 || header[1..] != MMMLU_COLUMNS[1..] {
            return Err(malformed(
                path,
                "CSV",
                format!(
                    "header `{}` is not MMMLU's `,Question,A,B,C,D,Answer,Subject`",
                    header.join(",")
                ),
            ));
        }
        Ok(())
    })?;
    let index = 0;
    let mut out = Vec::with_capacity(records.len());
    for (i, record) in records.iter().enumerate() {
        let row = i + 1;
        let cell = |k: usize, name: &'static str| nonempty(path, row, name, record.get(k));
        let index_text = cell(index, "(row index)")?.trim();
        let n: u64 = index_text.parse().map_err(|_| {
            invalid(
                path,
                row,
                "(row index)",
                format!("`{index_text}` is not a row number"),
            )
        })?;
        let subject = cell(7, "Subject")?.trim();
        let domain = domain_of(path, row, "Subject", subject)?;
        let answer_text = cell(6, "Answer")?;
        let answer: AnswerLetter = answer_text.parse().map_err(|_| {
            invalid(
                path,
                row,
                "Answer",
                format!("`{answer_text}` is not one of A, B, C, D"),
            )
        })?;
        out.push(Question {
            sample_id: format!("{subject}/test/{n}"),
            subject: subject.to_owned(),
            domain,
            language,
            question: cell(1, "Question")?.to_owned(),
            options: [
                cell(2, "A")?.to_owned(),
                cell(3, "B")?.to_owned(),
                cell(4, "C")?.to_owned(),
                cell(5, "D")?.to_owned(),
            ],
            answer,
            cultural_label: CulturalLabel::Unannotated,
        });
    }
    Ok(out)
}

/// One row of Belebele's official schema. `question_number` and `correct_answer_num` are
/// numbers on the Hub and strings in the release zip: both are read.
#[derive(Deserialize)]
struct BelebeleRow {
    link: Option<String>,
    question_number: Option<serde_json::Value>,
    flores_passage: Option<String>,
    question: Option<String>,
    mc_answer1: Option<String>,
    mc_answer2: Option<String>,
    mc_answer3: Option<String>,
    mc_answer4: Option<String>,
    correct_answer_num: Option<serde_json::Value>,
}

/// One passage of saeub/item-evaluation's conversion.
#[derive(Deserialize)]
struct ConvertedPassage {
    text: Option<String>,
    items: Option<Vec<ConvertedItem>>,
    metadata: Option<ConvertedMetadata>,
}

#[derive(Deserialize)]
struct ConvertedItem {
    question: Option<String>,
    answers: Option<Vec<ConvertedAnswer>>,
}

#[derive(Deserialize)]
struct ConvertedAnswer {
    text: Option<String>,
    correct: Option<bool>,
}

#[derive(Deserialize)]
struct ConvertedMetadata {
    extra: Option<ConvertedExtra>,
}

#[derive(Deserialize)]
struct ConvertedExtra {
    url: Option<String>,
}

fn number(value: &Option<serde_json::Value>) -> Option<u64> {
    match value.as_ref()? {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A JSON cell as it is written in the file, for an error message: `9`, `"9"`, `null`,
/// or "missing" when the key is absent.
fn as_written(value: &Option<serde_json::Value>) -> String {
    match value {
        None => "missing".to_owned(),
        Some(v) => format!("`{v}`"),
    }
}

fn reading_question(passage: &str, question: &str) -> String {
    format!("{}\n\n{}", passage.trim_end(), question.trim())
}

/// Reads one Belebele JSON Lines file, in the official schema or the converted one (see
/// [`Benchmark::Belebele`]). Rows are numbered by line.
pub(crate) fn read_belebele(path: &Path, language: Language) -> Result<Vec<Question>, DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let row = i + 1;
        let line = line.map_err(|e| DataError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| malformed(path, "JSON Lines", format!("line {row}: {e}")))?;
        let object = value.as_object().ok_or_else(|| {
            malformed(path, "JSON Lines", format!("line {row}: not a JSON object"))
        })?;
        if object.contains_key("items") {
            let passage: ConvertedPassage = serde_json::from_value(value)
                .map_err(|e| malformed(path, "JSON Lines", format!("line {row}: {e}")))?;
            read_converted(path, row, language, passage, &mut out)?;
            continue;
        }
        let r: BelebeleRow = serde_json::from_value(value)
            .map_err(|e| malformed(path, "JSON Lines", format!("line {row}: {e}")))?;
        let link = nonempty(path, row, "link", r.link.as_deref())?.trim();
        let number_of = number(&r.question_number).ok_or_else(|| {
            invalid(
                path,
                row,
                "question_number",
                format!(
                    "{} is not a question number",
                    as_written(&r.question_number)
                ),
            )
        })?;
        let correct = number(&r.correct_answer_num)
            .filter(|n| (1..=4).contains(n))
            .ok_or_else(|| {
                invalid(
                    path,
                    row,
                    "correct_answer_num",
                    format!("{} is not 1, 2, 3 or 4", as_written(&r.correct_answer_num)),
                )
            })?;
        let passage = nonempty(path, row, "flores_passage", r.flores_passage.as_deref())?;
        let question = nonempty(path, row, "question", r.question.as_deref())?;
        let options = [
            ("mc_answer1", &r.mc_answer1),
            ("mc_answer2", &r.mc_answer2),
            ("mc_answer3", &r.mc_answer3),
            ("mc_answer4", &r.mc_answer4),
        ]
        .map(|(name, v)| nonempty(path, row, name, v.as_deref()).map(str::to_owned));
        let [a, b, c, d] = options;
        out.push(Question {
            sample_id: format!("{link}/{number_of}"),
            subject: BELEBELE_SUBJECT.to_owned(),
            domain: Domain::Reading,
            language,
            question: reading_question(passage, question),
            options: [a?, b?, c?, d?],
            answer: AnswerLetter::from_index(correct as usize - 1).expect("1-4"),
            cultural_label: CulturalLabel::Unannotated,
        });
    }
    if out.is_empty() {
        return Err(DataError::NoRows {
            path: path.to_owned(),
        });
    }
    Ok(out)
}

fn read_converted(
    path: &Path,
    row: usize,
    language: Language,
    passage: ConvertedPassage,
    out: &mut Vec<Question>,
) -> Result<(), DataError> {
    let text = nonempty(path, row, "text", passage.text.as_deref())?;
    let url = passage
        .metadata
        .and_then(|m| m.extra)
        .and_then(|e| e.url)
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| DataError::EmptyField {
            path: path.to_owned(),
            row,
            column: "metadata.extra.url",
        })?;
    let items = passage.items.unwrap_or_default();
    if items.is_empty() {
        return Err(DataError::EmptyField {
            path: path.to_owned(),
            row,
            column: "items",
        });
    }
    for (k, item) in items.into_iter().enumerate() {
        let question = nonempty(path, row, "items.question", item.question.as_deref())?;
        let answers = item.answers.unwrap_or_default();
        let at = |reason: String| {
            invalid(
                path,
                row,
                "items.answers",
                format!("item {}: {reason}", k + 1),
            )
        };
        if answers.len() != 4 {
            return Err(at(format!("{} answers, expected 4", answers.len())));
        }
        let correct: Vec<usize> = answers
            .iter()
            .enumerate()
            .filter(|(_, a)| a.correct == Some(true))
            .map(|(j, _)| j)
            .collect();
        let [answer] = correct[..] else {
            return Err(at(format!(
                "{} answers marked correct, expected 1",
                correct.len()
            )));
        };
        let mut options: [String; 4] = Default::default();
        for (j, a) in answers.into_iter().enumerate() {
            options[j] = a
                .text
                .filter(|t| !t.trim().is_empty())
                .ok_or_else(|| at(format!("answer {} is empty", j + 1)))?;
        }
        out.push(Question {
            // The question number is the item's place in its passage (1-based).
            sample_id: format!("{}/{}", url.trim(), k + 1),
            subject: BELEBELE_SUBJECT.to_owned(),
            domain: Domain::Reading,
            language,
            question: reading_question(text, question),
            options,
            answer: AnswerLetter::from_index(answer).expect("0-3"),
            cultural_label: CulturalLabel::Unannotated,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_list_literals_parse_as_literal_eval_does() {
        let cases: &[(&str, &[&str])] = &[
            ("['a', 'b', 'c', 'd']", &["a", "b", "c", "d"]),
            (
                r#"["1 n'elu 5", '-5', 'x', 'y']"#,
                &["1 n'elu 5", "-5", "x", "y"],
            ),
            (
                r"['a\u200bb', 'it\'s', 'tab\t', '\\']",
                &["a\u{200b}b", "it's", "tab\t", "\\"],
            ),
            ("[ 'a' , 'b', ]", &["a", "b"]),
            ("[]", &[]),
        ];
        for (text, expected) in cases {
            let got = parse_python_list(text).unwrap();
            assert_eq!(got, *expected, "{text}");
        }
        for bad in [
            "'a', 'b'",
            "['a' 'b']",
            "['a', b]",
            "['a'",
            "['a'] x",
            r"['\u12']",
        ] {
            let err = parse_python_list(bad).unwrap_err();
            assert!(err.contains("not a Python list"), "{bad}: {err}");
        }
    }

    #[test]
    fn afrimmlu_split_comes_from_the_file_name() {
        for (p, split) in [
            ("afrimmlu/ibo.dev.tsv", "dev"),
            ("data/ibo/test.tsv", "test"),
            ("x/yor.val.tsv", "val"),
            ("ibo.tsv", "test"),
        ] {
            assert_eq!(afrimmlu_split(Path::new(p)), split, "{p}");
        }
    }
}
