//! The OpenAI backend against wiremock, answering with the recorded exchanges of
//! `fixtures/openai`. No network, no real key.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use wiremock::matchers::{
    body_partial_json, body_string_contains, header, method, path, query_param,
};
use wiremock::{Mock, MockServer, ResponseTemplate};
use xlt_openai::testing::{TEST_KEY, client_for, exchange, mount};
use xlt_openai::{OpenAiClient, OpenAiConfig};
use xlt_provider::*;

fn chat(model: &str) -> ChatRequest {
    let mut r = ChatRequest::new(
        model,
        vec![
            ChatMessage::new(Role::System, "Reply with the letter only."),
            ChatMessage::new(Role::User, "2 + 2 = ?\n\nA. 3\nB. 4\nC. 5\nD. 22"),
        ],
    );
    r.temperature = Some(0.0);
    r.max_tokens = Some(2);
    r
}

fn spec() -> FineTuneSpec {
    FineTuneSpec {
        base_model: "gpt-4.1-nano-2025-04-14".into(),
        training_file: "file-abc123".into(),
        validation_file: None,
        hyperparameters: Hyperparameters::study(),
        suffix: Some("en-stem".into()),
        seed: Some(42),
    }
}

fn quick_wait() -> WaitOptions {
    WaitOptions {
        initial: Duration::from_millis(1),
        max: Duration::from_millis(2),
        factor: 1.0,
        timeout: Duration::from_secs(10),
    }
}

#[tokio::test]
async fn fine_tune_lifecycle_then_chat_with_the_tuned_model() {
    let server = MockServer::start().await;
    let x = exchange("files_upload");
    x.mock()
        .and(header(
            "authorization",
            format!("Bearer {TEST_KEY}").as_str(),
        ))
        .and(body_string_contains("name=\"purpose\""))
        .and(body_string_contains("fine-tune"))
        .and(body_string_contains("filename=\"en-stem.jsonl\""))
        .respond_with(x.template())
        .expect(1)
        .mount(&server)
        .await;
    let x = exchange("ft_create");
    x.mock()
        .and(body_partial_json(serde_json::json!({
            "model": "gpt-4.1-nano-2025-04-14",
            "training_file": "file-abc123",
            "suffix": "en-stem",
            "seed": 42,
            "method": {"type": "supervised", "supervised": {"hyperparameters": {
                "n_epochs": 1, "batch_size": 8, "learning_rate_multiplier": 0.4}}}
        })))
        .respond_with(x.template())
        .expect(1)
        .mount(&server)
        .await;
    for state in ["validating_files", "queued", "running", "succeeded"] {
        mount(&server, &format!("ft_get_{state}"), 1).await;
    }
    mount(&server, "ft_events", 1).await;
    let tuned = "ft:gpt-4.1-nano-2025-04-14:org-123:en-stem:7q8mpxmy";
    let x = exchange("chat_completion_finetuned");
    x.mock()
        .and(body_partial_json(
            serde_json::json!({"model": tuned, "temperature": 0.0, "max_tokens": 2}),
        ))
        .respond_with(x.template())
        .expect(1)
        .mount(&server)
        .await;

    let client = client_for(&server);
    let file = client
        .upload(
            "en-stem.jsonl",
            b"{\"messages\": []}\n".to_vec(),
            FilePurpose::FineTune,
        )
        .await
        .unwrap();
    assert_eq!(file.id, "file-abc123");
    let job = client.create_job(&spec(), "xlt-test-0").await.unwrap();
    assert_eq!(job.status, JobStatus::ValidatingFiles);
    let mut seen = Vec::new();
    let model = wait_for_job(&client, &job.id, quick_wait(), |j| {
        seen.push((j.status, j.provider_status.clone()))
    })
    .await
    .unwrap();
    assert_eq!(model, tuned);
    assert_eq!(
        seen.iter().map(|s| s.0).collect::<Vec<_>>(),
        [
            JobStatus::ValidatingFiles,
            JobStatus::Queued,
            JobStatus::Running,
            JobStatus::Succeeded
        ]
    );
    let events = client.list_events(&job.id).await.unwrap();
    assert_eq!(events.len(), 3);
    assert!(events[0].message.starts_with("Validating"), "oldest first");
    let reply = client.chat(&chat(tuned)).await.unwrap();
    assert_eq!(reply.text, "B");
    assert_eq!(reply.model, tuned);
}

#[tokio::test]
async fn failed_job_is_an_error_with_the_reason() {
    let server = MockServer::start().await;
    mount(&server, "ft_get_failed", 1).await;
    let client = client_for(&server);
    let e = wait_for_job(&client, "ftjob-abc123", quick_wait(), |_| {})
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::JobFailed { .. }));
    assert!(e.to_string().contains("invalid training file"), "{e}");
}

#[tokio::test]
async fn cancel_and_file_metadata() {
    let server = MockServer::start().await;
    mount(&server, "ft_cancel", 1).await;
    mount(&server, "files_get", 1).await;
    let client = client_for(&server);
    let job = client.cancel_job("ftjob-abc123").await.unwrap();
    assert_eq!(job.status, JobStatus::Cancelled);
    assert_eq!(client.get_file("file-abc123").await.unwrap().bytes, 120000);
}

#[tokio::test]
async fn batch_lifecycle_joins_results_by_custom_id() {
    let server = MockServer::start().await;
    // No input file of these requests was uploaded before.
    Mock::given(method("GET"))
        .and(path("/v1/files"))
        .and(query_param("purpose", "batch"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"data": []})))
        .expect(1)
        .mount(&server)
        .await;
    let x = exchange("files_upload_batch");
    x.mock()
        .and(body_string_contains("batch"))
        .and(body_string_contains(
            "\"custom_id\":\"en-stem/anatomy/test/1\"",
        ))
        .and(body_string_contains("\"url\":\"/v1/chat/completions\""))
        .respond_with(x.template())
        .expect(1)
        .mount(&server)
        .await;
    let x = exchange("batch_create");
    x.mock()
        .and(body_partial_json(serde_json::json!({
            "input_file_id": "file-batchin1", "endpoint": "/v1/chat/completions", "completion_window": "24h"})))
        .respond_with(x.template())
        .expect(1)
        .mount(&server)
        .await;
    mount(&server, "batch_get_in_progress", 1).await;
    mount(&server, "batch_get_completed", 2).await;
    mount(&server, "batch_output_content", 1).await;
    mount(&server, "batch_error_content", 1).await;

    let client = client_for(&server);
    let requests: Vec<(String, ChatRequest)> = (1..=3)
        .map(|i| {
            (
                format!("en-stem/anatomy/test/{i}"),
                chat("gpt-4.1-nano-2025-04-14"),
            )
        })
        .collect();
    let batch = client.submit_batch(&requests).await.unwrap();
    assert_eq!(batch.status, BatchStatus::InProgress);
    assert_eq!(batch.provider_status, "validating");
    let b = client.get_batch(&batch.id).await.unwrap();
    assert_eq!(
        (b.status, b.completed, b.total),
        (BatchStatus::InProgress, 1, 3)
    );
    let b = client.get_batch(&batch.id).await.unwrap();
    assert_eq!(b.status, BatchStatus::Completed);
    let results = client.batch_results(&batch.id).await.unwrap();
    assert_eq!(results.len(), 3);
    let by_id = |id: &str| results.iter().find(|r| r.custom_id == id).unwrap();
    assert_eq!(
        by_id("en-stem/anatomy/test/1")
            .result
            .as_ref()
            .unwrap()
            .text,
        "C"
    );
    assert_eq!(
        by_id("en-stem/anatomy/test/2")
            .result
            .as_ref()
            .unwrap()
            .text,
        "Answer: A"
    );
    let e = by_id("en-stem/anatomy/test/3").result.as_ref().unwrap_err();
    assert!(matches!(e, ProviderError::Api { status: 400, .. }), "{e}");
    assert!(e.to_string().contains("req_c187b5"), "{e}");
}

async fn error_for(name: &str) -> ProviderError {
    let server = MockServer::start().await;
    mount(&server, name, 1).await;
    let client = client_for(&server);
    if exchange(name).request.path.ends_with("/fine_tuning/jobs") {
        client.create_job(&spec(), "xlt-test-0").await.unwrap_err()
    } else {
        client
            .chat(&chat("gpt-4.1-nano-2025-04-14"))
            .await
            .unwrap_err()
    }
}

#[tokio::test]
async fn every_error_class_maps_to_its_variant() {
    let e = error_for("error_400_invalid_training_file").await;
    match &e {
        ProviderError::Api {
            status, code, kind, ..
        } => {
            assert_eq!(*status, 400);
            assert_eq!(code.as_deref(), Some("invalid_training_file"));
            assert_eq!(kind.as_deref(), Some("invalid_request_error"));
        }
        other => panic!("{other:?}"),
    }
    assert!(!e.is_retryable());
    assert!(
        e.to_string()
            .contains("POST /v1/fine_tuning/jobs: HTTP 400"),
        "{e}"
    );

    let e = error_for("error_400_model_not_available").await;
    assert!(
        e.to_string().contains("not available for fine-tuning"),
        "{e}"
    );
    assert!(
        e.to_string().contains("closed self-serve fine-tuning"),
        "{e}"
    );

    let e = error_for("error_401").await;
    assert!(matches!(e, ProviderError::Api { status: 401, .. }), "{e:?}");
    assert!(!e.is_retryable());

    let e = error_for("error_404_model_not_found").await;
    assert!(matches!(e, ProviderError::NotFound { .. }), "{e:?}");
    assert!(e.to_string().contains("does not exist") && e.to_string().contains("model_not_found"));

    let e = error_for("error_429_rate_limit").await;
    assert!(matches!(e, ProviderError::RateLimited { .. }), "{e:?}");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
    assert!(e.is_retryable());

    let e = error_for("error_429_insufficient_quota").await;
    assert!(matches!(e, ProviderError::QuotaExhausted { .. }), "{e:?}");
    assert!(!e.is_retryable());

    for name in ["error_500", "error_503"] {
        let e = error_for(name).await;
        assert!(matches!(e, ProviderError::Api { .. }), "{e:?}");
        assert!(e.is_retryable(), "{name}");
    }

    let e = error_for("malformed_body").await;
    match &e {
        ProviderError::Decode { raw_body, .. } => assert!(raw_body.contains("chatcmpl-123")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn slow_response_times_out() {
    let server = MockServer::start().await;
    mount(&server, "slow_response", 1).await;
    let mut config = OpenAiConfig::new(TEST_KEY, format!("{}/v1", server.uri()));
    config.timeout = Duration::from_millis(300);
    let client = OpenAiClient::new(config).unwrap();
    let e = client
        .chat(&chat("gpt-4.1-nano-2025-04-14"))
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::Timeout { .. }), "{e:?}");
    assert!(e.is_retryable());
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_retries: 4,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        jitter: 0.0,
    }
}

#[tokio::test]
async fn retries_server_errors_then_succeeds() {
    let server = MockServer::start().await;
    mount(&server, "error_503", 2).await;
    mount(&server, "chat_completion", 1).await;
    let model = Retry::new(client_for(&server), fast_retry());
    let r = model.chat(&chat("gpt-4.1-nano-2025-04-14")).await.unwrap();
    assert_eq!(r.text, "C");
    assert_eq!(model.retries().load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn rate_limit_is_retried_after_its_delay() {
    let server = MockServer::start().await;
    let x = exchange("error_429_rate_limit");
    // Retry-After: 1 s in the fixture; make it 50 ms here to keep the test quick.
    x.mock()
        .respond_with(x.template().insert_header("retry-after", "0.05"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    mount(&server, "chat_completion", 1).await;
    let model = Retry::new(client_for(&server), fast_retry());
    let start = std::time::Instant::now();
    assert_eq!(model.chat(&chat("m")).await.unwrap().text, "C");
    assert!(start.elapsed() >= Duration::from_millis(50));
    assert_eq!(model.retries().load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn quota_errors_are_never_retried() {
    let server = MockServer::start().await;
    mount(&server, "error_429_insufficient_quota", 1).await;
    let model = Retry::new(client_for(&server), fast_retry());
    let e = model.chat(&chat("m")).await.unwrap_err();
    assert!(matches!(e, ProviderError::QuotaExhausted { .. }));
    assert_eq!(model.retries().load(Ordering::SeqCst), 0);
    // `expect(1)` on the mock checks no second request was sent when the server drops.
}

#[tokio::test]
async fn second_identical_evaluation_is_served_from_the_cache() {
    let server = MockServer::start().await;
    let x = exchange("chat_completion");
    x.mock()
        .respond_with(x.template())
        .expect(5)
        .mount(&server)
        .await;
    let cache = tempfile::tempdir().unwrap();
    let requests: Vec<(String, ChatRequest)> = (0..5)
        .map(|i| {
            let mut r = chat("gpt-4.1-nano-2025-04-14");
            r.messages[1].content = format!("question {i}\nA. 1\nB. 2\nC. 3\nD. 4");
            (format!("q{i}"), r)
        })
        .collect();
    for round in 0..2 {
        let model = Arc::new(Cached::new(client_for(&server), cache.path()));
        let results: Vec<_> = run_chat(
            model.clone(),
            requests.clone(),
            RunOptions {
                concurrency: 3,
                retries: None,
            },
        )
        .collect()
        .await;
        assert!(results.iter().all(|(_, r, _)| r.is_ok()));
        if round == 0 {
            assert_eq!((model.hits(), model.misses()), (0, 5));
        } else {
            assert_eq!((model.hits(), model.misses()), (5, 0));
        }
    }
    // The mock's expect(5) fails the test on drop if the second round sent anything.
}

#[tokio::test]
async fn resubmitted_spec_reuses_the_ledger_job() {
    let server = MockServer::start().await;
    mount(&server, "files_upload", 1).await;
    mount(&server, "ft_create", 1).await;
    mount(&server, "ft_get_running", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let ledger_path = dir.path().join("ledger.json");
    let client = client_for(&server);
    for _ in 0..2 {
        // As two separate runs of the program.
        let ledger = JobLedger::open(&ledger_path, "openai").unwrap();
        let file = ledger
            .upload_once(
                &client,
                "en-stem.jsonl",
                b"{}\n".to_vec(),
                FilePurpose::FineTune,
            )
            .await
            .unwrap();
        let job = ledger
            .submit_or_resume(
                &client,
                &FineTuneSpec {
                    training_file: file.id,
                    ..spec()
                },
            )
            .await
            .unwrap();
        assert_eq!(job.id, "ftjob-abc123");
    }
}

#[tokio::test]
async fn rate_limit_headers_are_parsed_and_logprobs_returned() {
    let server = MockServer::start().await;
    let x = exchange("chat_completion_logprobs");
    x.mock()
        .and(body_partial_json(
            serde_json::json!({"logprobs": true, "top_logprobs": 4}),
        ))
        .respond_with(x.template())
        .expect(1)
        .mount(&server)
        .await;
    let client = client_for(&server);
    let mut r = chat("gpt-4.1-nano-2025-04-14");
    r.top_logprobs = Some(4);
    let out = client.chat(&r).await.unwrap();
    let info = out.rate_limit.unwrap();
    assert_eq!(info.remaining_requests, Some(499));
    assert_eq!(info.remaining_tokens, Some(199_950));
    assert_eq!(info.reset_requests, Some(Duration::from_millis(120)));
    assert_eq!(info.reset_tokens, Some(Duration::from_secs(360)));
    let top = out.top_logprobs.unwrap();
    assert_eq!(top.len(), 4);
    assert_eq!(top[0].token, "C");
    assert!((top[1].logprob + 4.0202).abs() < 1e-9);
}

#[tokio::test]
async fn exhausted_window_pauses_the_limiter() {
    let server = MockServer::start().await;
    mount(&server, "chat_completion_exhausted", 1).await;
    mount(&server, "chat_completion", 1).await;
    let model = Limited::new(client_for(&server), RateLimits::default());
    model.chat(&chat("m")).await.unwrap();
    // The first response said 0 requests left until 1 s: the second waits for the reset.
    let start = std::time::Instant::now();
    model.chat(&chat("m")).await.unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn absolute_learning_rate_is_refused_before_sending() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/fine_tuning/jobs"))
        .respond_with(exchange("ft_create").template())
        .expect(0)
        .mount(&server)
        .await;
    let client = client_for(&server);
    let mut s = spec();
    s.hyperparameters.learning_rate = LearningRate::Absolute(1e-5);
    let e = client.create_job(&s, "xlt-test-0").await.unwrap_err();
    assert!(e.to_string().contains("multiplier"), "{e}");
}

#[tokio::test]
async fn no_key_in_any_log_line_or_error() {
    use std::io::Write;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buffer::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = MockServer::start().await;
    let mut errors = Vec::new();
    for name in [
        "error_401",
        "error_404_model_not_found",
        "error_429_rate_limit",
        "error_500",
        "malformed_body",
    ] {
        mount(&server, name, 1).await;
        let model = Retry::new(
            client_for(&server),
            RetryPolicy {
                max_retries: 0,
                ..fast_retry()
            },
        );
        errors.push(model.chat(&chat("m")).await.unwrap_err());
        server.reset().await;
    }
    // A connection that fails outright.
    let dead = OpenAiClient::new(OpenAiConfig::new(TEST_KEY, "http://127.0.0.1:9/v1")).unwrap();
    errors.push(dead.chat(&chat("m")).await.unwrap_err());

    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("sending"),
        "the subscriber saw the client's logs"
    );
    assert!(!logs.contains(TEST_KEY), "key in logs");
    for e in &errors {
        assert!(!e.to_string().contains(TEST_KEY), "key in {e}");
        assert!(!format!("{e:?}").contains(TEST_KEY), "key in {e:?}");
    }
    assert!(!format!("{:?}", client_for(&server)).contains(TEST_KEY));
}

#[tokio::test]
async fn jobs_carry_a_reference_and_can_be_found_by_it() {
    let server = MockServer::start().await;
    let x = exchange("ft_create");
    x.mock()
        .and(body_partial_json(
            serde_json::json!({"metadata": {"xlt_ref": "xlt-0123456789abcdef-0"}}),
        ))
        .respond_with(x.template())
        .expect(1)
        .mount(&server)
        .await;
    let x = exchange("ft_list_by_ref");
    x.mock()
        .and(wiremock::matchers::query_param(
            "metadata[xlt_ref]",
            "xlt-0123456789abcdef-0",
        ))
        .respond_with(x.template())
        .expect(1)
        .mount(&server)
        .await;
    let x = exchange("ft_list_empty");
    x.mock()
        .and(wiremock::matchers::query_param(
            "metadata[xlt_ref]",
            "xlt-other-0",
        ))
        .respond_with(x.template())
        .expect(1)
        .mount(&server)
        .await;
    let client = client_for(&server);
    client
        .create_job(&spec(), "xlt-0123456789abcdef-0")
        .await
        .unwrap();
    let found = client
        .find_job("xlt-0123456789abcdef-0")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (found.id.as_str(), found.status),
        ("ftjob-abc123", JobStatus::Running)
    );
    assert!(client.find_job("xlt-other-0").await.unwrap().is_none());
}

#[tokio::test]
async fn transport_errors_name_method_url_and_cause_once() {
    // Nothing listens on port 9 of loopback; the URL carries credentials that must not show.
    let config = OpenAiConfig::new(TEST_KEY, "http://user:secret-pw@127.0.0.1:9/v1");
    let client = OpenAiClient::new(config).unwrap();
    let e = client.chat(&chat("m")).await.unwrap_err();
    assert!(e.is_retryable());
    let msg = e.to_string();
    assert!(
        msg.starts_with("POST http://127.0.0.1:9/v1/chat/completions: transport error: "),
        "{msg}"
    );
    assert!(msg.to_lowercase().contains("connection refused"), "{msg}");
    assert_eq!(
        msg.to_lowercase().matches("connection refused").count(),
        1,
        "{msg}"
    );
    assert!(
        !msg.contains("secret-pw") && !msg.contains(TEST_KEY),
        "{msg}"
    );
}
