//! The embedded provider: in-process, deterministic, no network. It fine-tunes and answers
//! so that the whole study runs offline on a fresh machine in seconds.
//!
//! **It is a baseline for offline runs and tests, not a language model.** Its "model" is a
//! linear scorer over hashed features of the question and each option: character 3-grams of
//! the option, the option's letter, words the option shares with the question, and whether
//! the option is the longest (a known MMLU bias). Fine-tuning trains that scorer with
//! softmax regression on the chat JSON Lines. It only answers prompts that list options as
//! lines `A. ...` to `D. ...` (the default prompt template), and replies with a letter.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::ProviderError;
use crate::store::{bytes_hash, storage_err, write_atomic};
use crate::traits::{ChatModel, FineTuner};
use crate::types::{
    Capabilities, ChatRequest, ChatResponse, FilePurpose, FineTuneJob, FineTuneSpec, JobEvent,
    JobStatus, LearningRate, Param, Role, TokenLogprob, UploadedFile, Usage,
};

/// The embedded provider's base model.
pub const EMBEDDED_BASE_MODEL: &str = "xlt-embedded-base";

const DIM: u32 = 1 << 18;
const LETTERS: [&str; 4] = ["A", "B", "C", "D"];

/// Sparse weights: feature index to weight.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Weights(BTreeMap<u32, f64>);

impl Weights {
    fn base() -> Weights {
        let mut w = BTreeMap::new();
        w.insert(feature("SHARE"), 0.6);
        w.insert(feature("LONGEST"), 0.4);
        Weights(w)
    }

    fn score(&self, features: &[(u32, f64)]) -> f64 {
        features
            .iter()
            .map(|(f, v)| self.0.get(f).copied().unwrap_or(0.0) * v)
            .sum()
    }
}

fn feature(name: &str) -> u32 {
    // FNV-1a: stable across runs and platforms, which the model files rely on.
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % DIM
}

/// A question as the embedded model reads it from a prompt.
struct Parsed {
    question: String,
    options: [String; 4],
}

fn parse_prompt(messages: &[crate::types::ChatMessage]) -> Option<Parsed> {
    let user = messages.iter().rev().find(|m| m.role == Role::User)?;
    let mut options: [Option<String>; 4] = Default::default();
    let mut question = String::new();
    for line in user.content.lines() {
        let t = line.trim_start();
        let mut chars = t.chars();
        let (Some(c), Some(sep)) = (chars.next(), chars.next()) else {
            if options.iter().all(Option::is_none) {
                question.push_str(line);
                question.push('\n');
            }
            continue;
        };
        let idx = "ABCD".find(c);
        if let (Some(i), true) = (idx, sep == '.' || sep == ')') {
            options[i] = Some(t[2..].trim().to_owned());
        } else if options.iter().all(Option::is_none) {
            question.push_str(line);
            question.push('\n');
        }
    }
    let [Some(a), Some(b), Some(c), Some(d)] = options else {
        return None;
    };
    Some(Parsed {
        question,
        options: [a, b, c, d],
    })
}

fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 3)
        .map(str::to_lowercase)
        .collect()
}

fn features(p: &Parsed) -> [Vec<(u32, f64)>; 4] {
    let q_words: std::collections::HashSet<String> = words(&p.question).into_iter().collect();
    let longest = p
        .options
        .iter()
        .map(|o| o.chars().count())
        .max()
        .unwrap_or(0);
    std::array::from_fn(|k| {
        let o = &p.options[k];
        let mut f = vec![(feature(&format!("LETTER:{k}")), 1.0)];
        let lower: Vec<char> = o.to_lowercase().chars().collect();
        let n_grams = lower.len().saturating_sub(2).max(1);
        for g in lower.windows(3) {
            let gram: String = g.iter().collect();
            f.push((
                feature(&format!("O3:{gram}")),
                1.0 / (n_grams as f64).sqrt(),
            ));
        }
        let ow = words(o);
        if !ow.is_empty() {
            let shared = ow.iter().filter(|w| q_words.contains(*w)).count();
            f.push((feature("SHARE"), shared as f64 / ow.len() as f64));
        }
        if o.chars().count() == longest {
            f.push((feature("LONGEST"), 1.0));
        }
        f
    })
}

fn softmax(scores: [f64; 4]) -> [f64; 4] {
    let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e = scores.map(|s| (s - m).exp());
    let z: f64 = e.iter().sum();
    e.map(|x| x / z)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredJob {
    job: FineTuneJob,
    spec: FineTuneSpec,
    events: Vec<JobEvent>,
}

/// The embedded provider, keeping its files, jobs and models under one directory so that a
/// run killed half-way resumes where it was.
pub struct EmbeddedProvider {
    dir: PathBuf,
    models: Mutex<HashMap<String, Weights>>,
    jobs: Mutex<()>,
}

impl std::fmt::Debug for EmbeddedProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedProvider")
            .field("dir", &self.dir)
            .finish()
    }
}

impl EmbeddedProvider {
    /// A provider whose state lives under `dir` (created when first needed).
    pub fn open(dir: impl Into<PathBuf>) -> EmbeddedProvider {
        EmbeddedProvider {
            dir: dir.into(),
            models: Mutex::new(HashMap::new()),
            jobs: Mutex::new(()),
        }
    }

    fn job_id(client_ref: &str) -> String {
        format!("ftjob-{}", &bytes_hash(client_ref.as_bytes())[..24])
    }

    fn file_path(&self, id: &str) -> PathBuf {
        self.dir.join("files").join(format!("{id}.jsonl"))
    }

    fn job_path(&self, id: &str) -> PathBuf {
        self.dir.join("jobs").join(format!("{id}.json"))
    }

    fn model_path(&self, model: &str) -> PathBuf {
        let safe: String = model
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join("models").join(format!("{safe}.json"))
    }

    fn weights(&self, model: &str) -> Result<Weights, ProviderError> {
        if model == EMBEDDED_BASE_MODEL {
            return Ok(Weights::base());
        }
        if let Some(w) = self.models.lock().expect("models lock").get(model) {
            return Ok(w.clone());
        }
        let path = self.model_path(model);
        let bytes = std::fs::read(&path).map_err(|_| ProviderError::NotFound {
            what: format!(
                "model `{model}` (the embedded provider has `{EMBEDDED_BASE_MODEL}` and the models it fine-tuned)"
            ),
        })?;
        let w: Weights = serde_json::from_slice(&bytes).map_err(|e| storage_err(&path, e))?;
        self.models
            .lock()
            .expect("models lock")
            .insert(model.to_owned(), w.clone());
        Ok(w)
    }

    fn load_job(&self, id: &str) -> Result<StoredJob, ProviderError> {
        let path = self.job_path(id);
        let bytes = std::fs::read(&path).map_err(|_| ProviderError::NotFound {
            what: format!("fine-tuning job `{id}`"),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| storage_err(&path, e))
    }

    fn save_job(&self, job: &StoredJob) -> Result<(), ProviderError> {
        let bytes = serde_json::to_vec_pretty(job).map_err(|e| storage_err(&self.dir, e))?;
        write_atomic(&self.job_path(&job.job.id), &bytes)
    }

    fn train(&self, spec: &FineTuneSpec) -> Result<(Weights, u64), ProviderError> {
        let path = self.file_path(&spec.training_file);
        let text = std::fs::read_to_string(&path).map_err(|_| ProviderError::NotFound {
            what: format!("file `{}`", spec.training_file),
        })?;
        let mut examples = Vec::new();
        let mut tokens = 0u64;
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            #[derive(Deserialize)]
            struct Line {
                messages: Vec<crate::types::ChatMessage>,
            }
            let parsed: Line = serde_json::from_str(line).map_err(|e| {
                ProviderError::InvalidRequest(format!(
                    "training file {} line {}: {e}",
                    spec.training_file,
                    i + 1
                ))
            })?;
            tokens += (line.len() / 4) as u64;
            let answer = parsed
                .messages
                .iter()
                .rev()
                .find(|m| m.role == Role::Assistant)
                .and_then(|m| LETTERS.iter().position(|l| m.content.trim() == *l));
            let prompt = parse_prompt(&parsed.messages);
            match (prompt, answer) {
                (Some(p), Some(a)) => examples.push((features(&p), a)),
                _ => {
                    return Err(ProviderError::InvalidRequest(format!(
                        "training file {} line {}: the embedded provider needs options `A. ...` to `D. ...` and a one-letter assistant reply",
                        spec.training_file,
                        i + 1
                    )));
                }
            }
        }
        if examples.is_empty() {
            return Err(ProviderError::InvalidRequest(format!(
                "training file {} has no example",
                spec.training_file
            )));
        }
        let epochs = match spec.hyperparameters.epochs {
            Param::Value(e) => e.max(1),
            Param::Auto => 3,
        };
        let lr = match spec.hyperparameters.learning_rate {
            LearningRate::Auto => 0.1,
            LearningRate::Multiplier(m) => 0.25 * m,
            LearningRate::Absolute(a) => a,
        };
        let mut w = if spec.base_model == EMBEDDED_BASE_MODEL {
            Weights::base()
        } else {
            self.weights(&spec.base_model)?
        };
        // Deterministic order: by a hash of (seed, epoch, index).
        let seed = spec.seed.unwrap_or(0);
        for epoch in 0..epochs {
            let mut order: Vec<usize> = (0..examples.len()).collect();
            order.sort_by_key(|&i| bytes_hash(format!("{seed}:{epoch}:{i}").as_bytes()));
            for i in order {
                let (feats, answer) = &examples[i];
                let probs = softmax(std::array::from_fn(|k| w.score(&feats[k])));
                for (k, fk) in feats.iter().enumerate() {
                    let grad = probs[k] - if k == *answer { 1.0 } else { 0.0 };
                    for (f, v) in fk {
                        *w.0.entry(*f).or_insert(0.0) -= lr * grad * v;
                    }
                }
            }
        }
        w.0.retain(|_, v| v.abs() > 1e-9);
        Ok((w, tokens * u64::from(epochs)))
    }
}

#[async_trait]
impl ChatModel for EmbeddedProvider {
    fn provider(&self) -> &str {
        "embedded"
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
        // Answering takes no time: yield once, so that a caller waiting on this beside a
        // cancel future (Ctrl-C) gets to poll it.
        tokio::task::yield_now().await;
        let w = self.weights(&request.model)?;
        let prompt_tokens = request
            .messages
            .iter()
            .map(|m| m.content.len().div_ceil(4) as u32)
            .sum();
        let Some(p) = parse_prompt(&request.messages) else {
            return Ok(ChatResponse {
                model: request.model.clone(),
                text: "I cannot find options A to D in this prompt.".to_owned(),
                finish_reason: Some("stop".to_owned()),
                usage: Usage {
                    prompt_tokens,
                    completion_tokens: 10,
                },
                top_logprobs: None,
                letter_logprobs: None,
                rate_limit: None,
            });
        };
        let feats = features(&p);
        let probs = softmax(std::array::from_fn(|k| w.score(&feats[k])));
        let mut ranked: Vec<usize> = (0..4).collect();
        ranked.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
        let top_logprobs = request.top_logprobs.map(|n| {
            ranked
                .iter()
                .take(usize::from(n).clamp(1, 4))
                .map(|&k| TokenLogprob {
                    token: LETTERS[k].to_owned(),
                    logprob: probs[k].ln(),
                })
                .collect()
        });
        Ok(ChatResponse {
            model: request.model.clone(),
            text: LETTERS[ranked[0]].to_owned(),
            finish_reason: Some("stop".to_owned()),
            usage: Usage {
                prompt_tokens,
                completion_tokens: 1,
            },
            top_logprobs,
            letter_logprobs: None,
            rate_limit: None,
        })
    }
}

#[async_trait]
impl FineTuner for EmbeddedProvider {
    fn provider(&self) -> &str {
        "embedded"
    }

    async fn upload(
        &self,
        filename: &str,
        bytes: Vec<u8>,
        purpose: FilePurpose,
    ) -> Result<UploadedFile, ProviderError> {
        if purpose != FilePurpose::FineTune {
            return Err(ProviderError::Unsupported {
                provider: "embedded".to_owned(),
                what: "files for batches".to_owned(),
            });
        }
        let id = format!("file-{}", &bytes_hash(&bytes)[..24]);
        write_atomic(&self.file_path(&id), &bytes)?;
        Ok(UploadedFile {
            id,
            filename: filename.to_owned(),
            bytes: bytes.len() as u64,
        })
    }

    /// Idempotent by `client_ref`: the job id is derived from it, and creating again with the
    /// same reference returns the existing job.
    async fn create_job(
        &self,
        spec: &FineTuneSpec,
        client_ref: &str,
    ) -> Result<FineTuneJob, ProviderError> {
        if spec.base_model != EMBEDDED_BASE_MODEL && !self.model_path(&spec.base_model).exists() {
            return Err(ProviderError::NotFound {
                what: format!(
                    "model `{}` (the embedded provider fine-tunes `{EMBEDDED_BASE_MODEL}`)",
                    spec.base_model
                ),
            });
        }
        if !self.file_path(&spec.training_file).exists() {
            return Err(ProviderError::NotFound {
                what: format!("file `{}`", spec.training_file),
            });
        }
        let _guard = self.jobs.lock().expect("jobs lock");
        let id = Self::job_id(client_ref);
        if let Ok(existing) = self.load_job(&id) {
            return Ok(existing.job);
        }
        let job = FineTuneJob {
            id,
            status: JobStatus::ValidatingFiles,
            provider_status: "validating_files".to_owned(),
            base_model: spec.base_model.clone(),
            fine_tuned_model: None,
            error: None,
            error_code: None,
            error_param: None,
            trained_tokens: None,
        };
        self.save_job(&StoredJob {
            job: job.clone(),
            spec: spec.clone(),
            events: vec![JobEvent {
                created_at: 0,
                level: "info".to_owned(),
                message: "Created fine-tuning job".to_owned(),
            }],
        })?;
        Ok(job)
    }

    /// Each call moves a job one state on, as a real job moves while one polls:
    /// validating_files, queued, running, then succeeded (training happens on that step).
    async fn get_job(&self, id: &str) -> Result<FineTuneJob, ProviderError> {
        let mut stored = self.load_job(id)?;
        let next = match stored.job.status {
            JobStatus::ValidatingFiles => Some(JobStatus::Queued),
            JobStatus::Queued => Some(JobStatus::Running),
            JobStatus::Running => Some(JobStatus::Succeeded),
            _ => None,
        };
        let Some(next) = next else {
            return Ok(stored.job);
        };
        let message = match next {
            JobStatus::Succeeded => match self.train(&stored.spec) {
                Ok((w, tokens)) => {
                    let suffix = stored.spec.suffix.clone().unwrap_or_default();
                    let model =
                        format!("ft:{}:{}:{}", stored.spec.base_model, suffix, stored.job.id);
                    let bytes = serde_json::to_vec(&w).map_err(|e| storage_err(&self.dir, e))?;
                    write_atomic(&self.model_path(&model), &bytes)?;
                    stored.job.fine_tuned_model = Some(model);
                    stored.job.trained_tokens = Some(tokens);
                    stored.job.status = JobStatus::Succeeded;
                    "The job has successfully completed".to_owned()
                }
                Err(e) => {
                    stored.job.status = JobStatus::Failed;
                    stored.job.error = Some(e.to_string());
                    format!("The job failed: {e}")
                }
            },
            other => {
                stored.job.status = other;
                format!("Job {}", other.as_str())
            }
        };
        stored.job.provider_status = stored.job.status.as_str().to_owned();
        stored.events.push(JobEvent {
            created_at: stored.events.len() as i64,
            level: if stored.job.status == JobStatus::Failed {
                "error"
            } else {
                "info"
            }
            .to_owned(),
            message,
        });
        self.save_job(&stored)?;
        Ok(stored.job)
    }

    async fn find_job(&self, client_ref: &str) -> Result<Option<FineTuneJob>, ProviderError> {
        match self.load_job(&Self::job_id(client_ref)) {
            Ok(stored) => Ok(Some(stored.job)),
            Err(ProviderError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn list_events(&self, id: &str) -> Result<Vec<JobEvent>, ProviderError> {
        Ok(self.load_job(id)?.events)
    }

    async fn cancel_job(&self, id: &str) -> Result<FineTuneJob, ProviderError> {
        let mut stored = self.load_job(id)?;
        if !stored.job.status.is_terminal() {
            stored.job.status = JobStatus::Cancelled;
            stored.job.provider_status = "cancelled".to_owned();
            self.save_job(&stored)?;
        }
        Ok(stored.job)
    }
}

/// The directory a provider keeps its state in.
impl EmbeddedProvider {
    /// Where files, jobs and models are kept.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
