//! The model's own chat template, rendered as Hugging Face's `apply_chat_template` renders
//! it: Jinja with `trim_blocks` and `lstrip_blocks`, loop controls, Python string and dict
//! methods (`.strip()`, `.startswith()`, `.items()`: minijinja-contrib's `pycompat`),
//! `raise_exception`, and the variables `messages`, `add_generation_prompt`, `bos_token`
//! and `eos_token`.

use minijinja::{Environment, Error, ErrorKind, context};
use serde::Serialize;
use xlt_provider::{ChatMessage, Role};

use crate::LocalError;

/// A compiled chat template with the special tokens it may refer to.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'a str,
    content: &'a str,
}

impl ChatTemplate {
    /// Compiles `source` (the `chat_template` of `tokenizer_config.json` or of a GGUF file's
    /// metadata).
    ///
    /// # Errors
    /// [`LocalError::Template`] with the parser's message (line and column).
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, LocalError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<String, Error> {
                Err(Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_template_owned("chat", source.to_owned())
            .map_err(|e| LocalError::Template(format!("{e:#}")))?;
        Ok(ChatTemplate {
            env,
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
        })
    }

    /// Renders `messages`, ending with the assistant's turn opened when
    /// `add_generation_prompt`.
    ///
    /// # Errors
    /// [`LocalError::Template`] when the template raises (some refuse a system message) or
    /// fails.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, LocalError> {
        let messages: Vec<Message<'_>> = messages
            .iter()
            .map(|m| Message {
                role: match m.role {
                    Role::System => "system",
                    Role::User => "user",
                    Role::Assistant => "assistant",
                },
                content: &m.content,
            })
            .collect();
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| LocalError::Template(e.to_string()))?;
        template
            .render(context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos_token,
                eos_token => self.eos_token,
            })
            .map_err(|e| LocalError::Template(format!("{e:#}")))
    }
}
