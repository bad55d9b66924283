//! Recorded exchanges (`fixtures/openai/*.json`) as wiremock mocks. Only with the `testing`
//! feature; nothing here talks to OpenAI.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The API key the tests use; never a real one.
pub const TEST_KEY: &str = "sk-test-NOT-A-REAL-KEY-5f2d9c";

/// One recorded exchange.
#[derive(Debug, Clone, Deserialize)]
pub struct Exchange {
    /// What the exchange shows.
    #[serde(default)]
    pub description: String,
    /// The request.
    pub request: RecordedRequest,
    /// The response.
    pub response: RecordedResponse,
}

/// The recorded request.
#[derive(Debug, Clone, Deserialize)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path, with `/v1`.
    pub path: String,
}

/// The recorded response.
#[derive(Debug, Clone, Deserialize)]
pub struct RecordedResponse {
    /// HTTP status.
    pub status: u16,
    /// Headers.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// A JSON body.
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    /// A raw body.
    #[serde(default)]
    pub body_text: Option<String>,
    /// A delay before answering.
    #[serde(default)]
    pub delay_ms: Option<u64>,
}

/// The directory of the recorded exchanges of `provider` (`fixtures/<provider>`).
pub fn fixtures_dir_of(provider: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures")).join(provider)
}

/// The directory of OpenAI's recorded exchanges.
pub fn fixtures_dir() -> PathBuf {
    fixtures_dir_of("openai")
}

/// Loads `fixtures/<provider>/<name>.json`.
///
/// # Panics
/// If the file is missing or malformed: a broken fixture is a broken test.
pub fn exchange_of(provider: &str, name: &str) -> Exchange {
    let p = fixtures_dir_of(provider).join(format!("{name}.json"));
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Loads `fixtures/openai/<name>.json`.
pub fn exchange(name: &str) -> Exchange {
    exchange_of("openai", name)
}

impl Exchange {
    /// The response as a wiremock template.
    pub fn template(&self) -> ResponseTemplate {
        let r = &self.response;
        let mut t = ResponseTemplate::new(r.status);
        let body = match (&r.body, &r.body_text) {
            (_, Some(text)) => text.clone().into_bytes(),
            (Some(v), None) => serde_json::to_vec(v).expect("json"),
            (None, None) => Vec::new(),
        };
        let content_type = r
            .headers
            .get("content-type")
            .cloned()
            .unwrap_or_else(|| "application/json".to_owned());
        t = t.set_body_raw(body, &content_type);
        for (k, v) in &r.headers {
            if k != "content-type" {
                t = t.insert_header(k.as_str(), v.as_str());
            }
        }
        if let Some(ms) = r.delay_ms {
            t = t.set_delay(Duration::from_millis(ms));
        }
        t
    }

    /// A mock matching the recorded method and path, answering the recorded response.
    pub fn mock(&self) -> wiremock::MockBuilder {
        Mock::given(method(self.request.method.as_str())).and(path(self.request.path.as_str()))
    }
}

/// Mounts OpenAI's exchange `name` to answer exactly `times` requests (and expects that many).
pub async fn mount(server: &MockServer, name: &str, times: u64) {
    mount_of(server, "openai", name, times).await;
}

/// Mounts `fixtures/<provider>/<name>.json` to answer exactly `times` requests.
pub async fn mount_of(server: &MockServer, provider: &str, name: &str, times: u64) {
    let x = exchange_of(provider, name);
    x.mock()
        .respond_with(x.template())
        .up_to_n_times(times)
        .expect(times)
        .named(name)
        .mount(server)
        .await;
}

/// A client for `server` with the test key.
pub fn client_for(server: &MockServer) -> crate::OpenAiClient {
    let config = crate::OpenAiConfig::new(TEST_KEY, format!("{}/v1", server.uri()));
    crate::OpenAiClient::new(config).expect("client builds")
}
