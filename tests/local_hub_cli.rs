//! `chat --provider local --base-model Org/Name` against a stand-in Hub on loopback: a tiny
//! random Llama downloaded into a fresh `HF_HOME` on first use, then the same greedy answer
//! offline from that cache with no request, and offline with an empty cache an error that
//! says what to download.

mod common;

use common::*;
use xlt_hub::HubRepo;
use xlt_hub::testing::{Fetches, HubStandIn};
use xlt_local::Ops;
use xlt_local::testing::{config, random_model, write_hf_dir};

const MODEL: &str = "tiny-org/tiny-llama";
const COMMIT: &str = "7177e11a7177e11a7177e11a7177e11a7177e11a";

/// One greedy request, with the first token's alternatives.
const REQUEST: &str = r#"{"id": "q-1", "messages": [{"role": "user", "content": "Which letter?"}], "max_tokens": 6, "temperature": 0.0, "top_logprobs": 3}
"#;

fn chat(envs: &[(&str, &str)]) -> std::process::Output {
    run_example_with_env(
        "chat",
        &["--provider", "local", "--base-model", MODEL],
        envs,
        Some(REQUEST),
    )
}

/// The one response line of a successful run.
fn answer(o: &std::process::Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", describe(o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{}", describe(o));
    serde_json::from_str(lines[0]).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_id_is_downloaded_once_then_answers_offline_from_the_cache() {
    // The repository as the Hub holds it: the files a Hugging Face model directory has.
    let model_dir = tempfile::tempdir().unwrap();
    let cfg = config("llama");
    let (varmap, _model) = random_model(&cfg, Ops::Fused);
    write_hf_dir(model_dir.path(), &cfg, &varmap, false);
    let files = [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ];
    let hub = HubStandIn::start().await;
    let repo = HubRepo::model(MODEL, None).unwrap();
    let mut listed = files.to_vec();
    listed.extend([".gitattributes", "README.md"]);
    // Two listings: the model files (`MODEL_FILES`), then the optional generation config.
    hub.serve_listing(&repo, COMMIT, &listed, 2).await;
    for file in files {
        let bytes = std::fs::read(model_dir.path().join(file)).unwrap();
        hub.serve_file(&repo, COMMIT, file, &bytes, Fetches::Times(1))
            .await;
    }
    for file in [".gitattributes", "README.md"] {
        hub.serve_file(&repo, COMMIT, file, b"not asked for", Fetches::Never)
            .await;
    }

    let home = tempfile::tempdir().unwrap();
    let home_str = home.path().to_str().unwrap();
    let endpoint = hub.endpoint();

    let online = answer(&chat(&hub_env(home_str, &endpoint, false)));
    assert_eq!(online["id"], "q-1");
    assert!(
        matches!(online["finish_reason"].as_str(), Some("stop" | "length")),
        "{online}"
    );
    assert_eq!(online["top_logprobs"].as_array().unwrap().len(), 3);
    hub.verify().await;
    let requests = hub.requests().await;

    // In the standard cache layout, byte for byte what the Hub served.
    let snapshot = home
        .path()
        .join("hub/models--tiny-org--tiny-llama/snapshots")
        .join(COMMIT);
    for file in files {
        assert_eq!(
            std::fs::read(snapshot.join(file)).unwrap(),
            std::fs::read(model_dir.path().join(file)).unwrap(),
            "{file}"
        );
    }
    assert!(!snapshot.join("README.md").exists());

    // Offline from that cache: the same greedy answer and no request at all (every mock's
    // count is unchanged, and nothing else was asked).
    let offline = answer(&chat(&hub_env(home_str, &endpoint, true)));
    assert_eq!(offline, online);
    hub.verify().await;
    assert_eq!(hub.requests().await, requests);
}

#[tokio::test(flavor = "multi_thread")]
async fn offline_with_an_empty_cache_says_what_to_download_and_where() {
    let hub = HubStandIn::start().await;
    let home = tempfile::tempdir().unwrap();
    let o = chat(&hub_env(
        home.path().to_str().unwrap(),
        &hub.endpoint(),
        true,
    ));
    assert!(!o.status.success(), "{}", describe(&o));
    assert!(o.stdout.is_empty(), "{}", describe(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    // The Hub client's message, once, not wrapped as a second "invalid request".
    assert_eq!(err.matches("invalid request").count(), 1, "{err}");
    assert!(err.contains("HF_HUB_OFFLINE is set"), "{err}");
    assert!(err.contains(MODEL), "{err}");
    assert!(err.contains("config.json"), "{err}");
    assert!(err.contains("*.safetensors*"), "{err}");
    assert!(
        err.contains(
            &home
                .path()
                .join("hub/models--tiny-org--tiny-llama")
                .display()
                .to_string()
        ),
        "{err}"
    );
    assert!(
        err.contains("huggingface-cli download tiny-org/tiny-llama"),
        "{err}"
    );
    assert_eq!(hub.requests().await, Vec::<String>::new());
}
