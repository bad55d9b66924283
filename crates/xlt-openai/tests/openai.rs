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
        lora: None,
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
    assert!(matches!(e, ProviderError::ModelNotFound { .. }), "{e:?}");
    assert!(e.to_string().contains("does not exist"), "{e}");
    assert!(!e.is_retryable());

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
    // LoRA, warm-up and gradient accumulation are not OpenAI's settings: refused, unsent.
    let mut s = spec();
    s.lora = Some(LoraSpec::default());
    let e = client.create_job(&s, "xlt-test-0").await.unwrap_err();
    assert!(e.to_string().contains("no LoRA settings (r=16"), "{e}");
    let mut s = spec();
    s.hyperparameters.gradient_accumulation_steps = Some(2);
    let e = client.create_job(&s, "xlt-test-0").await.unwrap_err();
    assert!(e.to_string().contains("gradient accumulation"), "{e}");
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

/// Mounts `name` answering every request (at least one expected).
async fn mount_any(server: &MockServer, name: &str) {
    let x = exchange(name);
    x.mock()
        .respond_with(x.template())
        .expect(1..)
        .named(name)
        .mount(server)
        .await;
}

#[tokio::test]
async fn an_expired_batch_gives_the_lines_it_finished_and_an_empty_error_file_is_no_file() {
    let server = MockServer::start().await;
    mount_any(&server, "batch_get_expired").await;
    mount(&server, "batch_expired_output_content", 1).await;
    // `error_file_id: ""` must not become `GET /v1/files//content`.
    Mock::given(method("GET"))
        .and(wiremock::matchers::path_regex("^/v1/files//"))
        .respond_with(wiremock::ResponseTemplate::new(404))
        .expect(0)
        .named("empty file id")
        .mount(&server)
        .await;
    let client = client_for(&server);
    let b = client.get_batch("batch_abc123").await.unwrap();
    assert_eq!(
        (b.status, b.provider_status.as_str(), b.completed, b.total),
        (BatchStatus::Cancelled, "expired", 1, 3)
    );
    let results = client.batch_results("batch_abc123").await.unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].custom_id, "en-stem/anatomy/test/1");
    assert_eq!(results[0].result.as_ref().unwrap().text, "C");
}

#[tokio::test]
async fn a_failed_batch_says_why() {
    let server = MockServer::start().await;
    mount_any(&server, "batch_get_failed").await;
    let client = client_for(&server);
    let b = client.get_batch("batch_abc123").await.unwrap();
    assert_eq!(b.status, BatchStatus::Failed);
    assert_eq!(
        b.errors,
        ["This line is not parseable as valid JSON. (invalid_json_line, line 2)"]
    );
    // No output or error file: no result, and no request for one.
    assert!(
        client
            .batch_results("batch_abc123")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn job_failures_keep_code_and_param() {
    let check = |name: &'static str| async move {
        let server = MockServer::start().await;
        mount(&server, name, 1).await;
        client_for(&server).get_job("ftjob-abc123").await.unwrap()
    };
    let data = check("ft_get_failed").await;
    assert_eq!(data.error_code.as_deref(), Some("invalid_training_file"));
    assert_eq!(data.error_param.as_deref(), Some("training_file"));
    assert!(data.failed_on_training_data());
    let server_side = check("ft_get_failed_server").await;
    assert_eq!(server_side.error_code.as_deref(), Some("server_error"));
    assert!(!server_side.failed_on_training_data());
    assert!(
        server_side
            .error
            .unwrap()
            .contains("failed due to an internal error")
    );
}

#[tokio::test]
async fn events_follow_has_more_to_the_end() {
    let server = MockServer::start().await;
    let first = exchange("ft_events_page1");
    Mock::given(method("GET"))
        .and(path("/v1/fine_tuning/jobs/ftjob-abc123/events"))
        .and(wiremock::matchers::query_param("after", "ft-event-1"))
        .respond_with(exchange("ft_events_page2").template())
        .expect(1)
        .named("page 2")
        .mount(&server)
        .await;
    first
        .mock()
        .respond_with(first.template())
        .up_to_n_times(1)
        .expect(1)
        .named("page 1")
        .mount(&server)
        .await;
    let events = client_for(&server)
        .list_events("ftjob-abc123")
        .await
        .unwrap();
    // Three events over two pages, oldest first.
    let steps: Vec<&str> = events.iter().map(|e| &e.message[..12]).collect();
    assert_eq!(steps, ["Step 98/100:", "Step 99/100:", "Step 100/100"]);
}

#[tokio::test]
async fn a_truncated_answer_keeps_its_finish_reason_and_is_not_served_to_a_larger_limit() {
    let server = MockServer::start().await;
    let cut = exchange("chat_completion_length");
    cut.mock()
        .and(body_partial_json(serde_json::json!({"max_tokens": 16})))
        .respond_with(cut.template())
        .expect(1)
        .mount(&server)
        .await;
    let full = exchange("chat_completion");
    full.mock()
        .and(body_partial_json(serde_json::json!({"max_tokens": 512})))
        .respond_with(full.template())
        .expect(1)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let model = Cached::new(client_for(&server), dir.path());
    let mut r = chat("m");
    r.max_tokens = Some(16);
    let first = model.chat(&r).await.unwrap();
    assert_eq!(
        (first.text.as_str(), first.finish_reason.as_deref()),
        ("", Some("length"))
    );
    // The same request again comes from the cache (rate-limit state is not cached) ...
    let again = model.chat(&r).await.unwrap();
    assert_eq!(
        (again.text, again.finish_reason),
        (first.text, first.finish_reason)
    );
    // ... but a rerun with room to answer asks the provider.
    r.max_tokens = Some(512);
    let second = model.chat(&r).await.unwrap();
    assert_eq!(
        (second.text.as_str(), second.finish_reason.as_deref()),
        ("C", Some("stop"))
    );
    assert_eq!((model.hits(), model.misses()), (1, 2));
}

#[tokio::test]
async fn no_choice_is_a_decode_error_with_the_body() {
    let server = MockServer::start().await;
    mount(&server, "chat_completion_no_choices", 1).await;
    let e = client_for(&server).chat(&chat("m")).await.unwrap_err();
    match &e {
        ProviderError::Decode { raw_body, .. } => {
            assert!(raw_body.contains("\"choices\":[]"), "{raw_body}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn rate_limits_quoting_minutes_ask_for_no_minutes_long_wait() {
    // A 429 without Retry-After asks for no particular wait: the reset of a whole token
    // window (6m0s) is not one, so the limiter backs off from a second (see
    // xlt-provider's limit tests for the pauses themselves).
    let server = MockServer::start().await;
    mount(&server, "error_429_no_retry_after", 1).await;
    let e = client_for(&server).chat(&chat("m")).await.unwrap_err();
    assert!(matches!(e, ProviderError::RateLimited { .. }), "{e:?}");
    assert_eq!(e.retry_after(), None);

    // A 200 reporting no tokens left until 6m0s: the limiter is told, and caps the pause.
    let server = MockServer::start().await;
    mount(&server, "chat_completion_tokens_exhausted", 1).await;
    let r = client_for(&server).chat(&chat("m")).await.unwrap();
    let info = r.rate_limit.unwrap();
    assert_eq!(
        (info.remaining_tokens, info.reset_tokens),
        (Some(0), Some(Duration::from_secs(360)))
    );
    assert!(MAX_PROVIDER_PAUSE < Duration::from_secs(60));
}

/// A ledger over a fresh server on which `ft_create` answers `creates` times and the job
/// then reads as `state` (once per ledger call that looks at it).
async fn ledger_case(
    state: &str,
    creates: u64,
    gets: u64,
) -> (MockServer, tempfile::TempDir, OpenAiClient) {
    let server = MockServer::start().await;
    mount(&server, "ft_create", creates).await;
    mount(&server, state, gets).await;
    let dir = tempfile::tempdir().unwrap();
    let client = client_for(&server);
    (server, dir, client)
}

#[tokio::test]
async fn a_job_that_failed_on_its_data_is_not_paid_for_again() {
    let (_server, dir, client) = ledger_case("ft_get_failed", 1, 1).await;
    let ledger = JobLedger::open(dir.path().join("ledger.json"), "openai").unwrap();
    ledger.submit_or_resume(&client, &spec()).await.unwrap();
    let e = ledger.submit_or_resume(&client, &spec()).await.unwrap_err();
    let text = e.to_string();
    assert!(text.contains("invalid training file"), "{text}");
    assert!(text.contains("training data is at fault"), "{text}");
    // The ledger keeps the terminal state and its reason.
    let jobs = ledger.jobs().await;
    assert_eq!(jobs[0].status, JobStatus::Failed);
    assert!(
        jobs[0]
            .error
            .as_deref()
            .unwrap()
            .contains("invalid_training_file")
    );
}

#[tokio::test]
async fn a_server_side_failure_is_resubmitted_once() {
    let (_server, dir, client) = ledger_case("ft_get_failed_server", 2, 2).await;
    let ledger = JobLedger::open(dir.path().join("ledger.json"), "openai").unwrap();
    ledger.submit_or_resume(&client, &spec()).await.unwrap();
    // Failed on the provider's side: submitted again, once.
    ledger.submit_or_resume(&client, &spec()).await.unwrap();
    assert_eq!(ledger.jobs().await[0].attempt, 1);
    let e = ledger.submit_or_resume(&client, &spec()).await.unwrap_err();
    assert!(e.to_string().contains("not submitted again"), "{e}");
}

#[tokio::test]
async fn a_job_cancelled_outside_the_run_needs_resubmit_cancelled() {
    let (_server, dir, client) = ledger_case("ft_get_cancelled", 2, 2).await;
    let path = dir.path().join("ledger.json");
    let ledger = JobLedger::open(&path, "openai").unwrap();
    ledger.submit_or_resume(&client, &spec()).await.unwrap();
    let e = ledger.submit_or_resume(&client, &spec()).await.unwrap_err();
    assert!(e.to_string().contains("--resubmit-cancelled"), "{e}");
    assert!(e.to_string().contains("pays again"), "{e}");
    drop(ledger);
    let ledger = JobLedger::open(&path, "openai")
        .unwrap()
        .resubmit_cancelled(true);
    let job = ledger.submit_or_resume(&client, &spec()).await.unwrap();
    assert_eq!(job.id, "ftjob-abc123");
    assert_eq!(ledger.jobs().await[0].attempt, 1);
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

/// Letter scoring (issue #22) through an OpenAI-compatible server: one request for one
/// token with `logprobs` and the 20 most likely alternatives; letters read from them.
#[tokio::test]
async fn letter_scoring_asks_for_one_token_with_twenty_alternatives() {
    let server = MockServer::start().await;
    let x = exchange("chat_completion_logprobs");
    x.mock()
        .and(body_partial_json(serde_json::json!({
            "max_tokens": 1, "logprobs": true, "top_logprobs": 20, "temperature": 0.0
        })))
        .respond_with(x.template())
        .expect(1)
        .mount(&server)
        .await;
    let client = client_for(&server);
    let s = score_letters(&client, &chat("gpt-4.1-nano-2025-04-14"))
        .await
        .unwrap();
    assert_eq!(s.source, LetterSource::TopLogprobs);
    let l = s.logprobs;
    assert_eq!(
        (l.c, l.b, l.a),
        (Some(-0.0202), Some(-4.0202), Some(-5.5202))
    );
    assert_eq!(l.missing(), 0, "{l:?}");
    assert_eq!(l.argmax(), Some(2));
}

#[tokio::test]
async fn a_letter_outside_the_top_alternatives_is_null_and_counted() {
    let server = MockServer::start().await;
    let body = serde_json::json!({
        "id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "finish_reason": "length",
            "message": {"role": "assistant", "content": "The"},
            "logprobs": {"content": [{"token": "The", "logprob": -0.5, "top_logprobs": [
                {"token": "The", "logprob": -0.5},
                {"token": " B", "logprob": -2.0},
                {"token": "B", "logprob": -3.0},
                {"token": "C", "logprob": -4.0}
            ]}]}}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 1, "total_tokens": 31}
    });
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .expect(1)
        .mount(&server)
        .await;
    let s = score_letters(&client_for(&server), &chat("m"))
        .await
        .unwrap();
    let l = s.logprobs;
    assert_eq!((l.a, l.d), (None, None));
    assert_eq!(l.missing(), 2);
    let b = l.b.unwrap();
    let expected = log_add_exp(-2.0, -3.0);
    assert!((b - expected).abs() < 1e-12, "B {b} against {expected}");
    assert_eq!(l.argmax(), Some(1));
}

#[tokio::test]
async fn a_server_answering_without_logprobs_cannot_score_letters() {
    let server = MockServer::start().await;
    let x = exchange("chat_completion");
    x.mock()
        .respond_with(x.template())
        .expect(1)
        .mount(&server)
        .await;
    let err = score_letters(&client_for(&server), &chat("gpt-4.1-nano-2025-04-14"))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Unsupported { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("without log-probabilities") && msg.contains("--scoring generate"),
        "{msg}"
    );
}
