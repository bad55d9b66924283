//! Loading: a Hugging Face model directory (config, tokenizer, chat template, generation
//! config, safetensors or shards), a GGUF file (llama, qwen2, qwen3 architectures; tokenizer
//! and template from its metadata; quantized tensors dequantized), or a model id from the
//! local Hub cache. Everything is checked against the config before the model is built, so
//! a bad checkpoint fails naming the file and the tensor.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;
use tokenizers::Tokenizer;

use crate::llama::{Config, Model, Ops};
use crate::template::ChatTemplate;
use crate::{LocalError, hub};

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A directory laid out as on the Hub.
    Dir(PathBuf),
    /// A GGUF file.
    Gguf(PathBuf),
    /// A Hub model id (`Qwen/Qwen2.5-0.5B-Instruct`), looked up in the local cache.
    HubId(String),
}

impl ModelSource {
    /// Reads a `--base-model` argument: an existing directory, an existing `.gguf` file, or
    /// else a model id `org/name`.
    ///
    /// # Errors
    /// [`LocalError::Invalid`] for a path that does not exist and is not a model id either.
    pub fn parse(s: &str) -> Result<Self, LocalError> {
        let p = Path::new(s);
        if p.is_dir() {
            return Ok(ModelSource::Dir(p.to_owned()));
        }
        if p.is_file() {
            return if s.to_ascii_lowercase().ends_with(".gguf") {
                Ok(ModelSource::Gguf(p.to_owned()))
            } else {
                Err(LocalError::Invalid(format!(
                    "{s}: a model is a directory, a .gguf file or a Hub id"
                )))
            };
        }
        let parts: Vec<&str> = s.split('/').collect();
        if parts.len() == 2 && parts.iter().all(|p| !p.is_empty()) && !s.ends_with(".gguf") {
            return Ok(ModelSource::HubId(s.to_owned()));
        }
        Err(LocalError::Invalid(format!(
            "{s}: no such file or directory, and not a model id of the form org/name"
        )))
    }
}

/// How to load and run a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Where the weights live.
    pub device: Device,
    /// The weights' dtype (`F32` or `BF16`).
    pub dtype: DType,
    /// Fused kernels (inference) or differentiable ones (training).
    pub ops: Ops,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            device: Device::Cpu,
            dtype: DType::F32,
            ops: Ops::Fused,
        }
    }
}

impl LoadOptions {
    /// Device and dtype from `device` and `dtype` when given (command-line flags), else from
    /// the environment (`XLT_DEVICE`, `XLT_DTYPE`), else `cpu` and `f32`; fused kernels.
    /// The one place these variables are read.
    ///
    /// # Errors
    /// [`LocalError::Setting`] naming the flag or variable that holds a bad value; see
    /// [`parse_device`] and [`parse_dtype`].
    pub fn from_env_or(device: Option<&str>, dtype: Option<&str>) -> Result<Self, LocalError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let pick = |flag: Option<&str>, name: &str, env: &str, default: &str| match flag {
            Some(v) => (v.to_owned(), name.to_owned()),
            None => match var(env) {
                Some(v) => (v, env.to_owned()),
                None => (default.to_owned(), name.to_owned()),
            },
        };
        let (d, d_from) = pick(device, "--device", "XLT_DEVICE", "cpu");
        let (t, t_from) = pick(dtype, "--dtype", "XLT_DTYPE", "f32");
        let named = |from: String| {
            move |e: LocalError| match e {
                LocalError::Setting { value, message, .. } => LocalError::Setting {
                    setting: from,
                    value,
                    message,
                },
                other => other,
            }
        };
        Ok(LoadOptions {
            device: parse_device(&d).map_err(named(d_from))?,
            dtype: parse_dtype(&t).map_err(named(t_from))?,
            ops: Ops::Fused,
        })
    }
}

/// Parses `cpu`, `cuda`, `cuda:N` (`cuda` is `cuda:0`).
///
/// # Errors
/// [`LocalError::Setting`] for another name, for CUDA in a build without the `cuda` feature
/// (saying to rebuild with `--features cuda`), and for a CUDA device that cannot be opened.
pub fn parse_device(s: &str) -> Result<Device, LocalError> {
    let bad = |message: String| LocalError::Setting {
        setting: "device".into(),
        value: s.to_owned(),
        message,
    };
    let ordinal = match s {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => n,
            _ => return Err(bad("expected cpu, cuda or cuda:N".into())),
        },
    };
    if cfg!(not(feature = "cuda")) {
        return Err(bad(
            "this build has no CUDA support; rebuild with `--features cuda` (needs the CUDA toolkit; `scripts/check-cuda` installs NVIDIA's compiler and checks the build, see docs/GPU.md): add it to the same command, `cargo run --release --features cuda --example <the example you ran> -- ...`".into(),
        ));
    }
    // candle's message only, not kept as a source, so that it prints once.
    Device::new_cuda(ordinal).map_err(|e| bad(format!("cannot be opened: {e}")))
}

/// Parses `f32` or `bf16`. `f16` is refused: these checkpoints are trained and shipped in
/// bf16 or f32, and f16 is not tested here.
///
/// # Errors
/// [`LocalError::Setting`] for another name.
pub fn parse_dtype(s: &str) -> Result<DType, LocalError> {
    match s {
        "f32" => Ok(DType::F32),
        "bf16" => Ok(DType::BF16),
        _ => Err(LocalError::Setting {
            setting: "dtype".into(),
            value: s.to_owned(),
            message: "expected f32 or bf16".into(),
        }),
    }
}

/// A loaded model with what it needs to chat: tokenizer, chat template, stop tokens.
#[derive(Debug)]
pub struct Loaded {
    /// The network.
    pub model: Model,
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// The chat template.
    pub template: ChatTemplate,
    /// Token ids that end generation.
    pub eos_token_ids: Vec<u32>,
    /// Where it came from (for messages).
    pub origin: String,
}

/// Loads `source`.
///
/// # Errors
/// Every [`LocalError`] variant about files, tensors, metadata and the cache.
pub fn load(source: &ModelSource, options: &LoadOptions) -> Result<Loaded, LocalError> {
    match source {
        ModelSource::Dir(dir) => load_dir(dir, options),
        ModelSource::Gguf(file) => load_gguf(file, options),
        ModelSource::HubId(id) => load_dir(&hub::resolve_model_id(id)?, options),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &'static str,
) -> Result<T, LocalError> {
    let text = std::fs::read_to_string(path).map_err(|e| LocalError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| LocalError::Json {
        path: path.to_owned(),
        what,
        message: e.to_string(),
    })
}

/// A special token in `tokenizer_config.json`: a string or `{"content": ...}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TokenSpec {
    Text(String),
    Object { content: String },
}

impl TokenSpec {
    fn text(self) -> String {
        match self {
            TokenSpec::Text(s) | TokenSpec::Object { content: s } => s,
        }
    }
}

/// `chat_template`: a string, or a list of named templates (`default` used).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TemplateSpec {
    One(String),
    Named(Vec<NamedTemplate>),
}

#[derive(Debug, Deserialize)]
struct NamedTemplate {
    name: String,
    template: String,
}

#[derive(Debug, Deserialize)]
struct TokenizerConfig {
    #[serde(default)]
    chat_template: Option<TemplateSpec>,
    #[serde(default)]
    bos_token: Option<TokenSpec>,
    #[serde(default)]
    eos_token: Option<TokenSpec>,
}

#[derive(Debug, Default, Deserialize)]
struct GenerationConfig {
    #[serde(default, deserialize_with = "crate::llama::one_or_many")]
    eos_token_id: Vec<u32>,
}

/// Loads a Hugging Face model directory.
///
/// # Errors
/// A missing or invalid file, named; a missing or misshapen tensor, named.
pub fn load_dir(dir: &Path, options: &LoadOptions) -> Result<Loaded, LocalError> {
    let config_path = dir.join("config.json");
    let config: Config = read_json(&config_path, "config.json")?;
    config
        .validate()
        .map_err(|message| LocalError::Unsupported {
            path: config_path.clone(),
            message,
        })?;
    let tokenizer_path = dir.join("tokenizer.json");
    if !tokenizer_path.is_file() {
        return Err(LocalError::io(&tokenizer_path, "no such file"));
    }
    let tokenizer = Tokenizer::from_file(&tokenizer_path).map_err(|e| LocalError::Json {
        path: tokenizer_path.clone(),
        what: "tokenizer.json",
        message: e.to_string(),
    })?;
    let tc_path = dir.join("tokenizer_config.json");
    let tc: TokenizerConfig = read_json(&tc_path, "tokenizer_config.json")?;
    // Newer checkpoints keep the template in its own file.
    let jinja = dir.join("chat_template.jinja");
    let source = if jinja.is_file() {
        std::fs::read_to_string(&jinja).map_err(|e| LocalError::io(&jinja, e))?
    } else {
        match tc.chat_template {
            Some(TemplateSpec::One(s)) => s,
            Some(TemplateSpec::Named(list)) => list
                .into_iter()
                .find(|t| t.name == "default")
                .map(|t| t.template)
                .ok_or_else(|| {
                    LocalError::Template(format!(
                        "{}: chat_template has no template named default",
                        tc_path.display()
                    ))
                })?,
            None => {
                return Err(LocalError::Template(format!(
                    "{}: no chat_template (a base model without a chat template cannot chat)",
                    tc_path.display()
                )));
            }
        }
    };
    let bos = tc.bos_token.map(TokenSpec::text).unwrap_or_default();
    let eos = tc.eos_token.map(TokenSpec::text).unwrap_or_default();
    let template = ChatTemplate::new(&source, &bos, &eos)
        .map_err(|e| LocalError::Template(format!("{}: {e}", tc_path.display())))?;
    let gen_path = dir.join("generation_config.json");
    let generation: GenerationConfig = if gen_path.is_file() {
        read_json(&gen_path, "generation_config.json")?
    } else {
        GenerationConfig::default()
    };
    let mut eos_ids: BTreeSet<u32> = generation.eos_token_id.into_iter().collect();
    eos_ids.extend(config.eos_token_id.iter().copied());
    if let Some(id) = tokenizer.token_to_id(&eos) {
        eos_ids.insert(id);
    }
    let tensors = read_safetensors(dir, &options.device)?;
    let model = build(&config, tensors, dir, options)?;
    Ok(Loaded {
        model,
        tokenizer,
        template,
        eos_token_ids: eos_ids.into_iter().collect(),
        origin: dir.display().to_string(),
    })
}

/// Every tensor of `model.safetensors`, or of the shards `model.safetensors.index.json`
/// lists.
fn read_safetensors(dir: &Path, device: &Device) -> Result<HashMap<String, Tensor>, LocalError> {
    #[derive(Deserialize)]
    struct Index {
        weight_map: HashMap<String, String>,
    }
    let single = dir.join("model.safetensors");
    let files: Vec<PathBuf> = if single.is_file() {
        vec![single]
    } else {
        let index_path = dir.join("model.safetensors.index.json");
        if !index_path.is_file() {
            return Err(LocalError::io(
                dir,
                "neither model.safetensors nor model.safetensors.index.json",
            ));
        }
        let index: Index = read_json(&index_path, "model.safetensors.index.json")?;
        let shards: BTreeSet<&String> = index.weight_map.values().collect();
        shards.into_iter().map(|f| dir.join(f)).collect()
    };
    let mut all = HashMap::new();
    for f in files {
        if !f.is_file() {
            return Err(LocalError::io(&f, "no such file (listed in the index)"));
        }
        let t = candle_core::safetensors::load(&f, device).map_err(|e| LocalError::io(&f, e))?;
        all.extend(t);
    }
    Ok(all)
}

/// The tensors a model of `cfg` reads, with their shapes, in checkpoint names.
pub fn expected_tensors(cfg: &Config) -> Vec<(String, Vec<usize>)> {
    let (h, i, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim());
    let (nh, kv) = (cfg.num_attention_heads, cfg.kv_heads());
    let mut v = vec![
        (
            "model.embed_tokens.weight".to_owned(),
            vec![cfg.vocab_size, h],
        ),
        ("model.norm.weight".to_owned(), vec![h]),
    ];
    if !cfg.tie_word_embeddings {
        v.push(("lm_head.weight".to_owned(), vec![cfg.vocab_size, h]));
    }
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        let mut push = |name: &str, shape: Vec<usize>| v.push((format!("{p}.{name}"), shape));
        push("input_layernorm.weight", vec![h]);
        push("post_attention_layernorm.weight", vec![h]);
        push("self_attn.q_proj.weight", vec![nh * hd, h]);
        push("self_attn.k_proj.weight", vec![kv * hd, h]);
        push("self_attn.v_proj.weight", vec![kv * hd, h]);
        push("self_attn.o_proj.weight", vec![h, nh * hd]);
        if cfg.qkv_bias() {
            push("self_attn.q_proj.bias", vec![nh * hd]);
            push("self_attn.k_proj.bias", vec![kv * hd]);
            push("self_attn.v_proj.bias", vec![kv * hd]);
        }
        if cfg.o_bias() {
            push("self_attn.o_proj.bias", vec![h]);
        }
        if cfg.qk_norm() {
            push("self_attn.q_norm.weight", vec![hd]);
            push("self_attn.k_norm.weight", vec![hd]);
        }
        push("mlp.gate_proj.weight", vec![i, h]);
        push("mlp.up_proj.weight", vec![i, h]);
        push("mlp.down_proj.weight", vec![h, i]);
    }
    v
}

/// Checks every expected tensor is there with its shape, then builds the model.
fn build(
    cfg: &Config,
    tensors: HashMap<String, Tensor>,
    path: &Path,
    options: &LoadOptions,
) -> Result<Model, LocalError> {
    for (name, shape) in expected_tensors(cfg) {
        match tensors.get(&name) {
            None => {
                return Err(LocalError::Tensor {
                    path: path.to_owned(),
                    tensor: name,
                    message: "missing".into(),
                });
            }
            Some(t) if t.dims() != shape.as_slice() => {
                return Err(LocalError::Tensor {
                    path: path.to_owned(),
                    tensor: name,
                    message: format!("shape {:?}, the config says {shape:?}", t.dims()),
                });
            }
            Some(_) => {}
        }
    }
    let vb = VarBuilder::from_tensors(tensors, options.dtype, &options.device);
    Model::new(cfg, options.ops, vb).map_err(|e| LocalError::Tensor {
        path: path.to_owned(),
        tensor: "?".into(),
        message: e.to_string(),
    })
}

/// The GGUF tensor of Llama 3.1's rotary scaling: one divisor per frequency.
const ROPE_FREQS: &str = "rope_freqs.weight";

struct Gguf<'a> {
    content: &'a gguf_file::Content,
    path: &'a Path,
}

impl Gguf<'_> {
    fn value(&self, key: &str) -> Result<&gguf_file::Value, LocalError> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| LocalError::Metadata {
                path: self.path.to_owned(),
                key: key.to_owned(),
                message: "missing".into(),
            })
    }
    fn err(&self, key: &str, e: impl std::fmt::Display) -> LocalError {
        LocalError::Metadata {
            path: self.path.to_owned(),
            key: key.to_owned(),
            message: e.to_string(),
        }
    }
    fn usize(&self, key: &str) -> Result<usize, LocalError> {
        let v = self.value(key)?;
        v.to_u64()
            .or_else(|_| v.to_u32().map(u64::from))
            .or_else(|_| v.to_i32().map(|x| x as u64))
            .map(|x| x as usize)
            .map_err(|e| self.err(key, e))
    }
    fn f64(&self, key: &str) -> Result<f64, LocalError> {
        let v = self.value(key)?;
        v.to_f32()
            .map(f64::from)
            .or_else(|_| v.to_f64())
            .map_err(|e| self.err(key, e))
    }
    fn string(&self, key: &str) -> Result<String, LocalError> {
        self.value(key)?
            .to_string()
            .cloned()
            .map_err(|e| self.err(key, e))
    }
}

/// GGUF tensor name to Hugging Face name, for the llama-style layouts.
fn hf_name(gguf: &str) -> Option<String> {
    let direct = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(d) = direct {
        return Some(d.to_owned());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (part, kind) = rest.rsplit_once('.')?;
    let hf = match part {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// Undoes llama.cpp's permutation of the q and k projections of the llama architecture
/// (interleaved rotary pairs) so that the weights are in Hugging Face's layout (halves):
/// rows `(heads, head_dim / 2, 2)` become `(heads, 2, head_dim / 2)`. As `transformers`'
/// `reverse_permute_weights`.
fn unpermute(t: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let dims = t.dims().to_vec();
    let rows = dims[0];
    let rest: usize = dims[1..].iter().product();
    t.reshape((heads, rows / heads / 2, 2, rest))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)
}

/// Loads a GGUF file: architecture `llama` (SmolLM2, Llama), `qwen2` or `qwen3`, with a
/// `gpt2` (byte-level BPE) tokenizer. Quantized tensors are dequantized to f32 on load, then
/// cast to `options.dtype`. Rotary scaling: Llama 3.1's from the tensor `rope_freqs.weight`
/// (the frequency divisors llama.cpp's converter computes from `rope_scaling`), linear from
/// `{arch}.rope.scaling.type` and `.factor`; another kind (YaRN) is refused.
///
/// # Errors
/// A missing metadata key or tensor, named with the file; an unsupported architecture or
/// tokenizer.
pub fn load_gguf(path: &Path, options: &LoadOptions) -> Result<Loaded, LocalError> {
    let mut file = std::fs::File::open(path).map_err(|e| LocalError::io(path, e))?;
    let mut reader = std::io::BufReader::new(&mut file);
    let content = gguf_file::Content::read(&mut reader)
        .map_err(|e| LocalError::io(path, format!("not a readable GGUF file ({e})")))?;
    let g = Gguf {
        content: &content,
        path,
    };
    let arch = g.string("general.architecture")?;
    if !matches!(arch.as_str(), "llama" | "qwen2" | "qwen3") {
        return Err(LocalError::Unsupported {
            path: path.to_owned(),
            message: format!("architecture {arch} (llama, qwen2, qwen3)"),
        });
    }
    let k = |s: &str| format!("{arch}.{s}");
    // Rotary scaling as llama.cpp's converter writes it: Llama 3.1's as per-frequency
    // divisors in the tensor `rope_freqs.weight` (read below), linear scaling as metadata.
    let scaling_key = k("rope.scaling.type");
    let rope_scaling = match g.string(&scaling_key).ok().as_deref() {
        None | Some("none") => None,
        Some("linear") => Some(crate::llama::RopeScaling {
            rope_type: "linear".into(),
            factor: Some(g.f64(&k("rope.scaling.factor"))?),
            low_freq_factor: None,
            high_freq_factor: None,
            original_max_position_embeddings: None,
        }),
        Some(other) => {
            return Err(g.err(
                &scaling_key,
                format!("rope scaling {other:?} is not supported (none, linear, or Llama 3.1's rope_freqs.weight)"),
            ));
        }
    };
    let tokens = g
        .value("tokenizer.ggml.tokens")?
        .to_vec()
        .map_err(|e| g.err("tokenizer.ggml.tokens", e))?;
    let token_text = |id: usize| tokens.get(id).and_then(|v| v.to_string().ok()).cloned();
    let heads = g.usize(&k("attention.head_count"))?;
    let kv_heads = match g.usize(&k("attention.head_count_kv")) {
        Ok(n) => n,
        Err(_) => heads,
    };
    let hidden = g.usize(&k("embedding_length"))?;
    let head_dim = g
        .usize(&k("attention.key_length"))
        .or_else(|_| g.usize(&k("rope.dimension_count")))
        .unwrap_or(hidden / heads);
    let eos = g.usize("tokenizer.ggml.eos_token_id")?;
    let mut eos_ids = vec![eos as u32];
    if let Ok(eot) = g.usize("tokenizer.ggml.eot_token_id") {
        eos_ids.push(eot as u32);
    }
    let bos = g.usize("tokenizer.ggml.bos_token_id").ok();
    let config = Config {
        model_type: arch.clone(),
        vocab_size: g.usize(&k("vocab_size")).unwrap_or(tokens.len()),
        hidden_size: hidden,
        intermediate_size: g.usize(&k("feed_forward_length"))?,
        num_hidden_layers: g.usize(&k("block_count"))?,
        num_attention_heads: heads,
        num_key_value_heads: Some(kv_heads),
        head_dim: Some(head_dim),
        rms_norm_eps: g.f64(&k("attention.layer_norm_rms_epsilon"))?,
        rope_theta: g.f64(&k("rope.freq_base")).unwrap_or(10_000.0),
        rope_scaling,
        max_position_embeddings: g.usize(&k("context_length")).ok(),
        tie_word_embeddings: !content.tensor_infos.contains_key("output.weight"),
        // By architecture: bias on q, k and v for qwen2, none for llama and qwen3.
        attention_bias: None,
        initializer_range: 0.02,
        eos_token_id: eos_ids.clone(),
        bos_token_id: bos.map(|b| b as u32),
    };
    config
        .validate()
        .map_err(|message| LocalError::Unsupported {
            path: path.to_owned(),
            message,
        })?;

    let tokenizer = gguf_tokenizer(&g)?;
    let template_source = g.string("tokenizer.chat_template")?;
    let template = ChatTemplate::new(
        &template_source,
        &bos.and_then(token_text).unwrap_or_default(),
        &token_text(eos).unwrap_or_default(),
    )
    .map_err(|e| g.err("tokenizer.chat_template", e))?;

    let mut tensors = HashMap::new();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let Some(hf) = hf_name(name) else { continue };
        let t = content
            .tensor(&mut reader, name, &Device::Cpu)
            .and_then(|q| q.dequantize(&Device::Cpu))
            .map_err(|e| LocalError::Tensor {
                path: path.to_owned(),
                tensor: name.clone(),
                message: e.to_string(),
            })?;
        let t = if arch == "llama" && name.contains(".attn_q.") {
            unpermute(&t, heads)?
        } else if arch == "llama" && name.contains(".attn_k.") {
            unpermute(&t, kv_heads)?
        } else {
            t
        };
        tensors.insert(hf, t.to_device(&options.device)?);
    }
    let mut model = build(&config, tensors, path, options)?;
    if content.tensor_infos.contains_key(ROPE_FREQS) {
        let tensor_err = |e: candle_core::Error| LocalError::Tensor {
            path: path.to_owned(),
            tensor: ROPE_FREQS.into(),
            message: e.to_string(),
        };
        let factors = content
            .tensor(&mut reader, ROPE_FREQS, &Device::Cpu)
            .and_then(|q| q.dequantize(&Device::Cpu))
            .and_then(|t| t.flatten_all()?.to_vec1::<f32>())
            .map_err(tensor_err)?;
        model = model.with_rope_freq_factors(&factors).map_err(tensor_err)?;
    }
    Ok(Loaded {
        model,
        tokenizer,
        template,
        eos_token_ids: eos_ids,
        origin: path.display().to_string(),
    })
}

/// The tokenizer of a GGUF file: candle's byte-level BPE builder, with the pre-tokenizer and
/// decoder set as `transformers` builds them from GGUF metadata (byte-level, GPT-2 split
/// pattern, no prefix space) unless the file names a pre-tokenizer candle knows.
fn gguf_tokenizer(g: &Gguf<'_>) -> Result<Tokenizer, LocalError> {
    use candle_core::quantized::tokenizer::TokenizerFromGguf;
    let model = g.string("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(LocalError::Unsupported {
            path: g.path.to_owned(),
            message: format!("tokenizer.ggml.model {model} (gpt2, byte-level BPE)"),
        });
    }
    let mut tokenizer =
        Tokenizer::from_gguf(g.content).map_err(|e| g.err("tokenizer.ggml.*", e))?;
    let pre = g.string("tokenizer.ggml.pre").unwrap_or_default();
    if !matches!(pre.as_str(), "qwen2" | "llama3" | "smaug-bpe" | "lfm2") {
        use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
        use tokenizers::pre_tokenizers::byte_level::ByteLevel;
        tokenizer.with_pre_tokenizer(Some(ByteLevel::new(false, false, true)));
        tokenizer.with_decoder(Some(ByteLevelDecoder::new(false, false, true)));
        tokenizer.with_post_processor(None::<tokenizers::processors::PostProcessorWrapper>);
    }
    Ok(tokenizer)
}
