//! Open-weights language models on the user's own machine, as a [`ChatModel`] backend:
//! Llama-family decoders (Llama 3.x, SmolLM2, Qwen2/2.5, Qwen3) written on candle, loaded
//! from a Hugging Face model directory, a model id in the local Hub cache or a GGUF file,
//! prompted through the model's own chat template, and run with a KV cache, in batches,
//! with first-token log-probabilities over the full vocabulary.
//!
//! The core types: [`LocalProvider`] (the backend: loads each model once, batches
//! requests), [`LocalModel`] (network, tokenizer, template, stop tokens; [`LocalModel::generate`]),
//! [`Model`] (the decoder, with [`Ops`] choosing fused or differentiable kernels) and
//! [`ChatTemplate`]. The crate knows nothing of HTTP (it never downloads itself: a model id
//! is found in the local cache, or through the [`Fetcher`] the provider is given, such as
//! the workspace's Hub client) or of Global-MMLU. The `testing` feature adds tiny
//! random-weight models written as Hugging Face directories, for tests.
//!
//! LoRA fine-tuning, in PEFT's vocabulary and file format: [`LoraConfig`] and
//! [`attach_lora`] (adapters on the target projections), [`train`] /
//! [`train_resumable`] with [`TrainConfig`] (AdamW, absolute learning rate, warm-up and
//! linear decay, gradient accumulation, the loss on the assistant's tokens of
//! [`TrainExample`]s from [`encode_example`], exact resumption from an [`OptimizerState`]),
//! [`merge_lora`], [`save_adapter`] / [`load_adapter`] (`adapter_config.json`,
//! `adapter_model.safetensors`), and [`LocalFineTuner`], fine-tuning jobs behind the
//! `FineTuner` trait with checkpoints and resume, which [`LocalProvider`] offers once
//! [`LocalProvider::with_fine_tuning`] names a directory for its jobs. Training needs a
//! model built with [`Ops::Differentiable`]. A model id `<base>+<adapter dir>` (what the
//! fine-tuner names its models) is the base with that PEFT adapter applied
//! ([`LocalModel::with_adapter`]); [`LocalFineTuner::estimate_training`] measures what a
//! study's training will take on this machine.
//!
//! [`ChatModel`]: xlt_provider::ChatModel
//!
//! ```
//! use xlt_local::{ChatTemplate, ModelSource};
//! use xlt_provider::{ChatMessage, Role};
//!
//! // A model id that is not a path is looked up in the local Hugging Face cache on load.
//! assert_eq!(
//!     ModelSource::parse("HuggingFaceTB/SmolLM2-135M-Instruct")?,
//!     ModelSource::HubId("HuggingFaceTB/SmolLM2-135M-Instruct".into())
//! );
//! // Prompts are rendered with the model's own template.
//! let template = ChatTemplate::new(
//!     "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content | trim }}<|im_end|>\n{% endfor %}\
//!      {% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
//!     "",
//!     "<|im_end|>",
//! )?;
//! let prompt = template.render(&[ChatMessage::new(Role::User, " Hi ")], true)?;
//! assert_eq!(prompt, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod attention;
pub mod bench;
mod error;
mod finetune;
mod generate;
mod hub;
mod kernels;
mod llama;
mod load;
mod lora;
mod matmul;
mod peft;
mod provider;
mod template;
#[cfg(feature = "testing")]
pub mod testing;
mod train;

pub use error::LocalError;
pub use finetune::{LocalFineTuner, ModelLoader, TrainingEstimate};
pub use generate::{
    CONTEXT_CACHE_BYTES, ChatPrompt, FinishReason, GenerateParams, Generation, LocalModel,
    PromptTokens, TokenAlternative,
};
pub use hub::{hub_cache_dir, resolve_in_cache, resolve_model_id};
pub use kernels::with_candle_ops;
pub use llama::{
    Attention, Cache, Config, DecoderLayer, Linear, Mlp, Model, Ops, RmsNorm, RopeScaling, Rotary,
    RotaryTables,
};
pub use load::{
    LoadOptions, Loaded, ModelSource, expected_tensors, load, load_dir, load_gguf, parse_device,
    parse_dtype,
};
pub use lora::{
    DEFAULT_TARGET_MODULES, LoraConfig, LoraParam, attach_lora, lora_params, merge_lora,
    set_lora_dropout,
};
pub use peft::{ADAPTER_CONFIG, ADAPTER_WEIGHTS, load_adapter, save_adapter};
pub use provider::{Fetcher, LocalProvider, PROVIDER, ServeOptions};
pub use template::ChatTemplate;
pub use train::{
    MAX_TOKENS_PER_PASS, OptimizerState, StepReport, TrainConfig, TrainExample, assistant_nll,
    encode_example, train, train_resumable,
};

/// candle's device and dtype, re-exported so callers need not depend on candle.
pub use candle_core::{DType, Device};
