//! A prepared experiment on disk, the plan and cost of running it, and what it departs from
//! the study's settings.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use xlt_data::{EvalRecord, Manifest, estimate_chat_tokens};
use xlt_grade::Protocol;
use xlt_provider::{Hyperparameters, LearningRate, Param};

use crate::StudyError;

/// The study's base model.
pub const STUDY_BASE_MODEL: &str = "gpt-4.1-nano-2025-04-14";

/// A prepared experiment: the directory `prepare` wrote.
#[derive(Debug, Clone)]
pub struct Experiment {
    /// The directory.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

/// One test set, loaded.
#[derive(Debug, Clone)]
pub struct TestSet {
    /// `<lang>-<domain>`.
    pub name: String,
    /// Its questions and prompts.
    pub records: Vec<EvalRecord>,
}

pub(crate) fn read(path: &Path) -> Result<String, StudyError> {
    std::fs::read_to_string(path).map_err(|e| StudyError::Io {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

impl Experiment {
    /// Opens the experiment in `dir` (its `manifest.json`), and removes the temporary files
    /// (`.xlt-tmp-*`, a minute old) that a killed run left there
    /// ([`xlt_provider::sweep_temp_files`]).
    ///
    /// # Errors
    /// [`StudyError::Io`] or [`StudyError::Invalid`] naming the manifest.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Experiment, StudyError> {
        let dir = dir.into();
        let path = dir.join("manifest.json");
        let manifest = serde_json::from_str(&read(&path)?).map_err(|e| StudyError::Invalid {
            what: path.display().to_string(),
            message: e.to_string(),
        })?;
        // What a killed run left between a write and its rename (ours only, a minute old).
        for path in xlt_provider::sweep_temp_files(&dir) {
            tracing::info!(path = %path.display(), "removed a temporary file a killed run left");
        }
        Ok(Experiment { dir, manifest })
    }

    /// Every slice name, `<lang>-<domain>`, in manifest order.
    pub fn slice_names(&self) -> Vec<String> {
        self.manifest
            .slices
            .iter()
            .map(|s| Manifest::slice_name(s.language, s.domain))
            .collect()
    }

    /// The slices to fine-tune: `only` if given (each must exist), else every slice.
    ///
    /// # Errors
    /// [`StudyError::Invalid`] naming a slice the experiment does not have.
    pub fn training_slices(&self, only: &[String]) -> Result<Vec<String>, StudyError> {
        let all = self.slice_names();
        if only.is_empty() {
            return Ok(all);
        }
        // A baseline study: the base model alone, on every test set.
        if only.len() == 1 && only[0] == "none" {
            return Ok(Vec::new());
        }
        for s in only {
            if !all.contains(s) {
                return Err(StudyError::Invalid {
                    what: format!("training slice `{s}`"),
                    message: format!("not in the experiment (it has {})", all.join(", ")),
                });
            }
        }
        Ok(only.to_vec())
    }

    /// The fine-tuning file of a slice, or of a fine-tuning job: a seed replicate
    /// `<slice>#<k>` (issue #24) trains on its slice's file.
    pub fn finetune_file(&self, job: &str) -> PathBuf {
        let slice = xlt_stats::split_label(job).map_or(job, |(slice, _)| slice);
        self.dir.join("finetune").join(format!("{slice}.jsonl"))
    }

    /// Loads every test set, in manifest order.
    ///
    /// # Errors
    /// [`StudyError::Io`] or [`StudyError::Invalid`] naming the file and line.
    pub fn test_sets(&self) -> Result<Vec<TestSet>, StudyError> {
        self.slice_names()
            .into_iter()
            .map(|name| {
                let path = self.dir.join("eval").join(format!("{name}.jsonl"));
                let text = read(&path)?;
                let records = text
                    .lines()
                    .enumerate()
                    .filter(|(_, l)| !l.trim().is_empty())
                    .map(|(i, l)| {
                        serde_json::from_str(l).map_err(|e| StudyError::Invalid {
                            what: format!("{} line {}", path.display(), i + 1),
                            message: e.to_string(),
                        })
                    })
                    .collect::<Result<Vec<EvalRecord>, _>>()?;
                Ok(TestSet { name, records })
            })
            .collect()
    }
}

/// Prices in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PriceTable {
    /// Training tokens (times epochs).
    pub training: f64,
    /// Prompt tokens to the base model.
    pub base_input: f64,
    /// Output tokens from the base model.
    pub base_output: f64,
    /// Prompt tokens to a fine-tuned model.
    pub tuned_input: f64,
    /// Output tokens from a fine-tuned model.
    pub tuned_output: f64,
    /// US dollars per minute of a dedicated endpoint serving a fine-tuned model (providers
    /// that serve tuned models on demand).
    #[serde(default)]
    pub endpoint_per_minute: f64,
}

impl PriceTable {
    /// Free: the embedded provider.
    pub fn zero() -> PriceTable {
        PriceTable {
            training: 0.0,
            base_input: 0.0,
            base_output: 0.0,
            tuned_input: 0.0,
            tuned_output: 0.0,
            endpoint_per_minute: 0.0,
        }
    }

    /// OpenAI's published prices for the models we know, as of 2026: gpt-4.1-nano
    /// (training 1.50, base 0.10 in / 0.40 out, fine-tuned 0.20 in / 0.80 out) and
    /// gpt-4.1-mini (training 5.00, base 0.40 / 1.60, fine-tuned 0.80 / 3.20). `None` for
    /// others: pass a price table.
    pub fn known(model: &str) -> Option<PriceTable> {
        if model.starts_with("gpt-4.1-nano") {
            Some(PriceTable {
                training: 1.50,
                base_input: 0.10,
                base_output: 0.40,
                tuned_input: 0.20,
                tuned_output: 0.80,
                endpoint_per_minute: 0.0,
            })
        } else if model.starts_with("gpt-4.1-mini") {
            Some(PriceTable {
                training: 5.00,
                base_input: 0.40,
                base_output: 1.60,
                tuned_input: 0.80,
                tuned_output: 3.20,
                endpoint_per_minute: 0.0,
            })
        } else {
            None
        }
    }
}

/// What running the study will take and cost, before anything is spent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The provider.
    pub provider: String,
    /// The base model.
    pub base_model: String,
    /// Slices to fine-tune.
    pub jobs: Vec<String>,
    /// Training tokens for one epoch, all jobs.
    pub training_tokens_per_epoch: u64,
    /// Epochs (1 when the provider chooses, as an estimate).
    pub epochs: u32,
    /// Chat requests to evaluate the base and every fine-tuned model on every test set.
    pub eval_requests: u64,
    /// Estimated prompt tokens of those requests.
    pub eval_input_tokens: u64,
    /// Upper bound of output tokens (`max_tokens` per request).
    pub eval_output_tokens: u64,
    /// Output tokens asked for per evaluation answer (`--max-tokens`).
    #[serde(default)]
    pub max_tokens: u32,
    /// The grading protocol.
    #[serde(default)]
    pub grader: Protocol,
    /// How answers are read: with letters, one token out per request and no judge.
    #[serde(default)]
    pub scoring: crate::Scoring,
    /// Judge requests at most: every response with the `llm` grader, and also with
    /// `regex+llm` as an upper bound (it asks only for the answers the extractor cannot
    /// read, usually few); none with `regex`.
    pub judge_requests_max: u64,
    /// Estimated training cost in US dollars: the provider's own estimate when it gives one
    /// (see [`Plan::with_provider_training_estimate`]), else training tokens times the price
    /// table's training price.
    pub training_usd: Option<f64>,
    /// Whether `training_usd` is the provider's own estimate.
    pub training_usd_from_provider: bool,
    /// Endpoint minutes, when tuned models are served on demand: startup plus evaluation at
    /// the request rate, per model.
    pub endpoint_minutes: f64,
    /// Estimated cost in US dollars, if prices are known.
    pub cost_usd: Option<f64>,
    /// Each place the run departs from the study's settings.
    pub departures: Vec<String>,
    /// For training on the user's machine: time and disk, measured there (see
    /// [`Plan::with_machine_training`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_training: Option<MachineTraining>,
}

/// What fine-tuning on the user's own machine takes: its time, estimated from a short
/// measured run, and the disk its adapters need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineTraining {
    /// The device trained on (`cpu`, `cuda:0`).
    pub device: String,
    /// Tokens per epoch of all jobs, counted by the model's tokenizer.
    pub tokens_per_epoch: u64,
    /// Optimizer steps of all jobs.
    pub optimizer_steps: u64,
    /// Training throughput measured on this machine, tokens per second.
    pub tokens_per_second: f64,
    /// How the throughput was measured (`2 optimizer steps of batch 8, 1843 tokens in 12.1 s`).
    pub measured_by: String,
    /// Estimated training time of all jobs, one after another, seconds:
    /// `tokens_per_epoch * epochs / tokens_per_second`.
    pub estimated_seconds: f64,
    /// Bytes of one job's adapter.
    pub adapter_bytes: u64,
}

/// The settings a plan is made for.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanInput<'a> {
    /// Provider name.
    pub provider: &'a str,
    /// Base model.
    pub base_model: &'a str,
    /// Slices to fine-tune.
    pub jobs: &'a [String],
    /// Hyperparameters.
    pub hyperparameters: Hyperparameters,
    /// Output tokens asked for per evaluation request.
    pub max_tokens: u32,
    /// How answers are graded (which decides the judge requests and a departure).
    pub grader: Protocol,
    /// How answers are read.
    pub scoring: crate::Scoring,
    /// Rotations of the options per question (letter scoring).
    pub rotations: u32,
    /// Prices, if known.
    pub prices: Option<PriceTable>,
    /// For providers that serve tuned models on demand: (startup minutes per model, requests
    /// per minute the evaluation runs at).
    pub serving: Option<(f64, f64)>,
}

impl Plan {
    /// Makes the plan for `exp`.
    ///
    /// # Errors
    /// Errors reading the experiment's files.
    pub fn new(exp: &Experiment, input: &PlanInput<'_>) -> Result<Plan, StudyError> {
        let mut training = 0u64;
        for job in input.jobs {
            for line in read(&exp.finetune_file(job))?
                .lines()
                .filter(|l| !l.trim().is_empty())
            {
                let rec: xlt_data::FinetuneRecord =
                    serde_json::from_str(line).map_err(|e| StudyError::Invalid {
                        what: exp.finetune_file(job).display().to_string(),
                        message: e.to_string(),
                    })?;
                training += estimate_chat_tokens(&rec.messages) as u64;
            }
        }
        let sets = exp.test_sets()?;
        let per_model_requests: u64 = sets.iter().map(|s| s.records.len() as u64).sum();
        let per_model_tokens: u64 = sets
            .iter()
            .flat_map(|s| &s.records)
            .map(|r| estimate_chat_tokens(&r.messages) as u64)
            .sum();
        let models = 1 + input.jobs.len() as u64;
        let epochs = match input.hyperparameters.epochs {
            Param::Value(e) => e,
            Param::Auto => 1,
        };
        // Letter scoring: one request per question and rotation, one token out (a server's
        // top alternatives; the local model decodes nothing).
        let (per_model_requests, out_per_answer) = match input.scoring {
            crate::Scoring::Letters => (
                per_model_requests * u64::from(input.rotations.clamp(1, 4)),
                1,
            ),
            crate::Scoring::Generate => (per_model_requests, u64::from(input.max_tokens)),
        };
        let eval_requests = per_model_requests * models;
        let eval_output_tokens = eval_requests * out_per_answer;
        let endpoint_minutes = input.serving.map_or(0.0, |(startup, rpm)| {
            input.jobs.len() as f64 * (startup + per_model_requests as f64 / rpm.max(1.0))
        });
        let training_usd = input
            .prices
            .map(|p| training as f64 * f64::from(epochs) * p.training * 1e-6);
        let cost_usd = input.prices.map(|p| {
            let m = 1e-6;
            let tuned = input.jobs.len() as f64;
            training_usd.unwrap_or(0.0)
                + per_model_tokens as f64 * (p.base_input + tuned * p.tuned_input) * m
                + (per_model_requests * out_per_answer) as f64
                    * (p.base_output + tuned * p.tuned_output)
                    * m
                + endpoint_minutes * p.endpoint_per_minute
        });
        Ok(Plan {
            provider: input.provider.to_owned(),
            base_model: input.base_model.to_owned(),
            jobs: input.jobs.to_vec(),
            training_tokens_per_epoch: training,
            epochs,
            eval_requests,
            eval_input_tokens: per_model_tokens * models,
            eval_output_tokens,
            max_tokens: input.max_tokens,
            grader: input.grader,
            scoring: input.scoring,
            // Letters are read from log-probabilities: no text for a judge to read.
            judge_requests_max: if input.grader == Protocol::Regex
                || input.scoring == crate::Scoring::Letters
            {
                0
            } else {
                eval_requests
            },
            endpoint_minutes,
            training_usd,
            training_usd_from_provider: false,
            cost_usd,
            departures: departures(exp, input),
            machine_training: None,
        })
    }

    /// Adds the time and disk of training on the user's machine; the training tokens become
    /// the tokenizer's count.
    pub fn with_machine_training(mut self, t: MachineTraining) -> Plan {
        self.training_tokens_per_epoch = t.tokens_per_epoch;
        self.machine_training = Some(t);
        self
    }

    /// Replaces the token-based training cost with the provider's own estimate (the sum over
    /// jobs of `FineTuner::estimate_price`).
    pub fn with_provider_training_estimate(mut self, usd: f64) -> Plan {
        if let Some(total) = self.cost_usd.as_mut() {
            *total += usd - self.training_usd.unwrap_or(0.0);
        }
        self.training_usd = Some(usd);
        self.training_usd_from_provider = true;
        self
    }

    /// Whether the plan costs money (or may: unknown prices count as paid).
    pub fn is_paid(&self) -> bool {
        self.cost_usd.is_none_or(|c| c > 0.0)
    }

    /// The plan as text for a person.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "Plan ({} / {})", self.provider, self.base_model);
        let _ = writeln!(
            s,
            "  fine-tuning jobs:      {} ({})",
            self.jobs.len(),
            self.jobs.join(", ")
        );
        let _ = writeln!(
            s,
            "  training tokens:       {} per epoch x {} epoch(s) ({})",
            self.training_tokens_per_epoch,
            self.epochs,
            if self.machine_training.is_some() {
                "counted by the model's tokenizer"
            } else {
                "estimate: UTF-8 bytes / 4"
            }
        );
        let _ = writeln!(s, "  evaluation requests:   {}", self.eval_requests);
        if self.scoring == crate::Scoring::Letters {
            let _ = writeln!(
                s,
                "  evaluation tokens:     {} in, {} out (letter scoring: one token per request, no decoding)",
                self.eval_input_tokens, self.eval_output_tokens
            );
            let _ = writeln!(
                s,
                "  judge requests:        0 (letter scoring: the most probable letter, no text to grade)"
            );
        } else {
            let _ = writeln!(
                s,
                "  evaluation tokens:     {} in, at most {} out ({} per answer, --max-tokens; priced at that bound)",
                self.eval_input_tokens, self.eval_output_tokens, self.max_tokens
            );
        }
        let _ = match self.grader {
            _ if self.scoring == crate::Scoring::Letters => Ok(()),
            Protocol::Regex => writeln!(s, "  judge requests:        0 (grader regex)"),
            Protocol::Llm => writeln!(
                s,
                "  judge requests:        {} (grader llm: one per answer)",
                self.judge_requests_max
            ),
            Protocol::RegexThenLlm => writeln!(
                s,
                "  judge requests (max):  {} (grader regex+llm: one per answer the extractor cannot read; usually few)",
                self.judge_requests_max
            ),
        };
        if self.endpoint_minutes > 0.0 {
            let _ = writeln!(
                s,
                "  endpoint time:         {:.0} minutes of dedicated endpoints (every one is stopped when its model is done)",
                self.endpoint_minutes
            );
        }
        if let Some(m) = &self.machine_training {
            let _ = writeln!(
                s,
                "  training time:         about {} on {} ({} optimizer steps at {:.0} tokens/s, measured by {})",
                human_duration(m.estimated_seconds),
                m.device,
                m.optimizer_steps,
                m.tokens_per_second,
                m.measured_by
            );
            let _ = writeln!(
                s,
                "  adapter disk:          {} ({} x {} a job)",
                human_bytes(m.adapter_bytes * self.jobs.len() as u64),
                self.jobs.len(),
                human_bytes(m.adapter_bytes)
            );
        }
        if let Some(t) = self.training_usd {
            let _ = writeln!(
                s,
                "  training cost:         ${t:.2} ({})",
                if self.training_usd_from_provider {
                    "the provider's estimate"
                } else {
                    "tokens x price table"
                }
            );
        }
        let _ = match self.cost_usd {
            Some(c) => writeln!(s, "  estimated cost:        ${c:.2} (before judge calls)"),
            None => writeln!(
                s,
                "  estimated cost:        unknown: no price table for {} (pass --prices)",
                self.base_model
            ),
        };
        if !self.departures.is_empty() {
            let _ = writeln!(s, "  departures from the study's settings:");
            for d in &self.departures {
                let _ = writeln!(s, "    - {d}");
            }
        }
        s
    }
}

/// `45 s`, `12 min`, `3.5 h`.
fn human_duration(seconds: f64) -> String {
    if seconds < 90.0 {
        format!("{seconds:.0} s")
    } else if seconds < 5400.0 {
        format!("{:.0} min", seconds / 60.0)
    } else {
        format!("{:.1} h", seconds / 3600.0)
    }
}

/// `812 KiB`, `35.2 MiB`, `1.4 GiB`.
fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if b < 1024.0 * 1024.0 {
        format!("{:.0} KiB", b / 1024.0)
    } else if b < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else {
        format!("{:.1} GiB", b / (1024.0 * 1024.0 * 1024.0))
    }
}

fn departures(exp: &Experiment, input: &PlanInput<'_>) -> Vec<String> {
    let mut d = Vec::new();
    if input.base_model != STUDY_BASE_MODEL {
        d.push(format!(
            "base model {} (the study: {STUDY_BASE_MODEL}, fine-tuned through OpenAI)",
            input.base_model
        ));
    }
    let h = input.hyperparameters;
    if h.epochs != Param::Value(1) {
        d.push(format!("epochs {} (the study: 1)", h.epochs));
    }
    if h.batch_size != Param::Value(8) {
        d.push(format!("batch size {} (the study: 8)", h.batch_size));
    }
    match h.learning_rate {
        LearningRate::Multiplier(m) if (m - 0.4).abs() < 1e-12 => {}
        LearningRate::Multiplier(m) => {
            d.push(format!("learning-rate multiplier {m} (the study: 0.4)"));
        }
        LearningRate::Absolute(a) => d.push(format!(
            "absolute learning rate {a} (the study: multiplier 0.4 of OpenAI's unpublished base rate; the two are not comparable)"
        )),
        LearningRate::Auto => d.push("learning rate chosen by the provider (the study: multiplier 0.4)".to_owned()),
    }
    d.push(format!(
        "train/test split by sample id shared by every language (seed {}, train fraction {}); the study split each language separately",
        exp.manifest.seed, exp.manifest.train_fraction
    ));
    if input.scoring == crate::Scoring::Letters {
        d.push(format!(
            "answers scored by each letter's probability at the first reply position, {} rotation(s) of the options (the study generated answers and graded their text)",
            input.rotations.max(1)
        ));
        return d;
    }
    match input.grader {
        Protocol::Llm => {}
        Protocol::RegexThenLlm => d.push(
            "answers graded deterministically, with the LLM judge only for unparseable ones (the study graded every answer with the base model)"
                .to_owned(),
        ),
        Protocol::Regex => d.push(
            "answers graded deterministically only, with no LLM judge (the study graded every answer with the base model)"
                .to_owned(),
        ),
    }
    d
}
