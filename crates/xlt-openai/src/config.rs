//! Configuration, read from the environment in one place.

use std::fmt;
use std::time::Duration;

use xlt_provider::{ProviderError, Secret};

/// OpenAI's API root.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// How a server spells first-token log-probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogprobsDialect {
    /// OpenAI: `logprobs: true, top_logprobs: n` in the request;
    /// `choices[0].logprobs.content[0].top_logprobs: [{token, logprob}]` in the response.
    #[default]
    OpenAi,
    /// Together: `logprobs: n` (an integer) in the request;
    /// `choices[0].logprobs: {tokens, token_ids, token_logprobs, top_logprobs}` in the response,
    /// `top_logprobs` a map from token to logprob per position.
    Together,
}

/// How to reach an OpenAI-compatible server. The key never appears in `Debug`, logs or
/// errors.
#[derive(Clone)]
pub struct OpenAiConfig {
    api_key: Secret,
    /// The API root, including `/v1` (`https://api.openai.com/v1`, `http://localhost:8000/v1`).
    pub base_url: String,
    /// `OpenAI-Organization` header.
    pub organization: Option<String>,
    /// `OpenAI-Project` header.
    pub project: Option<String>,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Connection timeout.
    pub connect_timeout: Duration,
    /// The name the backend reports (`openai`); an OpenAI-compatible provider can set its own.
    pub provider_name: String,
    /// How the server spells logprobs.
    pub logprobs: LogprobsDialect,
}

impl fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("api_key", &self.api_key)
            .field("base_url", &self.base_url)
            .field("organization", &self.organization)
            .field("project", &self.project)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("provider_name", &self.provider_name)
            .field("logprobs", &self.logprobs)
            .finish()
    }
}

impl OpenAiConfig {
    /// A configuration with `api_key` against `base_url` and default timeouts (120 s for a
    /// request, 10 s to connect).
    pub fn new(api_key: impl Into<Secret>, base_url: impl Into<String>) -> OpenAiConfig {
        OpenAiConfig {
            api_key: api_key.into(),
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            organization: None,
            project: None,
            timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(10),
            provider_name: "openai".to_owned(),
            logprobs: LogprobsDialect::OpenAi,
        }
    }

    /// Reads `OPENAI_API_KEY`, `OPENAI_BASE_URL` (default [`DEFAULT_BASE_URL`]),
    /// `OPENAI_ORG_ID`, `OPENAI_PROJECT_ID` and `OPENAI_TIMEOUT_SECS` (the whole-request
    /// timeout in seconds, default 120; optional). The key is required for OpenAI itself and
    /// optional for another server (vLLM, llama.cpp, a gateway: [`OpenAiConfig::is_openai`]
    /// false), which then gets no `Authorization` header. This is the only place the
    /// environment is read.
    ///
    /// # Errors
    /// [`ProviderError::InvalidRequest`] if `OPENAI_API_KEY` is unset or empty for OpenAI's
    /// own API, or `OPENAI_TIMEOUT_SECS` is not a positive number.
    pub fn from_env() -> Result<OpenAiConfig, ProviderError> {
        let key = std::env::var("OPENAI_API_KEY").unwrap_or_default();
        let base = std::env::var("OPENAI_BASE_URL")
            .ok()
            .filter(|b| !b.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
        let mut c = OpenAiConfig::new(key.trim(), base);
        if c.api_key.is_empty() && c.is_openai() {
            return Err(ProviderError::InvalidRequest(
                "OPENAI_API_KEY is not set; export it (a server of your own set in OPENAI_BASE_URL needs none), or run offline with the embedded provider"
                    .to_owned(),
            ));
        }
        if let Some(t) = timeout_from_env("OPENAI_TIMEOUT_SECS")? {
            c.timeout = t;
        }
        c.organization = std::env::var("OPENAI_ORG_ID")
            .ok()
            .filter(|s| !s.is_empty());
        c.project = std::env::var("OPENAI_PROJECT_ID")
            .ok()
            .filter(|s| !s.is_empty());
        Ok(c)
    }

    pub(crate) fn api_key(&self) -> &Secret {
        &self.api_key
    }

    /// Whether [`OpenAiConfig::base_url`] is OpenAI's own API (host `api.openai.com`), as
    /// opposed to an OpenAI-compatible server such as vLLM.
    pub fn is_openai(&self) -> bool {
        reqwest::Url::parse(&self.base_url)
            .ok()
            .and_then(|u| {
                u.host_str()
                    .map(|h| h.eq_ignore_ascii_case("api.openai.com"))
            })
            .unwrap_or(false)
    }
}

/// A timeout in seconds from the environment variable `var`, if set.
///
/// # Errors
/// [`ProviderError::InvalidRequest`] naming the variable if it is not a positive number.
pub fn timeout_from_env(var: &str) -> Result<Option<Duration>, ProviderError> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => match v.trim().parse::<f64>() {
            Ok(s) if s > 0.0 && s.is_finite() => Ok(Some(Duration::from_secs_f64(s))),
            _ => Err(ProviderError::InvalidRequest(format!(
                "{var}={v:?} is not a positive number of seconds"
            ))),
        },
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_key() {
        let c = OpenAiConfig::new("sk-secret-123", "http://localhost:1/v1/");
        let d = format!("{c:?}");
        assert!(!d.contains("sk-secret-123"), "{d}");
        assert!(d.contains("[redacted]"));
        assert_eq!(c.base_url, "http://localhost:1/v1");
    }

    #[test]
    fn only_openai_itself_is_openai() {
        for (url, expected) in [
            (DEFAULT_BASE_URL, true),
            ("https://API.openai.com/v1/", true),
            ("http://localhost:8000/v1", false),
            ("https://api.openai.com.example.org/v1", false),
            ("not a url", false),
        ] {
            assert_eq!(OpenAiConfig::new("", url).is_openai(), expected, "{url}");
        }
    }
}
