//! Test helpers: real fixture rows, written back out corrupted or as parquet.
#![allow(dead_code)] // each test file uses a different part

use std::fs::File;
use std::path::{Path, PathBuf};

use polars::prelude::*;

/// `fixtures/` at the workspace root.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// The Lite fixture of `lang`.
pub fn lite(lang: &str) -> PathBuf {
    fixtures().join(format!("global-mmlu/lite/{lang}.test.csv"))
}

/// Header and the first `n` records of a fixture CSV, as text.
pub fn rows(path: &Path, n: usize) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::Reader::from_path(path).unwrap();
    let header = r.headers().unwrap().iter().map(str::to_owned).collect();
    let rows = r
        .records()
        .take(n)
        .map(|rec| rec.unwrap().iter().map(str::to_owned).collect())
        .collect();
    (header, rows)
}

/// Writes a CSV file.
pub fn write_csv(path: &Path, header: &[String], rows: &[Vec<String>]) {
    let mut w = csv::WriterBuilder::new()
        .flexible(true)
        .from_path(path)
        .unwrap();
    w.write_record(header).unwrap();
    for r in rows {
        w.write_record(r).unwrap();
    }
    w.flush().unwrap();
}

/// The index of column `name`.
pub fn col(header: &[String], name: &str) -> usize {
    header.iter().position(|h| h == name).unwrap()
}

/// Converts a fixture CSV to parquet the way Hugging Face stores Global-MMLU: every column
/// text except `is_annotated`, a boolean.
pub fn csv_to_parquet(csv_path: &Path, parquet_path: &Path) {
    let mut df = CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(Some(0))
        .try_into_reader_with_file_path(Some(csv_path.to_owned()))
        .unwrap()
        .finish()
        .unwrap();
    let text = df.column("is_annotated").unwrap().str().unwrap().clone();
    let flags: Vec<bool> = (0..text.len())
        .map(|i| text.get(i) == Some("True"))
        .collect();
    df.replace("is_annotated", Column::new("is_annotated".into(), flags))
        .unwrap();
    std::fs::create_dir_all(parquet_path.parent().unwrap()).unwrap();
    let file = File::create(parquet_path).unwrap();
    ParquetWriter::new(file).finish(&mut df).unwrap();
}
