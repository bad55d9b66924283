//! `reproduce --provider together` against a wiremock Together built from the recorded
//! exchanges: the same study code as for the embedded provider and OpenAI, with fine-tuned
//! models served on dedicated endpoints that are always stopped.

mod common;

use std::path::Path;

use common::*;
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};
use xlt_together::testing::{TEST_KEY, exchange, mount};

const TUNED: &str = "xlt-user/Qwen2.5-7B-Instruct-en-medical-789abcdef0-a1b2c3d4";
const ENDPOINT_NAME: &str = "xlt-user/Qwen2.5-7B-Instruct-en-medical-a1b2c3d4";

async fn mount_training(server: &MockServer) {
    mount(server, "files_upload", 1).await;
    // The plan asks Together to price the job before anything is paid for.
    mount(server, "estimate_price", 1).await;
    mount(server, "ft_create", 1).await;
    let x = exchange("ft_get_completed");
    x.mock()
        .respond_with(x.template())
        .expect(1..)
        .mount(server)
        .await;
    // No endpoint of an interrupted run serves the model.
    Mock::given(method("GET"))
        .and(path("/v1/endpoints"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"data": []})))
        .expect(1)
        .mount(server)
        .await;
    mount(server, "endpoint_create", 1).await;
    let x = exchange("endpoint_get_started");
    x.mock()
        .respond_with(x.template())
        .expect(1..)
        .mount(server)
        .await;
    // The one stop that must always happen.
    let x = exchange("endpoint_stop");
    x.mock()
        .and(body_partial_json(serde_json::json!({"state": "STOPPED"})))
        .respond_with(x.template())
        .expect(1)
        .named("endpoint stopped")
        .mount(server)
        .await;
}

/// Starts `reproduce --provider together` on one training slice against `base_url`.
fn start(out: &Path, base_url: &str) -> std::process::Child {
    spawn_example(
        "reproduce",
        &[
            "--out",
            out.to_str().unwrap(),
            "--provider",
            "together",
            "--base-model",
            "Qwen/Qwen2.5-7B-Instruct",
            "--languages",
            "en,yo",
            "--domains",
            "medical",
            "--train-slices",
            "en-medical",
            "--grader",
            "regex",
            "--max-requests-per-minute",
            "60000",
            "--yes",
        ],
        &[
            ("TOGETHER_API_KEY", TEST_KEY),
            ("TOGETHER_BASE_URL", base_url),
        ],
    )
}

fn run(out: &Path, base_url: &str) -> std::process::Output {
    start(out, base_url).wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn whole_study_on_together_stops_its_endpoint() {
    let server = MockServer::start().await;
    mount_training(&server).await;
    // The base model answers C; the tuned model, through its endpoint, answers B.
    let x = exchange("chat_base");
    x.mock()
        .and(body_partial_json(
            serde_json::json!({"model": "Qwen/Qwen2.5-7B-Instruct"}),
        ))
        .respond_with(x.template())
        .expect(22)
        .mount(&server)
        .await;
    let x = exchange("chat_endpoint");
    x.mock()
        .and(body_partial_json(
            serde_json::json!({"model": ENDPOINT_NAME}),
        ))
        .respond_with(x.template())
        .expect(22)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("study");
    let base_url = format!("{}/v1", server.uri());
    let (o, out) = tokio::task::spawn_blocking(move || (run(&out, &base_url), out))
        .await
        .unwrap();
    assert!(o.status.success(), "{}", describe(&o));
    let models: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("models.json")).unwrap()).unwrap();
    assert_eq!(models["provider"], "together");
    assert_eq!(models["fine_tuned"]["en-medical"]["model"], TUNED);
    let tuned = std::fs::read_to_string(out.join("outcomes/en-medical.jsonl")).unwrap();
    assert!(tuned.lines().all(|l| l.contains("\"letter\":\"B\"")));
    // No endpoint is left recorded as running.
    let registry: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("endpoints.json")).unwrap()).unwrap();
    assert!(registry["started"].as_array().unwrap().is_empty());
    // The plan and run record the departures: an open-weight model, an absolute learning rate.
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    let departures = run["departures_from_study"].to_string();
    assert!(
        departures.contains("base model Qwen/Qwen2.5-7B-Instruct"),
        "{departures}"
    );
    assert!(
        departures.contains("absolute learning rate 0.00001"),
        "{departures}"
    );
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("plan.json")).unwrap()).unwrap();
    assert!(plan["endpoint_minutes"].as_f64().unwrap() > 0.0);
    assert_eq!(plan["training_usd"], 0.42);
    assert_eq!(plan["training_usd_from_provider"], true);
    assert!(!String::from_utf8_lossy(&o.stderr).contains(TEST_KEY));
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoint_is_stopped_after_a_failure_mid_evaluation() {
    let server = MockServer::start().await;
    mount_training(&server).await;
    let x = exchange("chat_base");
    x.mock()
        .and(body_partial_json(
            serde_json::json!({"model": "Qwen/Qwen2.5-7B-Instruct"}),
        ))
        .respond_with(x.template())
        .mount(&server)
        .await;
    // Every request to the endpoint fails for good (401 is not retried).
    let x = exchange("error_401");
    x.mock()
        .and(body_partial_json(
            serde_json::json!({"model": ENDPOINT_NAME}),
        ))
        .respond_with(ResponseTemplate::new(401).set_body_json(x.response.body.clone().unwrap()))
        .expect(1..)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("study");
    let base_url = format!("{}/v1", server.uri());
    let (o, out) = tokio::task::spawn_blocking(move || (run(&out, &base_url), out))
        .await
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    // A refused key is fatal: the run stops at the first refusal, with the API's message.
    assert!(err.contains("HTTP 401"), "{err}");
    assert!(err.contains("Invalid API key provided"), "{err}");
    assert!(!out.join("outcomes/en-medical.jsonl").exists());
    // The `endpoint stopped` mock's expect(1) is checked when the server drops.
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_stops_the_running_endpoint() {
    let server = MockServer::start().await;
    mount_training(&server).await;
    let x = exchange("chat_base");
    x.mock()
        .and(body_partial_json(
            serde_json::json!({"model": "Qwen/Qwen2.5-7B-Instruct"}),
        ))
        .respond_with(x.template())
        .mount(&server)
        .await;
    // The endpoint answers slowly, so the run is mid-evaluation when it is interrupted.
    let x = exchange("chat_endpoint");
    x.mock()
        .and(body_partial_json(
            serde_json::json!({"model": ENDPOINT_NAME}),
        ))
        .respond_with(x.template().set_delay(std::time::Duration::from_secs(30)))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("study");
    let base_url = format!("{}/v1", server.uri());
    let out2 = out.clone();
    let o = tokio::task::spawn_blocking(move || {
        let child = start(&out2, &base_url);
        // Wait until the endpoint is recorded as started, then press Ctrl-C.
        let registry = out2.join("endpoints.json");
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_secs(60) {
            let started = std::fs::read_to_string(&registry)
                .ok()
                .is_some_and(|t| t.contains("endpoint-d23901de"));
            if started {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        let status = std::process::Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("interrupted; stopped 1 endpoint(s)"), "{err}");
    let registry: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("endpoints.json")).unwrap()).unwrap();
    assert!(registry["started"].as_array().unwrap().is_empty());
    // The `endpoint stopped` mock's expect(1) is checked when the server drops.
}
