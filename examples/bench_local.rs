//! First-token scoring of Global-MMLU Lite English questions with a local model: questions
//! per second, prompt tokens per second and peak memory, one prompt at a time and in
//! left-padded batches (in input order, and sorted by length as the local provider forms
//! them); with `--python`, the same prompts through Python `transformers`
//! (`scripts/bench_transformers.py`) in the same run, side by side.
//!
//! ```text
//! cargo run --release --example bench_local -- --base-model <FILE.gguf|DIR|ID> \
//!     [--questions 40] [--batch 8] [--device cpu] [--dtype f32] [--python python3]
//! ```
//! Prints a Markdown table. Accuracy is the share of questions whose most likely letter
//! token (`A` to `D`) is the answer.
//!
//! With `--train`, LoRA training steps instead (`examples/train_bench`), beside Python
//! `transformers` + `peft` (`scripts/bench_peft.py`) with `--python`:
//!
//! ```text
//! cargo run --release --example bench_local -- --train --base-model <FILE.gguf|DIR|ID> \
//!     [--train-steps 4] [--train-batch 8] [--train-rank 16] [--device cpu] [--python python3]
//! ```

use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use xlt::data::{AnswerLetter, Language, PromptTemplate};
use xlt::local::{LoadOptions, LocalModel, ModelSource};
use xlt::provider::{ChatMessage, Role};
mod common;

mod train_bench;

/// Benchmark local first-token scoring.
#[derive(Parser)]
struct Args {
    /// The model: a .gguf file, a model directory or a Hub id in the local cache.
    #[arg(long)]
    base_model: String,
    /// Questions (the first of the Lite English test file by sample id).
    #[arg(long, default_value_t = 40, value_parser = common::at_least_one::<usize>)]
    questions: usize,
    /// Prompts per batch in the batched run.
    #[arg(long, default_value_t = 8, value_parser = common::at_least_one::<usize>)]
    batch: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// f32 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Tokens generated at most per question in the generation run (0: no generation run);
    /// 128 is the study's `--max-tokens` default.
    #[arg(long, default_value_t = 128)]
    generate_tokens: usize,
    /// A Python with torch and transformers: run the same prompts through it too.
    #[arg(long)]
    python: Option<String>,
    #[command(flatten)]
    train: train_bench::TrainArgs,
}

struct Row {
    engine: String,
    mode: String,
    questions_per_s: f64,
    tokens_per_s: f64,
    peak_mib: f64,
    accuracy: Option<f64>,
}

/// Peak resident memory of this process (Linux `VmHWM`), MiB.
fn peak_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() -> std::process::ExitCode {
    common::exit_code(run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    if args.train.train {
        return train_bench::run(
            &args.base_model,
            &args.device,
            &args.train,
            args.python.as_deref(),
            peak_mib,
        );
    }
    let path = xlt::fixtures_dir().join("global-mmlu/lite/en.test.csv");
    let mut questions = xlt::data::load_file(&path, Some(Language::English))?;
    questions.sort_by(|a, b| a.sample_id.cmp(&b.sample_id));
    questions.truncate(args.questions);
    let template = PromptTemplate::default();
    let chats: Vec<Vec<ChatMessage>> = questions
        .iter()
        .map(|q| {
            let mut m = Vec::new();
            if let Some(s) = template.system() {
                m.push(ChatMessage::new(Role::System, s));
            }
            m.push(ChatMessage::new(Role::User, template.render_user(q)));
            m
        })
        .collect();

    let options = LoadOptions {
        device: xlt::local::parse_device(&args.device)?,
        dtype: xlt::local::parse_dtype(&args.dtype)?,
        ..LoadOptions::default()
    };
    let t0 = Instant::now();
    let model = LocalModel::load(&ModelSource::parse(&args.base_model)?, &options)?;
    let load_s = t0.elapsed().as_secs_f64();
    let prompts: Vec<Vec<u32>> = chats
        .iter()
        .map(|m| model.encode_chat(m))
        .collect::<Result<_, _>>()?;
    let tokens: usize = prompts.iter().map(Vec::len).sum();
    let letters: Vec<u32> = ["A", "B", "C", "D"]
        .iter()
        .map(|l| {
            model
                .tokenizer()
                .token_to_id(l)
                .context("no token for a letter")
        })
        .collect::<anyhow::Result<_>>()?;
    let accuracy = |rows: &[Vec<f32>]| {
        let right = rows
            .iter()
            .zip(&questions)
            .filter(|(row, q)| {
                let best = (0..4)
                    .max_by(|&a, &b| row[letters[a] as usize].total_cmp(&row[letters[b] as usize]))
                    .unwrap();
                AnswerLetter::ALL[best] == q.answer
            })
            .count();
        right as f64 / rows.len() as f64
    };
    let engine = format!("xlt-local (candle) {}", args.dtype);
    let mut table = Vec::new();

    let t0 = Instant::now();
    let mut rows = Vec::new();
    for p in &prompts {
        rows.extend(model.next_token_logprobs(std::slice::from_ref(p))?);
    }
    let s = t0.elapsed().as_secs_f64();
    table.push(Row {
        engine: engine.clone(),
        mode: "unbatched".into(),
        questions_per_s: prompts.len() as f64 / s,
        tokens_per_s: tokens as f64 / s,
        peak_mib: peak_mib(),
        accuracy: Some(accuracy(&rows)),
    });

    // Batches in input order, then batches of prompts sorted by length (as the local
    // provider's worker forms them), which pad less.
    let batch = args.batch.max(1);
    let mut by_length: Vec<usize> = (0..prompts.len()).collect();
    by_length.sort_by_key(|&i| prompts[i].len());
    let input_order: Vec<usize> = (0..prompts.len()).collect();
    for (mode, order) in [
        (format!("batch {batch}"), &input_order),
        (format!("batch {batch}, sorted by length"), &by_length),
    ] {
        let t0 = Instant::now();
        let mut rows = vec![Vec::new(); prompts.len()];
        for chunk in order.chunks(batch) {
            let group: Vec<Vec<u32>> = chunk.iter().map(|&i| prompts[i].clone()).collect();
            for (&i, row) in chunk.iter().zip(model.next_token_logprobs(&group)?) {
                rows[i] = row;
            }
        }
        let s = t0.elapsed().as_secs_f64();
        table.push(Row {
            engine: engine.clone(),
            mode,
            questions_per_s: prompts.len() as f64 / s,
            tokens_per_s: tokens as f64 / s,
            peak_mib: peak_mib(),
            accuracy: Some(accuracy(&rows)),
        });
    }
    // Letter scoring (issue #22), as `--scoring letters` evaluates: the letters'
    // log-probabilities over the full vocabulary, in batches sorted by length. Then
    // generation as `--scoring generate` evaluates (greedy, up to `--generate-tokens`), its
    // letter read from the text by the grading rules, on the same questions.
    let t0 = Instant::now();
    let mut letter_rows = vec![[0f64; 4]; prompts.len()];
    for chunk in by_length.chunks(batch) {
        let group: Vec<Vec<u32>> = chunk.iter().map(|&i| prompts[i].clone()).collect();
        for (&i, row) in chunk.iter().zip(model.letter_logprobs(&group)?) {
            letter_rows[i] = row;
        }
    }
    let s = t0.elapsed().as_secs_f64();
    let right = letter_rows
        .iter()
        .zip(&questions)
        .filter(|(row, q)| {
            let best = (0..4).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
            AnswerLetter::ALL[best] == q.answer
        })
        .count();
    table.push(Row {
        engine: engine.clone(),
        mode: format!("letters, batch {batch}, sorted by length"),
        questions_per_s: prompts.len() as f64 / s,
        tokens_per_s: tokens as f64 / s,
        peak_mib: peak_mib(),
        accuracy: Some(right as f64 / prompts.len() as f64),
    });
    if args.generate_tokens > 0 {
        let params = xlt::local::GenerateParams {
            max_tokens: args.generate_tokens,
            ..Default::default()
        };
        let t0 = Instant::now();
        let mut texts = vec![String::new(); prompts.len()];
        for chunk in by_length.chunks(batch) {
            let group: Vec<Vec<u32>> = chunk.iter().map(|&i| prompts[i].clone()).collect();
            let gens = model.generate(&group, &vec![params; group.len()])?;
            for (&i, g) in chunk.iter().zip(gens) {
                texts[i] = g.text;
            }
        }
        let s = t0.elapsed().as_secs_f64();
        let right = texts
            .iter()
            .zip(&questions)
            .filter(|(t, q)| xlt::grade::extract(t, Some(&q.options)).letter == Some(q.answer))
            .count();
        table.push(Row {
            engine: engine.clone(),
            mode: format!(
                "generate (up to {} tokens), batch {batch}, sorted by length",
                args.generate_tokens
            ),
            questions_per_s: prompts.len() as f64 / s,
            tokens_per_s: tokens as f64 / s,
            peak_mib: peak_mib(),
            accuracy: Some(right as f64 / prompts.len() as f64),
        });
    }
    eprintln!(
        "loaded {} in {load_s:.2} s; {} questions, {tokens} prompt tokens",
        model.origin(),
        prompts.len()
    );

    if let Some(python) = &args.python {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("prompts.jsonl");
        let mut text = String::new();
        for m in &chats {
            text += &serde_json::to_string(&serde_json::json!({ "messages": m }))?;
            text.push('\n');
        }
        std::fs::write(&file, text)?;
        let gguf = match ModelSource::parse(&args.base_model)? {
            ModelSource::Gguf(p) => p,
            _ => anyhow::bail!("--python compares GGUF files only"),
        };
        let script = xlt::fixtures_dir().join("../scripts/bench_transformers.py");
        let batch = args.batch.to_string();
        let script_args = [
            "--model".as_ref(),
            gguf.as_os_str(),
            "--prompts".as_ref(),
            file.as_os_str(),
            "--batch".as_ref(),
            batch.as_ref(),
        ];
        for v in python_rows(python, &script, &script_args)? {
            table.push(Row {
                engine: v["engine"].as_str().unwrap_or("transformers").to_owned(),
                mode: v["mode"].as_str().unwrap_or("").to_owned(),
                questions_per_s: v["questions_per_s"].as_f64().unwrap_or(f64::NAN),
                tokens_per_s: v["prompt_tokens_per_s"].as_f64().unwrap_or(f64::NAN),
                peak_mib: v["peak_mib"].as_f64().unwrap_or(f64::NAN),
                accuracy: None,
            });
        }
    }

    // Figures from different CPUs are not one series: the table says which CPU it ran on.
    common::outln!("CPU: {}", cpu_description())?;
    common::outln!("")?;
    common::outln!(
        "| engine | mode | questions/s | prompt tokens/s | peak memory (MiB) | letter accuracy |"
    )?;
    common::outln!("|---|---|---:|---:|---:|---:|")?;
    for r in &table {
        common::outln!(
            "| {} | {} | {:.2} | {:.0} | {:.0} | {} |",
            r.engine,
            r.mode,
            r.questions_per_s,
            r.tokens_per_s,
            r.peak_mib,
            r.accuracy
                .map_or("".to_owned(), |a| format!("{:.0}%", 100.0 * a))
        )?;
    }
    Ok(())
}

/// The CPU's model name and the vector instruction sets the kernels can use (Linux
/// `/proc/cpuinfo`; faer and pulp pick AVX-512 or AVX2 at run time).
pub(crate) fn cpu_description() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
    };
    let model = field("model name").unwrap_or_else(|| "unknown CPU".to_owned());
    let flags = field("flags").unwrap_or_default();
    let sets: Vec<&str> = [
        "avx2",
        "fma",
        "avx512f",
        "avx512_bf16",
        "avx512_fp16",
        "avx512_vnni",
        "amx_bf16",
    ]
    .into_iter()
    .filter(|f| flags.split_whitespace().any(|x| x == *f))
    .collect();
    format!(
        "{model}, {} threads ({})",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        sets.join(", ")
    )
}

/// Runs a Python benchmark `script` (`scripts/bench_*.py`) with `args` and returns the JSON
/// object of each line of its standard output that starts with `{`: one table row each.
///
/// # Errors
/// The script cannot be started or exits non-zero (its standard error is in the message), or
/// a row is not JSON.
pub(crate) fn python_rows(
    python: &str,
    script: &std::path::Path,
    args: &[&std::ffi::OsStr],
) -> anyhow::Result<Vec<serde_json::Value>> {
    let out = std::process::Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .with_context(|| format!("running {python} {}", script.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)?
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}
