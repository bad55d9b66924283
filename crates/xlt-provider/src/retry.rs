//! One retry mechanism for every provider call: exponential backoff with jitter, honouring
//! the provider's Retry-After, with resends of writes made safe by looking the write up first.
//!
//! [`RetryPolicy::run`] retries any operation; [`RetryPolicy::run_write`] retries a write
//! that may have taken effect although its answer was lost, asking a lookup before each
//! resend. [`Retry`] applies them to every method of [`ChatModel`], [`FineTuner`],
//! [`BatchRunner`] and [`ModelServer`], and [`RetryCounter`] counts every retry of a run
//! by operation, for progress and for `run.json`.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;

use crate::error::ProviderError;
use crate::traits::{BatchRunner, ChatModel, FineTuner, ModelServer, Served};
use crate::types::{
    Batch, BatchResult, Capabilities, ChatRequest, ChatResponse, FilePurpose, FineTuneJob,
    FineTuneSpec, JobEvent, UploadedFile,
};

/// How to retry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Pause before the first retry; doubles each time.
    pub base_delay: Duration,
    /// Longest pause.
    pub max_delay: Duration,
    /// Random extra pause, as a fraction of the pause (0 for none), so that many clients
    /// do not retry in step.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
            jitter: 0.25,
        }
    }
}

/// Every retry of a run, by operation (`chat`, `upload`, `get_job`, ...). Clones share the
/// counts, so one counter can be given to every [`Retry`] of a run.
///
/// It also remembers the first fatal error ([`ProviderError::is_fatal`]: quota exhausted,
/// a refused key): every later call through a [`Retry`] sharing the counter fails at once
/// with that error, without sending anything.
#[derive(Debug, Clone, Default)]
pub struct RetryCounter {
    total: Arc<AtomicU64>,
    by_operation: Arc<Mutex<BTreeMap<String, u64>>>,
    fatal: Arc<Mutex<Option<ProviderError>>>,
}

impl RetryCounter {
    /// A counter at zero.
    pub fn new() -> RetryCounter {
        RetryCounter::default()
    }

    /// Retries so far, all operations.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The shared total, for progress reports that read it while requests run.
    pub fn total_handle(&self) -> Arc<AtomicU64> {
        self.total.clone()
    }

    /// Retries so far, by operation name.
    pub fn by_operation(&self) -> BTreeMap<String, u64> {
        self.by_operation.lock().expect("not poisoned").clone()
    }

    /// The fatal error that stopped this run's calls, if one did.
    pub fn fatal(&self) -> Option<ProviderError> {
        self.fatal.lock().expect("not poisoned").clone()
    }

    fn record(&self, operation: &str) {
        self.total.fetch_add(1, Ordering::Relaxed);
        *self
            .by_operation
            .lock()
            .expect("not poisoned")
            .entry(operation.to_owned())
            .or_default() += 1;
    }

    fn note(&self, e: &ProviderError) {
        if e.is_fatal() {
            self.fatal
                .lock()
                .expect("not poisoned")
                .get_or_insert_with(|| e.clone());
        }
    }
}

impl RetryPolicy {
    /// The pause before retry number `attempt` (0-based) after `error`: the provider's
    /// Retry-After if it gave one, else `base · 2^attempt`, capped, plus jitter.
    pub fn delay(&self, attempt: u32, error: &ProviderError) -> Duration {
        let backoff = error.retry_after().unwrap_or_else(|| {
            self.base_delay
                .saturating_mul(2u32.saturating_pow(attempt.min(20)))
                .min(self.max_delay)
        });
        if self.jitter > 0.0 {
            let extra = rand::rng().random_range(0.0..=self.jitter);
            backoff + backoff.mul_f64(extra)
        } else {
            backoff
        }
    }

    /// Runs `op` until it succeeds, fails with an error that is not retryable
    /// ([`ProviderError::is_retryable`]), or has used `max_retries` retries; each retry
    /// waits [`RetryPolicy::delay`] and is counted in `counter` under `operation`. Use it
    /// for reads and for writes that cannot take effect twice (a chat completion, a
    /// cancel, a stop).
    ///
    /// ```
    /// # async fn f() -> Result<(), xlt_provider::ProviderError> {
    /// use xlt_provider::{RetryCounter, RetryPolicy};
    /// let counter = RetryCounter::new();
    /// let n = RetryPolicy::default()
    ///     .run(&counter, "get_answer", || async { Ok::<_, xlt_provider::ProviderError>(42) })
    ///     .await?;
    /// assert_eq!((n, counter.total()), (42, 0));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// The last error; at once, without calling `op`, the fatal error `counter` has seen.
    pub async fn run<T, F, Fut>(
        &self,
        counter: &RetryCounter,
        operation: &str,
        op: F,
    ) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        self.run_checked(counter, operation, op, true).await
    }

    /// As [`RetryPolicy::run`], but sent even after a fatal error: for clean-up that must
    /// always be tried (stopping a billed endpoint, cancelling a job).
    ///
    /// # Errors
    /// The last error.
    pub async fn run_cleanup<T, F, Fut>(
        &self,
        counter: &RetryCounter,
        operation: &str,
        op: F,
    ) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        self.run_checked(counter, operation, op, false).await
    }

    async fn run_checked<T, F, Fut>(
        &self,
        counter: &RetryCounter,
        operation: &str,
        mut op: F,
        stop_after_fatal: bool,
    ) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        let mut attempt = 0;
        loop {
            if let Some(e) = counter.fatal().filter(|_| stop_after_fatal) {
                return Err(e);
            }
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() && attempt < self.max_retries => {
                    self.pause(counter, operation, attempt, &e).await;
                    attempt += 1;
                }
                Err(e) => {
                    counter.note(&e);
                    return Err(e);
                }
            }
        }
    }

    /// As [`RetryPolicy::run`], for a write that may have taken effect although its answer
    /// was lost (a 504 after the server acted, a cut-off body, a reset connection): before
    /// every resend, `find` asks the provider whether the write happened (by client
    /// reference, content hash or recorded name), and its answer is returned if it did.
    /// `find` is itself retried; if it cannot answer, its error is returned and nothing is
    /// resent, so a write is never paid for twice.
    ///
    /// # Errors
    /// As [`RetryPolicy::run`]; the lookup's error if it fails.
    pub async fn run_write<T, S, SFut, L, LFut>(
        &self,
        counter: &RetryCounter,
        operation: &str,
        mut send: S,
        mut find: L,
    ) -> Result<T, ProviderError>
    where
        S: FnMut() -> SFut,
        SFut: Future<Output = Result<T, ProviderError>>,
        L: FnMut() -> LFut,
        LFut: Future<Output = Result<Option<T>, ProviderError>>,
    {
        let mut attempt = 0;
        loop {
            if let Some(e) = counter.fatal() {
                return Err(e);
            }
            match send().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() && attempt < self.max_retries => {
                    self.pause(counter, operation, attempt, &e).await;
                    attempt += 1;
                    let lookup = format!("{operation} (lookup before resend)");
                    if let Some(v) = self.run(counter, &lookup, &mut find).await? {
                        tracing::info!(operation, "the write had taken effect; not resending");
                        return Ok(v);
                    }
                }
                Err(e) => {
                    counter.note(&e);
                    return Err(e);
                }
            }
        }
    }

    async fn pause(
        &self,
        counter: &RetryCounter,
        operation: &str,
        attempt: u32,
        e: &ProviderError,
    ) {
        let pause = self.delay(attempt, e);
        tracing::warn!(error = %e, operation, attempt = attempt + 1, ?pause, "retrying");
        counter.record(operation);
        tokio::time::sleep(pause).await;
    }
}

/// Any backend with every call retried by one [`RetryPolicy`], its retries counted in one
/// [`RetryCounter`]. It implements whichever of [`ChatModel`], [`FineTuner`],
/// [`BatchRunner`] and [`ModelServer`] the inner backend implements:
///
/// - reads (`get_job`, `list_events`, `find_job`, `find_file`, `get_batch`,
///   `batch_results`, `status`) and `chat` are retried freely;
/// - `cancel_job` and `stop` are retried freely (repeating them changes nothing), and are
///   sent even after a fatal error, so a billed endpoint is always stopped;
/// - `upload`, `create_job`, `submit_batch` and `start` go through
///   [`RetryPolicy::run_write`]: before a resend the wrapper asks
///   [`FineTuner::find_file`] (the same name and size: the [`crate::JobLedger`] puts the
///   content hash in the name), [`FineTuner::find_job`] (the client reference the ledger
///   recorded before the first send), [`BatchRunner::find_batch`] or
///   [`ModelServer::find_started`] (the endpoint's name), and returns what they find.
///
/// `wait_for_job` and `wait_ready` poll through it, so a poll survives any number of
/// transient failures within its own deadline.
pub struct Retry<M> {
    inner: M,
    policy: RetryPolicy,
    counter: RetryCounter,
}

impl<M> Retry<M> {
    /// Wraps `inner` with its own counter.
    pub fn new(inner: M, policy: RetryPolicy) -> Retry<M> {
        Retry::with_counter(inner, policy, RetryCounter::new())
    }

    /// Wraps `inner`, counting in `counter` (shared with the run's other wrappers).
    pub fn with_counter(inner: M, policy: RetryPolicy, counter: RetryCounter) -> Retry<M> {
        Retry {
            inner,
            policy,
            counter,
        }
    }

    /// The shared total of retries made so far, for progress reports.
    pub fn retries(&self) -> Arc<AtomicU64> {
        self.counter.total_handle()
    }

    /// The counter.
    pub fn counter(&self) -> &RetryCounter {
        &self.counter
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &M {
        &self.inner
    }
}

#[async_trait]
impl<M: ChatModel> ChatModel for Retry<M> {
    fn provider(&self) -> &str {
        self.inner.provider()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        self.policy
            .run(&self.counter, "chat", || self.inner.chat(request))
            .await
    }
}

#[async_trait]
impl<M: FineTuner> FineTuner for Retry<M> {
    fn provider(&self) -> &str {
        self.inner.provider()
    }

    async fn upload(
        &self,
        filename: &str,
        bytes: Vec<u8>,
        purpose: FilePurpose,
    ) -> Result<UploadedFile, ProviderError> {
        let size = bytes.len() as u64;
        self.policy
            .run_write(
                &self.counter,
                "upload",
                || self.inner.upload(filename, bytes.clone(), purpose),
                || self.inner.find_file(filename, size, purpose),
            )
            .await
    }

    async fn find_file(
        &self,
        filename: &str,
        bytes: u64,
        purpose: FilePurpose,
    ) -> Result<Option<UploadedFile>, ProviderError> {
        self.policy
            .run(&self.counter, "find_file", || {
                self.inner.find_file(filename, bytes, purpose)
            })
            .await
    }

    async fn create_job(
        &self,
        spec: &FineTuneSpec,
        client_ref: &str,
    ) -> Result<FineTuneJob, ProviderError> {
        self.policy
            .run_write(
                &self.counter,
                "create_job",
                || self.inner.create_job(spec, client_ref),
                || self.inner.find_job(client_ref),
            )
            .await
    }

    async fn find_job(&self, client_ref: &str) -> Result<Option<FineTuneJob>, ProviderError> {
        self.policy
            .run(&self.counter, "find_job", || {
                self.inner.find_job(client_ref)
            })
            .await
    }

    async fn get_job(&self, id: &str) -> Result<FineTuneJob, ProviderError> {
        self.policy
            .run(&self.counter, "get_job", || self.inner.get_job(id))
            .await
    }

    fn offers_price_estimate(&self) -> bool {
        self.inner.offers_price_estimate()
    }

    async fn estimate_price(&self, spec: &FineTuneSpec) -> Result<Option<f64>, ProviderError> {
        self.policy
            .run(&self.counter, "estimate_price", || {
                self.inner.estimate_price(spec)
            })
            .await
    }

    async fn list_events(&self, id: &str) -> Result<Vec<JobEvent>, ProviderError> {
        self.policy
            .run(&self.counter, "list_events", || self.inner.list_events(id))
            .await
    }

    async fn cancel_job(&self, id: &str) -> Result<FineTuneJob, ProviderError> {
        self.policy
            .run_cleanup(&self.counter, "cancel_job", || self.inner.cancel_job(id))
            .await
    }
}

#[async_trait]
impl<M: BatchRunner> BatchRunner for Retry<M> {
    async fn submit_batch(
        &self,
        requests: &[(String, ChatRequest)],
    ) -> Result<Batch, ProviderError> {
        self.policy
            .run_write(
                &self.counter,
                "submit_batch",
                || self.inner.submit_batch(requests),
                || self.inner.find_batch(requests),
            )
            .await
    }

    async fn find_batch(
        &self,
        requests: &[(String, ChatRequest)],
    ) -> Result<Option<Batch>, ProviderError> {
        self.policy
            .run(&self.counter, "find_batch", || {
                self.inner.find_batch(requests)
            })
            .await
    }

    async fn get_batch(&self, id: &str) -> Result<Batch, ProviderError> {
        self.policy
            .run(&self.counter, "get_batch", || self.inner.get_batch(id))
            .await
    }

    async fn batch_results(&self, id: &str) -> Result<Vec<BatchResult>, ProviderError> {
        self.policy
            .run(&self.counter, "batch_results", || {
                self.inner.batch_results(id)
            })
            .await
    }
}

#[async_trait]
impl<M: ModelServer> ModelServer for Retry<M> {
    async fn start(&self, model: &str, display_name: &str) -> Result<Served, ProviderError> {
        self.policy
            .run_write(
                &self.counter,
                "start_endpoint",
                || self.inner.start(model, display_name),
                || self.inner.find_started(model),
            )
            .await
    }

    fn needs_start(&self, model: &str) -> bool {
        self.inner.needs_start(model)
    }

    async fn list_running(&self) -> Result<Vec<Served>, ProviderError> {
        self.policy
            .run(&self.counter, "list_endpoints", || {
                self.inner.list_running()
            })
            .await
    }

    async fn serves_serverless(&self, model: &str) -> Result<Option<bool>, ProviderError> {
        self.policy
            .run(&self.counter, "serves_serverless", || {
                self.inner.serves_serverless(model)
            })
            .await
    }

    async fn find_started(&self, model: &str) -> Result<Option<Served>, ProviderError> {
        self.policy
            .run(&self.counter, "find_endpoint", || {
                self.inner.find_started(model)
            })
            .await
    }

    async fn status(&self, served: &Served) -> Result<Served, ProviderError> {
        self.policy
            .run(&self.counter, "endpoint_status", || {
                self.inner.status(served)
            })
            .await
    }

    async fn stop(&self, served: &Served) -> Result<(), ProviderError> {
        self.policy
            .run_cleanup(&self.counter, "stop_endpoint", || self.inner.stop(served))
            .await
    }
}
