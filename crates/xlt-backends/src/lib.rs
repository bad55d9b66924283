//! The provider registry: the one place that names the backends. A [`ProviderKind`] is
//! parsed from its name (`embedded`, `openai`, `together`, `local`); [`open`] turns it and
//! some [`OpenOptions`] (the output directory, the device and dtype of a local model) into
//! an `xlt_study::Backend`: trait objects with every call retried and one retry counter,
//! and a profile of what the provider can do (`xlt_study::Capabilities`: default base
//! model and rate limit, learning rate as multiplier or absolute, LoRA, billed serving,
//! free or paid, batch API). Everything else decides by that profile, never by a name.
//!
//! ```
//! use xlt_backends::{OpenOptions, ProviderKind, open};
//!
//! let dir = tempfile::tempdir()?;
//! let kind: ProviderKind = "embedded".parse()?;
//! let backend = open(kind, &OpenOptions::new(dir.path()))?;
//! assert_eq!(backend.name(), "embedded");
//! assert!(backend.profile.free);
//! assert!(backend.batch.is_none());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use xlt_provider::{
    BatchRunner, EMBEDDED_BASE_MODEL, EmbeddedProvider, FineTuneSpec, LearningRate, ModelServer,
    ProviderError, Retry, RetryCounter, RetryPolicy,
};
use xlt_study::{Backend, Capabilities, LoraSupport, Machine, MachineTraining};

/// Errors of opening a provider.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// A provider name that is not one of [`ProviderKind::ALL`].
    #[error("unknown provider `{0}`; known: embedded, openai, together, local")]
    Unknown(String),
    /// An option the provider does not take.
    #[error("{0}")]
    Refused(String),
    /// The provider's configuration (environment, device) is not usable.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The local model's options are not usable.
    #[error(transparent)]
    Local(#[from] xlt_local::LocalError),
    /// A file or environment variable could not be read.
    #[error("{0}")]
    Config(String),
}

/// The providers the study can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// In process, offline, free: a baseline, not a language model.
    Embedded,
    /// OpenAI or an OpenAI-compatible server (`OPENAI_API_KEY`, `OPENAI_BASE_URL`); on a
    /// vLLM server, a local fine-tune's LoRA adapters are loaded for their evaluation.
    Openai,
    /// Together AI, open-weight models (`TOGETHER_API_KEY`, `TOGETHER_BASE_URL`).
    Together,
    /// Open-weights models on this machine, fine-tuned with LoRA here.
    Local,
}

impl ProviderKind {
    /// Every kind, in the order the help lists them.
    pub const ALL: [ProviderKind; 4] = [
        ProviderKind::Embedded,
        ProviderKind::Openai,
        ProviderKind::Together,
        ProviderKind::Local,
    ];

    /// The name (`embedded`, `openai`, `together`, `local`).
    pub fn name(self) -> &'static str {
        self.profile().name
    }

    /// One line on the provider, for a command line's help.
    pub fn help(self) -> &'static str {
        match self {
            ProviderKind::Embedded => "in process, offline, free: a baseline, not a language model",
            ProviderKind::Openai => {
                "OpenAI or an OpenAI-compatible server such as vLLM (OPENAI_API_KEY, OPENAI_BASE_URL)"
            }
            ProviderKind::Together => {
                "Together AI, open-weight models (TOGETHER_API_KEY, TOGETHER_BASE_URL)"
            }
            ProviderKind::Local => {
                "open-weights models on this machine (--base-model DIR|Org/Name|FILE.gguf), LoRA fine-tuning here"
            }
        }
    }

    /// What the provider can do. [`open`] may narrow it (an OpenAI-compatible server that is
    /// not OpenAI's sets no rate limit and evaluates a local fine-tune's adapters).
    pub fn profile(self) -> Capabilities {
        match self {
            ProviderKind::Embedded => Capabilities {
                name: "embedded",
                default_base_model: EMBEDDED_BASE_MODEL,
                default_rpm: None,
                default_learning_rate: LearningRate::Multiplier(0.4),
                lora: LoraSupport::Never,
                billed_serving: false,
                free: true,
                on_device: false,
                instant_jobs: true,
                evaluates_models_of: &[],
                default_scoring: xlt_study::Scoring::Generate,
            },
            ProviderKind::Openai => Capabilities {
                name: "openai",
                default_base_model: xlt_study::STUDY_BASE_MODEL,
                default_rpm: Some(500),
                default_learning_rate: LearningRate::Multiplier(0.4),
                lora: LoraSupport::Never,
                billed_serving: false,
                free: false,
                on_device: false,
                instant_jobs: false,
                evaluates_models_of: &[],
                default_scoring: xlt_study::Scoring::Generate,
            },
            ProviderKind::Together => Capabilities {
                name: "together",
                default_base_model: "Qwen/Qwen2.5-7B-Instruct",
                default_rpm: Some(600),
                // Together's documented default.
                default_learning_rate: LearningRate::Absolute(1e-5),
                lora: LoraSupport::WhenGiven,
                billed_serving: true,
                free: false,
                on_device: false,
                instant_jobs: false,
                evaluates_models_of: &[],
                default_scoring: xlt_study::Scoring::Generate,
            },
            ProviderKind::Local => Capabilities {
                name: xlt_local::PROVIDER,
                default_base_model: "HuggingFaceTB/SmolLM2-135M-Instruct",
                default_rpm: None,
                // What LoRA recipes use.
                default_learning_rate: LearningRate::Absolute(2e-4),
                lora: LoraSupport::Always,
                billed_serving: false,
                free: true,
                on_device: true,
                instant_jobs: false,
                evaluates_models_of: &[],
                default_scoring: xlt_study::Scoring::Letters,
            },
        }
    }
}

impl std::fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ProviderKind {
    type Err = BackendError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProviderKind::ALL
            .into_iter()
            .find(|k| k.name() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| BackendError::Unknown(s.to_owned()))
    }
}

/// Where and how a provider is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenOptions {
    /// The experiment directory: the embedded provider keeps its state under
    /// `<out>/embedded`, the local one its fine-tuning jobs under `<out>/local`.
    pub out: PathBuf,
    /// The local model's device (`cpu`, `cuda`, `cuda:N`); `None`: `XLT_DEVICE`, else the
    /// CPU. Refused by a provider that runs no model here.
    pub device: Option<String>,
    /// The local model's weights (`f32`, `bf16`); `None`: `XLT_DTYPE`, else f32. Refused by
    /// a provider that runs no model here.
    pub dtype: Option<String>,
    /// Prompts a local model answers in one batch at most (`None`: its default, 8).
    pub max_batch: Option<usize>,
}

impl OpenOptions {
    /// Options for the experiment directory `out`, the device and dtype from the
    /// environment.
    pub fn new(out: impl Into<PathBuf>) -> OpenOptions {
        OpenOptions {
            out: out.into(),
            device: None,
            dtype: None,
            max_batch: None,
        }
    }
}

/// Opens the provider `kind`: its trait objects, every call of the tuner, batch runner and
/// server retried through one [`RetryPolicy`] with one [`RetryCounter`] (the study's chat
/// stack shares it), and its capabilities.
///
/// # Errors
/// [`BackendError::Refused`] for `--device`/`--dtype` given to a provider that runs no
/// model here; a missing key or bad base URL ([`BackendError::Provider`]); a device or
/// dtype that does not parse ([`BackendError::Local`]); a bad `XLT_CHECKPOINT_STEPS`.
pub fn open(kind: ProviderKind, options: &OpenOptions) -> Result<Backend, BackendError> {
    let mut profile = kind.profile();
    if !profile.on_device {
        for (flag, given) in [("--device", &options.device), ("--dtype", &options.dtype)] {
            if let Some(v) = given {
                return Err(BackendError::Refused(format!(
                    "{flag} {v}: the {kind} provider runs no model on this machine; {flag} applies to --provider local"
                )));
            }
        }
    }
    let out = &options.out;
    let retries = RetryCounter::new();
    let policy = RetryPolicy::default();
    let backend = match kind {
        ProviderKind::Embedded => {
            let p = Arc::new(EmbeddedProvider::open(out.join("embedded")));
            Backend {
                profile,
                retries: retries.clone(),
                chat: p.clone(),
                tuner: Arc::new(Retry::with_counter(p, policy, retries.clone())),
                batch: None,
                server: None,
                machine: None,
            }
        }
        ProviderKind::Openai => {
            let c = Arc::new(xlt_openai::OpenAiClient::from_env()?);
            // Another server than OpenAI's (vLLM): a local fine-tune's LoRA adapter
            // (`<base>+<adapter dir>`) is loaded on it for its evaluation and unloaded after;
            // other models go to it as they are. Its own server sets no rate limit.
            let vllm = if c.config().is_openai() {
                None
            } else {
                Some(Arc::new(xlt_openai::VllmServer::new(
                    (*c).clone(),
                    xlt_openai::VllmConfig::from_env()?,
                )))
            };
            if vllm.is_some() {
                profile.default_rpm = None;
                profile.evaluates_models_of = &[xlt_local::PROVIDER];
            }
            Backend {
                profile,
                retries: retries.clone(),
                chat: match &vllm {
                    Some(v) => v.clone(),
                    None => c.clone(),
                },
                tuner: Arc::new(Retry::with_counter(c.clone(), policy, retries.clone())),
                batch: Some(Arc::new(Retry::with_counter(c, policy, retries.clone()))
                    as Arc<dyn BatchRunner>),
                server: vllm.map(|v| {
                    Arc::new(Retry::with_counter(v, policy, retries.clone()))
                        as Arc<dyn ModelServer>
                }),
                machine: None,
            }
        }
        ProviderKind::Together => {
            let c = Arc::new(xlt_together::TogetherClient::from_env()?);
            Backend {
                profile,
                retries: retries.clone(),
                chat: c.clone(),
                tuner: Arc::new(Retry::with_counter(c.clone(), policy, retries.clone())),
                batch: None,
                server: Some(Arc::new(Retry::with_counter(c, policy, retries.clone()))
                    as Arc<dyn ModelServer>),
                machine: None,
            }
        }
        ProviderKind::Local => {
            // Absolute, so that the model ids `<base>+<adapter dir>` it returns hold from any
            // working directory.
            let root = std::path::absolute(out.join("local"))
                .map_err(|e| BackendError::Config(format!("{}: {e}", out.display())))?;
            let p = Arc::new(local_provider(options)?.with_fine_tuning(root, checkpoint_steps()?));
            Backend {
                profile,
                retries: retries.clone(),
                chat: p.clone(),
                tuner: Arc::new(Retry::with_counter(p.clone(), policy, retries.clone())),
                batch: None,
                server: None,
                machine: Some(Arc::new(LocalMachine(p))),
            }
        }
    };
    Ok(backend)
}

/// The local provider of `options` (device, dtype, batch), models by id through
/// [`hub_fetcher`], without a fine-tuning directory.
///
/// # Errors
/// A device or dtype that does not parse.
fn local_provider(options: &OpenOptions) -> Result<xlt_local::LocalProvider, BackendError> {
    let load =
        xlt_local::LoadOptions::from_env_or(options.device.as_deref(), options.dtype.as_deref())?;
    let mut serve = xlt_local::ServeOptions::default();
    if let Some(n) = options.max_batch {
        serve.max_batch = n.max(1);
    }
    Ok(xlt_local::LocalProvider::new(load, serve).with_fetcher(hub_fetcher()))
}

/// Model ids (`Org/Name`) for the local provider come from the Hugging Face cache through
/// `xlt-hub`: downloaded when missing, offline from the cache (`HF_HUB_OFFLINE=1`). The
/// generation config is optional (not every repository has one).
pub fn hub_fetcher() -> xlt_local::Fetcher {
    Arc::new(|id: &str| {
        let config = xlt_hub::HubConfig::from_env();
        let dir = xlt_hub::resolve_model_blocking(&config, id, None, &xlt_hub::MODEL_FILES)
            .map_err(|e| e.to_string())?;
        if !dir.join("generation_config.json").exists() {
            let _ = xlt_hub::resolve_model_blocking(&config, id, None, &["generation_config.json"]);
        }
        Ok(dir)
    })
}

/// How often local fine-tuning checkpoints: every `XLT_CHECKPOINT_STEPS` optimizer steps
/// (default 50). A checkpoint costs a write of the adapter and the optimizer's moments; a
/// killed run loses at most this many steps. It does not change results (a resumed run
/// takes the same steps), so it is not in the fingerprint.
fn checkpoint_steps() -> Result<usize, BackendError> {
    match std::env::var("XLT_CHECKPOINT_STEPS") {
        Ok(v) if !v.is_empty() => v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
            BackendError::Config(format!("XLT_CHECKPOINT_STEPS={v}: not a positive integer"))
        }),
        _ => Ok(50),
    }
}

/// Optimizer steps timed to estimate local training time.
const CALIBRATION_STEPS: usize = 2;

/// The local provider as a [`Machine`]: loading before anything is written, and the
/// calibration of the plan.
struct LocalMachine(Arc<xlt_local::LocalProvider>);

#[async_trait::async_trait]
impl Machine for LocalMachine {
    fn device(&self) -> String {
        match &self.0.load_options().device {
            xlt_local::Device::Cpu => "cpu".to_owned(),
            d => format!("{d:?}").to_lowercase(),
        }
    }

    /// The dtype and the device: `f32 on cpu`, `bf16 on cpu`, `f32 on cuda(0)`.
    fn numerics(&self) -> Option<String> {
        let dtype = format!("{:?}", self.0.load_options().dtype).to_lowercase();
        Some(format!("{dtype} on {}", self.device()))
    }

    async fn load(&self, model: &str) -> Result<(), ProviderError> {
        // Checked and freed: calibration and training load their own copy for training, and
        // evaluation loads it again (issue #26: memory per phase).
        self.0.check_model(model).await
    }

    async fn calibrate(
        &self,
        spec: FineTuneSpec,
        files: Vec<PathBuf>,
    ) -> Result<MachineTraining, ProviderError> {
        let device = self.device();
        let batch = spec.hyperparameters.batch_size;
        let local = self.0.clone();
        let e = tokio::task::spawn_blocking(move || {
            let tuner = local.fine_tuner().ok_or_else(|| {
                ProviderError::InvalidRequest(
                    "the local provider has no fine-tuning directory".to_owned(),
                )
            })?;
            tuner.estimate_training(&spec, &files, CALIBRATION_STEPS)
        })
        .await
        .map_err(|e| ProviderError::InvalidRequest(format!("training speed: {e}")))??;
        let batch = match batch {
            xlt_provider::Param::Value(b) => b.to_string(),
            xlt_provider::Param::Auto => "auto".to_owned(),
        };
        Ok(MachineTraining {
            device,
            tokens_per_epoch: e.tokens_per_epoch,
            optimizer_steps: e.optimizer_steps,
            tokens_per_second: e.tokens_per_second,
            measured_by: format!(
                "{CALIBRATION_STEPS} optimizer steps of batch {batch}: {} tokens in {:.1} s",
                e.calibration_tokens, e.calibration_seconds
            ),
            estimated_seconds: e.estimated_seconds,
            adapter_bytes: e.adapter_bytes,
        })
    }

    fn interrupt(&self) -> Vec<String> {
        self.0
            .fine_tuner()
            .map(xlt_local::LocalFineTuner::interrupt)
            .unwrap_or_default()
    }
}

/// A chat model alone, for a program that only asks questions (the `chat` example): the
/// provider's chat retried, and the model to ask (`model`, else the provider's default).
/// A local model is loaded before this returns, so that a bad model fails before any
/// request.
///
/// # Errors
/// As [`open`]; a local model that cannot be loaded.
pub async fn open_chat(
    kind: ProviderKind,
    options: &OpenOptions,
    model: Option<&str>,
) -> Result<(Arc<dyn xlt_provider::ChatModel>, String), BackendError> {
    let model = match (kind, model) {
        (ProviderKind::Local, None) => {
            return Err(BackendError::Refused(
                "--base-model is required with --provider local".to_owned(),
            ));
        }
        (_, Some(m)) => m.to_owned(),
        (_, None) => kind.profile().default_base_model.to_owned(),
    };
    if kind == ProviderKind::Local {
        // No fine-tuning directory: chat writes nothing.
        let provider = local_provider(options)?;
        provider.model(&model).await?;
        return Ok((Arc::new(provider), model));
    }
    let backend = open(kind, options)?;
    let chat = Arc::new(Retry::with_counter(
        backend.chat.clone(),
        RetryPolicy::default(),
        backend.retries.clone(),
    ));
    Ok((chat, model))
}

/// The cache directory of `kind`'s responses in `out` (`<out>/cache/<name>`), at the
/// provider's default numerics; `xlt_study::cache_dir` gives an opened backend's, which
/// names other numerics (`cache/local-bf16-on-cpu`).
pub fn cache_dir(kind: ProviderKind, out: &Path) -> PathBuf {
    out.join("cache").join(kind.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name parses back to its kind; an unknown one lists the known.
    #[test]
    fn names_round_trip() {
        for k in ProviderKind::ALL {
            assert_eq!(k.name().parse::<ProviderKind>().unwrap(), k, "{k}");
        }
        let e = "vertex".parse::<ProviderKind>().unwrap_err().to_string();
        assert!(
            e.contains("known: embedded, openai, together, local"),
            "{e}"
        );
    }

    /// A device or dtype given to a provider that runs no model here is refused.
    #[test]
    fn device_is_refused_where_no_model_runs_here() {
        let dir = tempfile::tempdir().unwrap();
        for (device, dtype, flag) in [
            (Some("cuda:0"), None, "--device cuda:0"),
            (None, Some("bf16"), "--dtype bf16"),
        ] {
            let o = OpenOptions {
                device: device.map(str::to_owned),
                dtype: dtype.map(str::to_owned),
                ..OpenOptions::new(dir.path())
            };
            let e = open(ProviderKind::Embedded, &o).unwrap_err().to_string();
            assert!(e.contains(flag) && e.contains("--provider local"), "{e}");
        }
    }

    /// The local machine records its dtype and device, and bf16 answers go to a cache of
    /// their own (f32 on the CPU keeps `cache/local`).
    #[test]
    fn local_numerics_name_the_dtype_and_device_and_bf16_its_own_cache() {
        let dir = tempfile::tempdir().unwrap();
        for (dtype, numerics, cache) in [
            ("f32", "f32 on cpu", "local"),
            ("bf16", "bf16 on cpu", "local-bf16-on-cpu"),
        ] {
            let o = OpenOptions {
                device: Some("cpu".to_owned()),
                dtype: Some(dtype.to_owned()),
                ..OpenOptions::new(dir.path())
            };
            let b = open(ProviderKind::Local, &o).unwrap();
            let machine = b.machine.as_ref().expect("the local provider trains here");
            assert_eq!(machine.numerics().as_deref(), Some(numerics));
            assert_eq!(
                xlt_study::cache_dir(&b, dir.path()),
                dir.path().join("cache").join(cache)
            );
        }
    }
}
