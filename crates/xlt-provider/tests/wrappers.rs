//! The wrappers over a scripted model, and the embedded provider's lifecycle.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use xlt_provider::*;

/// Answers from a script of results, then "A"; counts calls.
struct Scripted {
    script: Mutex<VecDeque<Result<&'static str, ProviderError>>>,
    calls: AtomicU64,
}

impl Scripted {
    fn new(script: Vec<Result<&'static str, ProviderError>>) -> Arc<Scripted> {
        Arc::new(Scripted {
            script: Mutex::new(script.into()),
            calls: AtomicU64::new(0),
        })
    }
}

#[async_trait]
impl ChatModel for Scripted {
    fn provider(&self) -> &str {
        "scripted"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
    async fn chat(&self, r: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let next = self.script.lock().unwrap().pop_front().unwrap_or(Ok("A"));
        next.map(|text| ChatResponse {
            model: r.model.clone(),
            text: text.to_owned(),
            finish_reason: Some("stop".into()),
            usage: Usage::default(),
            top_logprobs: None,
            letter_logprobs: None,
            rate_limit: None,
        })
    }
}

fn rate_limited() -> ProviderError {
    ProviderError::RateLimited {
        request: "POST /v1/chat/completions".into(),
        retry_after: Some(Duration::from_millis(10)),
        message: "slow down".into(),
    }
}

fn server_error() -> ProviderError {
    ProviderError::Api {
        request: "POST /v1/chat/completions".into(),
        status: 503,
        kind: Some("server_error".into()),
        code: None,
        message: "overloaded".into(),
        request_id: None,
    }
}

fn req(text: &str) -> ChatRequest {
    ChatRequest::new("m", vec![ChatMessage::new(Role::User, text)])
}

fn fast() -> RetryPolicy {
    RetryPolicy {
        max_retries: 3,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        jitter: 0.0,
    }
}

#[tokio::test]
async fn retry_recovers_from_retryable_errors_and_counts() {
    let inner = Scripted::new(vec![Err(rate_limited()), Err(server_error()), Ok("C")]);
    let m = Retry::new(inner.clone(), fast());
    let r = m.chat(&req("q")).await.unwrap();
    assert_eq!(r.text, "C");
    assert_eq!(inner.calls.load(Ordering::SeqCst), 3);
    assert_eq!(m.retries().load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn retry_gives_up_after_max_and_never_retries_quota() {
    let inner = Scripted::new(vec![Err(server_error()); 10]);
    let m = Retry::new(inner.clone(), fast());
    assert!(m.chat(&req("q")).await.is_err());
    assert_eq!(inner.calls.load(Ordering::SeqCst), 4);

    let quota = ProviderError::QuotaExhausted {
        request: "POST /v1/chat/completions".into(),
        message: "You exceeded your current quota".into(),
    };
    let inner = Scripted::new(vec![Err(quota)]);
    let m = Retry::new(inner.clone(), fast());
    let e = m.chat(&req("q")).await.unwrap_err();
    assert!(matches!(e, ProviderError::QuotaExhausted { .. }));
    assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
    assert_eq!(m.retries().load(Ordering::SeqCst), 0);
}

#[test]
fn backoff_doubles_caps_and_honours_retry_after() {
    let p = RetryPolicy {
        max_retries: 10,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(1000),
        jitter: 0.0,
    };
    let e = server_error();
    assert_eq!(p.delay(0, &e), Duration::from_millis(100));
    assert_eq!(p.delay(2, &e), Duration::from_millis(400));
    assert_eq!(p.delay(5, &e), Duration::from_millis(1000));
    assert_eq!(p.delay(5, &rate_limited()), Duration::from_millis(10));
    let jittered = RetryPolicy { jitter: 0.5, ..p };
    let d = jittered.delay(0, &e);
    assert!(d >= Duration::from_millis(100) && d <= Duration::from_millis(150));
}

#[tokio::test]
async fn cache_serves_a_second_run_with_no_call() {
    let dir = tempfile::tempdir().unwrap();
    let inner = Scripted::new(vec![Ok("B"), Ok("C")]);
    let m = Cached::new(inner.clone(), dir.path());
    assert_eq!(m.chat(&req("one")).await.unwrap().text, "B");
    assert_eq!(m.chat(&req("two")).await.unwrap().text, "C");
    assert_eq!(inner.calls.load(Ordering::SeqCst), 2);
    // A new cache over the same directory, as after a restart.
    let again = Cached::new(inner.clone(), dir.path());
    assert_eq!(again.chat(&req("one")).await.unwrap().text, "B");
    assert_eq!(again.chat(&req("two")).await.unwrap().text, "C");
    assert_eq!(inner.calls.load(Ordering::SeqCst), 2);
    assert_eq!((again.hits(), again.misses()), (2, 0));
    // A corrupt entry is a miss, not a failure.
    std::fs::write(again.path_for(&req("one")), b"{not json").unwrap();
    assert_eq!(again.chat(&req("one")).await.unwrap().text, "A");
    assert_eq!(inner.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn errors_are_not_cached() {
    let dir = tempfile::tempdir().unwrap();
    let inner = Scripted::new(vec![Err(server_error()), Ok("D")]);
    let m = Cached::new(inner.clone(), dir.path());
    assert!(m.chat(&req("q")).await.is_err());
    assert_eq!(m.chat(&req("q")).await.unwrap().text, "D");
}

#[tokio::test]
async fn run_chat_streams_every_result_with_progress() {
    let inner = Scripted::new(vec![Ok("B"), Err(server_error())]);
    let requests: Vec<(String, ChatRequest)> = (0..10)
        .map(|i| (format!("r{i}"), req(&i.to_string())))
        .collect();
    let results: Vec<_> = run_chat(
        inner.clone(),
        requests,
        RunOptions {
            concurrency: 3,
            retries: None,
        },
    )
    .collect()
    .await;
    assert_eq!(results.len(), 10);
    let last = results.last().unwrap().2;
    assert_eq!((last.done, last.failed, last.total), (10, 1, 10));
    let mut ids: Vec<&str> = results.iter().map(|(id, _, _)| id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10);
}

fn training_file() -> Vec<u8> {
    // Options where the answer is always the one that repeats the question's key word: a
    // pattern the embedded learner can pick up.
    let mut s = String::new();
    for i in 0..60 {
        let k = i % 4;
        let mut opts = ["alpha", "beta", "gamma", "delta"].map(|o| format!("{o} {i}"));
        opts[k] = format!("zebra {i}");
        let user = format!(
            "Which one is about zebra?\n\nA. {}\nB. {}\nC. {}\nD. {}\n\nAnswer with the letter only.",
            opts[0], opts[1], opts[2], opts[3]
        );
        let letter = ["A", "B", "C", "D"][k];
        let line = serde_json::json!({"messages": [
            {"role": "user", "content": user},
            {"role": "assistant", "content": letter}
        ]});
        s.push_str(&line.to_string());
        s.push('\n');
    }
    s.into_bytes()
}

#[tokio::test]
async fn embedded_job_passes_through_real_states_and_learns() {
    let dir = tempfile::tempdir().unwrap();
    let p = EmbeddedProvider::open(dir.path());
    let file = p
        .upload("train.jsonl", training_file(), FilePurpose::FineTune)
        .await
        .unwrap();
    let spec = FineTuneSpec {
        base_model: EMBEDDED_BASE_MODEL.into(),
        training_file: file.id.clone(),
        validation_file: None,
        hyperparameters: Hyperparameters::study(),
        suffix: Some("zebra".into()),
        seed: Some(1),
        lora: None,
    };
    let job = p.create_job(&spec, "ref-1").await.unwrap();
    assert_eq!(job.status, JobStatus::ValidatingFiles);
    let mut seen = vec![job.status];
    let model = wait_for_job(
        &p,
        &job.id,
        WaitOptions {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(2),
            factor: 1.0,
            timeout: Duration::from_secs(10),
        },
        |j| seen.push(j.status),
    )
    .await
    .unwrap();
    assert_eq!(
        seen,
        [
            JobStatus::ValidatingFiles,
            JobStatus::Queued,
            JobStatus::Running,
            JobStatus::Succeeded
        ]
    );
    assert!(model.starts_with("ft:xlt-embedded-base:zebra:"));
    assert!(p.list_events(&job.id).await.unwrap().len() >= 4);
    // The tuned model picks the zebra option on new questions, with logprobs.
    let q = |k: usize| {
        let mut opts = ["one", "two", "three", "four"].map(str::to_owned);
        opts[k] = "zebra crossing".into();
        format!(
            "Which one is about zebra?\n\nA. {}\nB. {}\nC. {}\nD. {}",
            opts[0], opts[1], opts[2], opts[3]
        )
    };
    for k in 0..4 {
        let mut r = req(&q(k));
        r.model = model.clone();
        r.top_logprobs = Some(4);
        let out = p.chat(&r).await.unwrap();
        assert_eq!(out.text, ["A", "B", "C", "D"][k]);
        let top = out.top_logprobs.unwrap();
        assert_eq!(top.len(), 4);
        assert_eq!(top[0].token, out.text);
    }
    // A fresh provider over the same directory still has the model.
    let again = EmbeddedProvider::open(dir.path());
    let mut r = req(&q(2));
    r.model = model;
    assert_eq!(again.chat(&r).await.unwrap().text, "C");
}

#[tokio::test]
async fn embedded_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let p = EmbeddedProvider::open(dir.path());
    let mut r = req("x\nA. 1\nB. 2\nC. 3\nD. 4");
    r.model = "gpt-4.1-nano-2025-04-14".into();
    let e = p.chat(&r).await.unwrap_err();
    assert!(matches!(e, ProviderError::NotFound { .. }));
    assert!(e.to_string().contains("gpt-4.1-nano-2025-04-14"), "{e}");
    let spec = FineTuneSpec {
        base_model: EMBEDDED_BASE_MODEL.into(),
        training_file: "file-missing".into(),
        validation_file: None,
        hyperparameters: Hyperparameters::default(),
        suffix: None,
        seed: None,
        lora: None,
    };
    assert!(matches!(
        p.create_job(&spec, "ref-1").await,
        Err(ProviderError::NotFound { .. })
    ));
    // A training file the learner cannot read fails the job, with the reason.
    let bad = p
        .upload(
            "bad.jsonl",
            b"{\"messages\": []}\n".to_vec(),
            FilePurpose::FineTune,
        )
        .await
        .unwrap();
    let job = p
        .create_job(
            &FineTuneSpec {
                training_file: bad.id,
                ..spec
            },
            "ref-2",
        )
        .await
        .unwrap();
    let e = wait_for_job(
        &p,
        &job.id,
        WaitOptions {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(1),
            factor: 1.0,
            timeout: Duration::from_secs(5),
        },
        |_| {},
    )
    .await
    .unwrap_err();
    assert!(matches!(e, ProviderError::JobFailed { .. }));
    assert!(e.to_string().contains("line 1"), "{e}");
}

#[tokio::test]
async fn ledger_resumes_the_same_spec_and_reuses_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let p = EmbeddedProvider::open(dir.path().join("provider"));
    let ledger_path = dir.path().join("ledger.json");
    let ledger = JobLedger::open(&ledger_path, "embedded").unwrap();
    let f1 = ledger
        .upload_once(&p, "t.jsonl", training_file(), FilePurpose::FineTune)
        .await
        .unwrap();
    let spec = FineTuneSpec {
        base_model: EMBEDDED_BASE_MODEL.into(),
        training_file: f1.id.clone(),
        validation_file: None,
        hyperparameters: Hyperparameters::study(),
        suffix: None,
        seed: Some(3),
        lora: None,
    };
    let j1 = ledger.submit_or_resume(&p, &spec).await.unwrap();
    // After a restart: same upload, same job.
    let ledger = JobLedger::open(&ledger_path, "embedded").unwrap();
    let f2 = ledger
        .upload_once(&p, "t.jsonl", training_file(), FilePurpose::FineTune)
        .await
        .unwrap();
    assert_eq!(f1, f2);
    let j2 = ledger.submit_or_resume(&p, &spec).await.unwrap();
    assert_eq!(j1.id, j2.id);
    assert_eq!(ledger.jobs().await.len(), 1);
    // A job cancelled outside the run is not paid for again unless asked ...
    p.cancel_job(&j2.id).await.unwrap();
    let e = ledger.submit_or_resume(&p, &spec).await.unwrap_err();
    assert!(e.to_string().contains("--resubmit-cancelled"), "{e}");
    assert_eq!(ledger.jobs().await[0].status, JobStatus::Cancelled);
    // ... and replaced by a new one when asked.
    let ledger = JobLedger::open(&ledger_path, "embedded")
        .unwrap()
        .resubmit_cancelled(true);
    let j3 = ledger.submit_or_resume(&p, &spec).await.unwrap();
    assert_ne!(j3.id, j2.id);
    // Another provider's ledger is refused.
    assert!(JobLedger::open(&ledger_path, "openai").is_err());
}

/// Creates the job at the inner provider, then reports a dropped connection: as if the
/// process died between the provider accepting the job and the ledger recording its id.
struct DropsAfterCreate(EmbeddedProvider);

#[async_trait]
impl FineTuner for DropsAfterCreate {
    fn provider(&self) -> &str {
        "embedded"
    }
    async fn upload(
        &self,
        f: &str,
        b: Vec<u8>,
        p: FilePurpose,
    ) -> Result<UploadedFile, ProviderError> {
        self.0.upload(f, b, p).await
    }
    async fn create_job(&self, s: &FineTuneSpec, r: &str) -> Result<FineTuneJob, ProviderError> {
        self.0.create_job(s, r).await?;
        Err(ProviderError::Transport {
            request: "POST /v1/fine_tuning/jobs".into(),
            message: "connection reset".into(),
        })
    }
    async fn get_job(&self, id: &str) -> Result<FineTuneJob, ProviderError> {
        self.0.get_job(id).await
    }
    async fn find_job(&self, r: &str) -> Result<Option<FineTuneJob>, ProviderError> {
        self.0.find_job(r).await
    }
    async fn list_events(&self, id: &str) -> Result<Vec<JobEvent>, ProviderError> {
        self.0.list_events(id).await
    }
    async fn cancel_job(&self, id: &str) -> Result<FineTuneJob, ProviderError> {
        self.0.cancel_job(id).await
    }
}

#[tokio::test]
async fn ledger_finds_a_job_whose_creation_was_not_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let flaky = DropsAfterCreate(EmbeddedProvider::open(dir.path().join("provider")));
    let ledger_path = dir.path().join("ledger.json");
    let ledger = JobLedger::open(&ledger_path, "embedded").unwrap();
    let file = ledger
        .upload_once(&flaky, "t.jsonl", training_file(), FilePurpose::FineTune)
        .await
        .unwrap();
    let spec = FineTuneSpec {
        base_model: EMBEDDED_BASE_MODEL.into(),
        training_file: file.id,
        validation_file: None,
        hyperparameters: Hyperparameters::study(),
        suffix: None,
        seed: Some(3),
        lora: None,
    };
    assert!(ledger.submit_or_resume(&flaky, &spec).await.is_err());
    // The next run (a fresh ledger over the same file) finds the job instead of paying twice.
    let ledger = JobLedger::open(&ledger_path, "embedded").unwrap();
    let job = ledger.submit_or_resume(&flaky, &spec).await.unwrap();
    let jobs = std::fs::read_dir(dir.path().join("provider/jobs"))
        .unwrap()
        .count();
    assert_eq!(jobs, 1, "exactly one job at the provider");
    assert_eq!(ledger.jobs().await[0].job_id, job.id);
}

fn cut_off_body() -> ProviderError {
    ProviderError::Decode {
        request: "GET /v1/fine_tuning/jobs/ftjob-1".into(),
        message: "EOF while parsing a string".into(),
        raw_body: "{\"id\": \"ftjob-1\", \"sta".into(),
    }
}

#[tokio::test]
async fn cut_off_bodies_are_retried_and_counted_by_operation() {
    let inner = Scripted::new(vec![Err(cut_off_body()), Ok("B")]);
    let counter = RetryCounter::new();
    let m = Retry::with_counter(inner.clone(), fast(), counter.clone());
    assert_eq!(m.chat(&req("q")).await.unwrap().text, "B");
    assert_eq!(counter.total(), 1);
    assert_eq!(counter.by_operation()["chat"], 1);
}

#[tokio::test]
async fn a_fatal_error_stops_every_later_call_sharing_the_counter() {
    let quota = ProviderError::QuotaExhausted {
        request: "POST /v1/chat/completions".into(),
        message: "You exceeded your current quota".into(),
    };
    let inner = Scripted::new(vec![Err(quota)]);
    let counter = RetryCounter::new();
    let a = Retry::with_counter(inner.clone(), fast(), counter.clone());
    let b = Retry::with_counter(inner.clone(), fast(), counter.clone());
    assert!(a.chat(&req("1")).await.unwrap_err().is_fatal());
    // The second wrapper does not send at all: the inner model saw one call.
    let e = b.chat(&req("2")).await.unwrap_err();
    assert!(matches!(e, ProviderError::QuotaExhausted { .. }), "{e}");
    assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
    assert!(counter.fatal().is_some());
    // Clean-up is still sent.
    let n = fast()
        .run_cleanup(&counter, "stop_endpoint", || async {
            Ok::<_, ProviderError>(7)
        })
        .await
        .unwrap();
    assert_eq!(n, 7);
}

/// One write whose answers are scripted; `acted` says whether the provider acted on each
/// send (a 504 after acting, a cut-off body) and the lookup sees what it did.
struct Write {
    answers: Mutex<VecDeque<(bool, Result<u32, ProviderError>)>>,
    done: Mutex<Option<u32>>,
    sends: AtomicU64,
    lookups: AtomicU64,
}

impl Write {
    async fn send(&self) -> Result<u32, ProviderError> {
        self.sends.fetch_add(1, Ordering::SeqCst);
        let (acted, answer) = self.answers.lock().unwrap().pop_front().unwrap();
        if acted {
            *self.done.lock().unwrap() = Some(42);
        }
        answer
    }
    async fn find(&self) -> Result<Option<u32>, ProviderError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        Ok(*self.done.lock().unwrap())
    }
}

#[tokio::test]
async fn a_write_is_looked_up_before_it_is_resent() {
    // (answers, sends, lookups, result): the lookup finds a write that acted; one that did
    // not act is sent again; a write that fails for good is not looked up.
    let check = |answers: Vec<(bool, Result<u32, ProviderError>)>, sends, lookups| async move {
        let w = Write {
            answers: Mutex::new(answers.into()),
            done: Mutex::new(None),
            sends: AtomicU64::new(0),
            lookups: AtomicU64::new(0),
        };
        let counter = RetryCounter::new();
        let r = fast()
            .run_write(&counter, "create_job", || w.send(), || w.find())
            .await;
        assert_eq!(
            (
                w.sends.load(Ordering::SeqCst),
                w.lookups.load(Ordering::SeqCst)
            ),
            (sends, lookups)
        );
        r
    };
    let r = check(vec![(true, Err(cut_off_body()))], 1, 1).await;
    assert_eq!(r.unwrap(), 42);
    let r = check(vec![(false, Err(server_error())), (true, Ok(42))], 2, 1).await;
    assert_eq!(r.unwrap(), 42);
    let bad = ProviderError::Api {
        request: "POST /v1/fine_tuning/jobs".into(),
        status: 400,
        kind: None,
        code: None,
        message: "invalid training file".into(),
        request_id: None,
    };
    let r = check(vec![(false, Err(bad))], 1, 0).await;
    assert!(r.is_err());
}
