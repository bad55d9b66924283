//! Benchmarks of a local model beside a Python peer: scoring (first-token log-probabilities,
//! letters, generation) and LoRA training, with the CPU they ran on. `examples/bench_local`
//! is the command line over this module; `docs/BENCHMARKS.md` holds the figures.
//!
//! Every run reports questions (or examples) per second, prompt tokens per second and the
//! process's peak resident memory, so that a row is comparable with the rows the Python
//! scripts (`scripts/bench_transformers.py`, `scripts/bench_peft.py`) print for the same
//! prompts. Figures from different CPUs are not one series: [`cpu_description`] names the
//! CPU above every table.

use std::ffi::OsStr;
use std::ops::ControlFlow;
use std::path::Path;
use std::time::Instant;

use xlt_provider::ChatMessage;

use crate::{
    ChatPrompt, GenerateParams, LocalError, LocalModel, LoraConfig, TrainConfig, TrainExample,
    attach_lora, encode_example, train,
};

/// One row of a benchmark table.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchRow {
    /// The engine and its settings (`xlt-local (candle) f32`, `transformers 5.25.0 f32`).
    pub engine: String,
    /// What was run (`batch 8, sorted by length`); empty for training rows.
    pub mode: String,
    /// Questions (scoring) or training examples per second.
    pub per_s: f64,
    /// Prompt (or example) tokens per second, padding not counted.
    pub tokens_per_s: f64,
    /// Peak resident memory of the process that ran it, MiB (NaN where unknown).
    pub peak_mib: f64,
    /// Share of questions whose most likely letter is the answer, in [0, 1] (scoring rows of
    /// this crate; `None` for the peer's rows and for training).
    pub accuracy: Option<f64>,
    /// Seconds per optimizer step (training rows only).
    pub seconds_per_step: Option<f64>,
}

/// What a scoring benchmark runs over: tokenized prompts and the index (0 = A .. 3 = D) of
/// each question's answer.
#[derive(Debug, Clone)]
pub struct ScoringInput {
    /// One chat prompt per question, as [`LocalModel::encode_chat_prompt`] tokenizes it
    /// (with its context, the system turn and the user header, as the local provider scores it).
    pub prompts: Vec<ChatPrompt>,
    /// The answer's index per question, 0..4.
    pub answers: Vec<usize>,
}

impl ScoringInput {
    /// Tokenizes `chats` with `model`'s chat template.
    ///
    /// # Errors
    /// The template or the tokenizer fails on a chat; `answers` is not one index in 0..4
    /// per chat.
    pub fn new(
        model: &LocalModel,
        chats: &[Vec<ChatMessage>],
        answers: Vec<usize>,
    ) -> Result<ScoringInput, LocalError> {
        if answers.len() != chats.len() || answers.iter().any(|&a| a > 3) {
            return Err(LocalError::Invalid(format!(
                "{} answers (each 0..4) for {} prompts",
                answers.len(),
                chats.len()
            )));
        }
        let prompts = chats
            .iter()
            .map(|m| model.encode_chat_prompt(m))
            .collect::<Result<_, _>>()?;
        Ok(ScoringInput { prompts, answers })
    }

    /// Prompt tokens over all questions.
    pub fn tokens(&self) -> usize {
        self.prompts.iter().map(|p| p.tokens().len()).sum()
    }

    /// Question indices in batches of `batch`: in input order, or sorted by prompt length
    /// (as the local provider's worker forms them, so that batches pad less).
    pub fn batches(&self, batch: usize, sorted: bool) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..self.prompts.len()).collect();
        if sorted {
            order.sort_by_key(|&i| self.prompts[i].tokens().len());
        }
        order.chunks(batch.max(1)).map(<[usize]>::to_vec).collect()
    }

    fn group(&self, chunk: &[usize]) -> Vec<ChatPrompt> {
        chunk.iter().map(|&i| self.prompts[i].clone()).collect()
    }

    /// The tokens alone: no context kept between prompts.
    fn group_tokens(&self, chunk: &[usize]) -> Vec<Vec<u32>> {
        chunk
            .iter()
            .map(|&i| self.prompts[i].tokens().to_vec())
            .collect()
    }

    fn row(&self, engine: &str, mode: String, seconds: f64, right: usize) -> BenchRow {
        let n = self.prompts.len() as f64;
        BenchRow {
            engine: engine.to_owned(),
            mode,
            per_s: n / seconds,
            tokens_per_s: self.tokens() as f64 / seconds,
            peak_mib: peak_rss_mib(),
            accuracy: Some(right as f64 / n),
            seconds_per_step: None,
        }
    }
}

fn argmax(scores: impl Iterator<Item = f64>) -> usize {
    scores
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |best, (i, s)| {
            if s > best.1 { (i, s) } else { best }
        })
        .0
}

/// Grades a generated answer: `(question index, text) -> whether it is right`.
pub type GradeText<'a> = &'a dyn Fn(usize, &str) -> bool;

/// Scoring runs of `model` over `input`, one row each, in this order: first-token
/// log-probabilities one prompt at a time (the shared context's keys and values computed
/// once and kept, as the local provider keeps them), one prompt at a time with every prompt's
/// context computed again (what a pass over the tokens alone does), in batches of `batch`
/// in input order and sorted by length; letter log-probabilities ([`LocalModel::letter_logprobs`], what
/// `--scoring letters` evaluates) in sorted batches; and, when `generate` is
/// `Some((max_tokens, is_right))`, greedy generation of up to `max_tokens` in sorted
/// batches, each text graded by `is_right(question index, text)`.
///
/// # Errors
/// A forward pass fails.
pub fn scoring_rows(
    model: &LocalModel,
    engine: &str,
    input: &ScoringInput,
    batch: usize,
    generate: Option<(usize, GradeText<'_>)>,
) -> Result<Vec<BenchRow>, LocalError> {
    // The vocabulary's `A`..`D` tokens, as the first-token runs read them.
    let letters: Vec<u32> = xlt_provider::LETTERS
        .iter()
        .map(|l| {
            model
                .tokenizer()
                .token_to_id(&l.to_string())
                .ok_or_else(|| LocalError::Tokenizer(format!("no token for the answer letter {l}")))
        })
        .collect::<Result<_, _>>()?;
    let first_token_right = |rows: &[(usize, Vec<f32>)]| {
        rows.iter()
            .filter(|(i, row)| {
                argmax(letters.iter().map(|&t| f64::from(row[t as usize]))) == input.answers[*i]
            })
            .count()
    };
    let mut table = Vec::new();
    for (mode, batches) in [
        ("unbatched".to_owned(), input.batches(1, false)),
        (format!("batch {batch}"), input.batches(batch, false)),
        (
            format!("batch {batch}, sorted by length"),
            input.batches(batch, true),
        ),
    ] {
        let t0 = Instant::now();
        let mut rows = Vec::new();
        for chunk in &batches {
            let out = model.next_token_logprobs(&input.group(chunk))?;
            rows.extend(chunk.iter().copied().zip(out));
        }
        let s = t0.elapsed().as_secs_f64();
        table.push(input.row(engine, mode, s, first_token_right(&rows)));
        if table.len() == 1 {
            // Second, as the Python peer's first row runs cold and xlt-local's first row
            // (which also computes the context once) does too.
            let t0 = Instant::now();
            let mut rows = Vec::new();
            for chunk in &batches {
                let out = model.next_token_logprobs(&input.group_tokens(chunk))?;
                rows.extend(chunk.iter().copied().zip(out));
            }
            let mode = "unbatched, context recomputed".to_owned();
            let s = t0.elapsed().as_secs_f64();
            table.push(input.row(engine, mode, s, first_token_right(&rows)));
        }
    }
    let sorted = input.batches(batch, true);
    let t0 = Instant::now();
    let mut right = 0;
    for chunk in &sorted {
        for (&i, row) in chunk
            .iter()
            .zip(model.letter_logprobs(&input.group(chunk))?)
        {
            right += usize::from(argmax(row.into_iter()) == input.answers[i]);
        }
    }
    let mode = format!("letters, batch {batch}, sorted by length");
    table.push(input.row(engine, mode, t0.elapsed().as_secs_f64(), right));
    if let Some((max_tokens, is_right)) = generate {
        let params = GenerateParams {
            max_tokens,
            ..Default::default()
        };
        let t0 = Instant::now();
        let mut right = 0;
        for chunk in &sorted {
            let gens = model.generate(&input.group_tokens(chunk), &vec![params; chunk.len()])?;
            for (&i, g) in chunk.iter().zip(gens) {
                right += usize::from(is_right(i, &g.text));
            }
        }
        let mode = format!("generate (up to {max_tokens} tokens), batch {batch}, sorted by length");
        table.push(input.row(engine, mode, t0.elapsed().as_secs_f64(), right));
    }
    Ok(table)
}

/// The training benchmark's settings: LoRA rank `rank` (alpha twice the rank, as in LoRA
/// recipes; PEFT's dropout 0.05 on all seven projections), `batch` examples per step,
/// `steps` timed optimizer steps after one untimed warm-up step.
#[derive(Debug, Clone, Copy)]
pub struct TrainBench {
    /// Timed optimizer steps.
    pub steps: usize,
    /// Examples per step.
    pub batch: usize,
    /// LoRA rank r.
    pub rank: usize,
}

impl TrainBench {
    /// Examples the run needs: one warm-up batch and `steps` timed ones.
    pub fn examples_needed(&self) -> usize {
        (self.steps + 1) * self.batch
    }
}

/// LoRA training steps of `model` (loaded with [`Ops::Differentiable`](crate::Ops)) on
/// `chats` (each ending with the assistant's answer; the loss is on its tokens), with AdamW
/// at [`TrainConfig`]'s default rate: one row. Tokens are the examples' own tokens, padding
/// not counted. `on_step` sees each timed step's report.
///
/// # Errors
/// Fewer chats than [`TrainBench::examples_needed`], a zero setting, or a failed step.
pub fn training_row(
    model: &mut LocalModel,
    engine: &str,
    chats: &[Vec<ChatMessage>],
    bench: TrainBench,
    mut on_step: impl FnMut(&crate::StepReport),
) -> Result<BenchRow, LocalError> {
    if bench.steps == 0 || bench.batch == 0 || bench.rank == 0 {
        return Err(LocalError::Invalid(
            "training steps, batch and rank must be at least 1".to_owned(),
        ));
    }
    if chats.len() < bench.examples_needed() {
        return Err(LocalError::Invalid(format!(
            "{} examples, fewer than the {} that {} steps of {} need (one warm-up step more)",
            chats.len(),
            bench.examples_needed(),
            bench.steps,
            bench.batch
        )));
    }
    let examples: Vec<TrainExample> = chats[..bench.examples_needed()]
        .iter()
        .map(|m| encode_example(model.tokenizer(), model.template(), m))
        .collect::<Result<_, _>>()?;
    let lora = LoraConfig {
        r: bench.rank,
        lora_alpha: 2.0 * bench.rank as f64,
        ..LoraConfig::default()
    };
    attach_lora(model.model_mut(), &lora, 0)?;
    let config = TrainConfig {
        epochs: 1,
        batch_size: bench.batch,
        warmup_ratio: 0.0,
        ..TrainConfig::default()
    };
    let (warm, timed) = examples.split_at(bench.batch);
    train(model.model_mut(), warm, &config, |_| {
        ControlFlow::Continue(())
    })?;
    let tokens: usize = timed.iter().map(|e| e.input_ids.len()).sum();
    let t0 = Instant::now();
    let reports = train(model.model_mut(), timed, &config, |r| {
        on_step(r);
        ControlFlow::Continue(())
    })?;
    let s = t0.elapsed().as_secs_f64();
    Ok(BenchRow {
        engine: engine.to_owned(),
        mode: String::new(),
        per_s: timed.len() as f64 / s,
        tokens_per_s: tokens as f64 / s,
        peak_mib: peak_rss_mib(),
        accuracy: None,
        seconds_per_step: Some(s / reports.len().max(1) as f64),
    })
}

/// Writes `chats` as JSON Lines (`{"messages": [...]}` per line), the prompt file the Python
/// benchmark scripts read.
///
/// # Errors
/// The file cannot be written.
pub fn write_chats(path: &Path, chats: &[Vec<ChatMessage>]) -> Result<(), LocalError> {
    let mut text = String::new();
    for m in chats {
        text += &serde_json::json!({ "messages": m }).to_string();
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| LocalError::Io {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Runs a Python benchmark `script` on the same GGUF file and chats: `script --model gguf
/// <chats_flag> <chats as JSON Lines in a temporary file> extra...`, then [`python_rows`].
/// `scripts/bench_transformers.py` takes the prompts with `--prompts`,
/// `scripts/bench_peft.py` the training examples with `--examples`.
///
/// # Errors
/// The temporary file cannot be written; as [`python_rows`].
pub fn peer_rows(
    python: &str,
    script: &Path,
    gguf: &Path,
    chats_flag: &str,
    chats: &[Vec<ChatMessage>],
    extra: &[String],
) -> Result<Vec<BenchRow>, LocalError> {
    let file = std::env::temp_dir().join(format!("xlt-bench-{}.jsonl", std::process::id()));
    write_chats(&file, chats)?;
    let mut args: Vec<&OsStr> = vec!["--model".as_ref(), gguf.as_os_str(), chats_flag.as_ref()];
    args.push(file.as_os_str());
    args.extend(extra.iter().map(OsStr::new));
    let rows = python_rows(python, script, &args);
    let _ = std::fs::remove_file(&file);
    rows
}

/// Runs a Python benchmark `script` with `args` and reads each line of its standard output
/// that starts with `{` as one row: `engine`, `mode`, `questions_per_s` or
/// `examples_per_s`, `prompt_tokens_per_s` or `tokens_per_s`, `peak_mib`,
/// `seconds_per_step`; a missing number is NaN.
///
/// # Errors
/// The script cannot be started or exits non-zero (its standard error is in the message), or
/// a row is not JSON.
pub fn python_rows(
    python: &str,
    script: &Path,
    args: &[&OsStr],
) -> Result<Vec<BenchRow>, LocalError> {
    let io = |message: String| LocalError::Io {
        path: script.to_owned(),
        message,
    };
    let out = std::process::Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .map_err(|e| io(format!("running it with {python}: {e}")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(io(format!("{}: {stderr}", out.status)));
    }
    let number = |v: &serde_json::Value, keys: &[&str]| {
        keys.iter().find_map(|k| v[*k].as_f64()).unwrap_or(f64::NAN)
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).map_err(|e| io(format!("a row is not JSON ({e}): {l}")))?;
            Ok(BenchRow {
                engine: v["engine"].as_str().unwrap_or("python").to_owned(),
                mode: v["mode"].as_str().unwrap_or("").to_owned(),
                per_s: number(&v, &["questions_per_s", "examples_per_s"]),
                tokens_per_s: number(&v, &["prompt_tokens_per_s", "tokens_per_s"]),
                peak_mib: number(&v, &["peak_mib"]),
                accuracy: None,
                seconds_per_step: v["seconds_per_step"].as_f64(),
            })
        })
        .collect()
}

/// Rows a projection product is timed at by [`product_table`] by default: about a Global-MMLU
/// prompt's question after its kept context (20 and 85 tokens), and packed batches of 4 and 8
/// prompts (300 and 700).
pub const PRODUCT_ROWS: [usize; 4] = [20, 85, 300, 700];

/// The decoder's projection products, `x Wᵀ` for `x` `(rows, in)` and a weight `W`
/// `(out, in)`, at `config`'s shapes (q/o `hidden x hidden`, k/v `hidden x kv`, gate/up
/// `hidden x intermediate`, down `intermediate x hidden`), f32 on the CPU, `rows` rows each:
/// the product as the model runs it (blocks of rows or columns, one a thread, the crate's
/// `matmul` module) beside faer's own parallel product, in GFLOP/s (`2 rows in out` flops a
/// product), as a Markdown table with the CPU above it. Both give the same bits (checked here
/// for every cell).
///
/// Each cell cycles through `num_hidden_layers` weights of its shape, as a pass does, so that
/// they are read from memory rather than cache, for at least `seconds` and one round (after
/// one warm-up product per weight). The two sides take turns, a round of weights each, so
/// that the machine's state weighs on both alike.
///
/// # Panics
/// If the two products' bits differ (a bug in the blocks).
pub fn product_table(config: &crate::Config, rows: &[usize], seconds: f64) -> String {
    use faer::Par;
    let (h, kv) = (config.hidden_size, config.kv_heads() * config.head_dim());
    let i = config.intermediate_size;
    let shapes = [
        ("q, o", h, h),
        ("k, v", h, kv),
        ("gate, up", h, i),
        ("down", i, h),
    ];
    let layers = config.num_hidden_layers.max(1);
    let value = |j: usize, m: usize| ((j * 7919 % m) as f32 - m as f32 / 2.0) * 1e-3;
    let mut s = format!("CPU: {}\n\n", cpu_description());
    s += "| rows | product (in x out) | xlt-local GFLOP/s | faer parallel GFLOP/s | ratio |\n";
    s += "|---:|---|---:|---:|---:|\n";
    for &(name, k, n) in &shapes {
        let weights: Vec<Vec<f32>> = (0..layers)
            .map(|l| (0..n * k).map(|j| value(j + l, 997)).collect())
            .collect();
        for &m in rows {
            let x: Vec<f32> = (0..m * k).map(|j| value(j, 1013)).collect();
            let mut dst = vec![0f32; m * n];
            let mut check = vec![0f32; m * n];
            let blocks = |dst: &mut [f32], w: &[f32]| {
                crate::matmul::mm(dst, (&x, false), (w, true), (m, k, n), 1.0, false)
            };
            let faer = |dst: &mut [f32], w: &[f32]| {
                let dims = (m, k, n);
                crate::matmul::gemm(dst, (&x, false), (w, true), dims, 1.0, false, Par::rayon(0))
            };
            for w in &weights {
                blocks(&mut dst, w);
                faer(&mut check, w);
                let same = dst
                    .iter()
                    .zip(&check)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{name} at {m} rows: the blocks and faer differ");
            }
            let (mut took, mut count) = ([0f64; 2], [0usize; 2]);
            // At least one round, however short `seconds`.
            while count[0] == 0 || took[0].min(took[1]) < seconds {
                for side in 0..2 {
                    let t0 = Instant::now();
                    for w in &weights {
                        match side {
                            0 => blocks(&mut dst, w),
                            _ => faer(&mut dst, w),
                        }
                    }
                    took[side] += t0.elapsed().as_secs_f64();
                    count[side] += weights.len();
                }
            }
            let flops = 2.0 * (m * k * n) as f64;
            let rate = |side: usize| flops * count[side] as f64 / took[side] / 1e9;
            let (ours, theirs) = (rate(0), rate(1));
            s += &format!(
                "| {m} | {name} ({k} x {n}) | {ours:.0} | {theirs:.0} | {:.2} |\n",
                ours / theirs
            );
        }
    }
    s
}

/// Peak resident memory of this process (Linux `VmHWM` in `/proc/self/status`), MiB; NaN
/// where it cannot be read.
pub fn peak_rss_mib() -> f64 {
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

/// The CPU's model name, its threads and the vector instruction sets the kernels can use
/// (Linux `/proc/cpuinfo`; faer and pulp pick AVX-512 or AVX2 at run time):
/// `Intel(R) Xeon(R) ..., 2 threads (avx2, fma, avx512f, avx512_bf16)`, followed by
/// `, a pool of N threads` where the rayon pool the kernels run on has another size.
pub fn cpu_description() -> String {
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
    let threads = std::thread::available_parallelism().map_or(0, |n| n.get());
    // The pool the kernels run on, where `RAYON_NUM_THREADS` or the caller sized it otherwise.
    let pool = rayon::current_num_threads();
    let pool = match pool == threads {
        true => String::new(),
        false => format!(", a pool of {pool} threads"),
    };
    format!("{model}, {threads} threads ({}){pool}", sets.join(", "))
}

/// The scoring table in Markdown, the CPU named above it.
pub fn scoring_table(rows: &[BenchRow]) -> String {
    let mut s = format!("CPU: {}\n\n", cpu_description());
    s +=
        "| engine | mode | questions/s | prompt tokens/s | peak memory (MiB) | letter accuracy |\n";
    s += "|---|---|---:|---:|---:|---:|\n";
    for r in rows {
        let accuracy = r
            .accuracy
            .map_or(String::new(), |a| format!("{:.0}%", 100.0 * a));
        s += &format!(
            "| {} | {} | {:.2} | {:.0} | {:.0} | {accuracy} |\n",
            r.engine, r.mode, r.per_s, r.tokens_per_s, r.peak_mib
        );
    }
    s
}

/// The training table in Markdown, the CPU named above it.
pub fn training_table(rows: &[BenchRow], bench: TrainBench) -> String {
    let mut s = format!("CPU: {}\n\n", cpu_description());
    s += "| engine | LoRA r | batch | examples/s | tokens/s | s/step | peak memory (MiB) |\n";
    s += "|---|---:|---:|---:|---:|---:|---:|\n";
    for r in rows {
        s += &format!(
            "| {} | {} | {} | {:.2} | {:.0} | {:.1} | {:.0} |\n",
            r.engine,
            bench.rank,
            bench.batch,
            r.per_s,
            r.tokens_per_s,
            r.seconds_per_step.unwrap_or(f64::NAN),
            r.peak_mib
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The product table has a row for each shape and row count, with positive rates, and
    /// its products agreed bit for bit (it panics otherwise): hidden 256 and intermediate
    /// 320 so that both the column blocks and (at 401 rows) the row blocks run on 2 threads.
    #[test]
    fn product_table_covers_each_shape_and_row_count() {
        let config: crate::Config = serde_json::from_value(serde_json::json!({
            "vocab_size": 10, "hidden_size": 256, "intermediate_size": 320,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        }))
        .unwrap();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let table = pool.install(|| product_table(&config, &[1, 3, 401], 0.0));
        let rows: Vec<&str> = table
            .lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| rows"))
            .collect();
        assert_eq!(rows.len(), 12, "{table}");
        assert!(rows[0].starts_with("| 1 | q, o (256 x 256) |"), "{table}");
        assert!(
            rows[11].starts_with("| 401 | down (320 x 256) |"),
            "{table}"
        );
        for row in rows {
            let ratio: f64 = row
                .trim_end_matches(" |")
                .rsplit("| ")
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert!(ratio > 0.0 && ratio.is_finite(), "{row}");
        }
    }

    #[test]
    fn batches_sorted_by_length_cover_every_question_once() {
        let input = ScoringInput {
            prompts: [5, 2, 9, 1, 3]
                .map(|n| ChatPrompt::new(vec![1; n], 0))
                .to_vec(),
            answers: vec![0; 5],
        };
        let sorted = input.batches(2, true);
        assert_eq!(sorted, vec![vec![3, 1], vec![4, 0], vec![2]], "{sorted:?}");
        let plain = input.batches(2, false);
        assert_eq!(plain, vec![vec![0, 1], vec![2, 3], vec![4]], "{plain:?}");
        assert_eq!(input.tokens(), 20);
    }

    #[test]
    fn argmax_takes_the_first_of_ties() {
        assert_eq!(argmax([0.1, 0.5, 0.5, -1.0].into_iter()), 1);
        assert_eq!(argmax([f64::NEG_INFINITY; 4].into_iter()), 0);
    }

    #[test]
    fn python_rows_reads_json_lines_and_names_a_failing_script() {
        let dir = std::env::temp_dir().join(format!("xlt-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("rows.sh");
        std::fs::write(
            &script,
            "echo note\necho '{\"engine\": \"peer\", \"mode\": \"m\", \"questions_per_s\": 2.5, \"peak_mib\": 100}'\n",
        )
        .unwrap();
        let rows = python_rows("sh", &script, &[]).unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!((rows[0].engine.as_str(), rows[0].per_s), ("peer", 2.5));
        assert!(rows[0].tokens_per_s.is_nan(), "{rows:?}");
        std::fs::write(&script, "echo broken >&2; exit 3\n").unwrap();
        let e = python_rows("sh", &script, &[]).unwrap_err().to_string();
        assert!(e.contains("rows.sh") && e.contains("broken"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A rayon pool of another size than the machine's threads is named, as the kernels'
    /// blocks follow it.
    #[test]
    fn the_cpu_line_names_a_pool_of_another_size() {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads + 1)
            .build()
            .unwrap();
        let line = pool.install(cpu_description);
        let suffix = format!(", a pool of {} threads", threads + 1);
        assert!(line.ends_with(&suffix), "{line}");
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let line = pool.install(cpu_description);
        assert!(
            line.contains(&format!(", {threads} threads (")) && !line.contains("pool"),
            "{line}"
        );
    }

    #[test]
    fn tables_name_the_cpu() {
        let row = BenchRow {
            engine: "e".into(),
            mode: "m".into(),
            per_s: 1.0,
            tokens_per_s: 2.0,
            peak_mib: 3.0,
            accuracy: Some(0.5),
            seconds_per_step: Some(4.0),
        };
        let t = scoring_table(std::slice::from_ref(&row));
        assert!(
            t.starts_with("CPU: ") && t.contains("| e | m | 1.00 | 2 | 3 | 50% |"),
            "{t}"
        );
        let bench = TrainBench {
            steps: 1,
            batch: 8,
            rank: 16,
        };
        let t = training_table(&[row], bench);
        assert!(t.contains("| e | 16 | 8 | 1.00 | 2 | 4.0 | 3 |"), "{t}");
    }
}
