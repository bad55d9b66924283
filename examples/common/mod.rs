//! What the study examples share: the provider choice (the one place that names providers),
//! the wrapper stack, progress bars and logging.
#![allow(dead_code)] // each example uses a different part

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use xlt::provider::{
    BatchRunner, Cached, ChatModel, EMBEDDED_BASE_MODEL, EmbeddedProvider, FineTuneJob, FineTuner,
    Limited, Progress, RateLimits, Retry, RetryCounter, RetryPolicy,
};
use xlt::provider::{LearningRate, ModelServer};
use xlt::study::{PriceTable, STUDY_BASE_MODEL};

/// The providers the examples can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProviderKind {
    /// In process, offline, free: a baseline, not a language model.
    Embedded,
    /// OpenAI or an OpenAI-compatible server (`OPENAI_API_KEY`, `OPENAI_BASE_URL`).
    Openai,
    /// Together AI, open-weight models (`TOGETHER_API_KEY`, `TOGETHER_BASE_URL`).
    Together,
    /// Open-weights models on this machine (`--base-model DIR|ID|FILE.gguf`, `--device`,
    /// `--dtype`). Evaluation only until local fine-tuning lands.
    Local,
}

/// A provider, as trait objects, every call of `tuner`, `batch` and `server` retried (and
/// `chat` once [`chat_stack`] wraps it), each retry counted in `retries`.
pub struct Backend {
    pub name: String,
    /// Every retry of this run, by operation (progress, `run.json`).
    pub retries: RetryCounter,
    pub chat: Arc<dyn ChatModel>,
    pub tuner: Arc<dyn FineTuner>,
    pub batch: Option<Arc<dyn BatchRunner>>,
    /// Serves tuned models on demand (Together's dedicated endpoints).
    pub server: Option<Arc<dyn ModelServer>>,
    pub default_base_model: &'static str,
    pub default_rpm: Option<u32>,
    /// The learning rate when none is given: the study's multiplier where the provider takes
    /// one, the provider's default absolute rate where it does not.
    pub default_learning_rate: LearningRate,
    /// The local provider itself, so that its model can be loaded before anything is
    /// written ([`load_local_model`]).
    pub local: Option<Arc<xlt::local::LocalProvider>>,
}

/// Where the local provider runs its model: flags first, then `XLT_DEVICE` / `XLT_DTYPE`,
/// then the CPU in f32.
#[derive(Debug, Default, clap::Args)]
pub struct DeviceArgs {
    /// Local provider: cpu, cuda or cuda:N (a build with `--features cuda`) [default:
    /// $XLT_DEVICE, else cpu]
    #[arg(long)]
    pub device: Option<String>,
    /// Local provider: weights in f32 or bf16 [default: $XLT_DTYPE, else f32]
    #[arg(long)]
    pub dtype: Option<String>,
}

impl DeviceArgs {
    pub fn load_options(&self) -> anyhow::Result<xlt::local::LoadOptions> {
        Ok(xlt::local::LoadOptions::from_env_or(
            self.device.as_deref(),
            self.dtype.as_deref(),
        )?)
    }
}

/// With the local provider, loads `model` now (resolving a model id, fetching what the
/// cache lacks), so that a model that cannot be loaded stops the run with one error naming
/// it, before anything is written; other providers: nothing to do.
pub async fn load_local_model(backend: &Backend, model: &str) -> anyhow::Result<()> {
    if let Some(local) = &backend.local {
        local.model(model).await?;
    }
    Ok(())
}

/// Opens the chosen provider on the default device (`XLT_DEVICE`, `XLT_DTYPE`, else the
/// CPU in f32); the embedded one keeps its state under `out/embedded`.
pub fn backend(kind: ProviderKind, out: &Path) -> anyhow::Result<Backend> {
    backend_on(kind, out, &DeviceArgs::default())
}

/// [`backend`], the local provider on `device`.
pub fn backend_on(kind: ProviderKind, out: &Path, device: &DeviceArgs) -> anyhow::Result<Backend> {
    let raw = raw_backend(kind, out, device)?;
    // One retry mechanism around every provider call, one counter for the whole run.
    let retries = RetryCounter::new();
    let policy = RetryPolicy::default();
    Ok(Backend {
        tuner: Arc::new(Retry::with_counter(raw.tuner, policy, retries.clone())),
        batch: raw.batch.map(|b| {
            Arc::new(Retry::with_counter(b, policy, retries.clone())) as Arc<dyn BatchRunner>
        }),
        server: raw.server.map(|s| {
            Arc::new(Retry::with_counter(s, policy, retries.clone())) as Arc<dyn ModelServer>
        }),
        retries,
        ..raw
    })
}

fn raw_backend(kind: ProviderKind, out: &Path, device: &DeviceArgs) -> anyhow::Result<Backend> {
    let retries = RetryCounter::new();
    Ok(match kind {
        ProviderKind::Embedded => {
            let p = Arc::new(EmbeddedProvider::open(out.join("embedded")));
            Backend {
                retries,
                name: "embedded".into(),
                local: None,
                chat: p.clone(),
                tuner: p,
                batch: None,
                server: None,
                default_base_model: EMBEDDED_BASE_MODEL,
                default_rpm: None,
                default_learning_rate: LearningRate::Multiplier(0.4),
            }
        }
        ProviderKind::Openai => {
            let c = Arc::new(xlt::openai::OpenAiClient::from_env()?);
            Backend {
                retries,
                name: "openai".into(),
                local: None,
                chat: c.clone(),
                tuner: c.clone(),
                batch: Some(c),
                server: None,
                default_base_model: STUDY_BASE_MODEL,
                default_rpm: Some(500),
                default_learning_rate: LearningRate::Multiplier(0.4),
            }
        }
        ProviderKind::Together => {
            let c = Arc::new(xlt::together::TogetherClient::from_env()?);
            Backend {
                retries,
                name: "together".into(),
                local: None,
                chat: c.clone(),
                tuner: c.clone(),
                batch: None,
                server: Some(c),
                default_base_model: "Qwen/Qwen2.5-7B-Instruct",
                default_rpm: Some(600),
                // Together's documented default.
                default_learning_rate: LearningRate::Absolute(1e-5),
            }
        }
        ProviderKind::Local => {
            let p = Arc::new(
                xlt::local::LocalProvider::new(device.load_options()?, Default::default())
                    .with_fetcher(hub_fetcher()),
            );
            Backend {
                retries,
                name: "local".into(),
                local: Some(p.clone()),
                chat: p.clone(),
                tuner: p,
                batch: None,
                server: None,
                default_base_model: "HuggingFaceTB/SmolLM2-135M-Instruct",
                default_rpm: None,
                // What LoRA recipes use, for when local fine-tuning lands.
                default_learning_rate: LearningRate::Absolute(2e-4),
            }
        }
    })
}

/// Model ids (`Org/Name`) for the local provider come from the Hugging Face cache through
/// `xlt-hub`: downloaded when missing, offline from the cache (`HF_HUB_OFFLINE=1`). The
/// generation config is optional (not every repository has one).
pub fn hub_fetcher() -> xlt::local::Fetcher {
    Arc::new(|id: &str| {
        let config = xlt::hub::HubConfig::from_env();
        let dir = xlt::hub::resolve_model_blocking(&config, id, None, &xlt::hub::MODEL_FILES)
            .map_err(|e| e.to_string())?;
        if !dir.join("generation_config.json").exists() {
            let _ =
                xlt::hub::resolve_model_blocking(&config, id, None, &["generation_config.json"]);
        }
        Ok(dir)
    })
}

/// Local fine-tuning is not there yet: a local study evaluates the base model only.
const LOCAL_BASE_ONLY: &str = "no fine-tuning: the local provider evaluates the base model only (local LoRA fine-tuning is not implemented yet)";

/// Prices: from `--prices <json>`, else the known table for the model, else zero for the
/// embedded provider, else unknown.
pub fn prices(
    backend: &Backend,
    model: &str,
    file: Option<&Path>,
) -> anyhow::Result<Option<PriceTable>> {
    if let Some(f) = file {
        let text = std::fs::read_to_string(f).with_context(|| format!("{}", f.display()))?;
        return Ok(Some(
            serde_json::from_str(&text).with_context(|| format!("{}", f.display()))?,
        ));
    }
    if backend.name == "embedded" || backend.name == "local" {
        return Ok(Some(PriceTable::zero()));
    }
    Ok(PriceTable::known(model))
}

/// The response cache of a provider, `out/cache/<provider>`: chat and batch modes share it.
pub fn cache_dir(backend: &Backend, out: &Path) -> std::path::PathBuf {
    out.join("cache").join(&backend.name)
}

/// The chat stack, outermost first: cache (under `out/cache/<provider>`), retry, limiter.
pub fn chat_stack(
    backend: &Backend,
    out: &Path,
    rpm: Option<u32>,
    tpm: Option<u32>,
) -> (Arc<dyn ChatModel>, Arc<AtomicU64>) {
    let limited = Limited::new(
        backend.chat.clone(),
        RateLimits {
            requests_per_minute: rpm.or(backend.default_rpm),
            tokens_per_minute: tpm,
        },
    );
    let retry = Retry::with_counter(limited, RetryPolicy::default(), backend.retries.clone());
    let retries = retry.retries();
    let cached = Cached::new(retry, cache_dir(backend, out));
    (Arc::new(cached), retries)
}

/// What `run.json` says of the run's retries: the total and the count by operation.
pub fn retries_record(backend: &Backend) -> serde_json::Value {
    serde_json::json!({
        "total": backend.retries.total(),
        "by_operation": backend.retries.by_operation(),
    })
}

/// The exit of a study example: the error on stderr and a failure code, or success.
pub fn exit_code(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM (`timeout`, `docker stop`, a cancelled
/// CI job); says which.
pub async fn interrupted() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "interrupted (Ctrl-C)",
                _ = term.recv() => "terminated (SIGTERM)",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "interrupted (Ctrl-C)"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "interrupted (Ctrl-C)"
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default: warnings).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Asks before paid work, unless `yes`. Refuses when nobody can answer.
pub fn confirm(yes: bool, paid: bool) -> anyhow::Result<()> {
    use std::io::{IsTerminal, Write};
    if yes || !paid {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!("this run costs money; pass --yes to proceed without a prompt");
    }
    eprint!("Proceed? [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        bail!("not confirmed; nothing was spent")
    }
}

/// Progress bars: one for fine-tuning jobs, one per evaluated model. Hidden when stderr is
/// not a terminal.
pub struct Bars {
    multi: MultiProgress,
    jobs: Mutex<HashMap<String, ProgressBar>>,
    evals: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    pub fn new() -> Bars {
        Bars {
            multi: MultiProgress::new(),
            jobs: Mutex::new(HashMap::new()),
            evals: Mutex::new(HashMap::new()),
        }
    }

    /// Shows a job's state; `retried` is the run's retries so far.
    pub fn job(&self, slice: &str, job: &FineTuneJob, retried: u64) {
        let mut jobs = self.jobs.lock().unwrap();
        let bar = jobs.entry(slice.to_owned()).or_insert_with(|| {
            let b = self.multi.add(ProgressBar::new_spinner());
            b.set_style(
                ProgressStyle::with_template("{spinner} fine-tune {prefix}: {msg} ({elapsed})")
                    .unwrap(),
            );
            b.set_prefix(slice.to_owned());
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        bar.set_message(format!(
            "{} [{}] retried {retried}",
            job.provider_status, job.id
        ));
        if job.status.is_terminal() {
            bar.finish();
        }
    }

    pub fn eval(&self, label: &str, p: &Progress) {
        let mut evals = self.evals.lock().unwrap();
        let bar = evals.entry(label.to_owned()).or_insert_with(|| {
            let b = self.multi.add(ProgressBar::new(p.total));
            b.set_style(
                ProgressStyle::with_template(
                    "evaluate {prefix:>14} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}",
                )
                .unwrap()
                .progress_chars("=> "),
            );
            b.set_prefix(label.to_owned());
            b
        });
        bar.set_length(p.total);
        bar.set_position(p.done);
        bar.set_message(format!("failed {} retried {}", p.failed, p.retried));
        if p.done == p.total {
            bar.finish();
        }
    }
}

/// Which Global-MMLU rows an experiment uses and how they are split: the arguments `prepare`
/// and `reproduce` share.
#[derive(Debug, clap::Args)]
pub struct DataArgs {
    /// Data files or directories (CSV, parquet, JSON Lines), or Hub datasets
    /// (`hf:CohereLabs/Global-MMLU[@revision]`, fetched into the Hugging Face cache);
    /// default: the shipped fixtures.
    #[arg(long, num_args = 1..)]
    pub data: Vec<xlt::data::DataSource>,
    /// Comma-separated language codes; default: every language found.
    #[arg(long)]
    pub languages: Option<String>,
    /// Comma-separated domains.
    #[arg(long, default_value = "stem,humanities,medical")]
    pub domains: String,
    /// Fraction of each subject on the training side.
    #[arg(long, default_value_t = 0.7)]
    pub train_fraction: f64,
}

impl DataArgs {
    /// Loads the data and prepares the experiment with split seed `seed`. The lists are
    /// parsed first, so that a typo fails before any file is read.
    pub fn prepare(&self, seed: u64) -> Result<xlt::data::Prepared, xlt::data::DataError> {
        use xlt::data::{Domain, Language, PrepareConfig, Selection, SplitConfig};
        let languages = match &self.languages {
            Some(list) => Language::parse_list(list)?,
            None => Vec::new(),
        };
        let domains = Domain::parse_list(&self.domains)?;
        let sources = if self.data.is_empty() {
            vec![xlt::data::DataSource::Path(
                xlt::fixtures_dir().join("global-mmlu/lite"),
            )]
        } else {
            self.data.clone()
        };
        let options = xlt::data::LoadOptions::from_env(languages.clone());
        let (dataset, sources) = xlt::data::load_sources(&sources, &options)?;
        let config = PrepareConfig {
            selection: Selection {
                languages,
                domains,
                ..Selection::default()
            },
            split: SplitConfig {
                train_fraction: self.train_fraction,
                seed,
            },
            sources,
            ..PrepareConfig::default()
        };
        xlt::data::prepare(dataset, &config)
    }
}

/// Settings shared by `finetune`, `evaluate` and `reproduce`.
#[derive(Debug, clap::Args)]
pub struct StudyArgs {
    /// The experiment directory (what `prepare` writes; the study writes beside it).
    #[arg(long)]
    pub out: std::path::PathBuf,
    /// Which provider runs the study.
    #[arg(long, value_enum, default_value = "embedded")]
    pub provider: ProviderKind,
    /// The base model (default: the provider's; for OpenAI the study's gpt-4.1-nano-2025-04-14).
    #[arg(long)]
    pub base_model: Option<String>,
    /// Seed of the split, the training runs and sampling.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Discard the results of an earlier run with other settings in `--out` (the response
    /// cache and the job ledger are kept: only what changed is asked and paid for again).
    #[arg(long)]
    pub fresh: bool,
    /// Seconds between polls of a fine-tuning job, batch or endpoint (default: the
    /// provider's pace, 5 s growing to 60 s for jobs).
    #[arg(long)]
    pub poll_interval: Option<f64>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// Fine-tuning settings: `finetune` and `reproduce`.
#[derive(Debug, clap::Args)]
pub struct TuneArgs {
    /// Comma-separated slices to fine-tune (`en-stem,ig-medical`); default: every slice.
    #[arg(long)]
    pub train_slices: Option<String>,
    /// Epochs (study: 1).
    #[arg(long, default_value_t = 1)]
    pub epochs: u32,
    /// Batch size (study: 8).
    #[arg(long, default_value_t = 8)]
    pub batch_size: u32,
    /// Learning-rate multiplier (study: 0.4), for providers that take one (OpenAI, embedded).
    #[arg(long, conflicts_with = "learning_rate")]
    pub learning_rate_multiplier: Option<f64>,
    /// Absolute learning rate, for providers that take one (Together; default 1e-5).
    #[arg(long)]
    pub learning_rate: Option<f64>,
    /// A JSON price table (USD per million tokens: training, base_input, base_output,
    /// tuned_input, tuned_output) overriding the built-in one.
    #[arg(long)]
    pub prices: Option<std::path::PathBuf>,
    /// Proceed with paid work without asking.
    #[arg(long)]
    pub yes: bool,
    /// Submit (and pay for) again a fine-tuning job that was cancelled outside the run.
    #[arg(long)]
    pub resubmit_cancelled: bool,
}

/// Evaluation settings: `evaluate` and `reproduce`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// How answers are graded: regex, llm (the study's protocol) or regex+llm.
    #[arg(long, default_value = "regex+llm")]
    pub grader: xlt::grade::Protocol,
    /// Evaluate through the provider's batch API.
    #[arg(long)]
    pub batch: bool,
    /// Output tokens per answer (and per judge reply); a reasoning model needs hundreds.
    /// Answers cut off by it are counted in the report.
    #[arg(long, default_value_t = xlt::study::DEFAULT_MAX_TOKENS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_tokens: u32,
    /// Client-side requests-per-minute limit (default: 500 for OpenAI, none offline).
    #[arg(long)]
    pub max_requests_per_minute: Option<u32>,
    /// Client-side tokens-per-minute limit.
    #[arg(long)]
    pub max_tokens_per_minute: Option<u32>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
}

impl TuneArgs {
    pub fn hyperparameters(&self, backend: &Backend) -> xlt::provider::Hyperparameters {
        use xlt::provider::{Hyperparameters, Param};
        let learning_rate = match (self.learning_rate, self.learning_rate_multiplier) {
            (Some(lr), _) => LearningRate::Absolute(lr),
            (None, Some(m)) => LearningRate::Multiplier(m),
            (None, None) => backend.default_learning_rate,
        };
        Hyperparameters {
            epochs: Param::Value(self.epochs),
            batch_size: Param::Value(self.batch_size),
            learning_rate,
        }
    }

    pub fn slices(&self) -> Vec<String> {
        self.train_slices
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

impl StudyArgs {
    /// The fingerprint of this run over an experiment prepared as `manifest` with `files`.
    /// A command without fine-tuning (`tune`) or evaluation (`eval`) settings leaves their
    /// keys out; [`StudyArgs::check_fingerprint`] takes them from the recorded fingerprint.
    pub fn fingerprint(
        &self,
        backend: &Backend,
        tune: Option<&TuneArgs>,
        eval: Option<&EvalArgs>,
        manifest: &xlt::data::Manifest,
        files: &[(std::path::PathBuf, String)],
    ) -> xlt::study::Fingerprint {
        let base = self.base_model(backend);
        let slices = tune.map(TuneArgs::slices).unwrap_or_default();
        let grader = eval.map_or(xlt::grade::Protocol::RegexThenLlm, |e| e.grader);
        let grader = serde_json::to_value(grader).expect("serializes");
        let hyperparameters = match tune {
            Some(t) => t.hyperparameters(backend),
            None => xlt::provider::Hyperparameters::default(),
        };
        let settings = xlt::study::RunSettings {
            provider: &backend.name,
            base_model: &base,
            hyperparameters,
            train_slices: &slices,
            grader: grader.as_str().unwrap_or_default(),
            max_tokens: eval.map_or(xlt::study::DEFAULT_MAX_TOKENS, |e| e.max_tokens),
            temperature: xlt::study::EvalOptions::default().temperature,
        };
        let mut fp = xlt::study::Fingerprint::new(manifest, files, &settings);
        // The seed of training and sampling (`--seed` of finetune and evaluate; the split's
        // seed is the manifest's), so that `finetune --seed 9` cannot retrain silently.
        fp.settings
            .insert("run_seed".to_owned(), self.seed.to_string());
        if tune.is_none() {
            for k in ["hyperparameters", "train_slices"] {
                fp.settings.remove(k);
            }
        }
        if eval.is_none() {
            for k in ["grader", "max_tokens", "temperature"] {
                fp.settings.remove(k);
            }
        }
        fp
    }

    /// Stops unless the experiment in `--out` was run with these settings, or is new
    /// (see `xlt::study::check_fingerprint`); for commands that run on a prepared
    /// experiment. Returns the fingerprint.
    pub fn check_fingerprint(
        &self,
        backend: &Backend,
        tune: Option<&TuneArgs>,
        eval: Option<&EvalArgs>,
        exp: &xlt::study::Experiment,
    ) -> anyhow::Result<xlt::study::Fingerprint> {
        let mut files = Vec::new();
        for name in exp.slice_names() {
            for dir in ["finetune", "eval"] {
                let rel = std::path::PathBuf::from(format!("{dir}/{name}.jsonl"));
                let text = std::fs::read_to_string(exp.dir.join(&rel))
                    .with_context(|| exp.dir.join(&rel).display().to_string())?;
                files.push((rel, text));
            }
        }
        let rel = std::path::PathBuf::from("manifest.json");
        files.push((rel.clone(), std::fs::read_to_string(exp.dir.join(&rel))?));
        let mut fp = self.fingerprint(backend, tune, eval, &exp.manifest, &files);
        complete_from_recorded(&exp.dir, &mut fp)?;
        xlt::study::check_fingerprint(&exp.dir, &fp, self.fresh, xlt::study::Discard::Results)?;
        Ok(fp)
    }

    fn poll(&self, default: xlt::provider::WaitOptions) -> xlt::provider::WaitOptions {
        match self.poll_interval {
            Some(s) if s >= 0.0 => xlt::provider::WaitOptions {
                initial: Duration::from_secs_f64(s),
                max: Duration::from_secs_f64(s),
                factor: 1.0,
                ..default
            },
            _ => default,
        }
    }

    /// Opens the chosen provider (the local one on `--device` in `--dtype`).
    pub fn backend(&self) -> anyhow::Result<Backend> {
        backend_on(self.provider, &self.out, &self.device)
    }

    pub fn base_model(&self, backend: &Backend) -> String {
        self.base_model
            .clone()
            .unwrap_or_else(|| backend.default_base_model.to_owned())
    }
}

/// Plans, prints and confirms; returns the plan (also written to `plan.json`). Where the
/// provider prices jobs itself, the training files are uploaded (free) and its estimate
/// replaces the token-based one. Without `eval` (`finetune` alone), the evaluation part of
/// the plan assumes the defaults.
pub async fn plan(
    args: &StudyArgs,
    tune: &TuneArgs,
    eval: Option<&EvalArgs>,
    backend: &Backend,
    exp: &xlt::study::Experiment,
) -> anyhow::Result<xlt::study::Plan> {
    let base = args.base_model(backend);
    let jobs = if backend.name == "local" {
        Vec::new()
    } else {
        exp.training_slices(&tune.slices())?
    };
    let mut plan = xlt::study::Plan::new(
        exp,
        &xlt::study::PlanInput {
            provider: &backend.name,
            base_model: &base,
            jobs: &jobs,
            hyperparameters: tune.hyperparameters(backend),
            max_tokens: eval.map_or(xlt::study::DEFAULT_MAX_TOKENS, |e| e.max_tokens),
            grader: eval.map_or(xlt::grade::Protocol::RegexThenLlm, |e| e.grader),
            prices: prices(backend, &base, tune.prices.as_deref())?,
            // About ten minutes to start an endpoint, then the evaluation at the request rate.
            serving: backend.server.as_ref().map(|_| {
                (
                    10.0,
                    f64::from(
                        eval.and_then(|e| e.max_requests_per_minute)
                            .or(backend.default_rpm)
                            .unwrap_or(600),
                    ),
                )
            }),
        },
    )?;
    // Before anything is paid: the base model must be answerable as the study asks it.
    if let Some(server) = &backend.server
        && server.serves_serverless(&base).await? == Some(false)
    {
        bail!(
            "the base model {base} is not served serverless by {}: evaluating it would need a dedicated endpoint, which this run neither starts nor prices; choose a serverless base model (nothing was spent)",
            backend.name
        );
    }
    if backend.tuner.offers_price_estimate() {
        let ledger = ledger(tune, backend, exp)?;
        let estimate = xlt::study::provider_training_estimate(
            exp,
            &plan.jobs,
            backend.tuner.as_ref(),
            &ledger,
            &finetune_options(args, tune, backend, &plan),
        )
        .await?;
        if let Some(usd) = estimate {
            plan = plan.with_provider_training_estimate(usd);
        }
    }
    if backend.name == "local" {
        plan.departures.push(LOCAL_BASE_ONLY.to_owned());
    }
    eprint!("{}", plan.to_text());
    xlt::data::write_atomic(
        &exp.dir.join("plan.json"),
        (serde_json::to_string_pretty(&plan)? + "\n").as_bytes(),
    )?;
    confirm(tune.yes, plan.is_paid())?;
    Ok(plan)
}

fn ledger(
    tune: &TuneArgs,
    backend: &Backend,
    exp: &xlt::study::Experiment,
) -> anyhow::Result<xlt::provider::JobLedger> {
    Ok(
        xlt::provider::JobLedger::open(exp.dir.join("ledger.json"), &backend.name)?
            .resubmit_cancelled(tune.resubmit_cancelled),
    )
}

fn finetune_options(
    args: &StudyArgs,
    tune: &TuneArgs,
    backend: &Backend,
    plan: &xlt::study::Plan,
) -> xlt::study::FinetuneOptions {
    xlt::study::FinetuneOptions {
        base_model: plan.base_model.clone(),
        hyperparameters: tune.hyperparameters(backend),
        seed: Some(args.seed),
        wait: if backend.name == "embedded" {
            xlt::provider::WaitOptions {
                initial: Duration::ZERO,
                max: Duration::ZERO,
                factor: 1.0,
                timeout: Duration::from_secs(600),
            }
        } else {
            args.poll(xlt::provider::WaitOptions::default())
        },
    }
}

/// Fine-tunes the plan's slices; writes `models.json`.
pub async fn finetune(
    args: &StudyArgs,
    tune: &TuneArgs,
    backend: &Backend,
    exp: &xlt::study::Experiment,
    plan: &xlt::study::Plan,
    bars: &Bars,
) -> anyhow::Result<xlt::study::ModelsFile> {
    let ledger = ledger(tune, backend, exp)?;
    Ok(xlt::study::finetune(
        exp,
        &plan.jobs,
        &backend.name,
        backend.tuner.as_ref(),
        &ledger,
        &finetune_options(args, tune, backend, plan),
        &|slice, job| bars.job(slice, job, backend.retries.total()),
    )
    .await?)
}

/// Evaluates every model in `models.json`; writes `outcomes/`.
pub async fn evaluate(
    args: &StudyArgs,
    eval: &EvalArgs,
    backend: &Backend,
    exp: &xlt::study::Experiment,
    models: &xlt::study::ModelsFile,
    bars: &Bars,
) -> anyhow::Result<()> {
    let (chat, retries) = chat_stack(
        backend,
        &exp.dir,
        eval.max_requests_per_minute,
        eval.max_tokens_per_minute,
    );
    let judge = (eval.grader != xlt::grade::Protocol::Regex).then(|| {
        xlt::grade::LlmJudge::new(chat.clone(), models.base_model.clone())
            .with_max_tokens(eval.max_tokens)
    });
    let grader = xlt::grade::Grader::new(eval.grader, Arc::new(xlt::grade::RuleExtractor), judge)?;
    let opts = xlt::study::EvalOptions {
        concurrency: eval.concurrency,
        seed: Some(args.seed),
        retries: Some(retries),
        max_tokens: eval.max_tokens,
        ..xlt::study::EvalOptions::default()
    };
    if eval.batch {
        let runner = backend.batch.as_ref().ok_or_else(|| {
            anyhow::anyhow!(
                "the {} provider has no batch API; run without --batch",
                backend.name
            )
        })?;
        let cache = xlt::provider::ResponseCache::new(cache_dir(backend, &exp.dir));
        xlt::study::evaluate_batch(
            exp,
            models,
            runner.as_ref(),
            &cache,
            &grader,
            &opts,
            &xlt::study::BatchOptions {
                poll: args.poll(xlt::study::BatchOptions::default().poll),
                ..xlt::study::BatchOptions::default()
            },
            &|label, p| bars.eval(label, p),
        )
        .await?;
    } else {
        let serving = backend.server.as_ref().map(|s| xlt::study::Serving {
            server: s.as_ref(),
            wait: args.poll(xlt::provider::WaitOptions {
                initial: Duration::from_secs(10),
                max: Duration::from_secs(60),
                factor: 1.5,
                timeout: Duration::from_secs(3600),
            }),
        });
        let on_progress = |label: &str, p: &Progress| bars.eval(label, p);
        let run = xlt::study::evaluate(
            exp,
            models,
            chat,
            &grader,
            &opts,
            serving.as_ref(),
            &on_progress,
        );
        tokio::select! {
            r = run => r?,
            signal = interrupted() => {
                // The evaluation was dropped mid-way, perhaps inside the request creating an
                // endpoint: stop every endpoint it asked for.
                if let Some(s) = &backend.server {
                    let n = xlt::study::stop_started_endpoints(exp, s.as_ref()).await?;
                    eprintln!("{signal}; stopped {n} endpoint(s)");
                }
                bail!("{signal}");
            }
        }
    }
    Ok(())
}

/// Fills the keys a partial command (`finetune`, `evaluate`) does not set from the
/// fingerprint recorded in `dir`, and records the keys it sets that the recorded one lacks
/// (an `evaluate` after a `finetune`), so each command compares only what it knows.
fn complete_from_recorded(dir: &Path, fp: &mut xlt::study::Fingerprint) -> anyhow::Result<()> {
    let path = dir.join(xlt::study::FINGERPRINT_FILE);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let mut recorded: xlt::study::Fingerprint =
        serde_json::from_str(&text).with_context(|| path.display().to_string())?;
    for (k, v) in &recorded.settings {
        fp.settings.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let new_keys: Vec<(String, String)> = fp
        .settings
        .iter()
        .filter(|(k, _)| !recorded.settings.contains_key(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !new_keys.is_empty() {
        recorded.settings.extend(new_keys);
        xlt::data::write_atomic(
            &path,
            (serde_json::to_string_pretty(&recorded)? + "\n").as_bytes(),
        )?;
    }
    Ok(())
}
