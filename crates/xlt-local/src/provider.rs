//! The `ChatModel` backend: models loaded once per model id and shared, each served by one
//! worker thread that gathers waiting requests into batches.

use std::collections::HashMap;
use std::sync::{Arc, mpsc};

use async_trait::async_trait;
use tokio::sync::{Mutex, Semaphore, oneshot};
use xlt_provider::{
    Capabilities, ChatModel, ChatRequest, ChatResponse, FilePurpose, FineTuneJob, FineTuneSpec,
    FineTuner, JobEvent, ProviderError, TokenLogprob, UploadedFile, Usage,
};

use crate::LocalError;
use crate::generate::{GenerateParams, Generation, LocalModel};
use crate::load::{LoadOptions, ModelSource};

/// The provider's name in messages and caches.
pub const PROVIDER: &str = "local";

/// How loaded models are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOptions {
    /// Prompts run together in one batch at most. The requests waiting when the model's
    /// worker becomes free are sorted by prompt length and cut into batches of this size,
    /// so that prompts of similar length share a batch.
    pub max_batch: usize,
    /// Requests admitted at once per model (running or waiting for a batch); more wait.
    pub max_concurrent: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_batch: 8,
            max_concurrent: 64,
        }
    }
}

struct Job {
    prompt: Vec<u32>,
    params: GenerateParams,
    reply: oneshot::Sender<Result<Generation, String>>,
}

/// One loaded model and its batching worker.
struct Served {
    model: Arc<LocalModel>,
    jobs: mpsc::Sender<Job>,
    permits: Semaphore,
}

impl Served {
    fn start(model: LocalModel, options: ServeOptions) -> Served {
        let model = Arc::new(model);
        let (tx, rx) = mpsc::channel::<Job>();
        let worker = model.clone();
        let max_batch = options.max_batch.max(1);
        std::thread::spawn(move || {
            // Ends when the last sender (the `Served`) is dropped.
            while let Ok(first) = rx.recv() {
                // Everything waiting now (at most `max_concurrent`, the semaphore's bound),
                // sorted by prompt length and cut into batches of `max_batch`: prompts of
                // similar length share a batch, so left padding costs little.
                let mut waiting = vec![first];
                while let Ok(j) = rx.try_recv() {
                    waiting.push(j);
                }
                waiting.sort_by_key(|j| j.prompt.len());
                let mut waiting = waiting.into_iter().peekable();
                while waiting.peek().is_some() {
                    let batch: Vec<Job> = waiting.by_ref().take(max_batch).collect();
                    run_batch(&worker, batch);
                }
            }
        });
        Served {
            model,
            jobs: tx,
            permits: Semaphore::new(options.max_concurrent.max(1)),
        }
    }
}

/// Runs one batch and answers each of its jobs.
fn run_batch(model: &LocalModel, batch: Vec<Job>) {
    let prompts: Vec<Vec<u32>> = batch.iter().map(|j| j.prompt.clone()).collect();
    let params: Vec<GenerateParams> = batch.iter().map(|j| j.params).collect();
    match model.generate(&prompts, &params) {
        Ok(gens) => {
            for (job, g) in batch.into_iter().zip(gens) {
                let _ = job.reply.send(Ok(g));
            }
        }
        Err(e) => {
            for job in batch {
                let _ = job.reply.send(Err(e.to_string()));
            }
        }
    }
}

/// Open-weights models on this machine as a [`ChatModel`]. The request's `model` names the
/// model as `--base-model` does (a directory, a `.gguf` file or a Hub id, found in the
/// local cache or through the provider's [`Fetcher`]); each is loaded on first use, once, and shared by every request after.
///
/// Fine-tuning is not available yet: the [`FineTuner`] methods answer
/// [`ProviderError::Unsupported`].
pub struct LocalProvider {
    load: LoadOptions,
    serve: ServeOptions,
    models: Mutex<HashMap<String, Arc<Served>>>,
    fetch: Option<Fetcher>,
}

/// Turns a Hub model id (`Org/Name`) into the directory of its files, downloading what the
/// local cache lacks (issue #15): the hook through which a Hub client (the workspace's
/// `xlt-hub`) serves model ids, so that this crate itself never speaks HTTP. Blocking; an
/// error becomes [`LocalError::Fetch`], its message shown as is.
pub type Fetcher = Arc<dyn Fn(&str) -> Result<std::path::PathBuf, String> + Send + Sync>;

impl std::fmt::Debug for LocalProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalProvider")
            .field("load", &self.load)
            .field("serve", &self.serve)
            .finish_non_exhaustive()
    }
}

impl LocalProvider {
    /// A provider that loads models with `load` and serves them with `serve`.
    pub fn new(load: LoadOptions, serve: ServeOptions) -> Self {
        LocalProvider {
            load,
            serve,
            models: Mutex::new(HashMap::new()),
            fetch: None,
        }
    }

    /// Resolves Hub model ids through `fetch` (which may download) instead of the read-only
    /// lookup in the local cache ([`crate::resolve_model_id`]).
    #[must_use]
    pub fn with_fetcher(mut self, fetch: Fetcher) -> Self {
        self.fetch = Some(fetch);
        self
    }

    /// A provider configured from the environment, with the default [`ServeOptions`]:
    /// `XLT_DEVICE` (`cpu`, `cuda`, `cuda:N`; default `cpu`) and `XLT_DTYPE` (`f32`,
    /// `bf16`; default `f32`), as [`LoadOptions::from_env_or`] reads them.
    ///
    /// # Errors
    /// [`LocalError::Setting`] for an unknown device or dtype, or a CUDA device in a build
    /// without the `cuda` feature.
    pub fn from_env() -> Result<Self, LocalError> {
        Ok(LocalProvider::new(
            LoadOptions::from_env_or(None, None)?,
            ServeOptions::default(),
        ))
    }

    /// Serves an already loaded model under `name`.
    pub async fn insert(&self, name: &str, model: LocalModel) {
        self.models
            .lock()
            .await
            .insert(name.to_owned(), Arc::new(Served::start(model, self.serve)));
    }

    /// The model named `name`, loaded now if it is not yet.
    ///
    /// # Errors
    /// The loader's error, as [`ProviderError::InvalidRequest`] naming the model.
    pub async fn model(&self, name: &str) -> Result<Arc<LocalModel>, ProviderError> {
        Ok(self.served(name).await?.model.clone())
    }

    async fn served(&self, name: &str) -> Result<Arc<Served>, ProviderError> {
        // The lock is held while loading, so that concurrent first requests load once.
        let mut models = self.models.lock().await;
        if let Some(s) = models.get(name) {
            return Ok(s.clone());
        }
        let source = ModelSource::parse(name).map_err(|e| invalid(name, e))?;
        let load = self.load.clone();
        let fetch = self.fetch.clone();
        let model = tokio::task::spawn_blocking(move || {
            let source = match (source, fetch) {
                (ModelSource::HubId(id), Some(fetch)) => match fetch(&id) {
                    Ok(dir) => ModelSource::Dir(dir),
                    Err(message) => return Err(LocalError::Fetch { id, message }),
                },
                (source, _) => source,
            };
            LocalModel::load(&source, &load)
        })
        .await
        .map_err(|e| invalid(name, e))?
        .map_err(|e| invalid(name, e))?;
        tracing::info!(model = name, "loaded local model");
        let served = Arc::new(Served::start(model, self.serve));
        models.insert(name.to_owned(), served.clone());
        Ok(served)
    }
}

fn invalid(model: &str, e: impl std::fmt::Display) -> ProviderError {
    ProviderError::InvalidRequest(format!("local model {model}: {e}"))
}

#[async_trait]
impl ChatModel for LocalProvider {
    fn provider(&self) -> &str {
        PROVIDER
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            chat: true,
            logprobs: true,
            fine_tuning: false,
            batch: false,
        }
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let served = self.served(&request.model).await?;
        let _permit = served
            .permits
            .acquire()
            .await
            .map_err(|e| invalid(&request.model, e))?;
        let prompt = served
            .model
            .encode_chat(&request.messages)
            .map_err(|e| invalid(&request.model, e))?;
        let params = GenerateParams {
            max_tokens: request.max_tokens.map_or(256, |m| m as usize),
            temperature: request.temperature.unwrap_or(0.0),
            seed: request.seed.unwrap_or(0),
            top_logprobs: request.top_logprobs.map_or(0, usize::from),
        };
        let (tx, rx) = oneshot::channel();
        served
            .jobs
            .send(Job {
                prompt,
                params,
                reply: tx,
            })
            .map_err(|_| invalid(&request.model, "the model's worker has stopped"))?;
        let g = rx
            .await
            .map_err(|_| invalid(&request.model, "the model's worker has stopped"))?
            .map_err(|e| invalid(&request.model, e))?;
        Ok(ChatResponse {
            model: request.model.clone(),
            text: g.text,
            finish_reason: Some(g.finish_reason.as_str().to_owned()),
            usage: Usage {
                prompt_tokens: g.prompt_tokens as u32,
                completion_tokens: g.completion_tokens as u32,
            },
            top_logprobs: request.top_logprobs.map(|_| {
                g.top_logprobs
                    .into_iter()
                    .map(|t| TokenLogprob {
                        token: t.token,
                        logprob: f64::from(t.logprob),
                    })
                    .collect()
            }),
            rate_limit: None,
        })
    }
}

fn no_finetuning() -> ProviderError {
    ProviderError::Unsupported {
        provider: PROVIDER.into(),
        what: "fine-tuning (local LoRA fine-tuning is not implemented yet; a local study evaluates the base model)".into(),
    }
}

#[async_trait]
impl FineTuner for LocalProvider {
    fn provider(&self) -> &str {
        PROVIDER
    }

    async fn upload(
        &self,
        _filename: &str,
        _bytes: Vec<u8>,
        _purpose: FilePurpose,
    ) -> Result<UploadedFile, ProviderError> {
        Err(no_finetuning())
    }

    async fn create_job(
        &self,
        _spec: &FineTuneSpec,
        _client_ref: &str,
    ) -> Result<FineTuneJob, ProviderError> {
        Err(no_finetuning())
    }

    async fn get_job(&self, _id: &str) -> Result<FineTuneJob, ProviderError> {
        Err(no_finetuning())
    }

    async fn list_events(&self, _id: &str) -> Result<Vec<JobEvent>, ProviderError> {
        Err(no_finetuning())
    }

    async fn cancel_job(&self, _id: &str) -> Result<FineTuneJob, ProviderError> {
        Err(no_finetuning())
    }
}
