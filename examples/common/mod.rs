//! What the examples share: the provider choice (the one place that names providers),
//! the wrapper stack, progress bars, logging, and the exit (a closed stdout is a normal end).
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
    /// OpenAI or an OpenAI-compatible server (`OPENAI_API_KEY`, `OPENAI_BASE_URL`); on a
    /// vLLM server, a local fine-tune's LoRA adapters are loaded for their evaluation.
    Openai,
    /// Together AI, open-weight models (`TOGETHER_API_KEY`, `TOGETHER_BASE_URL`).
    Together,
    /// Open-weights models on this machine (`--base-model DIR|ID|FILE.gguf`, `--device`,
    /// `--dtype`), fine-tuned with LoRA here, adapters in PEFT format under
    /// `<out>/local/jobs/`.
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
    /// The local provider itself, for what only it does: loading its model before anything
    /// is written ([`load_local_model`]), measuring training speed for the plan.
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
/// CPU in f32); the embedded one keeps its state under `out/embedded`, the local one its
/// fine-tuning jobs under `out/local`.
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
            // Another server than OpenAI's (vLLM): a local fine-tune's LoRA adapter
            // (`<base>+<adapter dir>`) is loaded on it for its evaluation and unloaded after;
            // other models go to it as they are. Its own server sets no rate limit.
            let vllm = if c.config().is_openai() {
                None
            } else {
                Some(Arc::new(xlt::openai::VllmServer::new(
                    (*c).clone(),
                    xlt::openai::VllmConfig::from_env()?,
                )))
            };
            Backend {
                retries,
                name: "openai".into(),
                local: None,
                chat: match &vllm {
                    Some(v) => v.clone(),
                    None => c.clone(),
                },
                tuner: c.clone(),
                batch: Some(c),
                default_rpm: if vllm.is_some() { None } else { Some(500) },
                server: vllm.map(|v| v as Arc<dyn ModelServer>),
                default_base_model: STUDY_BASE_MODEL,
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
            // Absolute, so that the model ids `<base>+<adapter dir>` it returns hold from any
            // working directory.
            let root = std::path::absolute(out.join("local"))?;
            let p = Arc::new(
                xlt::local::LocalProvider::new(device.load_options()?, Default::default())
                    .with_fetcher(hub_fetcher())
                    .with_fine_tuning(root, local_checkpoint_steps()?),
            );
            Backend {
                retries,
                name: "local".into(),
                local: Some(p.clone()),
                chat: p.clone(),
                tuner: p.clone(),
                batch: None,
                server: None,
                default_base_model: "HuggingFaceTB/SmolLM2-135M-Instruct",
                default_rpm: None,
                // What LoRA recipes use.
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

/// How often local fine-tuning checkpoints: every `XLT_CHECKPOINT_STEPS` optimizer steps
/// (default 50). A checkpoint costs a write of the adapter and the optimizer's moments; a
/// killed run loses at most this many steps. It does not change results (a resumed run
/// takes the same steps), so it is not in the fingerprint.
fn local_checkpoint_steps() -> anyhow::Result<usize> {
    match std::env::var("XLT_CHECKPOINT_STEPS") {
        Ok(v) if !v.is_empty() => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| anyhow::anyhow!("XLT_CHECKPOINT_STEPS={v}: not a positive integer")),
        _ => Ok(50),
    }
}

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

/// The exit of an example: the error on stderr and a failure code, or success. A closed
/// standard output ([`StdoutClosed`]: the reader stopped early, as `| head -1` does) is a
/// normal end, quiet and successful, as in ripgrep.
pub fn exit_code(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if e.chain().any(is_stdout_closed) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A write to standard output failed because nobody reads it any more (`EPIPE`). It
/// travels as the payload of an `io::Error` of kind `BrokenPipe`, so that only a broken
/// stdout, not a broken connection to a provider, ends a program quietly.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for StdoutClosed {}

fn is_stdout_closed(e: &(dyn std::error::Error + 'static)) -> bool {
    e.is::<StdoutClosed>()
        || e.downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| inner.is::<StdoutClosed>())
}

/// Standard output for an example's results: `print!` panics when the reader has gone,
/// this returns an error that [`exit_code`] turns into a quiet end. Write through it (or
/// [`outln!`]) and pass its errors on with `?`.
pub struct Stdout(std::io::Stdout);

/// Standard output, for results (see [`Stdout`]).
pub fn stdout() -> Stdout {
    Stdout(std::io::stdout())
}

fn mark_closed(e: std::io::Error) -> std::io::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::io::Error::new(std::io::ErrorKind::BrokenPipe, StdoutClosed)
    } else {
        e
    }
}

impl std::io::Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).map_err(mark_closed)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush().map_err(mark_closed)
    }
}

/// Writes `args` and a newline to [`stdout`] and flushes.
///
/// # Errors
/// `io::Error` ([`StdoutClosed`] when nobody reads standard output any more).
pub fn print_line(args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = stdout();
    out.write_fmt(args)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// `println!` for results: `common::outln!("{x}")?`, an error instead of a panic when
/// standard output is closed (see [`exit_code`]).
#[allow(unused_macros)] // each example uses a different part
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::common::print_line(format_args!($($arg)*))
    };
}
#[allow(unused_imports)] // each example uses a different part
pub(crate) use outln;

/// Checks `--out` before anything is read or written: it must be a directory or not exist
/// yet, and the program must be able to write there (or create it in the nearest existing
/// parent).
///
/// # Errors
/// `--out PATH is a file, not a directory`; a parent that is a file; a directory that
/// cannot be written.
pub fn check_out_dir(out: &Path) -> anyhow::Result<()> {
    let shown = out.display();
    let writable = |dir: &Path| tempfile::tempfile_in(dir).map(drop);
    match std::fs::metadata(out) {
        Ok(m) if m.is_dir() => {
            return writable(out).with_context(|| format!("--out {shown}: cannot write there"));
        }
        Ok(_) => bail!("--out {shown} is a file, not a directory"),
        // Missing, or under a file (`NotADirectory`): look at the parents.
        Err(_) => {}
    }
    let mut parent = out;
    let existing = loop {
        parent = match parent.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if parent == Path::new(".") || std::fs::symlink_metadata(parent).is_ok() {
            break parent;
        }
    };
    let shown_parent = existing.display();
    match std::fs::metadata(existing) {
        Ok(m) if m.is_dir() => writable(existing)
            .with_context(|| format!("--out {shown}: cannot create it in {shown_parent}")),
        Ok(_) => bail!("--out {shown}: {shown_parent} is a file, not a directory"),
        Err(e) => bail!("--out {shown}: {shown_parent}: {e}"),
    }
}

/// Stops `prepare` unless `out` is new or its `fingerprint.json` records the same prepared
/// data (languages, domains, split seed and fraction, the digest of the prepared files),
/// as `finetune`, `evaluate` and `reproduce` do with their settings: nothing is written
/// then. With `fresh`, discards the old results and prepared files first (see
/// [`check_partial_fingerprint`]).
pub fn check_prepared_fingerprint(
    out: &Path,
    prepared: &xlt::data::Prepared,
    fresh: bool,
) -> anyhow::Result<()> {
    let mut fp = xlt::study::Fingerprint::of_prepared(&prepared.manifest, prepared.files());
    check_partial_fingerprint(
        out,
        &mut fp,
        fresh,
        xlt::study::Discard::ResultsAndPreparedFiles,
    )?;
    Ok(())
}

/// A whole number of at least 1, for counts and limits (`--concurrency`, `--epochs`,
/// `--batch-size`, `--max-requests-per-minute`): 0 would hang, divide by zero or do
/// nothing. For `value_parser`; clap names the flag in the error.
pub fn at_least_one<T>(s: &str) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + From<u8>,
    T::Err: std::fmt::Display,
{
    let n: T = s.trim().parse().map_err(|e| format!("{e}"))?;
    if n < T::from(1) {
        return Err("must be at least 1".to_owned());
    }
    Ok(n)
}

/// A finite number above 0 (`--learning-rate`, `--learning-rate-multiplier`). For
/// `value_parser`.
pub fn positive_number(s: &str) -> Result<f64, String> {
    let x: f64 = s.trim().parse().map_err(|e| format!("{e}"))?;
    if !(x.is_finite() && x > 0.0) {
        return Err("must be a finite number above 0".to_owned());
    }
    Ok(x)
}

/// A finite number of seconds, 0 or more (`--poll-interval`). For `value_parser`.
pub fn seconds(s: &str) -> Result<f64, String> {
    let x: f64 = s.trim().parse().map_err(|e| format!("{e}"))?;
    if !(x.is_finite() && x >= 0.0) {
        return Err("must be a finite number of seconds, 0 or more".to_owned());
    }
    Ok(x)
}

/// A fraction in [0, 1) (`--warmup-ratio`): 1 would never reach the full rate. For
/// `value_parser`.
pub fn warmup_ratio(s: &str) -> Result<f64, String> {
    let x: f64 = s.trim().parse().map_err(|e| format!("{e}"))?;
    if !(0.0..1.0).contains(&x) {
        return Err("must be in [0, 1)".to_owned());
    }
    Ok(x)
}

/// A fraction strictly between 0 and 1 (`--train-fraction`): both sides of the split
/// need questions. For `value_parser`.
pub fn fraction(s: &str) -> Result<f64, String> {
    let x: f64 = s.trim().parse().map_err(|e| format!("{e}"))?;
    if !(x > 0.0 && x < 1.0) {
        return Err(
            "must be strictly between 0 and 1 (both sides of the split need questions)".to_owned(),
        );
    }
    Ok(x)
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
    #[arg(long, default_value_t = 0.7, value_parser = fraction)]
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
    #[arg(long, value_parser = seconds)]
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
    #[arg(long, default_value_t = 1, value_parser = at_least_one::<u32>)]
    pub epochs: u32,
    /// Batch size (study: 8).
    #[arg(long, default_value_t = 8, value_parser = at_least_one::<u32>)]
    pub batch_size: u32,
    /// Learning-rate multiplier (study: 0.4), for providers that take one (OpenAI, embedded);
    /// refused by those that take an absolute rate (Together, local).
    #[arg(long, conflicts_with = "learning_rate", value_parser = positive_number)]
    pub learning_rate_multiplier: Option<f64>,
    /// Absolute learning rate, for providers that take one (Together: default 1e-5; local:
    /// default 2e-4, what LoRA recipes use).
    #[arg(long, value_parser = positive_number)]
    pub learning_rate: Option<f64>,
    /// Fraction of the optimizer steps over which the learning rate warms up linearly before
    /// decaying linearly to zero, in [0, 1) (local, Together; default: the provider's: 0.03
    /// for local, Together's own otherwise).
    #[arg(long, value_parser = warmup_ratio)]
    pub warmup_ratio: Option<f64>,
    /// Batches whose gradients are summed before each optimizer step (local only; default 1).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub gradient_accumulation_steps: Option<u32>,
    /// LoRA rank r (local: default 16; Together: its own default unless a --lora-* option is
    /// given, then 16).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub lora_rank: Option<u32>,
    /// LoRA alpha: the adapter's update is scaled by alpha / r (default 32).
    #[arg(long)]
    pub lora_alpha: Option<f64>,
    /// LoRA dropout on the adapter's input while training, in [0, 1) (default 0.05).
    #[arg(long)]
    pub lora_dropout: Option<f64>,
    /// Comma-separated modules LoRA adapts, of q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,
    /// down_proj (default: all seven).
    #[arg(long)]
    pub lora_targets: Option<String>,
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
    #[arg(long, value_parser = at_least_one::<u32>)]
    pub max_requests_per_minute: Option<u32>,
    /// Client-side tokens-per-minute limit.
    #[arg(long, value_parser = at_least_one::<u32>)]
    pub max_tokens_per_minute: Option<u32>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8, value_parser = at_least_one::<usize>)]
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
            warmup_ratio: self.warmup_ratio,
            gradient_accumulation_steps: self.gradient_accumulation_steps,
        }
    }

    /// The LoRA settings of this run: PEFT's recipe defaults with the `--lora-*` options
    /// over them for the local provider (which always trains adapters), and for Together
    /// when an option is given (else Together's own default adapter); refused for a
    /// provider that trains no adapters.
    pub fn lora(&self, backend: &Backend) -> anyhow::Result<Option<xlt::provider::LoraSpec>> {
        let given = self.lora_rank.is_some()
            || self.lora_alpha.is_some()
            || self.lora_dropout.is_some()
            || self.lora_targets.is_some();
        match backend.name.as_str() {
            "local" => {}
            "together" if given => {}
            "together" => return Ok(None),
            name if given => bail!(
                "the {name} provider trains no LoRA adapters: --lora-rank, --lora-alpha, --lora-dropout and --lora-targets apply to --provider local and together"
            ),
            _ => return Ok(None),
        }
        let mut spec = xlt::provider::LoraSpec::default();
        if let Some(r) = self.lora_rank {
            spec.rank = r;
        }
        if let Some(a) = self.lora_alpha {
            spec.alpha = a;
        }
        if let Some(d) = self.lora_dropout {
            spec.dropout = d;
        }
        if let Some(t) = &self.lora_targets {
            spec.target_modules = t
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
        }
        spec.validate().context("--lora-* options")?;
        Ok(Some(spec))
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
    ) -> anyhow::Result<xlt::study::Fingerprint> {
        let base = self.base_model(backend);
        let slices = tune.map(TuneArgs::slices).unwrap_or_default();
        let lora = match tune {
            Some(t) => t.lora(backend)?,
            None => None,
        };
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
            lora: lora.as_ref(),
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
        Ok(fp)
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
        let mut fp = self.fingerprint(backend, tune, eval, &exp.manifest, &files)?;
        if tune.is_none() {
            keep_provider_of_models(backend, &exp.dir, &mut fp)?;
        }
        check_partial_fingerprint(&exp.dir, &mut fp, self.fresh, xlt::study::Discard::Results)?;
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
    let hyperparameters = tune.hyperparameters(backend);
    if let (LearningRate::Multiplier(m), LearningRate::Absolute(default)) =
        (hyperparameters.learning_rate, backend.default_learning_rate)
    {
        bail!(
            "the {} provider takes an absolute learning rate (--learning-rate, default {default:e}), not a multiplier ({m}): the two do not convert (nothing was spent)",
            backend.name
        );
    }
    // Refuses LoRA options the provider cannot take before anything is spent.
    tune.lora(backend)?;
    let jobs = exp.training_slices(&tune.slices())?;
    // Together's endpoints are billed; loading an adapter on a server of one's own (vLLM)
    // costs nothing.
    let billed_server = backend
        .server
        .as_ref()
        .filter(|_| backend.name == "together");
    let mut plan = xlt::study::Plan::new(
        exp,
        &xlt::study::PlanInput {
            provider: &backend.name,
            base_model: &base,
            jobs: &jobs,
            hyperparameters,
            max_tokens: eval.map_or(xlt::study::DEFAULT_MAX_TOKENS, |e| e.max_tokens),
            grader: eval.map_or(xlt::grade::Protocol::RegexThenLlm, |e| e.grader),
            prices: prices(backend, &base, tune.prices.as_deref())?,
            // About ten minutes to start an endpoint, then the evaluation at the request rate.
            serving: billed_server.map(|_| {
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
    if let Some(local) = &backend.local
        && !plan.jobs.is_empty()
    {
        let estimate = match earlier_machine_training(exp, &plan, &local_device_name(local)) {
            Some(t) => {
                eprintln!(
                    "training speed as measured by an earlier run of this experiment (plan.json)"
                );
                t
            }
            None => local_training_estimate(local, args, tune, backend, exp, &plan.jobs).await?,
        };
        plan = plan.with_machine_training(estimate);
    }
    eprint!("{}", plan.to_text());
    xlt::data::write_atomic(
        &exp.dir.join("plan.json"),
        (serde_json::to_string_pretty(&plan)? + "\n").as_bytes(),
    )?;
    confirm(tune.yes, plan.is_paid())?;
    Ok(plan)
}

/// The local provider's device as the plan names it (`cpu`, `cuda(0)`).
fn local_device_name(local: &xlt::local::LocalProvider) -> String {
    match &local.load_options().device {
        xlt::local::Device::Cpu => "cpu".to_owned(),
        d => format!("{d:?}").to_lowercase(),
    }
}

/// The training estimate of this experiment's earlier plan (`plan.json`), when that plan is
/// this one in every other respect (base model, slices, hyperparameters, tokens) and was
/// measured on the same device: a rerun then shows it again instead of timing training
/// steps anew. `None` when there is no such plan.
fn earlier_machine_training(
    exp: &xlt::study::Experiment,
    plan: &xlt::study::Plan,
    device: &str,
) -> Option<xlt::study::MachineTraining> {
    let text = std::fs::read_to_string(exp.dir.join("plan.json")).ok()?;
    let mut earlier: xlt::study::Plan = serde_json::from_str(&text).ok()?;
    let training = earlier.machine_training.take()?;
    // The earlier plan's token count is the tokenizer's (`with_machine_training`); this one's
    // is still the character-based estimate, the same for the same files.
    earlier.training_tokens_per_epoch = plan.training_tokens_per_epoch;
    (earlier == *plan && training.device == device).then_some(training)
}

/// Optimizer steps timed to estimate local training time.
const CALIBRATION_STEPS: usize = 2;

/// Times [`CALIBRATION_STEPS`] LoRA steps of the base model on this machine and counts
/// every slice's tokens with its tokenizer: the plan's training time and adapter disk.
async fn local_training_estimate(
    local: &Arc<xlt::local::LocalProvider>,
    args: &StudyArgs,
    tune: &TuneArgs,
    backend: &Backend,
    exp: &xlt::study::Experiment,
    jobs: &[String],
) -> anyhow::Result<xlt::study::MachineTraining> {
    let spec = xlt::provider::FineTuneSpec {
        base_model: args.base_model(backend),
        training_file: String::new(),
        validation_file: None,
        hyperparameters: tune.hyperparameters(backend),
        suffix: None,
        seed: Some(args.seed),
        lora: tune.lora(backend)?,
    };
    let files: Vec<std::path::PathBuf> = jobs.iter().map(|j| exp.finetune_file(j)).collect();
    let device = local_device_name(local);
    eprintln!(
        "measuring local training speed ({CALIBRATION_STEPS} LoRA steps of {} on {device})...",
        spec.base_model
    );
    let local = local.clone();
    let e = tokio::task::spawn_blocking(move || {
        let tuner = local
            .fine_tuner()
            .ok_or_else(|| anyhow::anyhow!("the local provider has no fine-tuning directory"))?;
        anyhow::Ok(tuner.estimate_training(&spec, &files, CALIBRATION_STEPS)?)
    })
    .await??;
    Ok(xlt::study::MachineTraining {
        device,
        tokens_per_epoch: e.tokens_per_epoch,
        optimizer_steps: e.optimizer_steps,
        tokens_per_second: e.tokens_per_second,
        measured_by: format!(
            "{CALIBRATION_STEPS} optimizer steps of batch {}: {} tokens in {:.1} s",
            tune.batch_size, e.calibration_tokens, e.calibration_seconds
        ),
        estimated_seconds: e.estimated_seconds,
        adapter_bytes: e.adapter_bytes,
    })
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
        lora: tune.lora(backend).ok().flatten(),
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

/// Providers whose fine-tuned models `backend` evaluates as they are: a vLLM server
/// (`--provider openai` with `OPENAI_BASE_URL` set elsewhere than OpenAI) loads the LoRA
/// adapters a local fine-tune wrote.
fn evaluates_models_of(backend: &Backend) -> &'static [&'static str] {
    if backend.name == "openai" && backend.server.is_some() {
        &["local"]
    } else {
        &[]
    }
}

/// An evaluation on another engine of the same model files (a local fine-tune's adapters on
/// vLLM) is the same experiment: the fingerprint keeps the provider that made the models.
/// Every other change (base model, data, grader, ...) still stops the run.
fn keep_provider_of_models(
    backend: &Backend,
    dir: &Path,
    fp: &mut xlt::study::Fingerprint,
) -> anyhow::Result<()> {
    let path = dir.join(xlt::study::FINGERPRINT_FILE);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let recorded: xlt::study::Fingerprint =
        serde_json::from_str(&text).with_context(|| path.display().to_string())?;
    if let Some(made_by) = recorded.settings.get("provider")
        && evaluates_models_of(backend).contains(&made_by.as_str())
    {
        fp.settings.insert("provider".to_owned(), made_by.clone());
    }
    Ok(())
}

/// Compares the fingerprint of a command that knows only part of the settings (`prepare`,
/// `finetune`, `evaluate`; `reproduce` after one of them) with the one recorded in `dir`,
/// as `xlt::study::check_fingerprint` does, comparing only what both know: the keys `fp`
/// lacks are taken from the recorded fingerprint, and the keys the recorded one lacks (an
/// `evaluate` after a `finetune`, a `reproduce` after a `prepare`) are added to it, but
/// only once the shared keys agree, so that a refused run leaves `dir` as it was. After a
/// discard (`fresh`), only the command's own keys are recorded, so the next command
/// records its own.
///
/// # Errors
/// As `xlt::study::check_fingerprint`; an unreadable recorded fingerprint.
pub fn check_partial_fingerprint(
    dir: &Path,
    fp: &mut xlt::study::Fingerprint,
    fresh: bool,
    discard: xlt::study::Discard,
) -> anyhow::Result<xlt::study::FingerprintCheck> {
    let path = dir.join(xlt::study::FINGERPRINT_FILE);
    let recorded: Option<xlt::study::Fingerprint> = match std::fs::read_to_string(&path) {
        Ok(text) => Some(serde_json::from_str(&text).with_context(|| path.display().to_string())?),
        Err(_) => None,
    };
    let Some(mut recorded) = recorded else {
        return Ok(xlt::study::check_fingerprint(dir, fp, fresh, discard)?);
    };
    let own = fp.clone();
    for (k, v) in &recorded.settings {
        fp.settings.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let new_keys: Vec<(String, String)> = fp
        .settings
        .iter()
        .filter(|(k, _)| !recorded.settings.contains_key(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let agree = recorded
        .settings
        .iter()
        .all(|(k, v)| fp.settings.get(k) == Some(v));
    if agree && !new_keys.is_empty() {
        recorded.settings.extend(new_keys);
        xlt::data::write_atomic(
            &path,
            (serde_json::to_string_pretty(&recorded)? + "\n").as_bytes(),
        )?;
    } else if !agree && !fresh {
        // Name only what changed, not what was never recorded.
        for (k, _) in &new_keys {
            fp.settings.remove(k);
        }
    }
    let check = xlt::study::check_fingerprint(dir, fp, fresh, discard)?;
    if check == xlt::study::FingerprintCheck::Discarded {
        xlt::data::write_atomic(
            &path,
            (serde_json::to_string_pretty(&own)? + "\n").as_bytes(),
        )?;
        *fp = own;
    }
    Ok(check)
}
