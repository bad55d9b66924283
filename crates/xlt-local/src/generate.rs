//! Batched generation with a KV cache: left padding with a mask, greedy or seeded
//! temperature sampling per row, stop on the model's end-of-turn tokens or at `max_tokens`,
//! and the first token's top log-probabilities from a log-softmax over the full vocabulary.
//!
//! Left padding keeps every row's last prompt token at the same index, so one forward pass
//! scores the next token of every row. Padded rows see shifted absolute positions, which
//! rotary embeddings ignore: attention depends on position differences only, so a padded
//! row computes what it would alone (a test checks this to float precision). On the CPU,
//! scoring packs its prompts instead (no padding; [`Model::forward_packed`]), and a prompt's
//! scores are then the same bits alone or in any batch
//! ([`LocalModel::scores_batch_invariant`]).

use candle_core::{D, DType, Device, IndexOp, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokenizers::Tokenizer;
use xlt_provider::ChatMessage;

use crate::LocalError;
use crate::llama::{Cache, Model};
use crate::load::{LoadOptions, Loaded, ModelSource};
use crate::template::ChatTemplate;

/// How to continue one prompt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerateParams {
    /// Tokens to generate at most (at least 1 is generated).
    pub max_tokens: usize,
    /// Sampling temperature; 0 (or less) is greedy decoding.
    pub temperature: f32,
    /// Seed of the sampler (ignored when greedy).
    pub seed: u64,
    /// How many alternatives of the first token to report (0 for none).
    pub top_logprobs: usize,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_tokens: 16,
            temperature: 0.0,
            seed: 0,
            top_logprobs: 0,
        }
    }
}

/// One alternative for the first generated token.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenAlternative {
    /// The token id.
    pub id: u32,
    /// Its text, decoded alone.
    pub token: String,
    /// Natural-log probability under the model (log-softmax over the full vocabulary).
    pub logprob: f32,
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-turn token.
    Stop,
    /// `max_tokens` reached.
    Length,
}

impl FinishReason {
    /// OpenAI's word for it (`stop`, `length`).
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// What one prompt produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// Generated token ids, without the end-of-turn token.
    pub tokens: Vec<u32>,
    /// Their text, special tokens skipped.
    pub text: String,
    /// Why it stopped.
    pub finish_reason: FinishReason,
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
    /// Completion tokens counted as providers count them (the end-of-turn token included).
    pub completion_tokens: usize,
    /// The first token's most likely alternatives, most likely first.
    pub top_logprobs: Vec<TokenAlternative>,
}

/// A model ready to chat: network, tokenizer, chat template and stop tokens.
#[derive(Debug)]
pub struct LocalModel {
    model: Model,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    eos_token_ids: Vec<u32>,
    origin: String,
    /// The vocabulary's tokens for each answer letter, found on first use.
    letter_tokens: std::sync::OnceLock<[Vec<u32>; 4]>,
    /// The keys and values of prompt contexts already computed ([`ChatPrompt::context`]).
    contexts: std::sync::Mutex<ContextCache>,
}

impl LocalModel {
    /// Loads a model from `source`.
    ///
    /// # Errors
    /// See [`crate::load`].
    pub fn load(source: &ModelSource, options: &LoadOptions) -> Result<Self, LocalError> {
        Ok(Self::from_loaded(crate::load::load(source, options)?))
    }

    /// Wraps what [`crate::load`] returned.
    pub fn from_loaded(l: Loaded) -> Self {
        LocalModel {
            model: l.model,
            tokenizer: l.tokenizer,
            template: l.template,
            eos_token_ids: l.eos_token_ids,
            origin: l.origin,
            letter_tokens: Default::default(),
            contexts: Default::default(),
        }
    }

    /// Assembles a model from parts (tests build tiny ones this way).
    pub fn from_parts(
        model: Model,
        tokenizer: Tokenizer,
        template: ChatTemplate,
        eos_token_ids: Vec<u32>,
    ) -> Self {
        LocalModel {
            model,
            tokenizer,
            template,
            eos_token_ids,
            origin: "in memory".into(),
            letter_tokens: Default::default(),
            contexts: Default::default(),
        }
    }

    /// This model with the PEFT adapter in `dir` applied, unmerged (the adapter's update
    /// runs beside each adapted layer, dropout off): the base weights are shared with
    /// `self`, not copied, so many adapters of one base cost little memory. Its
    /// [`LocalModel::origin`] is `<origin>+<dir>`.
    ///
    /// # Errors
    /// As [`crate::load_adapter`]: a missing or invalid `adapter_config.json` or
    /// `adapter_model.safetensors` is named in the error.
    pub fn with_adapter(&self, dir: &std::path::Path) -> Result<LocalModel, LocalError> {
        let mut model = self.model.clone();
        crate::peft::load_adapter(&mut model, dir)?;
        Ok(LocalModel {
            model,
            tokenizer: self.tokenizer.clone(),
            template: self.template.clone(),
            eos_token_ids: self.eos_token_ids.clone(),
            origin: format!("{}+{}", self.origin, dir.display()),
            letter_tokens: self.letter_tokens.clone(),
            // The adapter changes every key and value: nothing of the base's is reused.
            contexts: Default::default(),
        })
    }

    /// The network.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The network, mutable: to attach a LoRA adapter ([`crate::load_adapter`]). The keys
    /// and values of contexts computed so far are dropped (the change may alter them).
    pub fn model_mut(&mut self) -> &mut Model {
        self.contexts
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        &mut self.model
    }

    /// Whether [`LocalModel::letter_logprobs`] and [`LocalModel::next_token_logprobs`] give
    /// each prompt the same bits whichever prompts share its call: packed passes
    /// ([`Model::packs`]) in f32 or f64 whose projections all run on faer's kernels (frozen
    /// weights, as loaded). Not in bf16 or with trainable weights (candle's own matrix
    /// kernels, not checked), nor on a GPU (padded batches).
    pub fn scores_batch_invariant(&self) -> bool {
        self.model.packs()
            && matches!(self.model.dtype(), DType::F32 | DType::F64)
            && self.model.products_on_faer()
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The chat template.
    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// Where the model was loaded from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The prompt of `messages`: the chat template rendered with the generation prompt,
    /// tokenized without adding special tokens (the template has them), as
    /// `apply_chat_template(..., tokenize=True)` does.
    ///
    /// # Errors
    /// Template or tokenizer failures; an empty prompt.
    pub fn encode_chat(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, LocalError> {
        let text = self.template.render(messages, true)?;
        let ids = self
            .tokenizer
            .encode(text.as_str(), false)
            .map_err(|e| LocalError::Tokenizer(e.to_string()))?
            .get_ids()
            .to_vec();
        if ids.is_empty() {
            return Err(LocalError::Invalid("the prompt has no tokens".into()));
        }
        Ok(ids)
    }

    /// The prompt of `messages` as [`LocalModel::encode_chat`] tokenizes it, with its
    /// context: the leading tokens it shares with the same conversation whose last message
    /// is empty (the template rendered for `messages[..n - 1]` and an empty message of the
    /// last one's role, with the generation prompt), at most all but its last token. That
    /// is the conversation before the last message and the last message's header (for
    /// SmolLM2, `<|im_start|>user` and a newline): with a system message and one user
    /// message, the system turn and the user turn's first three tokens, the part a study's
    /// prompts share, whose keys and values [`LocalModel::letter_logprobs`] and
    /// [`LocalModel::next_token_logprobs`] compute once and reuse.
    ///
    /// # Errors
    /// As [`LocalModel::encode_chat`].
    pub fn encode_chat_prompt(&self, messages: &[ChatMessage]) -> Result<ChatPrompt, LocalError> {
        let tokens = self.encode_chat(messages)?;
        let Some((last, before)) = messages.split_last() else {
            return Ok(ChatPrompt::new(tokens, 0));
        };
        let mut blank = before.to_vec();
        blank.push(ChatMessage::new(last.role, ""));
        let text = self.template.render(&blank, true)?;
        let ids = self
            .tokenizer
            .encode(text.as_str(), false)
            .map_err(|e| LocalError::Tokenizer(e.to_string()))?;
        let shared = tokens
            .iter()
            .zip(ids.get_ids())
            .take_while(|(a, b)| a == b)
            .count();
        let context = shared.min(tokens.len() - 1);
        Ok(ChatPrompt::new(tokens, context))
    }

    /// Continues every prompt, in one batch. Rows stop independently; the batch runs
    /// until the last row stops.
    ///
    /// # Errors
    /// [`LocalError::Invalid`] for an empty prompt, a token id outside the vocabulary or
    /// mismatched lengths; tensor failures.
    pub fn generate(
        &self,
        prompts: &[Vec<u32>],
        params: &[GenerateParams],
    ) -> Result<Vec<Generation>, LocalError> {
        if prompts.len() != params.len() {
            return Err(LocalError::Invalid(format!(
                "{} prompts but {} parameter sets",
                prompts.len(),
                params.len()
            )));
        }
        if prompts.is_empty() {
            return Ok(Vec::new());
        }
        let vocab = self.model.config().vocab_size as u32;
        for p in prompts {
            if p.is_empty() {
                return Err(LocalError::Invalid("empty prompt".into()));
            }
            if let Some(bad) = p.iter().find(|&&t| t >= vocab) {
                return Err(LocalError::Invalid(format!(
                    "token id {bad} is outside the vocabulary of {vocab}"
                )));
            }
        }
        let device = self.model.device().clone();
        let b = prompts.len();
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let pads: Vec<usize> = prompts.iter().map(|p| longest - p.len()).collect();
        let pad_id = self.eos_token_ids.first().copied().unwrap_or(0);
        let flat: Vec<u32> = prompts
            .iter()
            .zip(&pads)
            .flat_map(|(p, &n)| std::iter::repeat_n(pad_id, n).chain(p.iter().copied()))
            .collect();
        let input = Tensor::from_vec(flat, (b, longest), &device)?;
        let mut cache = self.model.new_cache();
        let mask = padding_mask(&pads, longest, 0, self.model.dtype(), &device)?;
        let mut hidden = self
            .model
            .forward_hidden(&input, &mut cache, mask.as_ref())?;

        let mut rngs: Vec<ChaCha8Rng> = params
            .iter()
            .map(|p| ChaCha8Rng::seed_from_u64(p.seed))
            .collect();
        let mut out: Vec<Option<FinishReason>> = vec![None; b];
        let mut tokens: Vec<Vec<u32>> = vec![Vec::new(); b];
        let mut completion = vec![0usize; b];
        let mut first: Vec<Vec<TokenAlternative>> = vec![Vec::new(); b];
        let mut step = 0usize;
        loop {
            let t = hidden.dim(1)?;
            // (b, t, hidden) -> (b, hidden) at the last position -> (b, vocab) f32.
            let last = hidden.i((.., t - 1, ..))?;
            let logits = self.model.logits_f32(&last)?.to_dtype(DType::F32)?;
            let logprobs = candle_nn::ops::log_softmax(&logits, D::Minus1)?.to_vec2::<f32>()?;
            let mut next = vec![pad_id; b];
            for r in 0..b {
                if out[r].is_some() {
                    continue;
                }
                let row = &logprobs[r];
                if step == 0 && params[r].top_logprobs > 0 {
                    first[r] = top_k(row, params[r].top_logprobs)
                        .into_iter()
                        .map(|(id, lp)| TokenAlternative {
                            id,
                            token: self.tokenizer.decode(&[id], false).unwrap_or_default(),
                            logprob: lp,
                        })
                        .collect();
                }
                let tok = if params[r].temperature > 0.0 {
                    sample(row, params[r].temperature, &mut rngs[r])
                } else {
                    argmax(row)
                };
                completion[r] += 1;
                next[r] = tok;
                if self.eos_token_ids.contains(&tok) {
                    out[r] = Some(FinishReason::Stop);
                } else {
                    tokens[r].push(tok);
                    if tokens[r].len() >= params[r].max_tokens.max(1) {
                        out[r] = Some(FinishReason::Length);
                    }
                }
            }
            step += 1;
            if out.iter().all(Option::is_some) {
                break;
            }
            let input = Tensor::from_vec(next, (b, 1), &device)?;
            let seen = cache.seen();
            let mask = padding_mask(&pads, 1, seen, self.model.dtype(), &device)?;
            hidden = self
                .model
                .forward_hidden(&input, &mut cache, mask.as_ref())?;
        }
        let mut result = Vec::with_capacity(b);
        for r in 0..b {
            let text = self
                .tokenizer
                .decode(&tokens[r], true)
                .map_err(|e| LocalError::Tokenizer(e.to_string()))?;
            result.push(Generation {
                text,
                tokens: std::mem::take(&mut tokens[r]),
                finish_reason: out[r].unwrap_or(FinishReason::Length),
                prompt_tokens: prompts[r].len(),
                completion_tokens: completion[r],
                top_logprobs: std::mem::take(&mut first[r]),
            });
        }
        Ok(result)
    }

    /// The log-probabilities `(batch, vocab)` of the token after each prompt, by prefill
    /// alone (first-token scoring, no generation): on the CPU one packed pass per group of
    /// prompts with the same context ([`Model::forward_packed`]), elsewhere one padded pass.
    /// Prompts that share a context ([`ChatPrompt`]) compute its keys and values once, and
    /// again only when no earlier call left them.
    ///
    /// # Errors
    /// As [`LocalModel::generate`].
    pub fn next_token_logprobs<P: PromptTokens>(
        &self,
        prompts: &[P],
    ) -> Result<Vec<Vec<f32>>, LocalError> {
        if prompts.is_empty() {
            return Ok(Vec::new());
        }
        let logits = self.last_logits(prompts)?;
        Ok(candle_nn::ops::log_softmax(&logits, D::Minus1)?.to_vec2::<f32>()?)
    }

    /// The logits `(batch, vocab)`, f32, at the position after each prompt, the output
    /// projection at that position only. When every prompt has the same context, its keys
    /// and values come from [`LocalModel::context_cache`] and one pass runs the rest of
    /// each prompt after it, right-padded (a causal mask hides the padding after a row's
    /// last token, and every token keeps its own position); otherwise one pass over the
    /// left-padded batch.
    fn last_logits<P: PromptTokens>(&self, prompts: &[P]) -> Result<Tensor, LocalError> {
        if prompts.iter().any(|p| p.tokens().is_empty()) {
            return Err(LocalError::Invalid("empty prompt".into()));
        }
        let vocab = self.model.config().vocab_size as u32;
        if let Some(bad) = prompts
            .iter()
            .flat_map(|p| p.tokens())
            .find(|&&t| t >= vocab)
        {
            return Err(LocalError::Invalid(format!(
                "token id {bad} is outside the vocabulary of {vocab}"
            )));
        }
        if self.model.packs() {
            return self.last_logits_packed(prompts);
        }
        let hidden_at_last = match shared_context(prompts) {
            0 => self.last_hidden_left_padded(prompts)?,
            c => self.last_hidden_after_context(prompts, c)?,
        };
        Ok(self
            .model
            .logits_f32(&hidden_at_last)?
            .to_dtype(DType::F32)?)
    }

    /// [`LocalModel::last_logits`] by packed passes ([`Model::forward_packed`]): prompts
    /// grouped by their context, each group one pass over the rest of every prompt after
    /// the context's kept keys and values ([`LocalModel::context_cache`]), packed one after
    /// another with no padding; then the output projection over every prompt's last row.
    ///
    /// Each prompt's logits are then the same bits whichever prompts share its call: its
    /// attention runs by itself, the other operations row by row, and the matrix kernels
    /// give a row of a product of two or more rows the same bits whatever the other rows
    /// (faer's blocking of the inner dimension depends on it alone; checked bit for bit by
    /// `tests/letters.rs` and `tests/tiny.rs`), but a product of a single row takes another
    /// kernel (a matrix-vector product): hence a lone prompt's last row is projected twice
    /// over, and a lone one-token pass run as two.
    fn last_logits_packed<P: PromptTokens>(&self, prompts: &[P]) -> Result<Tensor, LocalError> {
        let context_of = |p: &P| {
            let c = p.context();
            if c < p.tokens().len() { c } else { 0 }
        };
        let mut groups: Vec<(&[u32], Vec<usize>)> = Vec::new();
        for (i, p) in prompts.iter().enumerate() {
            let context = &p.tokens()[..context_of(p)];
            match groups.iter_mut().find(|(c, _)| *c == context) {
                Some((_, members)) => members.push(i),
                None => groups.push((context, vec![i])),
            }
        }
        let mut rows: Vec<Option<Tensor>> = vec![None; prompts.len()];
        for (context, members) in groups {
            let c = context.len();
            let mut lengths: Vec<usize> = members
                .iter()
                .map(|&i| prompts[i].tokens().len() - c)
                .collect();
            let mut flat: Vec<u32> = members
                .iter()
                .flat_map(|&i| prompts[i].tokens()[c..].iter().copied())
                .collect();
            if flat.len() == 1 {
                flat.push(flat[0]);
                lengths.push(1);
            }
            let kept = match c {
                0 => Cache::default(),
                _ => self.context_cache(context)?,
            };
            let hidden = self.model.forward_packed(&flat, &lengths, &kept)?;
            let mut end = 0;
            for (&i, &len) in members.iter().zip(&lengths) {
                end += len;
                rows[i] = Some(hidden.narrow(0, end - 1, 1)?);
            }
        }
        // One output projection for every prompt's last row, which reads the (vocab, hidden)
        // weight once, not once a prompt; two rows at least (a lone row would take the
        // matrix-vector kernel).
        let mut last: Vec<Tensor> = rows.into_iter().flatten().collect();
        if last.len() == 1 {
            last.push(last[0].clone());
        }
        let logits = self.model.logits_f32(&Tensor::cat(&last, 0)?)?;
        Ok(logits.narrow(0, 0, prompts.len())?.to_dtype(DType::F32)?)
    }

    /// The final hidden state `(batch, hidden)` at each prompt's last token: one pass over
    /// the batch left-padded (pad id 0) under a padding mask, no context reused.
    fn last_hidden_left_padded<P: PromptTokens>(
        &self,
        prompts: &[P],
    ) -> Result<Tensor, LocalError> {
        let device = self.model.device();
        let longest = prompts.iter().map(|p| p.tokens().len()).max().unwrap_or(0);
        let pads: Vec<usize> = prompts.iter().map(|p| longest - p.tokens().len()).collect();
        let flat: Vec<u32> = prompts
            .iter()
            .zip(&pads)
            .flat_map(|(p, &n)| std::iter::repeat_n(0, n).chain(p.tokens().iter().copied()))
            .collect();
        let input = Tensor::from_vec(flat, (prompts.len(), longest), device)?;
        let mut cache = self.model.new_cache();
        let mask = padding_mask(&pads, longest, 0, self.model.dtype(), device)?;
        let hidden = self
            .model
            .forward_hidden(&input, &mut cache, mask.as_ref())?;
        Ok(hidden.i((.., longest - 1, ..))?.contiguous()?)
    }

    /// The final hidden state `(batch, hidden)` at each prompt's last token, every prompt
    /// sharing its first `c` tokens: their keys and values from [`LocalModel::context_cache`],
    /// repeated along the batch, then one pass over the rest of each prompt right-padded (pad
    /// id 0; the causal mask hides the padding after a row's last token).
    fn last_hidden_after_context<P: PromptTokens>(
        &self,
        prompts: &[P],
        c: usize,
    ) -> Result<Tensor, LocalError> {
        let longest = prompts
            .iter()
            .map(|p| p.tokens().len() - c)
            .max()
            .unwrap_or(0);
        let flat: Vec<u32> = prompts
            .iter()
            .flat_map(|p| {
                let rest = &p.tokens()[c..];
                rest.iter()
                    .copied()
                    .chain(std::iter::repeat_n(0, longest - rest.len()))
            })
            .collect();
        let input = Tensor::from_vec(flat, (prompts.len(), longest), self.model.device())?;
        let mut cache = self
            .context_cache(&prompts[0].tokens()[..c])?
            .repeated(prompts.len())?;
        let hidden = self.model.forward_hidden(&input, &mut cache, None)?;
        let rows = prompts
            .iter()
            .enumerate()
            .map(|(r, p)| hidden.i((r, p.tokens().len() - c - 1, ..)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Tensor::stack(&rows, 0)?)
    }

    /// The keys and values of `context` (batch 1): computed by a pass over exactly these
    /// tokens from an empty cache, so that they are the same numbers whether an earlier
    /// call left them or not, and kept for later calls (see [`CONTEXT_CACHE_BYTES`]).
    fn context_cache(&self, context: &[u32]) -> Result<Cache, LocalError> {
        let mut store = self
            .contexts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(hit) = store.get(context) {
            return Ok(hit);
        }
        let input = Tensor::from_slice(context, (1, context.len()), self.model.device())?;
        let mut cache = self.model.new_cache();
        self.model.forward_hidden(&input, &mut cache, None)?;
        store.insert(context.to_vec(), cache.clone());
        Ok(cache)
    }
}

/// Bytes of context keys and values a [`LocalModel`] keeps at most: 64 MiB, the least
/// recently used dropped first. SmolLM2-135M's keys and values take 46 KiB a token in f32,
/// so a 30-token system turn takes 1.4 MiB; a context larger than this is computed on
/// every call instead.
pub const CONTEXT_CACHE_BYTES: usize = 64 << 20;

/// Contexts' keys and values, most recently used last, at most [`CONTEXT_CACHE_BYTES`].
#[derive(Debug, Default)]
struct ContextCache {
    entries: Vec<(Vec<u32>, Cache)>,
}

impl ContextCache {
    fn get(&mut self, tokens: &[u32]) -> Option<Cache> {
        let i = self.entries.iter().position(|(t, _)| t == tokens)?;
        let entry = self.entries.remove(i);
        let cache = entry.1.clone();
        self.entries.push(entry);
        Some(cache)
    }

    fn insert(&mut self, tokens: Vec<u32>, cache: Cache) {
        let bytes = cache.bytes();
        if bytes > CONTEXT_CACHE_BYTES {
            return;
        }
        let mut total: usize = self.entries.iter().map(|(_, c)| c.bytes()).sum();
        while total + bytes > CONTEXT_CACHE_BYTES && !self.entries.is_empty() {
            total -= self.entries.remove(0).1.bytes();
        }
        self.entries.push((tokens, cache));
    }

    fn clear(&mut self) {
        self.entries.clear();
    }
}

/// The context every prompt has, or 0: the same length and tokens in each, with at least
/// one token after it (the position scored).
fn shared_context<P: PromptTokens>(prompts: &[P]) -> usize {
    let Some(first) = prompts.first() else {
        return 0;
    };
    let c = first.context();
    let head = &first.tokens()[..c.min(first.tokens().len())];
    let shared = prompts
        .iter()
        .all(|p| p.context() == c && p.tokens().len() > c && p.tokens().starts_with(head));
    if shared { c } else { 0 }
}

/// A tokenized chat prompt and the length of its context: the leading tokens that render
/// the conversation before its last message and that message's header
/// ([`LocalModel::encode_chat_prompt`]). Prompts with the same context (a study's system
/// message) share its keys and values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatPrompt {
    tokens: Vec<u32>,
    context: usize,
}

impl ChatPrompt {
    /// `tokens` with its first `context` tokens as the context; a context that leaves no
    /// token after it is none.
    pub fn new(tokens: Vec<u32>, context: usize) -> ChatPrompt {
        let context = if context < tokens.len() { context } else { 0 };
        ChatPrompt { tokens, context }
    }

    /// The prompt's tokens.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// How many leading tokens are the context (0: none).
    pub fn context(&self) -> usize {
        self.context
    }

    /// The tokens, the context forgotten.
    pub fn into_tokens(self) -> Vec<u32> {
        self.tokens
    }
}

/// A prompt scored by [`LocalModel::letter_logprobs`] and
/// [`LocalModel::next_token_logprobs`]: its tokens and the length of its context (0 for a
/// plain token list).
pub trait PromptTokens {
    /// The prompt's tokens.
    fn tokens(&self) -> &[u32];
    /// How many leading tokens are a context whose keys and values may be reused.
    fn context(&self) -> usize {
        0
    }
}

impl PromptTokens for Vec<u32> {
    fn tokens(&self) -> &[u32] {
        self
    }
}

impl PromptTokens for ChatPrompt {
    fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    fn context(&self) -> usize {
        self.context
    }
}

impl LocalModel {
    /// The vocabulary's token ids for each answer letter A-D: every token whose decoded
    /// text, with surrounding white space removed, is the letter (for SmolLM2: `A` and
    /// ` A`). Found once per model (a pass over the vocabulary), then kept.
    pub fn letter_token_ids(&self) -> &[Vec<u32>; 4] {
        self.letter_tokens.get_or_init(|| {
            let mut ids: [Vec<u32>; 4] = Default::default();
            let vocab = self.model.config().vocab_size as u32;
            for id in 0..vocab {
                let Ok(text) = self.tokenizer.decode(&[id], false) else {
                    continue;
                };
                let text = text.trim();
                if let Some(k) = xlt_provider::LETTERS
                    .iter()
                    .position(|l| text.len() == 1 && text.starts_with(*l))
                {
                    ids[k].push(id);
                }
            }
            ids
        })
    }

    /// The log-probability of each answer letter A-D (nats) at the position after each
    /// prompt: prefill alone, as [`LocalModel::next_token_logprobs`] runs it, a log-softmax over the full
    /// vocabulary in f32 at the last position, and for each letter the log-sum-exp over
    /// [`LocalModel::letter_token_ids`]. A letter with no token in the vocabulary gets
    /// `-inf`. On the CPU a batch is packed (no padding); on a GPU prompts of similar
    /// length batch best. Prompts that share a context
    /// ([`ChatPrompt`], e.g. the system message) run only what follows it: its keys and
    /// values are computed once per model and kept (up to [`CONTEXT_CACHE_BYTES`]).
    ///
    /// # Errors
    /// [`LocalError::Invalid`] for an empty prompt or a token id outside the vocabulary;
    /// tensor failures.
    pub fn letter_logprobs<P: PromptTokens>(
        &self,
        prompts: &[P],
    ) -> Result<Vec<[f64; 4]>, LocalError> {
        if prompts.is_empty() {
            return Ok(Vec::new());
        }
        let letters = self.letter_token_ids();
        let logits = self.last_logits(prompts)?.to_vec2::<f32>()?;
        Ok(logits
            .iter()
            .map(|row| {
                let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                let norm = f64::from(max)
                    + row
                        .iter()
                        .map(|&x| f64::from(x - max).exp())
                        .sum::<f64>()
                        .ln();
                std::array::from_fn(|k| {
                    let lse = letters[k]
                        .iter()
                        .map(|&id| f64::from(row[id as usize]))
                        .fold(f64::NEG_INFINITY, xlt_provider::log_add_exp);
                    lse - norm
                })
            })
            .collect())
    }
}

/// The additive mask `(batch, 1, t, seen + t)` for left-padded rows (`pads[r]` pad tokens
/// at the start of row `r`): a query at absolute position `q` sees keys `pads[r]..=q`, and
/// a pad query sees itself (so that no row of scores is all `-inf`). `None` when no row is
/// padded: the model then applies the plain causal mask.
fn padding_mask(
    pads: &[usize],
    t: usize,
    seen: usize,
    dtype: DType,
    device: &Device,
) -> Result<Option<Tensor>, LocalError> {
    if pads.iter().all(|&p| p == 0) {
        return Ok(None);
    }
    let s = seen + t;
    let mut v = Vec::with_capacity(pads.len() * t * s);
    for &pad in pads {
        for i in 0..t {
            let q = seen + i;
            for k in 0..s {
                let visible = (k <= q && k >= pad) || k == q;
                v.push(if visible { 0.0f32 } else { f32::NEG_INFINITY });
            }
        }
    }
    Ok(Some(
        Tensor::from_vec(v, (pads.len(), 1, t, s), device)?.to_dtype(dtype)?,
    ))
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best as u32
}

/// The `k` largest entries, largest first (ties: lower id first).
fn top_k(row: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    let k = k.min(row.len());
    let cmp = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
    if k < idx.len() {
        idx.select_nth_unstable_by(k, cmp);
        idx.truncate(k);
    }
    idx.sort_by(cmp);
    idx.into_iter().map(|i| (i, row[i as usize])).collect()
}

/// Draws from `softmax(logprobs / temperature)`.
fn sample(logprobs: &[f32], temperature: f32, rng: &mut ChaCha8Rng) -> u32 {
    let scaled: Vec<f64> = logprobs
        .iter()
        .map(|&l| f64::from(l) / f64::from(temperature))
        .collect();
    let max = scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = scaled.iter().map(|&x| (x - max).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut u = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        u -= w;
        if u <= 0.0 {
            return i as u32;
        }
    }
    argmax(logprobs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{SMOLLM2_TEMPLATE, config, random_model, rebuild, tokenizer};

    /// Packed passes give what the padded passes give, which the GPU still takes: with a
    /// shared context and without, contexts mixed in one call, and prompts of 1 to 12
    /// tokens after the context, for every family (f32; the sums differ in order only).
    #[test]
    fn packed_scoring_equals_the_padded_passes() {
        for family in ["llama", "qwen2", "qwen3"] {
            let cfg = config(family);
            let (vm, _) = random_model(&cfg, crate::Ops::Fused);
            let model = rebuild(&cfg, &vm, crate::Ops::Fused, DType::F32);
            let template = ChatTemplate::new(SMOLLM2_TEMPLATE, "", "<|im_end|>").unwrap();
            let m = LocalModel::from_parts(model, tokenizer(), template, vec![258]);
            assert!(m.scores_batch_invariant());
            let ids = |seed: u32, n: usize| -> Vec<u32> {
                (0..n as u32)
                    .map(|i| (seed * 37 + i * 13 + 3) % 256)
                    .collect()
            };
            let context = ids(1, 7);
            let with = |rest: Vec<u32>| ChatPrompt::new([context.clone(), rest].concat(), 7);
            let shared = vec![with(ids(2, 5)), with(ids(3, 1)), with(ids(4, 12))];
            let alone: Vec<ChatPrompt> = vec![ChatPrompt::new(ids(5, 9), 0), with(ids(6, 3))];
            let cases: [(&str, &[ChatPrompt]); 2] = [("shared", &shared), ("mixed", &alone)];
            for (what, prompts) in cases {
                let packed = m.last_logits(prompts).unwrap();
                let padded = m
                    .model
                    .logits_f32(&m.last_hidden_left_padded(prompts).unwrap())
                    .unwrap();
                assert!(
                    crate::kernels::max_diff(&packed, &padded) < 1e-4,
                    "{family}, {what}"
                );
                if shared_context(prompts) > 0 {
                    let after = m
                        .model
                        .logits_f32(&m.last_hidden_after_context(prompts, 7).unwrap())
                        .unwrap();
                    assert!(crate::kernels::max_diff(&packed, &after) < 1e-4, "{family}");
                }
                // Each prompt alone: the same bits as in the call.
                for (i, p) in prompts.iter().enumerate() {
                    let one = m.last_logits(std::slice::from_ref(p)).unwrap();
                    assert_eq!(
                        one.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                        packed.get(i).unwrap().to_vec1::<f32>().unwrap(),
                        "{family}, {what}, prompt {i}"
                    );
                }
            }
        }
    }

    #[test]
    fn top_k_orders_largest_first_and_breaks_ties_by_id() {
        let row = [0.1, 0.5, 0.5, -1.0, 0.3];
        assert_eq!(top_k(&row, 3), vec![(1, 0.5), (2, 0.5), (4, 0.3)]);
        assert_eq!(top_k(&row, 10).len(), 5);
    }

    #[test]
    fn sampling_at_low_temperature_is_greedy_and_seeded_sampling_repeats() {
        let row = [-3.0f32, -0.1, -2.5, -4.0];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(sample(&row, 1e-4, &mut rng), 1);
        let draw = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..20)
                .map(|_| sample(&row, 5.0, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        // At a high temperature the draws are spread over the vocabulary.
        assert!(draw(7).iter().any(|&t| t != 1));
    }

    #[test]
    fn mask_hides_pads_and_the_future() {
        let m = padding_mask(&[1, 0], 3, 0, DType::F32, &Device::Cpu)
            .unwrap()
            .unwrap();
        let v: Vec<Vec<f32>> = m.i((0, 0)).unwrap().to_vec2().unwrap();
        let ninf = f32::NEG_INFINITY;
        assert_eq!(
            v,
            vec![
                vec![0.0, ninf, ninf],
                vec![ninf, 0.0, ninf],
                vec![ninf, 0.0, 0.0]
            ]
        );
        let v: Vec<Vec<f32>> = m.i((1, 0)).unwrap().to_vec2().unwrap();
        assert_eq!(
            v,
            vec![
                vec![0.0, ninf, ninf],
                vec![0.0, 0.0, ninf],
                vec![0.0, 0.0, 0.0]
            ]
        );
        assert!(
            padding_mask(&[0, 0], 3, 0, DType::F32, &Device::Cpu)
                .unwrap()
                .is_none()
        );
    }
}
