//! No API key in any log line or error, seen through a `tracing` subscriber.
//!
//! A test binary of its own: `tracing` caches per call site whether any subscriber is
//! interested, and with other tests of the same process running the client's call sites on
//! other threads without a subscriber, this test's thread-local subscriber could miss the
//! client's lines under load (it failed 6 runs in 8 on a loaded 2-core machine beside the
//! other OpenAI tests, and never alone).

use std::sync::Arc;
use std::time::Duration;

use wiremock::MockServer;
use xlt_openai::testing::{TEST_KEY, client_for, mount};
use xlt_openai::{OpenAiClient, OpenAiConfig};
use xlt_provider::*;

fn chat(model: &str) -> ChatRequest {
    let question = "2 + 2 = ?\n\nA. 3\nB. 4\nC. 5\nD. 22";
    ChatRequest::new(model, vec![ChatMessage::new(Role::User, question)])
}

#[tokio::test]
async fn no_key_in_any_log_line_or_error() {
    use std::io::Write;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buffer::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = MockServer::start().await;
    let mut errors = Vec::new();
    for name in [
        "error_401",
        "error_404_model_not_found",
        "error_429_rate_limit",
        "error_500",
        "malformed_body",
    ] {
        mount(&server, name, 1).await;
        let model = Retry::new(
            client_for(&server),
            RetryPolicy {
                max_retries: 0,
                base_delay: Duration::from_millis(5),
                max_delay: Duration::from_millis(20),
                jitter: 0.0,
            },
        );
        errors.push(model.chat(&chat("m")).await.unwrap_err());
        server.reset().await;
    }
    // A connection that fails outright.
    let dead = OpenAiClient::new(OpenAiConfig::new(TEST_KEY, "http://127.0.0.1:9/v1")).unwrap();
    errors.push(dead.chat(&chat("m")).await.unwrap_err());

    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("sending"),
        "the subscriber saw the client's logs"
    );
    assert!(!logs.contains(TEST_KEY), "key in logs");
    for e in &errors {
        assert!(!e.to_string().contains(TEST_KEY), "key in {e}");
        assert!(!format!("{e:?}").contains(TEST_KEY), "key in {e:?}");
    }
    assert!(!format!("{:?}", client_for(&server)).contains(TEST_KEY));
}
