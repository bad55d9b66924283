//! What the examples share, and only command-line code: argument groups (each under its
//! help heading), progress rendering, logging, exit codes and the closed-stdout handling.
//! Providers are opened through `xlt::backends`; the study runs in `xlt::study`.
#![allow(dead_code)] // each example uses a different part

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use clap::builder::TypedValueParser as _;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use xlt::backends::{OpenOptions, ProviderKind};
use xlt::provider::{FineTuneJob, LearningRate, Progress};
use xlt::study::{EvalSettings, LoraOptions, Plan, StudyError, StudyOptions, TuneSettings};

/// `--provider`: one of the registry's names, listed in `--help`.
pub fn provider_parser() -> impl clap::builder::TypedValueParser<Value = ProviderKind> {
    clap::builder::PossibleValuesParser::new(
        ProviderKind::ALL.map(|k| clap::builder::PossibleValue::new(k.name()).help(k.help())),
    )
    .map(|s| s.parse::<ProviderKind>().expect("a listed name"))
}

/// Where the local provider runs its model.
#[derive(Debug, Default, clap::Args)]
#[command(next_help_heading = "Local model")]
pub struct DeviceArgs {
    /// cpu, cuda or cuda:N (a build with `--features cuda`); --provider local only
    /// [default: $XLT_DEVICE, else cpu]
    #[arg(long)]
    pub device: Option<String>,
    /// Weights in f32 or bf16; --provider local only [default: $XLT_DTYPE, else f32]
    #[arg(long)]
    pub dtype: Option<String>,
}

/// Settings shared by `finetune`, `evaluate` and `reproduce`.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Run")]
pub struct StudyArgs {
    /// The experiment directory (what `prepare` writes; the study writes beside it).
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of the split, the training runs and sampling.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// When `--out` holds the results of other settings, discard them (results, analysis,
    /// the job ledger and the provider's state; the response cache is kept) instead of
    /// refusing; with the same settings the run resumes. See docs/GUIDE.md.
    #[arg(long)]
    pub fresh: bool,
    /// Seconds between polls of a fine-tuning job, batch or endpoint (default: the
    /// provider's pace, 5 s growing to 60 s for jobs).
    #[arg(long, value_parser = seconds)]
    pub poll_interval: Option<f64>,
    /// Which provider runs the study.
    #[arg(long, default_value = "embedded", value_parser = provider_parser(), help_heading = "Provider")]
    pub provider: ProviderKind,
    /// The base model (default: the provider's; for OpenAI the study's
    /// gpt-4.1-nano-2025-04-14; for `evaluate`, the one the experiment's models were tuned
    /// from, and another is refused).
    #[arg(long, help_heading = "Provider")]
    pub base_model: Option<String>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

impl StudyArgs {
    /// The library's options.
    pub fn options(&self) -> StudyOptions {
        StudyOptions {
            out: self.out.clone(),
            base_model: self.base_model.clone(),
            seed: self.seed,
            fresh: self.fresh,
            poll_interval: self.poll_interval,
        }
    }

    /// Opens the chosen provider through the registry.
    pub fn backend(&self) -> anyhow::Result<xlt::study::Backend> {
        Ok(xlt::backends::open(
            self.provider,
            &OpenOptions {
                device: self.device.device.clone(),
                dtype: self.device.dtype.clone(),
                ..OpenOptions::new(&self.out)
            },
        )?)
    }
}

/// LoRA settings: `finetune` and `reproduce`.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "LoRA")]
pub struct LoraArgs {
    /// LoRA rank r (local: default 16; Together: its own default unless a --lora-* option
    /// is given, then 16).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub lora_rank: Option<u32>,
    /// LoRA alpha: the adapter's update is scaled by alpha / r (default 32).
    #[arg(long)]
    pub lora_alpha: Option<f64>,
    /// LoRA dropout on the adapter's input while training, in [0, 1) (default 0.05).
    #[arg(long)]
    pub lora_dropout: Option<f64>,
    /// Comma-separated modules LoRA adapts, of q_proj,k_proj,v_proj,o_proj,gate_proj,
    /// up_proj,down_proj (default: all seven).
    #[arg(long)]
    pub lora_targets: Option<String>,
}

/// Fine-tuning settings: `finetune` and `reproduce`.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Fine-tuning")]
pub struct TuneArgs {
    /// Comma-separated slices to fine-tune (`en-stem,ig-medical`); `none`: a baseline study
    /// (the base model alone on every test set); default: every slice.
    #[arg(long)]
    pub train_slices: Option<String>,
    /// Epochs (study: 1).
    #[arg(long, default_value_t = 1, value_parser = at_least_one::<u32>)]
    pub epochs: u32,
    /// Batch size (study: 8).
    #[arg(long, default_value_t = 8, value_parser = at_least_one::<u32>)]
    pub batch_size: u32,
    /// Learning-rate multiplier (study: 0.4), for providers that take one (OpenAI,
    /// embedded); refused by those that take an absolute rate (Together, local).
    #[arg(long, conflicts_with = "learning_rate", value_parser = positive_number)]
    pub learning_rate_multiplier: Option<f64>,
    /// Absolute learning rate, for providers that take one (Together: default 1e-5; local:
    /// default 2e-4, what LoRA recipes use); refused by those that take a multiplier.
    #[arg(long, value_parser = positive_number)]
    pub learning_rate: Option<f64>,
    /// Fraction of the optimizer steps over which the learning rate warms up linearly
    /// before decaying linearly to zero, in [0, 1) (local, Together; default: the
    /// provider's: 0.03 for local, Together's own otherwise).
    #[arg(long, value_parser = warmup_ratio)]
    pub warmup_ratio: Option<f64>,
    /// Batches whose gradients are summed before each optimizer step (local only; default 1).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub gradient_accumulation_steps: Option<u32>,
    /// A JSON price table (USD per million tokens: training, base_input, base_output,
    /// tuned_input, tuned_output) overriding the built-in one.
    #[arg(long)]
    pub prices: Option<PathBuf>,
    /// Proceed with paid work without asking.
    #[arg(long)]
    pub yes: bool,
    /// Submit (and pay for) again a fine-tuning job that was cancelled outside the run.
    #[arg(long)]
    pub resubmit_cancelled: bool,
    /// Fine-tune every slice N times, each with its own seed derived from --seed, the slice
    /// and k (models `<slice>#1`..`<slice>#N`; 1: one model per slice, named by it). Costs
    /// N times the training and N times the fine-tuned models' evaluation.
    #[arg(long, default_value_t = 1, value_parser = at_least_one::<u32>)]
    pub replicates: u32,
    #[command(flatten)]
    pub lora: LoraArgs,
}

/// A comma-separated list, blanks dropped.
pub fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl TuneArgs {
    /// The library's settings.
    pub fn settings(&self) -> TuneSettings {
        let learning_rate = match (self.learning_rate, self.learning_rate_multiplier) {
            (Some(lr), _) => Some(LearningRate::Absolute(lr)),
            (None, m) => m.map(LearningRate::Multiplier),
        };
        TuneSettings {
            train_slices: list(self.train_slices.as_deref().unwrap_or("")),
            epochs: self.epochs,
            batch_size: self.batch_size,
            learning_rate,
            warmup_ratio: self.warmup_ratio,
            gradient_accumulation_steps: self.gradient_accumulation_steps,
            lora: LoraOptions {
                rank: self.lora.lora_rank,
                alpha: self.lora.lora_alpha,
                dropout: self.lora.lora_dropout,
                targets: self.lora.lora_targets.as_deref().map(list),
            },
            prices: self.prices.clone(),
            yes: self.yes,
            resubmit_cancelled: self.resubmit_cancelled,
            replicates: self.replicates,
        }
    }
}

/// Evaluation settings: `evaluate` and `reproduce`.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Evaluation")]
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
    /// letters (each answer letter's probability, one forward pass) or generate (decode,
    /// then read the letter); default: letters on the local provider, generate elsewhere.
    #[arg(long)]
    pub scoring: Option<xlt::study::Scoring>,
    /// Score each question under this many cyclic rotations of its options (1 to 4; 4:
    /// every rotation, an option-order control). Letter scoring only.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4))]
    pub rotations: u32,
}

impl EvalArgs {
    /// The library's settings.
    pub fn settings(&self) -> EvalSettings {
        EvalSettings {
            grader: self.grader,
            batch: self.batch,
            max_tokens: self.max_tokens,
            max_requests_per_minute: self.max_requests_per_minute,
            max_tokens_per_minute: self.max_tokens_per_minute,
            concurrency: self.concurrency,
            scoring: self.scoring,
            rotations: self.rotations,
        }
    }
}

/// Which Global-MMLU rows an experiment uses and how they are split: `prepare`, `reproduce`.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Data")]
pub struct DataArgs {
    /// Data files or directories (CSV, parquet, JSON Lines), or Hub datasets
    /// (`hf:CohereLabs/Global-MMLU[@revision]`, fetched into the Hugging Face cache);
    /// default: the shipped fixtures.
    #[arg(long, num_args = 1..)]
    pub data: Vec<xlt::data::DataSource>,
    /// Comma-separated language codes; default: every language found.
    #[arg(long)]
    pub languages: Option<String>,
    /// Comma-separated domains [default: the scheme's: stem,humanities,medical for
    /// `study`; stem,humanities,social-sciences,other for `mmlu`].
    #[arg(long)]
    pub domains: Option<String>,
    /// How subjects group into domains: study (Global-MMLU's subject categories) or mmlu
    /// (MMLU's four); recorded in the manifest.
    #[arg(long, default_value = "study")]
    pub domain_scheme: xlt::data::DomainScheme,
    /// A file of resource levels, `code,level` per line (`am,low`), over the default
    /// classification (the study's map for its nine languages, Joshi et al. 2020 for the
    /// others); kept in the experiment for every later analysis.
    #[arg(long)]
    pub resource_map: Option<PathBuf>,
    /// Fraction of each subject on the training side.
    #[arg(long, default_value_t = 0.7, value_parser = fraction)]
    pub train_fraction: f64,
}

impl DataArgs {
    /// Loads the data and prepares the experiment with split seed `seed`.
    pub fn prepare(&self, seed: u64) -> Result<xlt::data::Prepared, xlt::data::DataError> {
        let default = [xlt::data::DataSource::Path(
            xlt::fixtures_dir().join("global-mmlu/lite"),
        )];
        let sources = if self.data.is_empty() {
            &default[..]
        } else {
            &self.data[..]
        };
        xlt::study::prepare_data_in(
            self.domain_scheme,
            sources,
            self.languages.as_deref(),
            self.domains.as_deref(),
            self.train_fraction,
            seed,
        )
    }

    /// The `--resource-map` file over the default classification, read now so that a bad
    /// file fails before anything runs; `None` without the flag.
    pub fn resource_map(&self) -> Result<Option<xlt::data::ResourceMap>, xlt::data::DataError> {
        let file = self.resource_map.as_deref();
        file.map(|f| xlt::data::ResourceMap::classified_with(Some(f)))
            .transpose()
    }
}

/// `value_parser`s: a whole number of at least 1 (`--concurrency`, `--epochs`: 0 would hang
/// or do nothing); a finite number above 0 (learning rates); seconds, 0 or more
/// (`--poll-interval`); a warm-up fraction in [0, 1); a split fraction in (0, 1).
pub fn at_least_one<T>(s: &str) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + From<u8>,
    T::Err: std::fmt::Display,
{
    let n: T = s.trim().parse().map_err(|e| format!("{e}"))?;
    if n < T::from(1) {
        Err("must be at least 1".to_owned())
    } else {
        Ok(n)
    }
}

fn number(s: &str, ok: impl Fn(f64) -> bool, why: &str) -> Result<f64, String> {
    let x: f64 = s.trim().parse().map_err(|e| format!("{e}"))?;
    if ok(x) { Ok(x) } else { Err(why.to_owned()) }
}

pub fn positive_number(s: &str) -> Result<f64, String> {
    number(
        s,
        |x| x.is_finite() && x > 0.0,
        "must be a finite number above 0",
    )
}

pub fn seconds(s: &str) -> Result<f64, String> {
    let why = "must be a finite number of seconds, 0 or more";
    number(s, |x| x.is_finite() && x >= 0.0, why)
}

pub fn warmup_ratio(s: &str) -> Result<f64, String> {
    number(s, |x| (0.0..1.0).contains(&x), "must be in [0, 1)")
}

pub fn fraction(s: &str) -> Result<f64, String> {
    let why = "must be strictly between 0 and 1 (both sides of the split need questions)";
    number(s, |x| x > 0.0 && x < 1.0, why)
}

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM; says which. The library's cancel future.
pub async fn interrupted() -> String {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            return tokio::select! {
                _ = tokio::signal::ctrl_c() => "interrupted (Ctrl-C)",
                _ = term.recv() => "terminated (SIGTERM)",
            }
            .to_owned();
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    "interrupted (Ctrl-C)".to_owned()
}

/// Logs to stderr, filtered by `RUST_LOG` (default: warnings); colours only on a terminal,
/// so that a log file gets no escape codes.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

/// Progress of a run: bars on a terminal; without one, the library's plain lines
/// ([`xlt::study::ProgressLines`]: bounded rate, no escape codes).
pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
    /// Without a terminal: plain lines instead of bars.
    lines: Option<xlt::study::ProgressLines<std::io::Stderr>>,
}

impl Bars {
    pub fn new() -> Bars {
        let tty = std::io::stderr().is_terminal();
        Bars {
            multi: MultiProgress::new(),
            bars: Mutex::new(HashMap::new()),
            lines: (!tty).then(xlt::study::ProgressLines::stderr),
        }
    }

    /// Shows `key`'s state on the terminal: a spinner (`len` None) or a bar of `len`.
    fn show(&self, key: &str, len: Option<(u64, u64)>, msg: String, last: bool) {
        let mut bars = self.bars.lock().unwrap();
        let bar = bars.entry(key.to_owned()).or_insert_with(|| {
            let (b, template) = match len {
                Some(_) => (
                    ProgressBar::new(0),
                    "{prefix:>23} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}",
                ),
                None => (
                    ProgressBar::new_spinner(),
                    "{spinner} {prefix}: {msg} ({elapsed})",
                ),
            };
            b.set_style(
                ProgressStyle::with_template(template)
                    .unwrap()
                    .progress_chars("=> "),
            );
            b.set_prefix(key.to_owned());
            if len.is_none() {
                b.enable_steady_tick(Duration::from_millis(200));
            }
            self.multi.add(b)
        });
        if let Some((pos, n)) = len {
            bar.set_length(n);
            bar.set_position(pos);
        }
        bar.set_message(msg);
        if last {
            bar.finish();
        }
    }
}

impl xlt::study::Observer for Bars {
    fn message(&self, text: &str) {
        if let Some(lines) = &self.lines {
            return lines.message(text);
        }
        if self.multi.is_hidden() || self.multi.println(text).is_err() {
            eprintln!("{text}");
        }
    }

    fn plan(&self, plan: &Plan) {
        eprint!("{}", plan.to_text());
    }

    fn confirm(&self, _plan: &Plan) -> Result<(), StudyError> {
        use std::io::Write;
        let refuse = |m: &str| Err(StudyError::Refused(m.to_owned()));
        if !std::io::stdin().is_terminal() {
            return refuse("this run costs money; pass --yes to proceed without a prompt");
        }
        eprint!("Proceed? [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        match answer.trim() {
            "y" | "Y" | "yes" => Ok(()),
            _ => refuse("not confirmed; nothing was spent"),
        }
    }

    fn job(&self, slice: &str, job: &FineTuneJob, retried: u64) {
        if let Some(lines) = &self.lines {
            return lines.job(slice, job, retried);
        }
        let msg = format!("{} [{}] retried {retried}", job.provider_status, job.id);
        self.show(
            &format!("fine-tune {slice}"),
            None,
            msg,
            job.status.is_terminal(),
        );
    }

    fn job_event(&self, slice: &str, event: &xlt::provider::JobEvent) {
        if let Some(lines) = &self.lines {
            return lines.job_event(slice, event);
        }
        if let Some(s) = xlt::study::TrainingStep::parse(&event.message) {
            let loss = s.loss.map(|l| format!("loss {l:.4}")).unwrap_or_default();
            let rate = s.tokens_per_second.map(|r| format!(", {r:.0} tokens/s"));
            let msg = loss + &rate.unwrap_or_default();
            let key = format!("train {slice}");
            self.show(&key, Some((s.step, s.total)), msg, s.step >= s.total);
        } else if let Some((step, total)) = xlt::study::resumed_at(&event.message) {
            self.message(&format!(
                "fine-tune {slice}: resumed at step {step} of {total}"
            ));
        }
    }

    fn eval(&self, label: &str, p: &Progress) {
        if let Some(lines) = &self.lines {
            return lines.eval(label, p);
        }
        let msg = format!("failed {} retried {}", p.failed, p.retried);
        let key = format!("evaluate {label}");
        self.show(&key, Some((p.done, p.total)), msg, p.done == p.total);
    }
}

/// The exit of an example: the error on stderr and a failure code, or success. A closed
/// standard output ([`StdoutClosed`], `| head -1`) is a normal end, as in ripgrep.
pub fn exit_code(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if e.chain().any(is_stdout_closed) => std::process::ExitCode::SUCCESS,
        // Stopped by Ctrl-C or SIGTERM: what was interrupted, and 130 (128 + SIGINT), as a
        // shell reports a process a signal ended.
        Err(e)
            if e.chain().any(|c| {
                matches!(
                    c.downcast_ref(),
                    Some(xlt::study::StudyError::Interrupted(_))
                )
            }) =>
        {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A write to standard output failed because nobody reads it any more (`EPIPE`); carried
/// inside an `io::Error` of kind `BrokenPipe`, so that only a broken stdout, not a broken
/// connection to a provider, ends a program quietly.
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

/// Standard output for results: an error, not a panic, when the reader has gone.
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
pub fn print_line(args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = stdout();
    out.write_fmt(args)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// `println!` for results: `common::outln!("{x}")?` (see [`exit_code`]).
#[allow(unused_macros)] // each example uses a different part
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::common::print_line(format_args!($($arg)*))
    };
}
#[allow(unused_imports)] // each example uses a different part
pub(crate) use outln;
