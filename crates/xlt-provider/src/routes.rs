//! Routing a fine-tuned model to the name its server answers to.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::ChatRequest;

/// Fine-tuned model -> the name a server answers to for it: a vLLM LoRA adapter's
/// `lora_name`, a Together dedicated endpoint's name.
///
/// Callers, the response cache and the outcomes name the fine-tuned model; a backend sets a
/// route when its [`ModelServer`](crate::ModelServer) sees the model served, clears it when
/// the model is stopped, and sends each chat request through [`ServedRoutes::route`]. So a
/// rerun that serves the model under a new name finds every answer the last one gave.
/// Clones share one table.
///
/// ```
/// use xlt_provider::{ChatRequest, ServedRoutes};
///
/// let routes = ServedRoutes::default();
/// routes.set("ft:base:ig-stem", "endpoint-7");
/// let request = ChatRequest::new("ft:base:ig-stem", vec![]);
/// assert_eq!(routes.route(&request).model, "endpoint-7");
/// routes.clear("ft:base:ig-stem");
/// assert_eq!(routes.route(&request).model, "ft:base:ig-stem");
/// ```
#[derive(Debug, Clone, Default)]
pub struct ServedRoutes(Arc<Mutex<HashMap<String, String>>>);

impl ServedRoutes {
    /// Sends `model`'s requests to `served_name` from now on.
    pub fn set(&self, model: &str, served_name: &str) {
        self.lock().insert(model.to_owned(), served_name.to_owned());
    }

    /// Forgets `model`'s route (its server was stopped or unloaded).
    pub fn clear(&self, model: &str) {
        self.lock().remove(model);
    }

    /// The served name of `model`, if it has a route.
    pub fn get(&self, model: &str) -> Option<String> {
        self.lock().get(model).cloned()
    }

    /// `request` as the server must receive it: its `model` replaced by the served name where
    /// a route exists, borrowed unchanged otherwise.
    pub fn route<'a>(&self, request: &'a ChatRequest) -> std::borrow::Cow<'a, ChatRequest> {
        match self.get(&request.model) {
            Some(name) => {
                let mut routed = request.clone();
                routed.model = name;
                std::borrow::Cow::Owned(routed)
            }
            None => std::borrow::Cow::Borrowed(request),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        // A panic while holding the lock leaves a plain map intact: keep using it.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
