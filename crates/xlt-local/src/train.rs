//! Supervised fine-tuning of the adapters ([`crate::attach_lora`]) on chat examples: the
//! loss is the mean negative log-likelihood of the assistant's tokens only (the positions
//! found by rendering the chat template with and without the last assistant turn), the
//! optimizer is AdamW (candle's, `candle_nn::AdamW`) with an absolute learning rate,
//! linear warm-up and linear decay to zero (Hugging Face's
//! `get_linear_schedule_with_warmup`), micro-batches and gradient accumulation.
//!
//! The model must be built with [`Ops::Differentiable`](crate::Ops): the fused kernels have
//! no backward pass in candle 0.11 (candle issue #2168) and [`train`] refuses them.

use std::ops::ControlFlow;
use std::time::Instant;

use candle_core::{D, DType, Tensor, Var};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use tokenizers::Tokenizer;
use xlt_provider::{ChatMessage, Role};

use crate::error::LocalError;
use crate::llama::{Model, Ops};
use crate::lora::{lora_params, set_lora_dropout};
use crate::template::ChatTemplate;

/// One tokenized conversation and which of its tokens the loss is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainExample {
    /// The whole conversation rendered by the chat template, tokenized.
    pub input_ids: Vec<u32>,
    /// `loss_mask[i]`: token `i` belongs to the last assistant turn (its content and the
    /// template's end-of-turn tokens) and is predicted in the loss.
    pub loss_mask: Vec<bool>,
}

impl TrainExample {
    /// Tokens the loss is on.
    pub fn target_tokens(&self) -> usize {
        // Token 0 is never predicted.
        self.loss_mask.iter().skip(1).filter(|&&m| m).count()
    }
}

/// Tokenizes `messages`, whose last message is the assistant's answer, for training: the
/// tokens after the rendering of the earlier messages with the generation prompt are the
/// assistant's (as `apply_chat_template(..., return_assistant_tokens_mask=True)` would say
/// for the last turn).
///
/// # Errors
/// [`LocalError::Invalid`] when the last message is not the assistant's, when the full
/// rendering does not begin with the prompt's tokens (a template that rewrites earlier
/// turns, or a token merged across the boundary), or when there is no assistant token;
/// template and tokenizer failures.
pub fn encode_example(
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    messages: &[ChatMessage],
) -> Result<TrainExample, LocalError> {
    let Some((last, earlier)) = messages.split_last() else {
        return Err(LocalError::Invalid(
            "a training example has no messages".into(),
        ));
    };
    if last.role != Role::Assistant {
        return Err(LocalError::Invalid(
            "the last message of a training example must be the assistant's".into(),
        ));
    }
    let encode = |text: &str| -> Result<Vec<u32>, LocalError> {
        Ok(tokenizer
            .encode(text, false)
            .map_err(|e| LocalError::Tokenizer(e.to_string()))?
            .get_ids()
            .to_vec())
    };
    let prompt = encode(&template.render(earlier, true)?)?;
    let full = encode(&template.render(messages, false)?)?;
    if full.len() <= prompt.len() || full[..prompt.len()] != prompt[..] {
        return Err(LocalError::Invalid(format!(
            "the chat template's rendering with the answer does not begin with the prompt's {} tokens, so the assistant's tokens cannot be found",
            prompt.len()
        )));
    }
    let loss_mask = (0..full.len()).map(|i| i >= prompt.len()).collect();
    Ok(TrainExample {
        input_ids: full,
        loss_mask,
    })
}

/// The summed negative log-likelihood (nats, a scalar tensor in f32) of the target tokens
/// of `batch`, and their count. The rows are right-padded, so causal attention alone keeps
/// padding out of every real position.
///
/// # Errors
/// An empty batch or one with no target token; tensor failures.
pub fn assistant_nll(
    model: &Model,
    batch: &[&TrainExample],
) -> Result<(Tensor, usize), LocalError> {
    let longest = batch.iter().map(|e| e.input_ids.len()).max().unwrap_or(0);
    if longest < 2 {
        return Err(LocalError::Invalid(
            "a training batch needs an example of two tokens or more".into(),
        ));
    }
    let device = model.device().clone();
    let mut flat = Vec::with_capacity(batch.len() * longest);
    let (mut rows, mut labels) = (Vec::new(), Vec::new());
    for (r, e) in batch.iter().enumerate() {
        if e.loss_mask.len() != e.input_ids.len() {
            return Err(LocalError::Invalid(format!(
                "training example {r}: {} tokens but {} mask entries",
                e.input_ids.len(),
                e.loss_mask.len()
            )));
        }
        flat.extend(&e.input_ids);
        flat.extend(std::iter::repeat_n(0u32, longest - e.input_ids.len()));
        for j in 1..e.input_ids.len() {
            if e.loss_mask[j] {
                rows.push((r * longest + j - 1) as u32);
                labels.push(e.input_ids[j]);
            }
        }
    }
    let n = labels.len();
    if n == 0 {
        return Err(LocalError::Invalid(
            "a training batch has no assistant token".into(),
        ));
    }
    let input = Tensor::from_vec(flat, (batch.len(), longest), &device)?;
    let mut cache = model.new_cache();
    // (b, t, hidden) -> (b * t, hidden) -> the n predicting positions -> (n, vocab)
    let hidden = model.forward_hidden(&input, &mut cache, None)?;
    let hidden = hidden.flatten_to(1)?;
    let rows = Tensor::from_vec(rows, n, &device)?;
    let logits = model.logits(&hidden.index_select(&rows, 0)?)?;
    let work = if logits.dtype() == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let logp = candle_nn::ops::log_softmax(&logits.to_dtype(work)?, D::Minus1)?;
    let labels = Tensor::from_vec(labels, (n, 1), &device)?;
    let nll = logp.gather(&labels, 1)?.sum_all()?.neg()?;
    Ok((nll, n))
}

/// The default of [`TrainConfig::max_tokens_per_pass`].
pub const MAX_TOKENS_PER_PASS: usize = 512;

/// `batch` cut, in order, into runs whose padded size (examples times the longest one's
/// tokens) is at most `budget` (0: no limit); an example longer than `budget` is a run of
/// its own.
fn passes<'e, 'b>(batch: &'b [&'e TrainExample], budget: usize) -> Vec<&'b [&'e TrainExample]> {
    let mut out = Vec::new();
    let (mut start, mut longest) = (0, 0);
    for (i, e) in batch.iter().enumerate() {
        let len = e.input_ids.len();
        let widened = longest.max(len);
        if budget > 0 && i > start && (i - start + 1) * widened > budget {
            out.push(&batch[start..i]);
            (start, longest) = (i, len);
        } else {
            longest = widened;
        }
    }
    if start < batch.len() {
        out.push(&batch[start..]);
    }
    out
}

/// Training hyperparameters, with the defaults of LoRA recipes.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// The peak learning rate, absolute (not a multiplier of anything).
    pub learning_rate: f64,
    /// Passes over the examples.
    pub epochs: usize,
    /// Examples per micro-batch (one forward and backward pass).
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub gradient_accumulation_steps: usize,
    /// Fraction of the optimizer steps over which the learning rate rises linearly from
    /// `learning_rate / warmup_steps` to `learning_rate`; it then falls linearly to zero at
    /// the last step.
    pub warmup_ratio: f64,
    /// AdamW's decoupled weight decay (Hugging Face's default: 0).
    pub weight_decay: f64,
    /// Seeds the order of the examples in each epoch and the dropout masks.
    pub seed: u64,
    /// The most padded tokens (examples times the longest one's tokens) one forward and
    /// backward pass holds: a micro-batch with more is run as several passes, in order,
    /// whose gradients are summed before the optimizer step, so that the step is the same
    /// (up to the order of floating-point sums) in less memory. Training keeps each
    /// layer's activations until the backward pass ends, about 1.2 MB per token on
    /// SmolLM2-135M in f32 (30 layers, hidden size 576), and the pass's peak is about 1.5 MB
    /// per token with the backward pass's own, so the default of 512 bounds them near 0.8 GB
    /// (1024 peaked 600 MiB higher on a step of 8 examples of 170 to 230 tokens, at the same
    /// speed on 2 cores; issue #26). An example longer than this is a pass of its own; 0
    /// never splits.
    pub max_tokens_per_pass: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            learning_rate: 2e-4,
            epochs: 3,
            batch_size: 8,
            gradient_accumulation_steps: 1,
            warmup_ratio: 0.03,
            weight_decay: 0.0,
            seed: 42,
            max_tokens_per_pass: MAX_TOKENS_PER_PASS,
        }
    }
}

impl TrainConfig {
    /// Checks the values are usable.
    ///
    /// # Errors
    /// [`LocalError::Invalid`] naming the field.
    pub fn validate(&self) -> Result<(), LocalError> {
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(LocalError::Invalid(format!(
                "learning_rate must be positive, not {}",
                self.learning_rate
            )));
        }
        if self.epochs == 0 || self.batch_size == 0 || self.gradient_accumulation_steps == 0 {
            return Err(LocalError::Invalid(
                "epochs, batch_size and gradient_accumulation_steps must be positive".into(),
            ));
        }
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            return Err(LocalError::Invalid(format!(
                "warmup_ratio must be in [0, 1), not {}",
                self.warmup_ratio
            )));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(LocalError::Invalid(format!(
                "weight_decay must be non-negative, not {}",
                self.weight_decay
            )));
        }
        Ok(())
    }

    /// Optimizer steps for `examples` examples.
    pub fn total_steps(&self, examples: usize) -> usize {
        let micro = examples.div_ceil(self.batch_size);
        self.epochs * micro.div_ceil(self.gradient_accumulation_steps)
    }

    /// Warm-up steps out of `total`.
    pub fn warmup_steps(&self, total: usize) -> usize {
        (self.warmup_ratio * total as f64).ceil() as usize
    }

    /// The learning rate of optimizer step `step` (0-based) of `total`: linear warm-up over
    /// the first [`TrainConfig::warmup_steps`] (`(step + 1) / warmup` of the peak, so that
    /// the first step is not wasted at zero as in Hugging Face's scheduler), then linear
    /// decay, reaching zero after the last step.
    pub fn learning_rate_at(&self, step: usize, total: usize) -> f64 {
        let warmup = self.warmup_steps(total);
        if step < warmup {
            self.learning_rate * (step + 1) as f64 / warmup as f64
        } else {
            let left = total.saturating_sub(step) as f64;
            let span = total.saturating_sub(warmup).max(1) as f64;
            self.learning_rate * (left / span).clamp(0.0, 1.0)
        }
    }
}

/// What one optimizer step did.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// 1-based optimizer step.
    pub step: usize,
    /// Of this many.
    pub total_steps: usize,
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean negative log-likelihood per assistant token over the step, nats.
    pub loss: f64,
    /// The learning rate used.
    pub learning_rate: f64,
    /// Tokens through the network in the step (padding included).
    pub tokens: usize,
    /// Wall time of the step, seconds.
    pub seconds: f64,
}

/// AdamW's state after some optimizer steps: the step count and the first and second
/// moments of every adapter tensor, in [`crate::lora_params`] order (`lora_A` then `lora_B`
/// of each module). With the adapter's weights it is a checkpoint from which
/// [`train_resumable`] continues exactly as if it had not stopped.
#[derive(Debug, Clone)]
pub struct OptimizerState {
    /// Optimizer steps taken.
    pub step: usize,
    /// First moments, one per trainable tensor, of its shape.
    pub first_moments: Vec<Tensor>,
    /// Second moments, one per trainable tensor, of its shape.
    pub second_moments: Vec<Tensor>,
}

/// AdamW (Loshchilov and Hutter 2019) with decoupled weight decay and bias correction, the
/// same arithmetic as `candle_nn::AdamW` (betas 0.9 and 0.999, eps 1e-8), state exposed.
struct AdamW {
    vars: Vec<Var>,
    state: OptimizerState,
    weight_decay: f64,
}

impl AdamW {
    const BETA1: f64 = 0.9;
    const BETA2: f64 = 0.999;
    const EPS: f64 = 1e-8;

    fn new(
        vars: Vec<Var>,
        weight_decay: f64,
        resume: Option<&OptimizerState>,
    ) -> Result<Self, LocalError> {
        let state = match resume {
            Some(s) => {
                if s.first_moments.len() != vars.len() || s.second_moments.len() != vars.len() {
                    return Err(LocalError::Invalid(format!(
                        "the optimizer state has {} moments for {} trainable tensors",
                        s.first_moments.len(),
                        vars.len()
                    )));
                }
                for (i, v) in vars.iter().enumerate() {
                    if s.first_moments[i].dims() != v.dims()
                        || s.second_moments[i].dims() != v.dims()
                    {
                        return Err(LocalError::Invalid(format!(
                            "optimizer moment {i} is {:?}, its tensor {:?}",
                            s.first_moments[i].dims(),
                            v.dims()
                        )));
                    }
                }
                s.clone()
            }
            None => OptimizerState {
                step: 0,
                first_moments: vars
                    .iter()
                    .map(|v| v.zeros_like())
                    .collect::<candle_core::Result<_>>()?,
                second_moments: vars
                    .iter()
                    .map(|v| v.zeros_like())
                    .collect::<candle_core::Result<_>>()?,
            },
        };
        Ok(AdamW {
            vars,
            state,
            weight_decay,
        })
    }

    /// One AdamW update with `grads[i]`, the gradient of `self.vars[i]` (none: unchanged).
    fn step(&mut self, grads: &[Option<Tensor>], lr: f64) -> Result<(), LocalError> {
        self.state.step += 1;
        let t = self.state.step as i32;
        let scale_m = 1.0 / (1.0 - Self::BETA1.powi(t));
        let scale_v = 1.0 / (1.0 - Self::BETA2.powi(t));
        for (i, var) in self.vars.iter().enumerate() {
            let Some(g) = &grads[i] else {
                continue;
            };
            let m = ((&self.state.first_moments[i] * Self::BETA1)? + (g * (1.0 - Self::BETA1))?)?;
            let v = ((&self.state.second_moments[i] * Self::BETA2)?
                + (g.sqr()? * (1.0 - Self::BETA2))?)?;
            let update = ((&m * scale_m)? / ((&v * scale_v)?.sqrt()? + Self::EPS)?)?;
            let theta = (var.as_tensor() * (1.0 - lr * self.weight_decay))?;
            var.set(&(theta - (update * lr)?)?.detach())?;
            self.state.first_moments[i] = m.detach();
            self.state.second_moments[i] = v.detach();
        }
        Ok(())
    }
}

/// Trains the adapters attached to `model` on `examples`; calls `on_step` after every
/// optimizer step, and stops early when it returns [`ControlFlow::Break`]. Returns the
/// reports of the steps taken. Dropout is on during training and off again after.
///
/// # Errors
/// [`LocalError::Invalid`] for a model built with fused kernels, one without adapters, no
/// examples, or a config that fails [`TrainConfig::validate`]; tensor failures.
pub fn train(
    model: &mut Model,
    examples: &[TrainExample],
    config: &TrainConfig,
    mut on_step: impl FnMut(&StepReport) -> ControlFlow<()>,
) -> Result<Vec<StepReport>, LocalError> {
    train_resumable(model, examples, config, None, |r, _| on_step(r))
}

/// [`train`], continuing from a checkpoint when `resume` is given (the adapter's weights
/// must already be those saved with it), and handing `on_step` the optimizer state after
/// each step so that it can save a checkpoint. The examples' order and the dropout masks
/// depend only on the seed, the epoch and the step, so a resumed run takes the same steps
/// as one that never stopped.
///
/// # Errors
/// As [`train`]; an optimizer state that does not fit the adapters.
pub fn train_resumable(
    model: &mut Model,
    examples: &[TrainExample],
    config: &TrainConfig,
    resume: Option<&OptimizerState>,
    mut on_step: impl FnMut(&StepReport, &OptimizerState) -> ControlFlow<()>,
) -> Result<Vec<StepReport>, LocalError> {
    config.validate()?;
    if model.ops() != Ops::Differentiable {
        return Err(LocalError::Invalid(
            "training needs a model built with Ops::Differentiable (candle's fused kernels have no backward pass)".into(),
        ));
    }
    if examples.is_empty() {
        return Err(LocalError::Invalid("no training examples".into()));
    }
    let params = lora_params(model);
    if params.is_empty() {
        return Err(LocalError::Invalid(
            "the model has no LoRA adapter to train".into(),
        ));
    }
    let vars: Vec<Var> = params
        .iter()
        .flat_map(|p| [p.a.clone(), p.b.clone()])
        .collect();
    let mut opt = AdamW::new(vars.clone(), config.weight_decay, resume)?;
    let total = config.total_steps(examples.len());
    let result = run_epochs(
        model,
        examples,
        config,
        &mut opt,
        &vars,
        total,
        &mut on_step,
    );
    set_lora_dropout(model, None);
    result
}

fn run_epochs(
    model: &mut Model,
    examples: &[TrainExample],
    config: &TrainConfig,
    opt: &mut AdamW,
    vars: &[Var],
    total: usize,
    on_step: &mut impl FnMut(&StepReport, &OptimizerState) -> ControlFlow<()>,
) -> Result<Vec<StepReport>, LocalError> {
    let mut reports = Vec::new();
    let mut step = 0;
    let start = opt.state.step;
    for epoch in 0..config.epochs {
        let mut order: Vec<usize> = (0..examples.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(
            config.seed.wrapping_add(epoch as u64),
        ));
        let micro: Vec<Vec<&TrainExample>> = order
            .chunks(config.batch_size)
            .map(|c| c.iter().map(|&i| &examples[i]).collect())
            .collect();
        for group in micro.chunks(config.gradient_accumulation_steps) {
            if step < start {
                // Taken before the checkpoint this run resumes from.
                step += 1;
                continue;
            }
            let started = Instant::now();
            // Dropout masks of this step, whatever ran before.
            set_lora_dropout(
                model,
                Some(config.seed ^ (step as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            );
            let targets: usize = group
                .iter()
                .flat_map(|b| b.iter().map(|e| e.target_tokens()))
                .sum();
            let tokens: usize = group
                .iter()
                .map(|b| b.len() * b.iter().map(|e| e.input_ids.len()).max().unwrap_or(0))
                .sum();
            // The adapters' gradients only, detached: a whole `GradStore` also holds the
            // gradient of every activation of its micro-batch, and a gradient's own op graph
            // reaches back into that micro-batch's activations; neither may outlive it.
            let mut grads: Vec<Option<Tensor>> = vec![None; vars.len()];
            let mut loss_sum = 0.0;
            for pass in group
                .iter()
                .flat_map(|b| passes(b, config.max_tokens_per_pass))
            {
                let (nll, _) = assistant_nll(model, pass)?;
                loss_sum += nll.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                let g = (nll / targets.max(1) as f64)?.backward()?;
                for (acc, v) in grads.iter_mut().zip(vars) {
                    if let Some(new) = g.get(v.as_tensor()) {
                        let new = new.detach();
                        *acc = Some(match acc.take() {
                            Some(old) => (old + new)?,
                            None => new,
                        });
                    }
                }
            }
            let lr = config.learning_rate_at(step, total);
            opt.step(&grads, lr)?;
            step += 1;
            let report = StepReport {
                step,
                total_steps: total,
                epoch: epoch + 1,
                loss: loss_sum / targets.max(1) as f64,
                learning_rate: lr,
                tokens,
                seconds: started.elapsed().as_secs_f64(),
            };
            let flow = on_step(&report, &opt.state);
            reports.push(report);
            if flow.is_break() {
                return Ok(reports);
            }
        }
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A micro-batch is cut, in order, into passes of at most the budget's padded tokens;
    /// an example longer than the budget is a pass alone; 0 never cuts.
    #[test]
    fn micro_batches_are_cut_into_passes_within_the_token_budget() {
        let example = |len: usize| TrainExample {
            input_ids: vec![1; len],
            loss_mask: vec![true; len],
        };
        let examples: Vec<TrainExample> = [100, 300, 200, 900, 50, 60].map(example).to_vec();
        let batch: Vec<&TrainExample> = examples.iter().collect();
        let check = |budget: usize, expected: &[&[usize]]| {
            let got: Vec<Vec<usize>> = passes(&batch, budget)
                .iter()
                .map(|p| p.iter().map(|e| e.input_ids.len()).collect())
                .collect();
            assert_eq!(got, expected, "budget {budget}");
        };
        check(0, &[&[100, 300, 200, 900, 50, 60]]);
        check(10_000, &[&[100, 300, 200, 900, 50, 60]]);
        // 3 x 300 = 900 fits 1000; a fourth of 900 would make 3600.
        check(1000, &[&[100, 300, 200], &[900], &[50, 60]]);
        check(600, &[&[100, 300], &[200], &[900], &[50, 60]]);
        check(1, &[&[100], &[300], &[200], &[900], &[50], &[60]]);
    }
}
