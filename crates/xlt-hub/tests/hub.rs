//! The client against a stand-in Hub on loopback: what is downloaded, what is not, and what
//! the cache and the errors look like. No test reads the user's cache: each has its own.

use std::path::Path;

use xlt_hub::testing::{Fetches, HubStandIn};
use xlt_hub::{HubClient, HubConfig, HubError, HubRepo, MODEL_FILES, resolve_model};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn config(cache: &Path, endpoint: &str) -> HubConfig {
    let mut config = HubConfig::new(cache);
    config.endpoint = endpoint.to_owned();
    config
}

fn bytes(file: &str) -> Vec<u8> {
    // Distinct contents, larger than one read, smaller than hf-hub's 10 MB chunk.
    (0..50_000u32)
        .flat_map(|i| (i ^ file.len() as u32).to_le_bytes())
        .chain(file.bytes())
        .collect()
}

const DATASET_FILES: [&str; 6] = [
    ".gitattributes",
    "README.md",
    "am/dev-00000-of-00001.parquet",
    "am/test-00000-of-00001.parquet",
    "de/test-00000-of-00001.parquet",
    "en/test-00000-of-00001.parquet",
];

/// Serves the dataset with `am/test` and `en/test` fetched `n` times, the rest never.
async fn serve_dataset(hub: &HubStandIn, repo: &HubRepo, listings: u64, n: u64) {
    hub.serve_listing(repo, COMMIT, &DATASET_FILES, listings)
        .await;
    for file in DATASET_FILES {
        let fetches = if file == "am/test-00000-of-00001.parquet"
            || file == "en/test-00000-of-00001.parquet"
        {
            Fetches::Times(n)
        } else {
            Fetches::Never
        };
        hub.serve_file(repo, COMMIT, file, &bytes(file), fetches)
            .await;
    }
}

const SELECTED: [&str; 2] = ["am/test-*.parquet", "en/test-*.parquet"];

#[tokio::test]
async fn first_run_fetches_the_selected_files_and_the_second_asks_nothing() {
    let hub = HubStandIn::start().await;
    let cache = tempfile::tempdir().unwrap();
    let repo = HubRepo::dataset("CohereLabs/Global-MMLU", None).unwrap();
    serve_dataset(&hub, &repo, 1, 1).await;

    let client = HubClient::new(config(cache.path(), &hub.endpoint())).unwrap();
    let snapshot = client.snapshot(&repo, &SELECTED).await.unwrap();
    assert_eq!(snapshot.commit, COMMIT);
    assert_eq!(
        snapshot.files,
        [
            "am/test-00000-of-00001.parquet",
            "en/test-00000-of-00001.parquet"
        ]
    );
    assert_eq!(snapshot.downloaded, 2);
    for (file, path) in snapshot.files.iter().zip(snapshot.paths()) {
        assert_eq!(std::fs::read(&path).unwrap(), bytes(file), "{file}");
    }
    // The Python client's layout: a ref for the branch, none for the commit.
    let repo_dir = cache.path().join("datasets--CohereLabs--Global-MMLU");
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        COMMIT
    );
    assert!(!repo_dir.join("refs").join(COMMIT).exists());
    assert_eq!(snapshot.dir, repo_dir.join("snapshots").join(COMMIT));
    assert!(
        std::fs::symlink_metadata(&snapshot.paths()[0])
            .unwrap()
            .file_type()
            .is_symlink()
    );
    hub.reset().await;

    // A second run, with a new client: no request at all.
    let client = HubClient::new(config(cache.path(), &hub.endpoint())).unwrap();
    let again = client.snapshot(&repo, &SELECTED).await.unwrap();
    assert_eq!(again.files, snapshot.files);
    assert_eq!(again.commit, COMMIT);
    assert_eq!(again.downloaded, 0);
    assert_eq!(hub.requests().await, Vec::<String>::new());

    // A wider selection lists once more and downloads only the new file.
    hub.serve_listing(&repo, COMMIT, &DATASET_FILES, 1).await;
    for file in DATASET_FILES {
        let n = u64::from(file == "de/test-00000-of-00001.parquet");
        hub.serve_file(&repo, COMMIT, file, &bytes(file), Fetches::Times(n))
            .await;
    }
    let wider = client
        .snapshot(&repo, &["am/test-*.parquet", "de/test-*.parquet"])
        .await
        .unwrap();
    assert_eq!(wider.downloaded, 1);
    hub.verify().await;
}

#[tokio::test]
async fn offline_serves_the_cache_and_says_what_is_missing() {
    let hub = HubStandIn::start().await;
    let cache = tempfile::tempdir().unwrap();
    let repo = HubRepo::dataset("CohereLabs/Global-MMLU", None).unwrap();
    serve_dataset(&hub, &repo, 1, 1).await;
    HubClient::new(config(cache.path(), &hub.endpoint()))
        .unwrap()
        .snapshot(&repo, &SELECTED)
        .await
        .unwrap();
    hub.reset().await;

    let mut offline = config(cache.path(), &hub.endpoint());
    offline.offline = true;
    let client = HubClient::new(offline).unwrap();
    let snapshot = client
        .snapshot(&repo, &["en/test-*.parquet"])
        .await
        .unwrap();
    assert_eq!(snapshot.files, ["en/test-00000-of-00001.parquet"]);

    let err = client
        .snapshot(&repo, &["en/test-*.parquet", "ky/test-*.parquet"])
        .await
        .unwrap_err();
    assert!(
        matches!(err, HubError::NotCached { ref missing, .. } if missing == &["ky/test-*.parquet"])
    );
    let message = err.to_string();
    for needle in [
        "HF_HUB_OFFLINE is set",
        "ky/test-*.parquet",
        "datasets--CohereLabs--Global-MMLU",
        "huggingface-cli download CohereLabs/Global-MMLU --repo-type dataset",
    ] {
        assert!(message.contains(needle), "{needle} not in: {message}");
    }
    // Offline with a revision never resolved: nothing cached at all.
    let other = HubRepo::dataset("CohereLabs/Global-MMLU", Some("v2")).unwrap();
    assert!(matches!(
        client.snapshot(&other, &["en/test-*.parquet"]).await,
        Err(HubError::NotCached { .. })
    ));
    assert_eq!(hub.requests().await, Vec::<String>::new());
}

#[tokio::test]
async fn an_unreachable_hub_with_an_empty_cache_says_what_to_download() {
    // Port 1 on loopback: nothing listens there.
    let cache = tempfile::tempdir().unwrap();
    let client = HubClient::new(config(cache.path(), "http://127.0.0.1:1")).unwrap();
    let repo = HubRepo::dataset("CohereLabs/Global-MMLU-Lite", None).unwrap();
    let err = client
        .snapshot(&repo, &["yo/test-*.parquet"])
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, HubError::NotCached { .. }), "{message}");
    assert!(message.contains("unreachable"), "{message}");
    assert!(
        message.contains("datasets--CohereLabs--Global-MMLU-Lite"),
        "{message}"
    );
}

#[tokio::test]
async fn files_the_python_client_cached_are_used_without_a_request() {
    let hub = HubStandIn::start().await;
    let cache = tempfile::tempdir().unwrap();
    // The layout huggingface_hub writes: relative links from snapshots/ into blobs/, a
    // half-written blob as `<etag>.incomplete`.
    let repo_dir = cache.path().join("datasets--CohereLabs--Global-MMLU-Lite");
    std::fs::create_dir_all(repo_dir.join("blobs")).unwrap();
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::create_dir_all(repo_dir.join("snapshots").join(COMMIT).join("yo")).unwrap();
    std::fs::create_dir_all(repo_dir.join("snapshots").join(COMMIT).join("ar")).unwrap();
    std::fs::write(repo_dir.join("refs/main"), COMMIT).unwrap();
    std::fs::write(repo_dir.join("blobs/e1"), b"yoruba rows").unwrap();
    std::fs::write(repo_dir.join("blobs/e2.incomplete"), b"arabic ro").unwrap();
    std::os::unix::fs::symlink(
        "../../../blobs/e1",
        repo_dir.join(format!("snapshots/{COMMIT}/yo/test-00000-of-00001.parquet")),
    )
    .unwrap();

    let mut config = config(cache.path(), &hub.endpoint());
    let client = HubClient::new(config.clone()).unwrap();
    let repo = HubRepo::dataset("CohereLabs/Global-MMLU-Lite", None).unwrap();
    let snapshot = client
        .snapshot(&repo, &["yo/test-*.parquet"])
        .await
        .unwrap();
    assert_eq!(std::fs::read(&snapshot.paths()[0]).unwrap(), b"yoruba rows");
    assert_eq!(hub.requests().await, Vec::<String>::new());

    // The half-written Arabic file is not in the cache.
    config.offline = true;
    let client = HubClient::new(config).unwrap();
    assert!(matches!(
        client.snapshot(&repo, &["ar/test-*.parquet"]).await,
        Err(HubError::NotCached { .. })
    ));
}

#[tokio::test]
async fn an_interrupted_download_is_never_used_and_finishes_later() {
    let hub = HubStandIn::start().await;
    let cache = tempfile::tempdir().unwrap();
    let repo = HubRepo::dataset("CohereLabs/Global-MMLU", None).unwrap();
    let file = "am/test-00000-of-00001.parquet";
    let content = bytes(file);
    // The CDN fails the transfer of the whole file once (after the size query succeeded).
    wiremock::Mock::given(wiremock::matchers::header(
        "range",
        format!("bytes=0-{}", content.len()).as_str(),
    ))
    .respond_with(wiremock::ResponseTemplate::new(503))
    .up_to_n_times(1)
    .expect(1)
    .with_priority(1)
    .mount(&hub.cdn)
    .await;
    hub.serve_listing(&repo, COMMIT, &[file], 2).await;
    // First run: the size query and a failed transfer; second run: both again. The failed
    // transfer goes to the mock above.
    hub.serve_file(
        &repo,
        COMMIT,
        file,
        &content,
        Fetches::Requests { resolve: 4, cdn: 3 },
    )
    .await;

    let client = HubClient::new(config(cache.path(), &hub.endpoint())).unwrap();
    let err = client
        .snapshot(&repo, &["am/test-*.parquet"])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            HubError::Http {
                status: Some(503),
                ..
            }
        ),
        "{err}"
    );
    let repo_dir = cache.path().join("datasets--CohereLabs--Global-MMLU");
    assert!(!repo_dir.join("snapshots").join(COMMIT).join(file).exists());
    let mut offline = config(cache.path(), &hub.endpoint());
    offline.offline = true;
    assert!(matches!(
        HubClient::new(offline.clone())
            .unwrap()
            .snapshot(&repo, &["am/test-*.parquet"])
            .await,
        Err(HubError::NotCached { .. })
    ));

    let snapshot = client
        .snapshot(&repo, &["am/test-*.parquet"])
        .await
        .unwrap();
    assert_eq!(std::fs::read(&snapshot.paths()[0]).unwrap(), content);
    hub.verify().await;
}

#[tokio::test]
async fn a_partial_download_resumes_from_what_was_committed() {
    let hub = HubStandIn::start().await;
    let cache = tempfile::tempdir().unwrap();
    let repo = HubRepo::dataset("CohereLabs/Global-MMLU", None).unwrap();
    let file = "en/test-00000-of-00001.parquet";
    let content = bytes(file);
    let sha256 = {
        use sha2::Digest;
        format!("{:x}", sha2::Sha256::digest(&content))
    };
    // What hf-hub leaves when killed mid-file: the blob's `.sync.part`, the file's length
    // plus 8 bytes, whose last 8 bytes count the bytes already written (little-endian).
    let half = content.len() / 2;
    let blobs = cache.path().join("datasets--CohereLabs--Global-MMLU/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let mut part = content[..half].to_vec();
    part.resize(content.len(), 0);
    part.extend((half as u64).to_le_bytes());
    std::fs::write(blobs.join(format!("{sha256}.sync.part")), part).unwrap();

    // Only the missing half is asked for.
    wiremock::Mock::given(wiremock::matchers::header(
        "range",
        format!("bytes={half}-{}", content.len()).as_str(),
    ))
    .respond_with(
        wiremock::ResponseTemplate::new(206)
            .insert_header(
                "content-range",
                format!("bytes {half}-{}/{}", content.len() - 1, content.len()).as_str(),
            )
            .set_body_bytes(content[half..].to_vec()),
    )
    .expect(1)
    .with_priority(1)
    .mount(&hub.cdn)
    .await;
    hub.serve_listing(&repo, COMMIT, &[file], 1).await;
    // The resolve mock sees the size query and the ranged request; the CDN's generic mock
    // only the size query (the tail goes to the mock above), hence not `Fetches::Times(1)`.
    wiremock::Mock::given(wiremock::matchers::path(HubStandIn::resolve_path(
        &repo, COMMIT, file,
    )))
    .respond_with(
        wiremock::ResponseTemplate::new(302)
            .insert_header(
                "location",
                format!("{}/repos/x/{sha256}", hub.cdn.uri()).as_str(),
            )
            .insert_header("x-repo-commit", COMMIT)
            .insert_header("x-linked-etag", format!("\"{sha256}\"").as_str()),
    )
    .expect(2)
    .mount(&hub.hub)
    .await;
    wiremock::Mock::given(wiremock::matchers::header("range", "bytes=0-0"))
        .respond_with(
            wiremock::ResponseTemplate::new(206)
                .insert_header(
                    "content-range",
                    format!("bytes 0-0/{}", content.len()).as_str(),
                )
                .set_body_bytes(content[..1].to_vec()),
        )
        .expect(1)
        .mount(&hub.cdn)
        .await;

    let client = HubClient::new(config(cache.path(), &hub.endpoint())).unwrap();
    let snapshot = client.snapshot(&repo, &[file]).await.unwrap();
    assert_eq!(std::fs::read(&snapshot.paths()[0]).unwrap(), content);
    assert!(!blobs.join(format!("{sha256}.sync.part")).exists());
    hub.verify().await;
}

#[tokio::test]
async fn a_gated_repository_without_a_token_names_hf_token() {
    let hub = HubStandIn::start().await;
    let cache = tempfile::tempdir().unwrap();
    let repo = HubRepo::dataset("Org/Gated", None).unwrap();
    let file = "en/test-00000-of-00001.parquet";
    hub.serve_listing(&repo, COMMIT, &[file], 2).await;
    // The Hub lists a gated repository to anyone but refuses its files without access.
    wiremock::Mock::given(wiremock::matchers::path(HubStandIn::resolve_path(
        &repo, COMMIT, file,
    )))
    .respond_with(wiremock::ResponseTemplate::new(401).set_body_json(serde_json::json!({
        "error": "Access to dataset Org/Gated is restricted. You must have access to it and be authenticated to access it. Please log in."
    })))
    .expect(2)
    .mount(&hub.hub)
    .await;

    let client = HubClient::new(config(cache.path(), &hub.endpoint())).unwrap();
    let err = client.snapshot(&repo, &[file]).await.unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(
            err,
            HubError::Unauthorized {
                status: 401,
                token_sent: false,
                ..
            }
        ),
        "{message}"
    );
    assert!(message.contains("set HF_TOKEN"), "{message}");
    assert!(message.contains("dataset Org/Gated@main"), "{message}");

    // With a token that has no access: the token is named as refused, and never shown.
    let mut with_token = config(cache.path(), &hub.endpoint());
    with_token.token = Some("hf_not_a_real_token".to_owned());
    let err = HubClient::new(with_token)
        .unwrap()
        .snapshot(&repo, &[file])
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(
        err,
        HubError::Unauthorized {
            token_sent: true,
            ..
        }
    ));
    assert!(message.contains("HF_TOKEN"), "{message}");
    assert!(!message.contains("hf_not_a_real_token"), "{message}");
    let sent = hub.hub.received_requests().await.unwrap();
    assert!(
        sent.iter().any(|r| r
            .headers
            .get("authorization")
            .is_some_and(|v| v == "Bearer hf_not_a_real_token")),
        "the token was not sent"
    );
    hub.verify().await;

    // A private repository answers 401 to the listing itself.
    hub.hub.reset().await;
    wiremock::Mock::given(wiremock::matchers::path(
        "/api/datasets/Org/Private/revision/main",
    ))
    .respond_with(wiremock::ResponseTemplate::new(401))
    .expect(1)
    .mount(&hub.hub)
    .await;
    let private = HubRepo::dataset("Org/Private", None).unwrap();
    let err = client.snapshot(&private, &[file]).await.unwrap_err();
    assert!(err.to_string().contains("HF_TOKEN"), "{err}");
}

#[tokio::test]
async fn a_pattern_with_no_file_lists_what_the_repository_has() {
    let hub = HubStandIn::start().await;
    let cache = tempfile::tempdir().unwrap();
    let repo = HubRepo::dataset("CohereLabs/Global-MMLU-Lite", None).unwrap();
    hub.serve_listing(&repo, COMMIT, &DATASET_FILES, 1).await;
    let client = HubClient::new(config(cache.path(), &hub.endpoint())).unwrap();
    let err = client
        .snapshot(&repo, &["ig/test-*.parquet"])
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, HubError::NoMatch { .. }), "{message}");
    assert!(message.contains("ig/test-*.parquet"), "{message}");
    assert!(
        message.contains("en/test-00000-of-00001.parquet"),
        "{message}"
    );
    hub.verify().await;
}

#[tokio::test]
async fn a_model_resolves_to_its_config_tokenizer_and_shards_and_then_works_offline() {
    let hub = HubStandIn::start().await;
    let cache = tempfile::tempdir().unwrap();
    let repo = HubRepo::model("Org/Tiny-LM", None).unwrap();
    let fetched = [
        "config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ];
    let skipped = ["README.md", "onnx/model.onnx", "pytorch_model.bin"];
    let all: Vec<&str> = fetched.iter().chain(&skipped).copied().collect();
    hub.serve_listing(&repo, COMMIT, &all, 1).await;
    for file in fetched {
        hub.serve_file(&repo, COMMIT, file, &bytes(file), Fetches::Times(1))
            .await;
    }
    for file in skipped {
        hub.serve_file(&repo, COMMIT, file, &bytes(file), Fetches::Never)
            .await;
    }

    let config = config(cache.path(), &hub.endpoint());
    let dir = resolve_model(&config, "Org/Tiny-LM", None, &MODEL_FILES)
        .await
        .unwrap();
    assert_eq!(
        dir,
        cache
            .path()
            .join("models--Org--Tiny-LM/snapshots")
            .join(COMMIT)
    );
    for file in fetched {
        assert_eq!(
            std::fs::read(dir.join(file)).unwrap(),
            bytes(file),
            "{file}"
        );
    }
    hub.reset().await;

    let mut offline = config.clone();
    offline.offline = true;
    let again =
        xlt_hub::resolve_model_blocking(&offline, "Org/Tiny-LM", None, &MODEL_FILES).unwrap();
    assert_eq!(again, dir);
    // And at the commit itself, as a run that recorded it would ask.
    let pinned = resolve_model(&offline, "Org/Tiny-LM", Some(COMMIT), &MODEL_FILES)
        .await
        .unwrap();
    assert_eq!(pinned, dir);
    assert_eq!(hub.requests().await, Vec::<String>::new());
}
