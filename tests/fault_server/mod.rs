//! A fault-injecting OpenAI- and Together-compatible server on loopback, for the fault
//! suite (`tests/faults.rs`).
//!
//! It serves the whole lifecycle a study uses, with state: files (upload, list, content),
//! fine-tuning jobs (create with metadata or suffix, list, get, events; a job succeeds after
//! a set number of polls), chat completions, batches (OpenAI) and dedicated endpoints
//! (Together: create, list, get, stop). Everything it returns is a pure function of what was
//! sent (file ids of the content, job ids of the spec, answers of model and prompt), so a
//! run through faults must end with the same files as a run without.
//!
//! On a share `rate` of requests, drawn by a seeded generator, it injects one fault, each
//! kind equally likely: HTTP 500, 503 (both before acting), 429 with `Retry-After` (before
//! acting), and, *after* acting (so that a resend of a write would duplicate it), 504 after
//! a stall, a 2xx JSON body cut off mid-object, a reset connection, and no answer until the
//! client times out. It counts what it did, so tests can check that no write was repeated.
//!
//! It is a plain HTTP/1.1 server over tokio (one request per connection, `Connection:
//! close`), not wiremock, because wiremock cannot reset a connection or cut a body.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the server behaves.
#[derive(Debug, Clone)]
pub struct FaultConfig {
    /// Share of requests that get a fault, 0 to 1.
    pub rate: f64,
    /// Seed of the fault draws.
    pub seed: u64,
    /// How long a 504 stalls before it answers.
    pub stall: Duration,
    /// How long a "timeout" fault holds the connection (longer than the client's timeout).
    pub hang: Duration,
    /// The `Retry-After` of an injected 429, in seconds.
    pub retry_after: f64,
    /// Polls of a fine-tuning job (or endpoint, or batch) before it is done.
    pub polls_to_finish: u32,
    /// Whether the first send of every write that creates something (upload, job, batch,
    /// endpoint) is answered with a fault after the server acted (the after-acting kinds
    /// taking turns), so that every lookup-before-resend path is exercised.
    pub fault_first_writes: bool,
    /// After this many chat completions, every chat request is refused with
    /// `insufficient_quota`.
    pub quota_after_chats: Option<u64>,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            rate: 0.0,
            seed: 1,
            stall: Duration::from_millis(200),
            hang: Duration::from_millis(3000),
            retry_after: 0.2,
            polls_to_finish: 2,
            fault_first_writes: false,
            quota_after_chats: None,
        }
    }
}

/// The injected fault kinds.
pub const FAULTS: [&str; 7] = [
    "http_500",
    "http_503",
    "http_429",
    "http_504_after_stall",
    "truncated_body",
    "connection_reset",
    "timeout",
];

/// What the server saw and did.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Every request received.
    pub requests: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Uploads acted on, by file name.
    pub uploads: BTreeMap<String, u64>,
    /// Fine-tuning jobs created, by job id (the same spec gives the same id).
    pub job_creations: BTreeMap<String, u64>,
    /// Batches created, by input file.
    pub batch_creations: BTreeMap<String, u64>,
    /// Endpoints started, by model.
    pub endpoint_starts: BTreeMap<String, u64>,
    /// Endpoints stopped, by endpoint id.
    pub endpoint_stops: BTreeMap<String, u64>,
    /// Chat completions answered (acted on), by a hash of model and messages.
    pub chats: BTreeMap<String, u64>,
    /// Chat requests refused for quota.
    pub quota_refusals: u64,
}

impl Stats {
    /// The counts without the per-request detail, for messages.
    pub fn summary(&self) -> String {
        format!(
            "{} requests, faults {:?}, uploads {:?}, jobs {:?}, batches {:?}, endpoint starts {:?}, stops {:?}, {} chats ({} repeated), {} quota refusals",
            self.requests,
            self.faults,
            self.uploads,
            self.job_creations,
            self.batch_creations,
            self.endpoint_starts,
            self.endpoint_stops,
            self.chats.len(),
            self.repeated_chats(),
            self.quota_refusals
        )
    }

    /// Chat completions answered more than once for the same request.
    pub fn repeated_chats(&self) -> u64 {
        self.chats.values().map(|n| n - 1).sum()
    }
}

#[derive(Default)]
struct State {
    stats: Stats,
    rng: u64,
    files: BTreeMap<String, (String, String, String)>, // id -> (filename, purpose, content)
    jobs: BTreeMap<String, (Value, u32)>,              // id -> (job object, polls)
    batches: BTreeMap<String, (Value, u32)>,
    endpoints: BTreeMap<String, (Value, u32)>,
    faulted_writes: std::collections::BTreeSet<String>,
}

/// A running server; it stops with the test process.
pub struct FaultServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl FaultServer {
    /// Starts a server on 127.0.0.1 on its own thread.
    pub fn start(config: FaultConfig) -> FaultServer {
        let state = Arc::new(Mutex::new(State {
            rng: config.seed,
            ..State::default()
        }));
        let (tx, rx) = std::sync::mpsc::channel();
        let st = state.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let config = Arc::new(config);
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let (st, config) = (st.clone(), config.clone());
                    tokio::spawn(async move {
                        let _ = serve(stream, &st, &config).await;
                    });
                }
            });
        });
        FaultServer {
            addr: rx.recv().unwrap(),
            state,
        }
    }

    /// The API root, `http://127.0.0.1:<port>/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// A copy of the counts so far.
    pub fn stats(&self) -> Stats {
        self.state.lock().unwrap().stats.clone()
    }

    /// Endpoints whose last state is not stopped.
    pub fn running_endpoints(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .endpoints
            .iter()
            .filter(|(_, (e, _))| e["state"] != "STOPPED")
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// SplitMix64: the server's fault draws, and the tests' kill points.
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn hash(s: &str) -> String {
    xlt::provider::bytes_hash(s.as_bytes())
}

struct Request {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    content_type: String,
    body: Vec<u8>,
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn read_request(stream: &mut TcpStream) -> std::io::Result<Option<Request>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut rest = buf[head_end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_owned();
    let target = first.next().unwrap_or_default().to_owned();
    let mut headers = BTreeMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let body = if let Some(len) = headers.get("content-length") {
        let len: usize = len.parse().unwrap_or(0);
        while rest.len() < len {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            rest.extend_from_slice(&chunk[..n]);
        }
        rest.truncate(len);
        rest
    } else if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.contains("chunked"))
    {
        // Read to the terminating chunk, then decode.
        while !rest.windows(5).any(|w| w == b"0\r\n\r\n") {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            rest.extend_from_slice(&chunk[..n]);
        }
        let mut body = Vec::new();
        let mut i = 0;
        while let Some(j) = rest[i..].windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&rest[i..i + j])
                    .split(';')
                    .next()
                    .unwrap()
                    .trim(),
                16,
            )
            .unwrap_or(0);
            if size == 0 {
                break;
            }
            let start = i + j + 2;
            body.extend_from_slice(&rest[start..(start + size).min(rest.len())]);
            i = start + size + 2;
            if i >= rest.len() {
                break;
            }
        }
        body
    } else {
        Vec::new()
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), q.to_owned()),
        None => (target.clone(), String::new()),
    };
    let query = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    Ok(Some(Request {
        method,
        path,
        query,
        content_type: headers.get("content-type").cloned().unwrap_or_default(),
        body,
    }))
}

/// The fields of a multipart form: name to (file name, content).
fn multipart(content_type: &str, body: &[u8]) -> BTreeMap<String, (Option<String>, String)> {
    let mut out = BTreeMap::new();
    let Some(boundary) = content_type.split("boundary=").nth(1) else {
        return out;
    };
    let boundary = boundary.trim_matches('"');
    let text = String::from_utf8_lossy(body);
    for part in text.split(&format!("--{boundary}")) {
        let Some((head, content)) = part.split_once("\r\n\r\n") else {
            continue;
        };
        let content = content.strip_suffix("\r\n").unwrap_or(content);
        let attr = |name: &str| {
            head.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .map(str::to_owned)
        };
        if let Some(name) = attr(" name").or_else(|| attr(";name")) {
            out.insert(name, (attr("filename"), content.to_owned()));
        }
    }
    out
}

fn error_body(message: &str, kind: &str, code: &str) -> String {
    json!({"error": {"message": message, "type": kind, "code": code}}).to_string()
}

async fn respond(stream: &mut TcpStream, status: u16, headers: &[(&str, String)], body: &str) {
    let mut head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.flush().await;
    let _ = stream.shutdown().await;
}

async fn serve(
    mut stream: TcpStream,
    state: &Mutex<State>,
    config: &FaultConfig,
) -> std::io::Result<()> {
    let Some(req) = read_request(&mut stream).await? else {
        return Ok(());
    };
    let fault = {
        let mut st = state.lock().unwrap();
        st.stats.requests += 1;
        let draw = splitmix(&mut st.rng);
        let f = ((draw >> 11) as f64 / (1u64 << 53) as f64) < config.rate;
        // The kinds take turns, so that even a short run meets every one.
        let n: u64 = st.stats.faults.values().sum();
        let fault = f.then(|| FAULTS[(n % FAULTS.len() as u64) as usize]);
        if let Some(k) = fault {
            *st.stats.faults.entry(k).or_default() += 1;
        }
        fault
    };
    // Faults before acting.
    match fault {
        Some("http_500") | Some("http_503") => {
            let status = if fault == Some("http_500") { 500 } else { 503 };
            let body = error_body("injected server error", "server_error", "server_error");
            respond(&mut stream, status, &[], &body).await;
            return Ok(());
        }
        Some("http_429") => {
            let body = error_body(
                "Rate limit reached (injected)",
                "requests",
                "rate_limit_exceeded",
            );
            let h = [("retry-after", config.retry_after.to_string())];
            respond(&mut stream, 429, &h, &body).await;
            return Ok(());
        }
        _ => {}
    }
    let (status, body, fault) = {
        let mut st = state.lock().unwrap();
        let (status, body) = route(&mut st, config, &req);
        let creates = req.method == "POST"
            && matches!(
                req.path.trim_start_matches("/v1/"),
                "files"
                    | "files/upload"
                    | "fine_tuning/jobs"
                    | "fine-tunes"
                    | "batches"
                    | "endpoints"
            );
        // A multipart body has a fresh boundary each send: key uploads by file name.
        let identity = match multipart(&req.content_type, &req.body).get("file") {
            Some((Some(name), _)) => name.clone(),
            _ => hash(&String::from_utf8_lossy(&req.body)),
        };
        let key = format!("{} {identity}", req.path);
        let fault = match fault {
            None if config.fault_first_writes && creates && st.faulted_writes.insert(key) => {
                const AFTER: [&str; 4] = [
                    "http_504_after_stall",
                    "truncated_body",
                    "connection_reset",
                    "timeout",
                ];
                let k = AFTER[st.faulted_writes.len() % AFTER.len()];
                *st.stats.faults.entry(k).or_default() += 1;
                Some(k)
            }
            f => f,
        };
        (status, body, fault)
    };
    // Faults after acting.
    match fault {
        Some("http_504_after_stall") => {
            tokio::time::sleep(config.stall).await;
            let body = error_body("gateway timeout (injected)", "server_error", "timeout");
            respond(&mut stream, 504, &[], &body).await;
        }
        Some("truncated_body") if (200..300).contains(&status) => {
            let cut = &body[..body.len() / 2];
            // Sent with its true length: a 2xx whose JSON stops mid-object.
            respond(&mut stream, status, &[], cut).await;
        }
        Some("connection_reset") => {
            let _ = stream.set_zero_linger();
            drop(stream);
        }
        Some("timeout") => {
            tokio::time::sleep(config.hang).await;
            let _ = stream.set_zero_linger();
            drop(stream);
        }
        _ => respond(&mut stream, status, &[], &body).await,
    }
    Ok(())
}

fn not_found(what: &str) -> (u16, String) {
    (
        404,
        error_body(
            &format!("no such {what}"),
            "invalid_request_error",
            "not_found",
        ),
    )
}

fn file_object(id: &str, filename: &str, purpose: &str, content: &str) -> Value {
    json!({"id": id, "object": "file", "bytes": content.len(), "filename": filename,
           "purpose": purpose, "created_at": 1_700_000_000, "status": "processed"})
}

fn chat_completion(model: &str, messages: &Value) -> (String, Value) {
    let key = hash(&format!("{model}\u{0}{messages}"));
    let letter = ["A", "B", "C", "D"][usize::from_str_radix(&key[..2], 16).unwrap() % 4];
    let body = json!({
        "id": format!("chatcmpl-{}", &key[..12]), "object": "chat.completion",
        "created": 1_700_000_000, "model": model,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": format!("The answer is {letter}.")}}],
        "usage": {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55}
    });
    (key, body)
}

fn route(st: &mut State, config: &FaultConfig, req: &Request) -> (u16, String) {
    let json_body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let segs: Vec<&str> = req.path.trim_start_matches("/v1/").split('/').collect();
    let ok = |v: Value| (200, v.to_string());
    match (req.method.as_str(), segs.as_slice()) {
        // Files: OpenAI `/files`, Together `/files/upload`.
        ("POST", ["files"]) | ("POST", ["files", "upload"]) => {
            let form = multipart(&req.content_type, &req.body);
            let Some((Some(filename), content)) = form.get("file").cloned() else {
                return (400, error_body("no file", "invalid_request_error", "bad"));
            };
            let purpose = form.get("purpose").map(|p| p.1.clone()).unwrap_or_default();
            let id = format!("file-{}", &hash(&format!("{filename}\u{0}{content}"))[..24]);
            *st.stats.uploads.entry(filename.clone()).or_default() += 1;
            let obj = file_object(&id, &filename, &purpose, &content);
            st.files.insert(id, (filename, purpose, content));
            ok(obj)
        }
        ("GET", ["files"]) => {
            let purpose = req.query.get("purpose");
            let data: Vec<Value> = st
                .files
                .iter()
                .filter(|(_, (_, p, _))| purpose.is_none_or(|q| q == p))
                .map(|(id, (f, p, c))| file_object(id, f, p, c))
                .collect();
            ok(json!({"object": "list", "data": data}))
        }
        ("GET", ["files", id, "content"]) => match st.files.get(*id) {
            Some((_, _, c)) => (200, c.clone()),
            None => not_found("file"),
        },
        // OpenAI fine-tuning.
        ("POST", ["fine_tuning", "jobs"]) => {
            let b = &json_body;
            let id = format!(
                "ftjob-{}",
                &hash(&format!(
                    "{}\u{0}{}\u{0}{}\u{0}{}",
                    b["model"], b["training_file"], b["suffix"], b["seed"]
                ))[..16]
            );
            *st.stats.job_creations.entry(id.clone()).or_default() += 1;
            let job = json!({
                "id": id, "object": "fine_tuning.job", "model": b["model"],
                "status": "validating_files", "fine_tuned_model": null,
                "training_file": b["training_file"], "metadata": b["metadata"],
                "suffix": b["suffix"], "seed": b["seed"], "trained_tokens": null,
                "created_at": 1_700_000_000,
            });
            st.jobs.entry(id).or_insert((job.clone(), 0));
            ok(job)
        }
        ("GET", ["fine_tuning", "jobs"]) => {
            let wanted = req.query.get("metadata[xlt_ref]");
            let data: Vec<Value> = st
                .jobs
                .values()
                .filter(|(j, _)| wanted.is_none_or(|w| j["metadata"]["xlt_ref"] == **w))
                .map(|(j, _)| j.clone())
                .collect();
            ok(json!({"object": "list", "data": data, "has_more": false}))
        }
        ("GET", ["fine_tuning", "jobs", id]) => {
            let Some((job, polls)) = st.jobs.get_mut(*id) else {
                return not_found("job");
            };
            *polls += 1;
            if *polls >= config.polls_to_finish {
                let model = format!(
                    "ft:{}:{}:{}",
                    job["model"].as_str().unwrap_or_default(),
                    job["suffix"].as_str().unwrap_or_default(),
                    &id[6..14]
                );
                job["status"] = json!("succeeded");
                job["fine_tuned_model"] = json!(model);
                job["trained_tokens"] = json!(1000);
            } else {
                job["status"] = json!("running");
            }
            ok(job.clone())
        }
        ("GET", ["fine_tuning", "jobs", _, "events"]) | ("GET", ["fine-tunes", _, "events"]) => {
            ok(json!({"object": "list", "data": []}))
        }
        // Together fine-tuning.
        ("POST", ["fine-tunes", "estimate-price"]) => ok(json!({
            "estimated_total_price": 0.5, "allowed_to_proceed": true,
            "estimated_train_token_count": 1000.0, "user_limit": 100.0
        })),
        ("POST", ["fine-tunes"]) => {
            let b = &json_body;
            let id = format!(
                "ft-{}",
                &hash(&format!(
                    "{}\u{0}{}\u{0}{}\u{0}{}",
                    b["model"], b["training_file"], b["suffix"], b["random_seed"]
                ))[..16]
            );
            *st.stats.job_creations.entry(id.clone()).or_default() += 1;
            let short = b["model"]
                .as_str()
                .unwrap_or_default()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            let job = json!({
                "id": id, "status": "pending", "model": b["model"],
                "suffix": b["suffix"], "training_file": b["training_file"],
                "model_output_name": format!("xlt-user/{short}-{}-{}",
                    b["suffix"].as_str().unwrap_or_default(), &id[3..11]),
            });
            st.jobs.entry(id).or_insert((job.clone(), 0));
            ok(job)
        }
        ("GET", ["fine-tunes"]) => {
            let data: Vec<Value> = st.jobs.values().map(|(j, _)| j.clone()).collect();
            ok(json!({"data": data}))
        }
        ("GET", ["fine-tunes", id]) => {
            let Some((job, polls)) = st.jobs.get_mut(*id) else {
                return not_found("job");
            };
            *polls += 1;
            job["status"] = json!(if *polls >= config.polls_to_finish {
                "completed"
            } else {
                "running"
            });
            ok(job.clone())
        }
        // Chat, for both.
        ("POST", ["chat", "completions"]) => {
            if let Some(limit) = config.quota_after_chats {
                let answered: u64 = st.stats.chats.values().sum();
                if answered >= limit {
                    st.stats.quota_refusals += 1;
                    return (
                        429,
                        error_body(
                            "You exceeded your current quota, please check your plan and billing details.",
                            "insufficient_quota",
                            "insufficient_quota",
                        ),
                    );
                }
            }
            let model = json_body["model"].as_str().unwrap_or_default();
            let (key, body) = chat_completion(model, &json_body["messages"]);
            *st.stats.chats.entry(key).or_default() += 1;
            ok(body)
        }
        // OpenAI batches.
        ("POST", ["batches"]) => {
            let input = json_body["input_file_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let Some((_, _, content)) = st.files.get(&input).cloned() else {
                return not_found("input file");
            };
            let id = format!("batch_{}", &hash(&input)[..16]);
            *st.stats.batch_creations.entry(input.clone()).or_default() += 1;
            let n = content.lines().filter(|l| !l.trim().is_empty()).count();
            let batch = json!({"id": id, "object": "batch", "status": "validating",
                "input_file_id": input, "endpoint": "/v1/chat/completions",
                "request_counts": {"total": n, "completed": 0, "failed": 0}});
            st.batches.entry(id).or_insert((batch.clone(), 0));
            ok(batch)
        }
        ("GET", ["batches"]) => {
            let data: Vec<Value> = st.batches.values().map(|(b, _)| b.clone()).collect();
            ok(json!({"object": "list", "data": data, "has_more": false}))
        }
        ("GET", ["batches", id]) => {
            let Some((batch, polls)) = st.batches.get(*id).cloned() else {
                return not_found("batch");
            };
            let polls = polls + 1;
            let mut batch = batch;
            if polls >= config.polls_to_finish && batch["status"] != "completed" {
                // Answer every line now; the answers are a function of the request.
                let input = batch["input_file_id"].as_str().unwrap_or_default();
                let content = st.files.get(input).map(|f| f.2.clone()).unwrap_or_default();
                let mut out = String::new();
                let mut n = 0;
                for line in content.lines().filter(|l| !l.trim().is_empty()) {
                    let l: Value = serde_json::from_str(line).unwrap_or(Value::Null);
                    let model = l["body"]["model"].as_str().unwrap_or_default();
                    let (key, body) = chat_completion(model, &l["body"]["messages"]);
                    *st.stats.chats.entry(key).or_default() += 1;
                    out.push_str(
                        &json!({"id": format!("batch_req_{n}"), "custom_id": l["custom_id"],
                            "response": {"status_code": 200, "request_id": "r", "body": body},
                            "error": null})
                        .to_string(),
                    );
                    out.push('\n');
                    n += 1;
                }
                let out_id = format!("file-out-{}", &id[6..]);
                st.files.insert(
                    out_id.clone(),
                    ("batch_output.jsonl".into(), "batch_output".into(), out),
                );
                batch["status"] = json!("completed");
                batch["output_file_id"] = json!(out_id);
                batch["request_counts"] = json!({"total": n, "completed": n, "failed": 0});
            } else if batch["status"] != "completed" {
                batch["status"] = json!("in_progress");
            }
            st.batches.insert((*id).to_owned(), (batch.clone(), polls));
            ok(batch)
        }
        // Together's serverless models (the plan asks whether the base model is one).
        ("GET", ["models"]) => ok(json!([
            {"id": "Qwen/Qwen2.5-7B-Instruct", "object": "model", "type": "chat"}
        ])),
        // Together dedicated endpoints.
        ("POST", ["endpoints"]) => {
            let model = json_body["model"].as_str().unwrap_or_default().to_owned();
            let id = format!("endpoint-{}", &hash(&model)[..12]);
            *st.stats.endpoint_starts.entry(model.clone()).or_default() += 1;
            let e = json!({"object": "endpoint", "id": id, "name": format!("{model}-ep"),
                "model": model, "type": "dedicated", "state": "PENDING",
                "display_name": json_body["display_name"]});
            st.endpoints.insert(id, (e.clone(), 0));
            ok(e)
        }
        ("GET", ["endpoints"]) => {
            let data: Vec<Value> = st.endpoints.values().map(|(e, _)| e.clone()).collect();
            ok(json!({"object": "list", "data": data}))
        }
        ("GET", ["endpoints", id]) => {
            let Some((e, polls)) = st.endpoints.get_mut(*id) else {
                return not_found("endpoint");
            };
            *polls += 1;
            if e["state"] != "STOPPED" {
                e["state"] = json!(if *polls >= config.polls_to_finish {
                    "STARTED"
                } else {
                    "STARTING"
                });
            }
            ok(e.clone())
        }
        ("PATCH", ["endpoints", id]) => {
            let Some((e, _)) = st.endpoints.get_mut(*id) else {
                return not_found("endpoint");
            };
            e["state"] = json!("STOPPED");
            let e = e.clone();
            *st.stats.endpoint_stops.entry((*id).to_owned()).or_default() += 1;
            ok(e)
        }
        _ => not_found(&format!("route {} {}", req.method, req.path)),
    }
}
