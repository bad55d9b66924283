//! A fine-tuning job ledger on disk: submitting the same spec again resumes the job already
//! paid for instead of starting another, and uploading the same bytes again reuses the file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::error::ProviderError;
use crate::store::{bytes_hash, stable_hash, storage_err, write_durable};
use crate::traits::FineTuner;
use crate::types::{FilePurpose, FineTuneJob, FineTuneSpec, JobStatus, UploadedFile};

/// One job the ledger knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerJob {
    /// The spec it was created from.
    pub spec: FineTuneSpec,
    /// The reference attached to the job at creation (`xlt-<spec hash>-<attempt>`).
    pub client_ref: String,
    /// Which attempt at this spec (a failed or cancelled job is followed by another).
    pub attempt: u32,
    /// The provider's job id; empty while the creation is not confirmed (the ledger records
    /// its intent before it asks the provider).
    pub job_id: String,
    /// Last status seen.
    pub status: JobStatus,
    /// The fine-tuned model, once known.
    pub fine_tuned_model: Option<String>,
    /// Why the job failed or was cancelled, once it has.
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct LedgerFile {
    /// Provider name, so that one ledger is not used against two providers.
    provider: String,
    /// Uploads by `<purpose>:<sha256 of bytes>`.
    files: BTreeMap<String, UploadedFile>,
    /// Jobs by the hash of their spec.
    jobs: BTreeMap<String, LedgerJob>,
}

/// `en-stem.jsonl` with hash `0123456789abcdef...` to `en-stem.0123456789abcdef.jsonl`.
fn hashed_name(filename: &str, hash: &str) -> String {
    let short = &hash[..hash.len().min(16)];
    match filename.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem}.{short}.{ext}"),
        _ => format!("{filename}.{short}"),
    }
}

/// The ledger, one JSON file rewritten atomically after every change.
///
/// A job that ended without a model is not silently paid for again: one that failed on its
/// training data stops with the provider's message (the same data would fail the same way);
/// one that failed on the provider's side is resubmitted once, with a log line; one cancelled
/// outside the run is resubmitted only with [`JobLedger::resubmit_cancelled`].
pub struct JobLedger {
    path: PathBuf,
    state: Mutex<LedgerFile>,
    resubmit_cancelled: bool,
}

/// How many times a job that failed on the provider's side is submitted again.
pub const SERVER_FAILURE_RESUBMISSIONS: u32 = 1;

impl JobLedger {
    /// Opens (or starts) the ledger at `path` for `provider`.
    ///
    /// # Errors
    /// [`ProviderError::Storage`] if the file exists but cannot be read, or belongs to
    /// another provider.
    pub fn open(path: impl Into<PathBuf>, provider: &str) -> Result<JobLedger, ProviderError> {
        let path = path.into();
        let state = match std::fs::read(&path) {
            Ok(bytes) => {
                let f: LedgerFile =
                    serde_json::from_slice(&bytes).map_err(|e| storage_err(&path, e))?;
                if f.provider != provider {
                    return Err(storage_err(
                        &path,
                        format!(
                            "this ledger is for provider `{}`, not `{provider}`",
                            f.provider
                        ),
                    ));
                }
                f
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => LedgerFile {
                provider: provider.to_owned(),
                ..LedgerFile::default()
            },
            Err(e) => return Err(storage_err(&path, e)),
        };
        Ok(JobLedger {
            path,
            state: Mutex::new(state),
            resubmit_cancelled: false,
        })
    }

    /// Whether a job cancelled outside the run is submitted (and paid for) again; off by
    /// default, when such a job stops the run with a message saying so.
    #[must_use]
    pub fn resubmit_cancelled(mut self, yes: bool) -> JobLedger {
        self.resubmit_cancelled = yes;
        self
    }

    fn save(&self, state: &LedgerFile) -> Result<(), ProviderError> {
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| storage_err(&self.path, e))?;
        write_durable(&self.path, &bytes)
    }

    /// Uploads `bytes` unless the same bytes were uploaded for the same purpose before. The
    /// file is named `<stem>.<first 16 hex digits of its
    /// SHA-256>.<ext>` (`en-stem.0123456789abcdef.jsonl`), so the name identifies the
    /// content, and a [`crate::Retry`] around `tuner` finds it before it resends an upload
    /// whose answer was lost.
    ///
    /// # Errors
    /// The provider's upload error; storage errors.
    pub async fn upload_once(
        &self,
        tuner: &dyn FineTuner,
        filename: &str,
        bytes: Vec<u8>,
        purpose: FilePurpose,
    ) -> Result<UploadedFile, ProviderError> {
        let hash = bytes_hash(&bytes);
        let key = format!(
            "{}:{hash}",
            serde_json::to_value(purpose)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
        );
        let mut state = self.state.lock().await;
        if let Some(f) = state.files.get(&key) {
            tracing::info!(file = %f.id, filename, "reusing uploaded file");
            return Ok(f.clone());
        }
        // The content hash in the name lets a resend find the file a lost answer uploaded
        // (`FineTuner::find_file`, asked by `Retry`).
        let f = tuner
            .upload(&hashed_name(filename, &hash), bytes, purpose)
            .await?;
        state.files.insert(key, f.clone());
        self.save(&state)?;
        Ok(f)
    }

    /// Returns the job for `spec`: the one the ledger has, if it has not failed or been
    /// cancelled, else a new one where the policy allows (see [`JobLedger`]).
    ///
    /// The ledger writes its intent (spec, client reference) to disk *before* asking the
    /// provider, and the job id right after. If the process dies in between, the next call
    /// finds the job by its reference ([`FineTuner::find_job`]) instead of paying for a
    /// second one.
    ///
    /// # Errors
    /// The provider's errors; storage errors; [`ProviderError::JobFailed`] for a job that
    /// failed on its data, failed on the provider's side again, or was cancelled outside the
    /// run (without [`JobLedger::resubmit_cancelled`]).
    pub async fn submit_or_resume(
        &self,
        tuner: &dyn FineTuner,
        spec: &FineTuneSpec,
    ) -> Result<FineTuneJob, ProviderError> {
        let key = stable_hash(spec);
        let mut state = self.state.lock().await;
        let attempt = match state.jobs.get(&key) {
            Some(entry) if !entry.job_id.is_empty() => {
                let job = tuner.get_job(&entry.job_id).await?;
                if !matches!(job.status, JobStatus::Failed | JobStatus::Cancelled) {
                    tracing::info!(job = %job.id, status = job.status.as_str(), "resuming job from the ledger");
                    let entry = state.jobs.get_mut(&key).expect("present");
                    entry.status = job.status;
                    entry.fine_tuned_model = job.fine_tuned_model.clone();
                    self.save(&state)?;
                    return Ok(job);
                }
                let attempt = entry.attempt;
                let entry = state.jobs.get_mut(&key).expect("present");
                entry.status = job.status;
                entry.error.clone_from(&job.error);
                self.save(&state)?;
                let reason = job
                    .error
                    .clone()
                    .unwrap_or_else(|| "no reason given".to_owned());
                let stop = |message: String| ProviderError::JobFailed {
                    job: job.id.clone(),
                    status: job.provider_status.clone(),
                    message,
                };
                if job.status == JobStatus::Cancelled {
                    if !self.resubmit_cancelled {
                        return Err(stop(format!(
                            "{reason}; the job was cancelled outside this run, and submitting it again pays again: rerun with --resubmit-cancelled to do so"
                        )));
                    }
                    tracing::warn!(job = %job.id, "job was cancelled; submitting it again, as asked");
                } else if job.failed_on_training_data() {
                    return Err(stop(format!(
                        "{reason}; the training data is at fault, so the same file would fail again: fix it and rerun"
                    )));
                } else if attempt >= SERVER_FAILURE_RESUBMISSIONS {
                    return Err(stop(format!(
                        "{reason}; it failed on the provider's side {} time(s) already and is not submitted again",
                        attempt + 1
                    )));
                } else {
                    tracing::warn!(job = %job.id, reason = %reason, "job failed on the provider's side; submitting it again once");
                }
                attempt + 1
            }
            Some(entry) => {
                // Intent recorded, id not: the last run died around the create call.
                if let Some(job) = tuner.find_job(&entry.client_ref).await? {
                    tracing::info!(job = %job.id, "found the job an interrupted run created");
                    let entry = state.jobs.get_mut(&key).expect("present");
                    entry.job_id = job.id.clone();
                    entry.status = job.status;
                    entry.fine_tuned_model = job.fine_tuned_model.clone();
                    self.save(&state)?;
                    return Ok(job);
                }
                entry.attempt
            }
            None => 0,
        };
        let client_ref = format!("xlt-{}-{attempt}", &key[..16]);
        state.jobs.insert(
            key.clone(),
            LedgerJob {
                spec: spec.clone(),
                client_ref: client_ref.clone(),
                attempt,
                job_id: String::new(),
                status: JobStatus::ValidatingFiles,
                fine_tuned_model: None,
                error: None,
            },
        );
        self.save(&state)?;
        let job = tuner.create_job(spec, &client_ref).await?;
        let entry = state.jobs.get_mut(&key).expect("present");
        entry.job_id = job.id.clone();
        entry.status = job.status;
        entry.fine_tuned_model = job.fine_tuned_model.clone();
        self.save(&state)?;
        Ok(job)
    }

    /// Records a job's latest state.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn record(&self, job: &FineTuneJob) -> Result<(), ProviderError> {
        let mut state = self.state.lock().await;
        let mut changed = false;
        for entry in state.jobs.values_mut().filter(|e| e.job_id == job.id) {
            entry.status = job.status;
            entry.fine_tuned_model = job.fine_tuned_model.clone();
            entry.error.clone_from(&job.error);
            changed = true;
        }
        if changed {
            self.save(&state)?;
        }
        Ok(())
    }

    /// Every job the ledger knows.
    pub async fn jobs(&self) -> Vec<LedgerJob> {
        self.state.lock().await.jobs.values().cloned().collect()
    }
}
