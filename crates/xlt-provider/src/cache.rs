//! An on-disk response cache: rerunning an evaluation costs nothing, and a crash loses
//! nothing already answered.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use crate::error::ProviderError;
use crate::store::{stable_hash, storage_err, write_atomic};
use crate::traits::ChatModel;
use crate::types::{Capabilities, ChatRequest, ChatResponse};

/// The on-disk store behind [`Cached`], usable on its own: the batch evaluation writes the
/// answers it harvests here, so that chat and batch modes share one cache.
///
/// The key is the SHA-256 of the request's canonical JSON (model, messages, temperature,
/// max tokens, seed, top logprobs), so any change to the request is a new entry: an answer
/// cut off at 16 tokens is never served to a request for 256. Each response is one file,
/// `<dir>/<2 hex>/<hash>.json`, written atomically; a file that cannot be read back is a
/// miss.
#[derive(Debug, Clone)]
pub struct ResponseCache {
    dir: PathBuf,
}

impl ResponseCache {
    /// A cache under `dir` (created on the first write).
    pub fn new(dir: impl Into<PathBuf>) -> ResponseCache {
        ResponseCache { dir: dir.into() }
    }

    /// The file for `request`.
    pub fn path_for(&self, request: &ChatRequest) -> PathBuf {
        let h = stable_hash(request);
        self.dir.join(&h[..2]).join(format!("{h}.json"))
    }

    /// The stored answer to `request`, if any.
    pub fn get(&self, request: &ChatRequest) -> Option<ChatResponse> {
        read_entry(&self.path_for(request))
    }

    /// Stores the answer to `request`.
    ///
    /// # Errors
    /// [`ProviderError::Storage`] naming the file.
    pub fn put(&self, request: &ChatRequest, response: &ChatResponse) -> Result<(), ProviderError> {
        let path = self.path_for(request);
        let bytes = serde_json::to_vec(response).map_err(|e| storage_err(&path, e))?;
        write_atomic(&path, &bytes)
    }
}

fn read_entry(path: &Path) -> Option<ChatResponse> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "unreadable cache entry; asking again");
            None
        }
    }
}

/// A [`ChatModel`] that answers from disk what it has answered before (see
/// [`ResponseCache`] for the key and layout). Errors are never cached.
pub struct Cached<M> {
    inner: M,
    store: ResponseCache,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl<M> Cached<M> {
    /// Caches `inner`'s responses under `dir`.
    pub fn new(inner: M, dir: impl Into<PathBuf>) -> Cached<M> {
        Cached {
            inner,
            store: ResponseCache::new(dir),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The file for `request`.
    pub fn path_for(&self, request: &ChatRequest) -> PathBuf {
        self.store.path_for(request)
    }

    /// Requests answered from disk so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Requests passed to the inner model so far.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl<M: ChatModel> ChatModel for Cached<M> {
    fn provider(&self) -> &str {
        self.inner.provider()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        if let Some(r) = self.store.get(request) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(r);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let response = self.inner.chat(request).await?;
        self.store.put(request, &response)?;
        Ok(response)
    }
}
