//! The one error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong while loading, selecting, splitting or exporting data.
///
/// Every variant about a file names the file; every variant about a row names the row
/// (1-based, counting data rows, the header excluded) and the column.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// Reading or writing a file failed.
    // The cause is in the message and deliberately not a `source`: a report that prints
    // the chain (anyhow's `{:#}`) would print it twice.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        error: std::io::Error,
    },
    /// A Hub dataset could not be fetched; the message says what to do (download with
    /// network, set `HF_TOKEN`, pick a language the dataset has).
    #[error(transparent)]
    Hub(#[from] xlt_hub::HubError),
    /// The file is not valid CSV, parquet or JSON Lines.
    #[error("{path}: malformed {format} file: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// `CSV`, `parquet` or `JSON Lines`.
        format: &'static str,
        /// The reader's message, with the line where it is known.
        message: String,
    },
    /// A required column is missing.
    #[error("{path}: missing column `{column}`")]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column.
        column: &'static str,
    },
    /// A required cell is empty or null.
    #[error("{path}: row {row}: column `{column}` is empty")]
    EmptyField {
        /// The file.
        path: PathBuf,
        /// 1-based data row.
        row: usize,
        /// The column.
        column: &'static str,
    },
    /// A CSV row with fewer fields than the header has columns: the required column is
    /// missing from the row, not empty.
    #[error(
        "{path}: row {row}: {fields} fields for {columns} columns; column `{column}` is missing (a short row)"
    )]
    MissingField {
        /// The file.
        path: PathBuf,
        /// 1-based data row.
        row: usize,
        /// Fields in the row.
        fields: usize,
        /// Columns in the header.
        columns: usize,
        /// The first required column the row lacks.
        column: &'static str,
    },
    /// A cell holds a value the column does not allow.
    #[error("{path}: row {row}: column `{column}`: {reason}")]
    InvalidValue {
        /// The file.
        path: PathBuf,
        /// 1-based data row.
        row: usize,
        /// The column.
        column: &'static str,
        /// What is wrong, quoting the value.
        reason: String,
    },
    /// A line of a line-oriented file (a `--resource-map` file) that cannot be read.
    #[error("{path}: line {line}: {reason}")]
    InvalidLine {
        /// The file.
        path: PathBuf,
        /// 1-based line number, counting every line (blank lines and comments too).
        line: usize,
        /// What is wrong, quoting the line's value.
        reason: String,
    },
    /// The same sample_id appears twice in one language.
    #[error(
        "{path}: row {row}: duplicate sample_id `{sample_id}` in language {language} (first seen in {first_path})"
    )]
    DuplicateSampleId {
        /// The file of the second occurrence.
        path: PathBuf,
        /// Its 1-based data row.
        row: usize,
        /// The id.
        sample_id: String,
        /// The language code.
        language: String,
        /// The file of the first occurrence.
        first_path: PathBuf,
    },
    /// A language code that no benchmark known here has.
    #[error(
        "unknown language code `{code}`{}{}{}; every known code is listed in docs/DATA.md (Languages)",
        context.as_ref().map(|c| format!(" ({c})")).unwrap_or_default(),
        codes_clause("; nearest known codes: ", nearest),
        codes_clause("; the data has ", data_has),
    )]
    UnknownLanguage {
        /// The code as given.
        code: String,
        /// Where it came from, e.g. the file whose name carries it.
        context: Option<String>,
        /// The known languages whose codes or names are nearest to `code` (at most five).
        nearest: Vec<crate::Language>,
        /// The languages the data holds, when known (the languages of local files, from
        /// their paths); empty when not known.
        data_has: Vec<crate::Language>,
    },
    /// A comma-separated list (of languages, of domains) that is empty or has an empty item.
    #[error("{what}: {reason}")]
    InvalidList {
        /// What the list names: `languages`, `domains`.
        what: &'static str,
        /// The list as given.
        list: String,
        /// What is wrong, in words.
        reason: String,
    },
    /// A file whose language cannot be told from its path, and none was given.
    #[error(
        "{path}: cannot tell the language from the path; name the file `<lang>.<split>.<ext>` or `<lang>.<ext>`, put it in a directory named by the code, or give the language explicitly"
    )]
    LanguageNotInPath {
        /// The file.
        path: PathBuf,
    },
    /// A file whose format is not CSV, parquet or JSON Lines.
    #[error("{path}: unsupported file type (expected .csv, .parquet, .jsonl or .json)")]
    UnsupportedFormat {
        /// The file.
        path: PathBuf,
    },
    /// A domain name that is not a Global-MMLU subject category.
    #[error(
        "unknown domain `{value}` (expected STEM, Humanities, Medical, Social Sciences, Business, Other or Reading)"
    )]
    UnknownDomain {
        /// The value as given.
        value: String,
    },
    /// A data file has a header but no data rows.
    #[error("{path}: no data rows (the file has only a header)")]
    NoRows {
        /// The file.
        path: PathBuf,
    },
    /// A selected domain that no question of the data (in the selected languages) has under
    /// the chosen domain scheme.
    #[error(
        "no question of domain {domain} in the data under the {scheme} domain scheme; the data has {} (select them with `--domains {}`)",
        if available.is_empty() { "no domain of that scheme".to_owned() } else { available.iter().map(|d| d.name()).collect::<Vec<_>>().join(", ") },
        available.iter().map(|d| d.slug()).collect::<Vec<_>>().join(","),
    )]
    DomainNotInData {
        /// The domain selected.
        domain: crate::Domain,
        /// The scheme's name (`study`, `mmlu`).
        scheme: String,
        /// The scheme's domains that have questions in the data.
        available: Vec<crate::Domain>,
    },
    /// A selection, split or export left a slice with no questions.
    #[error("empty slice: {what}")]
    EmptySlice {
        /// Which slice, and why it is empty.
        what: String,
    },
    /// A configuration value is out of range or malformed.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A prompt template refers to a placeholder it does not know.
    #[error("prompt template: unknown placeholder `{{{0}}}`")]
    UnknownPlaceholder(String),
    /// The embedded typology tables (WALS, Glottolog) have no entry for a language.
    #[error(
        "typology: no {table} entry for language `{language}` (the embedded tables cover Global-MMLU's 42 languages and AfriMMLU's)"
    )]
    UnknownTypology {
        /// The language's code.
        language: String,
        /// `languages.csv` (WALS and Glottolog ids) or `genealogy.csv`.
        table: &'static str,
    },
}

/// `prefix` and `ig (Igbo), yo (Yoruba)`, or nothing for no language.
fn codes_clause(prefix: &str, languages: &[crate::Language]) -> String {
    if languages.is_empty() {
        return String::new();
    }
    let named: Vec<String> = languages
        .iter()
        .map(|l| format!("{} ({})", l.code(), l.name()))
        .collect();
    format!("{prefix}{}", named.join(", "))
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> DataError {
        DataError::Io {
            path: path.into(),
            error: source,
        }
    }
}
