//! Global-MMLU by name from a stand-in Hub on loopback, with real rows: the Lite fixtures
//! written as parquet in the Hub's layout.

mod common;

use xlt_data::{
    DataError, DataSource, Language, LoadOptions, PrepareConfig, Selection, load_sources, prepare,
};
use xlt_hub::testing::{Fetches, HubStandIn};
use xlt_hub::{HubConfig, HubError, HubRepo};

const COMMIT: &str = "fedcba9876543210fedcba9876543210fedcba98";
const LANGS: [&str; 4] = ["ar", "de", "en", "yo"];

fn parquet(lang: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.parquet");
    common::csv_to_parquet(&common::lite(lang), &path);
    std::fs::read(path).unwrap()
}

fn file(lang: &str) -> String {
    format!("{lang}/test-00000-of-00001.parquet")
}

/// Serves Global-MMLU-Lite (four languages, test and dev files, a README); the languages in
/// `fetched` are expected to be downloaded once, the rest never.
async fn serve_lite(hub: &HubStandIn, listings: u64, fetched: &[&str]) -> HubRepo {
    let repo = HubRepo::dataset("CohereLabs/Global-MMLU-Lite", None).unwrap();
    let mut files = vec!["README.md".to_owned()];
    for lang in LANGS {
        files.push(file(lang));
        files.push(format!("{lang}/dev-00000-of-00001.parquet"));
    }
    let names: Vec<&str> = files.iter().map(String::as_str).collect();
    hub.serve_listing(&repo, COMMIT, &names, listings).await;
    for lang in LANGS {
        let fetches = if fetched.contains(&lang) {
            Fetches::Times(1)
        } else {
            Fetches::Never
        };
        hub.serve_file(&repo, COMMIT, &file(lang), &parquet(lang), fetches)
            .await;
        hub.serve_file(
            &repo,
            COMMIT,
            &format!("{lang}/dev-00000-of-00001.parquet"),
            b"dev rows",
            Fetches::Never,
        )
        .await;
    }
    hub.serve_file(
        &repo,
        COMMIT,
        "README.md",
        b"# Global-MMLU-Lite",
        Fetches::Never,
    )
    .await;
    repo
}

fn options(cache: &std::path::Path, endpoint: &str, languages: &[Language]) -> LoadOptions {
    let mut hub = HubConfig::new(cache);
    hub.endpoint = endpoint.to_owned();
    LoadOptions {
        languages: languages.to_vec(),
        split: "test".to_owned(),
        hub,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn selected_languages_are_fetched_once_and_recorded_in_the_manifest() {
    let hub = HubStandIn::start().await;
    let cache = tempfile::tempdir().unwrap();
    serve_lite(&hub, 1, &["en", "yo"]).await;
    let source: DataSource = "hf:CohereLabs/Global-MMLU-Lite".parse().unwrap();
    let languages = [Language::English, Language::Yoruba];

    let (dataset, records) = load_sources(
        std::slice::from_ref(&source),
        &options(cache.path(), &hub.endpoint(), &languages),
    )
    .unwrap();
    assert_eq!(dataset.languages(), languages);
    assert_eq!(dataset.len(), 800);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].commit, COMMIT);
    assert_eq!(records[0].revision, "main");
    assert_eq!(records[0].files, [file("en"), file("yo")]);
    hub.reset().await;

    // Again, from the cache: the same rows and record, and no request.
    let (again, records_again) = load_sources(
        &[source],
        &options(cache.path(), &hub.endpoint(), &languages),
    )
    .unwrap();
    assert_eq!(again.len(), dataset.len());
    assert_eq!(records_again, records);
    assert_eq!(hub.requests().await, Vec::<String>::new());

    let config = PrepareConfig {
        selection: Selection {
            languages: languages.to_vec(),
            ..Selection::default()
        },
        sources: records,
        ..PrepareConfig::default()
    };
    let prepared = prepare(again, &config).unwrap();
    let (_, manifest) = prepared.files().last().unwrap();
    let json: serde_json::Value = serde_json::from_str(manifest).unwrap();
    assert_eq!(
        json["sources"][0]["source"],
        "hf:CohereLabs/Global-MMLU-Lite"
    );
    assert_eq!(json["sources"][0]["commit"], COMMIT);
}

#[tokio::test(flavor = "multi_thread")]
async fn offline_reads_the_cache_and_names_what_is_missing() {
    let hub = HubStandIn::start().await;
    let cache = tempfile::tempdir().unwrap();
    serve_lite(&hub, 1, &["de"]).await;
    let source: DataSource = "hf:CohereLabs/Global-MMLU-Lite".parse().unwrap();
    load_sources(
        std::slice::from_ref(&source),
        &options(cache.path(), &hub.endpoint(), &[Language::German]),
    )
    .unwrap();
    hub.reset().await;

    let mut offline = options(cache.path(), &hub.endpoint(), &[Language::German]);
    offline.hub.offline = true;
    let (dataset, _) = load_sources(std::slice::from_ref(&source), &offline).unwrap();
    assert_eq!(dataset.languages(), [Language::German]);
    // Every language, offline: whatever the cache holds.
    offline.languages.clear();
    let (dataset, _) = load_sources(std::slice::from_ref(&source), &offline).unwrap();
    assert_eq!(dataset.languages(), [Language::German]);

    offline.languages = vec![Language::Arabic];
    let err = load_sources(&[source], &offline).unwrap_err();
    assert!(
        matches!(err, DataError::Hub(HubError::NotCached { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("ar/test-*.parquet"), "{err}");
    assert_eq!(hub.requests().await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn no_languages_means_every_language_the_dataset_has() {
    let hub = HubStandIn::start().await;
    let cache = tempfile::tempdir().unwrap();
    // One listing to find the languages, one to resolve the snapshot.
    serve_lite(&hub, 2, &LANGS).await;
    let source: DataSource = "hf:CohereLabs/Global-MMLU-Lite".parse().unwrap();
    let (dataset, records) =
        load_sources(&[source], &options(cache.path(), &hub.endpoint(), &[])).unwrap();
    assert_eq!(
        dataset.languages(),
        [
            Language::Arabic,
            Language::German,
            Language::English,
            Language::Yoruba
        ]
    );
    assert_eq!(records[0].files.len(), 4);
    hub.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_language_the_dataset_lacks_is_named() {
    let hub = HubStandIn::start().await;
    let cache = tempfile::tempdir().unwrap();
    serve_lite(&hub, 1, &[]).await;
    let source: DataSource = "hf:CohereLabs/Global-MMLU-Lite".parse().unwrap();
    let err = load_sources(
        &[source],
        &options(cache.path(), &hub.endpoint(), &[Language::Igbo]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("ig/test-*.parquet"), "{err}");
    hub.verify().await;
}

/// Serves `repo` with `files` (repository path, fixture path); the paths in `fetched` are
/// expected to be downloaded once, the rest never.
async fn serve_repo(
    hub: &HubStandIn,
    repo: &str,
    files: &[(&str, std::path::PathBuf)],
    fetched: &[&str],
    listings: u64,
) -> HubRepo {
    let repo = HubRepo::dataset(repo, None).unwrap();
    let mut names: Vec<&str> = files.iter().map(|(n, _)| *n).collect();
    names.push("README.md");
    hub.serve_listing(&repo, COMMIT, &names, listings).await;
    for (name, path) in files {
        let fetches = if fetched.contains(name) {
            Fetches::Times(1)
        } else {
            Fetches::Never
        };
        hub.serve_file(&repo, COMMIT, name, &std::fs::read(path).unwrap(), fetches)
            .await;
    }
    hub.serve_file(&repo, COMMIT, "README.md", b"# card", Fetches::Never)
        .await;
    repo
}

/// Repository, its files, the languages asked for, the files fetched, the rows read.
type Case<'a> = (
    &'a str,
    Vec<(&'a str, std::path::PathBuf)>,
    &'a [Language],
    &'a [&'a str],
    usize,
);

fn borrow(v: &[(String, std::path::PathBuf)]) -> Vec<(&str, std::path::PathBuf)> {
    v.iter().map(|(n, p)| (n.as_str(), p.clone())).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn benchmarks_by_name_fetch_only_the_selected_languages_in_their_layouts() {
    let f = common::fixtures();
    let afrimmlu: Vec<(String, std::path::PathBuf)> = ["ibo", "yor", "amh", "eng"]
        .iter()
        .flat_map(|l| {
            let f = f.clone();
            ["dev", "val", "test"].map(move |s| {
                (
                    format!("data/{l}/{s}.tsv"),
                    f.join(format!("afrimmlu/{l}.{s}.tsv")),
                )
            })
        })
        .collect();
    let belebele: Vec<(String, std::path::PathBuf)> = ["eng_Latn", "amh_Ethi", "ibo_Latn"]
        .iter()
        .map(|l| {
            (
                format!("data/{l}.jsonl"),
                f.join(format!("belebele/{l}.jsonl")),
            )
        })
        .collect();
    let mmmlu: Vec<(String, std::path::PathBuf)> = ["DE-DE", "FR-FR"]
        .iter()
        .map(|l| {
            (
                format!("test/mmlu_{l}.csv"),
                f.join(format!("mmmlu/mmlu_{l}.csv")),
            )
        })
        .collect();
    let cases: [Case<'_>; 3] = [
        (
            "masakhane/afrimmlu",
            borrow(&afrimmlu),
            &[Language::Igbo, Language::Yoruba],
            &["data/ibo/test.tsv", "data/yor/test.tsv"],
            1000,
        ),
        (
            "facebook/belebele",
            borrow(&belebele),
            &[Language::Amharic, Language::Igbo],
            &["data/amh_Ethi.jsonl", "data/ibo_Latn.jsonl"],
            110,
        ),
        (
            "openai/MMMLU",
            borrow(&mmmlu),
            &[Language::German],
            &["test/mmlu_DE-DE.csv"],
            12,
        ),
    ];
    for (name, files, languages, fetched, rows) in cases {
        let hub = HubStandIn::start().await;
        let cache = tempfile::tempdir().unwrap();
        serve_repo(&hub, name, &files, fetched, 1).await;
        let source: DataSource = format!("hf:{name}").parse().unwrap();
        let (dataset, records) = load_sources(
            std::slice::from_ref(&source),
            &options(cache.path(), &hub.endpoint(), languages),
        )
        .unwrap();
        assert_eq!(dataset.languages(), languages, "{name}");
        assert_eq!(dataset.len(), rows, "{name}");
        assert_eq!(records[0].files, fetched, "{name}");
        hub.verify().await;
        hub.reset().await;
        // Again, offline: from the cache, no request.
        let mut offline = options(cache.path(), &hub.endpoint(), languages);
        offline.hub.offline = true;
        let (again, _) = load_sources(&[source], &offline).unwrap();
        assert_eq!(again.len(), rows, "{name}");
        assert_eq!(hub.requests().await, Vec::<String>::new(), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_belebele_language_when_none_is_selected() {
    let f = common::fixtures();
    let files: Vec<(&str, std::path::PathBuf)> = vec![
        ("data/eng_Latn.jsonl", f.join("belebele/eng_Latn.jsonl")),
        ("data/ibo_Latn.jsonl", f.join("belebele/ibo_Latn.jsonl")),
    ];
    let hub = HubStandIn::start().await;
    let cache = tempfile::tempdir().unwrap();
    serve_repo(
        &hub,
        "facebook/belebele",
        &files,
        &["data/eng_Latn.jsonl", "data/ibo_Latn.jsonl"],
        2,
    )
    .await;
    let source: DataSource = "hf:facebook/belebele".parse().unwrap();
    let (dataset, _) =
        load_sources(&[source], &options(cache.path(), &hub.endpoint(), &[])).unwrap();
    assert_eq!(dataset.languages(), [Language::English, Language::Igbo]);
    hub.verify().await;
}
