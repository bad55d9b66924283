//! OpenAI's wire types. They stay in this crate, and they are lenient: unknown fields are
//! ignored, statuses are read as strings, and most fields have defaults, so that additions
//! to the API do not break decoding.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub code: Option<Value>,
}

impl ErrorDetail {
    /// The error of a body: OpenAI's `{"error": {...}}`, the flat `{"object": "error",
    /// "message", "type", "code"}` of vLLM before 0.10, or FastAPI's `{"detail": "..."}`
    /// (a route the server does not have).
    pub fn parse(body: &str) -> Option<ErrorDetail> {
        #[derive(Deserialize)]
        struct Detail {
            detail: String,
        }
        if let Ok(b) = serde_json::from_str::<ErrorBody>(body) {
            return Some(b.error);
        }
        if let Ok(d) = serde_json::from_str::<ErrorDetail>(body)
            && !d.message.is_empty()
        {
            return Some(d);
        }
        serde_json::from_str::<Detail>(body)
            .ok()
            .map(|d| ErrorDetail {
                message: d.detail,
                ..ErrorDetail::default()
            })
    }

    pub fn code_str(&self) -> Option<String> {
        match &self.code {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct FileObject {
    pub id: String,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub filename: String,
}

#[derive(Debug, Serialize)]
pub struct CreateJob<'a> {
    pub model: &'a str,
    pub training_file: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_file: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suffix: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    pub metadata: Value,
    pub method: Value,
}

#[derive(Debug, Deserialize)]
pub struct JobList {
    #[serde(default)]
    pub data: Vec<Job>,
}

#[derive(Debug, Deserialize)]
pub struct Job {
    pub id: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub fine_tuned_model: Option<String>,
    #[serde(default)]
    pub trained_tokens: Option<u64>,
    #[serde(default)]
    pub error: Option<JobError>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct JobError {
    pub message: Option<String>,
    pub code: Option<String>,
    pub param: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct EventList {
    #[serde(default)]
    pub data: Vec<Event>,
    #[serde(default)]
    pub has_more: bool,
}

#[derive(Debug, Deserialize)]
pub struct Event {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub created_at: i64,
    #[serde(default)]
    pub level: String,
    #[serde(default)]
    pub message: String,
}

#[derive(Debug, Serialize)]
pub struct ChatBody<'a> {
    pub model: &'a str,
    pub messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// `true` (OpenAI) or the number of alternatives (Together).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u8>,
}

#[derive(Debug, Serialize)]
pub struct WireMessage<'a> {
    pub role: &'a str,
    pub content: &'a str,
}

#[derive(Debug, Deserialize)]
pub struct ChatCompletion {
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub choices: Vec<Choice>,
    #[serde(default)]
    pub usage: Option<WireUsage>,
}

#[derive(Debug, Deserialize)]
pub struct Choice {
    #[serde(default)]
    pub message: Option<ChoiceMessage>,
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Either dialect's shape; read by `client::first_token_logprobs`.
    #[serde(default)]
    pub logprobs: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ChoiceMessage {
    pub content: Option<String>,
    pub refusal: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct WireUsage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

#[derive(Debug, Serialize)]
pub struct BatchLine<'a> {
    pub custom_id: &'a str,
    pub method: &'static str,
    pub url: &'static str,
    pub body: ChatBody<'a>,
}

#[derive(Debug, Serialize)]
pub struct CreateBatch<'a> {
    pub input_file_id: &'a str,
    pub endpoint: &'static str,
    pub completion_window: &'static str,
}

#[derive(Debug, Deserialize)]
pub struct BatchObject {
    pub id: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub input_file_id: String,
    #[serde(default)]
    pub output_file_id: Option<String>,
    #[serde(default)]
    pub error_file_id: Option<String>,
    #[serde(default)]
    pub request_counts: Option<RequestCounts>,
    #[serde(default)]
    pub errors: Option<BatchErrors>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct BatchErrors {
    pub data: Vec<BatchError>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct BatchError {
    pub code: Option<String>,
    pub message: Option<String>,
    pub line: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct BatchList {
    #[serde(default)]
    pub data: Vec<BatchObject>,
}

#[derive(Debug, Deserialize)]
pub struct FileList {
    #[serde(default)]
    pub data: Vec<FileObject>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RequestCounts {
    pub total: u64,
    pub completed: u64,
    pub failed: u64,
}

#[derive(Debug, Deserialize)]
pub struct BatchOutputLine {
    pub custom_id: String,
    #[serde(default)]
    pub response: Option<BatchOutputResponse>,
    #[serde(default)]
    pub error: Option<JobError>,
}

#[derive(Debug, Deserialize)]
pub struct BatchOutputResponse {
    #[serde(default)]
    pub status_code: u16,
    #[serde(default)]
    pub request_id: Option<String>,
    #[serde(default)]
    pub body: Value,
}
