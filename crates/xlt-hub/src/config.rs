//! Where the cache is, which server to ask, with which token: read from the environment in one
//! place, [`HubConfig::from_env`], with the Python client's names and precedence.

use std::fmt;
use std::path::{Path, PathBuf};

/// The public Hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// How to reach the Hub and where its cache lies.
///
/// Build one with [`HubConfig::from_env`] (what a program should do, so that it shares the
/// cache and settings of the Python tools) or [`HubConfig::new`] with an explicit cache
/// directory (what tests do, so that they never touch the user's cache). The token is
/// redacted in `Debug`.
#[derive(Clone)]
pub struct HubConfig {
    /// The hub cache directory, which holds `datasets--Org--Name/` and `models--Org--Name/`
    /// (`HF_HUB_CACHE`; default `$HF_HOME/hub`).
    pub cache_dir: PathBuf,
    /// The server's base URL, without a trailing slash (`HF_ENDPOINT`).
    pub endpoint: String,
    /// The access token sent as `Authorization: Bearer` (`HF_TOKEN`, else the file
    /// `huggingface-cli login` wrote). Never logged.
    pub token: Option<String>,
    /// Never ask the network; serve from the cache or fail saying what is missing
    /// (`HF_HUB_OFFLINE`).
    pub offline: bool,
    /// Draw a progress bar per downloaded file on standard error.
    pub progress: bool,
}

impl fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubConfig")
            .field("cache_dir", &self.cache_dir)
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("offline", &self.offline)
            .field("progress", &self.progress)
            .finish()
    }
}

impl HubConfig {
    /// A configuration with the given cache directory, the public endpoint, no token, online,
    /// no progress bars. Reads no environment variable.
    pub fn new(cache_dir: impl Into<PathBuf>) -> HubConfig {
        HubConfig {
            cache_dir: cache_dir.into(),
            endpoint: DEFAULT_ENDPOINT.to_owned(),
            token: None,
            offline: false,
            progress: false,
        }
    }

    /// Reads the environment as the Python client `huggingface_hub` does, so that both share
    /// one cache and one login:
    ///
    /// | setting | variables, first set wins | default |
    /// |---|---|---|
    /// | home | `HF_HOME` | `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface` |
    /// | cache | `HF_HUB_CACHE`, `HUGGINGFACE_HUB_CACHE` | `<home>/hub` |
    /// | endpoint | `HF_ENDPOINT` (trailing `/` removed) | `https://huggingface.co` |
    /// | token | `HF_TOKEN`, `HUGGING_FACE_HUB_TOKEN`, then the file `HF_TOKEN_PATH` | `<home>/token` |
    /// | offline | `HF_HUB_OFFLINE`, `TRANSFORMERS_OFFLINE` (`1`, `ON`, `YES`, `TRUE`) | online |
    ///
    /// `HF_HUB_DISABLE_IMPLICIT_TOKEN` set true sends no token. A leading `~` in a path is
    /// the home directory; empty variables count as unset, and a token is trimmed of
    /// whitespace and line breaks. Progress bars are on.
    ///
    /// This is the one place this crate reads the environment.
    pub fn from_env() -> HubConfig {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let mut config = HubConfig::from_vars(|name| std::env::var(name).ok(), home.as_deref());
        config.progress = true;
        config
    }

    /// [`HubConfig::from_env`] over any variable lookup (`var(name)`) and home directory, so
    /// that the rules are testable without touching the process environment. Progress bars
    /// are off.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>, home: Option<&Path>) -> HubConfig {
        let var = |name: &str| var(name).filter(|v| !v.is_empty());
        let expand = |value: String| -> PathBuf {
            match (value.strip_prefix('~'), home) {
                (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
                    home.join(rest.trim_start_matches('/'))
                }
                _ => PathBuf::from(value),
            }
        };
        let hf_home = match var("HF_HOME") {
            Some(v) => expand(v),
            None => {
                let cache = match var("XDG_CACHE_HOME") {
                    Some(v) => expand(v),
                    None => expand("~/.cache".to_owned()),
                };
                cache.join("huggingface")
            }
        };
        let cache_dir = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .map(expand)
            .unwrap_or_else(|| hf_home.join("hub"));
        let endpoint = var("HF_ENDPOINT")
            .map(|e| e.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
        let token_path = var("HF_TOKEN_PATH")
            .map(expand)
            .unwrap_or_else(|| hf_home.join("token"));
        let token = if is_true(var("HF_HUB_DISABLE_IMPLICIT_TOKEN")) {
            None
        } else {
            var("HF_TOKEN")
                .or_else(|| var("HUGGING_FACE_HUB_TOKEN"))
                .and_then(clean_token)
                .or_else(|| {
                    std::fs::read_to_string(&token_path)
                        .ok()
                        .and_then(clean_token)
                })
        };
        let offline = is_true(var("HF_HUB_OFFLINE").or_else(|| var("TRANSFORMERS_OFFLINE")));
        HubConfig {
            cache_dir,
            endpoint,
            token,
            offline,
            progress: false,
        }
    }
}

/// `huggingface_hub.constants._is_true`.
fn is_true(value: Option<String>) -> bool {
    value.is_some_and(|v| matches!(v.to_ascii_uppercase().as_str(), "1" | "ON" | "YES" | "TRUE"))
}

/// `huggingface_hub.utils._auth._clean_token`: no line breaks, no surrounding blanks, empty is
/// none.
fn clean_token(token: String) -> Option<String> {
    let cleaned = token.replace(['\r', '\n'], "");
    let cleaned = cleaned.trim();
    (!cleaned.is_empty()).then(|| cleaned.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> HubConfig {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HubConfig::from_vars(|k| map.get(k).cloned(), Some(Path::new("/home/u")))
    }

    #[test]
    fn environment_rules_follow_the_python_client() {
        let check = |vars: &[(&str, &str)], cache: &str, endpoint: &str, offline: bool| {
            let c = config(vars);
            assert_eq!(c.cache_dir, PathBuf::from(cache), "{vars:?}");
            assert_eq!(c.endpoint, endpoint, "{vars:?}");
            assert_eq!(c.offline, offline, "{vars:?}");
        };
        let hub = DEFAULT_ENDPOINT;
        check(&[], "/home/u/.cache/huggingface/hub", hub, false);
        check(
            &[("XDG_CACHE_HOME", "/x")],
            "/x/huggingface/hub",
            hub,
            false,
        );
        check(&[("HF_HOME", "~/hf")], "/home/u/hf/hub", hub, false);
        check(
            &[("HF_HOME", "/h"), ("HF_HUB_CACHE", "/c")],
            "/c",
            hub,
            false,
        );
        check(
            &[("HF_HOME", "/h"), ("HUGGINGFACE_HUB_CACHE", "/legacy")],
            "/legacy",
            hub,
            false,
        );
        check(
            &[("HF_HUB_CACHE", "/c"), ("HUGGINGFACE_HUB_CACHE", "/legacy")],
            "/c",
            hub,
            false,
        );
        check(
            &[
                ("HF_ENDPOINT", "http://127.0.0.1:9/"),
                ("HF_HUB_CACHE", "/c"),
            ],
            "/c",
            "http://127.0.0.1:9",
            false,
        );
        for on in ["1", "true", "ON", "yes"] {
            check(
                &[("HF_HUB_OFFLINE", on)],
                "/home/u/.cache/huggingface/hub",
                hub,
                true,
            );
        }
        for off in ["0", "false", ""] {
            check(
                &[("HF_HUB_OFFLINE", off)],
                "/home/u/.cache/huggingface/hub",
                hub,
                false,
            );
        }
        check(
            &[("TRANSFORMERS_OFFLINE", "1")],
            "/home/u/.cache/huggingface/hub",
            hub,
            true,
        );
    }

    #[test]
    fn token_from_variable_then_file() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().to_str().unwrap();
        std::fs::write(dir.path().join("token"), "hf_file\n").unwrap();
        let token = |vars: &[(&str, &str)]| config(vars).token;
        assert_eq!(token(&[("HF_HOME", home)]).as_deref(), Some("hf_file"));
        assert_eq!(
            token(&[("HF_HOME", home), ("HF_TOKEN", " hf_env\n")]).as_deref(),
            Some("hf_env")
        );
        assert_eq!(
            token(&[("HF_HOME", home), ("HUGGING_FACE_HUB_TOKEN", "hf_old")]).as_deref(),
            Some("hf_old")
        );
        assert_eq!(
            token(&[("HF_HOME", home), ("HF_TOKEN_PATH", "/nonexistent/token")]),
            None
        );
        assert_eq!(
            token(&[
                ("HF_HOME", home),
                ("HF_TOKEN", "hf_env"),
                ("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
            ]),
            None
        );
        let shown = format!("{:?}", config(&[("HF_TOKEN", "hf_secret")]));
        assert!(!shown.contains("hf_secret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
