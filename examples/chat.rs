//! Chat with any provider: JSON Lines requests on stdin, JSON Lines responses on stdout,
//! in input order.
//!
//! ```text
//! cargo run --release --example chat -- --provider local --base-model <DIR|ID|FILE.gguf> \
//!     [--device cpu|cuda:0] [--dtype f32|bf16] [--concurrency 8] < requests.jsonl
//! ```
//! `--device` and `--dtype` default to `XLT_DEVICE` and `XLT_DTYPE`, else `cpu` and `f32`.
//! A request: `{"id", "messages": [{"role", "content"}], "max_tokens"?, "temperature"?,
//! "top_logprobs"?}`; a response: `{"id", "text", "finish_reason", "top_logprobs":
//! [{"token", "logprob"}]}` (the first output token's alternatives, empty unless asked).
//! Every line is read and checked before the first request is sent: a bad line stops the
//! run with its line number and a failure code before anything is asked (or paid for):
//! malformed JSON, no messages, what OpenAI's API refuses (`max_tokens` 0, `temperature`
//! outside [0, 2], `top_logprobs` above 20), and an `id` used twice. This
//! differs from `grade` on purpose: grading is free, so `grade` streams and stops at a bad
//! line after writing the lines before it.

mod common;

use std::io::{BufRead, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use xlt::provider::{ChatMessage, ChatRequest};

/// Chat requests from stdin, responses on stdout, in input order. Every line is checked
/// before the first request is sent: a bad line stops the run, naming its line number,
/// before anything is asked (or paid for).
#[derive(Parser)]
struct Args {
    /// Which provider answers.
    #[arg(long, default_value = "local", value_parser = xlt_cli::parse::provider())]
    provider: xlt::backends::ProviderKind,
    /// The model (local: a model directory, a Hub id, fetched into the Hugging Face cache when
    /// missing, or a .gguf file).
    #[arg(long)]
    base_model: Option<String>,
    #[command(flatten)]
    device: common::DeviceArgs,
    /// Requests in flight at once (the local provider batches them).
    #[arg(long, default_value_t = 8, value_parser = xlt_cli::parse::at_least_one::<usize>)]
    concurrency: usize,
    /// State directory of the embedded provider (default: a temporary one).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    id: serde_json::Value,
    messages: Vec<ChatMessage>,
    max_tokens: Option<u32>,
    temperature: Option<f32>,
    top_logprobs: Option<u8>,
}

#[derive(Serialize)]
struct Response {
    id: serde_json::Value,
    text: String,
    finish_reason: Option<String>,
    top_logprobs: Vec<xlt::provider::TokenLogprob>,
}

#[tokio::main]
async fn main() -> ExitCode {
    xlt_cli::init_logging();
    xlt_cli::exit::exit_code(run(Args::parse()).await)
}

async fn run(args: Args) -> anyhow::Result<()> {
    // Read and check every request first: a bad line costs nothing.
    let mut requests = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for (i, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.context("reading stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        let line_no = i + 1;
        let r: Request = serde_json::from_str(&line)
            .with_context(|| format!("stdin line {line_no}: not a chat request"))?;
        let mut req = ChatRequest::new(String::new(), r.messages);
        (req.max_tokens, req.temperature) = (r.max_tokens, r.temperature);
        req.top_logprobs = r.top_logprobs;
        if let Err(xlt::provider::ProviderError::InvalidRequest(why)) = req.check() {
            anyhow::bail!("stdin line {line_no}: {why}");
        }
        if let Some(first) = seen.insert(r.id.to_string(), line_no) {
            anyhow::bail!(
                "stdin line {line_no}: id {} is already used on line {first}",
                r.id
            );
        }
        requests.push((r.id, req));
    }
    let temp;
    let out = match &args.out {
        Some(o) => {
            xlt::study::check_out_dir(o)?;
            o.as_path()
        }
        None => {
            temp = tempfile::tempdir()?;
            temp.path()
        }
    };
    let options = xlt::backends::OpenOptions {
        device: args.device.device.clone(),
        dtype: args.device.dtype.clone(),
        max_batch: Some(args.concurrency),
        ..xlt::backends::OpenOptions::new(out)
    };
    // A local model is loaded here, so a bad model fails before any output.
    let (chat, model) =
        xlt::backends::open_chat(args.provider, &options, args.base_model.as_deref()).await?;
    let mut answers = futures::stream::iter(requests.into_iter().map(|(id, mut req)| {
        let chat = chat.clone();
        req.model = model.clone();
        async move { (id, chat.chat(&req).await) }
    }))
    .buffered(args.concurrency.max(1));
    // A reader that stops early (`| head`) ends the run quietly (see `xlt_cli::exit::exit_code`).
    let mut stdout = xlt_cli::exit::stdout();
    while let Some((id, answer)) = answers.next().await {
        let answer = answer.with_context(|| format!("request {id}"))?;
        let line = serde_json::to_string(&Response {
            id,
            text: answer.text,
            finish_reason: answer.finish_reason,
            top_logprobs: answer.top_logprobs.unwrap_or_default(),
        })?;
        writeln!(stdout, "{line}")?;
        stdout.flush()?;
    }
    Ok(())
}
