//! Running many chat requests through any model, with bounded concurrency and progress.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};

use crate::error::ProviderError;
use crate::traits::ChatModel;
use crate::types::{ChatRequest, ChatResponse};

/// Progress of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Requests finished, successfully or not.
    pub done: u64,
    /// Requests that failed for good.
    pub failed: u64,
    /// Retries made so far (from the retry wrapper's counter, if given).
    pub retried: u64,
    /// Requests in the run.
    pub total: u64,
    /// Time since the run started.
    pub elapsed: Duration,
}

impl Progress {
    /// Finished requests per second.
    pub fn rate(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 { self.done as f64 / s } else { 0.0 }
    }
}

/// Options of [`run_chat`].
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Requests in flight at once (at least 1).
    pub concurrency: usize,
    /// The retry wrapper's counter, to report retries.
    pub retries: Option<Arc<AtomicU64>>,
}

/// Sends every `(id, request)` through `model`, at most `options.concurrency` at a time, and
/// streams `(id, result, progress)` back as each finishes (not in input order).
pub fn run_chat<M: ChatModel + ?Sized + 'static>(
    model: Arc<M>,
    requests: Vec<(String, ChatRequest)>,
    options: RunOptions,
) -> impl Stream<Item = (String, Result<ChatResponse, ProviderError>, Progress)> {
    let total = requests.len() as u64;
    let start = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let retries = options.retries.clone();
    futures::stream::iter(requests)
        .map(move |(id, request)| {
            let model = model.clone();
            async move {
                let result = model.chat(&request).await;
                (id, result)
            }
        })
        .buffer_unordered(options.concurrency.max(1))
        .map(move |(id, result)| {
            let done = done.fetch_add(1, Ordering::Relaxed) + 1;
            let failed = if result.is_err() {
                failed.fetch_add(1, Ordering::Relaxed) + 1
            } else {
                failed.load(Ordering::Relaxed)
            };
            let progress = Progress {
                done,
                failed,
                retried: retries.as_ref().map_or(0, |r| r.load(Ordering::Relaxed)),
                total,
                elapsed: start.elapsed(),
            };
            (id, result, progress)
        })
}
