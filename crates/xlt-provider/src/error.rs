//! The one error type every backend speaks.

use std::time::Duration;

/// What went wrong talking to a provider. Backends map their own failures onto these
/// variants, so callers decide what to do without knowing the provider.
///
/// No variant ever holds an API key: backends build messages from response bodies and
/// request descriptions, never from headers they sent.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The request did not reach the provider or the connection broke. `request` names the
    /// method and the URL without credentials (`POST http://127.0.0.1:8000/v1/files`),
    /// `message` each distinct cause once (`connection refused`).
    #[error("{request}: transport error: {message}")]
    Transport {
        /// Which request (`POST /v1/chat/completions`).
        request: String,
        /// What failed.
        message: String,
    },
    /// No answer within the configured timeout.
    #[error("{request}: timed out after {} s", after.as_secs_f64())]
    Timeout {
        /// Which request.
        request: String,
        /// The timeout.
        after: Duration,
    },
    /// Too many requests or tokens for now; worth retrying after a pause.
    #[error("{request}: rate limited{}: {message}", retry_after.map(|d| format!(" (retry after {d:?})")).unwrap_or_default())]
    RateLimited {
        /// Which request.
        request: String,
        /// How long the provider asked us to wait, if it said.
        retry_after: Option<Duration>,
        /// The provider's message.
        message: String,
    },
    /// The account is out of credit or over its hard quota. Never retried: waiting does not
    /// help.
    #[error("{request}: quota exhausted: {message}")]
    QuotaExhausted {
        /// Which request.
        request: String,
        /// The provider's message.
        message: String,
    },
    /// The provider answered with an error status.
    #[error("{request}: HTTP {status}{}{}: {message}{}",
        kind.as_ref().map(|k| format!(" {k}")).unwrap_or_default(),
        code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default(),
        request_id.as_ref().map(|r| format!(" [request id {r}]")).unwrap_or_default())]
    Api {
        /// Which request.
        request: String,
        /// HTTP status.
        status: u16,
        /// The provider's error type (`invalid_request_error`, `server_error`).
        kind: Option<String>,
        /// The provider's error code (`model_not_found`).
        code: Option<String>,
        /// The provider's message.
        message: String,
        /// The provider's request id, for its support.
        request_id: Option<String>,
    },
    /// The provider answered 2xx, but the body is not what its API promises: cut off
    /// mid-object by a broken connection or proxy, or malformed. Retryable: the same
    /// request usually decodes the next time.
    #[error("{request}: cannot decode response: {message}; body: {raw_body}")]
    Decode {
        /// Which request.
        request: String,
        /// The decoder's message.
        message: String,
        /// The body as received (truncated to a few KiB).
        raw_body: String,
    },
    /// The request is invalid before it is sent (bad spec, missing file).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A model, file, job or batch does not exist (or the account cannot see it).
    #[error("not found: {what}")]
    NotFound {
        /// What was looked up, with its id.
        what: String,
    },
    /// The model a request names does not exist, or the account cannot use it (OpenAI's and
    /// Together's `model_not_found`): final for every request to that model, not only this one.
    #[error("{request}: model not found: {message}")]
    ModelNotFound {
        /// Which request.
        request: String,
        /// The provider's message (it names the model).
        message: String,
    },
    /// The backend does not offer this capability.
    #[error("unsupported by {provider}: {what}")]
    Unsupported {
        /// The backend.
        provider: String,
        /// The capability.
        what: String,
    },
    /// A fine-tuning job ended without a model.
    #[error("fine-tuning job {job} {status}: {message}")]
    JobFailed {
        /// The job id.
        job: String,
        /// `failed` or `cancelled`.
        status: String,
        /// The provider's reason.
        message: String,
    },
    /// Local storage (cache, ledger, embedded provider state) failed.
    #[error("{path}: {message}")]
    Storage {
        /// The file.
        path: String,
        /// What failed.
        message: String,
    },
}

impl ProviderError {
    /// Whether the same request may succeed if sent again later: transport failures,
    /// timeouts, rate limits, a cut-off or malformed 2xx body ([`ProviderError::Decode`]),
    /// and HTTP 408, 409, 500, 502, 503, 504 and 529. Quota exhaustion and other client
    /// errors are final.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderError::Transport { .. }
            | ProviderError::Timeout { .. }
            | ProviderError::RateLimited { .. }
            | ProviderError::Decode { .. } => true,
            ProviderError::Api { status, .. } => {
                matches!(status, 408 | 409 | 500 | 502 | 503 | 504 | 529)
            }
            _ => false,
        }
    }

    /// Whether no later request of this run can succeed either: quota exhaustion and HTTP
    /// 401 (a key the provider refuses). [`crate::Retry`] stops sending once it sees one, so
    /// that thousands of queued requests do not each meet the same wall.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            ProviderError::QuotaExhausted { .. } | ProviderError::Api { status: 401, .. }
        )
    }

    /// The pause the provider asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_classes() {
        let api = |status| ProviderError::Api {
            request: "POST /x".into(),
            status,
            kind: None,
            code: None,
            message: "m".into(),
            request_id: None,
        };
        assert!(api(500).is_retryable());
        assert!(api(503).is_retryable());
        assert!(!api(400).is_retryable());
        assert!(!api(404).is_retryable());
        assert!(
            ProviderError::RateLimited {
                request: "r".into(),
                retry_after: Some(Duration::from_secs(2)),
                message: "slow down".into()
            }
            .is_retryable()
        );
        assert!(
            !ProviderError::QuotaExhausted {
                request: "r".into(),
                message: "no credit".into()
            }
            .is_retryable()
        );
        assert!(
            ProviderError::Decode {
                request: "r".into(),
                message: "EOF while parsing a string".into(),
                raw_body: "{\"id\": \"ftjob-1".into()
            }
            .is_retryable()
        );
        assert!(api(401).is_fatal() && !api(401).is_retryable());
        assert!(!api(503).is_fatal());
        let msg = api(404).to_string();
        assert_eq!(msg, "POST /x: HTTP 404: m");
    }
}
