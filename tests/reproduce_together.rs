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
    // The plan checks that the base model is served serverless before anything is paid.
    mount(server, "models_list", 1).await;
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
    // No endpoint of an interrupted run serves the model (the first listing, before the
    // endpoint is asked for; later listings are answered below).
    Mock::given(method("GET"))
        .and(path("/v1/endpoints"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"data": []})))
        .up_to_n_times(1)
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
    // The account's own endpoints, which a run lists when it stops those it asked for: the
    // other one listed is not this run's and must not be stopped (no mock answers for it).
    let x = exchange("endpoints_list_mine");
    x.mock().respond_with(x.template()).mount(server).await;
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

/// Starts a run, sends `signal` once its endpoint is recorded as started, and checks that
/// the endpoint is stopped and the run says so with `said`.
async fn a_signal_stops_the_running_endpoint(signal: &'static str, said: &'static str) {
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
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(said), "{err}");
    let registry: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("endpoints.json")).unwrap()).unwrap();
    assert!(registry["started"].as_array().unwrap().is_empty());
    // The `endpoint stopped` mock's expect(1) is checked when the server drops.
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_stops_the_running_endpoint() {
    a_signal_stops_the_running_endpoint("-INT", "interrupted (Ctrl-C); stopped 1 endpoint(s)")
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_the_running_endpoint() {
    a_signal_stops_the_running_endpoint("-TERM", "terminated (SIGTERM); stopped 1 endpoint(s)")
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_base_model_not_served_serverless_stops_before_anything_is_paid() {
    let server = MockServer::start().await;
    mount(&server, "models_list", 1).await;
    // No upload, no estimate, no job.
    let x = exchange("ft_create");
    x.mock()
        .respond_with(x.template())
        .expect(0)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("study");
    let base_url = format!("{}/v1", server.uri());
    let o = tokio::task::spawn_blocking(move || {
        spawn_example(
            "reproduce",
            &[
                "--out",
                out.to_str().unwrap(),
                "--provider",
                "together",
                "--base-model",
                "Qwen/Qwen3-0.6B-Base",
                "--languages",
                "en,yo",
                "--domains",
                "medical",
                "--yes",
            ],
            &[
                ("TOGETHER_API_KEY", TEST_KEY),
                ("TOGETHER_BASE_URL", &base_url),
            ],
        )
        .wait_with_output()
        .unwrap()
    })
    .await
    .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("Qwen/Qwen3-0.6B-Base is not served serverless"),
        "{err}"
    );
    assert!(err.contains("nothing was spent"), "{err}");
}
