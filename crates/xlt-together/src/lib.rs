//! The Together AI backend of the `xlt-provider` traits: fine-tuning open-weight models
//! (LoRA or full), dedicated endpoints to serve them, and chat through Together's
//! OpenAI-compatible `/chat/completions`, reusing the OpenAI client with Together's base URL
//! and logprobs dialect.
//!
//! The core types are [`TogetherConfig`] (read from the environment in
//! [`TogetherConfig::from_env`]; the key is redacted in `Debug`) and [`TogetherClient`],
//! which implements `FineTuner`, `ChatModel` and `ModelServer`.
//!
//! Hyperparameters: Together takes an **absolute** learning rate; OpenAI took a multiplier of
//! an unpublished base rate. A spec with `LearningRate::Multiplier` is refused here rather than
//! converted. LoRA settings come from the spec (`FineTuneSpec::lora`: rank, alpha, dropout,
//! target modules, sent as `lora_r`, `lora_alpha`, `lora_dropout`,
//! `lora_trainable_modules`) when it has them, else from [`TogetherConfig::training`]; a
//! `warmup_ratio` is passed through, gradient accumulation is refused (Together has none).
//! Sequence packing is off by default, so that a batch size means what the study
//! meant.
//!
//! ```no_run
//! use xlt_together::{TogetherClient, TogetherConfig, TrainingType};
//! use xlt_provider::{FineTuner, FineTuneSpec, Hyperparameters, LearningRate, Param};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = TogetherConfig::from_env()?; // TOGETHER_API_KEY, TOGETHER_BASE_URL
//! config.training = TrainingType::Lora { rank: 16, alpha: 32, dropout: 0.05, trainable_modules: "all-linear".into() };
//! let client = TogetherClient::new(config)?;
//! let file = client.upload("en-stem.jsonl", std::fs::read("out/finetune/en-stem.jsonl")?,
//!     xlt_provider::FilePurpose::FineTune).await?;
//! let spec = FineTuneSpec {
//!     base_model: "Qwen/Qwen2.5-7B-Instruct".into(),
//!     training_file: file.id,
//!     validation_file: None,
//!     hyperparameters: Hyperparameters {
//!         epochs: Param::Value(1),
//!         batch_size: Param::Value(8),
//!         learning_rate: LearningRate::Absolute(1e-5),
//!         ..Hyperparameters::default()
//!     },
//!     suffix: Some("en-stem".into()),
//!     seed: Some(42),
//!     lora: None,
//! };
//! let job = client.create_job(&spec, "xlt-0123456789abcdef-0").await?;
//! println!("{} {}", job.id, job.provider_status);
//! # Ok(())
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

#[cfg(feature = "testing")]
pub mod testing;

use std::fmt;

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};
use xlt_openai::{HttpMethod, LogprobsDialect, OpenAiClient, OpenAiConfig};
use xlt_provider::{
    Capabilities, ChatModel, ChatRequest, ChatResponse, FilePurpose, FineTuneJob, FineTuneSpec,
    FineTuner, JobEvent, JobStatus, LearningRate, ModelServer, Param, ProviderError, Secret,
    ServeState, Served, ServedRoutes, UploadedFile,
};

/// Together's API root.
pub const DEFAULT_BASE_URL: &str = "https://api.together.xyz/v1";

/// LoRA or full fine-tuning.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainingType {
    /// Low-rank adapters.
    Lora {
        /// Rank.
        rank: u32,
        /// Alpha.
        alpha: u32,
        /// Dropout.
        dropout: f64,
        /// Which modules (`all-linear`).
        trainable_modules: String,
    },
    /// Every weight.
    Full,
}

impl Default for TrainingType {
    fn default() -> Self {
        TrainingType::Lora {
            rank: 8,
            alpha: 16,
            dropout: 0.0,
            trainable_modules: "all-linear".to_owned(),
        }
    }
}

/// How to reach Together. The key never appears in `Debug`, logs or errors.
#[derive(Clone)]
pub struct TogetherConfig {
    api_key: Secret,
    /// The API root (`https://api.together.xyz/v1`).
    pub base_url: String,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// LoRA (default) or full.
    pub training: TrainingType,
    /// Sequence packing (off: a batch size then means a number of examples).
    pub packing: bool,
    /// Hardware for dedicated endpoints (`1x_nvidia_a100_80gb_sxm`).
    pub endpoint_hardware: String,
    /// Minutes of inactivity after which Together stops an endpoint by itself: a safety net
    /// behind the explicit stop.
    pub endpoint_inactive_timeout_minutes: u32,
}

impl fmt::Debug for TogetherConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TogetherConfig")
            .field("api_key", &self.api_key)
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .field("training", &self.training)
            .field("packing", &self.packing)
            .field("endpoint_hardware", &self.endpoint_hardware)
            .finish()
    }
}

impl TogetherConfig {
    /// A configuration with `api_key` against `base_url`.
    pub fn new(api_key: impl Into<Secret>, base_url: impl Into<String>) -> TogetherConfig {
        TogetherConfig {
            api_key: api_key.into(),
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            timeout: Duration::from_secs(120),
            training: TrainingType::default(),
            packing: false,
            endpoint_hardware: "1x_nvidia_a100_80gb_sxm".to_owned(),
            endpoint_inactive_timeout_minutes: 15,
        }
    }

    /// Reads `TOGETHER_API_KEY` (required), `TOGETHER_BASE_URL` (default
    /// [`DEFAULT_BASE_URL`]) and `TOGETHER_TIMEOUT_SECS` (the whole-request timeout in
    /// seconds, default 120). The only place the environment is read.
    ///
    /// # Errors
    /// [`ProviderError::InvalidRequest`] if the key is unset.
    pub fn from_env() -> Result<TogetherConfig, ProviderError> {
        let key = std::env::var("TOGETHER_API_KEY").unwrap_or_default();
        if key.trim().is_empty() {
            return Err(ProviderError::InvalidRequest(
                "TOGETHER_API_KEY is not set; export it, or run offline with the embedded provider"
                    .to_owned(),
            ));
        }
        let base = std::env::var("TOGETHER_BASE_URL")
            .ok()
            .filter(|b| !b.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
        let mut c = TogetherConfig::new(key, base);
        if let Some(t) = xlt_openai::timeout_from_env("TOGETHER_TIMEOUT_SECS")? {
            c.timeout = t;
        }
        Ok(c)
    }
}

/// The Together backend.
///
/// A fine-tuned model served on a dedicated endpoint is reached by the endpoint's name; the
/// client keeps that route itself (set when [`ModelServer::status`] sees the endpoint ready,
/// cleared by [`ModelServer::stop`]), so callers and their response cache name the
/// fine-tuned model, never the endpoint: a rerun that serves the model on a new endpoint
/// finds every answer the last one gave.
#[derive(Debug, Clone)]
pub struct TogetherClient {
    http: OpenAiClient,
    config: TogetherConfig,
    /// Fine-tuned model -> the endpoint name to send as `model`.
    routes: ServedRoutes,
}

#[derive(Debug, Deserialize)]
struct FileResponse {
    id: String,
    #[serde(default)]
    filename: String,
    #[serde(default)]
    bytes: u64,
}

#[derive(Debug, Deserialize)]
struct FileList {
    #[serde(default)]
    data: Vec<FileResponse>,
}

#[derive(Debug, Deserialize)]
struct FineTune {
    id: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    model_output_name: Option<String>,
    #[serde(default)]
    token_count: Option<u64>,
    #[serde(default)]
    suffix: Option<String>,
}

#[derive(Debug, Deserialize)]
struct FineTuneList {
    #[serde(default)]
    data: Vec<FineTune>,
}

#[derive(Debug, Deserialize)]
struct EventList {
    #[serde(default)]
    data: Vec<Event>,
}

#[derive(Debug, Deserialize)]
struct Event {
    #[serde(default)]
    created_at: Value,
    #[serde(default)]
    level: Option<String>,
    #[serde(default)]
    message: String,
}

#[derive(Debug, Deserialize)]
struct ModelInfo {
    id: String,
}

#[derive(Debug, Deserialize)]
struct EndpointList {
    #[serde(default)]
    data: Vec<Endpoint>,
}

#[derive(Debug, Deserialize)]
struct Endpoint {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    state: String,
    #[serde(default, rename = "type")]
    kind: String,
}

/// Together's price estimate for a fine-tuning job.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PriceEstimate {
    /// Estimated price in US dollars.
    #[serde(default)]
    pub estimated_total_price: f64,
    /// Whether the account may start the job.
    #[serde(default)]
    pub allowed_to_proceed: bool,
    /// Estimated training tokens.
    #[serde(default)]
    pub estimated_train_token_count: f64,
}

/// Together's job states onto the neutral ones; the original is kept in `provider_status`.
pub fn job_status(s: &str) -> JobStatus {
    match s {
        "pending" | "queued" => JobStatus::Queued,
        "completed" => JobStatus::Succeeded,
        // `user_error` is final in Together's own SDK: the job's input is at fault.
        "error" | "user_error" => JobStatus::Failed,
        "cancelled" => JobStatus::Cancelled,
        // running, compressing, uploading, cancel_requested and anything new: not terminal.
        _ => JobStatus::Running,
    }
}

fn endpoint_state(s: &str) -> ServeState {
    match s {
        "STARTED" => ServeState::Ready,
        "STOPPED" | "STOPPING" => ServeState::Stopped,
        "ERROR" | "FAILED" => ServeState::Failed,
        _ => ServeState::Starting,
    }
}

fn to_job(f: FineTune) -> FineTuneJob {
    let status = job_status(&f.status);
    FineTuneJob {
        id: f.id,
        status,
        fine_tuned_model: f
            .model_output_name
            .filter(|_| status == JobStatus::Succeeded),
        base_model: f.model,
        error: (status == JobStatus::Failed).then(|| format!("Together job status `{}`", f.status)),
        // A user error is the input's fault: resubmitting the same data fails again.
        error_code: (f.status == "user_error").then(|| "user_error".to_owned()),
        error_param: (f.status == "user_error").then(|| "training_file".to_owned()),
        trained_tokens: f.token_count,
        provider_status: f.status,
    }
}

impl TogetherClient {
    /// A client for `config`.
    ///
    /// # Errors
    /// If the HTTP client cannot be built.
    pub fn new(config: TogetherConfig) -> Result<TogetherClient, ProviderError> {
        let mut c = OpenAiConfig::new(config.api_key.clone(), config.base_url.clone());
        c.timeout = config.timeout;
        c.provider_name = "together".to_owned();
        c.logprobs = LogprobsDialect::Together;
        Ok(TogetherClient {
            http: OpenAiClient::new(c)?,
            config,
            routes: ServedRoutes::default(),
        })
    }

    /// A client configured from the environment.
    ///
    /// # Errors
    /// As [`TogetherConfig::from_env`].
    pub fn from_env() -> Result<TogetherClient, ProviderError> {
        TogetherClient::new(TogetherConfig::from_env()?)
    }

    fn job_body(&self, spec: &FineTuneSpec, client_ref: &str) -> Result<Value, ProviderError> {
        let h = &spec.hyperparameters;
        let mut body = json!({
            "model": spec.base_model,
            "training_file": spec.training_file,
            "packing": self.config.packing,
            "training_method": {"method": "sft", "train_on_inputs": "auto"},
            "training_type": training_type(spec, &self.config.training)?,
            // Together has no job metadata: the reference rides in the suffix, where
            // find_job looks for it.
            "suffix": suffix(spec.suffix.as_deref(), client_ref),
        });
        if let Some(v) = &spec.validation_file {
            body["validation_file"] = json!(v);
        }
        if let Param::Value(e) = h.epochs {
            body["n_epochs"] = json!(e);
        }
        body["batch_size"] = match h.batch_size {
            Param::Value(b) => json!(b),
            Param::Auto => json!("max"),
        };
        match h.learning_rate {
            LearningRate::Absolute(lr) => body["learning_rate"] = json!(lr),
            LearningRate::Auto => {}
            LearningRate::Multiplier(m) => {
                return Err(ProviderError::InvalidRequest(format!(
                    "Together takes an absolute learning rate, not a multiplier ({m}) of OpenAI's unpublished base rate; give LearningRate::Absolute"
                )));
            }
        }
        if let Some(seed) = spec.seed {
            body["random_seed"] = json!(seed);
        }
        if let Some(w) = h.warmup_ratio {
            body["warmup_ratio"] = json!(w);
        }
        match h.gradient_accumulation_steps {
            None | Some(1) => {}
            Some(n) => {
                return Err(ProviderError::InvalidRequest(format!(
                    "Together has no gradient accumulation ({n} steps asked); give a larger batch size instead"
                )));
            }
        }
        Ok(body)
    }

    /// Together's estimate of a job's price (`POST /fine-tunes/estimate-price`), in full.
    ///
    /// # Errors
    /// The provider's errors; a multiplier learning rate.
    pub async fn price_estimate(
        &self,
        spec: &FineTuneSpec,
    ) -> Result<PriceEstimate, ProviderError> {
        let mut body = self.job_body(spec, "estimate")?;
        if let Some(o) = body.as_object_mut() {
            // Only the fields the estimate's request body defines.
            o.retain(|k, _| {
                matches!(
                    k.as_str(),
                    "model"
                        | "training_file"
                        | "validation_file"
                        | "n_epochs"
                        | "training_method"
                        | "training_type"
                )
            });
        }
        self.http
            .json(HttpMethod::Post, "/fine-tunes/estimate-price", Some(body))
            .await
    }

    /// The configuration (its `Debug` redacts the key).
    pub fn config(&self) -> &TogetherConfig {
        &self.config
    }
}

/// Together's `training_type`: the spec's LoRA settings when it has them (`lora_r`,
/// `lora_alpha`, `lora_dropout`, `lora_trainable_modules` as a comma-separated list of the
/// module names), else the configured [`TrainingType`].
///
/// # Errors
/// [`ProviderError::InvalidRequest`] for LoRA settings that fail `LoraSpec::validate`, or an
/// alpha that is not a whole number (Together's `lora_alpha` is an integer).
fn training_type(spec: &FineTuneSpec, configured: &TrainingType) -> Result<Value, ProviderError> {
    if let Some(l) = &spec.lora {
        l.validate()?;
        if l.alpha.fract() != 0.0 || l.alpha > f64::from(u32::MAX) {
            return Err(ProviderError::InvalidRequest(format!(
                "Together takes a whole-number LoRA alpha, not {}",
                l.alpha
            )));
        }
        return Ok(json!({
            "type": "Lora",
            "lora_r": l.rank,
            "lora_alpha": l.alpha as u32,
            "lora_dropout": l.dropout,
            "lora_trainable_modules": l.target_modules.join(","),
        }));
    }
    Ok(match configured {
        TrainingType::Lora {
            rank,
            alpha,
            dropout,
            trainable_modules,
        } => json!({
            "type": "Lora", "lora_r": rank, "lora_alpha": alpha,
            "lora_dropout": dropout, "lora_trainable_modules": trainable_modules}),
        TrainingType::Full => json!({"type": "Full"}),
    })
}

/// `<suffix>-<ref tag>`: the tag is the reference's last 10 characters without dashes.
fn suffix(user: Option<&str>, client_ref: &str) -> String {
    let tag: String = client_ref.chars().filter(|c| *c != '-').collect();
    let tag = &tag[tag.len().saturating_sub(10)..];
    match user {
        Some(u) if !u.is_empty() => format!("{u}-{tag}"),
        _ => tag.to_owned(),
    }
}

#[async_trait]
impl FineTuner for TogetherClient {
    fn provider(&self) -> &str {
        "together"
    }

    async fn upload(
        &self,
        filename: &str,
        bytes: Vec<u8>,
        purpose: FilePurpose,
    ) -> Result<UploadedFile, ProviderError> {
        if purpose != FilePurpose::FineTune {
            return Err(ProviderError::Unsupported {
                provider: "together".to_owned(),
                what: "batch files".to_owned(),
            });
        }
        let f: FileResponse = self
            .http
            .upload_multipart(
                "/files/upload",
                &[("file_name", filename), ("purpose", "fine-tune")],
                filename,
                bytes,
            )
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
        if purpose != FilePurpose::FineTune {
            return Ok(None);
        }
        let list: FileList = self.http.json(HttpMethod::Get, "/files", None).await?;
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
        let body = self.job_body(spec, client_ref)?;
        let f: FineTune = self
            .http
            .json(HttpMethod::Post, "/fine-tunes", Some(body))
            .await?;
        Ok(to_job(f))
    }

    async fn find_job(&self, client_ref: &str) -> Result<Option<FineTuneJob>, ProviderError> {
        let tag = suffix(None, client_ref);
        let list: FineTuneList = self.http.json(HttpMethod::Get, "/fine-tunes", None).await?;
        Ok(list
            .data
            .into_iter()
            .find(|f| {
                f.suffix.as_deref().is_some_and(|s| s.ends_with(&tag))
                    || f.model_output_name
                        .as_deref()
                        .is_some_and(|m| m.contains(&tag))
            })
            .map(to_job))
    }

    fn offers_price_estimate(&self) -> bool {
        true
    }

    async fn estimate_price(&self, spec: &FineTuneSpec) -> Result<Option<f64>, ProviderError> {
        Ok(Some(self.price_estimate(spec).await?.estimated_total_price))
    }

    async fn get_job(&self, id: &str) -> Result<FineTuneJob, ProviderError> {
        let f: FineTune = self
            .http
            .json(HttpMethod::Get, &format!("/fine-tunes/{id}"), None)
            .await?;
        let mut job = to_job(f);
        if job.status == JobStatus::Failed {
            // Together gives a failed job's reason only in its events: the last error event,
            // else the last event.
            if let Ok(events) = self.list_events(id).await {
                let reason = events
                    .iter()
                    .rev()
                    .find(|e| e.level.eq_ignore_ascii_case("error"))
                    .or(events.last())
                    .map(|e| e.message.clone());
                if let Some(r) = reason {
                    job.error = Some(format!(
                        "{r} (Together job status `{}`)",
                        job.provider_status
                    ));
                }
            }
        }
        Ok(job)
    }

    async fn list_events(&self, id: &str) -> Result<Vec<JobEvent>, ProviderError> {
        let list: EventList = self
            .http
            .json(HttpMethod::Get, &format!("/fine-tunes/{id}/events"), None)
            .await?;
        Ok(list
            .data
            .into_iter()
            .map(|e| JobEvent {
                created_at: e.created_at.as_i64().unwrap_or(0),
                level: e.level.unwrap_or_else(|| "info".to_owned()),
                message: e.message,
            })
            .collect())
    }

    async fn cancel_job(&self, id: &str) -> Result<FineTuneJob, ProviderError> {
        let f: FineTune = self
            .http
            .json(HttpMethod::Post, &format!("/fine-tunes/{id}/cancel"), None)
            .await?;
        Ok(to_job(f))
    }
}

#[async_trait]
impl ChatModel for TogetherClient {
    fn provider(&self) -> &str {
        "together"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            chat: true,
            logprobs: true,
            fine_tuning: true,
            batch: false,
        }
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        self.http.chat(&self.routes.route(request)).await
    }
}

fn to_served(e: Endpoint) -> Served {
    Served {
        state: endpoint_state(&e.state),
        chat_model: if e.name.is_empty() {
            e.model.clone()
        } else {
            e.name
        },
        model: e.model,
        provider_state: e.state,
        id: e.id,
    }
}

#[async_trait]
impl ModelServer for TogetherClient {
    async fn start(&self, model: &str, display_name: &str) -> Result<Served, ProviderError> {
        let body = json!({
            "model": model,
            "hardware": self.config.endpoint_hardware,
            "autoscaling": {"min_replicas": 1, "max_replicas": 1},
            "display_name": display_name,
            "inactive_timeout": self.config.endpoint_inactive_timeout_minutes,
            "state": "STARTED",
        });
        let e: Endpoint = self
            .http
            .json(HttpMethod::Post, "/endpoints", Some(body))
            .await?;
        tracing::info!(endpoint = %e.id, %model, "endpoint started; billed until stopped");
        Ok(to_served(e))
    }

    /// A dedicated endpoint of this account serving `model` that is not stopped or failed.
    async fn find_started(&self, model: &str) -> Result<Option<Served>, ProviderError> {
        Ok(self.list_running().await?.into_iter().find(|e| {
            e.model == model && matches!(e.state, ServeState::Starting | ServeState::Ready)
        }))
    }

    async fn status(&self, served: &Served) -> Result<Served, ProviderError> {
        let e: Endpoint = self
            .http
            .json(HttpMethod::Get, &format!("/endpoints/{}", served.id), None)
            .await?;
        let s = to_served(e);
        if s.state == ServeState::Ready {
            self.routes.set(&s.model, &s.chat_model);
        }
        Ok(s)
    }

    async fn serves_serverless(&self, model: &str) -> Result<Option<bool>, ProviderError> {
        let models: Vec<ModelInfo> = self.http.json(HttpMethod::Get, "/models", None).await?;
        Ok(Some(models.iter().any(|m| m.id == model)))
    }

    async fn list_running(&self) -> Result<Vec<Served>, ProviderError> {
        let list: EndpointList = self
            .http
            .json(HttpMethod::Get, "/endpoints?mine=true&type=dedicated", None)
            .await?;
        Ok(list
            .data
            .into_iter()
            .filter(|e| e.kind.is_empty() || e.kind == "dedicated")
            .map(to_served)
            .filter(|s| s.state != ServeState::Stopped)
            .collect())
    }

    async fn stop(&self, served: &Served) -> Result<(), ProviderError> {
        self.routes.clear(&served.model);
        let result: Result<Endpoint, _> = self
            .http
            .json(
                HttpMethod::Patch,
                &format!("/endpoints/{}", served.id),
                Some(json!({"state": "STOPPED"})),
            )
            .await;
        match result {
            Ok(_) | Err(ProviderError::NotFound { .. }) => {
                tracing::info!(endpoint = %served.id, "endpoint stopped");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_without_losing_the_original() {
        for (s, n) in [
            ("pending", JobStatus::Queued),
            ("queued", JobStatus::Queued),
            ("running", JobStatus::Running),
            ("compressing", JobStatus::Running),
            ("uploading", JobStatus::Running),
            ("cancel_requested", JobStatus::Running),
            ("cancelled", JobStatus::Cancelled),
            ("error", JobStatus::Failed),
            ("user_error", JobStatus::Failed),
            ("completed", JobStatus::Succeeded),
            ("something_new", JobStatus::Running),
        ] {
            assert_eq!(job_status(s), n, "{s}");
            let j = to_job(FineTune {
                id: "ft-1".into(),
                status: s.into(),
                model: "m".into(),
                model_output_name: Some("me/m-x".into()),
                token_count: None,
                suffix: None,
            });
            assert_eq!(j.provider_status, s);
            assert_eq!(j.fine_tuned_model.is_some(), n == JobStatus::Succeeded);
        }
    }

    #[test]
    fn debug_redacts_the_key() {
        let c = TogetherConfig::new("tg-secret-123", "http://x/v1");
        assert!(!format!("{c:?}").contains("tg-secret-123"));
    }

    #[test]
    fn suffix_carries_the_reference() {
        assert_eq!(
            suffix(Some("en-stem"), "xlt-0123456789abcdef-0"),
            "en-stem-789abcdef0"
        );
        assert_eq!(suffix(None, "xlt-0123456789abcdef-1"), "789abcdef1");
    }
}
