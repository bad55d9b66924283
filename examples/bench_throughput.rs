//! Throughput benchmark of the provider stack: N chat requests through the OpenAI client,
//! the retry and rate-limit wrappers and `run_chat`, against a local wiremock server that
//! answers each after a fixed latency. Prints requests per second and the ratio to the
//! configured requests-per-minute limit.
//!
//! ```text
//! cargo run --release --example bench_throughput -- [--requests 300] [--rpm 1200] \
//!     [--latency-ms 200] [--concurrency 16]
//! ```
//! Target: at least 95% of the configured limit, with no failed request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use wiremock::MockServer;
use xlt::provider::{
    ChatMessage, ChatRequest, Limited, RateLimits, Retry, RetryPolicy, Role, RunOptions, run_chat,
};
use xlt_openai::testing::{client_for, exchange};

/// Measure requests per second against a rate limit.
#[derive(Parser)]
struct Args {
    /// Requests to send.
    #[arg(long, default_value_t = 300, value_parser = xlt_cli::parse::at_least_one::<usize>)]
    requests: usize,
    /// Configured requests-per-minute limit.
    #[arg(long, default_value_t = 1200, value_parser = xlt_cli::parse::at_least_one::<u32>)]
    rpm: u32,
    /// Server latency per request, in milliseconds.
    #[arg(long, default_value_t = 200)]
    latency_ms: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16, value_parser = xlt_cli::parse::at_least_one::<usize>)]
    concurrency: usize,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    xlt_cli::exit::exit_code(run(Args::parse()).await)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let server = MockServer::start().await;
    let x = exchange("chat_completion");
    x.mock()
        .respond_with(
            x.template()
                .set_delay(Duration::from_millis(args.latency_ms)),
        )
        .mount(&server)
        .await;
    let limits = RateLimits {
        requests_per_minute: Some(args.rpm),
        tokens_per_minute: None,
    };
    let model = Retry::new(
        Limited::new(client_for(&server), limits),
        RetryPolicy::default(),
    );
    let retries = model.retries();
    let requests: Vec<(String, ChatRequest)> = (0..args.requests)
        .map(|i| {
            let r = ChatRequest::new(
                "gpt-4.1-nano-2025-04-14",
                vec![ChatMessage::new(
                    Role::User,
                    format!("question {i}\nA. 1\nB. 2\nC. 3\nD. 4"),
                )],
            );
            (i.to_string(), r)
        })
        .collect();
    let start = Instant::now();
    let mut stream = Box::pin(run_chat(
        Arc::new(model),
        requests,
        RunOptions {
            concurrency: args.concurrency,
            retries: Some(retries),
        },
    ));
    let mut last = None;
    while let Some((_, _, progress)) = stream.next().await {
        last = Some(progress);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let p = last.expect("at least one request");
    let rps = p.done as f64 / elapsed;
    let limit = f64::from(args.rpm) / 60.0;
    xlt_cli::outln!(
        "{} requests, {} failed, {} retried, latency {} ms, concurrency {}",
        p.done,
        p.failed,
        p.retried,
        args.latency_ms,
        args.concurrency
    )?;
    xlt_cli::outln!(
        "throughput: {rps:.2} requests/s; limit {limit:.2} requests/s ({} rpm)",
        args.rpm
    )?;
    xlt_cli::outln!("ratio to limit: {:.1}%", 100.0 * rps / limit)?;
    if p.failed > 0 {
        anyhow::bail!("{} requests failed", p.failed);
    }
    Ok(())
}
