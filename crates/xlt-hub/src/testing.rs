//! A stand-in for the Hub on loopback, for tests: the listing endpoint and the file
//! resolution endpoint as the Hub serves them, with a second server as the CDN.
//!
//! Large files (anything but `.json`, `.md`, `.txt`) are stored "in LFS": `resolve` answers
//! `302 Found` to the CDN server with `X-Repo-Commit`, `X-Linked-Etag` (the SHA-256),
//! `X-Linked-Size` and `ETag` headers, and the CDN serves byte ranges (`206 Partial
//! Content`, `Content-Range`). Small files are answered by `resolve` itself, with `ETag` and
//! `X-Repo-Commit`. Every mock carries an expectation, checked by [`HubStandIn::verify`] and
//! when the stand-in is dropped.

use sha2::{Digest, Sha256};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::repo::{HubRepo, RepoKind};

/// Two loopback servers: the Hub (`endpoint`) and its CDN.
pub struct HubStandIn {
    /// The Hub: `/api/...` and `/.../resolve/...`.
    pub hub: MockServer,
    /// Where `resolve` redirects large files.
    pub cdn: MockServer,
}

/// How many times a file is expected to be fetched.
#[derive(Debug, Clone, Copy)]
pub enum Fetches {
    /// Never asked for.
    Never,
    /// Downloaded this many times (each download is a metadata request and one ranged
    /// request of the whole file, both through `resolve`).
    Times(u64),
    /// Exactly this many requests to `resolve` and to the CDN, for tests that divert some
    /// requests to mocks of their own (a failing transfer, say).
    Requests {
        /// Requests to `resolve`.
        resolve: u64,
        /// Requests to the CDN (ignored for small files, which have none).
        cdn: u64,
    },
}

impl HubStandIn {
    /// Starts both servers.
    pub async fn start() -> HubStandIn {
        HubStandIn {
            hub: MockServer::start().await,
            cdn: MockServer::start().await,
        }
    }

    /// The Hub's base URL, for [`crate::HubConfig::endpoint`] or `HF_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        self.hub.uri()
    }

    /// Serves the listing of `repo` at its revision: `commit` and `files`, expected
    /// `listings` times.
    pub async fn serve_listing(&self, repo: &HubRepo, commit: &str, files: &[&str], listings: u64) {
        let siblings: Vec<serde_json::Value> = files
            .iter()
            .map(|f| serde_json::json!({ "rfilename": f }))
            .collect();
        let body = serde_json::json!({
            "_id": "0",
            "id": repo.id,
            "sha": commit,
            "private": false,
            "gated": false,
            "siblings": siblings,
        });
        Mock::given(method("GET"))
            .and(path(format!(
                "/api/{}s/{}/revision/{}",
                repo.kind.as_str(),
                repo.id,
                repo.revision
            )))
            .respond_with(ResponseTemplate::new(200).set_body_json(body))
            .expect(listings)
            .named(format!("listing of {repo}"))
            .mount(&self.hub)
            .await;
    }

    /// The path of `resolve` for a file of `repo` at `commit`.
    pub fn resolve_path(repo: &HubRepo, commit: &str, file: &str) -> String {
        match repo.kind {
            RepoKind::Dataset => format!("/datasets/{}/resolve/{commit}/{file}", repo.id),
            RepoKind::Model => format!("/{}/resolve/{commit}/{file}", repo.id),
        }
    }

    /// Serves one file of `repo` at `commit`, expected to be fetched as `fetches` says.
    pub async fn serve_file(
        &self,
        repo: &HubRepo,
        commit: &str,
        file: &str,
        bytes: &[u8],
        fetches: Fetches,
    ) {
        let (resolve_n, cdn_n) = match fetches {
            Fetches::Never => (0, 0),
            Fetches::Times(n) => (2 * n, 2 * n),
            Fetches::Requests { resolve, cdn } => (resolve, cdn),
        };
        let sha256 = format!("{:x}", Sha256::digest(bytes));
        let resolve = Self::resolve_path(repo, commit, file);
        let small = [".json", ".md", ".txt"].iter().any(|e| file.ends_with(e));
        if small {
            Mock::given(method("GET"))
                .and(path(resolve))
                .respond_with(Ranged {
                    bytes: bytes.to_vec(),
                    headers: vec![
                        ("etag", format!("\"{}\"", &sha256[..40])),
                        ("x-repo-commit", commit.to_owned()),
                    ],
                })
                .expect(resolve_n)
                .named(format!("resolve {file}"))
                .mount(&self.hub)
                .await;
            return;
        }
        // One CDN path per file: files with the same content share a blob on the real
        // Hub, but each mock here keeps its own count.
        let cdn_path = format!("/repos/{}/{sha256}", file.replace('/', "--"));
        Mock::given(method("GET"))
            .and(path(resolve))
            .respond_with(
                ResponseTemplate::new(302)
                    .insert_header(
                        "location",
                        format!(
                            "{}{cdn_path}?X-Amz-Signature=not-a-secret&X-Amz-Expires=3600",
                            self.cdn.uri()
                        ),
                    )
                    .insert_header("x-repo-commit", commit)
                    .insert_header("x-linked-etag", format!("\"{sha256}\""))
                    .insert_header("x-linked-size", bytes.len().to_string())
                    .insert_header("etag", format!("W/\"{}\"", &sha256[..40])),
            )
            .expect(resolve_n)
            .named(format!("resolve {file}"))
            .mount(&self.hub)
            .await;
        Mock::given(method("GET"))
            .and(path(cdn_path))
            .respond_with(Ranged {
                bytes: bytes.to_vec(),
                headers: vec![("etag", format!("\"{sha256}\""))],
            })
            .expect(cdn_n)
            .named(format!("CDN {file}"))
            .mount(&self.cdn)
            .await;
    }

    /// Checks every expectation now.
    pub async fn verify(&self) {
        self.hub.verify().await;
        self.cdn.verify().await;
    }

    /// Checks every expectation, then forgets all mocks and recorded requests.
    pub async fn reset(&self) {
        self.verify().await;
        self.hub.reset().await;
        self.cdn.reset().await;
    }

    /// Every request either server received, as `METHOD path`.
    pub async fn requests(&self) -> Vec<String> {
        let mut all = Vec::new();
        for server in [&self.hub, &self.cdn] {
            for r in server.received_requests().await.unwrap_or_default() {
                all.push(format!("{} {}", r.method, r.url.path()));
            }
        }
        all
    }
}

/// Answers `Range: bytes=a-b` with `206` and the slice (the end clamped to the file, as
/// HTTP servers do), and no range with `200` and the whole file.
struct Ranged {
    bytes: Vec<u8>,
    headers: Vec<(&'static str, String)>,
}

impl Respond for Ranged {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let len = self.bytes.len();
        let range = request
            .headers
            .get("range")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("bytes="))
            .and_then(|v| v.split_once('-'))
            .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)));
        let mut response = match range {
            Some((start, end)) if start < len => {
                let end = end.min(len - 1);
                ResponseTemplate::new(206)
                    .insert_header("content-range", format!("bytes {start}-{end}/{len}"))
                    .set_body_bytes(self.bytes[start..=end].to_vec())
            }
            Some(_) => {
                ResponseTemplate::new(416).insert_header("content-range", format!("bytes */{len}"))
            }
            None => ResponseTemplate::new(200).set_body_bytes(self.bytes.clone()),
        };
        for (name, value) in &self.headers {
            response = response.insert_header(*name, value.as_str());
        }
        response
    }
}
