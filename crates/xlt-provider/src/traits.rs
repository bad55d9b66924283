//! The three traits a backend implements.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::ProviderError;
use crate::types::{
    Batch, BatchResult, Capabilities, ChatRequest, ChatResponse, FilePurpose, FineTuneJob,
    FineTuneSpec, JobEvent, JobStatus, UploadedFile,
};

/// One chat completion at a time.
#[async_trait]
pub trait ChatModel: Send + Sync {
    /// The backend's name, for messages (`openai`, `embedded`).
    fn provider(&self) -> &str;

    /// What the backend offers.
    fn capabilities(&self) -> Capabilities;

    /// Sends one request.
    ///
    /// # Errors
    /// Any [`ProviderError`]; [`ProviderError::Unsupported`] when top logprobs are asked of a
    /// backend that has none.
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError>;
}

/// Fine-tuning jobs.
#[async_trait]
pub trait FineTuner: Send + Sync {
    /// The backend's name.
    fn provider(&self) -> &str;

    /// Uploads a file (chat JSON Lines for fine-tuning).
    async fn upload(
        &self,
        filename: &str,
        bytes: Vec<u8>,
        purpose: FilePurpose,
    ) -> Result<UploadedFile, ProviderError>;

    /// The file uploaded as `filename` with `bytes` bytes for `purpose`, if there is one:
    /// what [`crate::Retry`] asks before it resends an upload whose answer was lost. The
    /// [`crate::JobLedger`] puts the content hash in `filename`, so a match is the same
    /// content. A backend that cannot list files returns `Ok(None)` (the default), and a
    /// lost answer may then leave a second copy of the file (which costs nothing).
    async fn find_file(
        &self,
        filename: &str,
        bytes: u64,
        purpose: FilePurpose,
    ) -> Result<Option<UploadedFile>, ProviderError> {
        let _ = (filename, bytes, purpose);
        Ok(None)
    }

    /// Starts a job. `client_ref` is the caller's reference for it: the backend attaches it
    /// to the job (OpenAI: metadata) so that [`FineTuner::find_job`] can find the job again
    /// after a crash between the provider accepting the job and the caller recording its id.
    async fn create_job(
        &self,
        spec: &FineTuneSpec,
        client_ref: &str,
    ) -> Result<FineTuneJob, ProviderError>;

    /// The job created with `client_ref`, if any. A backend that cannot look jobs up returns
    /// `Ok(None)` (the default), and a crash in that window may then start a second job.
    async fn find_job(&self, client_ref: &str) -> Result<Option<FineTuneJob>, ProviderError> {
        let _ = client_ref;
        Ok(None)
    }

    /// The job as it is now.
    async fn get_job(&self, id: &str) -> Result<FineTuneJob, ProviderError>;

    /// Whether [`FineTuner::estimate_price`] gives estimates (it needs the training file
    /// uploaded first, so callers ask before uploading for nothing).
    fn offers_price_estimate(&self) -> bool {
        false
    }

    /// The provider's own price estimate for a job of `spec`, in US dollars, where it offers
    /// one (Together); `Ok(None)` (the default) where it does not.
    async fn estimate_price(&self, spec: &FineTuneSpec) -> Result<Option<f64>, ProviderError> {
        let _ = spec;
        Ok(None)
    }

    /// The job's events, oldest first.
    async fn list_events(&self, id: &str) -> Result<Vec<JobEvent>, ProviderError>;

    /// Cancels the job.
    async fn cancel_job(&self, id: &str) -> Result<FineTuneJob, ProviderError>;
}

/// Many chat requests as one asynchronous batch (cheaper, slower).
#[async_trait]
pub trait BatchRunner: Send + Sync {
    /// Submits `(custom_id, request)` pairs as one batch.
    async fn submit_batch(
        &self,
        requests: &[(String, ChatRequest)],
    ) -> Result<Batch, ProviderError>;

    /// The batch already submitted for exactly these requests, if any: what
    /// [`crate::Retry`] asks before it resends a submission whose answer was lost. The
    /// default, `Ok(None)`, makes such a resend submit (and pay for) a second batch.
    async fn find_batch(
        &self,
        requests: &[(String, ChatRequest)],
    ) -> Result<Option<Batch>, ProviderError> {
        let _ = requests;
        Ok(None)
    }

    /// The batch as it is now.
    async fn get_batch(&self, id: &str) -> Result<Batch, ProviderError>;

    /// The results of a finished batch (completed, expired, cancelled or failed), joined to
    /// their requests by custom id: every line of whatever output and error files exist. A
    /// request with no line never ran.
    ///
    /// # Errors
    /// The provider's errors; [`ProviderError::InvalidRequest`] for a batch still running.
    async fn batch_results(&self, id: &str) -> Result<Vec<BatchResult>, ProviderError>;
}

/// A model served on demand, such as a fine-tuned model on Together's dedicated endpoints
/// (billed while running): start it before evaluating, stop it after, always.
#[async_trait]
pub trait ModelServer: Send + Sync {
    /// Starts serving `model` on an endpoint called `display_name` (the caller derives it from
    /// its run and the model, and records it before calling, so that an endpoint created by a
    /// request that never answered can still be found and stopped).
    async fn start(&self, model: &str, display_name: &str) -> Result<Served, ProviderError>;

    /// Whether `model` must be started before it answers (a fine-tuned model on a dedicated
    /// endpoint, a LoRA adapter to load); `false` for one the provider answers as it is, which
    /// a study then evaluates without starting, recording or stopping anything. The default
    /// is `true`.
    fn needs_start(&self, model: &str) -> bool {
        let _ = model;
        true
    }

    /// The account's own endpoints that are not stopped (Together: `GET /endpoints?mine=true`),
    /// so that a run can stop those it started even when it never learnt their ids.
    async fn list_running(&self) -> Result<Vec<Served>, ProviderError> {
        Ok(Vec::new())
    }

    /// Whether `model` answers without an endpoint being started (Together: listed by
    /// `GET /models`), so that a plan can check, before paying for any fine-tune, that the
    /// base model can be evaluated; `Ok(None)` (the default) when the provider cannot say.
    async fn serves_serverless(&self, model: &str) -> Result<Option<bool>, ProviderError> {
        let _ = model;
        Ok(None)
    }

    /// The endpoint this backend started for `model` and that is not stopped, found by the
    /// name [`ModelServer::start`] gives it: what [`crate::Retry`] asks before it resends
    /// a start whose answer was lost. The default, `Ok(None)`, makes such a resend start a
    /// second endpoint.
    async fn find_started(&self, model: &str) -> Result<Option<Served>, ProviderError> {
        let _ = model;
        Ok(None)
    }

    /// The serving state now.
    async fn status(&self, served: &Served) -> Result<Served, ProviderError>;

    /// Stops serving. Safe to call on a stopped or unknown endpoint.
    async fn stop(&self, served: &Served) -> Result<(), ProviderError>;

    /// Polls until the endpoint is ready or has failed.
    ///
    /// # Errors
    /// [`ProviderError::Timeout`] after `options.timeout`; [`ProviderError::Api`] if the
    /// endpoint ended in an error state.
    async fn wait_ready(
        &self,
        served: &Served,
        options: WaitOptions,
    ) -> Result<Served, ProviderError> {
        let start = tokio::time::Instant::now();
        let mut pause = options.initial;
        loop {
            let s = self.status(served).await?;
            match s.state {
                ServeState::Ready => return Ok(s),
                ServeState::Failed | ServeState::Stopped => {
                    return Err(ProviderError::Api {
                        request: format!("starting endpoint {}", s.id),
                        status: 0,
                        kind: None,
                        code: None,
                        message: format!(
                            "endpoint ended `{}` before it was ready",
                            s.provider_state
                        ),
                        request_id: None,
                    });
                }
                ServeState::Starting => {}
            }
            if start.elapsed() >= options.timeout {
                return Err(ProviderError::Timeout {
                    request: format!("waiting for endpoint {}", s.id),
                    after: options.timeout,
                });
            }
            tokio::time::sleep(pause).await;
            pause = pause.mul_f64(options.factor).min(options.max);
        }
    }
}

/// The state of a served model, provider-neutral.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServeState {
    /// Being set up.
    Starting,
    /// Answers requests.
    Ready,
    /// Stopped (or stopping).
    Stopped,
    /// Failed.
    Failed,
}

/// A served model.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Served {
    /// The provider's endpoint id.
    pub id: String,
    /// The model it serves.
    pub model: String,
    /// What to send as `model` in chat requests to reach it.
    pub chat_model: String,
    /// Neutral state.
    pub state: ServeState,
    /// The provider's own state word.
    pub provider_state: String,
}

#[async_trait]
impl<T: ChatModel + ?Sized> ChatModel for Arc<T> {
    fn provider(&self) -> &str {
        (**self).provider()
    }
    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        (**self).chat(request).await
    }
}

#[async_trait]
impl<T: FineTuner + ?Sized> FineTuner for Arc<T> {
    fn provider(&self) -> &str {
        (**self).provider()
    }
    async fn upload(
        &self,
        filename: &str,
        bytes: Vec<u8>,
        purpose: FilePurpose,
    ) -> Result<UploadedFile, ProviderError> {
        (**self).upload(filename, bytes, purpose).await
    }
    async fn find_file(
        &self,
        filename: &str,
        bytes: u64,
        purpose: FilePurpose,
    ) -> Result<Option<UploadedFile>, ProviderError> {
        (**self).find_file(filename, bytes, purpose).await
    }
    async fn create_job(
        &self,
        spec: &FineTuneSpec,
        client_ref: &str,
    ) -> Result<FineTuneJob, ProviderError> {
        (**self).create_job(spec, client_ref).await
    }
    async fn find_job(&self, client_ref: &str) -> Result<Option<FineTuneJob>, ProviderError> {
        (**self).find_job(client_ref).await
    }
    async fn get_job(&self, id: &str) -> Result<FineTuneJob, ProviderError> {
        (**self).get_job(id).await
    }
    fn offers_price_estimate(&self) -> bool {
        (**self).offers_price_estimate()
    }
    async fn estimate_price(&self, spec: &FineTuneSpec) -> Result<Option<f64>, ProviderError> {
        (**self).estimate_price(spec).await
    }
    async fn list_events(&self, id: &str) -> Result<Vec<JobEvent>, ProviderError> {
        (**self).list_events(id).await
    }
    async fn cancel_job(&self, id: &str) -> Result<FineTuneJob, ProviderError> {
        (**self).cancel_job(id).await
    }
}

#[async_trait]
impl<T: BatchRunner + ?Sized> BatchRunner for Arc<T> {
    async fn submit_batch(
        &self,
        requests: &[(String, ChatRequest)],
    ) -> Result<Batch, ProviderError> {
        (**self).submit_batch(requests).await
    }
    async fn find_batch(
        &self,
        requests: &[(String, ChatRequest)],
    ) -> Result<Option<Batch>, ProviderError> {
        (**self).find_batch(requests).await
    }
    async fn get_batch(&self, id: &str) -> Result<Batch, ProviderError> {
        (**self).get_batch(id).await
    }
    async fn batch_results(&self, id: &str) -> Result<Vec<BatchResult>, ProviderError> {
        (**self).batch_results(id).await
    }
}

#[async_trait]
impl<T: ModelServer + ?Sized> ModelServer for Arc<T> {
    async fn start(&self, model: &str, display_name: &str) -> Result<Served, ProviderError> {
        (**self).start(model, display_name).await
    }
    fn needs_start(&self, model: &str) -> bool {
        (**self).needs_start(model)
    }
    async fn list_running(&self) -> Result<Vec<Served>, ProviderError> {
        (**self).list_running().await
    }
    async fn serves_serverless(&self, model: &str) -> Result<Option<bool>, ProviderError> {
        (**self).serves_serverless(model).await
    }
    async fn find_started(&self, model: &str) -> Result<Option<Served>, ProviderError> {
        (**self).find_started(model).await
    }
    async fn status(&self, served: &Served) -> Result<Served, ProviderError> {
        (**self).status(served).await
    }
    async fn stop(&self, served: &Served) -> Result<(), ProviderError> {
        (**self).stop(served).await
    }
    async fn wait_ready(
        &self,
        served: &Served,
        options: WaitOptions,
    ) -> Result<Served, ProviderError> {
        (**self).wait_ready(served, options).await
    }
}

/// How [`wait_for_job`] polls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WaitOptions {
    /// First pause between polls.
    pub initial: Duration,
    /// Longest pause between polls.
    pub max: Duration,
    /// Factor by which the pause grows.
    pub factor: f64,
    /// Give up after this long (the job keeps running at the provider).
    pub timeout: Duration,
}

impl Default for WaitOptions {
    fn default() -> Self {
        WaitOptions {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(60),
            factor: 1.5,
            timeout: Duration::from_secs(24 * 3600),
        }
    }
}

/// Polls a job with growing pauses until it succeeds, fails or is cancelled, calling
/// `on_poll` with each state seen; returns the fine-tuned model id.
///
/// # Errors
/// [`ProviderError::JobFailed`] if the job ends without a model; [`ProviderError::Timeout`]
/// after `options.timeout`; errors of [`FineTuner::get_job`] that are not retryable
/// (retryable ones are polled through).
pub async fn wait_for_job(
    tuner: &dyn FineTuner,
    id: &str,
    options: WaitOptions,
    mut on_poll: impl FnMut(&FineTuneJob) + Send,
) -> Result<String, ProviderError> {
    let start = tokio::time::Instant::now();
    let mut pause = options.initial;
    loop {
        match tuner.get_job(id).await {
            Ok(job) => {
                on_poll(&job);
                match job.status {
                    JobStatus::Succeeded => {
                        return job
                            .fine_tuned_model
                            .ok_or_else(|| ProviderError::JobFailed {
                                job: id.to_owned(),
                                status: "succeeded".to_owned(),
                                message: "the job succeeded but names no model".to_owned(),
                            });
                    }
                    JobStatus::Failed | JobStatus::Cancelled => {
                        return Err(ProviderError::JobFailed {
                            job: id.to_owned(),
                            status: job.status.as_str().to_owned(),
                            message: job.error.unwrap_or_else(|| "no reason given".to_owned()),
                        });
                    }
                    _ => {}
                }
            }
            Err(e) if e.is_retryable() => {}
            Err(e) => return Err(e),
        }
        if start.elapsed() >= options.timeout {
            return Err(ProviderError::Timeout {
                request: format!("waiting for fine-tuning job {id}"),
                after: options.timeout,
            });
        }
        tokio::time::sleep(pause).await;
        pause = pause.mul_f64(options.factor).min(options.max);
    }
}
