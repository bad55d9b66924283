//! A client-side limiter for requests and tokens per minute that also follows the limits a
//! provider reports.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::error::ProviderError;
use crate::traits::ChatModel;
use crate::types::{Capabilities, ChatRequest, ChatResponse, RateLimitInfo};

/// Limits per minute; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimits {
    /// Requests per minute.
    pub requests_per_minute: Option<u32>,
    /// Tokens per minute (prompt estimate plus maximum output).
    pub tokens_per_minute: Option<u32>,
}

#[derive(Debug)]
struct Bucket {
    capacity: f64,
    per_sec: f64,
    level: f64,
    at: Instant,
}

impl Bucket {
    /// A bucket refilling at `per_minute`, holding `capacity` units (at least one).
    fn new(per_minute: u32, capacity: f64, now: Instant) -> Bucket {
        let per_sec = f64::from(per_minute) / 60.0;
        let capacity = capacity.max(1.0);
        Bucket {
            capacity,
            per_sec,
            level: capacity,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + dt * self.per_sec).min(self.capacity);
        self.at = now;
    }

    /// Time until `n` units are available (`n` is capped at the capacity, so that one large
    /// request can always pass eventually).
    fn wait_for(&self, n: f64) -> Duration {
        let n = n.min(self.capacity);
        if self.level >= n {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((n - self.level) / self.per_sec)
        }
    }
}

#[derive(Debug)]
struct State {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
    paused_until: Option<Instant>,
}

/// Token buckets for requests and tokens, shared by every request through it, plus a pause
/// set from the provider's own report (remaining zero until a reset, or Retry-After).
#[derive(Debug)]
pub struct RateLimiter {
    state: Mutex<State>,
}

impl RateLimiter {
    /// A limiter with `limits`.
    pub fn new(limits: RateLimits) -> RateLimiter {
        let now = Instant::now();
        RateLimiter {
            state: Mutex::new(State {
                // Requests are spaced evenly (a bucket of one), so that no burst runs ahead of
                // the rate; tokens may come one second's worth at a time, since a single
                // request needs many.
                requests: limits.requests_per_minute.map(|r| Bucket::new(r, 1.0, now)),
                tokens: limits
                    .tokens_per_minute
                    .map(|t| Bucket::new(t, f64::from(t) / 60.0, now)),
                paused_until: None,
            }),
        }
    }

    /// Waits until one request of `tokens` tokens may go, and takes it from the buckets.
    pub async fn acquire(&self, tokens: u32) {
        loop {
            let wait = {
                let mut s = self.state.lock().expect("limiter lock");
                let now = Instant::now();
                let mut wait = s
                    .paused_until
                    .map_or(Duration::ZERO, |p| p.saturating_duration_since(now));
                if let Some(b) = s.requests.as_mut() {
                    b.refill(now);
                    wait = wait.max(b.wait_for(1.0));
                }
                if let Some(b) = s.tokens.as_mut() {
                    b.refill(now);
                    wait = wait.max(b.wait_for(f64::from(tokens)));
                }
                if wait.is_zero() {
                    if let Some(b) = s.requests.as_mut() {
                        b.level -= 1.0;
                    }
                    if let Some(b) = s.tokens.as_mut() {
                        b.level -= f64::from(tokens).min(b.capacity);
                    }
                    return;
                }
                wait
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Pauses every request for `d`.
    pub fn pause_for(&self, d: Duration) {
        let mut s = self.state.lock().expect("limiter lock");
        let until = Instant::now() + d;
        s.paused_until = Some(s.paused_until.map_or(until, |p| p.max(until)));
    }

    /// Follows what the provider reported: when a window is exhausted, pause until it
    /// resets.
    pub fn observe(&self, info: &RateLimitInfo) {
        if info.remaining_requests == Some(0)
            && let Some(reset) = info.reset_requests
        {
            self.pause_for(reset);
        }
        if info.remaining_tokens == Some(0)
            && let Some(reset) = info.reset_tokens
        {
            self.pause_for(reset);
        }
    }
}

/// A [`ChatModel`] whose requests pass through a [`RateLimiter`].
pub struct Limited<M> {
    inner: M,
    limiter: RateLimiter,
}

impl<M> Limited<M> {
    /// Wraps `inner` with `limits`.
    pub fn new(inner: M, limits: RateLimits) -> Limited<M> {
        Limited {
            inner,
            limiter: RateLimiter::new(limits),
        }
    }
}

#[async_trait]
impl<M: ChatModel> ChatModel for Limited<M> {
    fn provider(&self) -> &str {
        self.inner.provider()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        self.limiter.acquire(request.estimated_tokens()).await;
        let result = self.inner.chat(request).await;
        match &result {
            Ok(r) => {
                if let Some(info) = &r.rate_limit {
                    self.limiter.observe(info);
                }
            }
            Err(e @ ProviderError::RateLimited { .. }) => {
                self.limiter
                    .pause_for(e.retry_after().unwrap_or(Duration::from_secs(1)));
            }
            Err(_) => {}
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn requests_per_minute_are_spread() {
        let l = RateLimiter::new(RateLimits {
            requests_per_minute: Some(120),
            tokens_per_minute: None,
        });
        let start = Instant::now();
        for _ in 0..21 {
            l.acquire(10).await;
        }
        // Two a second, evenly spaced: the first at once, then one each 0.5 s: 10 s for 21.
        let took = start.elapsed().as_secs_f64();
        assert!((9.9..10.1).contains(&took), "{took}");
    }

    #[tokio::test(start_paused = true)]
    async fn reported_exhaustion_pauses() {
        let l = RateLimiter::new(RateLimits::default());
        l.observe(&RateLimitInfo {
            remaining_requests: Some(0),
            reset_requests: Some(Duration::from_secs(6)),
            ..RateLimitInfo::default()
        });
        let start = Instant::now();
        l.acquire(1).await;
        assert!(start.elapsed() >= Duration::from_secs(6));
    }
}
