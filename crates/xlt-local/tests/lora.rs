//! LoRA on tiny random-weight models built in the test: gradients reach every adapter
//! through the differentiable path and match finite differences, merging an adapter does
//! not change the function, adapters round-trip through PEFT's format, and training
//! overfits a handful of multiple-choice questions.

use std::collections::HashMap;
use std::ops::ControlFlow;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use xlt_local::testing::{SMOLLM2_TEMPLATE, config, tokenizer};
use xlt_local::{
    ChatTemplate, Config, LocalFineTuner, LocalModel, LoraConfig, Model, Ops, TrainConfig,
    TrainExample, assistant_nll, attach_lora, encode_example, load_adapter, lora_params,
    merge_lora, save_adapter, train, train_resumable,
};
use xlt_provider::{
    ChatMessage, ChatModel, FilePurpose, FineTuneSpec, FineTuner, Hyperparameters, JobStatus,
    LearningRate, Param, Role,
};

fn template() -> ChatTemplate {
    ChatTemplate::new(SMOLLM2_TEMPLATE, "", "<|im_end|>").unwrap()
}

/// Random weights, as plain (non-trainable) tensors like weights read from a file.
fn base_weights(cfg: &Config) -> HashMap<String, Tensor> {
    let varmap = VarMap::new();
    Model::new(
        cfg,
        Ops::Fused,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let data = varmap.data().lock().unwrap();
    data.iter()
        .map(|(k, v)| (k.clone(), v.as_detached_tensor()))
        .collect()
}

fn build(cfg: &Config, weights: &HashMap<String, Tensor>, ops: Ops, dtype: DType) -> Model {
    let vb = VarBuilder::from_tensors(weights.clone(), dtype, &Device::Cpu);
    Model::new(cfg, ops, vb).unwrap()
}

fn user(text: &str) -> ChatMessage {
    ChatMessage::new(Role::User, text)
}

fn answer(text: &str) -> ChatMessage {
    ChatMessage::new(Role::Assistant, text)
}

fn example(q: &str, a: &str) -> TrainExample {
    encode_example(&tokenizer(), &template(), &[user(q), answer(a)]).unwrap()
}

/// Gives every `lora_B` random values (PEFT starts them at zero, where `lora_A` gets no
/// gradient), so that every parameter is exercised.
fn randomize_b(model: &Model, std: f64) {
    for p in lora_params(model) {
        let b = p.b.as_tensor();
        let r = (Tensor::randn(0.0, std, b.shape(), b.device()).unwrap())
            .to_dtype(b.dtype())
            .unwrap();
        p.b.set(&r).unwrap();
    }
}

fn max_abs(t: &Tensor) -> f64 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

fn no_dropout() -> LoraConfig {
    LoraConfig {
        r: 4,
        lora_dropout: 0.0,
        ..LoraConfig::default()
    }
}

#[test]
fn the_assistant_tokens_are_those_after_the_generation_prompt() {
    let e = example("Hi", "B");
    let text: String = tokenizer()
        .decode(
            &e.input_ids
                .iter()
                .zip(&e.loss_mask)
                .filter(|(_, m)| **m)
                .map(|(i, _)| *i)
                .collect::<Vec<_>>(),
            false,
        )
        .unwrap();
    assert_eq!(text, "B<|im_end|>\n");
    assert_eq!(e.target_tokens(), 3);
    let err = encode_example(&tokenizer(), &template(), &[user("Hi")]).unwrap_err();
    assert!(err.to_string().contains("assistant"), "{err}");
}

#[test]
fn lora_attaches_to_the_seven_projections_with_peft_defaults() {
    let cfg = config("qwen2");
    let mut model = build(&cfg, &base_weights(&cfg), Ops::Fused, DType::F32);
    let params = attach_lora(&mut model, &LoraConfig::default(), 0).unwrap();
    assert_eq!(params.len(), 2 * 7);
    assert_eq!(params[0].module, "model.layers.0.self_attn.q_proj");
    assert_eq!(params[13].module, "model.layers.1.mlp.down_proj");
    // q_proj: (out, in) = (32, 32); down_proj: (32, 48).
    assert_eq!(params[0].a.dims(), [16, 32]);
    assert_eq!(params[0].b.dims(), [32, 16]);
    assert_eq!(params[13].a.dims(), [16, 48]);
    for p in &params {
        assert_eq!(
            max_abs(p.b.as_tensor()),
            0.0,
            "{}: lora_B starts at zero",
            p.module
        );
        let bound = 1.0 / (p.a.dim(1).unwrap() as f64).sqrt();
        let a = max_abs(p.a.as_tensor());
        assert!(
            a > 0.5 * bound && a <= bound,
            "{}: lora_A within ±1/sqrt(in)",
            p.module
        );
    }
    assert_eq!(LoraConfig::default().scale(), 2.0);
    // Only the attention projections.
    let mut model = build(&cfg, &base_weights(&cfg), Ops::Fused, DType::F32);
    let attn = LoraConfig {
        target_modules: vec!["q_proj".into(), "v_proj".into()],
        ..LoraConfig::default()
    };
    let names: Vec<String> = attach_lora(&mut model, &attn, 0)
        .unwrap()
        .into_iter()
        .map(|p| p.module)
        .collect();
    assert_eq!(
        names,
        [
            "model.layers.0.self_attn.q_proj",
            "model.layers.0.self_attn.v_proj",
            "model.layers.1.self_attn.q_proj",
            "model.layers.1.self_attn.v_proj"
        ]
    );
    let none = LoraConfig {
        target_modules: vec!["c_attn".into()],
        ..LoraConfig::default()
    };
    assert!(attach_lora(&mut model, &none, 0).is_err());
}

#[test]
fn every_lora_parameter_receives_a_nonzero_gradient() {
    for family in ["llama", "qwen2", "qwen3"] {
        let cfg = config(family);
        let mut model = build(&cfg, &base_weights(&cfg), Ops::Differentiable, DType::F32);
        attach_lora(&mut model, &LoraConfig::default(), 1).unwrap();
        let examples = vec![example("Which letter?", "C")];
        // One step moves every lora_B off zero (at PEFT's initialization lora_A's gradient
        // is zero because lora_B is).
        let config = TrainConfig {
            epochs: 1,
            batch_size: 1,
            learning_rate: 1e-2,
            warmup_ratio: 0.0,
            ..TrainConfig::default()
        };
        train(
            &mut model,
            &examples,
            &config,
            |_| ControlFlow::Continue(()),
        )
        .unwrap();
        let batch: Vec<&TrainExample> = examples.iter().collect();
        let (nll, n) = assistant_nll(&model, &batch).unwrap();
        assert_eq!(n, 3);
        let grads = nll.backward().unwrap();
        for p in lora_params(&model) {
            for (which, v) in [("lora_A", &p.a), ("lora_B", &p.b)] {
                let g = grads
                    .get(v.as_tensor())
                    .unwrap_or_else(|| panic!("{family} {} {which}: no gradient", p.module));
                assert!(
                    max_abs(g) > 0.0,
                    "{family} {} {which}: zero gradient",
                    p.module
                );
            }
        }
    }
}

#[test]
fn training_refuses_a_model_with_fused_kernels() {
    let cfg = config("llama");
    let mut model = build(&cfg, &base_weights(&cfg), Ops::Fused, DType::F32);
    attach_lora(&mut model, &LoraConfig::default(), 1).unwrap();
    let err = train(
        &mut model,
        &[example("Q", "A")],
        &TrainConfig::default(),
        |_| ControlFlow::Continue(()),
    )
    .unwrap_err();
    assert!(err.to_string().contains("Differentiable"), "{err}");
}

/// Mean NLL in f64 of `examples`.
fn loss_f64(model: &Model, examples: &[TrainExample]) -> (Tensor, f64) {
    let batch: Vec<&TrainExample> = examples.iter().collect();
    let (nll, n) = assistant_nll(model, &batch).unwrap();
    let mean = (nll / n as f64).unwrap();
    let v = mean.to_scalar::<f64>().unwrap();
    (mean, v)
}

#[test]
fn gradients_match_finite_differences_on_a_tiny_f64_model() {
    for family in ["llama", "qwen3"] {
        let cfg = config(family);
        let mut model = build(&cfg, &base_weights(&cfg), Ops::Differentiable, DType::F64);
        attach_lora(&mut model, &no_dropout(), 2).unwrap();
        randomize_b(&model, 0.1);
        let examples = vec![
            example("Pick one", "D"),
            example("Another, longer one?", "A"),
        ];
        let (mean, _) = loss_f64(&model, &examples);
        let grads = mean.backward().unwrap();
        let h = 1e-5;
        for p in lora_params(&model) {
            for (which, v) in [("lora_A", &p.a), ("lora_B", &p.b)] {
                let analytic = grads.get(v.as_tensor()).unwrap().flatten_all().unwrap();
                let original = v
                    .as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap();
                // Two entries per tensor: the first and one in the middle.
                for idx in [0, original.len() / 2 + 1] {
                    let shifted = |delta: f64| {
                        let mut w = original.clone();
                        w[idx] += delta;
                        v.set(&Tensor::from_vec(w, v.shape(), &Device::Cpu).unwrap())
                            .unwrap();
                        loss_f64(&model, &examples).1
                    };
                    let numeric = (shifted(h) - shifted(-h)) / (2.0 * h);
                    shifted(0.0);
                    let exact = analytic.get(idx).unwrap().to_scalar::<f64>().unwrap();
                    // Central differences err by O(h^2 * L''') ~ 1e-10 here, and rounding
                    // adds ~1e-16 / h ~ 1e-11: a tolerance of 1e-7 absolute plus 1e-5
                    // relative leaves two orders of margin and still catches a wrong or
                    // missing term.
                    assert!(
                        (numeric - exact).abs() <= 1e-7 + 1e-5 * exact.abs(),
                        "{family} {} {which}[{idx}]: backward {exact} vs finite difference {numeric}",
                        p.module
                    );
                }
            }
        }
    }
}

#[test]
fn merged_and_unmerged_forwards_agree() {
    for family in ["llama", "qwen2"] {
        let cfg = config(family);
        let weights = base_weights(&cfg);
        let input = Tensor::new(&[[257u32, 10, 20, 30, 40, 50, 258]], &Device::Cpu).unwrap();
        let mut adapted = build(&cfg, &weights, Ops::Fused, DType::F32);
        let base_logits = adapted
            .forward(&input, &mut adapted.new_cache(), None)
            .unwrap();
        attach_lora(&mut adapted, &LoraConfig::default(), 3).unwrap();
        randomize_b(&adapted, 0.05);
        let unmerged = adapted
            .forward(&input, &mut adapted.new_cache(), None)
            .unwrap();
        let merged_model = merge_lora(&adapted).unwrap();
        assert!(lora_params(&merged_model).is_empty());
        let merged = merged_model
            .forward(&input, &mut merged_model.new_cache(), None)
            .unwrap();
        // The adapter changes the function...
        assert!(max_abs(&(&unmerged - &base_logits).unwrap()) > 1e-2);
        // ...and merging does not: the two differ only by f32 rounding in the order of the
        // sums (logits are O(10) here; f32 has ~7 digits).
        let diff = max_abs(&(&unmerged - &merged).unwrap());
        assert!(
            diff < 1e-4,
            "{family}: merged and unmerged differ by {diff}"
        );
        // The differentiable path computes the same function.
        let mut slow = build(&cfg, &weights, Ops::Differentiable, DType::F32);
        xlt_local::attach_lora(&mut slow, &LoraConfig::default(), 3).unwrap();
        for (p, q) in lora_params(&slow).iter().zip(lora_params(&adapted)) {
            p.b.set(q.b.as_tensor()).unwrap();
        }
        let slow_logits = slow.forward(&input, &mut slow.new_cache(), None).unwrap();
        let diff = max_abs(&(&unmerged - &slow_logits).unwrap());
        assert!(
            diff < 1e-4,
            "{family}: fused and differentiable differ by {diff}"
        );
    }
}

/// An adapter on a model built with fused kernels (inference) records no operations for a
/// backward pass, whether attached fresh or loaded from PEFT files: recording them kept every
/// layer's input alive until the output was dropped, about 440 MiB for one SmolLM2-135M
/// prompt of 350 tokens (issue #26). On the differentiable path the output still records
/// them (the gradient tests above depend on it).
#[test]
fn an_adapter_on_a_fused_model_records_no_operations() {
    let cfg = config("llama");
    let weights = base_weights(&cfg);
    let input = Tensor::new(&[[257u32, 10, 20, 30, 258]], &Device::Cpu).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("adapter");
    let mut fused = build(&cfg, &weights, Ops::Fused, DType::F32);
    attach_lora(&mut fused, &no_dropout(), 1).unwrap();
    randomize_b(&fused, 0.5);
    save_adapter(&fused, &no_dropout(), "tiny/llama", &dir).unwrap();
    let mut loaded = build(&cfg, &weights, Ops::Fused, DType::F32);
    load_adapter(&mut loaded, &dir).unwrap();
    let mut slow = build(&cfg, &weights, Ops::Differentiable, DType::F32);
    load_adapter(&mut slow, &dir).unwrap();
    for (what, model, records) in [
        ("fused, attached", &fused, false),
        ("fused, loaded", &loaded, false),
        ("differentiable, loaded", &slow, true),
    ] {
        let logits = model.forward(&input, &mut model.new_cache(), None).unwrap();
        assert_eq!(logits.track_op(), records, "{what}: records operations");
    }
}

#[test]
fn adapters_round_trip_through_peft_format() {
    let cfg = config("qwen2");
    let weights = base_weights(&cfg);
    let input = Tensor::new(&[[257u32, 1, 2, 3, 4, 258]], &Device::Cpu).unwrap();
    let lora = LoraConfig {
        r: 8,
        lora_alpha: 16.0,
        target_modules: vec!["q_proj".into(), "down_proj".into()],
        ..LoraConfig::default()
    };
    let mut trained = build(&cfg, &weights, Ops::Fused, DType::F32);
    attach_lora(&mut trained, &lora, 4).unwrap();
    randomize_b(&trained, 0.05);
    let expected = trained
        .forward(&input, &mut trained.new_cache(), None)
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("adapter");
    save_adapter(&trained, &lora, "tiny/qwen2", &dir).unwrap();
    // A second save replaces the first whole and leaves no temporary directory behind.
    save_adapter(&trained, &lora, "tiny/qwen2", &dir).unwrap();
    let mut entries: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(entries, ["adapter"]);

    // PEFT's file: its keys and config fields.
    let st = candle_core::safetensors::load(dir.join("adapter_model.safetensors"), &Device::Cpu)
        .unwrap();
    let mut keys: Vec<&String> = st.keys().collect();
    keys.sort();
    assert_eq!(keys.len(), 8);
    assert_eq!(
        keys[0],
        "base_model.model.model.layers.0.mlp.down_proj.lora_A.weight"
    );
    assert_eq!(
        st["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"].dims(),
        [8, 32]
    );
    assert_eq!(
        st["base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"].dims(),
        [32, 8]
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(json["peft_type"], "LORA");
    assert_eq!(json["task_type"], "CAUSAL_LM");
    assert_eq!(json["r"], 8);
    assert_eq!(json["lora_alpha"], 16.0);
    assert_eq!(
        json["target_modules"],
        serde_json::json!(["q_proj", "down_proj"])
    );
    assert_eq!(json["base_model_name_or_path"], "tiny/qwen2");

    // Loaded onto the same base, the adapter computes the same function.
    let mut loaded = build(&cfg, &weights, Ops::Fused, DType::F32);
    let read = load_adapter(&mut loaded, &dir).unwrap();
    assert_eq!(read, lora);
    let got = loaded
        .forward(&input, &mut loaded.new_cache(), None)
        .unwrap();
    assert_eq!(max_abs(&(&got - &expected).unwrap()), 0.0);

    // PEFT also writes target_modules as a string ("all-linear" or a regular expression
    // over full module names; more variants in peft_config.rs).
    let cfg_path = dir.join("adapter_config.json");
    let mut edited = json.clone();
    edited["target_modules"] = r".*\.(q_proj|down_proj)".into();
    std::fs::write(&cfg_path, edited.to_string()).unwrap();
    let mut loaded = build(&cfg, &weights, Ops::Fused, DType::F32);
    let read = load_adapter(&mut loaded, &dir).unwrap();
    assert_eq!(read.target_modules, ["down_proj", "q_proj"]);
    assert_eq!(lora_params(&loaded).len(), 4);
    // DoRA is refused, naming the file.
    edited["use_dora"] = true.into();
    std::fs::write(&cfg_path, edited.to_string()).unwrap();
    let err = load_adapter(&mut build(&cfg, &weights, Ops::Fused, DType::F32), &dir)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("adapter_config.json") && err.contains("use_dora"),
        "{err}"
    );
    std::fs::write(&cfg_path, json.to_string()).unwrap();

    // A file without one of its halves is refused, naming the file and the tensor.
    let mut broken = st.clone();
    broken.remove("base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight");
    candle_core::safetensors::save(&broken, dir.join("adapter_model.safetensors")).unwrap();
    let err = load_adapter(&mut build(&cfg, &weights, Ops::Fused, DType::F32), &dir)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("adapter_model.safetensors")
            && err.contains("base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight"),
        "{err}"
    );
    // So is an adapter for a model of another shape.
    let mut wide = st.clone();
    wide.insert(
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight".into(),
        Tensor::zeros((8, 64), DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&wide, dir.join("adapter_model.safetensors")).unwrap();
    let err = load_adapter(&mut build(&cfg, &weights, Ops::Fused, DType::F32), &dir)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.layers.0.self_attn.q_proj"), "{err}");
}

/// Four multiple-choice questions, one per answer letter.
fn questions() -> Vec<(String, &'static str)> {
    [
        ("What is 2 + 2?", ["3", "4", "5", "6"], "B"),
        ("Which is a colour?", ["red", "dog", "run", "sky"], "A"),
        ("Capital of France?", ["Rome", "Oslo", "Lima", "Paris"], "D"),
        (
            "Largest planet?",
            ["Mars", "Venus", "Jupiter", "Earth"],
            "C",
        ),
    ]
    .into_iter()
    .map(|(q, options, letter)| {
        let mut text = format!("{q}\n");
        for (l, o) in ["A", "B", "C", "D"].iter().zip(options) {
            text.push_str(&format!("{l}. {o}\n"));
        }
        text.push_str("Answer with the letter.");
        (text, letter)
    })
    .collect()
}

#[test]
fn training_overfits_four_multiple_choice_questions() {
    let cfg = config("llama");
    let weights = base_weights(&cfg);
    let mut model = build(&cfg, &weights, Ops::Differentiable, DType::F32);
    attach_lora(&mut model, &LoraConfig::default(), 7).unwrap();
    let qs = questions();
    let examples: Vec<TrainExample> = qs.iter().map(|(q, a)| example(q, a)).collect();
    let config = TrainConfig {
        learning_rate: 1e-2,
        epochs: 30,
        batch_size: 2,
        gradient_accumulation_steps: 1,
        warmup_ratio: 0.1,
        ..TrainConfig::default()
    };
    let mut seen = Vec::new();
    let reports = train(&mut model, &examples, &config, |r| {
        seen.push(r.step);
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(reports.len(), 60);
    assert_eq!(seen, (1..=60).collect::<Vec<_>>());
    let first = reports[..2].iter().map(|r| r.loss).sum::<f64>() / 2.0;
    let last = reports[58..].iter().map(|r| r.loss).sum::<f64>() / 2.0;
    assert!(last < first / 4.0, "loss {first} -> {last}");

    // Evaluate as inference does, on first-token logprobs, with the adapter merged (the
    // differentiable kernels compute the same function as the fused ones; see
    // `merged_and_unmerged_forwards_agree`).
    let eval = LocalModel::from_parts(
        merge_lora(&model).unwrap(),
        tokenizer(),
        template(),
        vec![258],
    );
    let prompts: Vec<Vec<u32>> = qs
        .iter()
        .map(|(q, _)| eval.encode_chat(&[user(q)]).unwrap())
        .collect();
    let logprobs = eval.next_token_logprobs(&prompts).unwrap();
    for ((q, letter), lp) in qs.iter().zip(&logprobs) {
        let want = eval.tokenizer().token_to_id(letter).unwrap() as usize;
        let best = (0..lp.len())
            .max_by(|&i, &j| lp[i].total_cmp(&lp[j]))
            .unwrap();
        assert_eq!(
            best, want,
            "{q:?}: the top first token is {best}, not {letter} ({want})"
        );
    }
    // The base model does not already know them.
    let base = LocalModel::from_parts(
        build(&cfg, &weights, Ops::Fused, DType::F32),
        tokenizer(),
        template(),
        vec![258],
    );
    let base_lp = base.next_token_logprobs(&prompts).unwrap();
    let right = qs
        .iter()
        .zip(&base_lp)
        .filter(|((_, letter), lp)| {
            let want = base.tokenizer().token_to_id(letter).unwrap() as usize;
            (0..lp.len()).all(|i| lp[i] <= lp[want])
        })
        .count();
    assert!(
        right < 4,
        "the untrained model already answers every question"
    );
}

#[test]
fn the_learning_rate_warms_up_then_decays_linearly_to_zero() {
    let config = TrainConfig {
        learning_rate: 2e-4,
        warmup_ratio: 0.2,
        ..TrainConfig::default()
    };
    // 10 steps, 2 of warm-up.
    let lr: Vec<f64> = (0..10).map(|s| config.learning_rate_at(s, 10)).collect();
    let want = [
        1e-4, 2e-4, 2e-4, 1.75e-4, 1.5e-4, 1.25e-4, 1e-4, 0.75e-4, 0.5e-4, 0.25e-4,
    ];
    for (s, (got, want)) in lr.iter().zip(want).enumerate() {
        assert!((got - want).abs() < 1e-12, "step {s}: {got} vs {want}");
    }
    assert_eq!(config.total_steps(10), 3 * 2);
    let accum = TrainConfig {
        batch_size: 2,
        gradient_accumulation_steps: 3,
        ..TrainConfig::default()
    };
    // 7 examples: 4 micro-batches, 2 optimizer steps per epoch.
    assert_eq!(accum.total_steps(7), 6);
    for bad in [
        TrainConfig {
            learning_rate: 0.0,
            ..TrainConfig::default()
        },
        TrainConfig {
            batch_size: 0,
            ..TrainConfig::default()
        },
        TrainConfig {
            warmup_ratio: 1.0,
            ..TrainConfig::default()
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
}

#[test]
fn accumulated_micro_batches_take_the_step_of_one_batch() {
    let cfg = config("qwen2");
    let weights = base_weights(&cfg);
    let examples: Vec<TrainExample> = questions().iter().map(|(q, a)| example(q, a)).collect();
    let run = |batch_size: usize, accumulation: usize| {
        let mut model = build(&cfg, &weights, Ops::Differentiable, DType::F32);
        attach_lora(&mut model, &no_dropout(), 5).unwrap();
        let config = TrainConfig {
            learning_rate: 1e-3,
            epochs: 2,
            batch_size,
            gradient_accumulation_steps: accumulation,
            ..TrainConfig::default()
        };
        let reports = train(
            &mut model,
            &examples,
            &config,
            |_| ControlFlow::Continue(()),
        )
        .unwrap();
        (model, reports)
    };
    let (whole, whole_reports) = run(4, 1);
    let (accumulated, accumulated_reports) = run(1, 4);
    assert_eq!(whole_reports.len(), 2);
    assert_eq!(accumulated_reports.len(), 2);
    for (w, a) in whole_reports.iter().zip(&accumulated_reports) {
        // The same mean loss per assistant token, up to f32 summation order.
        assert!((w.loss - a.loss).abs() < 1e-5, "{} vs {}", w.loss, a.loss);
    }
    for (p, q) in lora_params(&whole).iter().zip(lora_params(&accumulated)) {
        for (x, y) in [(&p.a, &q.a), (&p.b, &q.b)] {
            let diff = max_abs(&(x.as_tensor() - y.as_tensor()).unwrap());
            // Adam's step of an element is about lr g / sqrt(v): where g is near zero, f32
            // rounding in the summed gradients moves it by a small fraction of the
            // learning rate (1e-3); CI once saw 1.4e-6 after two steps. 1e-5 is 1% of one
            // step, and accumulation that dropped or misweighted a micro-batch moves an
            // element by a sizable fraction of a step.
            assert!(diff < 1e-5, "{}: {diff}", p.module);
        }
    }
    // Stopping early: the callback's Break ends training after that step.
    let mut model = build(&cfg, &weights, Ops::Differentiable, DType::F32);
    attach_lora(&mut model, &no_dropout(), 5).unwrap();
    let reports = train(&mut model, &examples, &TrainConfig::default(), |r| {
        if r.step == 1 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap();
    assert_eq!(reports.len(), 1);
}

fn spec(file: &str, epochs: u32, learning_rate: LearningRate) -> FineTuneSpec {
    FineTuneSpec {
        base_model: "tiny/llama".into(),
        training_file: file.into(),
        validation_file: None,
        hyperparameters: Hyperparameters {
            epochs: Param::Value(epochs),
            batch_size: Param::Value(2),
            learning_rate,
            ..Hyperparameters::default()
        },
        suffix: None,
        seed: Some(3),
        lora: None,
    }
}

async fn wait_until(
    tuner: &LocalFineTuner,
    id: &str,
    done: impl Fn(JobStatus) -> bool,
) -> JobStatus {
    for _ in 0..1200 {
        let status = tuner.get_job(id).await.unwrap().status;
        if done(status) {
            return status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("job {id} did not get there within a minute");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_fine_tuning_jobs_run_in_the_background_and_write_a_peft_adapter() {
    let cfg = config("llama");
    let weights = base_weights(&cfg);
    let (c, w) = (cfg.clone(), weights.clone());
    let loader: xlt_local::ModelLoader = std::sync::Arc::new(move |id: &str| {
        assert_eq!(id, "tiny/llama");
        Ok(LocalModel::from_parts(
            build(&c, &w, Ops::Differentiable, DType::F32),
            tokenizer(),
            template(),
            vec![258],
        ))
    });
    let tmp = tempfile::tempdir().unwrap();
    let tuner = LocalFineTuner::new(tmp.path(), loader.clone(), LoraConfig::default())
        .with_checkpoint_steps(2);
    let lines: String = questions()
        .iter()
        .map(|(q, a)| {
            serde_json::json!({"messages": [
                {"role": "user", "content": q}, {"role": "assistant", "content": a}
            ]})
            .to_string()
                + "\n"
        })
        .collect();
    let err = tuner
        .upload(
            "bad.jsonl",
            b"{\"messages\": []}\nnot json\n".to_vec(),
            FilePurpose::FineTune,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("bad.jsonl line 2"), "{err}");
    let file = tuner
        .upload("train.jsonl", lines.into_bytes(), FilePurpose::FineTune)
        .await
        .unwrap();

    // A learning-rate multiplier has no meaning here.
    let err = tuner
        .create_job(&spec(&file.id, 2, LearningRate::Multiplier(0.4)), "r0")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("absolute learning rate"), "{err}");

    let job = tuner
        .create_job(&spec(&file.id, 2, LearningRate::Absolute(1e-2)), "ref-1")
        .await
        .unwrap();
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(tuner.find_job("ref-1").await.unwrap().unwrap().id, job.id);
    assert!(tuner.find_job("ref-2").await.unwrap().is_none());
    let status = wait_until(&tuner, &job.id, JobStatus::is_terminal).await;
    let done = tuner.get_job(&job.id).await.unwrap();
    assert_eq!(status, JobStatus::Succeeded, "{:?}", done.error);
    let events = tuner.list_events(&job.id).await.unwrap();
    // Two epochs of two batches: four steps, then the end.
    assert_eq!(events.len(), 5, "{events:?}");
    assert!(
        events[0].message.starts_with("step 1/4: loss "),
        "{}",
        events[0].message
    );
    assert!(events[3].message.contains("tokens/s"));
    assert_eq!(events[4].message, "succeeded");
    let model_id = done.fine_tuned_model.unwrap();
    let adapter = tmp.path().join("jobs").join(&job.id).join("adapter");
    assert_eq!(model_id, format!("tiny/llama+{}", adapter.display()));
    let mut loaded = build(&cfg, &weights, Ops::Fused, DType::F32);
    let read = load_adapter(&mut loaded, &adapter).unwrap();
    assert_eq!(read, LoraConfig::default());
    assert_eq!(lora_params(&loaded).len(), 14);

    // Cancelled while running: it stops after its current step and writes no adapter.
    let long_spec = spec(&file.id, 20, LearningRate::Absolute(1e-3));
    let long = tuner.create_job(&long_spec, "ref-3").await.unwrap();
    let long_dir = tmp.path().join("jobs").join(&long.id);
    for _ in 0..1200 {
        if long_dir
            .join("checkpoint")
            .join("trainer_state.json")
            .exists()
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    tuner.cancel_job(&long.id).await.unwrap();
    let status = wait_until(&tuner, &long.id, JobStatus::is_terminal).await;
    assert_eq!(status, JobStatus::Cancelled);
    assert!(!long_dir.join("adapter").exists());
    let taken = tuner.list_events(&long.id).await.unwrap().len() - 1;
    assert!(taken < 40, "{taken} steps before the cancel took");

    // As if its process had died while running: another process resumes it from the last
    // checkpoint, and it ends on the adapter of a run that never stopped.
    let path = long_dir.join("job.json");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"cancelled\"", "\"running\"");
    std::fs::write(&path, text).unwrap();
    let again =
        LocalFineTuner::new(tmp.path(), loader, LoraConfig::default()).with_checkpoint_steps(2);
    assert_eq!(again.resume_jobs().unwrap(), vec![long.id.clone()]);
    let status = wait_until(&again, &long.id, JobStatus::is_terminal).await;
    assert_eq!(status, JobStatus::Succeeded);
    let events = again.list_events(&long.id).await.unwrap();
    let resumed = events
        .iter()
        .position(|e| e.message.starts_with("resumed at step "))
        .expect("a resume event");
    // `resumed at step N of M (from the checkpoint)`.
    let from: usize = events[resumed]
        .message
        .trim_start_matches("resumed at step ")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(from >= 2 && from.is_multiple_of(2), "{from}");
    assert!(
        events[resumed + 1]
            .message
            .starts_with(&format!("step {}/40:", from + 1)),
        "{}",
        events[resumed + 1].message
    );
    let whole = again.create_job(&long_spec, "ref-4").await.unwrap();
    assert_eq!(
        wait_until(&again, &whole.id, JobStatus::is_terminal).await,
        JobStatus::Succeeded
    );
    let read = |id: &str| {
        candle_core::safetensors::load(
            tmp.path()
                .join("jobs")
                .join(id)
                .join("adapter")
                .join("adapter_model.safetensors"),
            &Device::Cpu,
        )
        .unwrap()
    };
    let (resumed, whole) = (read(&long.id), read(&whole.id));
    assert_eq!(resumed.len(), whole.len());
    for (key, t) in &resumed {
        assert_eq!(max_abs(&(t - &whole[key]).unwrap()), 0.0, "{key}");
    }
}

#[test]
fn training_resumed_from_a_checkpoint_ends_where_an_uninterrupted_run_does() {
    let cfg = config("qwen2");
    let weights = base_weights(&cfg);
    let examples: Vec<TrainExample> = questions().iter().map(|(q, a)| example(q, a)).collect();
    // Dropout on (PEFT's default 0.05), so the masks must be replayed too.
    let lora = LoraConfig::default();
    let config = TrainConfig {
        learning_rate: 5e-3,
        epochs: 3,
        batch_size: 2,
        warmup_ratio: 0.2,
        ..TrainConfig::default()
    };
    let mut whole = build(&cfg, &weights, Ops::Differentiable, DType::F32);
    attach_lora(&mut whole, &lora, 9).unwrap();
    let all = train(
        &mut whole,
        &examples,
        &config,
        |_| ControlFlow::Continue(()),
    )
    .unwrap();
    assert_eq!(all.len(), 6);

    // The same run, stopped after step 2 and checkpointed...
    let mut first = build(&cfg, &weights, Ops::Differentiable, DType::F32);
    attach_lora(&mut first, &lora, 9).unwrap();
    let mut saved = None;
    train_resumable(&mut first, &examples, &config, None, |r, state| {
        if r.step == 2 {
            saved = Some(state.clone());
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    save_adapter(&first, &lora, "tiny", &tmp.path().join("checkpoint")).unwrap();
    drop(first);
    // ...then resumed in a fresh model from the saved adapter and optimizer state.
    let mut second = build(&cfg, &weights, Ops::Differentiable, DType::F32);
    load_adapter(&mut second, &tmp.path().join("checkpoint")).unwrap();
    let state = saved.unwrap();
    assert_eq!(state.step, 2);
    let rest = train_resumable(&mut second, &examples, &config, Some(&state), |_, _| {
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(
        rest.iter().map(|r| r.step).collect::<Vec<_>>(),
        [3, 4, 5, 6]
    );
    for (r, w) in rest.iter().zip(&all[2..]) {
        assert_eq!(r.learning_rate, w.learning_rate);
        assert_eq!(r.loss, w.loss, "step {}", r.step);
    }
    for (p, q) in lora_params(&whole).iter().zip(lora_params(&second)) {
        for (x, y) in [(&p.a, &q.a), (&p.b, &q.b)] {
            // The same arithmetic in the same order on the same inputs: equal to the bit.
            assert_eq!(
                max_abs(&(x.as_tensor() - y.as_tensor()).unwrap()),
                0.0,
                "{}",
                p.module
            );
        }
    }
}

/// A model id `<base>+<adapter dir>` evaluates the base with the adapter applied, as loading
/// the adapter by hand does; the base stays itself; a missing adapter names its file.
#[tokio::test]
async fn the_provider_evaluates_base_plus_adapter_model_ids() {
    let cfg = config("llama");
    let tmp = tempfile::tempdir().unwrap();
    let base_dir = tmp.path().join("base");
    std::fs::create_dir_all(&base_dir).unwrap();
    let (varmap, _) = xlt_local::testing::random_model(&cfg, Ops::Fused);
    xlt_local::testing::write_hf_dir(&base_dir, &cfg, &varmap, false);
    let base = base_dir.to_str().unwrap();
    // An adapter with nonzero lora_B, written in PEFT format.
    let mut model = LocalModel::load(
        &xlt_local::ModelSource::Dir(base_dir.clone()),
        &xlt_local::LoadOptions::default(),
    )
    .unwrap();
    attach_lora(model.model_mut(), &no_dropout(), 1).unwrap();
    randomize_b(model.model(), 0.5);
    let adapter = tmp.path().join("adapter");
    save_adapter(model.model(), &no_dropout(), base, &adapter).unwrap();

    let provider = xlt_local::LocalProvider::new(
        xlt_local::LoadOptions::default(),
        xlt_local::ServeOptions::default(),
    );
    let id = format!("{base}+{}", adapter.display());
    let mut request = xlt_provider::ChatRequest::new(&id, vec![user("2 + 2 = ?")]);
    request.max_tokens = Some(1);
    request.top_logprobs = Some(3);
    let tuned = provider.chat(&request).await.unwrap();
    let prompt = model.encode_chat(&request.messages).unwrap();
    let by_hand = model.next_token_logprobs(&[prompt]).unwrap();
    let top = &tuned.top_logprobs.unwrap()[0];
    let best = by_hand[0].iter().copied().fold(f32::NEG_INFINITY, f32::max);
    // Same computation, f32: agreement to rounding.
    assert!(
        (f64::from(best) - top.logprob).abs() < 1e-4,
        "{best} vs {top:?}"
    );
    // The base is loaded once, shared, and answers without the adapter.
    request.model = base.to_owned();
    let plain = provider.chat(&request).await.unwrap();
    assert_ne!(plain.top_logprobs.unwrap()[0].logprob, top.logprob);
    // A missing adapter is an error naming the file.
    request.model = format!("{base}+{}", tmp.path().join("nowhere").display());
    let e = provider.chat(&request).await.unwrap_err().to_string();
    assert!(e.contains("nowhere/adapter_config.json"), "{e}");
}
