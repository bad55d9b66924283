//! The training part of `bench_local` (`--train`): LoRA steps on Global-MMLU Lite English
//! questions as chat training examples (the study's prompt, the answer letter as the
//! assistant's reply, the loss on the assistant's tokens), with PEFT's settings (r = 16,
//! alpha 32, dropout 0.05 on all seven projections, AdamW at 2e-4): examples and tokens
//! per second and peak memory; with `--python`, the same examples through Python
//! `transformers` + `peft` (`scripts/bench_peft.py`) in the same run, side by side.
//!
//! Tokens are the examples' own tokens (no padding), on both sides. One step (the first
//! batch) is a warm-up and not timed.

use std::ops::ControlFlow;
use std::time::Instant;

use xlt::data::{Language, PromptTemplate};
use xlt::local::{
    LoadOptions, LocalModel, LoraConfig, ModelSource, Ops, TrainConfig, TrainExample, attach_lora,
    encode_example, train,
};
use xlt::provider::{ChatMessage, Role};

/// The training benchmark's options.
#[derive(clap::Args)]
pub struct TrainArgs {
    /// Benchmark LoRA training steps instead of first-token scoring.
    #[arg(long)]
    pub train: bool,
    /// Training: timed optimizer steps (after one warm-up step).
    #[arg(long, default_value_t = 4)]
    pub train_steps: usize,
    /// Training: examples per step.
    #[arg(long, default_value_t = 8)]
    pub train_batch: usize,
    /// Training: LoRA rank (alpha is twice the rank, as in LoRA recipes).
    #[arg(long, default_value_t = 16)]
    pub train_rank: usize,
}

struct Row {
    engine: String,
    examples_per_s: f64,
    tokens_per_s: f64,
    peak_mib: f64,
    seconds_per_step: f64,
}

/// Runs the training benchmark and prints its Markdown table.
pub fn run(
    base_model: &str,
    device: &str,
    args: &TrainArgs,
    python: Option<&str>,
    peak_mib: fn() -> f64,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.train_steps > 0 && args.train_batch > 0,
        "--train-steps and --train-batch must be positive"
    );
    let path = xlt::fixtures_dir().join("global-mmlu/lite/en.test.csv");
    let mut questions = xlt::data::load_file(&path, Some(Language::English))?;
    questions.sort_by(|a, b| a.sample_id.cmp(&b.sample_id));
    let needed = (args.train_steps + 1) * args.train_batch;
    anyhow::ensure!(
        questions.len() >= needed,
        "{} has {} questions, fewer than the {needed} that --train-steps and --train-batch ask for",
        path.display(),
        questions.len()
    );
    questions.truncate(needed);
    let template = PromptTemplate::default();
    let chats: Vec<Vec<ChatMessage>> = questions
        .iter()
        .map(|q| {
            let mut m = Vec::new();
            if let Some(s) = template.system() {
                m.push(ChatMessage::new(Role::System, s));
            }
            m.push(ChatMessage::new(Role::User, template.render_user(q)));
            m.push(ChatMessage::new(Role::Assistant, q.answer.as_str()));
            m
        })
        .collect();

    let options = LoadOptions {
        device: xlt::local::parse_device(device)?,
        ops: Ops::Differentiable,
        ..LoadOptions::default()
    };
    let mut model = LocalModel::load(&ModelSource::parse(base_model)?, &options)?;
    let examples: Vec<TrainExample> = chats
        .iter()
        .map(|m| encode_example(model.tokenizer(), model.template(), m))
        .collect::<Result<_, _>>()?;
    let lora = LoraConfig {
        r: args.train_rank,
        lora_alpha: 2.0 * args.train_rank as f64,
        ..LoraConfig::default()
    };
    attach_lora(model.model_mut(), &lora, 0)?;
    let config = TrainConfig {
        epochs: 1,
        batch_size: args.train_batch,
        warmup_ratio: 0.0,
        ..TrainConfig::default()
    };
    let (warm, timed) = examples.split_at(args.train_batch);
    train(model.model_mut(), warm, &config, |_| {
        ControlFlow::Continue(())
    })?;
    let tokens: usize = timed.iter().map(|e| e.input_ids.len()).sum();
    let t0 = Instant::now();
    let reports = train(model.model_mut(), timed, &config, |r| {
        eprintln!(
            "step {}/{}: loss {:.3}, {:.1} s",
            r.step, r.total_steps, r.loss, r.seconds
        );
        ControlFlow::Continue(())
    })?;
    let s = t0.elapsed().as_secs_f64();
    let mut table = vec![Row {
        engine: format!("xlt-local (candle) f32, {device}"),
        examples_per_s: timed.len() as f64 / s,
        tokens_per_s: tokens as f64 / s,
        peak_mib: peak_mib(),
        seconds_per_step: s / reports.len() as f64,
    }];
    eprintln!(
        "{} timed steps of {} examples, {tokens} tokens ({:.0} per example)",
        reports.len(),
        args.train_batch,
        tokens as f64 / timed.len() as f64
    );
    drop(model);

    if let Some(python) = python {
        let gguf = match ModelSource::parse(base_model)? {
            ModelSource::Gguf(p) => p,
            _ => anyhow::bail!("--python compares GGUF files only"),
        };
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("examples.jsonl");
        let mut text = String::new();
        for m in &chats {
            text += &serde_json::to_string(&serde_json::json!({ "messages": m }))?;
            text.push('\n');
        }
        std::fs::write(&file, text)?;
        let script = xlt::fixtures_dir().join("../scripts/bench_peft.py");
        let (batch, rank) = (args.train_batch.to_string(), args.train_rank.to_string());
        let script_args = [
            "--model".as_ref(),
            gguf.as_os_str(),
            "--examples".as_ref(),
            file.as_os_str(),
            "--batch".as_ref(),
            batch.as_ref(),
            "--rank".as_ref(),
            rank.as_ref(),
        ];
        for v in super::python_rows(python, &script, &script_args)? {
            table.push(Row {
                engine: v["engine"].as_str().unwrap_or("peft").to_owned(),
                examples_per_s: v["examples_per_s"].as_f64().unwrap_or(f64::NAN),
                tokens_per_s: v["tokens_per_s"].as_f64().unwrap_or(f64::NAN),
                peak_mib: v["peak_mib"].as_f64().unwrap_or(f64::NAN),
                seconds_per_step: v["seconds_per_step"].as_f64().unwrap_or(f64::NAN),
            });
        }
    }

    println!("| engine | LoRA r | batch | examples/s | tokens/s | s/step | peak memory (MiB) |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in &table {
        println!(
            "| {} | {} | {} | {:.2} | {:.0} | {:.1} | {:.0} |",
            r.engine,
            args.train_rank,
            args.train_batch,
            r.examples_per_s,
            r.tokens_per_s,
            r.seconds_per_step,
            r.peak_mib
        );
    }
    Ok(())
}
