//! LoRA adapters served by a vLLM server: loaded for their evaluation, unloaded after.
//!
//! vLLM's OpenAI-compatible server (`vllm serve <base> --enable-lora`, with
//! `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True` in the server's environment) loads adapters at run
//! time (`vllm/entrypoints/openai/serving_models.py`, routes in
//! `vllm/entrypoints/serve/lora/api_router.py`):
//!
//! - `POST /v1/load_lora_adapter {"lora_name", "lora_path"}` answers 200 with a plain-text
//!   `Success: ...`; 400 `The lora adapter '<name>' has already been loaded.` for a name in
//!   use; 404 (`No adapter found ...`) for a path the server cannot read;
//! - `POST /v1/unload_lora_adapter {"lora_name"}` answers 200, or 404 `... cannot be found.`
//!   for a name not loaded;
//! - `GET /v1/models` lists the base model(s) and every loaded adapter, the adapter with
//!   `parent` (its base model) and `root` (its path);
//! - without the environment variable the two routes do not exist (FastAPI's 404
//!   `{"detail": "Not Found"}`).
//!
//! A chat request names an adapter by its `lora_name`.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;
use xlt_provider::{
    Capabilities, ChatModel, ChatRequest, ChatResponse, ModelServer, ProviderError, ServeState,
    Served, ServedRoutes,
};

use crate::client::{Body, OpenAiClient};

/// The separator of a locally fine-tuned model id, `<base>+<adapter dir>` (what
/// `xlt-local`'s fine-tuner names its models): the base model as the server knows it, and
/// the directory of the adapter in PEFT format (`adapter_config.json`,
/// `adapter_model.safetensors`).
pub const ADAPTER_SEPARATOR: char = '+';

/// `provider_state` of a model the server answers for without loading anything (the base
/// model, a model that is not `<base>+<adapter dir>`): nothing to load, nothing to unload.
const SERVED_AS_IS: &str = "served as is";

/// `provider_state` of a loaded adapter.
const LOADED: &str = "loaded";

/// The base model and the adapter directory of a locally fine-tuned model id
/// `<base>+<adapter dir>`, split at the first `+` (a Hugging Face model id has none; an
/// adapter directory may); `None` for any other id.
///
/// ```
/// use xlt_openai::split_adapter_model;
/// assert_eq!(
///     split_adapter_model("HuggingFaceTB/SmolLM2-135M-Instruct+/exp/local/jobs/j1/adapter"),
///     Some(("HuggingFaceTB/SmolLM2-135M-Instruct", std::path::Path::new("/exp/local/jobs/j1/adapter")))
/// );
/// assert_eq!(split_adapter_model("gpt-4.1-nano"), None);
/// ```
pub fn split_adapter_model(model: &str) -> Option<(&str, &Path)> {
    let (base, dir) = model.split_once(ADAPTER_SEPARATOR)?;
    (!base.is_empty() && !dir.is_empty()).then_some((base, Path::new(dir)))
}

/// Where adapter directories of this machine are on the vLLM server: a path under `local`
/// is sent as the same path under `server` (a shared filesystem mounted elsewhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathMap {
    /// The prefix on this machine (`/home/me/exp`).
    pub local: PathBuf,
    /// The same directory as the server sees it (`/mnt/exp`).
    pub server: PathBuf,
}

/// How [`VllmServer`] reaches adapters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VllmConfig {
    /// A prefix to rewrite in adapter paths; `None`: the server reads the paths of this
    /// machine (the same machine, or a filesystem mounted at the same place).
    pub path_map: Option<PathMap>,
}

impl VllmConfig {
    /// Reads `XLT_VLLM_PATH_MAP` (`<local prefix>=<server prefix>`, optional), the only
    /// place this configuration reads the environment.
    ///
    /// # Errors
    /// [`ProviderError::InvalidRequest`] if the variable is set but not two non-empty
    /// absolute paths separated by `=`.
    pub fn from_env() -> Result<VllmConfig, ProviderError> {
        let path_map = match std::env::var("XLT_VLLM_PATH_MAP") {
            Ok(v) if !v.trim().is_empty() => Some(parse_path_map(v.trim())?),
            _ => None,
        };
        Ok(VllmConfig { path_map })
    }
}

fn parse_path_map(v: &str) -> Result<PathMap, ProviderError> {
    let bad = || {
        ProviderError::InvalidRequest(format!(
            "XLT_VLLM_PATH_MAP={v:?} is not `<local prefix>=<server prefix>` (two absolute paths)"
        ))
    };
    let (local, server) = v.split_once('=').ok_or_else(bad)?;
    let (local, server) = (Path::new(local.trim()), Path::new(server.trim()));
    if !local.is_absolute() || !server.is_absolute() {
        return Err(bad());
    }
    Ok(PathMap {
        local: local.to_owned(),
        server: server.to_owned(),
    })
}

/// A vLLM server evaluating locally fine-tuned models: a [`ModelServer`] that loads the LoRA
/// adapter of a model `<base>+<adapter dir>` under a name (`POST /v1/load_lora_adapter`)
/// and unloads it (`POST /v1/unload_lora_adapter`), and a [`ChatModel`] that sends such a
/// model's requests with the adapter's name as `model`.
///
/// The routing stays inside: callers, and their response cache, name the fine-tuned model,
/// so a rerun that loads the adapter under another name finds every answer already given.
/// Any other model (the base, a model that is not `<base>+<adapter dir>`) goes to the server
/// as it is, and [`ModelServer::start`] loads nothing for it.
///
/// The adapter directory must be readable by the server under the path sent: the same
/// machine, a shared filesystem mounted at the same place, or one mounted elsewhere with
/// [`VllmConfig::path_map`]. A relative directory is taken from this process's working
/// directory.
#[derive(Debug, Clone)]
pub struct VllmServer {
    http: OpenAiClient,
    config: VllmConfig,
    /// Fine-tuned model -> the adapter name to send as `model`.
    routes: ServedRoutes,
}

#[derive(Debug, Deserialize)]
struct ModelList {
    #[serde(default)]
    data: Vec<ModelCard>,
}

#[derive(Debug, Clone, Deserialize)]
struct ModelCard {
    id: String,
    #[serde(default)]
    root: Option<String>,
    #[serde(default)]
    parent: Option<String>,
}

impl VllmServer {
    /// A server reached through `http` (its base URL, key and timeouts).
    pub fn new(http: OpenAiClient, config: VllmConfig) -> VllmServer {
        VllmServer {
            http,
            config,
            routes: ServedRoutes::default(),
        }
    }

    /// The path the server is sent for `dir`: absolute, with the prefix of
    /// [`VllmConfig::path_map`] rewritten.
    fn server_path(&self, dir: &Path) -> String {
        let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
        let mapped = match &self.config.path_map {
            Some(m) => match abs.strip_prefix(&m.local) {
                Ok(rest) => m.server.join(rest),
                Err(_) => abs,
            },
            None => abs,
        };
        mapped.to_string_lossy().into_owned()
    }

    /// The path on this machine of a `root` the server lists (the inverse of
    /// [`VllmServer::server_path`]).
    fn local_path(&self, root: &str) -> String {
        let root = Path::new(root);
        match &self.config.path_map {
            Some(m) => match root.strip_prefix(&m.server) {
                Ok(rest) => m.local.join(rest).to_string_lossy().into_owned(),
                Err(_) => root.to_string_lossy().into_owned(),
            },
            None => root.to_string_lossy().into_owned(),
        }
    }

    async fn models(&self) -> Result<Vec<ModelCard>, ProviderError> {
        let list: ModelList = self
            .http
            .json(crate::HttpMethod::Get, "/models", None)
            .await?;
        Ok(list.data)
    }

    fn loaded(name: &str, model: &str) -> Served {
        Served {
            id: name.to_owned(),
            model: model.to_owned(),
            chat_model: name.to_owned(),
            state: ServeState::Ready,
            provider_state: LOADED.to_owned(),
        }
    }

    fn route(&self, model: &str, name: &str) {
        self.routes.set(model, name);
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> Result<String, ProviderError> {
        Ok(self
            .http
            .send(Method::POST, path, Body::Json(body))
            .await?
            .1)
    }

    async fn unload(&self, name: &str) -> Result<(), ProviderError> {
        match self
            .post("/unload_lora_adapter", json!({"lora_name": name}))
            .await
        {
            // Unknown to the server (never loaded, unloaded already, or a server restarted):
            // nothing is left to unload.
            Ok(_) | Err(ProviderError::NotFound { .. }) => Ok(()),
            Err(ProviderError::Api { message, .. }) if message.contains("cannot be found") => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// What a failed load means, in the user's terms.
    fn load_error(&self, e: ProviderError, model: &str, path: &str) -> ProviderError {
        let url = &self.http.config().base_url;
        match e {
            // vLLM's own 404 names the adapter (`No adapter found for <path>`); a missing
            // route is FastAPI's bare `Not Found`. (`what` ends with the request, which
            // names the route: only the message before it counts.)
            ProviderError::NotFound { what }
                if what
                    .rsplit_once(" (POST ")
                    .map_or(what.as_str(), |(m, _)| m)
                    .to_lowercase()
                    .contains("adapter") =>
            {
                ProviderError::InvalidRequest(format!(
                    "the vLLM server at {url} cannot read the adapter of `{model}` at `{path}` ({what}); the path must be readable by the server: run it on this machine, on a filesystem mounted at the same place, or set XLT_VLLM_PATH_MAP=<local prefix>=<server prefix>"
                ))
            }
            ProviderError::NotFound { what } => ProviderError::InvalidRequest(format!(
                "the server at {url} has no POST /v1/load_lora_adapter ({what}): start vLLM with `--enable-lora` and `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True` in its environment, so that it loads the LoRA adapter of `{model}` at run time"
            )),
            ProviderError::Api { status: 405, .. } => ProviderError::InvalidRequest(format!(
                "the server at {url} does not load LoRA adapters at run time (POST /v1/load_lora_adapter: HTTP 405): start vLLM with `--enable-lora` and `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True` in its environment"
            )),
            other => other,
        }
    }

    /// Checks that the server serves `base`, which the adapter of `model` was trained on.
    fn check_base(
        &self,
        cards: &[ModelCard],
        base: &str,
        model: &str,
    ) -> Result<(), ProviderError> {
        let bases: Vec<&ModelCard> = cards.iter().filter(|c| c.parent.is_none()).collect();
        if bases
            .iter()
            .any(|c| c.id == base || c.root.as_deref() == Some(base))
        {
            return Ok(());
        }
        let served: Vec<&str> = bases.iter().map(|c| c.id.as_str()).collect();
        Err(ProviderError::InvalidRequest(format!(
            "the vLLM server at {} serves {served:?}, not `{base}`, the base model of `{model}`: start it with `vllm serve {base} --enable-lora` (or name the model it serves `--served-model-name {base}`)",
            self.http.config().base_url
        )))
    }
}

#[async_trait]
impl ChatModel for VllmServer {
    fn provider(&self) -> &str {
        ChatModel::provider(&self.http)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            chat: true,
            logprobs: true,
            fine_tuning: false,
            batch: false,
        }
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        match self.routes.route(request) {
            std::borrow::Cow::Owned(routed) => self.http.chat(&routed).await,
            std::borrow::Cow::Borrowed(_) => self.http.chat(request).await.map_err(|e| match e {
                ProviderError::ModelNotFound { request: r, message } => {
                    let hint = match split_adapter_model(&request.model) {
                        Some(_) => "a LoRA adapter model (`<base>+<adapter dir>`) is loaded by `evaluate` itself, through the server's POST /v1/load_lora_adapter".to_owned(),
                        None => format!(
                            "the server at {} does not serve `{}`: start vLLM with `vllm serve {}` (or `--served-model-name {}`)",
                            self.http.config().base_url,
                            request.model,
                            request.model,
                            request.model
                        ),
                    };
                    ProviderError::ModelNotFound {
                        request: r,
                        message: format!("{message}; {hint}"),
                    }
                }
                e => e,
            }),
        }
    }
}

#[async_trait]
impl ModelServer for VllmServer {
    /// Loads the adapter of `model` (`<base>+<adapter dir>`) under the name `display_name`
    /// after checking that the server serves `<base>`. A name already loaded from the same
    /// path counts as loaded (vLLM's 400 `has already been loaded`); one loaded from another
    /// path (an earlier fine-tune) is unloaded and loaded again. Any other model is served
    /// as it is: nothing is loaded.
    async fn start(&self, model: &str, display_name: &str) -> Result<Served, ProviderError> {
        // Callers that ask `needs_start` never start another model; one that does gets it
        // served as it is.
        let Some((base, dir)) = split_adapter_model(model) else {
            return Ok(Served {
                id: String::new(),
                model: model.to_owned(),
                chat_model: model.to_owned(),
                state: ServeState::Ready,
                provider_state: SERVED_AS_IS.to_owned(),
            });
        };
        let path = self.server_path(dir);
        let cards = self.models().await?;
        self.check_base(&cards, base, model)?;
        let body = json!({"lora_name": display_name, "lora_path": path});
        let mut reloaded = false;
        loop {
            match self.post("/load_lora_adapter", body.clone()).await {
                Ok(_) => break,
                Err(ProviderError::Api {
                    status: 400,
                    message,
                    ..
                }) if message.contains("already been loaded") => {
                    let cards = self.models().await?;
                    let root = cards
                        .iter()
                        .find(|c| c.id == display_name)
                        .and_then(|c| c.root.clone());
                    match root {
                        Some(r) if r != path && !reloaded => {
                            tracing::warn!(adapter = %display_name, old = %r, new = %path, "the adapter's name is loaded from another path; loading it again");
                            self.unload(display_name).await?;
                            reloaded = true;
                        }
                        _ => break,
                    }
                }
                Err(e) => return Err(self.load_error(e, model, &path)),
            }
        }
        tracing::info!(adapter = %display_name, %model, "LoRA adapter loaded");
        self.route(model, display_name);
        Ok(VllmServer::loaded(display_name, model))
    }

    /// Only a model `<base>+<adapter dir>` has an adapter to load.
    fn needs_start(&self, model: &str) -> bool {
        split_adapter_model(model).is_some()
    }

    /// The adapters the server lists (`GET /v1/models`, the cards with a `parent`), each as
    /// the model `<parent>+<root>` (the root mapped back to this machine's path).
    async fn list_running(&self) -> Result<Vec<Served>, ProviderError> {
        Ok(self
            .models()
            .await?
            .into_iter()
            .filter_map(|c| {
                let parent = c.parent?;
                let root = self.local_path(c.root.as_deref().unwrap_or_default());
                let model = format!("{parent}{ADAPTER_SEPARATOR}{root}");
                Some(VllmServer::loaded(&c.id, &model))
            })
            .collect())
    }

    /// The adapter loaded for `model` on its base from its path, whatever its name: what
    /// a lost answer to a load left.
    async fn find_started(&self, model: &str) -> Result<Option<Served>, ProviderError> {
        let Some((base, dir)) = split_adapter_model(model) else {
            return Ok(None);
        };
        let path = self.server_path(dir);
        Ok(self
            .models()
            .await?
            .into_iter()
            .find(|c| c.parent.as_deref() == Some(base) && c.root.as_deref() == Some(path.as_str()))
            .map(|c| VllmServer::loaded(&c.id, model)))
    }

    /// Ready while the server lists the adapter; stopped once it does not.
    async fn status(&self, served: &Served) -> Result<Served, ProviderError> {
        if served.provider_state == SERVED_AS_IS {
            return Ok(served.clone());
        }
        let listed = self.models().await?.iter().any(|c| c.id == served.id);
        if listed {
            self.route(&served.model, &served.id);
            Ok(VllmServer::loaded(&served.id, &served.model))
        } else {
            Ok(Served {
                state: ServeState::Stopped,
                provider_state: "not loaded".to_owned(),
                ..served.clone()
            })
        }
    }

    /// Unloads the adapter; an adapter the server does not know is fine.
    async fn stop(&self, served: &Served) -> Result<(), ProviderError> {
        self.routes.clear(&served.model);
        if served.provider_state == SERVED_AS_IS || served.id.is_empty() {
            return Ok(());
        }
        self.unload(&served.id).await?;
        tracing::info!(adapter = %served.id, "LoRA adapter unloaded");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(map: Option<(&str, &str)>) -> VllmServer {
        let http = OpenAiClient::new(crate::OpenAiConfig::new("", "http://localhost:1/v1"))
            .expect("client");
        VllmServer::new(
            http,
            VllmConfig {
                path_map: map.map(|(l, s)| PathMap {
                    local: l.into(),
                    server: s.into(),
                }),
            },
        )
    }

    #[test]
    fn model_ids_split_at_the_first_plus() {
        for (id, expected) in [
            ("org/base+/a/b", Some(("org/base", "/a/b"))),
            ("org/base+/a+b/c", Some(("org/base", "/a+b/c"))),
            ("org/base+rel/dir", Some(("org/base", "rel/dir"))),
            ("org/base", None),
            ("+/a", None),
            ("org/base+", None),
        ] {
            let got = split_adapter_model(id).map(|(b, d)| (b, d.to_str().unwrap()));
            assert_eq!(got, expected, "{id}");
        }
    }

    #[test]
    fn paths_map_both_ways() {
        let s = server(Some(("/home/me/exp", "/mnt/exp")));
        assert_eq!(
            s.server_path(Path::new("/home/me/exp/local/a")),
            "/mnt/exp/local/a"
        );
        // Outside the prefix (a path sharing only its first characters): unchanged.
        assert_eq!(
            s.server_path(Path::new("/home/me/exp2/a")),
            "/home/me/exp2/a"
        );
        assert_eq!(s.local_path("/mnt/exp/local/a"), "/home/me/exp/local/a");
        assert_eq!(s.local_path("/elsewhere/a"), "/elsewhere/a");
        let plain = server(None);
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            plain.server_path(Path::new("rel/a")),
            cwd.join("rel/a").to_string_lossy()
        );
    }

    #[test]
    fn path_maps_parse_or_say_why_not() {
        assert_eq!(
            parse_path_map("/a/b=/c").unwrap(),
            PathMap {
                local: "/a/b".into(),
                server: "/c".into()
            }
        );
        for bad in ["/a/b", "a=/c", "/a=", "=/c"] {
            let e = parse_path_map(bad).unwrap_err().to_string();
            assert!(e.contains("XLT_VLLM_PATH_MAP"), "{bad}: {e}");
        }
    }
}
