//! What the examples share: their argument groups, each under its help heading, and how each
//! becomes the library's settings. Value parsers, exit codes, progress rendering, logging and
//! signals are `xlt_cli`'s; providers are opened through `xlt::backends`; the study runs in
//! `xlt::study`.
#![allow(dead_code)] // each example uses a different part

use std::path::PathBuf;

use xlt::backends::{OpenOptions, ProviderKind};
use xlt::provider::LearningRate;
use xlt::study::{EvalSettings, LoraOptions, StudyOptions, TuneSettings};

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
    #[arg(long, value_parser = xlt_cli::parse::seconds)]
    pub poll_interval: Option<f64>,
    /// Which provider runs the study.
    #[arg(long, default_value = "embedded", value_parser = xlt_cli::parse::provider(), help_heading = "Provider")]
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
    #[arg(long, default_value_t = 1, value_parser = xlt_cli::parse::at_least_one::<u32>)]
    pub epochs: u32,
    /// Batch size (study: 8).
    #[arg(long, default_value_t = 8, value_parser = xlt_cli::parse::at_least_one::<u32>)]
    pub batch_size: u32,
    /// Learning-rate multiplier (study: 0.4), for providers that take one (OpenAI,
    /// embedded); refused by those that take an absolute rate (Together, local).
    #[arg(long, conflicts_with = "learning_rate", value_parser = xlt_cli::parse::positive_number)]
    pub learning_rate_multiplier: Option<f64>,
    /// Absolute learning rate, for providers that take one (Together: default 1e-5; local:
    /// default 2e-4, what LoRA recipes use); refused by those that take a multiplier.
    #[arg(long, value_parser = xlt_cli::parse::positive_number)]
    pub learning_rate: Option<f64>,
    /// Fraction of the optimizer steps over which the learning rate warms up linearly
    /// before decaying linearly to zero, in [0, 1) (local, Together; default: the
    /// provider's: 0.03 for local, Together's own otherwise).
    #[arg(long, value_parser = xlt_cli::parse::warmup_ratio)]
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
    #[arg(long, default_value_t = 1, value_parser = xlt_cli::parse::at_least_one::<u32>)]
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
    #[arg(long, value_parser = xlt_cli::parse::at_least_one::<u32>)]
    pub max_requests_per_minute: Option<u32>,
    /// Client-side tokens-per-minute limit.
    #[arg(long, value_parser = xlt_cli::parse::at_least_one::<u32>)]
    pub max_tokens_per_minute: Option<u32>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8, value_parser = xlt_cli::parse::at_least_one::<usize>)]
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
    #[arg(long, default_value_t = 0.7, value_parser = xlt_cli::parse::fraction)]
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
