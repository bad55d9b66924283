//! Tiny random-weight models of each family, built in the test: the KV cache, batching,
//! kernels, loading and serving must not change what the network computes.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use xlt_local::testing::{
    SMOLLM2_TEMPLATE, config, random_model, rebuild, tokenizer, write_hf_dir,
};
use xlt_local::{
    ChatTemplate, Config, GenerateParams, LoadOptions, LocalModel, LocalProvider, Model,
    ModelSource, Ops, RopeScaling, ServeOptions,
};
use xlt_provider::{ChatMessage, ChatModel, ChatRequest, Role};

/// Every family: Llama (untied, plain), Llama 3.1 rope scaling, Qwen2 (q/k/v bias, tied),
/// Qwen3 (q/k norms, tied).
fn families() -> Vec<(&'static str, Config)> {
    let mut llama31 = config("llama");
    llama31.rope_scaling = Some(RopeScaling {
        rope_type: "llama3".into(),
        factor: Some(8.0),
        low_freq_factor: Some(1.0),
        high_freq_factor: Some(4.0),
        original_max_position_embeddings: Some(16),
    });
    vec![
        ("llama", config("llama")),
        ("llama3.1", llama31),
        ("qwen2", config("qwen2")),
        ("qwen3", config("qwen3")),
    ]
}

fn ids(seed: u32, n: usize) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (seed * 31 + i * 17 + 5) % 256)
        .collect()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn local(cfg: &Config, model: Model) -> LocalModel {
    let template = ChatTemplate::new(SMOLLM2_TEMPLATE, "", "<|im_end|>").unwrap();
    LocalModel::from_parts(model, tokenizer(), template, cfg.eos_token_id.clone())
}

// f32 sums in a different order (one long matmul against many short ones) differ in the
// last bits; 1e-4 on logits of magnitude ~10 is far below any real difference.
const TOL: f32 = 1e-4;

#[test]
fn kv_cache_decoding_equals_a_full_forward_pass() {
    for (name, cfg) in families() {
        let (_vm, model) = random_model(&cfg, Ops::Fused);
        let seq = ids(1, 12);
        let input = Tensor::new(seq.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let full = model.forward(&input, &mut model.new_cache(), None).unwrap();
        // A prefix of 7, then one token at a time.
        let mut cache = model.new_cache();
        let prefix = input.narrow(1, 0, 7).unwrap();
        let first = model.forward(&prefix, &mut cache, None).unwrap();
        let d = max_abs_diff(&first, &full.narrow(1, 0, 7).unwrap());
        assert!(d < TOL, "{name}: prefix differs by {d}");
        for pos in 7..12 {
            let step = model
                .forward(&input.narrow(1, pos, 1).unwrap(), &mut cache, None)
                .unwrap();
            let d = max_abs_diff(&step, &full.narrow(1, pos, 1).unwrap());
            assert!(d < TOL, "{name}: position {pos} differs by {d}");
        }
        assert_eq!(cache.seen(), 12);
    }
}

#[test]
fn differentiable_ops_compute_what_the_fused_kernels_compute() {
    for (name, cfg) in families() {
        let (vm, fused) = random_model(&cfg, Ops::Fused);
        let slow = rebuild(&cfg, &vm, Ops::Differentiable, DType::F32);
        let input = Tensor::new(ids(2, 9).as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let a = fused.forward(&input, &mut fused.new_cache(), None).unwrap();
        let b = slow.forward(&input, &mut slow.new_cache(), None).unwrap();
        let d = max_abs_diff(&a, &b);
        assert!(d < TOL, "{name}: fused and differentiable differ by {d}");
    }
}

#[test]
fn bf16_weights_give_close_log_probabilities() {
    // Smaller weights than the other tests' 0.5, which make the tiny network so sharp that
    // bf16's rounding of the weights alone moves log-probabilities by tenths of a nat.
    let cfg = Config {
        initializer_range: 0.2,
        ..config("qwen2")
    };
    let (vm, model) = random_model(&cfg, Ops::Fused);
    let bf16 = rebuild(&cfg, &vm, Ops::Fused, DType::BF16);
    assert_eq!(bf16.dtype(), DType::BF16);
    let prompts = vec![ids(3, 10), ids(4, 6)];
    let a = local(&cfg, model).next_token_logprobs(&prompts).unwrap();
    let b = local(&cfg, bf16).next_token_logprobs(&prompts).unwrap();
    for (ra, rb) in a.iter().zip(&b) {
        // bf16 keeps 8 bits of mantissa (0.4% per rounding): through two layers the
        // log-probabilities move by about 1% of their spread over the vocabulary. A wrong
        // kernel (a missed scale, a transposed weight) moves them by a large part of it.
        let d = ra
            .iter()
            .zip(rb)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        let spread = ra.iter().copied().fold(f32::MIN, f32::max)
            - ra.iter().copied().fold(f32::MAX, f32::min);
        eprintln!("bf16 log-probabilities differ from f32 by at most {d} (spread {spread})");
        assert!(spread > 1.0, "the distribution is far from uniform");
        assert!(
            d < 0.03 * spread,
            "bf16 differs from f32 by {d} nat (spread {spread})"
        );
    }
}

#[test]
fn batched_prompts_equal_unbatched_ones() {
    for (name, cfg) in families() {
        let (vm, model) = random_model(&cfg, Ops::Fused);
        let prompts = vec![ids(5, 11), ids(6, 4), ids(7, 8), ids(8, 1)];
        // Trainable weights (candle's matrix kernels): the same numbers within rounding.
        let m = local(&cfg, model);
        assert!(!m.scores_batch_invariant(), "{name}");
        let batched = m.next_token_logprobs(&prompts).unwrap();
        for (p, row) in prompts.iter().zip(&batched) {
            let alone = &m.next_token_logprobs(std::slice::from_ref(p)).unwrap()[0];
            let d = row
                .iter()
                .zip(alone)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            assert!(d < TOL, "{name}: batched logprobs differ by {d}");
        }
        // Frozen weights, as loaded: the same bits, in any order (a one-token prompt too).
        let frozen = local(&cfg, rebuild(&cfg, &vm, Ops::Fused, DType::F32));
        assert!(frozen.scores_batch_invariant(), "{name}");
        let batched = frozen.next_token_logprobs(&prompts).unwrap();
        let reversed: Vec<Vec<u32>> = prompts.iter().rev().cloned().collect();
        let backwards = frozen.next_token_logprobs(&reversed).unwrap();
        for (i, p) in prompts.iter().enumerate() {
            let alone = &frozen.next_token_logprobs(std::slice::from_ref(p)).unwrap()[0];
            assert_eq!(&batched[i], alone, "{name}: prompt {i}");
            assert_eq!(
                &backwards[prompts.len() - 1 - i],
                alone,
                "{name}: prompt {i}"
            );
        }
        // Greedy generation too: same tokens batched and alone.
        let params = vec![
            GenerateParams {
                max_tokens: 6,
                top_logprobs: 3,
                ..GenerateParams::default()
            };
            prompts.len()
        ];
        let together = m.generate(&prompts, &params).unwrap();
        for (i, p) in prompts.iter().enumerate() {
            let alone = m.generate(std::slice::from_ref(p), &params[..1]).unwrap();
            assert_eq!(together[i].tokens, alone[0].tokens, "{name}: prompt {i}");
            assert_eq!(together[i].top_logprobs.len(), 3);
            assert_eq!(
                together[i].top_logprobs[0].id, alone[0].top_logprobs[0].id,
                "{name}: prompt {i}"
            );
        }
    }
}

/// Packed passes refuse lengths that do not cover the ids, an empty or zero length, and a
/// context of more than one sequence, saying what does not fit; a packed pass over one
/// sequence gives the hidden states of the plain forward pass.
#[test]
fn packed_passes_check_their_lengths_and_context() {
    let cfg = config("qwen3");
    let (vm, _) = random_model(&cfg, Ops::Fused);
    let model = rebuild(&cfg, &vm, Ops::Fused, DType::F32);
    let empty = xlt_local::Cache::default();
    let tokens = ids(3, 6);
    for lengths in [vec![2, 2], vec![6, 0], vec![]] {
        let err = model.forward_packed(&tokens, &lengths, &empty).unwrap_err();
        assert!(
            err.to_string().contains("sequence lengths"),
            "{lengths:?}: {err}"
        );
    }
    let mut two = model.new_cache();
    let batch = Tensor::new(&[[1u32, 2], [3, 4]], &Device::Cpu).unwrap();
    model.forward_hidden(&batch, &mut two, None).unwrap();
    let err = model.forward_packed(&tokens, &[6], &two).unwrap_err();
    assert!(err.to_string().contains("one context"), "{err}");
    let packed = model.forward_packed(&tokens, &[6], &empty).unwrap();
    let input = Tensor::new(tokens.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let plain = model
        .forward_hidden(&input, &mut model.new_cache(), None)
        .unwrap();
    assert!(max_abs_diff(&packed, &plain.squeeze(0).unwrap()) < 1e-5);
}

#[test]
fn generation_stops_at_max_tokens_or_end_of_turn_and_sampling_follows_the_seed() {
    let cfg = config("llama");
    let (_vm, model) = random_model(&cfg, Ops::Fused);
    let m = local(&cfg, model);
    let p = vec![ids(8, 5)];
    let g = m
        .generate(
            &p,
            &[GenerateParams {
                max_tokens: 4,
                ..Default::default()
            }],
        )
        .unwrap();
    assert!(g[0].tokens.len() <= 4);
    match g[0].finish_reason {
        xlt_local::FinishReason::Length => assert_eq!(g[0].tokens.len(), 4),
        xlt_local::FinishReason::Stop => assert!(g[0].completion_tokens == g[0].tokens.len() + 1),
    }
    let sampled = |seed| {
        m.generate(
            &p,
            &[GenerateParams {
                max_tokens: 8,
                temperature: 1.5,
                seed,
                top_logprobs: 0,
            }],
        )
        .unwrap()[0]
            .tokens
            .clone()
    };
    assert_eq!(sampled(3), sampled(3));
    assert!(
        (0..8).any(|s| sampled(s) != sampled(s + 100)),
        "different seeds, different draws"
    );
    // The first token's log-probabilities are a distribution over the whole vocabulary.
    let lp = &m.next_token_logprobs(&p).unwrap()[0];
    assert_eq!(lp.len(), 260);
    let total: f64 = lp.iter().map(|&l| f64::from(l).exp()).sum();
    assert!((total - 1.0).abs() < 1e-4, "probabilities sum to {total}");
}

fn check_template(template: &str, messages: &[(Role, &str)], expected: &str) {
    let t = ChatTemplate::new(template, "<s>", "</s>").unwrap();
    let msgs: Vec<ChatMessage> = messages
        .iter()
        .map(|(r, c)| ChatMessage::new(*r, *c))
        .collect();
    assert_eq!(t.render(&msgs, true).unwrap(), expected);
}

#[test]
fn chat_templates_render_as_the_models_templates_say() {
    // SmolLM2: a default system turn when none is given.
    check_template(
        SMOLLM2_TEMPLATE,
        &[(Role::User, "Hi")],
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    );
    check_template(
        SMOLLM2_TEMPLATE,
        &[(Role::System, "Be brief."), (Role::User, "Hi")],
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    );
    // Qwen2.5's shape: block tags on their own lines (trim_blocks, lstrip_blocks), a default
    // system prompt, `messages[0]['role']`.
    let qwen = "{%- if messages[0]['role'] == 'system' %}\n    {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n{%- else %}\n    {{- '<|im_start|>system\\nYou are Qwen.<|im_end|>\\n' }}\n{%- endif %}\n{%- for message in messages %}\n    {%- if message.role != 'system' %}\n        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n    {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n";
    check_template(
        qwen,
        &[(Role::User, "2+2?")],
        "<|im_start|>system\nYou are Qwen.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n",
    );
    // Llama's shape: bos_token, Python string methods, trim_blocks eating the newline after
    // a block tag.
    let llama = "{{ bos_token }}{% for message in messages %}\n{% if message['role'].startswith('sys') %}[SYS]{{ message['content'].strip() }}[/SYS]{% else %}{{ message['role'].upper() }}: {{ message['content'] | trim }}{{ eos_token }}{% endif %}\n{% endfor %}\n{% if add_generation_prompt %}ASSISTANT:{% endif %}";
    check_template(
        llama,
        &[(Role::System, "  rules "), (Role::User, " hello ")],
        "<s>[SYS]rules[/SYS]USER: hello</s>ASSISTANT:",
    );
    // raise_exception fails the render with the template's message.
    let strict = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}ok";
    let t = ChatTemplate::new(strict, "", "").unwrap();
    let err = t
        .render(&[ChatMessage::new(Role::System, "x")], true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("System role not supported"), "{err}");
    assert!(ChatTemplate::new("{% for %}", "", "").is_err());
}

#[test]
fn a_hugging_face_directory_loads_as_built_single_file_or_sharded() {
    for (name, cfg) in [
        ("llama", config("llama")),
        ("qwen2", config("qwen2")),
        ("qwen3", config("qwen3")),
    ] {
        for shards in [false, true] {
            let (vm, model) = random_model(&cfg, Ops::Fused);
            let dir = tempfile::tempdir().unwrap();
            write_hf_dir(dir.path(), &cfg, &vm, shards);
            let source = ModelSource::parse(dir.path().to_str().unwrap()).unwrap();
            assert_eq!(source, ModelSource::Dir(dir.path().to_owned()));
            let loaded = LocalModel::load(&source, &LoadOptions::default()).unwrap();
            let m = local(&cfg, model);
            let msgs = [ChatMessage::new(Role::User, "Hello there")];
            let prompt = loaded.encode_chat(&msgs).unwrap();
            assert_eq!(prompt, m.encode_chat(&msgs).unwrap());
            assert_eq!(prompt[0], 257, "<|im_start|> is one special token");
            let a = &loaded
                .next_token_logprobs(std::slice::from_ref(&prompt))
                .unwrap()[0];
            let b = &m.next_token_logprobs(&[prompt]).unwrap()[0];
            let d = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            assert!(
                d < TOL,
                "{name} (shards: {shards}): loaded model differs by {d}"
            );
        }
    }
}

#[test]
fn a_missing_or_misshapen_tensor_is_named_with_its_file() {
    let cfg = config("qwen2");
    let (vm, _model) = random_model(&cfg, Ops::Fused);
    let dir = tempfile::tempdir().unwrap();
    write_hf_dir(dir.path(), &cfg, &vm, false);
    // Drop one tensor and rewrite the file.
    let file = dir.path().join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    tensors.remove("model.layers.1.mlp.up_proj.weight");
    candle_core::safetensors::save(&tensors, &file).unwrap();
    let err = LocalModel::load(
        &ModelSource::Dir(dir.path().to_owned()),
        &LoadOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("tensor model.layers.1.mlp.up_proj.weight: missing"),
        "{err}"
    );
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
    // A bias of the wrong length.
    tensors.insert(
        "model.layers.1.mlp.up_proj.weight".into(),
        Tensor::zeros((48, 32), DType::F32, &Device::Cpu).unwrap(),
    );
    tensors.insert(
        "model.layers.0.self_attn.k_proj.bias".into(),
        Tensor::zeros(7, DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&tensors, &file).unwrap();
    let err = LocalModel::load(
        &ModelSource::Dir(dir.path().to_owned()),
        &LoadOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(
            "tensor model.layers.0.self_attn.k_proj.bias: shape [7], the config says [16]"
        ),
        "{err}"
    );
    // A broken config names its file.
    std::fs::write(dir.path().join("config.json"), "{\"hidden_size\": 3}").unwrap();
    let err = LocalModel::load(
        &ModelSource::Dir(dir.path().to_owned()),
        &LoadOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("config.json: invalid config.json"), "{err}");
}

#[test]
fn model_ids_resolve_in_the_local_hub_cache_and_a_missing_one_says_how_to_download() {
    let cache = tempfile::tempdir().unwrap();
    let repo = cache.path().join("models--Org--Tiny");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    std::fs::create_dir_all(repo.join("snapshots").join(commit)).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs").join("main"), format!("{commit}\n")).unwrap();
    assert_eq!(
        xlt_local::resolve_in_cache(cache.path(), "Org/Tiny", None).unwrap(),
        repo.join("snapshots").join(commit)
    );
    assert_eq!(
        xlt_local::resolve_in_cache(cache.path(), "Org/Tiny", Some(commit)).unwrap(),
        repo.join("snapshots").join(commit)
    );
    let err = xlt_local::resolve_in_cache(cache.path(), "Org/Other", None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model Org/Other is not in the local Hugging Face cache"),
        "{err}"
    );
    assert!(err.contains("huggingface-cli download Org/Other"), "{err}");
    assert!(err.contains("models--Org--Other"), "{err}");
    assert!(xlt_local::resolve_in_cache(cache.path(), "../x", None).is_err());
    // A name that is neither a path nor an id.
    assert!(ModelSource::parse("no/such/model.gguf").is_err());
    assert_eq!(
        ModelSource::parse("Qwen/Qwen2.5-0.5B-Instruct").unwrap(),
        ModelSource::HubId("Qwen/Qwen2.5-0.5B-Instruct".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_batches_concurrent_requests_and_answers_each_as_alone() {
    let cfg = config("qwen3");
    let (_vm, model) = random_model(&cfg, Ops::Fused);
    let provider = Arc::new(LocalProvider::new(
        LoadOptions::default(),
        ServeOptions {
            max_batch: 4,
            max_concurrent: 8,
        },
    ));
    provider.insert("tiny", local(&cfg, model)).await;
    let request = |i: usize| {
        let mut r = ChatRequest::new(
            "tiny",
            vec![ChatMessage::new(Role::User, "x".repeat(1 + 3 * i))],
        );
        r.max_tokens = Some(5);
        r.temperature = Some(0.0);
        r.top_logprobs = Some(5);
        r
    };
    let mut alone = Vec::new();
    for i in 0..6 {
        alone.push(provider.chat(&request(i)).await.unwrap());
    }
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let p = provider.clone();
            tokio::spawn(async move { p.chat(&request(i)).await.unwrap() })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let r = h.await.unwrap();
        assert_eq!(r.text, alone[i].text, "request {i}");
        assert_eq!(r.usage, alone[i].usage);
        let (a, b) = (
            r.top_logprobs.unwrap(),
            alone[i].top_logprobs.clone().unwrap(),
        );
        assert_eq!(a.len(), 5);
        assert_eq!(a[0].token, b[0].token);
        assert!((a[0].logprob - b[0].logprob).abs() < 1e-4);
        assert!(matches!(
            r.finish_reason.as_deref(),
            Some("stop" | "length")
        ));
    }
    // An unknown model is a clear error, not a panic.
    let err = provider
        .chat(&ChatRequest::new(
            "no/such",
            vec![ChatMessage::new(Role::User, "x")],
        ))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("local model no/such"), "{err}");
    assert!(!err.is_empty());
}

/// A model file that does not exist is an invalid request that says so once, naming the
/// file (issue #26: "invalid request:" appeared twice).
#[tokio::test]
async fn a_missing_model_file_says_invalid_request_once() {
    let provider = LocalProvider::new(LoadOptions::default(), ServeOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.gguf");
    let name = path.to_str().unwrap();
    let Err(err) = provider.model(name).await else {
        panic!("{name} does not exist, yet it loaded");
    };
    let msg = err.to_string();
    assert_eq!(
        msg.matches("invalid request").count(),
        1,
        "\"invalid request\" more than once: {msg}"
    );
    assert_eq!(
        msg.matches(name).count(),
        1,
        "the file named other than once: {msg}"
    );
    assert!(msg.contains("no such file or directory"), "{msg}");
}
