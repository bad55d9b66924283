//! Fine-tuning every slice and evaluating every model, resumably.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use xlt_data::{Manifest, write_atomic};
use xlt_grade::{Grader, OutcomeRecord, to_jsonl};
use xlt_provider::{
    BatchResult, BatchRunner, BatchStatus, ChatMessage, ChatModel, ChatRequest, ChatResponse,
    FilePurpose, FineTuneJob, FineTuneSpec, FineTuner, Hyperparameters, JobLedger, ModelServer,
    Progress, ProviderError, Role, RunOptions, Served, WaitOptions, run_chat, wait_for_job,
};

use crate::StudyError;
use crate::experiment::{Experiment, read};

/// A fine-tuned model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunedModel {
    /// The provider's job id.
    pub job_id: String,
    /// The fine-tuned model id.
    pub model: String,
}

/// `models.json`: the base model and the model fine-tuned on each slice.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ModelsFile {
    /// The provider.
    pub provider: String,
    /// The base model.
    pub base_model: String,
    /// Slice name (`en-stem`) to its model.
    pub fine_tuned: BTreeMap<String, TunedModel>,
}

impl ModelsFile {
    /// Reads `<dir>/models.json`.
    ///
    /// # Errors
    /// [`StudyError::Invalid`] saying to run `finetune` first if the experiment has no
    /// `models.json` yet; [`StudyError::Io`] or [`StudyError::Invalid`] otherwise.
    pub fn read(dir: &Path) -> Result<ModelsFile, StudyError> {
        let path = dir.join("models.json");
        if !path.exists() && dir.join("manifest.json").exists() {
            return Err(StudyError::Invalid {
                what: path.display().to_string(),
                message: "no fine-tuned models yet; run `finetune` first".to_owned(),
            });
        }
        serde_json::from_str(&read(&path)?).map_err(|e| StudyError::Invalid {
            what: path.display().to_string(),
            message: e.to_string(),
        })
    }

    fn write(&self, dir: &Path) -> Result<(), StudyError> {
        let mut json = serde_json::to_string_pretty(self).expect("serializes");
        json.push('\n');
        write_atomic(&dir.join("models.json"), json.as_bytes()).map_err(StudyError::from)
    }
}

/// How to fine-tune.
#[derive(Debug, Clone)]
pub struct FinetuneOptions {
    /// The base model.
    pub base_model: String,
    /// Hyperparameters.
    pub hyperparameters: Hyperparameters,
    /// Training seed.
    pub seed: Option<u64>,
    /// How to poll.
    pub wait: WaitOptions,
}

/// Fine-tunes every slice in `slices` through the ledger (an already submitted spec resumes
/// its job; an already uploaded file is reused), waits for every job concurrently, and writes
/// `<exp>/models.json` each time one finishes. `on_job` sees every state of every job.
///
/// # Errors
/// The first job that fails, or a provider or storage error; models that finished before it
/// are in `models.json`.
pub async fn finetune(
    exp: &Experiment,
    slices: &[String],
    provider: &str,
    tuner: &dyn FineTuner,
    ledger: &JobLedger,
    options: &FinetuneOptions,
    on_job: &(dyn Fn(&str, &FineTuneJob) + Sync),
) -> Result<ModelsFile, StudyError> {
    let mut models = match ModelsFile::read(&exp.dir) {
        Ok(m) if m.provider == provider && m.base_model == options.base_model => m,
        _ => ModelsFile {
            provider: provider.to_owned(),
            base_model: options.base_model.clone(),
            fine_tuned: BTreeMap::new(),
        },
    };
    // Submit (or resume) every job first, so that they train in parallel.
    let mut jobs = Vec::new();
    for slice in slices {
        let path = exp.finetune_file(slice);
        let bytes = std::fs::read(&path).map_err(|e| StudyError::Io {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let file = ledger
            .upload_once(
                tuner,
                &format!("{slice}.jsonl"),
                bytes,
                FilePurpose::FineTune,
            )
            .await?;
        let spec = FineTuneSpec {
            base_model: options.base_model.clone(),
            training_file: file.id,
            validation_file: None,
            hyperparameters: options.hyperparameters,
            suffix: Some(slice.clone()),
            seed: options.seed,
        };
        let job = ledger.submit_or_resume(tuner, &spec).await?;
        on_job(slice, &job);
        jobs.push((slice.clone(), job.id));
    }
    let mut waits = futures::stream::iter(jobs.into_iter().map(|(slice, id)| async move {
        let result = wait_for_job(tuner, &id, options.wait, |j| {
            on_job(&slice, j);
        })
        .await;
        (slice, id, result)
    }))
    .buffer_unordered(64);
    let mut first_error = None;
    while let Some((slice, id, result)) = waits.next().await {
        match result {
            Ok(model) => {
                if let Ok(job) = tuner.get_job(&id).await {
                    ledger.record(&job).await?;
                }
                models
                    .fine_tuned
                    .insert(slice, TunedModel { job_id: id, model });
                models.write(&exp.dir)?;
            }
            Err(e) => {
                tracing::error!(%slice, job = %id, error = %e, "fine-tuning failed");
                first_error.get_or_insert(StudyError::from(e));
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => {
            // This run's models only: a slice tuned in an earlier run with other settings is
            // not evaluated again.
            models.fine_tuned.retain(|k, _| slices.contains(k));
            models.write(&exp.dir)?;
            Ok(models)
        }
    }
}

/// Asks the provider to price every job of `slices` (uploading the training files through
/// the ledger, which is free and reused by [`finetune`]); `None` if the provider gives no
/// estimate.
///
/// # Errors
/// Provider and storage errors.
pub async fn provider_training_estimate(
    exp: &Experiment,
    slices: &[String],
    tuner: &dyn FineTuner,
    ledger: &JobLedger,
    options: &FinetuneOptions,
) -> Result<Option<f64>, StudyError> {
    let mut total = 0.0;
    for slice in slices {
        let spec = FineTuneSpec {
            training_file: upload_slice(exp, slice, tuner, ledger).await?,
            ..spec_for(slice, options, String::new())
        };
        match tuner.estimate_price(&spec).await? {
            Some(usd) => total += usd,
            None => return Ok(None),
        }
    }
    Ok(Some(total))
}

async fn upload_slice(
    exp: &Experiment,
    slice: &str,
    tuner: &dyn FineTuner,
    ledger: &JobLedger,
) -> Result<String, StudyError> {
    let path = exp.finetune_file(slice);
    let bytes = std::fs::read(&path).map_err(|e| StudyError::Io {
        path: path.clone(),
        message: e.to_string(),
    })?;
    Ok(ledger
        .upload_once(
            tuner,
            &format!("{slice}.jsonl"),
            bytes,
            FilePurpose::FineTune,
        )
        .await?
        .id)
}

fn spec_for(slice: &str, options: &FinetuneOptions, training_file: String) -> FineTuneSpec {
    FineTuneSpec {
        base_model: options.base_model.clone(),
        training_file,
        validation_file: None,
        hyperparameters: options.hyperparameters,
        suffix: Some(slice.to_owned()),
        seed: options.seed,
    }
}

/// How to evaluate.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Output tokens per answer.
    pub max_tokens: u32,
    /// Sampling temperature (0 for the most likely answer).
    pub temperature: f32,
    /// Seed for providers that honour one.
    pub seed: Option<u64>,
    /// The retry wrapper's counter, for progress.
    pub retries: Option<Arc<std::sync::atomic::AtomicU64>>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            concurrency: 8,
            max_tokens: 16,
            temperature: 0.0,
            seed: Some(42),
            retries: None,
        }
    }
}

/// The models to evaluate: `(label, model id)`, `base` first, then each slice.
pub fn labels(models: &ModelsFile) -> Vec<(String, String)> {
    let mut v = vec![("base".to_owned(), models.base_model.clone())];
    v.extend(
        models
            .fine_tuned
            .iter()
            .map(|(s, t)| (s.clone(), t.model.clone())),
    );
    v
}

fn requests(
    exp: &Experiment,
    model: &str,
    opts: &EvalOptions,
) -> Result<Vec<(String, ChatRequest, Meta)>, StudyError> {
    let mut out = Vec::new();
    for set in exp.test_sets()? {
        for r in set.records {
            let messages = r
                .messages
                .iter()
                .map(|m| {
                    let role = match m.role.as_str() {
                        "system" => Role::System,
                        "assistant" => Role::Assistant,
                        _ => Role::User,
                    };
                    ChatMessage::new(role, m.content.clone())
                })
                .collect();
            let mut req = ChatRequest::new(model, messages);
            req.max_tokens = Some(opts.max_tokens);
            req.temperature = Some(opts.temperature);
            req.seed = opts.seed;
            let id = format!("{}/{}", set.name, r.sample_id);
            out.push((id, req, Meta(r)));
        }
    }
    Ok(out)
}

struct Meta(xlt_data::EvalRecord);

async fn grade_all(
    label: &str,
    answered: Vec<(Meta, ChatResponse)>,
    grader: &Grader,
) -> Result<Vec<OutcomeRecord>, StudyError> {
    let mut outcomes = Vec::with_capacity(answered.len());
    for (Meta(r), response) in answered {
        let verdict = grader.grade(&response.text, Some(&r.options)).await?;
        outcomes.push(OutcomeRecord {
            sample_id: r.sample_id,
            language: r.language,
            domain: r.domain,
            model: label.to_owned(),
            response: response.text,
            correct: verdict.letter == Some(r.answer),
            letter: verdict.letter,
            method: verdict.method,
            answer: r.answer,
        });
    }
    outcomes.sort_by(|a, b| {
        (Manifest::slice_name(a.language, a.domain), &a.sample_id)
            .cmp(&(Manifest::slice_name(b.language, b.domain), &b.sample_id))
    });
    Ok(outcomes)
}

fn outcomes_path(exp: &Experiment, label: &str) -> std::path::PathBuf {
    exp.dir.join("outcomes").join(format!("{label}.jsonl"))
}

/// Fails the model if any request failed; else grades its answers and writes its outcomes.
async fn finish_model(
    exp: &Experiment,
    label: &str,
    answered: Vec<(Meta, ChatResponse)>,
    failures: (usize, Option<ProviderError>),
    grader: &Grader,
) -> Result<(), StudyError> {
    if let (failed, Some(first)) = failures {
        return Err(StudyError::Requests {
            model: label.to_owned(),
            failed,
            first,
        });
    }
    let outcomes = grade_all(label, answered, grader).await?;
    write_outcomes(exp, label, &outcomes)
}

fn write_outcomes(
    exp: &Experiment,
    label: &str,
    outcomes: &[OutcomeRecord],
) -> Result<(), StudyError> {
    write_atomic(&outcomes_path(exp, label), to_jsonl(outcomes).as_bytes())
        .map_err(StudyError::from)
}

/// Where fine-tuned models are served from, for providers that serve them on demand.
pub struct Serving<'a> {
    /// The server.
    pub server: &'a dyn ModelServer,
    /// How to wait for an endpoint.
    pub wait: WaitOptions,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct EndpointRegistry {
    started: Vec<Served>,
}

fn registry_path(exp: &Experiment) -> std::path::PathBuf {
    exp.dir.join("endpoints.json")
}

fn read_registry(exp: &Experiment) -> EndpointRegistry {
    std::fs::read_to_string(registry_path(exp))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

fn write_registry(exp: &Experiment, r: &EndpointRegistry) -> Result<(), StudyError> {
    let json = serde_json::to_string_pretty(r).expect("serializes");
    write_atomic(&registry_path(exp), json.as_bytes()).map_err(StudyError::from)
}

/// Stops every endpoint this experiment started and did not stop (after a Ctrl-C, a kill or a
/// crash), as recorded in `<exp>/endpoints.json`. Returns how many were stopped.
///
/// # Errors
/// The first stop that fails (the others are still tried; the failed ones stay recorded).
pub async fn stop_started_endpoints(
    exp: &Experiment,
    server: &dyn ModelServer,
) -> Result<usize, StudyError> {
    stop_endpoints_except(exp, server, &[]).await
}

/// As [`stop_started_endpoints`], keeping those that serve a model of `keep`.
async fn stop_endpoints_except(
    exp: &Experiment,
    server: &dyn ModelServer,
    keep: &[String],
) -> Result<usize, StudyError> {
    let mut registry = read_registry(exp);
    let mut stopped = 0;
    let mut first = None;
    let mut left = Vec::new();
    for served in registry.started.drain(..) {
        if keep.contains(&served.model) {
            left.push(served);
            continue;
        }
        match server.stop(&served).await {
            Ok(()) => stopped += 1,
            Err(e) => {
                tracing::error!(endpoint = %served.id, error = %e, "could not stop endpoint");
                first.get_or_insert(e);
                left.push(served);
            }
        }
    }
    registry.started = left;
    write_registry(exp, &registry)?;
    match first {
        Some(e) => Err(e.into()),
        None => Ok(stopped),
    }
}

/// Evaluates every model of `models` on every test set of `exp` through `chat` (wrap it in
/// the cache, retry and rate limiter), grades each answer with `grader`, and writes
/// `<exp>/outcomes/<label>.jsonl` for each model once all its answers are in. A model whose
/// outcome file exists is skipped; any request that still fails after the wrapper's retries
/// fails the model, and a rerun asks only what the cache does not hold.
///
/// With `serving`, each fine-tuned model is served for its evaluation (on an endpoint
/// already serving it if [`ModelServer::find_started`] finds one, else a new one): the
/// endpoint is recorded in `<exp>/endpoints.json` before it starts and stopped when the model is done,
/// whether it succeeded or failed; endpoints left by an interrupted run are stopped first,
/// except those serving a model still to evaluate, which are reused.
///
/// # Errors
/// [`StudyError::Requests`] with the number of failed requests and the first error.
pub async fn evaluate(
    exp: &Experiment,
    models: &ModelsFile,
    chat: Arc<dyn ChatModel>,
    grader: &Grader,
    opts: &EvalOptions,
    serving: Option<&Serving<'_>>,
    on_progress: &(dyn Fn(&str, &Progress) + Sync),
) -> Result<(), StudyError> {
    if let Some(s) = serving {
        // Endpoints of models still to evaluate are kept, to be found and reused below.
        let pending: Vec<String> = labels(models)
            .into_iter()
            .filter(|(label, _)| !outcomes_path(exp, label).exists())
            .map(|(_, model)| model)
            .collect();
        let n = stop_endpoints_except(exp, s.server, &pending).await?;
        if n > 0 {
            tracing::warn!(n, "stopped endpoints an interrupted run had left running");
        }
    }
    for (label, model) in labels(models) {
        if outcomes_path(exp, &label).exists() {
            tracing::info!(%label, "outcomes exist; skipping");
            continue;
        }
        match serving.filter(|_| label != "base") {
            None => {
                evaluate_model(exp, &label, &model, chat.clone(), grader, opts, on_progress).await?
            }
            Some(s) => {
                // An endpoint a killed run started (and did not record) is reused, not
                // started and paid for twice.
                let served = match s.server.find_started(&model).await? {
                    Some(e) => e,
                    None => s.server.start(&model).await?,
                };
                let mut registry = read_registry(exp);
                if !registry.started.iter().any(|e| e.id == served.id) {
                    registry.started.push(served.clone());
                }
                write_registry(exp, &registry)?;
                let result = async {
                    let ready = s.server.wait_ready(&served, s.wait).await?;
                    evaluate_model(
                        exp,
                        &label,
                        &ready.chat_model,
                        chat.clone(),
                        grader,
                        opts,
                        on_progress,
                    )
                    .await
                }
                .await;
                // Always stop, whatever happened above.
                let stopped = stop_started_endpoints(exp, s.server).await;
                result?;
                stopped?;
            }
        }
    }
    Ok(())
}

/// Evaluates one model, sending `chat_model` as the model id in every request.
async fn evaluate_model(
    exp: &Experiment,
    label: &str,
    chat_model: &str,
    chat: Arc<dyn ChatModel>,
    grader: &Grader,
    opts: &EvalOptions,
    on_progress: &(dyn Fn(&str, &Progress) + Sync),
) -> Result<(), StudyError> {
    let reqs = requests(exp, chat_model, opts)?;
    let mut meta: BTreeMap<String, Meta> = BTreeMap::new();
    let mut to_send = Vec::with_capacity(reqs.len());
    for (id, req, m) in reqs {
        meta.insert(id.clone(), m);
        to_send.push((id, req));
    }
    let mut stream = Box::pin(run_chat(
        chat,
        to_send,
        RunOptions {
            concurrency: opts.concurrency,
            retries: opts.retries.clone(),
        },
    ));
    let mut answered = Vec::new();
    let mut failures = 0;
    let mut first: Option<ProviderError> = None;
    while let Some((id, result, progress)) = stream.next().await {
        on_progress(label, &progress);
        match result {
            Ok(r) => answered.push((meta.remove(&id).expect("known id"), r)),
            // No later request can succeed (quota exhausted, key refused): stop now.
            Err(e) if e.is_fatal() => return Err(e.into()),
            Err(e) => {
                failures += 1;
                first.get_or_insert(e);
            }
        }
    }
    finish_model(exp, label, answered, (failures, first), grader).await
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct BatchState {
    batches: BTreeMap<String, String>,
}

/// As [`evaluate`], through a provider's batch API: one batch per model, its id kept in
/// `<exp>/batches.json` so that a rerun polls the same batch instead of submitting again.
///
/// # Errors
/// Provider errors (a backend without batches gives `Unsupported`), failed requests.
pub async fn evaluate_batch(
    exp: &Experiment,
    models: &ModelsFile,
    runner: &dyn BatchRunner,
    grader: &Grader,
    opts: &EvalOptions,
    poll: WaitOptions,
    on_progress: &(dyn Fn(&str, &Progress) + Sync),
) -> Result<(), StudyError> {
    let state_path = exp.dir.join("batches.json");
    let mut state: BatchState = std::fs::read_to_string(&state_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    for (label, model) in labels(models) {
        if outcomes_path(exp, &label).exists() {
            continue;
        }
        let reqs = requests(exp, &model, opts)?;
        let id = match state.batches.get(&label) {
            Some(id) => id.clone(),
            None => {
                let pairs: Vec<(String, ChatRequest)> = reqs
                    .iter()
                    .map(|(id, r, _)| (id.clone(), r.clone()))
                    .collect();
                let b = runner.submit_batch(&pairs).await?;
                state.batches.insert(label.clone(), b.id.clone());
                let json = serde_json::to_string_pretty(&state).expect("serializes");
                write_atomic(&state_path, json.as_bytes())?;
                b.id
            }
        };
        let start = std::time::Instant::now();
        let mut pause = poll.initial;
        loop {
            let b = runner.get_batch(&id).await?;
            on_progress(
                &label,
                &Progress {
                    done: b.completed + b.failed,
                    failed: b.failed,
                    retried: opts
                        .retries
                        .as_ref()
                        .map_or(0, |r| r.load(std::sync::atomic::Ordering::Relaxed)),
                    total: b.total,
                    elapsed: start.elapsed(),
                },
            );
            match b.status {
                BatchStatus::Completed => break,
                BatchStatus::Failed | BatchStatus::Cancelled => {
                    state.batches.remove(&label);
                    let json = serde_json::to_string_pretty(&state).expect("serializes");
                    write_atomic(&state_path, json.as_bytes())?;
                    return Err(StudyError::Invalid {
                        what: format!("batch {id} for {label}"),
                        message: format!("ended `{}`; rerun to submit it again", b.provider_status),
                    });
                }
                BatchStatus::InProgress => {}
            }
            if start.elapsed() > poll.timeout {
                return Err(StudyError::from(ProviderError::Timeout {
                    request: format!("batch {id}"),
                    after: poll.timeout,
                }));
            }
            tokio::time::sleep(pause).await;
            pause = pause
                .mul_f64(poll.factor)
                .min(poll.max)
                .max(Duration::from_millis(1));
        }
        let mut by_id: BTreeMap<String, BatchResult> = runner
            .batch_results(&id)
            .await?
            .into_iter()
            .map(|r| (r.custom_id.clone(), r))
            .collect();
        let mut answered = Vec::new();
        let mut failures = 0;
        let mut first = None;
        for (rid, _, m) in reqs {
            match by_id.remove(&rid).map(|r| r.result) {
                Some(Ok(resp)) => answered.push((m, resp)),
                Some(Err(e)) => {
                    failures += 1;
                    first.get_or_insert(e);
                }
                None => {
                    failures += 1;
                    first.get_or_insert(ProviderError::NotFound {
                        what: format!("result for {rid} in batch {id}"),
                    });
                }
            }
        }
        finish_model(exp, &label, answered, (failures, first), grader).await?;
    }
    Ok(())
}
