//! The Together backend against wiremock, answering with `fixtures/together`.

use std::time::Duration;

use wiremock::MockServer;
use wiremock::matchers::{body_partial_json, body_string_contains};
use xlt_provider::*;
use xlt_together::testing::{TEST_KEY, client_for, exchange, mount};

fn spec() -> FineTuneSpec {
    FineTuneSpec {
        base_model: "Qwen/Qwen2.5-7B-Instruct".into(),
        training_file: "file-0123456789abcdef".into(),
        validation_file: None,
        hyperparameters: Hyperparameters {
            epochs: Param::Value(1),
            batch_size: Param::Value(8),
            learning_rate: LearningRate::Absolute(1e-5),
            ..Hyperparameters::default()
        },
        suffix: Some("en-medical".into()),
        seed: Some(42),
        lora: None,
    }
}

fn quick() -> WaitOptions {
    WaitOptions {
        initial: Duration::from_millis(1),
        max: Duration::from_millis(2),
        factor: 1.0,
        timeout: Duration::from_secs(10),
    }
}

fn chat(model: &str) -> ChatRequest {
    let mut r = ChatRequest::new(
        model,
        vec![ChatMessage::new(
            Role::User,
            "2 + 2 = ?\nA. 3\nB. 4\nC. 5\nD. 22",
        )],
    );
    r.top_logprobs = Some(4);
    r
}

#[tokio::test]
async fn lifecycle_upload_train_serve_chat_stop() {
    let server = MockServer::start().await;
    let x = exchange("files_upload");
    x.mock()
        .and(wiremock::matchers::header(
            "authorization",
            format!("Bearer {TEST_KEY}").as_str(),
        ))
        .and(body_string_contains("name=\"file_name\""))
        .and(body_string_contains("name=\"purpose\""))
        .and(body_string_contains("fine-tune"))
        .respond_with(x.template())
        .expect(1)
        .mount(&server)
        .await;
    let x = exchange("ft_create");
    x.mock()
        .and(body_partial_json(serde_json::json!({
            "model": "Qwen/Qwen2.5-7B-Instruct",
            "training_file": "file-0123456789abcdef",
            "n_epochs": 1, "batch_size": 8, "learning_rate": 1e-5, "random_seed": 42,
            "packing": false,
            "training_method": {"method": "sft"},
            "training_type": {"type": "Lora", "lora_r": 8, "lora_alpha": 16},
            "suffix": "en-medical-789abcdef0",
        })))
        .respond_with(x.template())
        .expect(1)
        .mount(&server)
        .await;
    for s in [
        "pending",
        "queued",
        "running",
        "compressing",
        "uploading",
        "completed",
    ] {
        mount(&server, &format!("ft_get_{s}"), 1).await;
    }
    mount(&server, "ft_events", 1).await;
    let x = exchange("endpoint_create");
    x.mock()
        .and(body_partial_json(serde_json::json!({
            "model": "xlt-user/Qwen2.5-7B-Instruct-en-medical-789abcdef0-a1b2c3d4",
            "display_name": "xlt-0123abcd-en-medical",
            "autoscaling": {"min_replicas": 1, "max_replicas": 1}})))
        .respond_with(x.template())
        .expect(1)
        .mount(&server)
        .await;
    mount(&server, "endpoint_get_starting", 1).await;
    mount(&server, "endpoint_get_started", 1).await;
    let x = exchange("chat_endpoint");
    x.mock()
        // Together's dialect: logprobs is the number of alternatives.
        .and(body_partial_json(serde_json::json!({
            "model": "xlt-user/Qwen2.5-7B-Instruct-en-medical-a1b2c3d4", "logprobs": 4})))
        .respond_with(x.template())
        .expect(1)
        .mount(&server)
        .await;
    let x = exchange("endpoint_stop");
    x.mock()
        .and(body_partial_json(serde_json::json!({"state": "STOPPED"})))
        .respond_with(x.template())
        .expect(1)
        .mount(&server)
        .await;

    let client = client_for(&server);
    let file = client
        .upload("en-medical.jsonl", b"{}\n".to_vec(), FilePurpose::FineTune)
        .await
        .unwrap();
    assert_eq!(file.id, "file-0123456789abcdef");
    let job = client
        .create_job(&spec(), "xlt-0123456789abcdef-0")
        .await
        .unwrap();
    assert_eq!(
        (job.status, job.provider_status.as_str()),
        (JobStatus::Queued, "pending")
    );
    let mut seen = Vec::new();
    let model = wait_for_job(&client, &job.id, quick(), |j| {
        seen.push(j.provider_status.clone())
    })
    .await
    .unwrap();
    assert_eq!(
        seen,
        [
            "pending",
            "queued",
            "running",
            "compressing",
            "uploading",
            "completed"
        ]
    );
    assert_eq!(
        model,
        "xlt-user/Qwen2.5-7B-Instruct-en-medical-789abcdef0-a1b2c3d4"
    );
    assert_eq!(client.list_events(&job.id).await.unwrap().len(), 2);

    let served = client
        .start(&model, "xlt-0123abcd-en-medical")
        .await
        .unwrap();
    assert_eq!(served.state, ServeState::Starting);
    let ready = client.wait_ready(&served, quick()).await.unwrap();
    assert_eq!(ready.state, ServeState::Ready);
    // Requests name the fine-tuned model (so the cache does); the client routes them to the
    // endpoint serving it.
    let reply = client.chat(&chat(&model)).await.unwrap();
    assert_eq!(reply.text, "B");
    let top = reply.top_logprobs.unwrap();
    assert_eq!(top[0].token, "B");
    assert_eq!(top.len(), 4);
    client.stop(&ready).await.unwrap();
}

#[tokio::test]
async fn cancellation_goes_through_cancel_requested() {
    let server = MockServer::start().await;
    mount(&server, "ft_cancel", 1).await;
    mount(&server, "ft_get_cancelled", 1).await;
    let client = client_for(&server);
    let j = client.cancel_job("ft-01234567890123456789").await.unwrap();
    assert_eq!(
        (j.status, j.provider_status.as_str()),
        (JobStatus::Running, "cancel_requested")
    );
    let e = wait_for_job(&client, "ft-01234567890123456789", quick(), |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(e, ProviderError::JobFailed { ref status, .. } if status == "cancelled"),
        "{e}"
    );
}

#[tokio::test]
async fn failed_job_and_error_classes() {
    let server = MockServer::start().await;
    mount(&server, "ft_get_error", 1).await;
    let client = client_for(&server);
    mount(&server, "ft_events_error", 1).await;
    let e = wait_for_job(&client, "ft-01234567890123456789", quick(), |_| {})
        .await
        .unwrap_err();
    // The reason is only in the job's events.
    assert!(e.to_string().contains("`error`"), "{e}");
    assert!(
        e.to_string()
            .contains("2 examples are longer than the model's context length"),
        "{e}"
    );

    let check = |name: &'static str| async move {
        let server = MockServer::start().await;
        mount(&server, name, 1).await;
        let client = client_for(&server);
        if name == "error_400_model" {
            client.create_job(&spec(), "r").await.unwrap_err()
        } else {
            client.chat(&chat("m")).await.unwrap_err()
        }
    };
    let e = check("error_400_model").await;
    assert!(matches!(e, ProviderError::Api { status: 400, .. }), "{e:?}");
    assert!(e.to_string().contains("not supported for fine-tuning"));
    assert!(
        !e.to_string().contains("OpenAI closed"),
        "no OpenAI hint for Together"
    );
    assert!(matches!(
        check("error_401").await,
        ProviderError::Api { status: 401, .. }
    ));
    assert!(matches!(
        check("error_404").await,
        ProviderError::ModelNotFound { .. }
    ));
    let e = check("error_429").await;
    assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
    assert!(matches!(
        check("error_429_credit").await,
        ProviderError::QuotaExhausted { .. }
    ));
    assert!(check("error_500").await.is_retryable());
    for e in [check("error_401").await, check("error_500").await] {
        assert!(!e.to_string().contains(TEST_KEY));
    }
}

#[tokio::test]
async fn multiplier_is_refused_and_price_estimated() {
    let server = MockServer::start().await;
    let x = exchange("estimate_price");
    x.mock()
        .and(body_partial_json(
            serde_json::json!({"training_file": "file-0123456789abcdef", "n_epochs": 1}),
        ))
        // Only the fields the estimate's request body defines.
        .and(|r: &wiremock::Request| {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
            [
                "batch_size",
                "learning_rate",
                "suffix",
                "random_seed",
                "packing",
            ]
            .iter()
            .all(|k| v.get(k).is_none())
        })
        .respond_with(x.template())
        .expect(2)
        .mount(&server)
        .await;
    let client = client_for(&server);
    // Through the provider-neutral trait, as the cost plan asks.
    assert_eq!(
        FineTuner::estimate_price(&client, &spec()).await.unwrap(),
        Some(0.42)
    );
    let mut s = spec();
    s.hyperparameters.learning_rate = LearningRate::Multiplier(0.4);
    let e = client.create_job(&s, "r").await.unwrap_err();
    assert!(e.to_string().contains("absolute learning rate"), "{e}");
    let est = client.price_estimate(&spec()).await.unwrap();
    assert!((est.estimated_total_price - 0.42).abs() < 1e-9);
    assert!(est.allowed_to_proceed);
}

#[tokio::test]
async fn a_job_is_found_by_its_reference() {
    let server = MockServer::start().await;
    mount(&server, "ft_list", 2).await;
    let client = client_for(&server);
    let found = client.find_job("xlt-0123456789abcdef-0").await.unwrap();
    assert_eq!(found.unwrap().id, "ft-01234567890123456789");
    assert!(
        client
            .find_job("xlt-0123456789abcdef-1")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn user_error_is_a_failure_of_the_data() {
    let server = MockServer::start().await;
    mount(&server, "ft_get_user_error", 2).await;
    mount(&server, "ft_events_error", 2).await;
    let client = client_for(&server);
    let e = wait_for_job(&client, "ft-01234567890123456789", quick(), |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(e, ProviderError::JobFailed { ref status, .. } if status == "failed"),
        "{e}"
    );
    // Final at the first poll, and the data's fault: the ledger will not resubmit it.
    let job = client.get_job("ft-01234567890123456789").await.unwrap();
    assert_eq!(job.provider_status, "user_error");
    assert!(job.failed_on_training_data());
    assert!(job.error.unwrap().contains("context length"));
}

#[tokio::test]
async fn the_accounts_own_running_endpoints_are_listed() {
    let server = MockServer::start().await;
    let x = exchange("endpoints_list_mine");
    x.mock()
        .and(wiremock::matchers::query_param("mine", "true"))
        .respond_with(x.template())
        .expect(1)
        .mount(&server)
        .await;
    let running = client_for(&server).list_running().await.unwrap();
    let models: Vec<&str> = running.iter().map(|s| s.model.as_str()).collect();
    assert_eq!(
        models,
        [
            "xlt-user/Qwen2.5-7B-Instruct-en-medical-789abcdef0-a1b2c3d4",
            "xlt-user/someone-elses-model"
        ]
    );
    assert!(running.iter().all(|s| s.state == ServeState::Ready));
}

#[tokio::test]
async fn the_plan_can_ask_whether_a_base_model_is_served_serverless() {
    let server = MockServer::start().await;
    mount(&server, "models_list", 2).await;
    let client = client_for(&server);
    assert_eq!(
        client
            .serves_serverless("Qwen/Qwen2.5-7B-Instruct")
            .await
            .unwrap(),
        Some(true)
    );
    assert_eq!(
        client
            .serves_serverless("Qwen/Qwen3-0.6B-Base")
            .await
            .unwrap(),
        Some(false)
    );
}

#[tokio::test]
async fn lora_settings_of_the_spec_are_sent_as_togethers_fields() {
    let server = MockServer::start().await;
    let x = exchange("ft_create");
    x.mock()
        .and(body_partial_json(serde_json::json!({
            "training_type": {
                "type": "Lora", "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.1,
                "lora_trainable_modules": "q_proj,v_proj"},
            "warmup_ratio": 0.03,
        })))
        .respond_with(x.template())
        .expect(1)
        .mount(&server)
        .await;
    let client = client_for(&server);
    let lora = LoraSpec {
        rank: 4,
        alpha: 8.0,
        dropout: 0.1,
        target_modules: vec!["q_proj".into(), "v_proj".into()],
    };
    let mut s = spec();
    s.lora = Some(lora.clone());
    s.hyperparameters.warmup_ratio = Some(0.03);
    client
        .create_job(&s, "xlt-0123456789abcdef-0")
        .await
        .unwrap();
    // Refused before any request: Together's alpha is an integer, it has no gradient
    // accumulation, and the module names are checked.
    let refused = |s: FineTuneSpec, expected: &'static str| {
        let client = &client;
        async move {
            let e = client.create_job(&s, "r").await.unwrap_err();
            assert!(e.to_string().contains(expected), "{e}");
        }
    };
    let mut s = spec();
    s.lora = Some(LoraSpec {
        alpha: 8.5,
        ..lora.clone()
    });
    refused(s, "whole-number LoRA alpha").await;
    let mut s = spec();
    s.hyperparameters.gradient_accumulation_steps = Some(4);
    refused(s, "gradient accumulation").await;
    let mut s = spec();
    s.lora = Some(LoraSpec {
        target_modules: vec!["qkv_proj".into()],
        ..lora
    });
    refused(s, "unknown LoRA target module").await;
}
