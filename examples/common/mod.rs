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
    Limited, Progress, RateLimits, Retry, RetryPolicy,
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
    /// Open-weights models on this machine (`--base-model DIR|ID|FILE.gguf`; `XLT_DEVICE`,
    /// `XLT_DTYPE`). Evaluation only until local fine-tuning lands.
    Local,
}

/// A provider, as trait objects.
pub struct Backend {
    pub name: String,
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
}

/// Opens the chosen provider; the embedded one keeps its state under `out/embedded`.
pub fn backend(kind: ProviderKind, out: &Path) -> anyhow::Result<Backend> {
    Ok(match kind {
        ProviderKind::Embedded => {
            let p = Arc::new(EmbeddedProvider::open(out.join("embedded")));
            Backend {
                name: "embedded".into(),
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
                name: "openai".into(),
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
                name: "together".into(),
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
            let p = Arc::new(xlt::local::LocalProvider::from_env()?);
            Backend {
                name: "local".into(),
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
    let retry = Retry::new(limited, RetryPolicy::default());
    let retries = retry.retries();
    let cached = Cached::new(retry, out.join("cache").join(&backend.name));
    (Arc::new(cached), retries)
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

    pub fn job(&self, slice: &str, job: &FineTuneJob) {
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
        bar.set_message(format!("{} [{}]", job.provider_status, job.id));
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
    /// Data files or directories (CSV, parquet, JSON Lines); default: the shipped fixtures.
    #[arg(long, num_args = 1..)]
    pub data: Vec<std::path::PathBuf>,
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
        let paths = if self.data.is_empty() {
            vec![xlt::fixtures_dir().join("global-mmlu/lite")]
        } else {
            self.data.clone()
        };
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
            ..PrepareConfig::default()
        };
        xlt::data::prepare(xlt::data::load_paths(&paths)?, &config)
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
    /// How answers are graded: regex, llm (the study's protocol) or regex+llm.
    #[arg(long, default_value = "regex+llm")]
    pub grader: xlt::grade::Protocol,
    /// Evaluate through the provider's batch API.
    #[arg(long)]
    pub batch: bool,
    /// Client-side requests-per-minute limit (default: 500 for OpenAI, none offline).
    #[arg(long)]
    pub max_requests_per_minute: Option<u32>,
    /// Client-side tokens-per-minute limit.
    #[arg(long)]
    pub max_tokens_per_minute: Option<u32>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Seed of the split, the training runs and sampling.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// A JSON price table (USD per million tokens: training, base_input, base_output,
    /// tuned_input, tuned_output) overriding the built-in one.
    #[arg(long)]
    pub prices: Option<std::path::PathBuf>,
    /// Proceed with paid work without asking.
    #[arg(long)]
    pub yes: bool,
}

impl StudyArgs {
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

    pub fn base_model(&self, backend: &Backend) -> String {
        self.base_model
            .clone()
            .unwrap_or_else(|| backend.default_base_model.to_owned())
    }
}

/// Plans, prints and confirms; returns the plan (also written to `plan.json`). Where the
/// provider prices jobs itself, the training files are uploaded (free) and its estimate
/// replaces the token-based one.
pub async fn plan(
    args: &StudyArgs,
    backend: &Backend,
    exp: &xlt::study::Experiment,
) -> anyhow::Result<xlt::study::Plan> {
    let base = args.base_model(backend);
    let jobs = if backend.name == "local" {
        Vec::new()
    } else {
        exp.training_slices(&args.slices())?
    };
    let mut plan = xlt::study::Plan::new(
        exp,
        &xlt::study::PlanInput {
            provider: &backend.name,
            base_model: &base,
            jobs: &jobs,
            hyperparameters: args.hyperparameters(backend),
            max_tokens: xlt::study::EvalOptions::default().max_tokens,
            judge_all: args.grader == xlt::grade::Protocol::Llm,
            prices: prices(backend, &base, args.prices.as_deref())?,
            // About ten minutes to start an endpoint, then the evaluation at the request rate.
            serving: backend.server.as_ref().map(|_| {
                (
                    10.0,
                    f64::from(
                        args.max_requests_per_minute
                            .or(backend.default_rpm)
                            .unwrap_or(600),
                    ),
                )
            }),
        },
    )?;
    if backend.tuner.offers_price_estimate() {
        let ledger = ledger(backend, exp)?;
        let estimate = xlt::study::provider_training_estimate(
            exp,
            &plan.jobs,
            backend.tuner.as_ref(),
            &ledger,
            &finetune_options(args, backend, &plan),
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
    confirm(args.yes, plan.is_paid())?;
    Ok(plan)
}

fn ledger(
    backend: &Backend,
    exp: &xlt::study::Experiment,
) -> anyhow::Result<xlt::provider::JobLedger> {
    Ok(xlt::provider::JobLedger::open(
        exp.dir.join("ledger.json"),
        &backend.name,
    )?)
}

fn finetune_options(
    args: &StudyArgs,
    backend: &Backend,
    plan: &xlt::study::Plan,
) -> xlt::study::FinetuneOptions {
    xlt::study::FinetuneOptions {
        base_model: plan.base_model.clone(),
        hyperparameters: args.hyperparameters(backend),
        seed: Some(args.seed),
        wait: if backend.name == "embedded" {
            xlt::provider::WaitOptions {
                initial: Duration::ZERO,
                max: Duration::ZERO,
                factor: 1.0,
                timeout: Duration::from_secs(600),
            }
        } else {
            xlt::provider::WaitOptions::default()
        },
    }
}

/// Fine-tunes the plan's slices; writes `models.json`.
pub async fn finetune(
    args: &StudyArgs,
    backend: &Backend,
    exp: &xlt::study::Experiment,
    plan: &xlt::study::Plan,
    bars: &Bars,
) -> anyhow::Result<xlt::study::ModelsFile> {
    let ledger = ledger(backend, exp)?;
    Ok(xlt::study::finetune(
        exp,
        &plan.jobs,
        &backend.name,
        backend.tuner.as_ref(),
        &ledger,
        &finetune_options(args, backend, plan),
        &|slice, job| bars.job(slice, job),
    )
    .await?)
}

/// Evaluates every model in `models.json`; writes `outcomes/`.
pub async fn evaluate(
    args: &StudyArgs,
    backend: &Backend,
    exp: &xlt::study::Experiment,
    models: &xlt::study::ModelsFile,
    bars: &Bars,
) -> anyhow::Result<()> {
    let (chat, retries) = chat_stack(
        backend,
        &exp.dir,
        args.max_requests_per_minute,
        args.max_tokens_per_minute,
    );
    let judge = (args.grader != xlt::grade::Protocol::Regex)
        .then(|| xlt::grade::LlmJudge::new(chat.clone(), models.base_model.clone()));
    let grader = xlt::grade::Grader::new(args.grader, Arc::new(xlt::grade::RuleExtractor), judge)?;
    let opts = xlt::study::EvalOptions {
        concurrency: args.concurrency,
        seed: Some(args.seed),
        retries: Some(retries),
        ..xlt::study::EvalOptions::default()
    };
    if args.batch {
        let runner = backend.batch.as_ref().ok_or_else(|| {
            anyhow::anyhow!(
                "the {} provider has no batch API; run without --batch",
                backend.name
            )
        })?;
        xlt::study::evaluate_batch(
            exp,
            models,
            runner.as_ref(),
            &grader,
            &opts,
            xlt::provider::WaitOptions {
                initial: Duration::from_secs(30),
                max: Duration::from_secs(300),
                factor: 1.5,
                timeout: Duration::from_secs(26 * 3600),
            },
            &|label, p| bars.eval(label, p),
        )
        .await?;
    } else {
        let serving = backend.server.as_ref().map(|s| xlt::study::Serving {
            server: s.as_ref(),
            wait: xlt::provider::WaitOptions {
                initial: Duration::from_secs(10),
                max: Duration::from_secs(60),
                factor: 1.5,
                timeout: Duration::from_secs(3600),
            },
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
            _ = tokio::signal::ctrl_c() => {
                // The evaluation was dropped mid-way: stop every endpoint it started.
                if let Some(s) = &backend.server {
                    let n = xlt::study::stop_started_endpoints(exp, s.as_ref()).await?;
                    eprintln!("interrupted; stopped {n} endpoint(s)");
                }
                bail!("interrupted");
            }
        }
    }
    Ok(())
}
