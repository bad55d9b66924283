//! The HTTP client and the three provider traits over it.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use xlt_provider::{
    Batch, BatchResult, BatchRunner, BatchStatus, Capabilities, ChatModel, ChatRequest,
    ChatResponse, FilePurpose, FineTuneJob, FineTuneSpec, FineTuner, JobEvent, JobStatus,
    LearningRate, Param, ProviderError, RateLimitInfo, Role, TokenLogprob, UploadedFile, Usage,
};

use crate::config::{LogprobsDialect, OpenAiConfig};
use crate::wire;

/// The longest body kept in a decode error.
const MAX_RAW_BODY: usize = 4096;

/// An OpenAI (or OpenAI-compatible) backend: [`ChatModel`], [`FineTuner`] and
/// [`BatchRunner`] over HTTP.
#[derive(Debug, Clone)]
pub struct OpenAiClient {
    http: reqwest::Client,
    config: OpenAiConfig,
}

pub(crate) enum Body {
    Empty,
    Json(Value),
    Multipart(reqwest::multipart::Form),
}

impl OpenAiClient {
    /// A client for `config`.
    ///
    /// # Errors
    /// [`ProviderError::InvalidRequest`] if the HTTP client cannot be built (a bad TLS setup).
    pub fn new(config: OpenAiConfig) -> Result<OpenAiClient, ProviderError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .build()
            .map_err(|e| ProviderError::InvalidRequest(format!("cannot build HTTP client: {e}")))?;
        Ok(OpenAiClient { http, config })
    }

    /// A client configured from the environment (see [`OpenAiConfig::from_env`]).
    ///
    /// # Errors
    /// As [`OpenAiConfig::from_env`] and [`OpenAiClient::new`].
    pub fn from_env() -> Result<OpenAiClient, ProviderError> {
        OpenAiClient::new(OpenAiConfig::from_env()?)
    }

    /// The configuration (its `Debug` redacts the key).
    pub fn config(&self) -> &OpenAiConfig {
        &self.config
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.base_url)
    }

    fn describe(&self, method: &Method, path: &str) -> String {
        let url = self.url(path);
        let p = reqwest::Url::parse(&url)
            .map(|u| u.path().to_owned())
            .unwrap_or(url);
        format!("{method} {p}")
    }

    /// `POST http://host:port/v1/files`: the method and the URL without credentials or
    /// query, for transport errors, where the host is what the user needs to see.
    fn url_for_errors(&self, method: &Method, path: &str) -> String {
        let url = self.url(path);
        let shown = match reqwest::Url::parse(&url) {
            Ok(mut u) => {
                let _ = u.set_username("");
                let _ = u.set_password(None);
                u.set_query(None);
                u.set_fragment(None);
                u.to_string()
            }
            Err(_) => url.split('?').next().unwrap_or_default().to_owned(),
        };
        format!("{method} {shown}")
    }

    /// Sends one request; returns the response headers and body of a 2xx, or the error.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Body,
    ) -> Result<(HeaderMap, String), ProviderError> {
        let request = self.describe(&method, path);
        let method_copy = method.clone();
        let mut rb = self.http.request(method, self.url(path));
        // A server of our own (vLLM) may take no key: then no `Authorization` header.
        if !self.config.api_key().is_empty() {
            rb = rb.bearer_auth(self.config.api_key().expose());
        }
        if let Some(org) = &self.config.organization {
            rb = rb.header("OpenAI-Organization", org);
        }
        if let Some(project) = &self.config.project {
            rb = rb.header("OpenAI-Project", project);
        }
        rb = match body {
            Body::Empty => rb,
            Body::Json(v) => rb.json(&v),
            Body::Multipart(form) => rb.multipart(form),
        };
        tracing::debug!(%request, "sending");
        let url = self.url_for_errors(&method_copy, path);
        let response = rb
            .send()
            .await
            .map_err(|e| transport_error(&url, e, self.config.timeout))?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response
            .text()
            .await
            .map_err(|e| transport_error(&url, e, self.config.timeout))?;
        tracing::debug!(%request, status = status.as_u16(), "received");
        if status.is_success() {
            Ok((headers, text))
        } else {
            Err(status_error(&request, status, &headers, &text))
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Body,
    ) -> Result<(HeaderMap, T), ProviderError> {
        let request = self.describe(&method, path);
        let (headers, text) = self.send(method, path, body).await?;
        let value = decode(&request, &text)?;
        Ok((headers, value))
    }

    /// Sends a JSON request (or none) to `path` under the base URL and decodes the JSON
    /// answer, with the same headers, timeouts and error mapping as every call of this client.
    /// For backends whose REST API shares OpenAI's conventions (Together) and reuse this client.
    ///
    /// # Errors
    /// As every call: the mapped [`ProviderError`].
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: HttpMethod,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, ProviderError> {
        let body = body.map_or(Body::Empty, Body::Json);
        Ok(self.call(method.into(), path, body).await?.1)
    }

    /// Uploads `bytes` as the multipart field `file` (named `filename`, type
    /// `application/jsonl`) with the text fields `fields`, to `path`, and decodes the answer.
    ///
    /// # Errors
    /// As every call.
    pub async fn upload_multipart<T: DeserializeOwned>(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        filename: &str,
        bytes: Vec<u8>,
    ) -> Result<T, ProviderError> {
        let part = reqwest::multipart::Part::bytes(bytes)
            .file_name(filename.to_owned())
            .mime_str("application/jsonl")
            .map_err(|e| ProviderError::InvalidRequest(e.to_string()))?;
        let mut form = reqwest::multipart::Form::new();
        for (k, v) in fields {
            form = form.text((*k).to_owned(), (*v).to_owned());
        }
        form = form.part("file", part);
        Ok(self
            .call(Method::POST, path, Body::Multipart(form))
            .await?
            .1)
    }

    /// The metadata of an uploaded file.
    ///
    /// # Errors
    /// The provider's errors.
    pub async fn get_file(&self, id: &str) -> Result<UploadedFile, ProviderError> {
        let (_, f): (_, wire::FileObject) = self
            .call(Method::GET, &format!("/files/{id}"), Body::Empty)
            .await?;
        Ok(UploadedFile {
            id: f.id,
            filename: f.filename,
            bytes: f.bytes,
        })
    }

    /// The content of an uploaded or generated file.
    ///
    /// # Errors
    /// The provider's errors.
    pub async fn file_content(&self, id: &str) -> Result<String, ProviderError> {
        Ok(self
            .send(Method::GET, &format!("/files/{id}/content"), Body::Empty)
            .await?
            .1)
    }
}

/// The HTTP methods [`OpenAiClient::json`] sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
}

impl From<HttpMethod> for Method {
    fn from(m: HttpMethod) -> Method {
        match m {
            HttpMethod::Get => Method::GET,
            HttpMethod::Post => Method::POST,
            HttpMethod::Patch => Method::PATCH,
            HttpMethod::Delete => Method::DELETE,
        }
    }
}

fn transport_error(request: &str, e: reqwest::Error, timeout: Duration) -> ProviderError {
    if e.is_timeout() {
        ProviderError::Timeout {
            request: request.to_owned(),
            after: timeout,
        }
    } else {
        ProviderError::Transport {
            request: request.to_owned(),
            message: causes(&e.without_url()),
        }
    }
}

/// Every distinct cause in an error's chain, outermost first, each once: reqwest's own
/// message says only "error sending request"; the cause (`Connection refused`, a DNS
/// failure) is further down, and some layers repeat their source in their own message.
pub(crate) fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        // A layer that already quotes its source adds nothing; one quoted by the layer
        // above is dropped.
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

fn truncate(s: &str) -> String {
    if s.len() <= MAX_RAW_BODY {
        return s.to_owned();
    }
    let mut end = MAX_RAW_BODY;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}

fn decode<T: DeserializeOwned>(request: &str, text: &str) -> Result<T, ProviderError> {
    serde_json::from_str(text).map_err(|e| ProviderError::Decode {
        request: request.to_owned(),
        message: e.to_string(),
        raw_body: truncate(text),
    })
}

/// Parses OpenAI's reset durations: `1s`, `6m0s`, `12ms`, `1h2m3.5s`.
pub fn parse_reset(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total = 0.0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return None;
        }
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let (unit, len) = if rest.starts_with("ms") {
            (0.001, 2)
        } else if rest.starts_with('h') {
            (3600.0, 1)
        } else if rest.starts_with('m') {
            (60.0, 1)
        } else if rest.starts_with('s') {
            (1.0, 1)
        } else if rest.is_empty() {
            (1.0, 0)
        } else {
            return None;
        };
        total += n * unit;
        rest = &rest[len..];
    }
    Some(Duration::from_secs_f64(total))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The rate-limit state a response reports, if it reports any.
pub fn parse_rate_limit(headers: &HeaderMap) -> Option<RateLimitInfo> {
    let num = |n: &str| header(headers, n).and_then(|v| v.trim().parse::<u64>().ok());
    let info = RateLimitInfo {
        remaining_requests: num("x-ratelimit-remaining-requests"),
        remaining_tokens: num("x-ratelimit-remaining-tokens"),
        reset_requests: header(headers, "x-ratelimit-reset-requests").and_then(parse_reset),
        reset_tokens: header(headers, "x-ratelimit-reset-tokens").and_then(parse_reset),
    };
    (info != RateLimitInfo::default()).then_some(info)
}

/// How long a 429 asks us to wait: `retry-after-ms`, else `Retry-After` (seconds); `None`
/// when it says neither. The `x-ratelimit-reset-*` durations are not a wait: they say when
/// a whole window refills (`6m0s` for tokens), while a retry a second later often passes,
/// so a 429 without Retry-After backs off from about a second, as the official SDKs do.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) = header(headers, "retry-after-ms").and_then(|v| v.trim().parse::<f64>().ok()) {
        return Some(Duration::from_secs_f64(ms.max(0.0) / 1000.0));
    }
    header(headers, "retry-after")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|s| Duration::from_secs_f64(s.max(0.0)))
}

fn status_error(
    request: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &str,
) -> ProviderError {
    let detail = wire::ErrorDetail::parse(body).unwrap_or_else(|| wire::ErrorDetail {
        message: if body.trim().is_empty() {
            status.canonical_reason().unwrap_or("error").to_owned()
        } else {
            truncate(body.trim())
        },
        ..wire::ErrorDetail::default()
    });
    let code = detail.code_str();
    let kind = detail.kind.clone();
    let request_id = header(headers, "x-request-id").map(str::to_owned);
    let is = |what: &str| code.as_deref() == Some(what) || kind.as_deref() == Some(what);
    match status.as_u16() {
        429 if is("insufficient_quota") => ProviderError::QuotaExhausted {
            request: request.to_owned(),
            message: detail.message,
        },
        429 => ProviderError::RateLimited {
            request: request.to_owned(),
            retry_after: retry_after(headers),
            message: detail.message,
        },
        // A 404 to a completion is about its model (OpenAI: `model_not_found`; Together:
        // `model_not_available`).
        404 if is("model_not_found") || request.ends_with("/chat/completions") => {
            ProviderError::ModelNotFound {
                request: request.to_owned(),
                message: format!(
                    "{}{}",
                    detail.message,
                    request_id
                        .as_ref()
                        .map(|r| format!(" [request id {r}]"))
                        .unwrap_or_default()
                ),
            }
        }
        404 => ProviderError::NotFound {
            what: format!(
                "{}{} ({request}{})",
                detail.message,
                code.as_ref().map(|c| format!(" [{c}]")).unwrap_or_default(),
                request_id
                    .as_ref()
                    .map(|r| format!(", request id {r}"))
                    .unwrap_or_default()
            ),
        },
        s => {
            let mut message = detail.message;
            let fine_tuning = request.ends_with("/fine_tuning/jobs");
            if fine_tuning && matches!(s, 400 | 403) && message.to_lowercase().contains("model") {
                message.push_str(
                    " (OpenAI closed self-serve fine-tuning to new jobs on 2027-01-06 and retired gpt-4.1-nano in October 2026; choose another base model or provider)",
                );
            }
            ProviderError::Api {
                request: request.to_owned(),
                status: s,
                kind,
                code,
                message,
                request_id,
            }
        }
    }
}

fn job_status(s: &str) -> JobStatus {
    match s {
        "validating_files" => JobStatus::ValidatingFiles,
        "queued" => JobStatus::Queued,
        "succeeded" => JobStatus::Succeeded,
        "failed" => JobStatus::Failed,
        "cancelled" => JobStatus::Cancelled,
        // "running", and any state the API adds ("paused", ...), are not terminal.
        _ => JobStatus::Running,
    }
}

fn to_job(j: wire::Job) -> FineTuneJob {
    FineTuneJob {
        status: job_status(&j.status),
        provider_status: j.status,
        base_model: j.model,
        fine_tuned_model: j.fine_tuned_model,
        error_code: j.error.as_ref().and_then(|e| e.code.clone()),
        error_param: j.error.as_ref().and_then(|e| e.param.clone()),
        error: j.error.and_then(|e| match (e.message, e.code, e.param) {
            (Some(m), Some(c), Some(p)) => Some(format!("{m} ({c}, param {p})")),
            (Some(m), Some(c), None) => Some(format!("{m} ({c})")),
            (m, c, _) => m.or(c),
        }),
        trained_tokens: j.trained_tokens,
        id: j.id,
    }
}

fn param<T: serde::Serialize>(p: Param<T>) -> Value {
    match p {
        Param::Auto => json!("auto"),
        Param::Value(v) => json!(v),
    }
}

fn role(r: Role) -> &'static str {
    match r {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

fn chat_body(r: &ChatRequest, dialect: LogprobsDialect) -> wire::ChatBody<'_> {
    let (logprobs, top_logprobs) = match (r.top_logprobs, dialect) {
        (None, _) => (None, None),
        (Some(n), LogprobsDialect::OpenAi) => (Some(json!(true)), Some(n)),
        (Some(n), LogprobsDialect::Together) => (Some(json!(n)), None),
    };
    wire::ChatBody {
        model: &r.model,
        messages: r
            .messages
            .iter()
            .map(|m| wire::WireMessage {
                role: role(m.role),
                content: &m.content,
            })
            .collect(),
        temperature: r.temperature,
        max_tokens: r.max_tokens,
        seed: r.seed,
        logprobs,
        top_logprobs,
    }
}

/// The first output token's alternatives, from either dialect's `logprobs` object.
fn first_token_logprobs(v: &Value) -> Option<Vec<TokenLogprob>> {
    let pair = |token: &str, lp: &Value| {
        lp.as_f64().map(|logprob| TokenLogprob {
            token: token.to_owned(),
            logprob,
        })
    };
    // OpenAI: {"content": [{"token", "logprob", "top_logprobs": [{"token", "logprob"}]}]}
    if let Some(first) = v.get("content").and_then(|c| c.get(0)) {
        let top: Vec<TokenLogprob> = first
            .get("top_logprobs")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|t| pair(t.get("token")?.as_str()?, t.get("logprob")?))
                    .collect()
            })
            .unwrap_or_default();
        if !top.is_empty() {
            return Some(top);
        }
        return pair(first.get("token")?.as_str()?, first.get("logprob")?).map(|t| vec![t]);
    }
    // Together: {"tokens": [...], "token_logprobs": [...], "top_logprobs": [{token: lp}] or {token: lp}}
    let top = v.get("top_logprobs").and_then(|t| match t {
        Value::Array(a) => a.first().cloned(),
        Value::Object(_) => Some(t.clone()),
        _ => None,
    });
    if let Some(Value::Object(map)) = top {
        let mut out: Vec<TokenLogprob> = map.iter().filter_map(|(tok, lp)| pair(tok, lp)).collect();
        out.sort_by(|a, b| b.logprob.total_cmp(&a.logprob));
        if !out.is_empty() {
            return Some(out);
        }
    }
    let token = v.get("tokens")?.get(0)?.as_str()?;
    pair(token, v.get("token_logprobs")?.get(0)?).map(|t| vec![t])
}

fn to_chat_response(
    request: &str,
    c: wire::ChatCompletion,
    rate_limit: Option<RateLimitInfo>,
    raw_body: &str,
) -> Result<ChatResponse, ProviderError> {
    let choice = c
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| ProviderError::Decode {
            request: request.to_owned(),
            message: "the completion has no choice".to_owned(),
            raw_body: truncate(raw_body),
        })?;
    let message = choice.message.unwrap_or_default();
    let text = message.content.or(message.refusal).unwrap_or_default();
    let top_logprobs = choice.logprobs.as_ref().and_then(first_token_logprobs);
    let usage = c.usage.unwrap_or_default();
    Ok(ChatResponse {
        model: c.model,
        text,
        finish_reason: choice.finish_reason,
        usage: Usage {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
        },
        top_logprobs,
        letter_logprobs: None,
        rate_limit,
    })
}

#[async_trait]
impl ChatModel for OpenAiClient {
    fn provider(&self) -> &str {
        &self.config.provider_name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            chat: true,
            logprobs: true,
            fine_tuning: true,
            batch: true,
        }
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let desc = self.describe(&Method::POST, "/chat/completions");
        let body = serde_json::to_value(chat_body(request, self.config.logprobs))
            .expect("chat body serializes");
        let (headers, text) = self
            .send(Method::POST, "/chat/completions", Body::Json(body))
            .await?;
        let completion: wire::ChatCompletion = decode(&desc, &text)?;
        to_chat_response(&desc, completion, parse_rate_limit(&headers), &text)
    }
}

#[async_trait]
impl FineTuner for OpenAiClient {
    fn provider(&self) -> &str {
        &self.config.provider_name
    }

    async fn upload(
        &self,
        filename: &str,
        bytes: Vec<u8>,
        purpose: FilePurpose,
    ) -> Result<UploadedFile, ProviderError> {
        let purpose = match purpose {
            FilePurpose::FineTune => "fine-tune",
            FilePurpose::Batch => "batch",
        };
        let f: wire::FileObject = self
            .upload_multipart("/files", &[("purpose", purpose)], filename, bytes)
            .await?;
        Ok(UploadedFile {
            id: f.id,
            filename: f.filename,
            bytes: f.bytes,
        })
    }

    async fn find_file(
        &self,
        filename: &str,
        bytes: u64,
        purpose: FilePurpose,
    ) -> Result<Option<UploadedFile>, ProviderError> {
        let purpose = match purpose {
            FilePurpose::FineTune => "fine-tune",
            FilePurpose::Batch => "batch",
        };
        let (_, list): (_, wire::FileList) = self
            .call(
                Method::GET,
                &format!("/files?purpose={purpose}"),
                Body::Empty,
            )
            .await?;
        Ok(list
            .data
            .into_iter()
            .find(|f| f.filename == filename && f.bytes == bytes)
            .map(|f| UploadedFile {
                id: f.id,
                filename: f.filename,
                bytes: f.bytes,
            }))
    }

    async fn create_job(
        &self,
        spec: &FineTuneSpec,
        client_ref: &str,
    ) -> Result<FineTuneJob, ProviderError> {
        let h = &spec.hyperparameters;
        // OpenAI's supervised fine-tuning has no LoRA, warm-up or gradient-accumulation
        // settings: refused rather than dropped, so that a run never silently trains
        // something other than what it asked for.
        if let Some(l) = &spec.lora {
            return Err(ProviderError::InvalidRequest(format!(
                "OpenAI fine-tuning takes no LoRA settings ({}); leave them unset",
                l.summary()
            )));
        }
        if h.warmup_ratio.is_some() || h.gradient_accumulation_steps.is_some() {
            return Err(ProviderError::InvalidRequest(
                "OpenAI fine-tuning takes no warm-up ratio or gradient accumulation; leave them unset".into(),
            ));
        }
        let lr = match h.learning_rate {
            LearningRate::Auto => json!("auto"),
            LearningRate::Multiplier(m) => json!(m),
            LearningRate::Absolute(a) => {
                return Err(ProviderError::InvalidRequest(format!(
                    "OpenAI takes a learning-rate multiplier, not an absolute learning rate ({a}); give LearningRate::Multiplier"
                )));
            }
        };
        let body = wire::CreateJob {
            model: &spec.base_model,
            training_file: &spec.training_file,
            validation_file: spec.validation_file.as_deref(),
            suffix: spec.suffix.as_deref(),
            seed: spec.seed,
            metadata: json!({ "xlt_ref": client_ref }),
            method: json!({
                "type": "supervised",
                "supervised": {"hyperparameters": {
                    "n_epochs": param(h.epochs),
                    "batch_size": param(h.batch_size),
                    "learning_rate_multiplier": lr,
                }}
            }),
        };
        let body = serde_json::to_value(body).expect("job body serializes");
        let (_, job): (_, wire::Job) = self
            .call(Method::POST, "/fine_tuning/jobs", Body::Json(body))
            .await?;
        Ok(to_job(job))
    }

    async fn get_job(&self, id: &str) -> Result<FineTuneJob, ProviderError> {
        let (_, job): (_, wire::Job) = self
            .call(Method::GET, &format!("/fine_tuning/jobs/{id}"), Body::Empty)
            .await?;
        Ok(to_job(job))
    }

    async fn find_job(&self, client_ref: &str) -> Result<Option<FineTuneJob>, ProviderError> {
        let (_, list): (_, wire::JobList) = self
            .call(
                Method::GET,
                &format!("/fine_tuning/jobs?limit=1&metadata[xlt_ref]={client_ref}"),
                Body::Empty,
            )
            .await?;
        Ok(list.data.into_iter().next().map(to_job))
    }

    async fn list_events(&self, id: &str) -> Result<Vec<JobEvent>, ProviderError> {
        // OpenAI lists newest first, a page at a time: follow `has_more` with `after`.
        let mut events = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let path = match &after {
                None => format!("/fine_tuning/jobs/{id}/events?limit=100"),
                Some(a) => format!("/fine_tuning/jobs/{id}/events?limit=100&after={a}"),
            };
            let (_, list): (_, wire::EventList) =
                self.call(Method::GET, &path, Body::Empty).await?;
            let last = list.data.last().map(|e| e.id.clone());
            events.extend(list.data.into_iter().map(|e| JobEvent {
                created_at: e.created_at,
                level: e.level,
                message: e.message,
            }));
            match last {
                Some(l) if list.has_more && !l.is_empty() && after.as_ref() != Some(&l) => {
                    after = Some(l);
                }
                _ => break,
            }
        }
        events.reverse();
        Ok(events)
    }

    async fn cancel_job(&self, id: &str) -> Result<FineTuneJob, ProviderError> {
        let (_, job): (_, wire::Job) = self
            .call(
                Method::POST,
                &format!("/fine_tuning/jobs/{id}/cancel"),
                Body::Empty,
            )
            .await?;
        Ok(to_job(job))
    }
}

fn batch_status(s: &str) -> BatchStatus {
    match s {
        "completed" => BatchStatus::Completed,
        "failed" => BatchStatus::Failed,
        "expired" | "cancelling" | "cancelled" => BatchStatus::Cancelled,
        // validating, in_progress, finalizing, and anything new.
        _ => BatchStatus::InProgress,
    }
}

fn to_batch(b: wire::BatchObject) -> Batch {
    let counts = b.request_counts.unwrap_or_default();
    let errors = b
        .errors
        .map(|e| e.data)
        .unwrap_or_default()
        .into_iter()
        .map(|e| {
            let mut s = e.message.unwrap_or_else(|| "no message".to_owned());
            let detail: Vec<String> = e
                .code
                .into_iter()
                .chain(e.line.map(|l| format!("line {l}")))
                .collect();
            if !detail.is_empty() {
                s.push_str(&format!(" ({})", detail.join(", ")));
            }
            s
        })
        .collect();
    Batch {
        status: batch_status(&b.status),
        provider_status: b.status,
        completed: counts.completed,
        failed: counts.failed,
        total: counts.total,
        errors,
        id: b.id,
    }
}

/// A file id the API gave, if it names a file: `null`, absent and `""` (seen from the live
/// API) all mean none.
fn file_id(id: &Option<String>) -> Option<&str> {
    id.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

#[async_trait]
impl BatchRunner for OpenAiClient {
    async fn submit_batch(
        &self,
        requests: &[(String, ChatRequest)],
    ) -> Result<Batch, ProviderError> {
        let (name, jsonl) = self.batch_input(requests);
        // An input file a lost answer already uploaded is reused, not uploaded twice.
        let file = match self
            .find_file(&name, jsonl.len() as u64, FilePurpose::Batch)
            .await?
        {
            Some(f) => f,
            None => {
                self.upload(&name, jsonl.into_bytes(), FilePurpose::Batch)
                    .await?
            }
        };
        let body = serde_json::to_value(wire::CreateBatch {
            input_file_id: &file.id,
            endpoint: "/v1/chat/completions",
            completion_window: "24h",
        })
        .expect("batch body serializes");
        let (_, b): (_, wire::BatchObject) = self
            .call(Method::POST, "/batches", Body::Json(body))
            .await?;
        Ok(to_batch(b))
    }

    /// The batch whose input file is these requests' (named by their content hash).
    async fn find_batch(
        &self,
        requests: &[(String, ChatRequest)],
    ) -> Result<Option<Batch>, ProviderError> {
        let (name, jsonl) = self.batch_input(requests);
        let Some(file) = self
            .find_file(&name, jsonl.len() as u64, FilePurpose::Batch)
            .await?
        else {
            return Ok(None);
        };
        let (_, list): (_, wire::BatchList) = self
            .call(Method::GET, "/batches?limit=100", Body::Empty)
            .await?;
        Ok(list
            .data
            .into_iter()
            .find(|b| b.input_file_id == file.id)
            .map(to_batch))
    }

    async fn get_batch(&self, id: &str) -> Result<Batch, ProviderError> {
        let (_, b): (_, wire::BatchObject) = self
            .call(Method::GET, &format!("/batches/{id}"), Body::Empty)
            .await?;
        Ok(to_batch(b))
    }

    async fn batch_results(&self, id: &str) -> Result<Vec<BatchResult>, ProviderError> {
        let (_, b): (_, wire::BatchObject) = self
            .call(Method::GET, &format!("/batches/{id}"), Body::Empty)
            .await?;
        if batch_status(&b.status) == BatchStatus::InProgress {
            return Err(ProviderError::InvalidRequest(format!(
                "batch {id} is `{}`, not finished",
                b.status
            )));
        }
        let mut results = Vec::new();
        for file in [file_id(&b.output_file_id), file_id(&b.error_file_id)]
            .into_iter()
            .flatten()
        {
            let desc = self.describe(&Method::GET, &format!("/files/{file}/content"));
            let text = self.file_content(file).await?;
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let out: wire::BatchOutputLine = decode(&desc, line)?;
                let result = match (out.response, out.error) {
                    (Some(r), _) if (200..300).contains(&r.status_code) => {
                        let body = r.body.to_string();
                        let c: wire::ChatCompletion = decode(&desc, &body)?;
                        to_chat_response(&desc, c, None, &body)
                    }
                    (Some(r), _) => {
                        let mut e = status_error(
                            &format!("batch {id} request {}", out.custom_id),
                            StatusCode::from_u16(r.status_code).unwrap_or(StatusCode::BAD_GATEWAY),
                            &HeaderMap::new(),
                            &r.body.to_string(),
                        );
                        if let ProviderError::Api { request_id, .. } = &mut e {
                            request_id.clone_from(&r.request_id);
                        }
                        Err(e)
                    }
                    (None, Some(e)) => Err(ProviderError::Api {
                        request: format!("batch {id} request {}", out.custom_id),
                        status: 0,
                        kind: None,
                        code: e.code,
                        message: e.message.unwrap_or_default(),
                        request_id: None,
                    }),
                    (None, None) => Err(ProviderError::Decode {
                        request: desc.clone(),
                        message: format!(
                            "line for {} has neither response nor error",
                            out.custom_id
                        ),
                        raw_body: truncate(line),
                    }),
                };
                results.push(BatchResult {
                    custom_id: out.custom_id,
                    result,
                });
            }
        }
        Ok(results)
    }
}

impl OpenAiClient {
    /// The batch input file of `requests`: its name (with the content hash) and its JSON
    /// Lines.
    fn batch_input(&self, requests: &[(String, ChatRequest)]) -> (String, String) {
        let mut jsonl = String::new();
        for (id, r) in requests {
            let line = wire::BatchLine {
                custom_id: id,
                method: "POST",
                url: "/v1/chat/completions",
                body: chat_body(r, self.config.logprobs),
            };
            jsonl.push_str(&serde_json::to_string(&line).expect("batch line serializes"));
            jsonl.push('\n');
        }
        let hash = xlt_provider::bytes_hash(jsonl.as_bytes());
        (format!("batch.{}.jsonl", &hash[..16]), jsonl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logprobs_in_both_dialects() {
        let openai = json!({"content": [{"token": "C", "logprob": -0.1, "top_logprobs": [
            {"token": "C", "logprob": -0.1}, {"token": "B", "logprob": -2.5}]}]});
        let t = first_token_logprobs(&openai).unwrap();
        assert_eq!((t[0].token.as_str(), t[1].token.as_str()), ("C", "B"));
        let together = json!({"tokens": ["C", "."], "token_ids": [34, 13],
            "token_logprobs": [-0.1, -0.01], "top_logprobs": [{"B": -2.5, "C": -0.1, "A": -4.0}, {".": -0.01}]});
        let t = first_token_logprobs(&together).unwrap();
        assert_eq!(
            t.iter().map(|x| x.token.as_str()).collect::<Vec<_>>(),
            ["C", "B", "A"]
        );
        let bare = json!({"tokens": ["D"], "token_logprobs": [-0.3]});
        assert_eq!(first_token_logprobs(&bare).unwrap()[0].token, "D");
        let r = ChatRequest {
            top_logprobs: Some(5),
            ..ChatRequest::new("m", vec![])
        };
        let body = serde_json::to_value(chat_body(&r, LogprobsDialect::Together)).unwrap();
        assert_eq!(body["logprobs"], 5);
        assert!(body.get("top_logprobs").is_none());
        let body = serde_json::to_value(chat_body(&r, LogprobsDialect::OpenAi)).unwrap();
        assert_eq!(
            (body["logprobs"].clone(), body["top_logprobs"].clone()),
            (json!(true), json!(5))
        );
    }

    #[test]
    fn reset_durations_parse() {
        let check =
            |s: &str, ms: u64| assert_eq!(parse_reset(s), Some(Duration::from_millis(ms)), "{s}");
        check("1s", 1000);
        check("6m0s", 360_000);
        check("12ms", 12);
        check("1h2m3.5s", 3_723_500);
        check("0.5s", 500);
        check("2", 2000);
        assert_eq!(parse_reset(""), None);
        assert_eq!(parse_reset("soon"), None);
    }
}
