//! Retry with exponential backoff and jitter, honouring the provider's Retry-After.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;

use crate::error::ProviderError;
use crate::traits::ChatModel;
use crate::types::{Capabilities, ChatRequest, ChatResponse};

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
}

/// Runs `op` until it succeeds, fails with an error that is not retryable, or runs out of
/// retries; counts retries in `retries`.
///
/// # Errors
/// The last error.
pub async fn with_retry<T, F, Fut>(
    policy: &RetryPolicy,
    retries: &AtomicU64,
    mut op: F,
) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    let mut attempt = 0;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retryable() && attempt < policy.max_retries => {
                let pause = policy.delay(attempt, &e);
                tracing::warn!(error = %e, attempt = attempt + 1, ?pause, "retrying");
                retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(pause).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A [`ChatModel`] that retries its inner model's retryable failures.
pub struct Retry<M> {
    inner: M,
    policy: RetryPolicy,
    retries: Arc<AtomicU64>,
}

impl<M> Retry<M> {
    /// Wraps `inner`.
    pub fn new(inner: M, policy: RetryPolicy) -> Retry<M> {
        Retry {
            inner,
            policy,
            retries: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A shared counter of retries made so far, for progress reports.
    pub fn retries(&self) -> Arc<AtomicU64> {
        self.retries.clone()
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
        with_retry(&self.policy, &self.retries, || self.inner.chat(request)).await
    }
}
