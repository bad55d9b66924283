//! Fine-tuning every slice and evaluating every model, resumably.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use xlt_data::Manifest;
use xlt_grade::{Grader, OutcomeRecord, to_jsonl};
use xlt_provider::{
    Batch, BatchRunner, BatchStatus, ChatMessage, ChatModel, ChatRequest, ChatResponse,
    FilePurpose, FineTuneJob, FineTuneSpec, FineTuner, Hyperparameters, JobLedger, LoraSpec,
    ModelServer, Progress, ProviderError, ResponseCache, Role, RunOptions, Served, WaitOptions,
    run_chat, stable_hash, wait_for_job,
};

use crate::StudyError;
use crate::atomic::write_atomic;
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
        write_atomic(&dir.join("models.json"), json.as_bytes())
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
    /// LoRA settings, for backends that train adapters (`FineTuneSpec::lora`).
    pub lora: Option<LoraSpec>,
    /// How to poll.
    pub wait: WaitOptions,
}

/// Fine-tunes every job in `slices` through the ledger (an already submitted spec resumes
/// its job; an already uploaded file is reused), waits for every job concurrently, and writes
/// `<exp>/models.json` each time one finishes. `on_job` sees every state of every job.
///
/// A job is a slice (`en-stem`) or a seed replicate of one (`en-stem#2`, see
/// [`replicate_jobs`]): a replicate trains on its slice's file with the seed
/// [`replicate_seed`] derives, and `models.json` keys its model by the job's label.
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
        let file = upload_slice(exp, slice, tuner, ledger).await?;
        let spec = spec_for(slice, options, file);
        let job = ledger
            .submit_or_resume(tuner, &spec)
            .await
            .map_err(|e| match e {
                e @ ProviderError::JobFailed { .. } => StudyError::FineTune {
                    slice: slice.clone(),
                    file: path.clone(),
                    source: e,
                },
                e => StudyError::from(e),
            })?;
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
                // The ledger keeps the terminal state and its reason, so that a rerun knows
                // why and does not pay again blindly.
                let mut advice = String::new();
                if let Ok(job) = tuner.get_job(&id).await {
                    ledger.record(&job).await?;
                    if job.failed_on_training_data() {
                        advice =
                            "; the training data is at fault: fix the file and rerun".to_owned();
                    } else if job.status == xlt_provider::JobStatus::Failed {
                        advice = "; a rerun submits it again once".to_owned();
                    }
                }
                let e = match e {
                    ProviderError::JobFailed {
                        job,
                        status,
                        message,
                    } => ProviderError::JobFailed {
                        job,
                        status,
                        message: message + &advice,
                    },
                    e => e,
                };
                first_error.get_or_insert(StudyError::FineTune {
                    file: exp.finetune_file(&slice),
                    slice,
                    source: e,
                });
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
    let name = path.file_name().map_or_else(
        || format!("{slice}.jsonl"),
        |n| n.to_string_lossy().into_owned(),
    );
    Ok(ledger
        .upload_once(tuner, &name, bytes, FilePurpose::FineTune)
        .await?
        .id)
}

/// The spec of a job (a slice, or a replicate `<slice>#<k>`): the slice's suffix and the
/// run's seed for a slice and for replicate 1; `<slice>-r<k>` and [`replicate_seed`] for
/// replicate k >= 2.
fn spec_for(job: &str, options: &FinetuneOptions, training_file: String) -> FineTuneSpec {
    let (slice, k) = xlt_stats::split_label(job).unwrap_or((job, None));
    let k = k.unwrap_or(1);
    FineTuneSpec {
        base_model: options.base_model.clone(),
        training_file,
        validation_file: None,
        hyperparameters: options.hyperparameters,
        suffix: Some(if k == 1 {
            slice.to_owned()
        } else {
            format!("{slice}-r{k}")
        }),
        seed: replicate_seed(options.seed, slice, k),
        lora: options.lora.clone(),
    }
}

/// The fine-tuning jobs of `slices` with `replicates` fine-tunes each: the slices themselves
/// when `replicates` is 1 (as every study without replicates), else `<slice>#1` to
/// `<slice>#N` for each slice in turn ([`xlt_stats::ReplicateLabel`]).
pub fn replicate_jobs(slices: &[String], replicates: u32) -> Vec<String> {
    slices
        .iter()
        .flat_map(|s| {
            (1..=replicates.max(1))
                .map(move |k| xlt_stats::ReplicateLabel::new(s, k, replicates).to_string())
        })
        .collect()
}

/// The training seed of replicate `k` (1-based) of `slice` in a run with seed `seed`.
/// Replicate 1 is trained with the run's seed itself, so that a study without replicates is
/// replicate 1 of any study with them (the job ledger then finds its job and does not pay
/// for it again). Replicate k >= 2 gets the first 32 bits of
/// SHA-256(`xlt-replicate:<seed>:<slice>:<k>`) with the top bit cleared, 0 to 2^31 - 1,
/// the range OpenAI's fine-tuning `seed` accepts (Together's `random_seed` and the local
/// trainer take any such integer); a run without a seed derives from 0. The seed reaches
/// every provider that takes one: the local trainer (data order, LoRA initialization,
/// dropout), Together (`random_seed`), OpenAI (`seed`) and the embedded provider (data
/// order).
pub fn replicate_seed(seed: Option<u64>, slice: &str, k: u32) -> Option<u64> {
    if k <= 1 {
        return seed;
    }
    let hash = xlt_provider::bytes_hash(
        format!("xlt-replicate:{}:{slice}:{k}", seed.unwrap_or(0)).as_bytes(),
    );
    let top = u32::from_str_radix(&hash[..8], 16).expect("hex digest");
    Some(u64::from(top & 0x7fff_ffff))
}

/// The default output-token limit of an evaluation answer: room for a letter and a short
/// sentence around it (the default prompt asks for the letter only). A reasoning model needs
/// hundreds or thousands; an answer cut off by the limit is counted in the report.
pub const DEFAULT_MAX_TOKENS: u32 = 128;

/// How a model's answer is read (issue #22).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scoring {
    /// Generate up to `max_tokens`, then read the letter from the text (the study's
    /// protocol): regular expressions, then a judge, by the grader.
    #[default]
    Generate,
    /// Score each answer letter's probability at the first reply position
    /// ([`xlt_provider::score_letters`]): one forward pass, no decoding, no judge. Needs a
    /// provider with log-probabilities.
    Letters,
}

impl Scoring {
    /// `generate` or `letters`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scoring::Generate => "generate",
            Scoring::Letters => "letters",
        }
    }
}

impl std::fmt::Display for Scoring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scoring {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "generate" => Ok(Scoring::Generate),
            "letters" => Ok(Scoring::Letters),
            other => Err(format!(
                "unknown scoring `{other}` (expected letters or generate)"
            )),
        }
    }
}

/// How to evaluate.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Requests in flight at once.
    pub concurrency: usize,
    /// How answers are read.
    pub scoring: Scoring,
    /// Cyclic rotations of the options each question is scored under (1: as in the data;
    /// 4: every rotation, an option-order control). Letter scoring only.
    pub rotations: u32,
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
            scoring: Scoring::Generate,
            rotations: 1,
            max_tokens: DEFAULT_MAX_TOKENS,
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
    let rotations = match opts.scoring {
        Scoring::Generate => 1,
        Scoring::Letters => opts.rotations.clamp(1, 4),
    };
    let mut out = Vec::new();
    for set in exp.test_sets()? {
        for r in set.records {
            for rotation in 0..rotations as u8 {
                let (messages, answer) =
                    rotated_prompt(&r, rotation).ok_or_else(|| StudyError::Invalid {
                        what: format!("test set {}, question {}", set.name, r.sample_id),
                        message: "its prompt does not list the options as `A. ..\\nB. ..\\nC. \
                                  ..\\nD. ..`, so it cannot be shown with its options rotated \
                                  (use --rotations 1)"
                            .to_owned(),
                    })?;
                let messages = messages
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
                if opts.scoring == Scoring::Letters {
                    req = xlt_provider::letter_request(&req);
                }
                let id = if rotations > 1 {
                    format!("{}/{}#{rotation}", set.name, r.sample_id)
                } else {
                    format!("{}/{}", set.name, r.sample_id)
                };
                out.push((
                    id,
                    req,
                    Meta {
                        record: r.clone(),
                        rotation,
                        answer,
                        letters: opts.scoring == Scoring::Letters,
                    },
                ));
            }
        }
    }
    Ok(out)
}

/// The prompt of `r` with its options rotated by `rotation` ([`xlt_data::Question::rotated`]:
/// the option shown as letter `i` is option `(i + rotation) mod 4`), and the correct letter
/// as shown. `None` when a rotation is asked for and no message lists the options in the
/// default template's layout (`A. <option A>` to `D. <option D>`, one a line).
fn rotated_prompt(
    r: &xlt_data::EvalRecord,
    rotation: u8,
) -> Option<(Vec<xlt_data::Message>, xlt_data::AnswerLetter)> {
    if rotation == 0 {
        return Some((r.messages.clone(), r.answer));
    }
    let k = usize::from(rotation) % 4;
    let block = |opts: &[String; 4]| {
        format!(
            "A. {}\nB. {}\nC. {}\nD. {}",
            opts[0], opts[1], opts[2], opts[3]
        )
    };
    let original = block(&r.options);
    let shown: [String; 4] = std::array::from_fn(|i| r.options[(i + k) % 4].clone());
    let mut found = false;
    let messages = r
        .messages
        .iter()
        .map(|m| {
            let mut m = m.clone();
            if !found && m.content.contains(&original) {
                m.content = m.content.replacen(&original, &block(&shown), 1);
                found = true;
            }
            m
        })
        .collect();
    found.then(|| {
        (
            messages,
            xlt_data::AnswerLetter::ALL[(r.answer.index() + 4 - k) % 4],
        )
    })
}

/// What a request was for: the question, the rotation of its options, the correct letter
/// as shown, and whether its letters are scored.
struct Meta {
    record: xlt_data::EvalRecord,
    rotation: u8,
    answer: xlt_data::AnswerLetter,
    letters: bool,
}

async fn grade_all(
    label: &str,
    answered: Vec<(Meta, ChatResponse)>,
    grader: &Grader,
) -> Result<Vec<OutcomeRecord>, StudyError> {
    let mut outcomes = Vec::with_capacity(answered.len());
    for (meta, response) in answered {
        if meta.letters {
            let r = meta.record;
            let (logprobs, _) = xlt_provider::letters_of(&response).ok_or_else(|| {
                StudyError::Refused(format!(
                    "model {label} answered question {} without log-probabilities, so its \
                     letters cannot be scored; evaluate with --scoring generate",
                    r.sample_id
                ))
            })?;
            outcomes.push(OutcomeRecord::from_letters(
                &r.sample_id,
                r.language,
                r.domain,
                label,
                meta.answer,
                logprobs,
                meta.rotation,
            ));
            continue;
        }
        let r = meta.record;
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
            finish_reason: response.finish_reason,
            letters: None,
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
    let truncated = outcomes
        .iter()
        .filter(|o| o.finish_reason.as_deref() == Some("length"))
        .count();
    if truncated > 0 {
        tracing::warn!(
            model = %label,
            truncated,
            total = outcomes.len(),
            "answers were cut off by the output-token limit; raise --max-tokens"
        );
    }
    write_outcomes(exp, label, &outcomes)
}

fn write_outcomes(
    exp: &Experiment,
    label: &str,
    outcomes: &[OutcomeRecord],
) -> Result<(), StudyError> {
    write_atomic(&outcomes_path(exp, label), to_jsonl(outcomes).as_bytes())
}

/// Where fine-tuned models are served from, for providers that serve them on demand.
pub struct Serving<'a> {
    /// The server.
    pub server: &'a dyn ModelServer,
    /// How to wait for an endpoint.
    pub wait: WaitOptions,
}

/// An endpoint this experiment asked for, recorded before the request that creates it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct EndpointIntent {
    /// The display name it was given.
    name: String,
    /// The model it serves.
    model: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct EndpointRegistry {
    /// Endpoints asked for and not yet known stopped, whether or not the create request
    /// answered: the account's endpoints serving one of these models are this run's.
    #[serde(default)]
    intents: Vec<EndpointIntent>,
    /// Endpoints known started (their ids).
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
    write_atomic(&registry_path(exp), json.as_bytes())
}

/// The display name of the endpoint serving `label`'s model in the experiment at `exp`:
/// `xlt-<8 hex of the experiment's path>-<label>`, the same in every run of the experiment;
/// a replicate's `#` is written `-r` (`en-stem#2` -> `en-stem-r2`), since an endpoint or
/// adapter name is not always allowed one.
pub fn endpoint_name(exp: &Experiment, label: &str) -> String {
    let run = stable_hash(&exp.dir.display().to_string());
    let label = label.replace(xlt_stats::REPLICATE_SEPARATOR, "-r");
    format!("xlt-{}-{label}", &run[..8])
}

/// Stops every endpoint this experiment started and did not stop (after a Ctrl-C, a SIGTERM,
/// a kill or a crash, even one during the request that created it): those recorded in
/// `<exp>/endpoints.json`, and every endpoint the account lists as its own
/// ([`ModelServer::list_running`]) that serves a model this experiment asked an endpoint
/// for. Returns how many were stopped.
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
    if registry.intents.is_empty() && registry.started.is_empty() {
        return Ok(0);
    }
    let mut to_stop: Vec<Served> = registry.started.clone();
    match server.list_running().await {
        Ok(running) => {
            for s in running {
                // Ours: serving a model we asked for, under the name we gave it (a vLLM
                // adapter's name, which survives a path the server spells differently), or
                // known started.
                let ours = registry
                    .intents
                    .iter()
                    .any(|i| i.model == s.model || i.name == s.chat_model)
                    || registry.started.iter().any(|r| r.id == s.id);
                if ours && !to_stop.iter().any(|t| t.id == s.id) {
                    to_stop.push(s);
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not list the account's endpoints; stopping the recorded ones");
        }
    }
    let mut stopped = 0;
    let mut first = None;
    let mut left = Vec::new();
    for served in to_stop {
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
    if left.is_empty() {
        registry.intents.clear();
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
/// fails the model, and a rerun asks only what the cache does not hold. A model the provider
/// says does not exist (`model_not_found`) stops at the first such answer.
///
/// With `serving`, each fine-tuned model that needs it ([`ModelServer::needs_start`]) is
/// served for its evaluation: the endpoint's name
/// ([`endpoint_name`]) and model are recorded in `<exp>/endpoints.json` before it is asked
/// for; an endpoint already serving the model ([`ModelServer::find_started`], one a killed
/// run started) is reused rather than started and paid for twice; it is stopped when the
/// model is done, whether it succeeded or failed. Endpoints left by an interrupted run are
/// stopped first, except those serving a model still to evaluate, which are reused. Requests
/// keep naming the fine-tuned model (the server's chat routes them to its endpoint), so the
/// cache outlives any endpoint.
///
/// # Errors
/// [`StudyError::Requests`] with the number of failed requests and the first error;
/// [`StudyError::ModelNotFound`].
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
        let job = models.fine_tuned.get(&label).map(|t| t.job_id.as_str());
        let one = ModelToEvaluate {
            label: &label,
            model: &model,
            job,
        };
        match serving.filter(|s| label != "base" && s.server.needs_start(&model)) {
            None => evaluate_model(exp, &one, chat.clone(), grader, opts, on_progress).await?,
            Some(s) => {
                let name = endpoint_name(exp, &label);
                let mut registry = read_registry(exp);
                if !registry.intents.iter().any(|i| i.model == model) {
                    registry.intents.push(EndpointIntent {
                        name: name.clone(),
                        model: model.clone(),
                    });
                }
                write_registry(exp, &registry)?;
                let result = async {
                    // An endpoint a killed run started (and did not record) is reused, not
                    // started and paid for twice.
                    let served = match s.server.find_started(&model).await? {
                        Some(e) => e,
                        None => s.server.start(&model, &name).await?,
                    };
                    let mut registry = read_registry(exp);
                    if !registry.started.iter().any(|e| e.id == served.id) {
                        registry.started.push(served.clone());
                    }
                    write_registry(exp, &registry)?;
                    s.server.wait_ready(&served, s.wait).await?;
                    evaluate_model(exp, &one, chat.clone(), grader, opts, on_progress).await
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

/// One model to evaluate: its label (`base`, a slice), its id, and the job that made it.
struct ModelToEvaluate<'a> {
    label: &'a str,
    model: &'a str,
    job: Option<&'a str>,
}

fn model_not_found(m: &ModelToEvaluate<'_>, message: String) -> StudyError {
    StudyError::ModelNotFound {
        label: m.label.to_owned(),
        model: m.model.to_owned(),
        job: m.job.map(str::to_owned),
        message,
    }
}

/// Evaluates one model.
async fn evaluate_model(
    exp: &Experiment,
    m: &ModelToEvaluate<'_>,
    chat: Arc<dyn ChatModel>,
    grader: &Grader,
    opts: &EvalOptions,
    on_progress: &(dyn Fn(&str, &Progress) + Sync),
) -> Result<(), StudyError> {
    let reqs = requests(exp, m.model, opts)?;
    let mut meta: BTreeMap<String, Meta> = BTreeMap::new();
    let mut to_send = Vec::with_capacity(reqs.len());
    for (id, req, meta_) in reqs {
        meta.insert(id.clone(), meta_);
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
        on_progress(m.label, &progress);
        match result {
            Ok(r) => answered.push((meta.remove(&id).expect("known id"), r)),
            // No other request to this model can succeed: stop sending them (dropping the
            // stream cancels those in flight).
            Err(ProviderError::ModelNotFound { request, message }) => {
                return Err(model_not_found(m, format!("{request}: {message}")));
            }
            // No later request can succeed (quota exhausted, key refused): stop now.
            Err(e) if e.is_fatal() => return Err(e.into()),
            Err(e) => {
                failures += 1;
                first.get_or_insert(e);
            }
        }
    }
    finish_model(exp, m.label, answered, (failures, first), grader).await
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct BatchState {
    /// Model label to the id of its batch not yet harvested.
    batches: BTreeMap<String, String>,
}

/// How many batches a model's evaluation submits in one run (the first, then the
/// resubmissions of lines that failed or never ran) before it reports the rest as failed.
pub const BATCH_ROUNDS: u32 = 3;

/// How [`evaluate_batch`] runs batches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchOptions {
    /// How to poll a batch.
    pub poll: WaitOptions,
    /// Batches per model and run, at least 1 (default [`BATCH_ROUNDS`]).
    pub rounds: u32,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            poll: WaitOptions {
                initial: Duration::from_secs(30),
                max: Duration::from_secs(300),
                factor: 1.5,
                timeout: Duration::from_secs(26 * 3600),
            },
            rounds: BATCH_ROUNDS,
        }
    }
}

fn write_batch_state(path: &Path, state: &BatchState) -> Result<(), StudyError> {
    let json = serde_json::to_string_pretty(state).expect("serializes");
    write_atomic(path, json.as_bytes())
}

/// Polls batch `id` until it is finished.
async fn wait_batch(
    runner: &dyn BatchRunner,
    id: &str,
    label: &str,
    done_before: u64,
    total: u64,
    poll: WaitOptions,
    on_progress: &(dyn Fn(&str, &Progress) + Sync),
) -> Result<Batch, StudyError> {
    let start = std::time::Instant::now();
    let mut pause = poll.initial;
    loop {
        let b = runner.get_batch(id).await?;
        on_progress(
            label,
            &Progress {
                done: (done_before + b.completed).min(total),
                failed: b.failed,
                retried: 0,
                total,
                elapsed: start.elapsed(),
            },
        );
        if b.status != BatchStatus::InProgress {
            return Ok(b);
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
}

/// As [`evaluate`], through a provider's batch API, losing no answer and paying for none
/// twice:
///
/// - each model's requests go out as one batch, its id kept in `<exp>/batches.json`, so
///   that a rerun polls the same batch instead of submitting again;
/// - whatever state the batch ends in (completed, expired, cancelled, failed), every line
///   it answered is stored in `cache`, the same response cache the chat mode reads, and the
///   batch id is cleared once harvested;
/// - the lines that failed or never ran (and only those) go out in a new batch, up to
///   `batch.rounds` batches per model and run, with a log line such as
///   `11/22 done, 11 resubmitted`; a batch that failed as a whole stops with the API's
///   reason;
/// - a model is graded from the cache once every line is answered.
///
/// # Errors
/// Provider errors (a backend without batches gives `Unsupported`); [`StudyError::Requests`]
/// for lines still unanswered after the last round (their answered neighbours stay cached);
/// [`StudyError::Invalid`] for a batch that failed as a whole.
#[allow(clippy::too_many_arguments)] // each is a different concern; see the docs above
pub async fn evaluate_batch(
    exp: &Experiment,
    models: &ModelsFile,
    runner: &dyn BatchRunner,
    cache: &ResponseCache,
    grader: &Grader,
    opts: &EvalOptions,
    batch: &BatchOptions,
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
        let by_id: BTreeMap<&str, &ChatRequest> =
            reqs.iter().map(|(id, r, _)| (id.as_str(), r)).collect();
        let total = reqs.len() as u64;
        let mut submitted = 0u32;
        let mut resubmitted = 0u64;
        let mut errors: BTreeMap<String, ProviderError> = BTreeMap::new();
        loop {
            let done_before = reqs
                .iter()
                .filter(|(_, r, _)| cache.get(r).is_some())
                .count() as u64;
            let mut harvested = None;
            if let Some(id) = state.batches.get(&label).cloned() {
                let b = wait_batch(
                    runner,
                    &id,
                    &label,
                    done_before,
                    total,
                    batch.poll,
                    on_progress,
                )
                .await?;
                for r in runner.batch_results(&id).await? {
                    match (by_id.get(r.custom_id.as_str()), r.result) {
                        (Some(req), Ok(resp)) => {
                            cache.put(req, &resp)?;
                            errors.remove(&r.custom_id);
                        }
                        (Some(_), Err(e)) => {
                            errors.insert(r.custom_id, e);
                        }
                        (None, _) => {
                            tracing::warn!(batch = %id, custom_id = %r.custom_id, "a result for no request of this model; ignored");
                        }
                    }
                }
                state.batches.remove(&label);
                write_batch_state(&state_path, &state)?;
                if b.status == BatchStatus::Failed {
                    let reason = if b.errors.is_empty() {
                        "no reason given".to_owned()
                    } else {
                        b.errors.join("; ")
                    };
                    return Err(StudyError::Invalid {
                        what: format!("batch {id} for `{label}`"),
                        message: format!(
                            "failed: {reason}; any answered lines are cached, and a rerun submits the others"
                        ),
                    });
                }
                harvested = Some(b);
            }
            let pending: Vec<(String, ChatRequest)> = reqs
                .iter()
                .filter(|(_, r, _)| cache.get(r).is_none())
                .map(|(id, r, _)| (id.clone(), r.clone()))
                .collect();
            let done = total - pending.len() as u64;
            if pending.is_empty() {
                if let Some(b) = &harvested {
                    tracing::info!(model = %label, batch = %b.id, "batch `{}`: {done}/{total} done", b.provider_status);
                }
                break;
            }
            if submitted >= batch.rounds.max(1) {
                let first =
                    errors
                        .into_values()
                        .next()
                        .unwrap_or_else(|| ProviderError::NotFound {
                            what: format!(
                                "results for {} request(s) that never ran in {submitted} batch(es)",
                                pending.len()
                            ),
                        });
                return Err(StudyError::Requests {
                    model: label.clone(),
                    failed: pending.len(),
                    first,
                });
            }
            if let Some(b) = &harvested {
                resubmitted += pending.len() as u64;
                tracing::warn!(
                    model = %label,
                    batch = %b.id,
                    "batch ended `{}`: {done}/{total} done, {} resubmitted",
                    b.provider_status,
                    pending.len()
                );
            }
            on_progress(
                &label,
                &Progress {
                    done,
                    failed: errors.len() as u64,
                    retried: resubmitted,
                    total,
                    elapsed: Duration::ZERO,
                },
            );
            let b = runner.submit_batch(&pending).await?;
            state.batches.insert(label.clone(), b.id.clone());
            write_batch_state(&state_path, &state)?;
            submitted += 1;
        }
        let answered = reqs
            .into_iter()
            .map(|(id, r, m)| {
                let resp = cache.get(&r).ok_or_else(|| StudyError::Invalid {
                    what: format!("cached answer to {id}"),
                    message: "vanished from the cache while the batch ran".to_owned(),
                })?;
                Ok((m, resp))
            })
            .collect::<Result<Vec<_>, StudyError>>()?;
        finish_model(exp, &label, answered, (0, None), grader).await?;
    }
    Ok(())
}
