//! `evaluate --provider openai` with `OPENAI_BASE_URL` on a stand-in vLLM server (wiremock,
//! answering as `fixtures/vllm` records): an experiment fine-tuned locally (its
//! `models.json` names `<base>+<adapter dir>` models, written here by hand) is evaluated
//! with each LoRA adapter loaded before its evaluation and always unloaded after. No key.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use wiremock::matchers::{body_json, body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};
use xlt_openai::testing::exchange_of;

const BASE: &str = "HuggingFaceTB/SmolLM2-135M-Instruct";
const ADAPTER: &str = "/srv/exp/local/jobs/ft-1/adapter";
/// Test questions of en and yo, medical, in the shipped fixtures.
const QUESTIONS: u64 = 22;

/// A prepared experiment in `<tmp>/study`, fine-tuned on en-medical by the local provider:
/// `models.json` and `fingerprint.json` as `finetune --provider local` writes them.
fn fine_tuned_experiment(tmp: &Path) -> PathBuf {
    let out = tmp.join("study");
    let o = run_example(
        "prepare",
        &[
            "--out",
            out.to_str().unwrap(),
            "--languages",
            "en,yo",
            "--domains",
            "medical",
        ],
    );
    assert!(o.status.success(), "{}", describe(&o));
    let models = serde_json::json!({
        "provider": "local",
        "base_model": BASE,
        "fine_tuned": {"en-medical": {"job_id": "local-ft-1", "model": format!("{BASE}+{ADAPTER}")}},
    });
    std::fs::write(out.join("models.json"), models.to_string()).unwrap();
    let exp = xlt::study::Experiment::open(&out).unwrap();
    let slices = vec!["en-medical".to_owned()];
    // What a local fine-tune records: PEFT's default adapter settings.
    let lora = xlt::provider::LoraSpec::default();
    let mut fp = xlt::study::Fingerprint::of_experiment(
        &exp,
        &xlt::study::RunSettings {
            provider: "local",
            base_model: BASE,
            hyperparameters: xlt::provider::Hyperparameters::default(),
            train_slices: &slices,
            grader: "",
            max_tokens: 0,
            temperature: 0.0,
            lora: Some(&lora),
        },
    )
    .unwrap();
    // What `finetune` records: no evaluation settings, and the run's seed.
    for k in ["grader", "max_tokens", "temperature"] {
        fp.settings.remove(k);
    }
    fp.settings.insert("run_seed".into(), "42".into());
    std::fs::write(
        out.join(xlt::study::FINGERPRINT_FILE),
        serde_json::to_string_pretty(&fp).unwrap(),
    )
    .unwrap();
    out
}

/// The adapter's name in this experiment, as the study derives it.
fn adapter_name(out: &Path) -> String {
    xlt::study::endpoint_name(&xlt::study::Experiment::open(out).unwrap(), "en-medical")
}

/// `fixtures/vllm/<name>.json`'s response with this experiment's adapter name.
fn with_name(name: &str, adapter: &str) -> ResponseTemplate {
    let x = exchange_of("vllm", name);
    let body = serde_json::to_string(&x.response.body.unwrap())
        .unwrap()
        .replace("xlt-0a1b2c3d-en-medical", adapter)
        .replace("/srv/exp/local/jobs/ft-1/adapter", ADAPTER);
    ResponseTemplate::new(x.response.status).set_body_raw(body, "application/json")
}

/// The server's model list: the base only for the first `before` requests, then with the
/// adapter loaded.
async fn mount_models(server: &MockServer, adapter: &str, before: u64) {
    if before > 0 {
        let x = exchange_of("vllm", "models_base");
        x.mock()
            .respond_with(x.template())
            .up_to_n_times(before)
            .with_priority(1)
            .mount(server)
            .await;
    }
    Mock::given(method("GET"))
        .and(path("/v1/models"))
        .respond_with(with_name("models_loaded", adapter))
        .mount(server)
        .await;
}

/// The load (expected `loads` times) and the one unload that must always happen.
async fn mount_load_unload(server: &MockServer, adapter: &str, loads: u64) {
    let x = exchange_of("vllm", "load_ok");
    x.mock()
        .and(body_json(
            serde_json::json!({"lora_name": adapter, "lora_path": ADAPTER}),
        ))
        .respond_with(x.template())
        .expect(loads)
        .named("load")
        .mount(server)
        .await;
    let x = exchange_of("vllm", "unload_ok");
    x.mock()
        .and(body_json(serde_json::json!({"lora_name": adapter})))
        .respond_with(x.template())
        .expect(1)
        .named("unload")
        .mount(server)
        .await;
    // The server lists another user's adapter too: never ours to unload.
    Mock::given(method("POST"))
        .and(path("/v1/unload_lora_adapter"))
        .and(body_json(
            serde_json::json!({"lora_name": "someone-elses-adapter"}),
        ))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .named("unload of another user's adapter")
        .mount(server)
        .await;
}

/// The base model answers C; `adapter` answers with `template`.
async fn mount_chat(server: &MockServer, adapter: &str, tuned: ResponseTemplate, n: Option<u64>) {
    let x = exchange_of("vllm", "chat_base");
    x.mock()
        .and(body_partial_json(serde_json::json!({"model": BASE})))
        .respond_with(x.template())
        .expect(QUESTIONS)
        .mount(server)
        .await;
    let m = Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_partial_json(serde_json::json!({"model": adapter})))
        .respond_with(tuned);
    match n {
        Some(n) => m.expect(n).mount(server).await,
        None => m.mount(server).await,
    }
}

fn start_evaluate(out: &Path, base_url: &str) -> std::process::Child {
    spawn_example(
        "evaluate",
        &[
            "--out",
            out.to_str().unwrap(),
            "--provider",
            "openai",
            "--base-model",
            BASE,
            "--grader",
            "regex",
        ],
        // A vLLM of one's own needs no key: none is set.
        &[("OPENAI_BASE_URL", base_url), ("OPENAI_API_KEY", "")],
    )
}

async fn evaluate(out: PathBuf, base_url: String) -> std::process::Output {
    tokio::task::spawn_blocking(move || start_evaluate(&out, &base_url).wait_with_output())
        .await
        .unwrap()
        .unwrap()
}

fn registry(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("endpoints.json")).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_fine_tune_is_evaluated_on_vllm_with_its_adapter_loaded_then_unloaded() {
    let server = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let out = fine_tuned_experiment(dir.path());
    let adapter = adapter_name(&out);
    mount_models(&server, &adapter, 1).await;
    mount_load_unload(&server, &adapter, 1).await;
    let tuned = exchange_of("vllm", "chat_adapter").template();
    mount_chat(&server, &adapter, tuned, Some(QUESTIONS)).await;
    let o = evaluate(out.clone(), format!("{}/v1", server.uri())).await;
    assert!(o.status.success(), "{}", describe(&o));
    let outcomes = std::fs::read_to_string(out.join("outcomes/en-medical.jsonl")).unwrap();
    assert_eq!(outcomes.lines().count() as u64, QUESTIONS);
    assert!(outcomes.lines().all(|l| l.contains("\"letter\":\"B\"")));
    assert!(out.join("outcomes/base.jsonl").exists());
    // The experiment is still the local fine-tune's: the fingerprint keeps its provider.
    let fp: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("fingerprint.json")).unwrap()).unwrap();
    assert_eq!(fp["settings"]["provider"], "local");
    assert_eq!(fp["settings"]["grader"], "regex");
    assert!(registry(&out)["started"].as_array().unwrap().is_empty());
    let requests = server.received_requests().await.unwrap();
    assert!(
        requests
            .iter()
            .all(|r| !r.headers.contains_key("authorization"))
    );
    // The load, every answer and the unload in that order: no answer before the load or after
    // the unload.
    let order: Vec<&str> = requests
        .iter()
        .filter_map(|r| {
            let body = String::from_utf8_lossy(&r.body);
            match r.url.path() {
                "/v1/load_lora_adapter" => Some("load"),
                "/v1/unload_lora_adapter" => Some("unload"),
                "/v1/chat/completions" if body.contains(&adapter) => Some("chat"),
                _ => None,
            }
        })
        .collect();
    let mut expected = vec!["load"];
    expected.extend(std::iter::repeat_n("chat", QUESTIONS as usize));
    expected.push("unload");
    assert_eq!(order, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_adapter_is_unloaded_after_a_failure_mid_evaluation() {
    let server = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let out = fine_tuned_experiment(dir.path());
    let adapter = adapter_name(&out);
    mount_models(&server, &adapter, 1).await;
    mount_load_unload(&server, &adapter, 1).await;
    // The server refuses every request to the adapter for good (400 is not retried).
    let refused = ResponseTemplate::new(400).set_body_json(serde_json::json!({
        "error": {"message": "LoRA rank 64 is greater than max_lora_rank 16", "type": "BadRequestError", "param": null, "code": 400}
    }));
    mount_chat(&server, &adapter, refused, None).await;
    let o = evaluate(out.clone(), format!("{}/v1", server.uri())).await;
    assert!(!o.status.success(), "{}", describe(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("max_lora_rank"), "{err}");
    assert!(!out.join("outcomes/en-medical.jsonl").exists());
    assert!(registry(&out)["started"].as_array().unwrap().is_empty());
    // The `unload` mock's expect(1) is checked when the server drops.
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_unloads_the_adapter() {
    let server = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let out = fine_tuned_experiment(dir.path());
    let adapter = adapter_name(&out);
    mount_models(&server, &adapter, 1).await;
    mount_load_unload(&server, &adapter, 1).await;
    // The adapter answers slowly, so the run is mid-evaluation when it is terminated.
    let slow = exchange_of("vllm", "chat_adapter")
        .template()
        .set_delay(std::time::Duration::from_secs(30));
    mount_chat(&server, &adapter, slow, None).await;
    let base_url = format!("{}/v1", server.uri());
    let (out2, name) = (out.clone(), adapter.clone());
    let o = tokio::task::spawn_blocking(move || {
        let child = start_evaluate(&out2, &base_url);
        let registry = out2.join("endpoints.json");
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_secs(60) {
            let loaded = std::fs::read_to_string(&registry).is_ok_and(|t| {
                serde_json::from_str::<serde_json::Value>(&t).is_ok_and(|v| {
                    v["started"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|s| s["id"] == name.as_str()))
                })
            });
            if loaded {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        let status = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("terminated (SIGTERM); stopped 1 endpoint(s)"),
        "{err}"
    );
    assert!(registry(&out)["started"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_adapter_a_killed_run_left_loaded_is_reused_and_unloaded() {
    let server = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let out = fine_tuned_experiment(dir.path());
    let adapter = adapter_name(&out);
    // A killed run recorded its intent, loaded the adapter and died before recording it.
    let intents = serde_json::json!({
        "intents": [{"name": adapter, "model": format!("{BASE}+{ADAPTER}")}],
        "started": [],
    });
    std::fs::write(out.join("endpoints.json"), intents.to_string()).unwrap();
    mount_models(&server, &adapter, 0).await;
    // Found loaded: not loaded again, unloaded once done.
    mount_load_unload(&server, &adapter, 0).await;
    let tuned = exchange_of("vllm", "chat_adapter").template();
    mount_chat(&server, &adapter, tuned, Some(QUESTIONS)).await;
    let o = evaluate(out.clone(), format!("{}/v1", server.uri())).await;
    assert!(o.status.success(), "{}", describe(&o));
    assert!(out.join("outcomes/en-medical.jsonl").exists());
    assert!(registry(&out)["started"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn another_base_model_still_stops_the_evaluation() {
    let server = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let out = fine_tuned_experiment(dir.path());
    let o = tokio::task::spawn_blocking({
        let (out, url) = (out.clone(), format!("{}/v1", server.uri()));
        move || {
            run_example_with_env(
                "evaluate",
                &[
                    "--out",
                    out.to_str().unwrap(),
                    "--provider",
                    "openai",
                    "--base-model",
                    "Qwen/Qwen3-0.6B",
                ],
                &[("OPENAI_BASE_URL", &url), ("OPENAI_API_KEY", "")],
                None,
            )
        }
    })
    .await
    .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    // Refused naming both base models, before anything is asked.
    assert!(
        err.contains("fine-tuned from HuggingFaceTB/SmolLM2-135M-Instruct")
            && err.contains("Qwen/Qwen3-0.6B"),
        "{err}"
    );
    // The provider differs (local made the models, vLLM evaluates them) and is allowed.
    assert!(!err.contains("provider"), "{err}");
    assert!(!out.join("outcomes").exists());
    assert!(server.received_requests().await.unwrap().is_empty());
}
