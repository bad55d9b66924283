//! The `ChatModel` and `FineTuner` backend: models loaded once per model id and shared,
//! all served by one worker thread that gathers each model's waiting requests into batches
//! (one thread, so that the process holds one working set, not one per model); a model id
//! `<base>+<adapter dir>` is the base with a PEFT adapter applied (the base loaded once and
//! shared by all its adapters); fine-tuning through a [`LocalFineTuner`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

use async_trait::async_trait;
use tokio::sync::{Mutex, Semaphore, oneshot};
use xlt_provider::{
    Capabilities, ChatModel, ChatRequest, ChatResponse, FilePurpose, FineTuneJob, FineTuneSpec,
    FineTuner, JobEvent, LetterLogprobs, ProviderError, TokenLogprob, UploadedFile, Usage,
};

use crate::LocalError;
use crate::finetune::{LocalFineTuner, ModelLoader};
use crate::generate::{ChatPrompt, GenerateParams, Generation, LocalModel};
use crate::llama::Ops;
use crate::load::{LoadOptions, ModelSource};
use crate::lora::LoraConfig;

/// The provider's name in messages and caches.
pub const PROVIDER: &str = "local";

/// How loaded models are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOptions {
    /// Prompts run together in one batch at most. The requests waiting when the provider's
    /// worker becomes free are grouped by model, and each model's are sorted by prompt length and cut into batches of this size,
    /// so that prompts of similar length share a batch. Letter requests
    /// ([`ChatRequest::letters`]) batch only where their numbers do not depend on which
    /// requests shared a batch ([`LocalModel::scores_batch_invariant`]); elsewhere they
    /// run one prompt a pass.
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
    /// The served model the job runs on.
    model: Arc<LocalModel>,
    /// The prompt's tokens and its context (the system turn and the user header), whose keys and values the
    /// model keeps between jobs.
    prompt: ChatPrompt,
    /// `None`: score the answer letters ([`LocalModel::letter_logprobs`]) instead.
    params: Option<GenerateParams>,
    reply: oneshot::Sender<Result<Answer, String>>,
}

/// What a job gets back.
enum Answer {
    Generated(Generation),
    Letters([f64; 4]),
}

/// One loaded model: its admission bound. Its jobs run on the provider's worker.
struct Served {
    model: Arc<LocalModel>,
    permits: Semaphore,
}

impl Served {
    fn new(model: Arc<LocalModel>, options: ServeOptions) -> Served {
        Served {
            model,
            permits: Semaphore::new(options.max_concurrent.max(1)),
        }
    }
}

/// The name of the provider's worker thread (as `/proc/<pid>/task/<tid>/comm` shows it).
const WORKER_THREAD: &str = "xlt-local-serve";

/// Starts the worker thread that runs every served model's jobs, one batch at a time, and
/// returns the sender its jobs go to; the thread ends when the sender is dropped.
///
/// One thread for all models, rather than one per model: glibc's `malloc` gives each thread
/// that allocates its own arena, which keeps the pages of its peak working set after they
/// are freed, so a thread per model (the base and every `<base>+<adapter>`) held each
/// model's peak at once; on SmolLM2-135M that was about 450 MiB more resident memory per
/// adapter evaluated (issue #26). The models' batches took turns on the CPU's cores anyway
/// (each product runs on the shared rayon pool).
fn start_worker(max_batch: usize) -> std::io::Result<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    let max_batch = max_batch.max(1);
    std::thread::Builder::new()
        .name(WORKER_THREAD.to_owned())
        .spawn(move || serve(&rx, max_batch))?;
    Ok(tx)
}

/// The worker's loop: everything waiting when it becomes free (at most `max_concurrent` a
/// model, the semaphores' bound), grouped by model in the order the models first appear,
/// each model's letter requests before its generation requests, each kind sorted by
/// prompt length and cut into batches of `max_batch`: prompts of similar length share a
/// batch, so left padding costs little.
fn serve(rx: &mpsc::Receiver<Job>, max_batch: usize) {
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        while let Ok(j) = rx.try_recv() {
            waiting.push(j);
        }
        // Each model's rank: the order in which the models first appear.
        let mut models: Vec<*const LocalModel> = Vec::new();
        let mut rank = |j: &Job| {
            let p = Arc::as_ptr(&j.model);
            models.iter().position(|&m| m == p).unwrap_or_else(|| {
                models.push(p);
                models.len() - 1
            })
        };
        let mut keyed: Vec<(usize, Job)> = waiting.into_iter().map(|j| (rank(&j), j)).collect();
        keyed.sort_by_key(|(m, j)| (*m, j.params.is_some(), j.prompt.tokens().len()));
        let mut waiting = keyed.into_iter().peekable();
        while let Some((model, kind)) = waiting.peek().map(|(m, j)| (*m, j.params.is_some())) {
            // Letter requests batch only where the model scores each prompt the same
            // bits in any batch (`LocalModel::scores_batch_invariant`: packed passes on
            // the CPU in f32 or f64); elsewhere (bf16, a GPU) one prompt a pass. Their
            // log-probabilities are recorded as numbers: were they to depend on which
            // requests happened to be waiting, a resumed study would not reproduce an
            // uninterrupted one byte for byte.
            let letters_batch = waiting
                .peek()
                .is_some_and(|(_, j)| j.model.scores_batch_invariant());
            let limit = if kind || letters_batch { max_batch } else { 1 };
            let mut batch = Vec::with_capacity(limit);
            while batch.len() < limit
                && let Some((_, j)) =
                    waiting.next_if(|(m, j)| *m == model && j.params.is_some() == kind)
            {
                batch.push(j);
            }
            run_batch(batch);
        }
    }
}

/// Runs one batch (jobs of one model) and answers each of its jobs.
fn run_batch(batch: Vec<Job>) {
    let Some(model) = batch.first().map(|j| j.model.clone()) else {
        return;
    };
    let prompts: Vec<ChatPrompt> = batch.iter().map(|j| j.prompt.clone()).collect();
    let params: Option<Vec<GenerateParams>> = batch.iter().map(|j| j.params).collect();
    let answers = match params {
        Some(params) => model
            .generate(
                &prompts
                    .into_iter()
                    .map(ChatPrompt::into_tokens)
                    .collect::<Vec<_>>(),
                &params,
            )
            .map(|g| g.into_iter().map(Answer::Generated).collect::<Vec<_>>()),
        None => model
            .letter_logprobs(&prompts)
            .map(|l| l.into_iter().map(Answer::Letters).collect()),
    };
    match answers {
        Ok(answers) => {
            for (job, a) in batch.into_iter().zip(answers) {
                let _ = job.reply.send(Ok(a));
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
/// A model id `<base>+<adapter dir>` (what [`LocalFineTuner`] names the models it trains)
/// is the base model with the PEFT adapter of that directory applied, unmerged
/// ([`LocalModel::with_adapter`]); the id is split at its first `+` unless the whole id is
/// an existing path. The base is loaded once and shared by itself and all its adapters.
///
/// Every model's requests run on one worker thread of the provider, a batch at a time
/// (started with the first request, ended when the provider is dropped): the models take
/// turns on the cores, and the process's memory holds one batch's working set, however
/// many models are served (see [`ServeOptions`] for how batches are formed).
///
/// Fine-tuning ([`FineTuner`]) is there once [`LocalProvider::with_fine_tuning`] names a
/// directory for its jobs; without one the methods answer [`ProviderError::Unsupported`].
pub struct LocalProvider {
    load: LoadOptions,
    serve: ServeOptions,
    models: Mutex<HashMap<String, Arc<Served>>>,
    /// The worker thread's queue, started with the first request.
    worker: std::sync::Mutex<Option<mpsc::Sender<Job>>>,
    fetch: Option<Fetcher>,
    tuning: Option<(PathBuf, usize)>,
    tuner: Option<LocalFineTuner>,
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
            worker: std::sync::Mutex::new(None),
            fetch: None,
            tuning: None,
            tuner: None,
        }
    }

    /// Resolves Hub model ids through `fetch` (which may download) instead of the read-only
    /// lookup in the local cache ([`crate::resolve_model_id`]), for chat and fine-tuning.
    #[must_use]
    pub fn with_fetcher(mut self, fetch: Fetcher) -> Self {
        self.fetch = Some(fetch);
        self.rebuild_tuner();
        self
    }

    /// Fine-tunes through a [`LocalFineTuner`] keeping its files, jobs, checkpoints and
    /// adapters under `root`, checkpointing every `checkpoint_steps` optimizer steps. Its
    /// base models are loaded as this provider loads them (device, dtype, fetcher), with
    /// differentiable kernels; LoRA settings come from each job's spec (PEFT's defaults
    /// without them).
    #[must_use]
    pub fn with_fine_tuning(mut self, root: impl Into<PathBuf>, checkpoint_steps: usize) -> Self {
        self.tuning = Some((root.into(), checkpoint_steps));
        self.rebuild_tuner();
        self
    }

    fn rebuild_tuner(&mut self) {
        let Some((root, steps)) = &self.tuning else {
            return;
        };
        let load = LoadOptions {
            ops: Ops::Differentiable,
            ..self.load.clone()
        };
        let fetch = self.fetch.clone();
        let loader: ModelLoader = Arc::new(move |id: &str| load_model(id, &load, fetch.as_ref()));
        self.tuner = Some(
            LocalFineTuner::new(root.clone(), loader, LoraConfig::default())
                .with_checkpoint_steps(*steps),
        );
    }

    /// The fine-tuning backend, when [`LocalProvider::with_fine_tuning`] set one up.
    pub fn fine_tuner(&self) -> Option<&LocalFineTuner> {
        self.tuner.as_ref()
    }

    /// How models are loaded (device, dtype, kernels).
    pub fn load_options(&self) -> &LoadOptions {
        &self.load
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
        self.models.lock().await.insert(
            name.to_owned(),
            Arc::new(Served::new(Arc::new(model), self.serve)),
        );
    }

    /// The model named `name`, loaded now if it is not yet.
    ///
    /// # Errors
    /// The loader's error, as [`ProviderError::InvalidRequest`] naming the model.
    pub async fn model(&self, name: &str) -> Result<Arc<LocalModel>, ProviderError> {
        Ok(self.served(name).await?.model.clone())
    }

    /// Loads `name` (resolving an id, fetching what a cache lacks) to check that it loads,
    /// then frees it, unless it is already served: a program checks its model before
    /// anything else without holding its weights through the phases that do not need them
    /// (a local study's calibration and training load their own copy for training). The
    /// first request loads it again.
    ///
    /// # Errors
    /// As [`LocalProvider::model`].
    pub async fn check_model(&self, name: &str) -> Result<(), ProviderError> {
        if self.models.lock().await.contains_key(name) {
            return Ok(());
        }
        if let Some((base, adapter)) = split_adapter_id(name) {
            let base = Arc::new(self.load_blocking(base).await?);
            let adapter = PathBuf::from(adapter);
            return tokio::task::spawn_blocking(move || base.with_adapter(&adapter).map(drop))
                .await
                .map_err(|e| invalid(name, e))?
                .map_err(|e| invalid(name, e));
        }
        self.load_blocking(name).await.map(drop)
    }

    async fn served(&self, name: &str) -> Result<Arc<Served>, ProviderError> {
        // The lock is held while loading, so that concurrent first requests load once.
        let mut models = self.models.lock().await;
        if let Some(s) = models.get(name) {
            return Ok(s.clone());
        }
        let model = match split_adapter_id(name) {
            Some((base, adapter)) => {
                let base_model = match models.get(base) {
                    Some(s) => s.model.clone(),
                    None => {
                        let m = Arc::new(self.load_blocking(base).await?);
                        models.insert(
                            base.to_owned(),
                            Arc::new(Served::new(m.clone(), self.serve)),
                        );
                        m
                    }
                };
                let adapter = PathBuf::from(adapter);
                tokio::task::spawn_blocking(move || base_model.with_adapter(&adapter))
                    .await
                    .map_err(|e| invalid(name, e))?
                    .map_err(|e| invalid(name, e))?
            }
            None => self.load_blocking(name).await?,
        };
        tracing::info!(model = name, "loaded local model");
        let served = Arc::new(Served::new(Arc::new(model), self.serve));
        models.insert(name.to_owned(), served.clone());
        Ok(served)
    }

    async fn load_blocking(&self, name: &str) -> Result<LocalModel, ProviderError> {
        let (load, fetch, id) = (self.load.clone(), self.fetch.clone(), name.to_owned());
        tokio::task::spawn_blocking(move || load_model(&id, &load, fetch.as_ref()))
            .await
            .map_err(|e| invalid(name, e))?
            .map_err(|e| load_error(name, e))
    }

    /// Queues `job` for the worker thread, starting it on first use.
    fn submit(&self, job: Job) -> Result<(), String> {
        let mut worker = self.worker.lock().unwrap_or_else(|e| e.into_inner());
        let tx = match &*worker {
            Some(tx) => tx,
            None => worker.insert(
                start_worker(self.serve.max_batch)
                    .map_err(|e| format!("cannot start the model's worker thread: {e}"))?,
            ),
        };
        tx.send(job)
            .map_err(|_| "the model's worker has stopped".to_owned())
    }

    fn tuner(&self) -> Result<&LocalFineTuner, ProviderError> {
        self.tuner
            .as_ref()
            .ok_or_else(|| ProviderError::Unsupported {
                provider: PROVIDER.into(),
                what:
                    "fine-tuning without a directory for its jobs (LocalProvider::with_fine_tuning)"
                        .into(),
            })
    }
}

/// `<base>+<adapter dir>` split at the first `+`, unless `name` is an existing path.
fn split_adapter_id(name: &str) -> Option<(&str, &str)> {
    if Path::new(name).exists() {
        return None;
    }
    name.split_once('+')
        .filter(|(b, a)| !b.is_empty() && !a.is_empty())
}

/// Loads the model `name` names (a directory, a `.gguf` file, a Hub id through `fetch` or
/// the local cache).
fn load_model(
    name: &str,
    load: &LoadOptions,
    fetch: Option<&Fetcher>,
) -> Result<LocalModel, LocalError> {
    let source = match (ModelSource::parse(name)?, fetch) {
        (ModelSource::HubId(id), Some(fetch)) => match fetch(&id) {
            Ok(dir) => ModelSource::Dir(dir),
            Err(message) => return Err(LocalError::Fetch { id, message }),
        },
        (source, _) => source,
    };
    LocalModel::load(&source, load)
}

fn invalid(model: &str, e: impl std::fmt::Display) -> ProviderError {
    ProviderError::InvalidRequest(format!("local model {model}: {e}"))
}

/// A loading error as an invalid request that says "invalid request:" once: the provider
/// error adds the prefix, so [`LocalError::Invalid`]'s own is left out, and a message that
/// already begins with the model's name does not repeat it.
fn load_error(model: &str, e: LocalError) -> ProviderError {
    match e {
        LocalError::Invalid(m) if m.starts_with(model) => {
            ProviderError::InvalidRequest(format!("local model {m}"))
        }
        LocalError::Invalid(m) => invalid(model, m),
        other => invalid(model, other),
    }
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
            fine_tuning: self.tuner.is_some(),
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
            .encode_chat_prompt(&request.messages)
            .map_err(|e| invalid(&request.model, e))?;
        let params = (!request.letters).then(|| GenerateParams {
            max_tokens: request.max_tokens.map_or(256, |m| m as usize),
            temperature: request.temperature.unwrap_or(0.0),
            seed: request.seed.unwrap_or(0),
            top_logprobs: request.top_logprobs.map_or(0, usize::from),
        });
        let prompt_tokens = prompt.tokens().len() as u32;
        let (tx, rx) = oneshot::channel();
        self.submit(Job {
            model: served.model.clone(),
            prompt,
            params,
            reply: tx,
        })
        .map_err(|e| invalid(&request.model, e))?;
        let answer = rx
            .await
            .map_err(|_| invalid(&request.model, "the model's worker has stopped"))?
            .map_err(|e| invalid(&request.model, e))?;
        let g = match answer {
            Answer::Generated(g) => g,
            Answer::Letters(l) => {
                // No text is generated: one forward pass over the prompt.
                return Ok(ChatResponse {
                    model: request.model.clone(),
                    text: String::new(),
                    finish_reason: Some("letters".to_owned()),
                    usage: Usage {
                        prompt_tokens,
                        completion_tokens: 0,
                    },
                    top_logprobs: None,
                    letter_logprobs: Some(LetterLogprobs::from_array(l.map(Some))),
                    rate_limit: None,
                });
            }
        };
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
            letter_logprobs: None,
            rate_limit: None,
        })
    }
}

#[async_trait]
impl FineTuner for LocalProvider {
    fn provider(&self) -> &str {
        PROVIDER
    }

    async fn upload(
        &self,
        filename: &str,
        bytes: Vec<u8>,
        purpose: FilePurpose,
    ) -> Result<UploadedFile, ProviderError> {
        self.tuner()?.upload(filename, bytes, purpose).await
    }

    async fn create_job(
        &self,
        spec: &FineTuneSpec,
        client_ref: &str,
    ) -> Result<FineTuneJob, ProviderError> {
        self.tuner()?.create_job(spec, client_ref).await
    }

    async fn find_job(&self, client_ref: &str) -> Result<Option<FineTuneJob>, ProviderError> {
        self.tuner()?.find_job(client_ref).await
    }

    async fn get_job(&self, id: &str) -> Result<FineTuneJob, ProviderError> {
        self.tuner()?.get_job(id).await
    }

    async fn list_events(&self, id: &str) -> Result<Vec<JobEvent>, ProviderError> {
        self.tuner()?.list_events(id).await
    }

    async fn cancel_job(&self, id: &str) -> Result<FineTuneJob, ProviderError> {
        self.tuner()?.cancel_job(id).await
    }
}
