//! The study's orchestration over a [`Backend`]: the settings of a run, its fingerprint
//! (composed and checked before anything is read or discarded), the plan, fine-tuning,
//! evaluation and analysis, with progress through an [`Observer`] and cancellation through
//! a future the caller passes. What a command line does is a call into here.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use xlt_data::{Manifest, Prepared};
use xlt_grade::Protocol;
use xlt_provider::{
    Cached, ChatModel, FineTuneJob, FineTuneSpec, Hyperparameters, JobEvent, JobLedger, JobStatus,
    LearningRate, Limited, LoraSpec, Param, Progress, RateLimits, ResponseCache, Retry,
    RetryPolicy, WaitOptions,
};
use xlt_stats::{Analysis, AnalysisConfig};

use crate::atomic::write_atomic;
use crate::backend::{Backend, LoraSupport};
use crate::fingerprint::{Discard, FINGERPRINT_FILE, Fingerprint, FingerprintCheck, RunSettings};
use crate::run::{BatchOptions, DEFAULT_MAX_TOKENS, EvalOptions, FinetuneOptions, ModelsFile};
use crate::{Experiment, Plan, PlanInput, PriceTable, StudyError};

/// How often the events of jobs training on this machine are read.
const EVENT_POLL: Duration = Duration::from_secs(2);

/// What a run reports as it goes. Every method has a default that does nothing (and
/// [`Observer::confirm`] refuses paid work), so an observer implements only what it shows.
pub trait Observer: Send + Sync {
    /// A line of information (`measuring local training speed ...`).
    fn message(&self, _text: &str) {}
    /// The plan, once made.
    fn plan(&self, _plan: &Plan) {}
    /// Asked before paid work when the settings do not say `yes`: `Ok(())` to go on.
    ///
    /// # Errors
    /// [`StudyError::Refused`] (or any error) to stop before anything is spent.
    fn confirm(&self, _plan: &Plan) -> Result<(), StudyError> {
        Err(StudyError::Refused(
            "this run costs money; pass --yes to proceed without a prompt".to_owned(),
        ))
    }
    /// A fine-tuning job's state; `retried` is the run's retries so far.
    fn job(&self, _slice: &str, _job: &FineTuneJob, _retried: u64) {}
    /// A new event of a fine-tuning job that trains on this machine (a step with its loss
    /// and tokens per second, a resume), each once, oldest first, and only those written
    /// during this run (a resumed job's earlier steps are not replayed);
    /// [`crate::TrainingStep`] and [`crate::resumed_at`] read them.
    fn job_event(&self, _slice: &str, _event: &JobEvent) {}
    /// An evaluated model's progress.
    fn eval(&self, _label: &str, _progress: &Progress) {}
}

/// An [`Observer`] that shows nothing and refuses paid work.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;

impl Observer for Quiet {}

/// The settings every step shares.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyOptions {
    /// The experiment directory.
    pub out: PathBuf,
    /// The base model; `None`: the provider's default, or for [`Study::evaluate`] the one the
    /// experiment records.
    pub base_model: Option<String>,
    /// Seed of the split, the training runs and sampling.
    pub seed: u64,
    /// Discard the results of an earlier run with other settings.
    pub fresh: bool,
    /// Seconds between polls of a job, batch or endpoint (`None`: the provider's pace).
    pub poll_interval: Option<f64>,
}

impl StudyOptions {
    /// Options for `out` with the study's defaults (seed 42).
    pub fn new(out: impl Into<PathBuf>) -> StudyOptions {
        StudyOptions {
            out: out.into(),
            base_model: None,
            seed: 42,
            fresh: false,
            poll_interval: None,
        }
    }
}

/// LoRA settings given by the user; what is not given takes PEFT's recipe default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoraOptions {
    /// Rank r.
    pub rank: Option<u32>,
    /// Alpha (the update is scaled by alpha / r).
    pub alpha: Option<f64>,
    /// Dropout on the adapter's input while training, in [0, 1).
    pub dropout: Option<f64>,
    /// Modules adapted, by PEFT's names.
    pub targets: Option<Vec<String>>,
}

impl LoraOptions {
    fn given(&self) -> bool {
        self.rank.is_some()
            || self.alpha.is_some()
            || self.dropout.is_some()
            || self.targets.is_some()
    }
}

/// Fine-tuning settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TuneSettings {
    /// Slices to fine-tune; empty: every slice.
    pub train_slices: Vec<String>,
    /// Epochs (study: 1).
    pub epochs: u32,
    /// Batch size (study: 8).
    pub batch_size: u32,
    /// The learning rate; `None`: the provider's default.
    pub learning_rate: Option<LearningRate>,
    /// Warm-up fraction of the optimizer steps.
    pub warmup_ratio: Option<f64>,
    /// Batches summed before each optimizer step.
    pub gradient_accumulation_steps: Option<u32>,
    /// LoRA settings.
    pub lora: LoraOptions,
    /// A JSON price table file overriding the built-in one.
    pub prices: Option<PathBuf>,
    /// Proceed with paid work without asking.
    pub yes: bool,
    /// Submit again a job cancelled outside the run.
    pub resubmit_cancelled: bool,
    /// Fine-tunes of every slice, each with its own seed (issue #24): 1, the study's design,
    /// gives models named by their slice; N > 1 gives `<slice>#1` to `<slice>#N`
    /// ([`crate::replicate_jobs`], seeds by [`crate::replicate_seed`]).
    pub replicates: u32,
}

impl TuneSettings {
    /// Whether these settings are a baseline study (`train_slices` is `["none"]`): the base
    /// model alone on every test set, nothing fine-tuned.
    pub fn is_baseline(&self) -> bool {
        self.train_slices.len() == 1 && self.train_slices[0] == "none"
    }

    /// Refuses settings that contradict each other, before anything is written or spent:
    /// no fine-tune per slice (`--replicates 0`), or replicates of a baseline study, which
    /// fine-tunes nothing (`--replicates N --train-slices none`).
    ///
    /// # Errors
    /// [`StudyError::Refused`] naming the flags.
    pub fn check(&self) -> Result<(), StudyError> {
        if self.replicates < 1 {
            return Err(StudyError::Refused(
                "--replicates 0: every slice needs at least one fine-tune".to_owned(),
            ));
        }
        if self.replicates > 1 && self.is_baseline() {
            return Err(StudyError::Refused(format!(
                "--replicates {} with --train-slices none: a baseline study fine-tunes nothing, so there is nothing to replicate; drop --replicates, or name the slices to fine-tune with --train-slices",
                self.replicates
            )));
        }
        Ok(())
    }
}

impl Default for TuneSettings {
    fn default() -> Self {
        TuneSettings {
            train_slices: Vec::new(),
            epochs: 1,
            batch_size: 8,
            learning_rate: None,
            warmup_ratio: None,
            gradient_accumulation_steps: None,
            lora: LoraOptions::default(),
            prices: None,
            yes: false,
            resubmit_cancelled: false,
            replicates: 1,
        }
    }
}

/// Evaluation settings.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalSettings {
    /// How answers are graded.
    pub grader: Protocol,
    /// Through the provider's batch API.
    pub batch: bool,
    /// Output tokens per answer.
    pub max_tokens: u32,
    /// Client-side requests per minute (`None`: the provider's default).
    pub max_requests_per_minute: Option<u32>,
    /// Client-side tokens per minute.
    pub max_tokens_per_minute: Option<u32>,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// How answers are read; `None`: the provider's default
    /// ([`crate::Capabilities::default_scoring`]).
    pub scoring: Option<crate::Scoring>,
    /// Cyclic rotations of the options each question is scored under (1 to 4; letter
    /// scoring only).
    pub rotations: u32,
}

impl Default for EvalSettings {
    fn default() -> Self {
        EvalSettings {
            grader: Protocol::RegexThenLlm,
            batch: false,
            max_tokens: DEFAULT_MAX_TOKENS,
            max_requests_per_minute: None,
            max_tokens_per_minute: None,
            concurrency: 8,
            scoring: None,
            rotations: 1,
        }
    }
}

/// A study on one backend with one set of options: every step of it.
#[derive(Clone, Copy)]
pub struct Study<'a> {
    /// The provider.
    pub backend: &'a Backend,
    /// The shared settings.
    pub options: &'a StudyOptions,
    /// Where progress goes.
    pub observer: &'a dyn Observer,
}

/// What [`Study::reproduce`] did.
#[derive(Debug)]
pub struct Reproduced {
    /// The plan.
    pub plan: Plan,
    /// The models.
    pub models: ModelsFile,
    /// The analysis.
    pub analysis: Analysis,
    /// The analysis files written.
    pub files: Vec<String>,
}

fn io(path: &Path, e: impl std::fmt::Display) -> StudyError {
    StudyError::Io {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, StudyError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| StudyError::Invalid {
                what: path.display().to_string(),
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path, e)),
    }
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), StudyError> {
    let text = serde_json::to_string_pretty(value).expect("serializes") + "\n";
    write_atomic(path, text.as_bytes())
}

/// What an interrupted evaluation says after what interrupted it.
pub const EVALUATION_RESUMES: &str = "every answer received is kept (outcomes of finished \
    models, the response cache), and the same command resumes with the questions left";

/// Runs `work` unless `cancel` resolves first; then fails with [`StudyError::Interrupted`]
/// carrying what `cancel` said.
async fn cancellable<T>(
    work: impl Future<Output = Result<T, StudyError>>,
    cancel: impl Future<Output = String>,
) -> Result<T, StudyError> {
    // Cancellation first: a cancel that is already there wins over work that would finish
    // in the same poll.
    tokio::select! {
        biased;
        why = cancel => Err(StudyError::Interrupted(why)),
        r = work => r,
    }
}

impl<'a> Study<'a> {
    /// A study on `backend` with `options`, reporting to `observer`.
    pub fn new(
        backend: &'a Backend,
        options: &'a StudyOptions,
        observer: &'a dyn Observer,
    ) -> Study<'a> {
        Study {
            backend,
            options,
            observer,
        }
    }

    /// The base model: the options', else the provider's default.
    pub fn base_model(&self) -> String {
        self.options
            .base_model
            .clone()
            .unwrap_or_else(|| self.backend.profile.default_base_model.to_owned())
    }

    /// The hyperparameters of `tune` on this provider.
    pub fn hyperparameters(&self, tune: &TuneSettings) -> Hyperparameters {
        Hyperparameters {
            epochs: Param::Value(tune.epochs),
            batch_size: Param::Value(tune.batch_size),
            learning_rate: tune
                .learning_rate
                .unwrap_or(self.backend.profile.default_learning_rate),
            warmup_ratio: tune.warmup_ratio,
            gradient_accumulation_steps: tune.gradient_accumulation_steps,
        }
    }

    /// The LoRA settings of this run: PEFT's recipe defaults with the given ones over them,
    /// for a provider that always trains adapters, and for one that trains them when asked
    /// once a setting is given; `None` otherwise.
    ///
    /// # Errors
    /// [`StudyError::Refused`]: a setting for a provider that trains no adapters, or an
    /// invalid setting.
    pub fn lora(&self, tune: &TuneSettings) -> Result<Option<LoraSpec>, StudyError> {
        let given = tune.lora.given();
        match self.backend.profile.lora {
            LoraSupport::Always => {}
            LoraSupport::WhenGiven if given => {}
            LoraSupport::Never if given => {
                return Err(StudyError::Refused(format!(
                    "the {} provider trains no LoRA adapters: --lora-rank, --lora-alpha, --lora-dropout and --lora-targets apply to --provider local and together",
                    self.backend.name()
                )));
            }
            _ => return Ok(None),
        }
        let mut spec = LoraSpec::default();
        let o = &tune.lora;
        if let Some(r) = o.rank {
            spec.rank = r;
        }
        if let Some(a) = o.alpha {
            spec.alpha = a;
        }
        if let Some(d) = o.dropout {
            spec.dropout = d;
        }
        if let Some(t) = &o.targets {
            spec.target_modules = t.clone();
        }
        spec.validate()
            .map_err(|e| StudyError::Refused(format!("--lora-* options: {e}")))?;
        Ok(Some(spec))
    }

    /// Refuses a learning rate of the kind the provider does not take (a multiplier and an
    /// absolute rate do not convert).
    fn check_learning_rate(&self, tune: &TuneSettings) -> Result<(), StudyError> {
        let name = self.backend.name();
        match (
            tune.learning_rate,
            self.backend.profile.default_learning_rate,
        ) {
            (Some(LearningRate::Multiplier(m)), LearningRate::Absolute(default)) => {
                Err(StudyError::Refused(format!(
                    "the {name} provider takes an absolute learning rate (--learning-rate, default {default:e}), not a multiplier ({m}): the two do not convert (nothing was spent)"
                )))
            }
            (Some(LearningRate::Absolute(a)), LearningRate::Multiplier(default)) => {
                Err(StudyError::Refused(format!(
                    "the {name} provider takes a learning-rate multiplier (--learning-rate-multiplier, default {default}), not an absolute learning rate ({a:e}): the two do not convert (nothing was spent)"
                )))
            }
            _ => Ok(()),
        }
    }

    /// The fingerprint of this run over an experiment prepared as `manifest` with `files`.
    /// A step without fine-tuning (`tune`) or evaluation (`eval`) settings leaves their keys
    /// out; [`check_partial_fingerprint`] takes them from the recorded fingerprint.
    ///
    /// # Errors
    /// Refused LoRA settings.
    pub fn fingerprint(
        &self,
        tune: Option<&TuneSettings>,
        eval: Option<&EvalSettings>,
        manifest: &Manifest,
        files: &[(PathBuf, String)],
    ) -> Result<Fingerprint, StudyError> {
        let base = self.base_model();
        let slices = tune.map(|t| t.train_slices.clone()).unwrap_or_default();
        let lora = match tune {
            Some(t) => self.lora(t)?,
            None => None,
        };
        let grader = eval.map_or(Protocol::RegexThenLlm, |e| e.grader);
        let grader = serde_json::to_value(grader).expect("serializes");
        let settings = RunSettings {
            provider: self.backend.name(),
            base_model: &base,
            hyperparameters: tune
                .map_or_else(Hyperparameters::default, |t| self.hyperparameters(t)),
            lora: lora.as_ref(),
            train_slices: &slices,
            grader: grader.as_str().unwrap_or_default(),
            max_tokens: eval.map_or(DEFAULT_MAX_TOKENS, |e| e.max_tokens),
            temperature: EvalOptions::default().temperature,
        };
        let mut fp = Fingerprint::new(manifest, files, &settings);
        // The seed of training and sampling (the split's seed is the manifest's), so that
        // `finetune --seed 9` cannot retrain silently.
        fp.settings
            .insert("run_seed".to_owned(), self.options.seed.to_string());
        // Fine-tunes per slice (issue #24), recorded by every step that fine-tunes, so that
        // a rerun with another N stops naming `replicates`.
        if let Some(t) = tune {
            fp.settings
                .insert("replicates".to_owned(), t.replicates.to_string());
        }
        if tune.is_none() {
            for k in ["hyperparameters", "train_slices", "replicates"] {
                fp.settings.remove(k);
            }
        }
        // Letter scoring and its rotations (issue #22); generation leaves the keys out, so
        // the fingerprints of generated studies are those of earlier versions.
        if let Some(e) = eval
            && self.scoring(e) == crate::Scoring::Letters
        {
            fp.settings
                .insert("scoring".to_owned(), crate::Scoring::Letters.to_string());
            fp.settings
                .insert("rotations".to_owned(), e.rotations.clamp(1, 4).to_string());
            // Letters read no text and sample nothing: the grader, the output-token limit
            // and the temperature do not touch their results, so changing them must not
            // refuse (or discard) a letter-scored directory.
            for k in ["grader", "max_tokens", "temperature"] {
                fp.settings.remove(k);
            }
        }
        if eval.is_none() {
            for k in EVAL_KEYS {
                fp.settings.remove(k);
            }
        }
        // Another dtype or device computes other numbers (training and answers alike). A
        // directory recorded before this key existed takes it on its next run.
        if let Some(n) = numerics(self.backend) {
            fp.settings.insert("numerics".to_owned(), n);
        }
        Ok(fp)
    }

    /// How `eval` reads answers on this backend: as given, else the provider's default.
    pub fn scoring(&self, eval: &EvalSettings) -> crate::Scoring {
        eval.scoring.unwrap_or(self.backend.profile.default_scoring)
    }

    /// Refuses evaluation settings this backend cannot run, before anything is paid: letter
    /// scoring without log-probabilities or through a batch API, rotations without letters.
    ///
    /// # Errors
    /// [`StudyError::Refused`] naming the setting.
    pub fn check_eval(&self, eval: &EvalSettings) -> Result<(), StudyError> {
        let scoring = self.scoring(eval);
        if !(1..=4).contains(&eval.rotations) {
            return Err(StudyError::Refused(format!(
                "--rotations {} is not 1 to 4 (4: every cyclic rotation of the options)",
                eval.rotations
            )));
        }
        if scoring == crate::Scoring::Generate && eval.rotations > 1 {
            return Err(StudyError::Refused(
                "--rotations needs --scoring letters (a rotation is scored by the letters' probabilities)"
                    .to_owned(),
            ));
        }
        if scoring == crate::Scoring::Letters {
            if eval.batch {
                return Err(StudyError::Refused(
                    "--scoring letters does not run through --batch; evaluate without --batch"
                        .to_owned(),
                ));
            }
            if !self.backend.chat.capabilities().logprobs {
                return Err(StudyError::Refused(format!(
                    "the {} provider gives no log-probabilities, so it cannot score letters; \
                     use --scoring generate",
                    self.backend.name()
                )));
            }
        }
        Ok(())
    }

    /// Composes this step's fingerprint over the prepared experiment `exp` and checks it
    /// against the recorded one (see [`check_partial_fingerprint`]) before anything of the
    /// experiment's results is read. Without fine-tuning settings (an evaluation), the base
    /// model, unless given, is the recorded one, and an evaluation on a backend that
    /// evaluates another provider's models as they are keeps the recorded provider.
    ///
    /// # Errors
    /// [`StudyError::Changed`] naming what differs; unreadable files.
    pub fn check_fingerprint(
        &self,
        tune: Option<&TuneSettings>,
        eval: Option<&EvalSettings>,
        exp: &Experiment,
    ) -> Result<Fingerprint, StudyError> {
        let mut files = Vec::new();
        for name in exp.slice_names() {
            for dir in ["finetune", "eval"] {
                let rel = PathBuf::from(format!("{dir}/{name}.jsonl"));
                let path = exp.dir.join(&rel);
                files.push((
                    rel,
                    std::fs::read_to_string(&path).map_err(|e| io(&path, e))?,
                ));
            }
        }
        let rel = PathBuf::from("manifest.json");
        let path = exp.dir.join(&rel);
        files.push((
            rel,
            std::fs::read_to_string(&path).map_err(|e| io(&path, e))?,
        ));
        let mut fp = self.fingerprint(tune, eval, &exp.manifest, &files)?;
        let recorded: Option<Fingerprint> = read_json(&exp.dir.join(FINGERPRINT_FILE))?;
        if tune.is_none() {
            if let Some(made_by) = recorded.as_ref().and_then(|r| r.settings.get("provider"))
                && self
                    .backend
                    .profile
                    .evaluates_models_of
                    .contains(&made_by.as_str())
            {
                fp.settings.insert("provider".to_owned(), made_by.clone());
            }
            if self.options.base_model.is_none() {
                // The base model the experiment records, not the provider's default.
                let recorded_base = recorded
                    .as_ref()
                    .and_then(|r| r.settings.get("base_model").cloned());
                match recorded_base {
                    Some(b) => {
                        fp.settings.insert("base_model".to_owned(), b);
                    }
                    None => {
                        fp.settings.remove("base_model");
                    }
                }
            }
        }
        check_partial_fingerprint(&exp.dir, &mut fp, self.options.fresh, Discard::Results)?;
        Ok(fp)
    }

    /// With a provider that trains on this machine, loads `model` now, so that a model that
    /// cannot be loaded stops the run, naming it, before anything is written.
    ///
    /// # Errors
    /// The model cannot be loaded.
    pub async fn load_model(&self, model: &str) -> Result<(), StudyError> {
        if let Some(m) = &self.backend.machine {
            m.load(model).await?;
        }
        Ok(())
    }

    fn poll(&self, default: WaitOptions) -> WaitOptions {
        match self.options.poll_interval {
            Some(s) if s >= 0.0 => WaitOptions {
                initial: Duration::from_secs_f64(s),
                max: Duration::from_secs_f64(s),
                factor: 1.0,
                ..default
            },
            _ => default,
        }
    }

    fn ledger(&self, tune: &TuneSettings, exp: &Experiment) -> Result<JobLedger, StudyError> {
        Ok(
            JobLedger::open(exp.dir.join("ledger.json"), self.backend.name())?
                .resubmit_cancelled(tune.resubmit_cancelled),
        )
    }

    fn finetune_options(&self, tune: &TuneSettings, plan: &Plan) -> FinetuneOptions {
        FinetuneOptions {
            base_model: plan.base_model.clone(),
            hyperparameters: self.hyperparameters(tune),
            lora: self.lora(tune).ok().flatten(),
            seed: Some(self.options.seed),
            wait: if self.backend.profile.instant_jobs {
                WaitOptions {
                    initial: Duration::ZERO,
                    max: Duration::ZERO,
                    factor: 1.0,
                    timeout: Duration::from_secs(600),
                }
            } else {
                self.poll(WaitOptions::default())
            },
        }
    }

    /// Prices: from the settings' file, else zero for a free provider, else the known table
    /// for the model, else unknown.
    fn prices(&self, tune: &TuneSettings, model: &str) -> Result<Option<PriceTable>, StudyError> {
        if let Some(f) = &tune.prices {
            let text = std::fs::read_to_string(f).map_err(|e| io(f, e))?;
            return Ok(Some(serde_json::from_str(&text).map_err(|e| io(f, e))?));
        }
        if self.backend.profile.free {
            return Ok(Some(PriceTable::zero()));
        }
        Ok(PriceTable::known(model))
    }

    /// Plans, shows (through the observer) and confirms; returns the plan, also written to
    /// `plan.json`. Where the provider prices jobs itself, the training files are uploaded
    /// (free) and its estimate replaces the token-based one; where it trains on this
    /// machine, a few steps are timed (or an earlier identical plan's measurement reused).
    /// Without `eval`, the evaluation part assumes the defaults.
    ///
    /// # Errors
    /// Refused settings, a base model the provider cannot serve as asked, provider and
    /// storage errors, a refused confirmation; nothing is spent then.
    pub async fn plan(
        &self,
        tune: &TuneSettings,
        eval: Option<&EvalSettings>,
        exp: &Experiment,
    ) -> Result<Plan, StudyError> {
        let backend = self.backend;
        let base = self.base_model();
        tune.check()?;
        self.check_learning_rate(tune)?;
        let hyperparameters = self.hyperparameters(tune);
        // Refuses LoRA options and evaluation settings the provider cannot take before
        // anything is spent.
        self.lora(tune)?;
        if let Some(e) = eval {
            self.check_eval(e)?;
        }
        let jobs =
            crate::replicate_jobs(&exp.training_slices(&tune.train_slices)?, tune.replicates);
        let billed_server = backend
            .server
            .as_ref()
            .filter(|_| backend.profile.billed_serving);
        let mut plan = Plan::new(
            exp,
            &PlanInput {
                provider: backend.name(),
                base_model: &base,
                jobs: &jobs,
                hyperparameters,
                max_tokens: eval.map_or(DEFAULT_MAX_TOKENS, |e| e.max_tokens),
                grader: eval.map_or(Protocol::RegexThenLlm, |e| e.grader),
                scoring: eval.map_or(self.backend.profile.default_scoring, |e| self.scoring(e)),
                rotations: eval.map_or(1, |e| e.rotations),
                prices: self.prices(tune, &base)?,
                // About ten minutes to start an endpoint, then the evaluation at the rate.
                serving: billed_server.map(|_| {
                    (
                        10.0,
                        f64::from(
                            eval.and_then(|e| e.max_requests_per_minute)
                                .or(backend.profile.default_rpm)
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
            return Err(StudyError::Refused(format!(
                "the base model {base} is not served serverless by {}: evaluating it would need a dedicated endpoint, which this run neither starts nor prices; choose a serverless base model (nothing was spent)",
                backend.name()
            )));
        }
        if backend.tuner.offers_price_estimate() {
            let ledger = self.ledger(tune, exp)?;
            let estimate = crate::provider_training_estimate(
                exp,
                &plan.jobs,
                backend.tuner.as_ref(),
                &ledger,
                &self.finetune_options(tune, &plan),
            )
            .await?;
            if let Some(usd) = estimate {
                plan = plan.with_provider_training_estimate(usd);
            }
        }
        if let Some(machine) = &backend.machine
            && !plan.jobs.is_empty()
        {
            let device = machine.device();
            let estimate = match earlier_machine_training(exp, &plan, &device) {
                Some(t) => {
                    self.observer.message(
                        "training speed as measured by an earlier run of this experiment (plan.json)",
                    );
                    t
                }
                None => {
                    let spec = FineTuneSpec {
                        base_model: base.clone(),
                        training_file: String::new(),
                        validation_file: None,
                        hyperparameters,
                        suffix: None,
                        seed: Some(self.options.seed),
                        lora: self.lora(tune)?,
                    };
                    self.observer.message(&format!(
                        "measuring local training speed (a few LoRA steps of {base} on {device})..."
                    ));
                    let files = plan.jobs.iter().map(|j| exp.finetune_file(j)).collect();
                    machine.calibrate(spec, files).await?
                }
            };
            plan = plan.with_machine_training(estimate);
        }
        self.observer.plan(&plan);
        write_json(&exp.dir.join("plan.json"), &plan)?;
        if plan.is_paid() && !tune.yes {
            self.observer.confirm(&plan)?;
        }
        Ok(plan)
    }

    /// Fine-tunes the plan's slices through the job ledger; writes `models.json`.
    ///
    /// # Errors
    /// The first failed job, provider and storage errors.
    pub async fn finetune(
        &self,
        tune: &TuneSettings,
        exp: &Experiment,
        plan: &Plan,
    ) -> Result<ModelsFile, StudyError> {
        let ledger = self.ledger(tune, exp)?;
        let retries = &self.backend.retries;
        // Jobs by slice, so that the events of those training on this machine are followed.
        let jobs: std::sync::Mutex<Vec<(String, String, JobStatus)>> = Default::default();
        let options = self.finetune_options(tune, plan);
        let on_job = |slice: &str, job: &FineTuneJob| {
            let mut jobs = jobs.lock().unwrap_or_else(|e| e.into_inner());
            match jobs.iter_mut().find(|(s, _, _)| s == slice) {
                Some(entry) => *entry = (slice.to_owned(), job.id.clone(), job.status),
                None => jobs.push((slice.to_owned(), job.id.clone(), job.status)),
            }
            drop(jobs);
            self.observer.job(slice, job, retries.total());
        };
        // Events are read from this machine's disk for free; a remote provider's would cost
        // a request each, so they are not followed. The events a job already had before this
        // run (the steps of a run that was killed, a finished job's whole history) are not
        // shown again: a resumed job shows its resume and then only its new steps. Jobs are
        // resumed from the ledger's polls below, after this count.
        let mut seen = std::collections::HashMap::new();
        if self.backend.profile.on_device {
            for job in ledger.jobs().await {
                if job.job_id.is_empty() {
                    continue;
                }
                if let Ok(events) = self.backend.tuner.list_events(&job.job_id).await {
                    seen.insert(job.job_id, events.len());
                }
            }
        }
        let work = crate::finetune(
            exp,
            &plan.jobs,
            self.backend.name(),
            self.backend.tuner.as_ref(),
            &ledger,
            &options,
            &on_job,
        );
        if !self.backend.profile.on_device {
            return work.await;
        }
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                result = &mut work => {
                    self.follow_events(&jobs, &mut seen, true).await;
                    return result;
                }
                () = tokio::time::sleep(EVENT_POLL) => {
                    self.follow_events(&jobs, &mut seen, false).await;
                }
            }
        }
    }

    /// Passes each job's events not yet seen (`seen`: how many of each job's were, those
    /// from before this run included) to the observer: of the jobs training, or of every
    /// job (`all`, at the end).
    async fn follow_events(
        &self,
        jobs: &std::sync::Mutex<Vec<(String, String, JobStatus)>>,
        seen: &mut std::collections::HashMap<String, usize>,
        all: bool,
    ) {
        let jobs = jobs.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (slice, id, status) in jobs {
            if !(all || status == JobStatus::Running) {
                continue;
            }
            let Ok(events) = self.backend.tuner.list_events(&id).await else {
                continue;
            };
            let from = seen.entry(id).or_insert(0);
            for event in events.iter().skip(*from) {
                self.observer.job_event(&slice, event);
            }
            *from = (*from).max(events.len());
        }
    }

    /// The chat stack, outermost first: cache (`<out>/cache/<provider>`), retry (the run's
    /// counter), limiter (the settings' rates, else the provider's default).
    pub fn chat_stack(
        &self,
        eval: &EvalSettings,
        dir: &Path,
    ) -> (Arc<dyn ChatModel>, Arc<std::sync::atomic::AtomicU64>) {
        let limited = Limited::new(
            self.backend.chat.clone(),
            RateLimits {
                requests_per_minute: eval
                    .max_requests_per_minute
                    .or(self.backend.profile.default_rpm),
                tokens_per_minute: eval.max_tokens_per_minute,
            },
        );
        let retry = Retry::with_counter(
            limited,
            RetryPolicy::default(),
            self.backend.retries.clone(),
        );
        let retries = retry.retries();
        let cached = Cached::new(retry, cache_dir(self.backend, dir));
        (Arc::new(cached), retries)
    }

    /// Evaluates every model of `models` on every test set; writes `outcomes/`. A run
    /// cancelled (`cancel` resolves) stops every endpoint it started and fails with
    /// [`StudyError::Interrupted`].
    ///
    /// # Errors
    /// Failed requests after retries, provider and storage errors, cancellation.
    pub async fn evaluate(
        &self,
        eval: &EvalSettings,
        exp: &Experiment,
        models: &ModelsFile,
        cancel: impl Future<Output = String>,
    ) -> Result<(), StudyError> {
        let backend = self.backend;
        let (chat, retries) = self.chat_stack(eval, &exp.dir);
        let judge = (eval.grader != Protocol::Regex).then(|| {
            xlt_grade::LlmJudge::new(chat.clone(), models.base_model.clone())
                .with_max_tokens(eval.max_tokens)
        });
        let grader =
            xlt_grade::Grader::new(eval.grader, Arc::new(xlt_grade::RuleExtractor), judge)?;
        self.check_eval(eval)?;
        let opts = EvalOptions {
            concurrency: eval.concurrency,
            scoring: self.scoring(eval),
            rotations: eval.rotations,
            seed: Some(self.options.seed),
            retries: Some(retries),
            max_tokens: eval.max_tokens,
            ..EvalOptions::default()
        };
        let on_progress = |label: &str, p: &Progress| self.observer.eval(label, p);
        if eval.batch {
            let runner = backend.batch.as_ref().ok_or_else(|| {
                StudyError::Refused(format!(
                    "the {} provider has no batch API; run without --batch",
                    backend.name()
                ))
            })?;
            let cache = ResponseCache::new(cache_dir(backend, &exp.dir));
            let batch_options = BatchOptions {
                poll: self.poll(BatchOptions::default().poll),
                ..BatchOptions::default()
            };
            let batch = crate::evaluate_batch(
                exp,
                models,
                runner.as_ref(),
                &cache,
                &grader,
                &opts,
                &batch_options,
                &on_progress,
            );
            return cancellable(batch, cancel).await;
        }
        let serving = backend.server.as_ref().map(|s| crate::Serving {
            server: s.as_ref(),
            wait: self.poll(WaitOptions {
                initial: Duration::from_secs(10),
                max: Duration::from_secs(60),
                factor: 1.5,
                timeout: Duration::from_secs(3600),
            }),
        });
        let run = crate::evaluate(
            exp,
            models,
            chat,
            &grader,
            &opts,
            serving.as_ref(),
            &on_progress,
        );
        match cancellable(run, cancel).await {
            Err(StudyError::Interrupted(why)) => {
                // The evaluation was dropped mid-way, perhaps inside the request creating an
                // endpoint: stop every endpoint it asked for.
                if let Some(s) = &backend.server {
                    let n = crate::stop_started_endpoints(exp, s.as_ref()).await?;
                    self.observer
                        .message(&format!("{why}; stopped {n} endpoint(s)"));
                }
                Err(StudyError::Interrupted(format!(
                    "{why} while evaluating: {EVALUATION_RESUMES}"
                )))
            }
            r => r,
        }
    }

    /// The `finetune` step on the experiment in `options.out`: fingerprint checked (and put
    /// back as it was if the run is refused before its first job), plan, confirmation,
    /// fine-tuning.
    ///
    /// # Errors
    /// As [`Study::plan`] and [`Study::finetune`]; [`StudyError::Interrupted`].
    pub async fn run_finetune(
        &self,
        tune: &TuneSettings,
        cancel: impl Future<Output = String>,
    ) -> Result<ModelsFile, StudyError> {
        tune.check()?;
        let exp = Experiment::open(&self.options.out)?;
        // A local model that cannot be loaded stops here, before anything is written.
        self.load_model(&self.base_model()).await?;
        let recorded = exp.dir.join(FINGERPRINT_FILE);
        let before = std::fs::read(&recorded).ok();
        self.check_fingerprint(Some(tune), None, &exp)?;
        let plan = match self.plan(tune, None, &exp).await {
            Ok(plan) => plan,
            Err(e) => {
                restore(&recorded, before.as_deref())?;
                return Err(e);
            }
        };
        cancellable(self.finetune(tune, &exp, &plan), cancel)
            .await
            .map_err(|e| self.interrupted_training(e))
    }

    /// An interruption of fine-tuning, said in full: jobs training on this machine are
    /// stopped and marked interrupted ([`crate::Machine::interrupt`]), and the message
    /// names them and how to go on. Any other error is returned as it is.
    fn interrupted_training(&self, e: StudyError) -> StudyError {
        let StudyError::Interrupted(why) = e else {
            return e;
        };
        let jobs = self
            .backend
            .machine
            .as_ref()
            .map(|m| m.interrupt())
            .unwrap_or_default();
        let what = if jobs.is_empty() {
            "while fine-tuning; jobs at the provider go on, and a rerun of the same command \
             waits for them"
                .to_owned()
        } else {
            format!(
                "while fine-tuning: {}; run the same command again to resume (from the checkpoint where there is one)",
                jobs.join("; ")
            )
        };
        StudyError::Interrupted(format!("{why} {what}"))
    }

    /// The `evaluate` step on the experiment in `options.out`. The fingerprint is composed
    /// and checked **before** `models.json` is read, so that a refused run reads nothing and
    /// a discarded (`fresh`) one cannot evaluate the models it discarded; the base model is
    /// the recorded one unless given, and `models.json` must agree with the fingerprint.
    ///
    /// # Errors
    /// [`StudyError::Changed`]; no `models.json` (run `finetune` first); a `models.json`
    /// whose base model is not the fingerprint's; as [`Study::evaluate`].
    pub async fn run_evaluate(
        &self,
        eval: &EvalSettings,
        cancel: impl Future<Output = String>,
    ) -> Result<ModelsFile, StudyError> {
        let exp = Experiment::open(&self.options.out)?;
        let recorded = exp.dir.join(FINGERPRINT_FILE);
        let before = std::fs::read(&recorded).ok();
        if !exp.dir.join("models.json").exists() {
            // Before anything is written: `evaluate` before `finetune` leaves the directory.
            ModelsFile::read(&exp.dir)?;
        }
        // `evaluate` evaluates the models fine-tuned from the recorded base model: another
        // one given is refused before the fingerprint check, whose discard (`fresh`) would
        // otherwise remove the fine-tuned models and their ledger for a run that cannot use
        // them.
        if let Some(given) = &self.options.base_model {
            let models = ModelsFile::read(&exp.dir)?;
            if *given != models.base_model {
                return Err(StudyError::Refused(format!(
                    "{}: its models were fine-tuned from {}; evaluate takes that base model, not {given} (to study another base model, fine-tune it into another --out)",
                    exp.dir.display(),
                    models.base_model
                )));
            }
        }
        let fp = self.check_fingerprint(None, Some(eval), &exp)?;
        let models = ModelsFile::read(&exp.dir)?;
        if let Some(base) = fp.settings.get("base_model")
            && *base != models.base_model
        {
            return Err(StudyError::Refused(format!(
                "{}: models.json records the base model {}, the fingerprint {base}; fine-tune again (finetune --fresh) before evaluating",
                exp.dir.display(),
                models.base_model
            )));
        }
        // A local model that cannot be loaded stops here, before anything is evaluated.
        if let Err(e) = self.load_model(&models.base_model).await {
            restore(&recorded, before.as_deref())?;
            return Err(e);
        }
        self.evaluate(eval, &exp, &models, cancel).await?;
        Ok(models)
    }

    /// The whole study on `prepared`: the fingerprint checked before anything is written
    /// (after `prepare` or `finetune` alone, the missing settings are recorded and the rest
    /// compared), the prepared files written, plan, confirmation, fine-tuning, evaluation,
    /// analysis and `run.json`. `cancel` stops it at any point (endpoints it started are
    /// stopped). The observer gets the prepared data's table ([`Prepared::summary`]) and
    /// the plan when something is left to do; a rerun of a finished study gets one line
    /// (`nothing left to do: ...`) instead, and the analysis is written again.
    ///
    /// # Errors
    /// As the steps; [`StudyError::Interrupted`].
    pub async fn reproduce(
        &self,
        prepared: &Prepared,
        tune: &TuneSettings,
        eval: &EvalSettings,
        cancel: impl Future<Output = String>,
    ) -> Result<Reproduced, StudyError> {
        let out = &self.options.out;
        // Whether `out` is new: a run that fails before its first paid call removes what it
        // wrote there, leaving the directory as it found it.
        let was_new = std::fs::read_dir(out).map_or(true, |mut d| d.next().is_none());
        crate::memory::reset_peak();
        let planned = self.prepare_and_plan(prepared, tune, eval).await;
        crate::memory::log_peak("load and plan (calibration)");
        let (exp, plan, fingerprint) = match planned {
            Ok(p) => p,
            Err(e) => {
                if was_new {
                    let _ = std::fs::remove_dir_all(out);
                }
                return Err(e);
            }
        };
        let models = match finished(&exp, &plan)? {
            Some(models) => {
                self.observer.message(&format!(
                    "nothing left to do: every job and outcome in {} is complete; the analysis is written again",
                    out.display()
                ));
                models
            }
            None => {
                let mut cancel = std::pin::pin!(cancel);
                crate::memory::reset_peak();
                let models = cancellable(self.finetune(tune, &exp, &plan), cancel.as_mut())
                    .await
                    .map_err(|e| self.interrupted_training(e))?;
                crate::memory::log_peak("fine-tuning");
                self.evaluate(eval, &exp, &models, cancel).await?;
                crate::memory::log_peak("evaluation");
                models
            }
        };
        let config = analysis_config(out)?;
        let analysis = crate::analyze_outcomes(&out.join("outcomes"), &config)?;
        let files = crate::write_analysis(&analysis, out)?;
        let run = serde_json::json!({
            "provider": self.backend.name(),
            "base_model": plan.base_model,
            "fine_tuned": models.fine_tuned.len(),
            "replicates": tune.replicates,
            "grader": eval.grader,
            "scoring": self.scoring(eval),
            "rotations": eval.rotations,
            "departures_from_study": plan.departures,
            "retries": {
                "total": self.backend.retries.total(),
                "by_operation": self.backend.retries.by_operation(),
            },
            "fingerprint": fingerprint,
        });
        write_json(&out.join("run.json"), &run)?;
        Ok(Reproduced {
            plan,
            models,
            analysis,
            files,
        })
    }

    /// [`Study::reproduce`] up to its confirmed plan: nothing is spent before it returns.
    /// The prepared data's table ([`Prepared::summary`]) and the plan go to the observer
    /// when something is left to do; a finished study shows neither (its caller says in
    /// one line that nothing is left).
    async fn prepare_and_plan(
        &self,
        prepared: &Prepared,
        tune: &TuneSettings,
        eval: &EvalSettings,
    ) -> Result<(Experiment, Plan, Fingerprint), StudyError> {
        let out = &self.options.out;
        tune.check()?;
        // A local model that cannot be loaded stops here, before anything is written.
        self.load_model(&self.base_model()).await?;
        let mut fingerprint =
            self.fingerprint(Some(tune), Some(eval), &prepared.manifest, prepared.files())?;
        let check = check_partial_fingerprint(
            out,
            &mut fingerprint,
            self.options.fresh,
            Discard::ResultsAndPreparedFiles,
        )?;
        prepared.write_to(out)?;
        let exp = Experiment::open(out)?;
        if check == FingerprintCheck::Resume
            && let Some(plan) = read_json::<Plan>(&exp.dir.join("plan.json"))?
            && exp.dir.join("run.json").exists()
            && finished(&exp, &plan)?.is_some()
        {
            // A finished study: no table or plan to show again, nothing to measure or
            // confirm.
            return Ok((exp, plan, fingerprint));
        }
        self.observer.message(prepared.summary().trim_end());
        let plan = self.plan(tune, Some(eval), &exp).await?;
        Ok((exp, plan, fingerprint))
    }
}

/// The models of a finished run of `plan` (every job's model in `models.json`, every
/// model's outcomes written), or `None` when something is left to do.
fn finished(exp: &Experiment, plan: &Plan) -> Result<Option<ModelsFile>, StudyError> {
    let Some(models) = read_json::<ModelsFile>(&exp.dir.join("models.json"))? else {
        return Ok(None);
    };
    let tuned = plan.jobs.iter().all(|j| models.fine_tuned.contains_key(j));
    let evaluated = crate::labels(&models).iter().all(|(label, _)| {
        exp.dir
            .join("outcomes")
            .join(format!("{label}.jsonl"))
            .is_file()
    });
    Ok((tuned && evaluated && models.base_model == plan.base_model).then_some(models))
}

/// The response cache of a provider, `<out>/cache/<provider>`: chat and batch share it. A
/// machine that computes in other numbers than the default ([`crate::Machine::numerics`],
/// [`crate::DEFAULT_NUMERICS`]) has a cache of its own, `<out>/cache/<provider>-<numerics>`
/// (`local-bf16-on-cpu`): the cache survives `--fresh`, and a bf16 run must not read an f32
/// run's answers.
pub fn cache_dir(backend: &Backend, out: &Path) -> PathBuf {
    let name = match numerics(backend) {
        None => backend.name().to_owned(),
        Some(n) if n == crate::backend::DEFAULT_NUMERICS => backend.name().to_owned(),
        Some(n) => {
            let slug: Vec<String> = n
                .to_lowercase()
                .split(|c: char| !c.is_ascii_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(str::to_owned)
                .collect();
            format!("{}-{}", backend.name(), slug.join("-"))
        }
    };
    out.join("cache").join(name)
}

/// The backend's machine's numerics ([`crate::Machine::numerics`]).
fn numerics(backend: &Backend) -> Option<String> {
    backend.machine.as_ref().and_then(|m| m.numerics())
}

/// Puts `path` back as it was: `before`'s bytes (written whole, then renamed), or no file.
fn restore(path: &Path, before: Option<&[u8]>) -> Result<(), StudyError> {
    match before {
        Some(bytes) => write_atomic(path, bytes)?,
        None => match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(path, e)),
            _ => {}
        },
    }
    Ok(())
}

/// The training estimate of this experiment's earlier plan (`plan.json`), when that plan is
/// this one in every other respect and was measured on the same device.
fn earlier_machine_training(
    exp: &Experiment,
    plan: &Plan,
    device: &str,
) -> Option<crate::MachineTraining> {
    let text = std::fs::read_to_string(exp.dir.join("plan.json")).ok()?;
    let mut earlier: Plan = serde_json::from_str(&text).ok()?;
    let training = earlier.machine_training.take()?;
    // The earlier plan's token count is the tokenizer's; this one's is still the
    // character-based estimate, the same for the same files.
    earlier.training_tokens_per_epoch = plan.training_tokens_per_epoch;
    (earlier == *plan && training.device == device).then_some(training)
}

/// `prepare` into `out`: stops unless `out` is new or records the same prepared data
/// (`fresh`: discards the old prepared files and results first), then writes the files.
///
/// # Errors
/// [`StudyError::Changed`]; storage errors.
pub fn write_prepared(out: &Path, prepared: &Prepared, fresh: bool) -> Result<(), StudyError> {
    let mut fp = Fingerprint::of_prepared(&prepared.manifest, prepared.files());
    check_partial_fingerprint(out, &mut fp, fresh, Discard::ResultsAndPreparedFiles)?;
    prepared.write_to(out)?;
    Ok(())
}

/// Compares the fingerprint of a step that knows only part of the settings (`prepare`,
/// `finetune`, `evaluate`; `reproduce` after one of them) with the one recorded in `dir`,
/// as [`crate::check_fingerprint`] does, comparing only what both know: the keys `fp`
/// lacks are taken from the recorded fingerprint, and the keys the recorded one lacks are
/// added to it, but only once the shared keys agree, so that a refused run leaves `dir` as
/// it was. After a discard (`fresh`), only the step's own keys are recorded.
///
/// The evaluation's keys ([`EVAL_KEYS`]) are compared as a whole when both fingerprints
/// have some: which of them a fingerprint has says how answers were read (letter scoring
/// has `scoring` and `rotations`, generation `grader`, `max_tokens` and `temperature`), so
/// one is never taken from, or added to, the other's. A letter-scored fingerprint of an
/// earlier version, which also recorded the grader, output-token limit and temperature that
/// letters do not use, is rewritten without them.
///
/// # Errors
/// As [`crate::check_fingerprint`]; an unreadable recorded fingerprint.
pub fn check_partial_fingerprint(
    dir: &Path,
    fp: &mut Fingerprint,
    fresh: bool,
    discard: Discard,
) -> Result<FingerprintCheck, StudyError> {
    let path = dir.join(FINGERPRINT_FILE);
    let Some(mut recorded) = read_json::<Fingerprint>(&path)? else {
        return crate::check_fingerprint(dir, fp, fresh, discard);
    };
    let own = fp.clone();
    let has_eval = |f: &Fingerprint| EVAL_KEYS.iter().any(|k| f.settings.contains_key(*k));
    let whole_eval = has_eval(&own) && has_eval(&recorded);
    let letters =
        |f: &Fingerprint| f.settings.get("scoring").map(String::as_str) == Some("letters");
    let mut pruned = false;
    if whole_eval && letters(&own) && letters(&recorded) {
        for k in ["grader", "max_tokens", "temperature"] {
            pruned |= recorded.settings.remove(k).is_some();
        }
    }
    let is_eval = |k: &str| whole_eval && EVAL_KEYS.contains(&k);
    for (k, v) in &recorded.settings {
        if !is_eval(k) {
            fp.settings.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    let new_keys: Vec<(String, String)> = fp
        .settings
        .iter()
        .filter(|(k, _)| !recorded.settings.contains_key(*k) && !is_eval(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let agree = recorded
        .settings
        .iter()
        .all(|(k, v)| fp.settings.get(k) == Some(v))
        && fp
            .settings
            .iter()
            .filter(|(k, _)| is_eval(k))
            .all(|(k, v)| recorded.settings.get(k) == Some(v));
    if agree && (!new_keys.is_empty() || pruned) {
        recorded.settings.extend(new_keys);
        crate::fingerprint::write_fingerprint(dir, &recorded, true)?;
    } else if !agree && !fresh {
        // Name only what changed, not what was never recorded.
        for (k, _) in &new_keys {
            fp.settings.remove(k);
        }
    }
    let check = crate::check_fingerprint(dir, fp, fresh, discard)?;
    if check == FingerprintCheck::Discarded {
        crate::fingerprint::write_fingerprint(dir, &own, true)?;
        *fp = own;
    }
    Ok(check)
}

/// The fingerprint keys of how answers were read: generation's `grader`, `max_tokens` and
/// `temperature`, letter scoring's `scoring` and `rotations`
/// ([`check_partial_fingerprint`] compares them as a whole).
pub const EVAL_KEYS: [&str; 5] = [
    "grader",
    "max_tokens",
    "temperature",
    "scoring",
    "rotations",
];

/// The setting an analysis records in its directory's fingerprint: what it analyzed.
pub const ANALYZED_KEY: &str = "analyzed";

/// Where an analysis of the outcomes in `dir` goes when no directory is given: the
/// experiment that holds them (`<exp>/outcomes` -> `<exp>`, an experiment being a directory
/// with `fingerprint.json` or `manifest.json`); `None` for any other directory, so that no
/// analysis is written into another experiment or beside loose files by default.
pub fn default_analysis_dir(outcomes: &Path) -> Option<PathBuf> {
    let parent = match (outcomes.file_name(), outcomes.parent()) {
        (Some(name), Some(p)) if name == "outcomes" => {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        }
        _ => return None,
    };
    [FINGERPRINT_FILE, "manifest.json"]
        .iter()
        .any(|f| parent.join(f).is_file())
        .then(|| parent.to_owned())
}

/// Checks that an analysis of `input` (an outcomes directory or a table file) may be
/// written into `out`, before anything is read or written: a directory that holds an
/// experiment (a fingerprint with run settings, or a run's results) takes only the analysis
/// of its own `outcomes/`, even with `fresh`; a directory that holds only an analysis takes
/// the analysis of what it recorded as analyzed before, or with `fresh` another one, which
/// replaces the analysis files (`report.md`, `summary.json`, `grid.csv`, `*.svg`) and
/// nothing else. `analyze --fresh` never removes another command's outputs.
///
/// # Errors
/// [`StudyError::Refused`] for another analysis into an experiment (with or without `fresh`:
/// its message says to write to another `--out`, never to pass `--fresh`);
/// [`StudyError::Changed`] naming what an analysis directory holds and what would replace
/// it, without `fresh`.
pub fn check_analysis_dir(out: &Path, input: &Path, fresh: bool) -> Result<(), StudyError> {
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
    let input = canonical(input);
    let Some(recorded) = read_json::<Fingerprint>(&out.join(FINGERPRINT_FILE))? else {
        // An analysis written before analyses were recorded: what it analyzed is unknown.
        if out.join("report.md").exists() && !fresh {
            return Err(StudyError::Changed {
                dir: out.to_owned(),
                changes: vec![format!(
                    "{ANALYZED_KEY}: (not recorded) -> {}",
                    input.display()
                )],
            });
        }
        return Ok(());
    };
    let own = canonical(&out.join("outcomes"));
    let analyzed = recorded.settings.get(ANALYZED_KEY);
    let same = match analyzed {
        Some(a) => Path::new(a) == input,
        None => input == own,
    };
    if same {
        return Ok(());
    }
    let was = analyzed
        .cloned()
        .unwrap_or_else(|| own.display().to_string());
    let changes = vec![format!("{ANALYZED_KEY}: {was} -> {}", input.display())];
    // An experiment's own results (anything but an analysis) are never discarded here.
    let experiment = recorded.settings.keys().any(|k| k != ANALYZED_KEY)
        || ["models.json", "outcomes", "ledger.json", "manifest.json"]
            .iter()
            .any(|f| out.join(f).exists());
    if experiment {
        // One instruction, whatever `fresh` says: not "pass --fresh", which is refused here
        // too.
        return Err(StudyError::Refused(format!(
            "{} holds an experiment, which takes only the analysis of its own outcomes ({was}); write the analysis of {} to another --out (analyze never replaces an experiment's analysis, with or without --fresh)",
            out.display(),
            input.display()
        )));
    }
    if !fresh {
        return Err(StudyError::Changed {
            dir: out.to_owned(),
            changes,
        });
    }
    tracing::warn!(dir = %out.display(), changes = %changes.join("; "), "replacing the analysis of other outcomes");
    crate::fingerprint::remove_outputs(out, crate::fingerprint::ANALYSIS)?;
    let mut fp = Fingerprint {
        settings: Default::default(),
    };
    fp.settings
        .insert(ANALYZED_KEY.to_owned(), input.display().to_string());
    crate::fingerprint::write_fingerprint(out, &fp, false)?;
    Ok(())
}

/// Records in `out` (a directory without a fingerprint: an analysis of its own) that it holds
/// the analysis of `input`, so that [`check_analysis_dir`] refuses another one there
/// without `fresh`. Call it after the analysis is written; a directory with a fingerprint is
/// left as it is.
///
/// # Errors
/// [`StudyError::Io`] when the fingerprint cannot be written.
pub fn record_analysis(out: &Path, input: &Path) -> Result<(), StudyError> {
    if out.join(FINGERPRINT_FILE).exists() {
        return Ok(());
    }
    let input = std::fs::canonicalize(input).unwrap_or_else(|_| input.to_owned());
    let mut fp = Fingerprint {
        settings: Default::default(),
    };
    fp.settings
        .insert(ANALYZED_KEY.to_owned(), input.display().to_string());
    crate::fingerprint::write_fingerprint(out, &fp, false)
}

/// Analyzes the outcomes in `<out>/outcomes` and writes the analysis into `out`.
///
/// # Errors
/// As [`crate::analyze_outcomes`] and [`crate::write_analysis`].
pub fn analyze_experiment(out: &Path) -> Result<(Analysis, Vec<String>), StudyError> {
    let config = analysis_config(out)?;
    let analysis = crate::analyze_outcomes(&out.join("outcomes"), &config)?;
    let files = crate::write_analysis(&analysis, out)?;
    Ok((analysis, files))
}

/// Loads `sources` and prepares an experiment in the study's domain scheme: the languages
/// (comma-separated codes; `None`: every language found) and domains (comma-separated)
/// parsed first, so that a typo fails before any file is read; the split with
/// `train_fraction` and `seed`. [`prepare_data_in`] takes another scheme.
///
/// # Errors
/// A list that does not parse, a source that cannot be read, data that fails validation.
pub fn prepare_data(
    sources: &[xlt_data::DataSource],
    languages: Option<&str>,
    domains: &str,
    train_fraction: f64,
    seed: u64,
) -> Result<Prepared, xlt_data::DataError> {
    let scheme = xlt_data::DomainScheme::Study;
    prepare_data_in(
        scheme,
        sources,
        languages,
        Some(domains),
        train_fraction,
        seed,
    )
}

/// [`prepare_data`] in domain scheme `scheme` (`--domain-scheme`): `domains` are checked
/// against the scheme's ([`xlt_data::DomainScheme::parse_domains`]); `None` selects the
/// scheme's defaults (the study's three, or MMLU's four). The scheme is recorded in the
/// manifest.
///
/// # Errors
/// As [`prepare_data`]; a domain the scheme does not have (Medical under `mmlu`).
pub fn prepare_data_in(
    scheme: xlt_data::DomainScheme,
    sources: &[xlt_data::DataSource],
    languages: Option<&str>,
    domains: Option<&str>,
    train_fraction: f64,
    seed: u64,
) -> Result<Prepared, xlt_data::DataError> {
    use xlt_data::{Language, PrepareConfig, Selection, SplitConfig};
    let languages = match languages {
        Some(list) => Language::parse_list_in(list, &xlt_data::path_languages(sources))?,
        None => Vec::new(),
    };
    let domains = match domains {
        Some(list) => scheme.parse_domains(list)?,
        None => scheme.default_domains(),
    };
    let options = xlt_data::LoadOptions::from_env(languages.clone());
    let (dataset, sources) = xlt_data::load_sources(sources, &options)?;
    let config = PrepareConfig {
        selection: Selection {
            languages,
            domains,
            ..Selection::default()
        },
        split: SplitConfig {
            train_fraction,
            seed,
        },
        sources,
        domain_scheme: scheme,
        ..PrepareConfig::default()
    };
    xlt_data::prepare(dataset, &config)
}

/// The file in an experiment directory that holds the resource map its analysis uses
/// (written by [`save_resource_map`], `--resource-map`).
pub const RESOURCE_MAP_FILE: &str = "resource-map.json";

/// Keeps `map` as the experiment's resource map: every later analysis of `out`
/// ([`analysis_config`]) classifies languages by it. Written atomically.
///
/// # Errors
/// [`StudyError::Io`] if it cannot be written.
pub fn save_resource_map(out: &Path, map: &xlt_data::ResourceMap) -> Result<(), StudyError> {
    write_json(&out.join(RESOURCE_MAP_FILE), map)
}

/// The settings an analysis of the experiment in `out` uses: its report head
/// ([`report_context`]) and its resource map (the one [`save_resource_map`] kept, else
/// [`xlt_data::ResourceMap::classified`]: the study's map for its nine languages, Joshi et
/// al. (2020) for the others).
///
/// # Errors
/// [`StudyError::Invalid`] or [`StudyError::Io`] if a kept resource map cannot be read.
pub fn analysis_config(out: &Path) -> Result<AnalysisConfig, StudyError> {
    let resource_map = read_json(&out.join(RESOURCE_MAP_FILE))?;
    Ok(AnalysisConfig {
        context: report_context(out),
        resource_map: resource_map.unwrap_or_else(xlt_data::ResourceMap::classified),
        ..AnalysisConfig::default()
    })
}

/// Checks an output directory (`--out`) before anything is read or written: it must be a
/// directory or not exist yet, and this process must be able to write there (or create it
/// in the nearest existing parent).
///
/// # Errors
/// [`StudyError::Refused`]: a file given as the directory or as a parent; a directory that
/// cannot be written.
pub fn check_out_dir(out: &Path) -> Result<(), StudyError> {
    let shown = out.display();
    let refused = |m: String| Err(StudyError::Refused(m));
    let writable = |dir: &Path| tempfile::tempfile_in(dir).map(drop);
    match std::fs::metadata(out) {
        Ok(m) if m.is_dir() => {
            return writable(out)
                .or_else(|e| refused(format!("--out {shown}: cannot write there: {e}")));
        }
        Ok(_) => return refused(format!("--out {shown} is a file, not a directory")),
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
        Ok(m) if m.is_dir() => writable(existing).or_else(|e| {
            refused(format!(
                "--out {shown}: cannot create it in {shown_parent}: {e}"
            ))
        }),
        Ok(_) => refused(format!(
            "--out {shown}: {shown_parent} is a file, not a directory"
        )),
        Err(e) => refused(format!("--out {shown}: {shown_parent}: {e}")),
    }
}

/// What the report of the experiment in `out` says about itself ([`xlt_stats::ReportContext`]),
/// read from its `fingerprint.json` (provider, base model, grader, scoring) and
/// `manifest.json` (languages, domains, data sources); the base model's version is the
/// SHA-256 of its file when it is one (a GGUF file); the date is the day (UTC) the last
/// outcome file was written, so that analysing the same outcomes again, or a resumed run
/// beside an uninterrupted one, gives the same report byte for byte. `None` when the
/// directory holds no fingerprint (outcomes analysed on their own).
pub fn report_context(out: &Path) -> Option<xlt_stats::ReportContext> {
    let text = std::fs::read_to_string(out.join(crate::FINGERPRINT_FILE)).ok()?;
    let fp: crate::Fingerprint = serde_json::from_str(&text).ok()?;
    let get = |k: &str| fp.settings.get(k).cloned();
    let manifest: Option<xlt_data::Manifest> = std::fs::read_to_string(out.join("manifest.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let (mut languages, mut domains) = (Vec::new(), Vec::new());
    // Sources are recorded for data fetched by name; files given by path are named in
    // manifest.json's slices and the prepared files.
    let mut benchmark = "files given by path (see manifest.json)".to_owned();
    if let Some(m) = &manifest {
        for s in &m.slices {
            if !languages.contains(&s.language) {
                languages.push(s.language);
            }
            if !domains.contains(&s.domain) {
                domains.push(s.domain);
            }
        }
        let sources: Vec<String> = m
            .sources
            .iter()
            .map(|s| {
                if s.commit.is_empty() {
                    s.source.clone()
                } else {
                    format!("{}@{}", s.source, &s.commit[..s.commit.len().min(12)])
                }
            })
            .collect();
        if !sources.is_empty() {
            benchmark = sources.join(", ");
        }
    }
    let provider = get("provider").unwrap_or_default();
    let base_model = get("base_model").unwrap_or_default();
    let base_model_version = file_digest(Path::new(&base_model));
    let scoring = match get("scoring").as_deref() {
        Some("letters") => format!(
            "letters: each answer letter's probability at the first reply position (one \
             forward pass, no decoding), {} rotation(s) of the options",
            get("rotations").unwrap_or_else(|| "1".to_owned())
        ),
        _ => format!(
            "generation, at most {} tokens, temperature {}",
            get("max_tokens").unwrap_or_default(),
            get("temperature").unwrap_or_default()
        ),
    };
    let letters = get("scoring").as_deref() == Some("letters");
    let grader = if letters {
        "none needed: the most probable letter".to_owned()
    } else {
        get("grader").unwrap_or_default()
    };
    let judge_model = (!letters && grader.contains("llm")).then(|| base_model.clone());
    let mut notes = Vec::new();
    // The note belongs to the model, not to a provider's name: the embedded stand-in is the
    // one base model that is not a language model.
    if base_model == xlt_provider::EMBEDDED_BASE_MODEL {
        notes.push(
            "The embedded provider is an in-process linear scorer over hashed features, a \
             baseline for the pipeline, not a language model: its accuracies say nothing about \
             transfer in language models."
                .to_owned(),
        );
    }
    Some(xlt_stats::ReportContext {
        provider,
        base_model,
        base_model_version,
        benchmark,
        languages,
        domains,
        scoring,
        grader,
        judge_model,
        date: crate::fingerprint::prepared_on(out)
            .unwrap_or_else(|| outcomes_day(&out.join("outcomes"))),
        notes,
        data: manifest.as_ref().map(xlt_stats::DataContext::from_manifest),
    })
}

/// `sha256:<hex>` of a file, `None` when `path` is not a readable file.
fn file_digest(path: &Path) -> Option<String> {
    use sha2::{Digest, Sha256};
    if !path.is_file() {
        return None;
    }
    let mut file = std::fs::File::open(path).ok()?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).ok()?;
    Some(format!("sha256:{:x}", hasher.finalize()))
}

/// The day (UTC, `2026-12-06`) the newest file in `dir` was modified; today when there is
/// none. For experiments recorded before their fingerprint kept the day they were prepared.
fn outcomes_day(dir: &Path) -> String {
    let newest = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok()?.modified().ok())
        .max()
        .unwrap_or_else(std::time::SystemTime::now);
    crate::fingerprint::utc_day(newest)
}
