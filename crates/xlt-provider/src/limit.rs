//! A client-side limiter for requests and tokens per minute that also follows the limits a
//! provider reports.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::error::ProviderError;
use crate::traits::ChatModel;
use crate::types::{Capabilities, ChatRequest, ChatResponse, RateLimitInfo};

/// The longest pause the limiter takes on a provider's word. A reset duration reported in
/// rate-limit headers (OpenAI's `x-ratelimit-reset-tokens: 6m0s`) or a Retry-After longer
/// than this is cut to it, and the next response's headers say whether to pause again: the
/// window often frees up long before the reset the provider quotes, and the official SDKs
/// wait seconds, not minutes.
pub const MAX_PROVIDER_PAUSE: Duration = Duration::from_secs(20);

/// The pause after a 429 that does not say how long to wait; it doubles with each further
/// 429 in a row (1 s, 2 s, 4 s, ... up to [`MAX_PROVIDER_PAUSE`]) and resets on a success.
pub const RATE_LIMIT_BACKOFF_START: Duration = Duration::from_secs(1);

/// Pauses at least this long are logged (at `warn`) with their cause.
pub const LOGGED_PAUSE: Duration = Duration::from_secs(5);

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

    /// Pauses every request for `d`, at most [`MAX_PROVIDER_PAUSE`], logging a pause of
    /// [`LOGGED_PAUSE`] or more with `cause`. Returns the pause taken.
    pub fn pause_because(&self, d: Duration, cause: &str) -> Duration {
        let pause = d.min(MAX_PROVIDER_PAUSE);
        if pause >= LOGGED_PAUSE {
            tracing::warn!(
                pause_s = pause.as_secs_f64(),
                asked_s = d.as_secs_f64(),
                cause,
                "pausing every request"
            );
        }
        self.pause_for(pause);
        pause
    }

    /// Follows what the provider reported: when a window is exhausted, pause until it
    /// resets, at most [`MAX_PROVIDER_PAUSE`] (the next response's headers are read again).
    pub fn observe(&self, info: &RateLimitInfo) {
        if info.remaining_requests == Some(0)
            && let Some(reset) = info.reset_requests
        {
            self.pause_because(
                reset,
                &format!("no requests left in the window; it resets in {reset:?}"),
            );
        }
        if info.remaining_tokens == Some(0)
            && let Some(reset) = info.reset_tokens
        {
            self.pause_because(
                reset,
                &format!("no tokens left in the window; it resets in {reset:?}"),
            );
        }
    }
}

/// A [`ChatModel`] whose requests pass through a [`RateLimiter`].
///
/// A 429 pauses every request: for the provider's Retry-After when it gives one, else for an
/// exponential backoff from [`RATE_LIMIT_BACKOFF_START`]; either at most
/// [`MAX_PROVIDER_PAUSE`].
pub struct Limited<M> {
    inner: M,
    limiter: RateLimiter,
    /// 429s in a row, for the backoff.
    limited_in_a_row: AtomicU32,
}

impl<M> Limited<M> {
    /// Wraps `inner` with `limits`.
    pub fn new(inner: M, limits: RateLimits) -> Limited<M> {
        Limited {
            inner,
            limiter: RateLimiter::new(limits),
            limited_in_a_row: AtomicU32::new(0),
        }
    }
}

/// The pause after the `n`-th 429 in a row (0-based) that names no Retry-After.
pub fn rate_limit_backoff(n: u32) -> Duration {
    RATE_LIMIT_BACKOFF_START
        .saturating_mul(2u32.saturating_pow(n.min(16)))
        .min(MAX_PROVIDER_PAUSE)
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
                self.limited_in_a_row.store(0, Ordering::Relaxed);
                if let Some(info) = &r.rate_limit {
                    self.limiter.observe(info);
                }
            }
            Err(e @ ProviderError::RateLimited { .. }) => {
                let n = self.limited_in_a_row.fetch_add(1, Ordering::Relaxed);
                match e.retry_after() {
                    Some(d) => self.limiter.pause_because(d, "HTTP 429 with Retry-After"),
                    None => self.limiter.pause_because(
                        rate_limit_backoff(n),
                        &format!("HTTP 429 without Retry-After ({} in a row)", n + 1),
                    ),
                };
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

    #[test]
    fn backoff_doubles_from_a_second_up_to_the_cap() {
        let secs: Vec<u64> = (0..7).map(|n| rate_limit_backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 20, 20]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reset_of_minutes_pauses_at_most_the_cap() {
        let l = RateLimiter::new(RateLimits::default());
        l.observe(&RateLimitInfo {
            remaining_tokens: Some(0),
            reset_tokens: Some(Duration::from_secs(360)),
            ..RateLimitInfo::default()
        });
        let start = Instant::now();
        l.acquire(1).await;
        assert_eq!(start.elapsed().as_secs(), MAX_PROVIDER_PAUSE.as_secs());
    }

    /// Answers from a script: `None` is a 429 without Retry-After, `Some(info)` a success
    /// reporting `info`.
    struct Script(Mutex<Vec<Option<RateLimitInfo>>>);

    #[async_trait]
    impl ChatModel for Script {
        fn provider(&self) -> &str {
            "script"
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities::default()
        }
        async fn chat(&self, r: &ChatRequest) -> Result<ChatResponse, ProviderError> {
            match self.0.lock().unwrap().remove(0) {
                None => Err(ProviderError::RateLimited {
                    request: "POST /v1/chat/completions".into(),
                    retry_after: None,
                    message: "tokens per min".into(),
                }),
                Some(info) => Ok(ChatResponse {
                    model: r.model.clone(),
                    text: "C".into(),
                    finish_reason: Some("stop".into()),
                    usage: crate::types::Usage::default(),
                    top_logprobs: None,
                    letter_logprobs: None,
                    rate_limit: Some(info),
                }),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_without_retry_after_backs_off_from_a_second() {
        let exhausted = RateLimitInfo {
            remaining_tokens: Some(0),
            reset_tokens: Some(Duration::from_secs(360)),
            ..RateLimitInfo::default()
        };
        let m = Limited::new(
            Script(Mutex::new(vec![
                None,
                None,
                Some(exhausted),
                Some(RateLimitInfo::default()),
            ])),
            RateLimits::default(),
        );
        let r = ChatRequest::new("m", vec![]);
        let start = Instant::now();
        let mut at = Vec::new();
        for _ in 0..4 {
            let _ = m.chat(&r).await;
            at.push(start.elapsed().as_secs());
        }
        // 429: pause 1 s; 429 again: 2 s; a success saying 0 tokens left for six minutes:
        // MAX_PROVIDER_PAUSE, then the next response is read afresh.
        assert_eq!(at, [0, 1, 3, 3 + MAX_PROVIDER_PAUSE.as_secs()]);
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
