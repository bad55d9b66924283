//! The GPU check that `scripts/gpu-check` runs on a machine with an NVIDIA GPU (issue #25).
//! Built elsewhere with `--features cuda` (`scripts/check-cuda --link`); without that feature
//! it compiles but stops at "not compiled with cuda".
//!
//! 1. **CUDA against the CPU** on tiny random models (`xlt_local::testing::config`, hidden
//!    size 32): logits, letter log-probabilities ([`LocalModel::letter_logprobs`]), one LoRA
//!    step's loss and every adapter gradient, within the tolerances below. Each comparison
//!    prints the values it compared and a failure makes the exit status 1.
//! 2. **Timings** on a model of Qwen2.5-0.5B's shape with random weights generated on the
//!    GPU (nothing travels): first-token letter scoring and LoRA training steps (r 16, the
//!    default target modules), in f32 and bf16, as tokens per second.
//!
//! ```text
//! gpu_check [--out FILE] [--device N] [--skip-timing]
//! ```
//! The figures go to stdout and, written whole at the end (temporary file, then renamed), to
//! `--out` (default `gpu-check.txt`).

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use xlt_local::testing::{SMOLLM2_TEMPLATE, config, random_model, tokenizer};
use xlt_local::{
    ChatTemplate, Config, LocalModel, LoraConfig, Model, Ops, TrainConfig, TrainExample,
    assistant_nll, attach_lora, lora_params, train,
};

/// Tolerances, CUDA against the CPU. f32: cuBLAS and candle's CUDA kernels sum in another
/// order than the CPU's faer and fused kernels (the CPU's two paths already differ by up to
/// 1e-5 relative, `tests/fallback.rs`); 1e-4 on logits and the loss, 1e-3 on gradients (a
/// backward pass through several layers), 1e-3 nats on letter log-probabilities are far above
/// reordering and far below a wrong mask, scale or missing term (tens of percent).
/// bf16 (8 bits of mantissa per rounding): logits within 3% of the CPU's f32 (1.3-1.9%
/// measured for bf16 on the CPU, `tests/fallback.rs`), gradients within 40% of the CPU's
/// f64 ones over all adapters (3-22% measured there: hidden size 32 averages nothing out).
const F32_REL: f64 = 1e-4;
const F32_GRAD_REL: f64 = 1e-3;
const LETTER_ABS: f64 = 1e-3;
const BF16_LOGITS_REL: f64 = 0.03;
const BF16_GRAD_REL: f64 = 0.4;

struct Report {
    lines: Vec<String>,
    failures: usize,
}

impl Report {
    fn line(&mut self, s: String) {
        println!("{s}");
        self.lines.push(s);
    }

    fn check(&mut self, what: &str, value: f64, bound: f64) {
        let ok = value < bound; // NaN fails.
        if !ok {
            self.failures += 1;
        }
        let verdict = if ok { "ok" } else { "FAIL" };
        self.line(format!(
            "{verdict:4} {what}: {value:.3e} (bound {bound:.0e})"
        ));
    }
}

fn main() -> Result<()> {
    let mut out = PathBuf::from("gpu-check.txt");
    let mut ordinal = 0usize;
    let mut timing = true;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--out" => out = args.next().context("--out needs a path")?.into(),
            "--device" => ordinal = args.next().context("--device needs N")?.parse()?,
            "--skip-timing" => timing = false,
            other => {
                bail!("unknown argument {other:?} (expected --out FILE, --device N, --skip-timing)")
            }
        }
    }
    let gpu = Device::new_cuda(ordinal).with_context(|| format!("CUDA device {ordinal}"))?;
    let mut report = Report {
        lines: Vec::new(),
        failures: 0,
    };
    report.line(format!(
        "# xlt gpu_check, CUDA device {ordinal}, {} (commit {})",
        std::env::var("XLT_GPU_NAME").unwrap_or_else(|_| "GPU name not given".into()),
        std::env::var("XLT_COMMIT").unwrap_or_else(|_| "unknown".into()),
    ));
    report.line("## CUDA against the CPU, tiny random models".into());
    for family in ["llama", "qwen2", "qwen3"] {
        compare_logits(&mut report, family, &gpu)?;
    }
    compare_letters(&mut report, &gpu)?;
    for family in ["llama", "qwen3"] {
        compare_lora(&mut report, family, &gpu)?;
    }
    if timing {
        report.line("## Timings, Qwen2.5-0.5B's shape, random weights".into());
        for dtype in [DType::F32, DType::BF16] {
            time_scoring(&mut report, &gpu, dtype)?;
            time_training(&mut report, &gpu, dtype)?;
        }
    }
    report.line(format!("failures: {}", report.failures));
    let tmp = out.with_extension("tmp");
    std::fs::write(&tmp, report.lines.join("\n") + "\n")
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &out).with_context(|| format!("renaming to {}", out.display()))?;
    if report.failures > 0 {
        bail!("{} comparison(s) out of bounds", report.failures);
    }
    Ok(())
}

fn template() -> ChatTemplate {
    ChatTemplate::new(SMOLLM2_TEMPLATE, "", "<|im_end|>").expect("the tiny template parses")
}

/// The tiny model's weights (seeded, f32, on the CPU).
fn tiny_weights(cfg: &Config) -> HashMap<String, Tensor> {
    let (varmap, _) = random_model(cfg, Ops::Fused);
    let data = varmap.data().lock().expect("the VarMap lock");
    data.iter()
        .map(|(k, v)| (k.clone(), v.as_detached_tensor()))
        .collect()
}

fn build(
    cfg: &Config,
    w: &HashMap<String, Tensor>,
    ops: Ops,
    dtype: DType,
    dev: &Device,
) -> Result<Model> {
    Ok(Model::new(
        cfg,
        ops,
        VarBuilder::from_tensors(w.clone(), dtype, dev),
    )?)
}

/// `‖a − b‖ / ‖b‖`, in f64 on the CPU.
fn relative(a: &Tensor, b: &Tensor) -> Result<f64> {
    let a = a.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    let b = b.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    let d = (&a - &b)?.sqr()?.sum_all()?.to_scalar::<f64>()?;
    let n = b.sqr()?.sum_all()?.to_scalar::<f64>()?;
    Ok((d / n).sqrt())
}

/// A batch of two prompts of the tiny tokenizer, cut to the same length.
fn tiny_ids(dev: &Device) -> Result<Tensor> {
    let tok = tokenizer();
    let rows: Vec<Vec<u32>> = ["Which letter: A, B, C or D?", "Hi there, model"]
        .iter()
        .map(|t| tok.encode(*t, false).map(|e| e.get_ids().to_vec()))
        .collect::<Result<_, _>>()
        .map_err(anyhow::Error::msg)?;
    let n = rows.iter().map(Vec::len).min().unwrap_or(0);
    let flat: Vec<u32> = rows.iter().flat_map(|r| r[..n].to_vec()).collect();
    Ok(Tensor::from_vec(flat, (rows.len(), n), dev)?)
}

fn compare_logits(report: &mut Report, family: &str, gpu: &Device) -> Result<()> {
    let cfg = config(family);
    let w = tiny_weights(&cfg);
    let logits = |dtype: DType, dev: &Device| -> Result<Tensor> {
        let model = build(&cfg, &w, Ops::Fused, dtype, dev)?;
        Ok(model.forward(&tiny_ids(dev)?, &mut model.new_cache(), None)?)
    };
    let cpu = logits(DType::F32, &Device::Cpu)?;
    let f32 = logits(DType::F32, gpu)?;
    let bf16 = logits(DType::BF16, gpu)?;
    report.check(
        &format!("{family} logits, CUDA f32 against CPU f32, relative"),
        relative(&f32, &cpu)?,
        F32_REL,
    );
    report.check(
        &format!("{family} logits, CUDA bf16 against CPU f32, relative"),
        relative(&bf16, &cpu)?,
        BF16_LOGITS_REL,
    );
    Ok(())
}

fn compare_letters(report: &mut Report, gpu: &Device) -> Result<()> {
    let cfg = config("qwen2");
    let w = tiny_weights(&cfg);
    let scores = |dev: &Device| -> Result<Vec<[f64; 4]>> {
        let model = LocalModel::from_parts(
            build(&cfg, &w, Ops::Fused, DType::F32, dev)?,
            tokenizer(),
            template(),
            cfg.eos_token_id.clone(),
        );
        let prompts: Vec<Vec<u32>> = ["Q?\nA. x\nB. y\nC. z\nD. w", "Short"]
            .iter()
            .map(|t| model.encode_chat(&[xlt_provider_message(t)]))
            .collect::<Result<_, _>>()?;
        Ok(model.letter_logprobs(&prompts)?)
    };
    let cpu = scores(&Device::Cpu)?;
    let cuda = scores(gpu)?;
    let mut worst = 0f64;
    for (c, g) in cpu.iter().zip(&cuda) {
        for k in 0..4 {
            worst = worst.max((c[k] - g[k]).abs());
        }
    }
    report.line(format!(
        "     letter log-probabilities, CPU {cpu:?}, CUDA {cuda:?}"
    ));
    report.check(
        "letter log-probabilities, CUDA f32 against CPU f32, largest difference (nats)",
        worst,
        LETTER_ABS,
    );
    Ok(())
}

fn xlt_provider_message(text: &str) -> xlt_provider::ChatMessage {
    xlt_provider::ChatMessage::new(xlt_provider::Role::User, text)
}

/// Adapter gradients by module: `(module, d lora_A, d lora_B)`, on the CPU in f64.
type Grads = Vec<(String, Tensor, Tensor)>;

/// One LoRA step's loss and gradients of `family` in `dtype` on `dev`. The adapter is the
/// same on every device: `lora_A` from the seed (drawn on the host), `lora_B` set to fixed
/// values (PEFT starts it at zero, where `lora_A` gets no gradient). No dropout.
fn lora_step(family: &str, dtype: DType, dev: &Device) -> Result<(f64, Grads)> {
    let cfg = config(family);
    let w = tiny_weights(&cfg);
    let mut model = build(&cfg, &w, Ops::Differentiable, dtype, dev)?;
    let lora = LoraConfig {
        r: 4,
        lora_dropout: 0.0,
        ..LoraConfig::default()
    };
    attach_lora(&mut model, &lora, 3)?;
    for (k, p) in lora_params(&model).into_iter().enumerate() {
        let b = p.b.as_tensor();
        let v: Vec<f64> = (0..b.elem_count())
            .map(|i| 0.1 * ((i * 7 + k * 13) as f64).sin())
            .collect();
        let t = Tensor::from_vec(v, b.shape(), &Device::Cpu)?
            .to_dtype(b.dtype())?
            .to_device(b.device())?;
        p.b.set(&t)?;
    }
    let tok = tokenizer();
    let examples: Vec<TrainExample> = [
        ("Pick one: A, B, C or D?", "D"),
        ("Another, longer question?", "A"),
    ]
    .iter()
    .map(|(q, a)| {
        xlt_local::encode_example(
            &tok,
            &template(),
            &[
                xlt_provider_message(q),
                xlt_provider::ChatMessage::new(xlt_provider::Role::Assistant, *a),
            ],
        )
    })
    .collect::<Result<_, _>>()?;
    let batch: Vec<&TrainExample> = examples.iter().collect();
    let (nll, _) = assistant_nll(&model, &batch)?;
    let grads = nll.backward()?;
    let mut out = Vec::new();
    for p in lora_params(&model) {
        let get = |v: &candle_core::Var| -> Result<Tensor> {
            Ok(grads
                .get(v.as_tensor())
                .with_context(|| format!("{}: no gradient", p.module))?
                .to_device(&Device::Cpu)?
                .to_dtype(DType::F64)?)
        };
        out.push((p.module.clone(), get(&p.a)?, get(&p.b)?));
    }
    let loss = nll
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?;
    Ok((loss, out))
}

/// `‖a − b‖ / ‖b‖` over all adapter gradients, and the worst single tensor.
fn grad_errors(a: &Grads, b: &Grads) -> Result<(f64, f64, String)> {
    let (mut d, mut n, mut worst, mut at) = (0f64, 0f64, 0f64, String::new());
    for ((module, fa, fb), (_, sa, sb)) in a.iter().zip(b) {
        for (which, f, s) in [("lora_A", fa, sa), ("lora_B", fb, sb)] {
            d += (f - s)?.sqr()?.sum_all()?.to_scalar::<f64>()?;
            n += s.sqr()?.sum_all()?.to_scalar::<f64>()?;
            let rel = relative(f, s)?;
            if rel > worst {
                (worst, at) = (rel, format!("{module} {which}"));
            }
        }
    }
    Ok(((d / n).sqrt(), worst, at))
}

fn compare_lora(report: &mut Report, family: &str, gpu: &Device) -> Result<()> {
    let (cpu_loss, cpu) = lora_step(family, DType::F32, &Device::Cpu)?;
    let (cuda_loss, cuda) = lora_step(family, DType::F32, gpu)?;
    let (_, truth) = lora_step(family, DType::F64, &Device::Cpu)?;
    let (bf_loss, bf) = lora_step(family, DType::BF16, gpu)?;
    report.line(format!(
        "     {family} LoRA loss: CPU f32 {cpu_loss:.6}, CUDA f32 {cuda_loss:.6}, CUDA bf16 {bf_loss:.6}"
    ));
    report.check(
        &format!("{family} LoRA loss, CUDA f32 against CPU f32, relative"),
        (cuda_loss - cpu_loss).abs() / cpu_loss.abs(),
        F32_REL,
    );
    let (_, worst, at) = grad_errors(&cuda, &cpu)?;
    report.check(
        &format!("{family} LoRA gradients, CUDA f32 against CPU f32, worst tensor ({at})"),
        worst,
        F32_GRAD_REL,
    );
    report.check(
        &format!("{family} LoRA loss, CUDA bf16 against CPU f32, relative"),
        (bf_loss - cpu_loss).abs() / cpu_loss.abs(),
        BF16_LOGITS_REL,
    );
    let (all, _, _) = grad_errors(&bf, &truth)?;
    report.check(
        &format!("{family} LoRA gradients, CUDA bf16 against CPU f64, all adapters"),
        all,
        BF16_GRAD_REL,
    );
    Ok(())
}

/// Qwen2.5-0.5B-Instruct's `config.json` (the fields this crate reads).
fn qwen05_config() -> Config {
    serde_json::from_value(serde_json::json!({
        "model_type": "qwen2",
        "vocab_size": 151936,
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "max_position_embeddings": 32768,
        "tie_word_embeddings": true,
        "initializer_range": 0.02,
        "eos_token_id": 151645,
    }))
    .expect("the Qwen2.5-0.5B config deserializes")
}

/// A model of Qwen2.5-0.5B's shape on `dev` in `dtype`, with weights drawn there (normal,
/// standard deviation 0.02; norm scales 1) as plain tensors, so that training sees only the
/// adapters as variables.
fn qwen05(ops: Ops, dtype: DType, dev: &Device) -> Result<(Config, Model)> {
    let cfg = qwen05_config();
    let varmap = VarMap::new();
    Model::new(&cfg, ops, VarBuilder::from_varmap(&varmap, dtype, dev))?;
    let weights = {
        let data = varmap.data().lock().expect("the VarMap lock");
        data.iter()
            .map(|(k, v)| {
                let t = v.as_tensor();
                let value = if k.ends_with("norm.weight") {
                    t.ones_like()?
                } else {
                    Tensor::randn(0f32, 0.02, t.shape(), dev)?.to_dtype(dtype)?
                };
                Ok((k.clone(), value))
            })
            .collect::<Result<HashMap<_, _>>>()?
    };
    drop(varmap);
    let model = Model::new(&cfg, ops, VarBuilder::from_tensors(weights, dtype, dev))?;
    Ok((cfg, model))
}

/// Token ids drawn from the model's vocabulary (fixed, not random: the speed does not depend
/// on them).
fn synthetic_prompt(len: usize, row: usize, vocab: usize) -> Vec<u32> {
    (0..len)
        .map(|i| ((i * 7919 + row * 104_729 + 17) % (vocab - 1)) as u32)
        .collect()
}

const SCORE_BATCH: usize = 16;
const SCORE_LEN: usize = 256;
const SCORE_REPS: usize = 5;
const TRAIN_BATCH: usize = 8;
const TRAIN_LEN: usize = 256;
const TRAIN_STEPS: usize = 6;

fn time_scoring(report: &mut Report, gpu: &Device, dtype: DType) -> Result<()> {
    let (cfg, model) = qwen05(Ops::Fused, dtype, gpu)?;
    let model = LocalModel::from_parts(model, tokenizer(), template(), cfg.eos_token_id.clone());
    let prompts: Vec<Vec<u32>> = (0..SCORE_BATCH)
        .map(|r| synthetic_prompt(SCORE_LEN, r, cfg.vocab_size))
        .collect();
    model.letter_logprobs(&prompts)?; // Warm-up: cuBLAS handles, kernels loaded.
    let start = Instant::now();
    for _ in 0..SCORE_REPS {
        model.letter_logprobs(&prompts)?;
    }
    let secs = start.elapsed().as_secs_f64() / SCORE_REPS as f64;
    report.line(format!(
        "scoring {dtype:?}: batch {SCORE_BATCH} x {SCORE_LEN} tokens, {:.1} ms per batch, {:.0} tokens/s",
        secs * 1e3,
        (SCORE_BATCH * SCORE_LEN) as f64 / secs
    ));
    Ok(())
}

fn time_training(report: &mut Report, gpu: &Device, dtype: DType) -> Result<()> {
    let (cfg, mut model) = qwen05(Ops::Differentiable, dtype, gpu)?;
    attach_lora(&mut model, &LoraConfig::default(), 7)?;
    // The loss on each example's last 8 tokens (an answer after a long prompt).
    let examples: Vec<TrainExample> = (0..TRAIN_BATCH * TRAIN_STEPS)
        .map(|r| TrainExample {
            input_ids: synthetic_prompt(TRAIN_LEN, r, cfg.vocab_size),
            loss_mask: (0..TRAIN_LEN).map(|i| i >= TRAIN_LEN - 8).collect(),
        })
        .collect();
    let config = TrainConfig {
        epochs: 1,
        batch_size: TRAIN_BATCH,
        ..TrainConfig::default()
    };
    let mut stamps = vec![Instant::now()];
    let steps = train(&mut model, &examples, &config, |_| {
        stamps.push(Instant::now());
        ControlFlow::Continue(())
    })?;
    // The first step pays for warm-up; the median of the rest.
    let mut secs: Vec<f64> = stamps
        .windows(2)
        .skip(1)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    secs.sort_by(f64::total_cmp);
    let median = secs.get(secs.len() / 2).copied().unwrap_or(f64::NAN);
    let last_loss = steps.last().map_or(f64::NAN, |s| s.loss);
    report.line(format!(
        "LoRA training {dtype:?}: r 16, batch {TRAIN_BATCH} x {TRAIN_LEN} tokens, {} steps, median {:.1} ms per step, {:.0} tokens/s (last loss {last_loss:.3})",
        steps.len(),
        median * 1e3,
        (TRAIN_BATCH * TRAIN_LEN) as f64 / median
    ));
    Ok(())
}
