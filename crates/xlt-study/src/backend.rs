//! A provider as the study sees it: trait objects, one retry counter, and a profile of what
//! the provider can do. Built by a registry (the `xlt-backends` crate), never here: this
//! crate names no provider.

use std::path::PathBuf;
use std::sync::Arc;

use xlt_provider::{
    BatchRunner, ChatModel, FineTuneSpec, FineTuner, LearningRate, ModelServer, ProviderError,
    Retry, RetryCounter, RetryPolicy,
};

use crate::MachineTraining;

/// How a provider takes LoRA settings (`FineTuneSpec::lora`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoraSupport {
    /// It always trains adapters: the recipe defaults apply when nothing is given.
    Always,
    /// It trains adapters, with its own default adapter unless a setting is given.
    WhenGiven,
    /// It trains no adapters: a LoRA setting is refused.
    Never,
}

/// What a provider can do, as data: every decision the study makes about a provider reads
/// this instead of comparing its name.
#[derive(Debug, Clone, PartialEq)]
pub struct Capabilities {
    /// The provider's name as recorded in `fingerprint.json`, `ledger.json`, `run.json` and
    /// the cache directory `cache/<name>`.
    pub name: &'static str,
    /// The base model when none is given.
    pub default_base_model: &'static str,
    /// Client-side requests per minute when none is given (`None`: no limit).
    pub default_rpm: Option<u32>,
    /// The learning rate when none is given: a multiplier where the provider takes one, its
    /// default absolute rate where it takes an absolute one. The two never convert.
    pub default_learning_rate: LearningRate,
    /// Whether LoRA settings are taken.
    pub lora: LoraSupport,
    /// Whether serving a tuned model is billed while it runs (Together's dedicated
    /// endpoints); a server of one's own (vLLM) is not.
    pub billed_serving: bool,
    /// Whether the provider costs nothing (offline, or on this machine): its plan is priced
    /// at zero.
    pub free: bool,
    /// Whether it runs a model on a device of this machine (`--device`, `--dtype`).
    pub on_device: bool,
    /// Whether its fine-tuning jobs finish at once, so polling needs no pause.
    pub instant_jobs: bool,
    /// Providers whose fine-tuned models this one evaluates as they are (a vLLM server loads
    /// a local fine-tune's adapters): an evaluation here keeps the recorded provider.
    pub evaluates_models_of: &'static [&'static str],
    /// How answers are read when `--scoring` is not given: the local provider scores
    /// letters (issue #22), the study's providers generate (its protocol).
    pub default_scoring: crate::Scoring,
}

impl Capabilities {
    /// A provider called `name` whose default base model is `default_base_model`, with the
    /// most cautious profile: paid, no rate limit, the provider's own learning rate, no
    /// LoRA, no billed serving, nothing on this machine, jobs polled at the usual pace.
    /// Set the fields that differ.
    pub fn new(name: &'static str, default_base_model: &'static str) -> Capabilities {
        Capabilities {
            name,
            default_base_model,
            default_rpm: None,
            default_learning_rate: LearningRate::default(),
            lora: LoraSupport::Never,
            billed_serving: false,
            free: false,
            on_device: false,
            instant_jobs: false,
            evaluates_models_of: &[],
            default_scoring: crate::Scoring::Generate,
        }
    }
}

/// Training on this machine: what only a provider that trains here does, behind a trait so
/// that the study does not know which one it is.
#[async_trait::async_trait]
pub trait Machine: Send + Sync {
    /// The device as the plan names it (`cpu`, `cuda(0)`).
    fn device(&self) -> String;

    /// The numbers this machine computes in: its dtype and device, `f32 on cpu` (the
    /// default, [`DEFAULT_NUMERICS`]), `bf16 on cpu`, `f32 on cuda(0)`. They change results
    /// (bf16 scores differ from f32 ones by up to tenths of a nat, and training takes other
    /// steps), so they go into the fingerprint (`numerics`), and other numerics than the
    /// default name the response cache's directory ([`crate::cache_dir`]). `None` (the
    /// trait's default): not recorded.
    fn numerics(&self) -> Option<String> {
        None
    }

    /// Loads `model` now (resolving an id, fetching what a cache lacks), so that a model that
    /// cannot be loaded stops a run before anything is written. It need not stay loaded:
    /// the local provider frees it, so that calibration and training (which load their own
    /// copy) do not hold a second one.
    ///
    /// # Errors
    /// The model cannot be found or loaded.
    async fn load(&self, model: &str) -> Result<(), ProviderError>;

    /// Times a few optimizer steps of `spec` on this machine and counts the tokens of
    /// `files` (the training files of every job): the plan's training time and disk.
    ///
    /// # Errors
    /// The model cannot be loaded, a file cannot be read, training fails.
    async fn calibrate(
        &self,
        spec: FineTuneSpec,
        files: Vec<PathBuf>,
    ) -> Result<MachineTraining, ProviderError>;

    /// The run is being interrupted (Ctrl-C, SIGTERM): stop every job this process trains
    /// and mark it interrupted on disk (not running, not finished), so that a rerun resumes
    /// it from its last checkpoint. Returns one line per job saying where it stopped. The
    /// default trains nothing here and says nothing.
    fn interrupt(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The numerics of a machine that computes in f32 on the CPU ([`Machine::numerics`]): its
/// response cache keeps the provider's name alone, as before numerics were recorded.
pub const DEFAULT_NUMERICS: &str = "f32 on cpu";

/// A provider opened for a run: every call of `tuner`, `batch` and `server` retried, each
/// retry counted in `retries` (the chat stack built by the study shares it).
#[derive(Clone)]
pub struct Backend {
    /// What the provider can do.
    pub profile: Capabilities,
    /// Every retry of this run, by operation (progress, `run.json`).
    pub retries: RetryCounter,
    /// Chat, not yet wrapped: the study adds cache, retry and limiter.
    pub chat: Arc<dyn ChatModel>,
    /// Fine-tuning, retried.
    pub tuner: Arc<dyn FineTuner>,
    /// The batch API, retried, where the provider has one.
    pub batch: Option<Arc<dyn BatchRunner>>,
    /// Serves tuned models on demand (Together's endpoints, vLLM adapters), retried.
    pub server: Option<Arc<dyn ModelServer>>,
    /// Training on this machine, where the provider does that.
    pub machine: Option<Arc<dyn Machine>>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("profile", &self.profile)
            .field("retries", &self.retries.total())
            .field("batch", &self.batch.is_some())
            .field("server", &self.server.is_some())
            .field("machine", &self.machine.is_some())
            .finish()
    }
}

impl Backend {
    /// A backend of a provider that only chats and fine-tunes (no batch API, no server,
    /// nothing on this machine), its tuner retried with a fresh counter.
    pub fn new<P>(profile: Capabilities, provider: Arc<P>) -> Backend
    where
        P: ChatModel + FineTuner + 'static,
    {
        let retries = RetryCounter::new();
        let tuner = Retry::with_counter(provider.clone(), RetryPolicy::default(), retries.clone());
        Backend {
            profile,
            retries,
            chat: provider,
            tuner: Arc::new(tuner),
            batch: None,
            server: None,
            machine: None,
        }
    }

    /// The provider's name (`profile.name`).
    pub fn name(&self) -> &'static str {
        self.profile.name
    }
}
