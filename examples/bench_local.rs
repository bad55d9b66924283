//! A local model's scoring or LoRA training speed on Global-MMLU Lite English questions,
//! beside Python `transformers` (+ `peft`) with `--python`, in one run: the command line
//! over `xlt::local::bench`, which documents every row.
//!
//! ```text
//! cargo run --release --example bench_local -- --base-model <FILE.gguf|DIR|ID> \
//!     [--questions 40] [--batch 8] [--device cpu] [--dtype f32] [--python python3]
//! cargo run --release --example bench_local -- --train --base-model <FILE.gguf|DIR|ID> \
//!     [--train-steps 4] [--train-batch 8] [--train-rank 16] [--device cpu] [--python python3]
//! cargo run --release --example bench_local -- --products --base-model <FILE.gguf|DIR|ID>
//! ```
//! Prints a Markdown table with the CPU above it.

use clap::Parser;
use xlt::data::{Language, PromptTemplate};
use xlt::local::bench::{self, ScoringInput, TrainBench};
use xlt::local::{LoadOptions, LocalModel, ModelSource, Ops};
use xlt::provider::ChatMessage;

/// Benchmark local scoring (default) or LoRA training (`--train`).
#[derive(Parser)]
struct Args {
    /// The model: a .gguf file, a model directory or a Hub id in the local cache.
    #[arg(long)]
    base_model: String,
    /// Questions (the first of the Lite English test file by sample id).
    #[arg(long, default_value_t = 40, value_parser = xlt_cli::parse::at_least_one::<usize>)]
    questions: usize,
    /// Prompts per batch in the batched runs.
    #[arg(long, default_value_t = 8, value_parser = xlt_cli::parse::at_least_one::<usize>)]
    batch: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// f32 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Tokens generated at most per question in the generation run (0: none); 128 is the
    /// study's `--max-tokens` default.
    #[arg(long, default_value_t = 128)]
    generate_tokens: usize,
    /// A Python with torch and transformers (and peft for `--train`): the same prompts
    /// through it too.
    #[arg(long)]
    python: Option<String>,
    /// Benchmark LoRA training steps instead of scoring.
    #[arg(long)]
    train: bool,
    /// Training: timed optimizer steps (after one warm-up step).
    #[arg(long, default_value_t = 4, value_parser = xlt_cli::parse::at_least_one::<usize>)]
    train_steps: usize,
    /// Training: examples per step.
    #[arg(long, default_value_t = 8, value_parser = xlt_cli::parse::at_least_one::<usize>)]
    train_batch: usize,
    /// Training: LoRA rank (alpha is twice the rank).
    #[arg(long, default_value_t = 16, value_parser = xlt_cli::parse::at_least_one::<usize>)]
    train_rank: usize,
    /// Benchmark the projections' matrix products at the model's shapes instead (f32, CPU):
    /// the blocks the model runs beside faer's parallel product.
    #[arg(long, conflicts_with_all = [
        "train", "python", "questions", "batch", "generate_tokens", "train_steps",
        "train_batch", "train_rank",
    ])]
    products: bool,
}

fn main() -> std::process::ExitCode {
    xlt_cli::exit::exit_code(run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    if args.products {
        return products(&args);
    }
    let path = xlt::fixtures_dir().join("global-mmlu/lite/en.test.csv");
    let mut questions = xlt::data::load_file(&path, Some(Language::English))?;
    questions.sort_by(|a, b| a.sample_id.cmp(&b.sample_id));
    let train = TrainBench {
        steps: args.train_steps,
        batch: args.train_batch,
        rank: args.train_rank,
    };
    questions.truncate(if args.train {
        train.examples_needed()
    } else {
        args.questions
    });
    // The study's prompt; for training, the answer letter as the reply.
    let template = PromptTemplate::default();
    let chats: Vec<Vec<ChatMessage>> = questions
        .iter()
        .map(|q| match args.train {
            true => serde_json::to_value(template.finetune_record(q).messages),
            false => serde_json::to_value(template.prompt(q)),
        })
        .map(|v| serde_json::from_value(v?))
        .collect::<Result<_, _>>()?;
    let options = LoadOptions {
        device: xlt::local::parse_device(&args.device)?,
        dtype: xlt::local::parse_dtype(&args.dtype)?,
        ops: if args.train {
            Ops::Differentiable
        } else {
            Ops::default()
        },
    };
    let source = ModelSource::parse(&args.base_model)?;
    let mut model = LocalModel::load(&source, &options)?;
    let engine = format!("xlt-local (candle) {}, {}", args.dtype, args.device);
    let mut rows = if args.train {
        let row = bench::training_row(&mut model, &engine, &chats, train, |r| {
            eprintln!(
                "step {}/{}: loss {:.3}, {:.1} s",
                r.step, r.total_steps, r.loss, r.seconds
            )
        })?;
        vec![row]
    } else {
        let answers = questions.iter().map(|q| q.answer.index()).collect();
        let input = ScoringInput::new(&model, &chats, answers)?;
        eprintln!(
            "{}: {} questions, {} prompt tokens",
            model.origin(),
            chats.len(),
            input.tokens()
        );
        let graded = |i: usize, text: &str| {
            let q = &questions[i];
            xlt::grade::extract(text, Some(&q.options)).letter == Some(q.answer)
        };
        let generate = (args.generate_tokens > 0).then_some((
            args.generate_tokens,
            &graded as &dyn Fn(usize, &str) -> bool,
        ));
        bench::scoring_rows(&model, &engine, &input, args.batch, generate)?
    };
    drop(model);
    if let Some(python) = &args.python {
        let ModelSource::Gguf(gguf) = source else {
            anyhow::bail!("--python compares GGUF files only");
        };
        let (script, flag, mut extra) = match args.train {
            true => ("bench_peft.py", "--examples", vec!["--rank".to_owned()]),
            false => ("bench_transformers.py", "--prompts", vec![]),
        };
        extra.extend(args.train.then(|| args.train_rank.to_string()));
        let batch = if args.train {
            args.train_batch
        } else {
            args.batch
        };
        extra.extend(["--batch".to_owned(), batch.to_string()]);
        let script = xlt::fixtures_dir().join("../scripts").join(script);
        rows.extend(bench::peer_rows(
            python, &script, &gguf, flag, &chats, &extra,
        )?);
    }
    let table = if args.train {
        bench::training_table(&rows, train)
    } else {
        bench::scoring_table(&rows)
    };
    xlt_cli::outln!("{}", table.trim_end())?;
    Ok(())
}

/// `--products`: the projections' products at the model's shapes; the model is loaded for
/// its config alone.
fn products(args: &Args) -> anyhow::Result<()> {
    if args.dtype != "f32" || args.device != "cpu" {
        anyhow::bail!(
            "--products times f32 products on the CPU, not --dtype {} --device {}",
            args.dtype,
            args.device
        );
    }
    let source = ModelSource::parse(&args.base_model)?;
    let config = LocalModel::load(&source, &LoadOptions::default())?
        .model()
        .config()
        .clone();
    let table = bench::product_table(&config, &bench::PRODUCT_ROWS, 1.0);
    xlt_cli::outln!("{}", table.trim_end())?;
    Ok(())
}
