//! Values that must never reach a log, an error message or a file: API keys and tokens.

use std::fmt;

/// An API key or token. Its `Debug` and `Display` print `[redacted]`; the value is read only
/// through [`Secret::expose`], at the one place a request header is built.
///
/// ```
/// use xlt_provider::Secret;
///
/// let key = Secret::new("sk-live-123");
/// assert_eq!(format!("{key:?} {key}"), "[redacted] [redacted]");
/// assert_eq!(key.expose(), "sk-live-123");
/// assert!(Secret::new("  ").is_empty());
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`, trimmed of surrounding whitespace (a key pasted with its newline).
    pub fn new(value: impl Into<String>) -> Secret {
        let value = value.into();
        Secret(value.trim().to_owned())
    }

    /// The value itself, for the `Authorization` header and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no key was given (an OpenAI-compatible server of one's own needs none).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret::new(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret::new(value)
    }
}
