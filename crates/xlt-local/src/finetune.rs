//! Fine-tuning jobs on the user's machine, behind the same [`FineTuner`] trait as the
//! remote providers: an uploaded chat JSON Lines file, a job that trains a LoRA adapter in
//! a background thread through the neutral states (`validating_files`, `queued`,
//! `running`, `succeeded`, `failed`, `cancelled`), events with the loss and tokens per
//! second of every step, lookup by the caller's reference, cancellation, and the adapter
//! written in PEFT's format. Everything lives under one directory:
//!
//! ```text
//! <root>/files/<file-id>.jsonl        uploaded training data
//! <root>/jobs/<job-id>/job.json       the job (written atomically at every change)
//! <root>/jobs/<job-id>/events.jsonl   its events, oldest first
//! <root>/jobs/<job-id>/adapter/       the trained adapter (PEFT format)
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use xlt_provider::{
    ChatMessage, FilePurpose, FineTuneJob, FineTuneSpec, FineTuner, JobEvent, JobStatus,
    LearningRate, Param, ProviderError, UploadedFile,
};

use crate::error::LocalError;
use crate::generate::LocalModel;
use crate::lora::{LoraConfig, attach_lora};
use crate::peft::save_adapter;
use crate::provider::PROVIDER;
use crate::train::{TrainConfig, TrainExample, encode_example, train};

/// Loads a base model by id, built with differentiable kernels, for training.
pub type ModelLoader = Arc<dyn Fn(&str) -> Result<LocalModel, LocalError> + Send + Sync>;

/// A job as stored in `job.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct JobRecord {
    job: FineTuneJob,
    client_ref: String,
    spec: FineTuneSpec,
}

/// The local fine-tuning backend: LoRA jobs in background threads, state on disk.
pub struct LocalFineTuner {
    root: PathBuf,
    loader: ModelLoader,
    lora: LoraConfig,
    cancels: Mutex<HashMap<String, Arc<AtomicBool>>>,
}

impl std::fmt::Debug for LocalFineTuner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalFineTuner")
            .field("root", &self.root)
            .field("lora", &self.lora)
            .finish_non_exhaustive()
    }
}

fn storage(path: &Path, e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Storage {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Writes `bytes` to `path` through a temporary file beside it and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ProviderError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| storage(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| storage(path, e))
}

/// A short id part: the first 16 hex digits of the SHA-256 of `bytes`.
fn digest(bytes: &[u8]) -> String {
    xlt_provider::bytes_hash(bytes)[..16].to_owned()
}

#[derive(Deserialize)]
struct Line {
    messages: Vec<ChatMessage>,
}

impl LocalFineTuner {
    /// A backend keeping its files and jobs under `root`, loading base models with
    /// `loader` and training adapters of `lora`.
    pub fn new(root: impl Into<PathBuf>, loader: ModelLoader, lora: LoraConfig) -> Self {
        LocalFineTuner {
            root: root.into(),
            loader,
            lora,
            cancels: Mutex::new(HashMap::new()),
        }
    }

    fn job_dir(&self, id: &str) -> PathBuf {
        self.root.join("jobs").join(id)
    }

    fn read_record(&self, id: &str) -> Result<JobRecord, ProviderError> {
        let path = self.job_dir(id).join("job.json");
        let text = std::fs::read_to_string(&path).map_err(|_| ProviderError::NotFound {
            what: format!("local fine-tuning job {id}"),
        })?;
        serde_json::from_str(&text).map_err(|e| storage(&path, e))
    }

    fn records(&self) -> Result<Vec<JobRecord>, ProviderError> {
        let dir = self.root.join("jobs");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for e in entries {
            let e = e.map_err(|e| storage(&dir, e))?;
            let id = e.file_name().to_string_lossy().into_owned();
            if e.path().join("job.json").exists() {
                out.push(self.read_record(&id)?);
            }
        }
        Ok(out)
    }

    /// Training hyperparameters from the neutral spec: epochs, batch size, an absolute
    /// learning rate (a multiplier is refused: there is no base rate to multiply), seed.
    fn train_config(spec: &FineTuneSpec) -> Result<TrainConfig, ProviderError> {
        let mut c = TrainConfig::default();
        let h = &spec.hyperparameters;
        if let Param::Value(e) = h.epochs {
            c.epochs = e as usize;
        }
        if let Param::Value(b) = h.batch_size {
            c.batch_size = b as usize;
        }
        match h.learning_rate {
            LearningRate::Auto => {}
            LearningRate::Absolute(lr) => c.learning_rate = lr,
            LearningRate::Multiplier(m) => {
                return Err(ProviderError::InvalidRequest(format!(
                    "local fine-tuning takes an absolute learning rate (such as 2e-4), not a multiplier ({m})"
                )));
            }
        }
        if let Some(seed) = spec.seed {
            c.seed = seed;
        }
        c.validate()
            .map_err(|e| ProviderError::InvalidRequest(e.to_string()))?;
        Ok(c)
    }
}

/// The job's files and how to record its progress, moved into the training thread.
struct Runner {
    dir: PathBuf,
    record: JobRecord,
    cancel: Arc<AtomicBool>,
}

impl Runner {
    fn set(&mut self, status: JobStatus) -> Result<(), ProviderError> {
        self.record.job.status = status;
        self.record.job.provider_status = status.as_str().into();
        let json = serde_json::to_vec_pretty(&self.record).map_err(|e| storage(&self.dir, e))?;
        write_atomic(&self.dir.join("job.json"), &json)
    }

    fn event(&self, level: &str, message: String) -> Result<(), ProviderError> {
        use std::io::Write;
        let path = self.dir.join("events.jsonl");
        let line = serde_json::to_string(&JobEvent {
            created_at: now(),
            level: level.into(),
            message,
        })
        .map_err(|e| storage(&path, e))?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| storage(&path, e))?;
        writeln!(f, "{line}").map_err(|e| storage(&path, e))
    }

    /// Validates, trains and saves; the job's final state is set by the caller from the
    /// result.
    fn run(
        &mut self,
        loader: &ModelLoader,
        lora: &LoraConfig,
        data: &Path,
        config: &TrainConfig,
    ) -> Result<bool, String> {
        let spec = self.record.spec.clone();
        self.set(JobStatus::ValidatingFiles)
            .map_err(|e| e.to_string())?;
        let mut local = loader(&spec.base_model).map_err(|e| e.to_string())?;
        let text = std::fs::read_to_string(data).map_err(|e| format!("{}: {e}", data.display()))?;
        let mut examples: Vec<TrainExample> = Vec::new();
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let parsed: Line = serde_json::from_str(line)
                .map_err(|e| format!("{} line {}: {e}", data.display(), i + 1))?;
            let e = encode_example(local.tokenizer(), local.template(), &parsed.messages)
                .map_err(|e| format!("{} line {}: {e}", data.display(), i + 1))?;
            examples.push(e);
        }
        if examples.is_empty() {
            return Err(format!("{}: no training examples", data.display()));
        }
        self.set(JobStatus::Running).map_err(|e| e.to_string())?;
        attach_lora(local.model_mut(), lora, config.seed).map_err(|e| e.to_string())?;
        let mut tokens = 0u64;
        let mut cancelled = false;
        let mut failure = None;
        train(local.model_mut(), &examples, config, |r| {
            tokens += r.tokens as u64;
            let message = format!(
                "step {}/{}: loss {:.4}, learning rate {:.3e}, {:.1} tokens/s",
                r.step,
                r.total_steps,
                r.loss,
                r.learning_rate,
                r.tokens as f64 / r.seconds.max(1e-9)
            );
            if let Err(e) = self.event("info", message) {
                failure = Some(e.to_string());
                return std::ops::ControlFlow::Break(());
            }
            if self.cancel.load(Ordering::SeqCst) {
                cancelled = true;
                return std::ops::ControlFlow::Break(());
            }
            std::ops::ControlFlow::Continue(())
        })
        .map_err(|e| e.to_string())?;
        if let Some(f) = failure {
            return Err(f);
        }
        self.record.job.trained_tokens = Some(tokens);
        if cancelled {
            return Ok(false);
        }
        let adapter = self.dir.join("adapter");
        save_adapter(local.model(), lora, &spec.base_model, &adapter).map_err(|e| e.to_string())?;
        self.record.job.fine_tuned_model =
            Some(format!("{}+{}", spec.base_model, adapter.display()));
        Ok(true)
    }
}

#[async_trait]
impl FineTuner for LocalFineTuner {
    fn provider(&self) -> &str {
        PROVIDER
    }

    /// Checks every line is `{"messages": [...]}` and stores the file.
    async fn upload(
        &self,
        filename: &str,
        bytes: Vec<u8>,
        purpose: FilePurpose,
    ) -> Result<UploadedFile, ProviderError> {
        if purpose != FilePurpose::FineTune {
            return Err(ProviderError::Unsupported {
                provider: PROVIDER.into(),
                what: "batch files".into(),
            });
        }
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| ProviderError::InvalidRequest(format!("{filename}: not UTF-8: {e}")))?;
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            serde_json::from_str::<Line>(line).map_err(|e| {
                ProviderError::InvalidRequest(format!("{filename} line {}: {e}", i + 1))
            })?;
        }
        let id = format!("file-{}", digest(&bytes));
        let dir = self.root.join("files");
        std::fs::create_dir_all(&dir).map_err(|e| storage(&dir, e))?;
        write_atomic(&dir.join(format!("{id}.jsonl")), &bytes)?;
        Ok(UploadedFile {
            id,
            filename: filename.into(),
            bytes: bytes.len() as u64,
        })
    }

    /// Records the job as `queued` and trains it in a background thread.
    async fn create_job(
        &self,
        spec: &FineTuneSpec,
        client_ref: &str,
    ) -> Result<FineTuneJob, ProviderError> {
        let config = Self::train_config(spec)?;
        let data = self
            .root
            .join("files")
            .join(format!("{}.jsonl", spec.training_file));
        if !data.exists() {
            return Err(ProviderError::NotFound {
                what: format!("training file {}", spec.training_file),
            });
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let id = format!(
            "ftjob-{}",
            digest(format!("{client_ref}\n{nanos}\n{}", std::process::id()).as_bytes())
        );
        let dir = self.job_dir(&id);
        std::fs::create_dir_all(&dir).map_err(|e| storage(&dir, e))?;
        let job = FineTuneJob {
            id: id.clone(),
            status: JobStatus::Queued,
            provider_status: JobStatus::Queued.as_str().into(),
            base_model: spec.base_model.clone(),
            fine_tuned_model: None,
            error: None,
            trained_tokens: None,
        };
        let cancel = Arc::new(AtomicBool::new(false));
        self.cancels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), cancel.clone());
        let mut runner = Runner {
            dir,
            record: JobRecord {
                job: job.clone(),
                client_ref: client_ref.into(),
                spec: spec.clone(),
            },
            cancel,
        };
        runner.set(JobStatus::Queued)?;
        let (loader, lora) = (self.loader.clone(), self.lora.clone());
        std::thread::spawn(move || {
            let outcome = runner.run(&loader, &lora, &data, &config);
            let (status, level, message) = match outcome {
                Ok(true) => (JobStatus::Succeeded, "info", "succeeded".to_owned()),
                Ok(false) => (JobStatus::Cancelled, "info", "cancelled".to_owned()),
                Err(e) => {
                    runner.record.job.error = Some(e.clone());
                    (JobStatus::Failed, "error", e)
                }
            };
            let _ = runner.event(level, message);
            if let Err(e) = runner.set(status) {
                tracing::error!("local fine-tuning job {}: {e}", runner.record.job.id);
            }
        });
        Ok(job)
    }

    async fn find_job(&self, client_ref: &str) -> Result<Option<FineTuneJob>, ProviderError> {
        Ok(self
            .records()?
            .into_iter()
            .find(|r| r.client_ref == client_ref)
            .map(|r| r.job))
    }

    async fn get_job(&self, id: &str) -> Result<FineTuneJob, ProviderError> {
        Ok(self.read_record(id)?.job)
    }

    async fn list_events(&self, id: &str) -> Result<Vec<JobEvent>, ProviderError> {
        self.read_record(id)?;
        let path = self.job_dir(id).join("events.jsonl");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(Vec::new());
        };
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).map_err(|e| storage(&path, e)))
            .collect()
    }

    /// Asks the job's thread to stop after its current step; the job ends `cancelled`.
    async fn cancel_job(&self, id: &str) -> Result<FineTuneJob, ProviderError> {
        let job = self.read_record(id)?.job;
        if job.status.is_terminal() {
            return Ok(job);
        }
        match self
            .cancels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
        {
            Some(flag) => flag.store(true, Ordering::SeqCst),
            None => {
                return Err(ProviderError::InvalidRequest(format!(
                    "job {id} is not running in this process"
                )));
            }
        }
        Ok(job)
    }
}
