//! `VllmServer` against wiremock answering as vLLM does (`fixtures/vllm`): each adapter is
//! loaded before its evaluation, named in the chat requests, and unloaded after; a lost
//! answer never loads twice. No network, no key.

use std::time::Duration;

use wiremock::matchers::{body_json, body_partial_json, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};
use xlt_openai::testing::{exchange_of, mount_of};
use xlt_openai::{OpenAiClient, OpenAiConfig, PathMap, VllmConfig, VllmServer};
use xlt_provider::*;

const BASE: &str = "HuggingFaceTB/SmolLM2-135M-Instruct";
const NAME: &str = "xlt-0a1b2c3d-en-medical";
const ROOT: &str = "/srv/exp/local/jobs/ft-1/adapter";

fn tuned() -> String {
    format!("{BASE}+{ROOT}")
}

/// A server for `mock` with no key, as a user of their own vLLM has none.
fn vllm(mock: &MockServer, config: VllmConfig) -> VllmServer {
    let http = OpenAiClient::new(OpenAiConfig::new("", format!("{}/v1", mock.uri())))
        .expect("client builds");
    VllmServer::new(http, config)
}

fn question(model: &str) -> ChatRequest {
    let mut r = ChatRequest::new(
        model,
        vec![ChatMessage::new(
            Role::User,
            "2 + 2 = ?\n\nA. 3\nB. 4\nC. 5\nD. 22",
        )],
    );
    r.max_tokens = Some(2);
    r
}

/// Mounts `fixtures/vllm/<name>.json` answering every request (no count expected).
async fn always(server: &MockServer, name: &str) {
    let x = exchange_of("vllm", name);
    x.mock().respond_with(x.template()).mount(server).await;
}

/// Mounts the load of this test's adapter (body checked), answered by `name`, `times` times.
async fn load(server: &MockServer, name: &str, times: u64) {
    let x = exchange_of("vllm", name);
    x.mock()
        .and(body_json(
            serde_json::json!({"lora_name": NAME, "lora_path": ROOT}),
        ))
        .respond_with(x.template())
        .expect(times)
        .named("load")
        .mount(server)
        .await;
}

/// Mounts the unload of this test's adapter, answered by `name`, expected `times` times.
async fn unload(server: &MockServer, name: &str, times: u64) {
    let x = exchange_of("vllm", name);
    x.mock()
        .and(body_json(serde_json::json!({"lora_name": NAME})))
        .respond_with(x.template())
        .expect(times)
        .named("unload")
        .mount(server)
        .await;
}

/// `/v1/models` lists no adapter for the first `before` requests, then this run's.
async fn models_loaded_after(server: &MockServer, before: u64) {
    let x = exchange_of("vllm", "models_base");
    x.mock()
        .respond_with(x.template())
        .up_to_n_times(before)
        .with_priority(1)
        .mount(server)
        .await;
    always(server, "models_loaded").await;
}

#[tokio::test]
async fn an_adapter_is_loaded_named_in_chat_and_unloaded() {
    let server = MockServer::start().await;
    models_loaded_after(&server, 1).await;
    load(&server, "load_ok", 1).await;
    unload(&server, "unload_ok", 1).await;
    let x = exchange_of("vllm", "chat_adapter");
    x.mock()
        .and(body_partial_json(serde_json::json!({"model": NAME})))
        .respond_with(x.template())
        .expect(2)
        .mount(&server)
        .await;
    let x = exchange_of("vllm", "chat_base");
    x.mock()
        .and(body_partial_json(serde_json::json!({"model": BASE})))
        .respond_with(x.template())
        .expect(1)
        .mount(&server)
        .await;
    let s = vllm(&server, VllmConfig::default());
    let served = s.start(&tuned(), NAME).await.unwrap();
    assert_eq!(
        (served.id.as_str(), served.model.as_str(), served.state),
        (NAME, tuned().as_str(), ServeState::Ready)
    );
    let ready = s.status(&served).await.unwrap();
    assert_eq!(ready.state, ServeState::Ready);
    // The caller names the fine-tuned model; the request names the adapter.
    assert_eq!(s.chat(&question(&tuned())).await.unwrap().text, "B");
    assert_eq!(s.chat(&question(&tuned())).await.unwrap().text, "B");
    assert_eq!(s.chat(&question(BASE)).await.unwrap().text, "C");
    s.stop(&served).await.unwrap();
    // No key was given, so no Authorization header was sent.
    let requests: Vec<Request> = server.received_requests().await.unwrap();
    assert!(
        requests
            .iter()
            .all(|r| !r.headers.contains_key("authorization"))
    );
}

#[tokio::test]
async fn a_lost_load_answer_does_not_load_twice() {
    let server = MockServer::start().await;
    // Before the load the server lists no adapter; after it, this run's.
    models_loaded_after(&server, 1).await;
    // The load takes effect but its answer is lost (a gateway's 502 after the server acted).
    Mock::given(method("POST"))
        .and(path("/v1/load_lora_adapter"))
        .respond_with(ResponseTemplate::new(502))
        .expect(1)
        .named("load")
        .mount(&server)
        .await;
    let s = Retry::new(
        vllm(&server, VllmConfig::default()),
        RetryPolicy {
            base_delay: Duration::from_millis(1),
            ..RetryPolicy::default()
        },
    );
    let served = s.start(&tuned(), NAME).await.unwrap();
    assert_eq!(
        (served.id.as_str(), served.state),
        (NAME, ServeState::Ready)
    );
    assert_eq!(s.retries().load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_name_already_loaded_from_the_same_path_counts_as_loaded() {
    let server = MockServer::start().await;
    always(&server, "models_loaded").await;
    load(&server, "load_already_loaded", 1).await;
    unload(&server, "unload_ok", 0).await;
    let s = vllm(&server, VllmConfig::default());
    let served = s.start(&tuned(), NAME).await.unwrap();
    assert_eq!(
        (served.id.as_str(), served.state),
        (NAME, ServeState::Ready)
    );
}

#[tokio::test]
async fn a_name_loaded_from_another_path_is_loaded_again() {
    let server = MockServer::start().await;
    always(&server, "models_loaded").await;
    let other = "/srv/exp/local/jobs/ft-2/adapter";
    let x = exchange_of("vllm", "load_already_loaded");
    x.mock()
        .and(body_json(
            serde_json::json!({"lora_name": NAME, "lora_path": other}),
        ))
        .respond_with(x.template())
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    let x = exchange_of("vllm", "load_ok");
    x.mock()
        .respond_with(x.template())
        .expect(1)
        .mount(&server)
        .await;
    unload(&server, "unload_ok", 1).await;
    let s = vllm(&server, VllmConfig::default());
    let served = s.start(&format!("{BASE}+{other}"), NAME).await.unwrap();
    assert_eq!(served.state, ServeState::Ready);
}

#[tokio::test]
async fn unloading_an_unknown_adapter_is_fine() {
    let server = MockServer::start().await;
    unload(&server, "unload_unknown", 1).await;
    let s = vllm(&server, VllmConfig::default());
    let served = Served {
        id: NAME.into(),
        model: tuned(),
        chat_model: NAME.into(),
        state: ServeState::Ready,
        provider_state: "loaded".into(),
    };
    s.stop(&served).await.unwrap();
}

#[tokio::test]
async fn a_server_without_runtime_lora_updating_says_how_to_start_it() {
    let server = MockServer::start().await;
    always(&server, "models_base").await;
    mount_of(&server, "vllm", "load_route_missing", 1).await;
    let e = vllm(&server, VllmConfig::default())
        .start(&tuned(), NAME)
        .await
        .unwrap_err();
    let m = e.to_string();
    assert!(m.contains("VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"), "{m}");
    assert!(m.contains("--enable-lora"), "{m}");
    assert!(!e.is_retryable());
}

#[tokio::test]
async fn an_adapter_the_server_cannot_read_names_the_path_and_the_map() {
    let server = MockServer::start().await;
    always(&server, "models_base").await;
    mount_of(&server, "vllm", "load_no_adapter_found", 1).await;
    let m = vllm(&server, VllmConfig::default())
        .start(&tuned(), NAME)
        .await
        .unwrap_err()
        .to_string();
    assert!(m.contains(ROOT), "{m}");
    assert!(m.contains("XLT_VLLM_PATH_MAP"), "{m}");
}

#[tokio::test]
async fn an_adapter_of_another_base_model_is_refused_before_loading() {
    let server = MockServer::start().await;
    always(&server, "models_base").await;
    load(&server, "load_ok", 0).await;
    let m = vllm(&server, VllmConfig::default())
        .start(&format!("Qwen/Qwen3-0.6B+{ROOT}"), NAME)
        .await
        .unwrap_err()
        .to_string();
    assert!(m.contains("vllm serve Qwen/Qwen3-0.6B"), "{m}");
    assert!(m.contains(BASE), "{m}");
}

#[tokio::test]
async fn adapters_are_listed_as_models_and_paths_are_mapped() {
    let server = MockServer::start().await;
    always(&server, "models_loaded").await;
    let map = VllmConfig {
        path_map: Some(PathMap {
            local: "/home/me/exp".into(),
            server: "/srv/exp".into(),
        }),
    };
    let s = vllm(&server, map);
    let running = s.list_running().await.unwrap();
    let models: Vec<(&str, &str)> = running
        .iter()
        .map(|r| (r.id.as_str(), r.model.as_str()))
        .collect();
    assert_eq!(
        models,
        [
            (
                NAME,
                format!("{BASE}+/home/me/exp/local/jobs/ft-1/adapter").as_str()
            ),
            (
                "someone-elses-adapter",
                format!("{BASE}+/data/other/adapter").as_str()
            ),
        ]
    );
    // The local path of a fine-tune is found under its server path.
    let local = format!("{BASE}+/home/me/exp/local/jobs/ft-1/adapter");
    let found = s.find_started(&local).await.unwrap().unwrap();
    assert_eq!(
        (found.id.as_str(), found.model.as_str()),
        (NAME, local.as_str())
    );
    assert_eq!(
        s.find_started(&format!("{BASE}+/elsewhere")).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn a_model_that_is_not_an_adapter_is_served_as_it_is() {
    let server = MockServer::start().await;
    // Nothing is loaded or unloaded: no mock but chat answers.
    let x = exchange_of("vllm", "chat_base");
    x.mock()
        .and(body_partial_json(
            serde_json::json!({"model": "ft:gpt-4.1-nano:org::abc"}),
        ))
        .respond_with(x.template())
        .expect(1)
        .mount(&server)
        .await;
    let s = vllm(&server, VllmConfig::default());
    assert!(!s.needs_start("ft:gpt-4.1-nano:org::abc"));
    assert!(s.needs_start(&tuned()));
    let served = s.start("ft:gpt-4.1-nano:org::abc", NAME).await.unwrap();
    assert_eq!(s.status(&served).await.unwrap().state, ServeState::Ready);
    s.chat(&question("ft:gpt-4.1-nano:org::abc")).await.unwrap();
    s.stop(&served).await.unwrap();
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_base_model_the_server_lacks_says_how_to_serve_it() {
    let server = MockServer::start().await;
    mount_of(&server, "vllm", "chat_model_missing", 1).await;
    let e = vllm(&server, VllmConfig::default())
        .chat(&question("gpt-4.1-nano-2025-04-14"))
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::ModelNotFound { .. }), "{e:?}");
    assert!(
        e.to_string().contains("vllm serve gpt-4.1-nano-2025-04-14"),
        "{e}"
    );
}
