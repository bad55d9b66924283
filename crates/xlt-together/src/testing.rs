//! Recorded Together exchanges (`fixtures/together/*.json`) as wiremock mocks. Only with the
//! `testing` feature.

use wiremock::MockServer;
pub use xlt_openai::testing::Exchange;

/// The API key the tests use; never a real one.
pub const TEST_KEY: &str = "tg-test-NOT-A-REAL-KEY-8e1a77";

/// Loads `fixtures/together/<name>.json`.
pub fn exchange(name: &str) -> Exchange {
    xlt_openai::testing::exchange_of("together", name)
}

/// Mounts exchange `name` to answer exactly `times` requests.
pub async fn mount(server: &MockServer, name: &str, times: u64) {
    xlt_openai::testing::mount_of(server, "together", name, times).await;
}

/// A client for `server` with the test key.
pub fn client_for(server: &MockServer) -> crate::TogetherClient {
    crate::TogetherClient::new(crate::TogetherConfig::new(
        TEST_KEY,
        format!("{}/v1", server.uri()),
    ))
    .expect("client builds")
}
