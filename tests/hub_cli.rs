//! `prepare` and `reproduce` with `--data hf:CohereLabs/Global-MMLU` against a stand-in Hub
//! on loopback: the study's nine languages fetched once into a fresh `HF_HOME`, then the
//! whole study offline from that cache, the commit recorded in `manifest.json`.

mod common;

use std::path::Path;

use common::*;
use polars::prelude::*;
use xlt_hub::HubRepo;
use xlt_hub::testing::{Fetches, HubStandIn};

const COMMIT: &str = "5e1b1b5e1b1b5e1b1b5e1b1b5e1b1b5e1b1b5e1b";
const STUDY: [&str; 9] = ["am", "ar", "de", "en", "he", "ig", "ky", "tr", "yo"];
const LANGUAGES: &str = "am,ar,de,en,he,ig,ky,tr,yo";

/// A language's rows as the Hub stores them (parquet). The fixtures hold real Lite rows for
/// ar, de, en and yo; the other study languages are served the English rows, since this
/// test is about fetching and caching, not content.
fn parquet(lang: &str) -> Vec<u8> {
    let fixture = if ["ar", "de", "en", "yo"].contains(&lang) {
        lang
    } else {
        "en"
    };
    let csv = xlt::fixtures_dir().join(format!("global-mmlu/lite/{fixture}.test.csv"));
    let mut df = CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(Some(0))
        .try_into_reader_with_file_path(Some(csv))
        .unwrap()
        .finish()
        .unwrap();
    let mut bytes = Vec::new();
    ParquetWriter::new(&mut bytes).finish(&mut df).unwrap();
    bytes
}

fn run(name: &str, args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    spawn_example(name, args, envs)
        .wait_with_output()
        .expect("example finishes")
}

fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_study_languages_from_the_hub_then_the_whole_study_offline() {
    let hub = HubStandIn::start().await;
    let repo = HubRepo::dataset("CohereLabs/Global-MMLU", None).unwrap();
    let mut files = vec!["README.md".to_owned()];
    for lang in STUDY.iter().chain(&["fr", "sw"]) {
        files.push(format!("{lang}/test-00000-of-00001.parquet"));
        files.push(format!("{lang}/dev-00000-of-00001.parquet"));
    }
    let names: Vec<&str> = files.iter().map(String::as_str).collect();
    hub.serve_listing(&repo, COMMIT, &names, 1).await;
    for file in &files {
        let lang = file.split('/').next().unwrap();
        let wanted = STUDY.contains(&lang) && file.contains("/test-");
        let (bytes, fetches) = if wanted {
            (parquet(lang), Fetches::Times(1))
        } else {
            (b"not asked for".to_vec(), Fetches::Never)
        };
        hub.serve_file(&repo, COMMIT, file, &bytes, fetches).await;
    }

    let home = tempfile::tempdir().unwrap();
    let home_str = home.path().to_str().unwrap();
    let endpoint = hub.endpoint();
    let out = tempfile::tempdir().unwrap();
    let out_str = out.path().to_str().unwrap();
    // One domain keeps the offline study short (9 fine-tuned models on 9 test sets).
    let data = [
        "--data",
        "hf:CohereLabs/Global-MMLU",
        "--languages",
        LANGUAGES,
        "--domains",
        "stem",
    ];

    let o = run(
        "prepare",
        &[&["--out", out_str][..], &data].concat(),
        &hub_env(home_str, &endpoint, false),
    );
    assert!(o.status.success(), "{}", describe(&o));
    hub.reset().await;
    let m = manifest(out.path());
    assert_eq!(m["slices"].as_array().unwrap().len(), 9);
    assert_eq!(m["sources"][0]["source"], "hf:CohereLabs/Global-MMLU");
    assert_eq!(m["sources"][0]["commit"], COMMIT);
    assert_eq!(m["sources"][0]["files"].as_array().unwrap().len(), 9);
    // In the standard cache layout, where the Python tools look.
    let snapshot = home
        .path()
        .join("hub/datasets--CohereLabs--Global-MMLU/snapshots")
        .join(COMMIT);
    assert!(snapshot.join("ky/test-00000-of-00001.parquet").is_file());
    assert!(!snapshot.join("fr").exists());

    // The whole study offline from that cache: no request, the same split.
    let study = tempfile::tempdir().unwrap();
    let study_str = study.path().to_str().unwrap();
    let o = run(
        "reproduce",
        &[&["--out", study_str][..], &data].concat(),
        &hub_env(home_str, &endpoint, true),
    );
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(manifest(study.path()), m);
    assert!(study.path().join("report.md").is_file());
    assert_eq!(hub.requests().await, Vec::<String>::new());

    // Offline with a language never fetched: the error says what and where.
    let o = run(
        "prepare",
        &[
            "--out",
            out_str,
            "--data",
            "hf:CohereLabs/Global-MMLU",
            "--languages",
            "fr",
        ],
        &hub_env(home_str, &endpoint, true),
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("HF_HUB_OFFLINE is set"), "{err}");
    assert!(err.contains("fr/test-*.parquet"), "{err}");
    assert!(err.contains("datasets--CohereLabs--Global-MMLU"), "{err}");
}
