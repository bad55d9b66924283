//! The study against wiremock servers that answer with the recorded exchanges of
//! `fixtures/openai` and `fixtures/together`: batches that expire or partly fail, a model
//! that no longer exists, and endpoints a killed run left running.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, method, path, path_regex, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};
use xlt_grade::Grader;
use xlt_openai::testing::{client_for, exchange};
use xlt_provider::{ChatModel, Progress, ResponseCache, WaitOptions};
use xlt_study::{
    BatchOptions, EvalOptions, Experiment, ModelsFile, StudyError, TunedModel, evaluate,
    evaluate_batch, stop_started_endpoints,
};

const BASE: &str = "gpt-4.1-nano-2025-04-14";

/// English and Yoruba medical: 11 test questions each, 22 requests per model.
fn experiment(dir: &Path) -> Experiment {
    let data = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/global-mmlu/lite"
    );
    let config = xlt_data::PrepareConfig {
        selection: xlt_data::Selection {
            languages: vec![xlt_data::Language::English, xlt_data::Language::Yoruba],
            domains: vec![xlt_data::Domain::Medical],
            ..Default::default()
        },
        ..Default::default()
    };
    xlt_data::prepare(xlt_data::load_paths(&[data]).unwrap(), &config)
        .unwrap()
        .write_to(dir)
        .unwrap();
    Experiment::open(dir).unwrap()
}

fn base_only() -> ModelsFile {
    ModelsFile {
        provider: "openai".into(),
        base_model: BASE.into(),
        fine_tuned: BTreeMap::new(),
    }
}

fn no_progress(_: &str, _: &Progress) {}

fn quick_batches(rounds: u32) -> BatchOptions {
    BatchOptions {
        poll: WaitOptions {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(2),
            factor: 1.0,
            timeout: Duration::from_secs(10),
        },
        rounds,
    }
}

/// What happens to one line of a batch.
#[derive(Clone, Copy, PartialEq)]
enum Line {
    Answered,
    Failed,
    NeverRan,
}

/// A batch server built from the recorded batch exchanges: it reads the custom ids of each
/// uploaded input file, and batch `n` (1-based) ends in `status(n)` with each line's fate
/// given by `line(n, i, lines)`.
struct Batches {
    inputs: Mutex<Vec<Vec<String>>>,
    status: fn(usize) -> &'static str,
    line: fn(usize, usize, usize) -> Line,
}

impl Batches {
    fn new(status: fn(usize) -> &'static str, line: fn(usize, usize, usize) -> Line) -> Arc<Self> {
        Arc::new(Batches {
            inputs: Mutex::new(Vec::new()),
            status,
            line,
        })
    }

    fn lines(&self, n: usize, want: Line) -> Vec<String> {
        let inputs = self.inputs.lock().unwrap();
        let ids = &inputs[n - 1];
        ids.iter()
            .enumerate()
            .filter(|(i, _)| (self.line)(n, *i, ids.len()) == want)
            .map(|(_, id)| id.clone())
            .collect()
    }
}

fn recorded_line(name: &str) -> Value {
    let text = exchange(name).response.body_text.unwrap();
    serde_json::from_str(text.lines().next().unwrap()).unwrap()
}

fn number(path: &str, prefix: &str) -> usize {
    path.rsplit(prefix)
        .next()
        .and_then(|s| s.split('/').next())
        .and_then(|s| s.parse().ok())
        .unwrap()
}

struct Upload(Arc<Batches>);
impl Respond for Upload {
    fn respond(&self, r: &Request) -> ResponseTemplate {
        let body = String::from_utf8_lossy(&r.body);
        let ids: Vec<String> = body
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
            .filter_map(|v| v["custom_id"].as_str().map(str::to_owned))
            .collect();
        self.0.inputs.lock().unwrap().push(ids);
        exchange("files_upload_batch").template()
    }
}

struct Create(Arc<Batches>);
impl Respond for Create {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let n = self.0.inputs.lock().unwrap().len();
        let mut body = exchange("batch_create").response.body.unwrap();
        body["id"] = json!(format!("batch-{n}"));
        ResponseTemplate::new(200).set_body_json(body)
    }
}

struct Get(Arc<Batches>);
impl Respond for Get {
    fn respond(&self, r: &Request) -> ResponseTemplate {
        let n = number(r.url.path(), "batch-");
        let status = (self.0.status)(n);
        let fixture = match status {
            "expired" => "batch_get_expired",
            "failed" => "batch_get_failed",
            _ => "batch_get_completed",
        };
        let mut body = exchange(fixture).response.body.unwrap();
        body["id"] = json!(format!("batch-{n}"));
        if status != "failed" {
            let done = self.0.lines(n, Line::Answered).len();
            let failed = self.0.lines(n, Line::Failed).len();
            body["output_file_id"] = json!(format!("file-out-{n}"));
            // The live API's "no file": an empty string.
            body["error_file_id"] = json!(if failed > 0 {
                format!("file-err-{n}")
            } else {
                String::new()
            });
            body["request_counts"] = json!({"total": self.0.inputs.lock().unwrap()[n - 1].len(),
                "completed": done, "failed": failed});
        }
        ResponseTemplate::new(200).set_body_json(body)
    }
}

struct Content(Arc<Batches>);
impl Respond for Content {
    fn respond(&self, r: &Request) -> ResponseTemplate {
        let p = r.url.path();
        let (want, template) = if p.contains("file-out-") {
            (Line::Answered, recorded_line("batch_output_content"))
        } else {
            (Line::Failed, recorded_line("batch_error_content"))
        };
        let n = number(
            p,
            if want == Line::Answered {
                "file-out-"
            } else {
                "file-err-"
            },
        );
        let mut text = String::new();
        for id in self.0.lines(n, want) {
            let mut line = template.clone();
            line["custom_id"] = json!(id);
            if want == Line::Failed {
                // A server error on that line: worth running again.
                line["response"]["status_code"] = json!(500);
                line["response"]["body"] = exchange("error_500").response.body.unwrap();
            }
            text.push_str(&line.to_string());
            text.push('\n');
        }
        ResponseTemplate::new(200).set_body_raw(text, "application/octet-stream")
    }
}

async fn batch_server(b: &Arc<Batches>) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/files"))
        .respond_with(Upload(b.clone()))
        .mount(&server)
        .await;
    // Before each upload the client looks for one a lost answer already made (retry's
    // lookup before a resend); this server lists none, so every submission uploads.
    Mock::given(method("GET"))
        .and(path("/v1/files"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"object": "list", "data": []})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/batches"))
        .respond_with(Create(b.clone()))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/v1/batches/batch-\d+$"))
        .respond_with(Get(b.clone()))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/v1/files/file-(out|err)-\d+/content$"))
        .respond_with(Content(b.clone()))
        .mount(&server)
        .await;
    // An empty file id must never be fetched.
    Mock::given(method("GET"))
        .and(path_regex(r"^/v1/files//"))
        .respond_with(ResponseTemplate::new(404))
        .expect(0)
        .mount(&server)
        .await;
    server
}

/// A batch server for `b` and the English-Yoruba experiment in a fresh directory.
async fn batch_study(b: &Arc<Batches>) -> (MockServer, tempfile::TempDir, Experiment) {
    let server = batch_server(b).await;
    let dir = tempfile::tempdir().unwrap();
    let exp = experiment(dir.path());
    (server, dir, exp)
}

/// Evaluates the base model through the batch API of `server`, up to `rounds` batches,
/// with the response cache under `exp`'s directory.
async fn evaluate_base_in_batches(
    exp: &Experiment,
    server: &MockServer,
    rounds: u32,
) -> Result<(), StudyError> {
    evaluate_batch(
        exp,
        &base_only(),
        &client_for(server),
        &ResponseCache::new(exp.dir.join("cache")),
        &Grader::regex(),
        &EvalOptions::default(),
        &quick_batches(rounds),
        &no_progress,
    )
    .await
}

fn outcome_lines(exp: &Experiment, label: &str) -> Vec<Value> {
    std::fs::read_to_string(exp.dir.join("outcomes").join(format!("{label}.jsonl")))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn pending_batches(exp: &Experiment) -> Value {
    let text = std::fs::read_to_string(exp.dir.join("batches.json")).unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["batches"].clone()
}

#[tokio::test]
async fn an_expired_batch_keeps_its_answers_and_resubmits_only_the_rest() {
    let b = Batches::new(
        // The first batch expires with half its lines done; the second completes.
        |n| if n == 1 { "expired" } else { "completed" },
        |n, i, len| {
            if n == 1 && i >= len / 2 {
                Line::NeverRan
            } else {
                Line::Answered
            }
        },
    );
    let (server, _dir, exp) = batch_study(&b).await;
    evaluate_base_in_batches(&exp, &server, 3).await.unwrap();
    let inputs = b.inputs.lock().unwrap().clone();
    assert_eq!(inputs.len(), 2, "one resubmission");
    assert_eq!((inputs[0].len(), inputs[1].len()), (22, 11));
    // Only the lines that never ran went out again: each request was answered once.
    let first: BTreeSet<&String> = inputs[0][..11].iter().collect();
    assert!(inputs[1].iter().all(|id| !first.contains(id)));
    assert_eq!(outcome_lines(&exp, "base").len(), 22);
    assert_eq!(pending_batches(&exp), json!({}));
}

#[tokio::test]
async fn failed_lines_are_resubmitted_on_a_rerun_and_nothing_is_paid_twice() {
    let b = Batches::new(
        |_| "completed",
        // The first batch completes with half its lines failed (`request_counts.failed`
        // > 0, the lines in the error file); the second answers the rest.
        |n, i, _| {
            if n == 1 && i % 2 == 1 {
                Line::Failed
            } else {
                Line::Answered
            }
        },
    );
    let (server, dir, exp) = batch_study(&b).await;
    // One batch per run: the first run ends with the failed lines reported ...
    match evaluate_base_in_batches(&exp, &server, 1)
        .await
        .unwrap_err()
    {
        StudyError::Requests { failed, first, .. } => {
            assert_eq!(failed, 11);
            assert!(first.to_string().contains("500"), "{first}");
        }
        e => panic!("{e}"),
    }
    // ... the answered ones cached, and the batch id cleared, so a rerun does not re-read
    // the same batch for ever.
    assert_eq!(pending_batches(&exp), json!({}));
    evaluate_base_in_batches(&exp, &server, 1).await.unwrap();
    let inputs = b.inputs.lock().unwrap().clone();
    assert_eq!((inputs.len(), inputs[1].len()), (2, 11));
    let failed_first: Vec<&String> = inputs[0].iter().skip(1).step_by(2).collect();
    assert_eq!(inputs[1].iter().collect::<Vec<_>>(), failed_first);
    assert_eq!(outcome_lines(&exp, "base").len(), 22);
    // The batch answers are in the cache the chat mode reads: a chat run asks nothing.
    let chat_server = MockServer::start().await;
    let cached = xlt_provider::Cached::new(client_for(&chat_server), dir.path().join("cache"));
    std::fs::remove_file(exp.dir.join("outcomes/base.jsonl")).unwrap();
    evaluate(
        &exp,
        &base_only(),
        Arc::new(cached),
        &Grader::regex(),
        &EvalOptions::default(),
        None,
        &no_progress,
    )
    .await
    .unwrap();
    assert!(chat_server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_batch_that_failed_as_a_whole_shows_the_apis_reason() {
    let b = Batches::new(|_| "failed", |_, _, _| Line::NeverRan);
    let (server, _dir, exp) = batch_study(&b).await;
    let e = evaluate_base_in_batches(&exp, &server, 3)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("This line is not parseable as valid JSON. (invalid_json_line, line 2)"),
        "{e}"
    );
    assert_eq!(b.inputs.lock().unwrap().len(), 1, "not resubmitted blindly");
    assert_eq!(pending_batches(&exp), json!({}));
}

#[tokio::test]
async fn a_model_that_does_not_exist_stops_at_the_first_answer_and_truncation_is_kept() {
    let server = MockServer::start().await;
    // The base model answers, every answer cut off by max_tokens.
    let x = exchange("chat_completion_length");
    x.mock()
        .and(body_partial_json(json!({"model": BASE})))
        .respond_with(x.template())
        .expect(22)
        .mount(&server)
        .await;
    // The fine-tuned model was deleted: one request, not 22.
    let x = exchange("error_404_model_not_found");
    x.mock()
        .and(body_partial_json(json!({"model": "ft:gone"})))
        .respond_with(x.template())
        .expect(1)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let exp = experiment(dir.path());
    let mut models = base_only();
    models.fine_tuned.insert(
        "en-medical".into(),
        TunedModel {
            job_id: "ftjob-abc123".into(),
            model: "ft:gone".into(),
        },
    );
    let chat: Arc<dyn ChatModel> = Arc::new(client_for(&server));
    let e = evaluate(
        &exp,
        &models,
        chat,
        &Grader::regex(),
        &EvalOptions {
            concurrency: 1,
            ..EvalOptions::default()
        },
        None,
        &no_progress,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, StudyError::ModelNotFound { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("ft:gone") && text.contains("ftjob-abc123"),
        "{text}"
    );
    assert!(
        text.contains("remove `en-medical` from models.json"),
        "{text}"
    );
    // Truncation is data: every outcome line says why generation stopped.
    let base = outcome_lines(&exp, "base");
    assert_eq!(base.len(), 22);
    assert!(base.iter().all(|o| o["finish_reason"] == "length"));
}

#[tokio::test]
async fn endpoints_a_killed_run_left_are_found_and_stopped() {
    use xlt_together::testing::{client_for, exchange, mount};
    const OURS: &str = "xlt-user/Qwen2.5-7B-Instruct-en-medical-789abcdef0-a1b2c3d4";
    let server = MockServer::start().await;
    let x = exchange("endpoints_list_mine");
    x.mock()
        .and(query_param("mine", "true"))
        .respond_with(x.template())
        .expect(1)
        .mount(&server)
        .await;
    // Ours is stopped; the other endpoint of the account is left alone.
    mount(&server, "endpoint_stop", 1).await;
    Mock::given(method("PATCH"))
        .and(path(
            "/v1/endpoints/endpoint-0000aaaa-1111-2222-3333-444455556666",
        ))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let exp = experiment(dir.path());
    // The run was killed while `POST /endpoints` was in flight: the intent is recorded,
    // the endpoint's id never was.
    let name = xlt_study::endpoint_name(&exp, "en-medical");
    std::fs::write(
        exp.dir.join("endpoints.json"),
        json!({"intents": [{"name": name, "model": OURS}], "started": []}).to_string(),
    )
    .unwrap();
    let n = stop_started_endpoints(&exp, &client_for(&server))
        .await
        .unwrap();
    assert_eq!(n, 1);
    // Nothing left to stop: the next call asks nothing.
    assert_eq!(
        stop_started_endpoints(&exp, &client_for(&server))
            .await
            .unwrap(),
        0
    );
}
