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
//! <root>/jobs/<job-id>/checkpoint/    the adapter so far (PEFT format), with
//!                                     optimizer.safetensors and trainer_state.json
//! <root>/jobs/<job-id>/adapter/       the trained adapter (PEFT format)
//! ```
//!
//! Jobs train one at a time, in the order they were created, on one training thread of the
//! backend (a job waits `queued` for the one before it; the calibration of
//! [`LocalFineTuner::estimate_training`] runs there too): each loads its own copy of the
//! base model, and two on one machine would only compete for its cores and memory, and
//! one thread keeps one working set in memory rather than one per job. The task training
//! a job holds an exclusive lock on `<job>/lock` (released by
//! the operating system when its process dies, also on `kill -9`). A job whose process
//! died (its `job.json` not terminal, its lock free) continues from its last checkpoint as
//! soon as anyone asks about it ([`FineTuner::get_job`], [`FineTuner::find_job`]), or with
//! [`LocalFineTuner::resume_jobs`], and ends on the adapter an uninterrupted run would have
//! written (see [`crate::train_resumable`]).

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
use crate::lora::{LoraConfig, attach_lora, lora_params};
use crate::peft::{load_adapter, replace_dir, save_adapter, save_params};
use crate::provider::PROVIDER;
use crate::train::{OptimizerState, TrainConfig, TrainExample, encode_example, train_resumable};

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
    checkpoint_steps: usize,
    cancels: Mutex<HashMap<String, Arc<Control>>>,
    /// The queue of the thread that trains, started on first use ([`start_trainer`]).
    worker: Mutex<Option<std::sync::mpsc::Sender<Task>>>,
}

/// Work for the training thread.
type Task = Box<dyn FnOnce() + Send>;

/// The name of the training thread (as `/proc/<pid>/task/<tid>/comm` shows it).
const TRAIN_THREAD: &str = "xlt-local-train";

/// Starts the thread that runs every training task of a [`LocalFineTuner`] (its jobs and
/// [`LocalFineTuner::estimate_training`]'s calibration), one after another, and returns its
/// queue; the thread ends when the queue's sender is dropped.
///
/// One thread rather than one per job: glibc's `malloc` gives each thread that allocates
/// its own arena, which keeps the pages of its peak working set after they are freed, so
/// each job (and the calibration, on a thread of its caller) held its own training peak
/// beside the next one's: a local study's training phase peaked 400 to 900 MiB above one
/// job's own peak on SmolLM2-135M (issue #26).
fn start_trainer() -> std::io::Result<std::sync::mpsc::Sender<Task>> {
    let (tx, rx) = std::sync::mpsc::channel::<Task>();
    std::thread::Builder::new()
        .name(TRAIN_THREAD.to_owned())
        .spawn(move || {
            while let Ok(task) = rx.recv() {
                // A task that panics ends alone, as a thread of its own would have.
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(task)).is_err() {
                    tracing::error!("a local training task panicked");
                }
            }
        })?;
    Ok(tx)
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

/// Writes `bytes` to `path` through a temporary file beside it (named
/// [`xlt_provider::TEMP_PREFIX`]..., so that a study sweeps what a killed run left) and a
/// rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ProviderError> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = xlt_provider::tempfile_with_umask(dir).map_err(|e| storage(dir, e))?;
    tmp.write_all(bytes).map_err(|e| storage(tmp.path(), e))?;
    tmp.persist(path).map_err(|e| storage(path, e.error))?;
    Ok(())
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
    /// `loader` and training adapters of the spec's LoRA settings
    /// ([`FineTuneSpec::lora`]), or of `lora` for a spec without them.
    pub fn new(root: impl Into<PathBuf>, loader: ModelLoader, lora: LoraConfig) -> Self {
        LocalFineTuner {
            root: root.into(),
            loader,
            lora,
            checkpoint_steps: 50,
            cancels: Mutex::new(HashMap::new()),
            worker: Mutex::new(None),
        }
    }

    /// The directory files and jobs are kept in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Checkpoints every `steps` optimizer steps (default 50; at least 1).
    pub fn with_checkpoint_steps(mut self, steps: usize) -> Self {
        self.checkpoint_steps = steps.max(1);
        self
    }

    /// Restarts, in background threads, every job on disk that is not finished and that
    /// no thread of this process runs (its process died): each continues from its last
    /// checkpoint, or from the start without one. Returns their ids.
    ///
    /// # Errors
    /// [`ProviderError::Storage`] for an unreadable job.
    pub fn resume_jobs(&self) -> Result<Vec<String>, ProviderError> {
        let mut resumed = Vec::new();
        for record in self.records()? {
            let id = record.job.id.clone();
            if self.resume_if_orphaned(record)? {
                resumed.push(id);
            }
        }
        resumed.sort();
        Ok(resumed)
    }

    /// Stops every job this process is training and marks it interrupted in its
    /// `job.json` (`"status": "queued"`, `"provider_status": "interrupted"`: not running,
    /// not finished), for a process about to end (Ctrl-C, SIGTERM). The training thread
    /// stops after its current step and writes `job.json` no more; a later process that
    /// asks about the job ([`FineTuner::get_job`], [`FineTuner::find_job`],
    /// [`LocalFineTuner::resume_jobs`]) resumes it from its last checkpoint. Returns one
    /// line per job: its slice (the spec's suffix) and id, the last step its events
    /// recorded and the checkpoint's step.
    pub fn interrupt(&self) -> Vec<String> {
        let controls: Vec<(String, Arc<Control>)> = self
            .cancels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, c)| (id.clone(), c.clone()))
            .collect();
        let mut lines = Vec::new();
        for (id, control) in controls {
            let mut interrupted = control
                .interrupted
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            control.cancel.store(true, Ordering::SeqCst);
            let Ok(mut record) = self.read_record(&id) else {
                continue;
            };
            if *interrupted || record.job.status.is_terminal() {
                continue;
            }
            *interrupted = true;
            record.job.status = JobStatus::Queued;
            record.job.provider_status = INTERRUPTED.into();
            let dir = self.job_dir(&id);
            let written = serde_json::to_vec_pretty(&record)
                .map_err(|e| storage(&dir, e))
                .and_then(|json| write_atomic(&dir.join("job.json"), &json));
            if let Err(e) = written {
                tracing::error!("local fine-tuning job {id}: {e}");
            }
            let last_step = self
                .events_of(&id)
                .iter()
                .rev()
                .find_map(|e| step_of(&e.message));
            let checkpoint = std::fs::read_to_string(dir.join("checkpoint").join(TRAINER_STATE))
                .ok()
                .and_then(|t| serde_json::from_str::<TrainerState>(&t).ok())
                .map(|s| s.global_step);
            let slice = record.spec.suffix.as_deref().unwrap_or("?");
            let at = match last_step {
                Some(step) => format!("stopped at {step}"),
                None => "stopped before its first step".to_owned(),
            };
            let from = match checkpoint {
                Some(step) => format!("its checkpoint is at step {step}"),
                None => "no checkpoint yet (it starts again from the beginning)".to_owned(),
            };
            lines.push(format!("{slice} (job {id}) {at}, {from}"));
        }
        lines.sort();
        lines
    }

    fn events_of(&self, id: &str) -> Vec<JobEvent> {
        std::fs::read_to_string(self.job_dir(id).join("events.jsonl"))
            .map(|text| {
                text.lines()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Restarts the job of `record` if it is not finished and nobody trains it (no thread
    /// of this process, no other process holding its lock). Returns whether it did.
    fn resume_if_orphaned(&self, record: JobRecord) -> Result<bool, ProviderError> {
        let running_here = self
            .cancels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&record.job.id);
        if record.job.status.is_terminal() || running_here {
            return Ok(false);
        }
        let id = record.job.id.clone();
        let resumed = self.spawn(record)?;
        if resumed {
            tracing::info!(job = %id, "resuming a local fine-tuning job whose process died");
        }
        Ok(resumed)
    }

    /// Runs the job of `record` in a background thread, unless another process holds its
    /// lock (it is training it). Returns whether a thread was started.
    fn spawn(&self, record: JobRecord) -> Result<bool, ProviderError> {
        let (config, lora) = self.train_config(&record.spec)?;
        let data = self
            .root
            .join("files")
            .join(format!("{}.jsonl", record.spec.training_file));
        let dir = self.job_dir(&record.job.id);
        let lock_path = dir.join("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| storage(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(false),
            Err(std::fs::TryLockError::Error(e)) => return Err(storage(&lock_path, e)),
        }
        let control = Arc::new(Control::default());
        self.cancels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(record.job.id.clone(), control.clone());
        let mut runner = Runner {
            dir,
            record,
            control,
            checkpoint_steps: self.checkpoint_steps,
        };
        let loader = self.loader.clone();
        self.submit(Box::new(move || {
            // Held until the task ends, so that no other process trains this job.
            let _lock = lock;
            let outcome = runner.run(&loader, &lora, &data, &config);
            if *runner
                .control
                .interrupted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
            {
                // `job.json` says interrupted; a later process resumes the job.
                let _ = runner.event("info", INTERRUPTED.to_owned());
                return;
            }
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
        }))?;
        Ok(true)
    }

    /// Queues `task` for the training thread, starting it on first use.
    fn submit(&self, task: Task) -> Result<(), ProviderError> {
        let unavailable = |e: &dyn std::fmt::Display| ProviderError::Storage {
            path: self.root.display().to_string(),
            message: format!("the local training thread: {e}"),
        };
        let mut worker = self.worker.lock().unwrap_or_else(|e| e.into_inner());
        let tx = match &*worker {
            Some(tx) => tx,
            None => worker.insert(start_trainer().map_err(|e| unavailable(&e))?),
        };
        tx.send(task).map_err(|_| unavailable(&"it has stopped"))
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

    /// Training hyperparameters and LoRA settings from the neutral spec: epochs, batch
    /// size, an absolute learning rate (a multiplier is refused: there is no base rate to
    /// multiply), warm-up ratio, gradient accumulation, seed; the spec's LoRA settings, or
    /// the backend's default without them.
    fn train_config(
        &self,
        spec: &FineTuneSpec,
    ) -> Result<(TrainConfig, LoraConfig), ProviderError> {
        let mut c = TrainConfig::default();
        let h = &spec.hyperparameters;
        if let Param::Value(e) = h.epochs {
            c.epochs = e as usize;
        }
        if let Param::Value(b) = h.batch_size {
            c.batch_size = b as usize;
        }
        if let Some(w) = h.warmup_ratio {
            c.warmup_ratio = w;
        }
        if let Some(n) = h.gradient_accumulation_steps {
            c.gradient_accumulation_steps = n as usize;
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
        c.validate().map_err(invalid_request)?;
        let lora = match &spec.lora {
            Some(l) => {
                l.validate()?;
                LoraConfig {
                    r: l.rank as usize,
                    lora_alpha: l.alpha,
                    lora_dropout: l.dropout,
                    target_modules: l.target_modules.clone(),
                    use_rslora: false,
                }
            }
            None => self.lora.clone(),
        };
        lora.validate().map_err(invalid_request)?;
        Ok((c, lora))
    }
}

/// A [`LocalError`] as the provider layer's invalid request, its message once
/// (`LocalError::Invalid` already says "invalid request").
fn invalid_request(e: LocalError) -> ProviderError {
    match e {
        LocalError::Invalid(m) => ProviderError::InvalidRequest(m),
        other => ProviderError::InvalidRequest(other.to_string()),
    }
}

/// What training a set of files will take on this machine, from a short measured run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingEstimate {
    /// Tokens the model reads per epoch, all files (the chat template applied, counted by
    /// the model's tokenizer).
    pub tokens_per_epoch: u64,
    /// Optimizer steps of all jobs together.
    pub optimizer_steps: u64,
    /// Tokens of the calibration run's examples (padding not counted).
    pub calibration_tokens: u64,
    /// Wall-clock seconds of the calibration run's optimizer steps (loading excluded).
    pub calibration_seconds: f64,
    /// `calibration_tokens / calibration_seconds`.
    pub tokens_per_second: f64,
    /// `tokens_per_epoch * epochs / tokens_per_second`: training time of all jobs, one
    /// after another, loading and checkpoints excluded.
    pub estimated_seconds: f64,
    /// Bytes of one adapter's `adapter_model.safetensors` (every `lora_A` `(r, in)` and
    /// `lora_B` `(out, r)` of the target layers at the model's dtype, plus the header).
    pub adapter_bytes: u64,
}

impl LocalFineTuner {
    /// Estimates what training `spec`'s base model on each of `files` (chat JSON Lines)
    /// takes: loads the base model for training, counts every file's tokens with its
    /// tokenizer and template, and times `calibration_steps` optimizer steps of LoRA
    /// training (spec's batch size and LoRA settings) on the first examples; the adapter's
    /// size comes from the target layers' shapes. Blocking; it runs on the backend's
    /// training thread (after a job that is training there) and takes about as long as
    /// loading the model and `calibration_steps` steps.
    ///
    /// # Errors
    /// [`ProviderError::InvalidRequest`] for settings the trainer refuses, a file that is
    /// not chat JSON Lines (naming it and the line), a model that does not load.
    pub fn estimate_training(
        &self,
        spec: &FineTuneSpec,
        files: &[PathBuf],
        calibration_steps: usize,
    ) -> Result<TrainingEstimate, ProviderError> {
        // On the training thread, so that calibration and the jobs share one working set.
        let (config, lora) = self.train_config(spec)?;
        let (loader, spec, files) = (self.loader.clone(), spec.clone(), files.to_vec());
        let (tx, rx) = std::sync::mpsc::channel();
        self.submit(Box::new(move || {
            let _ = tx.send(estimate(
                &loader,
                config,
                &lora,
                &spec,
                &files,
                calibration_steps,
            ));
        }))?;
        rx.recv().map_err(|_| {
            ProviderError::InvalidRequest(
                "the calibration stopped without an answer (see the log)".to_owned(),
            )
        })?
    }
}

/// [`LocalFineTuner::estimate_training`]'s work, on the training thread.
fn estimate(
    loader: &ModelLoader,
    mut config: TrainConfig,
    lora: &LoraConfig,
    spec: &FineTuneSpec,
    files: &[PathBuf],
    calibration_steps: usize,
) -> Result<TrainingEstimate, ProviderError> {
    let mut local = loader(&spec.base_model).map_err(invalid_request)?;
    let mut tokens_per_epoch = 0u64;
    let mut optimizer_steps = 0u64;
    let mut sample: Vec<TrainExample> = Vec::new();
    for path in files {
        let examples = read_examples(&local, path)?;
        tokens_per_epoch += examples
            .iter()
            .map(|e| e.input_ids.len() as u64)
            .sum::<u64>();
        optimizer_steps += config.total_steps(examples.len()) as u64;
        if sample.is_empty() {
            sample = examples;
        }
    }
    let params = attach_lora(local.model_mut(), lora, config.seed).map_err(invalid_request)?;
    let elem = local.model().dtype().size_in_bytes() as u64;
    let adapter_bytes = params
        .iter()
        .map(|p| (p.a.elem_count() + p.b.elem_count()) as u64 * elem + 160)
        .sum::<u64>()
        + 8;
    let mut calibration_tokens = 0u64;
    let mut calibration_seconds = 0.0;
    if !sample.is_empty() && calibration_steps > 0 {
        let per_step = config.batch_size * config.gradient_accumulation_steps;
        sample.truncate(per_step * calibration_steps);
        config.epochs = 1;
        let reports = crate::train::train(local.model_mut(), &sample, &config, |_| {
            std::ops::ControlFlow::Continue(())
        })
        .map_err(invalid_request)?;
        // The examples' own tokens, padding not counted, so that the rate applies to
        // `tokens_per_epoch` with padding's cost inside it.
        calibration_tokens = sample.iter().map(|e| e.input_ids.len() as u64).sum();
        calibration_seconds = reports.iter().map(|r| r.seconds).sum();
    }
    let tokens_per_second = calibration_tokens as f64 / calibration_seconds.max(1e-9);
    let epochs = match spec.hyperparameters.epochs {
        Param::Value(e) => f64::from(e),
        Param::Auto => TrainConfig::default().epochs as f64,
    };
    Ok(TrainingEstimate {
        tokens_per_epoch,
        optimizer_steps,
        calibration_tokens,
        calibration_seconds,
        tokens_per_second,
        estimated_seconds: if calibration_tokens == 0 {
            0.0
        } else {
            tokens_per_epoch as f64 * epochs / tokens_per_second
        },
        adapter_bytes,
    })
}

/// The training examples of the chat JSON Lines file `path`, encoded for `local`.
fn read_examples(local: &LocalModel, path: &Path) -> Result<Vec<TrainExample>, ProviderError> {
    let text = std::fs::read_to_string(path).map_err(|e| storage(path, e))?;
    let mut examples = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let at = |e: &dyn std::fmt::Display| {
            ProviderError::InvalidRequest(format!("{} line {}: {e}", path.display(), i + 1))
        };
        let parsed: Line = serde_json::from_str(line).map_err(|e| at(&e))?;
        examples.push(
            encode_example(local.tokenizer(), local.template(), &parsed.messages)
                .map_err(|e| at(&e))?,
        );
    }
    Ok(examples)
}

/// The job's files and how to record its progress, moved into the training thread.
struct Runner {
    dir: PathBuf,
    record: JobRecord,
    control: Arc<Control>,
    checkpoint_steps: usize,
}

/// How the process steers a job's training thread.
#[derive(Debug, Default)]
struct Control {
    /// Stop after the current step (cancelled, or interrupted).
    cancel: AtomicBool,
    /// Set, under its lock, by [`LocalFineTuner::interrupt`]: `job.json` then says
    /// `interrupted` and the thread writes it no more.
    interrupted: Mutex<bool>,
}

impl Runner {
    fn set(&mut self, status: JobStatus) -> Result<(), ProviderError> {
        let interrupted = self
            .control
            .interrupted
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if *interrupted {
            return Ok(());
        }
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
        let examples = read_examples(&local, data).map_err(|e| e.to_string())?;
        if examples.is_empty() {
            return Err(format!("{}: no training examples", data.display()));
        }
        self.set(JobStatus::Running).map_err(|e| e.to_string())?;
        let checkpoint = self.dir.join("checkpoint");
        let resume = if checkpoint.join(TRAINER_STATE).exists() {
            load_adapter(local.model_mut(), &checkpoint).map_err(|e| e.to_string())?;
            let state = read_optimizer_state(&checkpoint, local.model().device())
                .map_err(|e| e.to_string())?;
            self.event(
                "info",
                format!(
                    "resumed at step {} of {} (from the checkpoint)",
                    state.step,
                    config.total_steps(examples.len())
                ),
            )
            .map_err(|e| e.to_string())?;
            Some(state)
        } else {
            attach_lora(local.model_mut(), lora, config.seed).map_err(|e| e.to_string())?;
            None
        };
        let params = lora_params(local.model());
        let mut tokens = 0u64;
        let mut cancelled = false;
        let mut failure = None;
        let every = self.checkpoint_steps;
        train_resumable(
            local.model_mut(),
            &examples,
            config,
            resume.as_ref(),
            |r, state| {
                if r.step.is_multiple_of(every) && r.step < r.total_steps {
                    let saved = write_checkpoint(&self.dir, &params, lora, &spec.base_model, state);
                    if let Err(e) = saved {
                        failure = Some(e.to_string());
                        return std::ops::ControlFlow::Break(());
                    }
                }
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
                if self.control.cancel.load(Ordering::SeqCst) {
                    cancelled = true;
                    return std::ops::ControlFlow::Break(());
                }
                std::ops::ControlFlow::Continue(())
            },
        )
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
        self.train_config(spec)?;
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
            error_code: None,
            error_param: None,
            trained_tokens: None,
        };
        let record = JobRecord {
            job: job.clone(),
            client_ref: client_ref.into(),
            spec: spec.clone(),
        };
        let json = serde_json::to_vec_pretty(&record).map_err(|e| storage(&dir, e))?;
        write_atomic(&dir.join("job.json"), &json)?;
        self.spawn(record)?;
        Ok(job)
    }

    /// The job created with `client_ref`; restarted from its checkpoint if its process died.
    async fn find_job(&self, client_ref: &str) -> Result<Option<FineTuneJob>, ProviderError> {
        let Some(record) = self
            .records()?
            .into_iter()
            .find(|r| r.client_ref == client_ref)
        else {
            return Ok(None);
        };
        let job = record.job.clone();
        self.resume_if_orphaned(record)?;
        Ok(Some(job))
    }

    /// The job as last recorded; restarted from its checkpoint if its process died.
    async fn get_job(&self, id: &str) -> Result<FineTuneJob, ProviderError> {
        let record = self.read_record(id)?;
        let job = record.job.clone();
        self.resume_if_orphaned(record)?;
        Ok(job)
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
            Some(control) => control.cancel.store(true, Ordering::SeqCst),
            None => {
                return Err(ProviderError::InvalidRequest(format!(
                    "job {id} is not running in this process"
                )));
            }
        }
        Ok(job)
    }
}

/// The provider's word in `job.json` for a job whose process was interrupted.
const INTERRUPTED: &str = "interrupted";

/// `step 12/40` of a step event's message (`step 12/40: loss ...`).
fn step_of(message: &str) -> Option<String> {
    let rest = message.strip_prefix("step ")?;
    let (fraction, _) = rest.split_once(':')?;
    Some(format!("step {}", fraction.replace('/', " of ")))
}

/// The step count of a checkpoint.
const TRAINER_STATE: &str = "trainer_state.json";
/// The optimizer's moments of a checkpoint: `first_moment.{i}` and `second_moment.{i}`.
const OPTIMIZER_STATE: &str = "optimizer.safetensors";

#[derive(Serialize, Deserialize)]
struct TrainerState {
    global_step: usize,
}

/// Writes `<dir>/checkpoint` whole: the adapter in PEFT format, the optimizer's moments and
/// the step, built in a temporary directory that then replaces the previous checkpoint.
fn write_checkpoint(
    dir: &Path,
    params: &[crate::lora::LoraParam],
    lora: &LoraConfig,
    base_model: &str,
    state: &OptimizerState,
) -> Result<(), LocalError> {
    let pid = std::process::id();
    let tmp = dir.join(format!(".checkpoint.tmp-{pid}"));
    save_params(params, lora, base_model, &tmp)?;
    let mut moments = HashMap::new();
    for (i, (m, v)) in state
        .first_moments
        .iter()
        .zip(&state.second_moments)
        .enumerate()
    {
        moments.insert(format!("first_moment.{i}"), m.clone());
        moments.insert(format!("second_moment.{i}"), v.clone());
    }
    let path = tmp.join(OPTIMIZER_STATE);
    crate::peft::save_safetensors(&moments, &path)?;
    let path = tmp.join(TRAINER_STATE);
    let json = serde_json::to_string(&TrainerState {
        global_step: state.step,
    })
    .map_err(|e| LocalError::io(&path, e))?;
    std::fs::write(&path, json).map_err(|e| LocalError::io(&path, e))?;
    replace_dir(
        &tmp,
        &dir.join("checkpoint"),
        &dir.join(format!(".checkpoint.old-{pid}")),
    )
}

/// Reads the optimizer state of a checkpoint written by [`write_checkpoint`].
fn read_optimizer_state(
    checkpoint: &Path,
    device: &candle_core::Device,
) -> Result<OptimizerState, LocalError> {
    let path = checkpoint.join(TRAINER_STATE);
    let text = std::fs::read_to_string(&path).map_err(|e| LocalError::io(&path, e))?;
    let step = serde_json::from_str::<TrainerState>(&text)
        .map_err(|e| LocalError::Json {
            path: path.clone(),
            what: "trainer_state.json",
            message: e.to_string(),
        })?
        .global_step;
    let path = checkpoint.join(OPTIMIZER_STATE);
    let mut moments =
        candle_core::safetensors::load(&path, device).map_err(|e| LocalError::io(&path, e))?;
    let n = moments.len() / 2;
    let mut take = |key: String| {
        moments.remove(&key).ok_or_else(|| LocalError::Tensor {
            path: path.clone(),
            tensor: key,
            message: "missing".into(),
        })
    };
    let first_moments = (0..n)
        .map(|i| take(format!("first_moment.{i}")))
        .collect::<Result<Vec<_>, _>>()?;
    let second_moments = (0..n)
        .map(|i| take(format!("second_moment.{i}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(OptimizerState {
        step,
        first_moments,
        second_moments,
    })
}
