//! Loading Global-MMLU from parquet, CSV and JSON Lines, with schema validation.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::benchmark::{self, Benchmark};
use crate::dataset::Dataset;
use crate::error::DataError;
use crate::language::Language;
use crate::question::{AnswerLetter, CulturalLabel, Question};

/// A file format Global-MMLU is distributed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// Comma-separated values with a header row (pandas `to_csv`).
    Csv,
    /// Apache Parquet (the Hugging Face layout).
    Parquet,
    /// One JSON object per line (`to_json(lines=True)`); `.json` files are read this way too.
    JsonLines,
    /// Tab-separated values with a header row (AfriMMLU).
    Tsv,
}

impl FileFormat {
    /// The format a path's extension names, if any.
    pub fn from_path(path: &Path) -> Option<FileFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(FileFormat::Csv),
            "parquet" => Some(FileFormat::Parquet),
            "jsonl" | "ndjson" | "json" => Some(FileFormat::JsonLines),
            "tsv" => Some(FileFormat::Tsv),
            _ => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            FileFormat::Csv => "CSV",
            FileFormat::Parquet => "parquet",
            FileFormat::JsonLines => "JSON Lines",
            FileFormat::Tsv => "TSV",
        }
    }
}

/// The columns every file must have. `cultural_sensitivity_label` is optional: files
/// without it load with every question [`CulturalLabel::Unannotated`].
pub const REQUIRED_COLUMNS: [&str; 9] = [
    "sample_id",
    "subject",
    "subject_category",
    "question",
    "option_a",
    "option_b",
    "option_c",
    "option_d",
    "answer",
];

const LABEL_COLUMN: &str = "cultural_sensitivity_label";

/// Tells the language of a data file from its path.
///
/// The rules, in order: a file named `<lang>.<split>.<ext>` or `<lang>.<ext>`
/// (`de.test.csv`, `yo.csv`, `ibo.dev.tsv`, `ibo_Latn.jsonl`), or MMMLU's
/// `mmlu_<locale>.csv` (`mmlu_YO-NG.csv`); a file in a directory named by the code
/// (`en/test-00000-of-00001.parquet`, Hugging Face's layout; `data/ibo/test.tsv`,
/// AfriMMLU's). A code is any [`Language::from_code`] reads.
///
/// # Errors
/// [`DataError::UnknownLanguage`] when the file name starts with a code-like word that is no
/// Global-MMLU language (`xx.test.csv`); [`DataError::LanguageNotInPath`] when neither rule
/// applies.
pub fn language_from_path(path: &Path) -> Result<Language, DataError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let first = name.split('.').next().unwrap_or("");
    if name.contains('.')
        && let Some(lang) = Language::from_code(first)
            .or_else(|| first.strip_prefix("mmlu_").and_then(Language::from_code))
    {
        return Ok(lang);
    }
    if let Some(lang) = path
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .and_then(Language::from_code)
    {
        return Ok(lang);
    }
    let code_like = (2..=3).contains(&first.len()) && first.chars().all(|c| c.is_ascii_lowercase());
    if code_like && name.matches('.').count() >= 1 {
        return Err(DataError::UnknownLanguage {
            code: first.to_owned(),
            context: Some(format!("from the file name {}", path.display())),
            nearest: crate::language::nearest_languages(first),
            data_has: Vec::new(),
        });
    }
    Err(DataError::LanguageNotInPath {
        path: path.to_owned(),
    })
}

/// Lists the data files under `path`: the path itself if it is a file, else every `.csv`,
/// `.tsv`, `.parquet`, `.jsonl` and `.json` file below it, recursively, in sorted order (hidden
/// files and directories skipped).
///
/// # Errors
/// [`DataError::Io`] if the path cannot be read; [`DataError::UnsupportedFormat`] for a file
/// given directly whose type is none of the above.
pub fn data_files(path: &Path) -> Result<Vec<PathBuf>, DataError> {
    let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
    if meta.is_file() {
        FileFormat::from_path(path).ok_or_else(|| DataError::UnsupportedFormat {
            path: path.to_owned(),
        })?;
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    let walker = walkdir::WalkDir::new(path)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    for entry in walker {
        let entry = entry.map_err(|e| {
            let p = e.path().unwrap_or(path).to_owned();
            DataError::io(p, e.into())
        })?;
        if entry.file_type().is_file() && FileFormat::from_path(entry.path()).is_some() {
            files.push(entry.into_path());
        }
    }
    Ok(files)
}

/// Loads one file. The language is `language` if given, else it comes from the path
/// (see [`language_from_path`]).
///
/// # Errors
/// Any of the schema errors of [`DataError`], each naming the file, and for a bad cell the
/// row and column.
pub fn load_file(path: &Path, language: Option<Language>) -> Result<Vec<Question>, DataError> {
    load_file_as(path, None, language)
}

/// Loads one file of `benchmark`, or of the benchmark [`Benchmark::detect`] recognises when
/// `None`. The language is `language` if given, else it comes from the path (see
/// [`language_from_path`]).
///
/// # Errors
/// As [`load_file`].
pub fn load_file_as(
    path: &Path,
    benchmark: Option<Benchmark>,
    language: Option<Language>,
) -> Result<Vec<Question>, DataError> {
    let format = FileFormat::from_path(path).ok_or_else(|| DataError::UnsupportedFormat {
        path: path.to_owned(),
    })?;
    let language = match language {
        Some(l) => l,
        None => language_from_path(path)?,
    };
    let benchmark = match benchmark {
        Some(b) => b,
        None => Benchmark::detect(path)?,
    };
    let questions = match benchmark {
        Benchmark::AfriMmlu => benchmark::read_afrimmlu(path, language)?,
        Benchmark::Belebele => benchmark::read_belebele(path, language)?,
        Benchmark::Mmmlu => benchmark::read_mmmlu(path, language)?,
        Benchmark::GlobalMmlu => {
            if format == FileFormat::Tsv {
                return Err(DataError::UnsupportedFormat {
                    path: path.to_owned(),
                });
            }
            let frame = read_frame(path, format)?;
            frame_to_questions(path, language, &frame)?
        }
    };
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(questions.len());
    for (i, q) in questions.iter().enumerate() {
        if seen.insert(q.sample_id.as_str(), i).is_some() {
            return Err(DataError::DuplicateSampleId {
                path: path.to_owned(),
                row: i + 1,
                sample_id: q.sample_id.clone(),
                language: language.code().to_owned(),
                first_path: path.to_owned(),
            });
        }
    }
    Ok(questions)
}

/// Loads every data file under each path (files or directories), each file's language from
/// its path, into one [`Dataset`].
///
/// # Errors
/// As [`load_file`], and [`DataError::DuplicateSampleId`] when two files give the same
/// language the same sample_id; [`DataError::EmptySlice`] when the paths hold no data file.
pub fn load_paths<P: AsRef<Path>>(paths: &[P]) -> Result<Dataset, DataError> {
    let paths: Vec<(&Path, Option<Benchmark>)> = paths.iter().map(|p| (p.as_ref(), None)).collect();
    load_paths_as(&paths)
}

/// Loads every data file under each path, each read as the benchmark given beside it (or
/// the one [`Benchmark::detect`] recognises, for `None`), into one [`Dataset`] that
/// remembers the file of every row (for [`Dataset::audit_file_alignment`]).
///
/// # Errors
/// As [`load_paths`].
pub fn load_paths_as(paths: &[(&Path, Option<Benchmark>)]) -> Result<Dataset, DataError> {
    let mut questions = Vec::new();
    let mut origin: HashMap<(Language, String), PathBuf> = HashMap::new();
    let mut n_files = 0;
    for &(path, benchmark) in paths {
        for file in data_files(path)? {
            n_files += 1;
            let loaded = load_file_as(&file, benchmark, None)?;
            for (i, q) in loaded.iter().enumerate() {
                let key = (q.language, q.sample_id.clone());
                if let Some(first) = origin.get(&key) {
                    return Err(DataError::DuplicateSampleId {
                        path: file.clone(),
                        row: i + 1,
                        sample_id: q.sample_id.clone(),
                        language: q.language.code().to_owned(),
                        first_path: first.clone(),
                    });
                }
                origin.insert(key, file.clone());
            }
            questions.extend(loaded);
        }
    }
    if n_files == 0 {
        let names: Vec<String> = paths.iter().map(|(p, _)| p.display().to_string()).collect();
        return Err(DataError::EmptySlice {
            what: format!("no data file under {}", names.join(", ")),
        });
    }
    Ok(Dataset::new(questions).with_origins(origin))
}

fn malformed(path: &Path, format: FileFormat, message: impl Into<String>) -> DataError {
    DataError::Malformed {
        path: path.to_owned(),
        format: format.label(),
        message: message.into(),
    }
}

fn read_frame(path: &Path, format: FileFormat) -> Result<DataFrame, DataError> {
    // Open first so that a missing file is an I/O error, not a reader message.
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let result = match format {
        // Every column as text: validation, not inference, decides what a cell may hold.
        FileFormat::Csv => CsvReadOptions::default()
            .with_has_header(true)
            .with_infer_schema_length(Some(0))
            .into_reader_with_file_handle(file)
            .finish(),
        FileFormat::Parquet => ParquetReader::new(file).finish(),
        // TSV is AfriMMLU's, read by its own reader.
        FileFormat::Tsv => {
            return Err(DataError::UnsupportedFormat {
                path: path.to_owned(),
            });
        }
        FileFormat::JsonLines => JsonReader::new(file)
            .with_json_format(JsonFormat::JsonLines)
            .infer_schema_len(None)
            .finish(),
    };
    result.map_err(|e| match format {
        FileFormat::JsonLines => locate_json_error(path)
            .unwrap_or_else(|| malformed(path, format, e.to_string().lines().next().unwrap_or(""))),
        _ => malformed(path, format, e.to_string().lines().next().unwrap_or("")),
    })
}

/// Polars' JSON errors do not say where; find the first line that is not a JSON object.
fn locate_json_error(path: &Path) -> Option<DataError> {
    let file = File::open(path).ok()?;
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                return Some(malformed(
                    path,
                    FileFormat::JsonLines,
                    format!("line {}: {e}", i + 1),
                ));
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<serde_json::Value>(&line) {
            Ok(serde_json::Value::Object(_)) => {}
            Ok(_) => {
                return Some(malformed(
                    path,
                    FileFormat::JsonLines,
                    format!("line {}: not a JSON object", i + 1),
                ));
            }
            Err(e) => {
                return Some(malformed(
                    path,
                    FileFormat::JsonLines,
                    format!("line {}: {e}", i + 1),
                ));
            }
        }
    }
    None
}

/// When `path` is a CSV file whose data row `row` (1-based) has fewer fields than its header
/// has columns and lacks `column`, the error that says so: polars reads a short row's missing
/// trailing fields as empty, which would be reported as an empty cell.
fn short_row(path: &Path, row: usize, column: &'static str) -> Option<DataError> {
    if FileFormat::from_path(path) != Some(FileFormat::Csv) {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let records = csv_field_counts(&text);
    let header = records.first()?;
    let fields = records.get(row)?.0;
    let position = header.1.iter().position(|h| h == column)?;
    (fields <= position).then(|| DataError::MissingField {
        path: path.to_owned(),
        row,
        fields,
        columns: header.0,
        column,
    })
}

/// The records of a CSV text (RFC 4180 quoting; blank lines skipped, as polars does): each
/// record's field count, and for the first (the header) its names.
fn csv_field_counts(text: &str) -> Vec<(usize, Vec<String>)> {
    let mut records = Vec::new();
    let (mut fields, mut field, mut quoted, mut blank) = (Vec::new(), String::new(), false, true);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            '"' => {
                quoted = !quoted;
                blank = false;
            }
            ',' if !quoted => {
                fields.push(std::mem::take(&mut field));
                blank = false;
            }
            '\n' if !quoted => {
                if !blank {
                    fields.push(std::mem::take(&mut field));
                    records.push(std::mem::take(&mut fields));
                }
                field.clear();
                blank = true;
            }
            '\r' if !quoted => {}
            c => {
                field.push(c);
                blank = false;
            }
        }
    }
    if !blank {
        fields.push(field);
        records.push(fields);
    }
    records
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let names = if i == 0 {
                r.iter().map(|f| f.trim().to_owned()).collect()
            } else {
                Vec::new()
            };
            (r.len(), names)
        })
        .collect()
}

fn text_column(path: &Path, frame: &DataFrame, name: &'static str) -> Result<Column, DataError> {
    let column = frame.column(name).map_err(|_| DataError::MissingColumn {
        path: path.to_owned(),
        column: name,
    })?;
    if column.dtype() == &DataType::String {
        return Ok(column.clone());
    }
    column
        .cast(&DataType::String)
        .map_err(|e| DataError::InvalidValue {
            path: path.to_owned(),
            row: 0,
            column: name,
            reason: format!("cannot be read as text: {e}"),
        })
}

fn frame_to_questions(
    path: &Path,
    language: Language,
    frame: &DataFrame,
) -> Result<Vec<Question>, DataError> {
    if frame.height() == 0 {
        return Err(DataError::NoRows {
            path: path.to_owned(),
        });
    }
    let columns: Vec<Column> = REQUIRED_COLUMNS
        .iter()
        .map(|name| text_column(path, frame, name))
        .collect::<Result<_, _>>()?;
    let label = match frame.column(LABEL_COLUMN) {
        Ok(_) => Some(text_column(path, frame, LABEL_COLUMN)?),
        Err(_) => None,
    };
    let strs: Vec<&StringChunked> = columns
        .iter()
        .map(|c| c.str().expect("cast to String above"))
        .collect();
    let label = label
        .as_ref()
        .map(|c| c.str().expect("cast to String above"));

    let n = frame.height();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let row = i + 1;
        let cell = |k: usize| -> Result<&str, DataError> {
            match strs[k].get(i) {
                Some(s) if !s.trim().is_empty() => Ok(s),
                _ => Err(
                    short_row(path, row, REQUIRED_COLUMNS[k]).unwrap_or_else(|| {
                        DataError::EmptyField {
                            path: path.to_owned(),
                            row,
                            column: REQUIRED_COLUMNS[k],
                        }
                    }),
                ),
            }
        };
        let invalid = |column: &'static str, reason: String| DataError::InvalidValue {
            path: path.to_owned(),
            row,
            column,
            reason,
        };
        let sample_id = cell(0)?;
        let subject = cell(1)?;
        let domain = cell(2)?
            .parse()
            .map_err(|e: DataError| invalid("subject_category", e.to_string()))?;
        let answer_text = cell(8)?;
        let answer: AnswerLetter = answer_text.parse().map_err(|_| {
            invalid(
                "answer",
                format!("`{answer_text}` is not one of A, B, C, D"),
            )
        })?;
        let cultural_label = match label.and_then(|l| l.get(i)) {
            None => CulturalLabel::Unannotated,
            Some(s) => s
                .parse()
                .map_err(|e: DataError| invalid(LABEL_COLUMN, e.to_string()))?,
        };
        out.push(Question {
            sample_id: sample_id.to_owned(),
            subject: subject.to_owned(),
            domain,
            language,
            question: cell(3)?.to_owned(),
            options: [
                cell(4)?.to_owned(),
                cell(5)?.to_owned(),
                cell(6)?.to_owned(),
                cell(7)?.to_owned(),
            ],
            answer,
            cultural_label,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_from_path_rules() {
        let ok = |p: &str, code: &str| {
            assert_eq!(
                language_from_path(Path::new(p)).unwrap().code(),
                code,
                "{p}"
            )
        };
        ok("data/de.test.csv", "de");
        ok("yo.csv", "yo");
        ok("x/en/test-00000-of-00001.parquet", "en");
        ok("hf/fil/dev-00000-of-00001.parquet", "fil");
        ok("full/en.dev.jsonl", "en");
        let err = language_from_path(Path::new("data/xx.test.csv")).unwrap_err();
        assert!(matches!(err, DataError::UnknownLanguage { ref code, .. } if code == "xx"));
        assert!(err.to_string().contains("data/xx.test.csv"));
        let err = language_from_path(Path::new("data/questions.csv")).unwrap_err();
        assert!(matches!(err, DataError::LanguageNotInPath { .. }));
    }

    #[test]
    fn formats_from_extension() {
        assert_eq!(
            FileFormat::from_path(Path::new("a.CSV")),
            Some(FileFormat::Csv)
        );
        assert_eq!(
            FileFormat::from_path(Path::new("a.json")),
            Some(FileFormat::JsonLines)
        );
        assert_eq!(FileFormat::from_path(Path::new("README.md")), None);
    }
}
