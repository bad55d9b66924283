//! `adapter_config.json` as PEFT writes it, in its variants, on a tiny random model: what is
//! read the way PEFT reads it (target modules as a list, a regular expression or
//! `all-linear`, `exclude_modules`, `layers_to_transform`, `use_rslora`, `rank_pattern`,
//! `alpha_pattern`, `fan_in_fan_out`, keys with the adapter name), and what is refused with
//! an error naming the file and the key or tensor.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use xlt_local::testing::{config, random_model};
use xlt_local::{LoraConfig, Model, Ops, attach_lora, load_adapter, lora_params, save_adapter};

const WEIGHTS: &str = "adapter_model.safetensors";
const CONFIG: &str = "adapter_config.json";

fn base() -> Model {
    random_model(&config("llama"), Ops::Fused).1
}

fn logits(model: &Model) -> Tensor {
    let input = Tensor::new(&[[257u32, 10, 20, 30, 40, 258]], &Device::Cpu).unwrap();
    model.forward(&input, &mut model.new_cache(), None).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
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

/// Gives every `lora_B` seeded non-zero values so that each adapter changes the function.
fn perturb_b(model: &Model) {
    for (i, p) in lora_params(model).iter().enumerate() {
        let b = p.b.as_tensor();
        let values: Vec<f32> = (0..b.elem_count())
            .map(|j| 0.05 * (((i * 31 + j * 17) % 13) as f32 / 6.0 - 1.0))
            .collect();
        p.b.set(&Tensor::from_vec(values, b.shape(), b.device()).unwrap())
            .unwrap();
    }
}

/// An adapted model and its adapter directory: rank 4, alpha 8 on `targets`.
struct Fixture {
    _tmp: tempfile::TempDir,
    dir: std::path::PathBuf,
    expected: Tensor,
    json: serde_json::Value,
}

fn fixture(targets: &[&str]) -> Fixture {
    let mut model = base();
    let lora = LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        lora_dropout: 0.0,
        target_modules: targets.iter().map(|t| t.to_string()).collect(),
        use_rslora: false,
    };
    attach_lora(&mut model, &lora, 1).unwrap();
    perturb_b(&model);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("adapter");
    save_adapter(&model, &lora, "tiny/llama", &dir).unwrap();
    let json = serde_json::from_str(&std::fs::read_to_string(dir.join(CONFIG)).unwrap()).unwrap();
    Fixture {
        _tmp: tmp,
        dir,
        expected: logits(&model),
        json,
    }
}

fn write_config(dir: &Path, json: &serde_json::Value) {
    std::fs::write(dir.join(CONFIG), json.to_string()).unwrap();
}

fn tensors(dir: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join(WEIGHTS), &Device::Cpu).unwrap()
}

fn write_tensors(dir: &Path, t: &HashMap<String, Tensor>) {
    candle_core::safetensors::save(t, dir.join(WEIGHTS)).unwrap();
}

/// Loads `dir` onto a fresh base model: the model, or the error's message.
fn load(dir: &Path) -> Result<Model, String> {
    let mut model = base();
    load_adapter(&mut model, dir)
        .map(|_| model)
        .map_err(|e| e.to_string())
}

/// Asserts that loading fails with a message naming `file` and every one of `words`.
fn refused(dir: &Path, file: &str, words: &[&str]) {
    let err = match load(dir) {
        Ok(_) => panic!(
            "{} loaded, expected an error naming {words:?}",
            dir.display()
        ),
        Err(e) => e,
    };
    assert!(err.contains(file), "{err}");
    for w in words {
        assert!(err.contains(w), "{err:?} does not name {w:?}");
    }
}

#[test]
fn target_modules_are_selected_as_peft_selects_them() {
    let f = fixture(&["q_proj", "down_proj"]);
    // The list PEFT writes, a regular expression over full names, with or without
    // layers_to_transform: all give the saved function.
    let variants = [
        serde_json::json!(["q_proj", "down_proj"]),
        serde_json::json!(r"model\.layers\.\d+\.(self_attn\.q_proj|mlp\.down_proj)"),
        serde_json::json!(r".*\.(q|down)_proj"),
    ];
    for targets in variants {
        let mut json = f.json.clone();
        json["target_modules"] = targets.clone();
        write_config(&f.dir, &json);
        let model = load(&f.dir).unwrap_or_else(|e| panic!("{targets}: {e}"));
        assert_eq!(lora_params(&model).len(), 4, "{targets}");
        assert_eq!(max_diff(&logits(&model), &f.expected), 0.0, "{targets}");
    }
    // A regular expression is matched against the whole name, not a part of it.
    let mut json = f.json.clone();
    json["target_modules"] = "q_proj|down_proj".into();
    write_config(&f.dir, &json);
    refused(&f.dir, CONFIG, &["target_modules", "selects none"]);
    // Targets that select a module the file has no weights for: the missing tensor is named.
    json["target_modules"] = serde_json::json!(["q_proj", "down_proj", "v_proj"]);
    write_config(&f.dir, &json);
    refused(
        &f.dir,
        WEIGHTS,
        &[
            "base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight",
            "missing",
        ],
    );
    // Weights for a module the targets do not select.
    json["target_modules"] = serde_json::json!(["q_proj"]);
    write_config(&f.dir, &json);
    refused(
        &f.dir,
        WEIGHTS,
        &[
            "model.layers.0.mlp.down_proj.lora_A.weight",
            "does not select",
        ],
    );
    // Not a regular expression.
    json["target_modules"] = "(q_proj".into();
    write_config(&f.dir, &json);
    refused(&f.dir, CONFIG, &["target_modules", "regular expression"]);
}

#[test]
fn all_linear_exclude_modules_and_layers_to_transform() {
    let f = fixture(&[
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]);
    let mut json = f.json.clone();
    json["target_modules"] = "all-linear".into();
    write_config(&f.dir, &json);
    let model = load(&f.dir).unwrap();
    assert_eq!(lora_params(&model).len(), 14);
    assert_eq!(max_diff(&logits(&model), &f.expected), 0.0);
    // all-linear but down_proj: the file's down_proj weights are then not the config's.
    json["exclude_modules"] = serde_json::json!(["down_proj"]);
    write_config(&f.dir, &json);
    refused(&f.dir, WEIGHTS, &["down_proj", "does not select"]);
    let mut t = tensors(&f.dir);
    t.retain(|k, _| !k.contains("down_proj"));
    write_tensors(&f.dir, &t);
    assert_eq!(lora_params(&load(&f.dir).unwrap()).len(), 12);

    // layers_to_transform (with a list of targets) keeps layer 1's q_proj only.
    let f = fixture(&["q_proj"]);
    let mut t = tensors(&f.dir);
    t.retain(|k, _| k.contains("layers.1."));
    write_tensors(&f.dir, &t);
    let mut json = f.json.clone();
    write_config(&f.dir, &json);
    refused(
        &f.dir,
        WEIGHTS,
        &["layers.0.self_attn.q_proj.lora_A.weight", "missing"],
    );
    for (layers, pattern) in [
        (serde_json::json!([1]), serde_json::Value::Null),
        (serde_json::json!(1), serde_json::json!("layers")),
        (serde_json::json!([1]), serde_json::json!(["layers"])),
    ] {
        json["layers_to_transform"] = layers;
        json["layers_pattern"] = pattern;
        write_config(&f.dir, &json);
        let model = load(&f.dir).unwrap();
        let params = lora_params(&model);
        assert_eq!(params.len(), 1);
        assert_eq!(params[0].module, "model.layers.1.self_attn.q_proj");
    }
}

#[test]
fn rslora_rank_pattern_and_alpha_pattern_set_each_modules_scale() {
    // q_proj at rank 4, alpha 8; down_proj at rank 2, alpha 6 (scale 3).
    let mut model = base();
    let q = LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        lora_dropout: 0.0,
        target_modules: vec!["q_proj".into()],
        use_rslora: false,
    };
    attach_lora(&mut model, &q, 1).unwrap();
    let down = LoraConfig {
        r: 2,
        lora_alpha: 6.0,
        target_modules: vec!["down_proj".into()],
        ..q.clone()
    };
    attach_lora(&mut model, &down, 2).unwrap();
    perturb_b(&model);
    let expected = logits(&model);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("adapter");
    let both = LoraConfig {
        target_modules: vec!["q_proj".into(), "down_proj".into()],
        ..q.clone()
    };
    save_adapter(&model, &both, "tiny/llama", &dir).unwrap();
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(CONFIG)).unwrap()).unwrap();
    // Without the patterns, down_proj's rank 2 does not fit r = 4.
    refused(&dir, WEIGHTS, &["model.layers.0.mlp.down_proj", "r = 4"]);
    json["rank_pattern"] = serde_json::json!({"down_proj": 2});
    write_config(&dir, &json);
    let wrong_alpha = logits(&load(&dir).unwrap());
    assert!(max_diff(&wrong_alpha, &expected) > 1e-3);
    // Patterns match the end of the name at a dot, and may be regular expressions;
    // the first matching pattern wins.
    // (Written as text: the order of the patterns matters.)
    for alpha in [
        r#"{"down_proj": 6}"#,
        r#"{"model\\.layers\\.\\d\\.mlp\\.down_proj": 6.0}"#,
        r#"{"mlp.down_proj": 6, "down_proj": 100}"#,
    ] {
        json["alpha_pattern"] = serde_json::Value::Null;
        let text = json.to_string().replace(
            r#""alpha_pattern":null"#,
            &format!(r#""alpha_pattern":{alpha}"#),
        );
        std::fs::write(dir.join(CONFIG), text).unwrap();
        let got = logits(&load(&dir).unwrap());
        assert!(max_diff(&got, &expected) < 1e-6, "{alpha}");
    }
    // "proj" is not the end of a name at a dot, so it sets nothing.
    json["alpha_pattern"] = serde_json::json!({"proj": 6});
    write_config(&dir, &json);
    assert!(max_diff(&logits(&load(&dir).unwrap()), &wrong_alpha) < 1e-6);

    // use_rslora: scale alpha / sqrt(r). alpha 4 at rank 4 is scale 2, as alpha 8 / 4;
    // alpha 3 * sqrt(2) at rank 2 is scale 3, as alpha 6 / 2.
    json["use_rslora"] = true.into();
    json["lora_alpha"] = 4.0.into();
    json["alpha_pattern"] = serde_json::json!({"down_proj": 3.0 * 2f64.sqrt()});
    write_config(&dir, &json);
    let got = logits(&load(&dir).unwrap());
    assert!(max_diff(&got, &expected) < 1e-5);
    json["use_rslora"] = false.into();
    write_config(&dir, &json);
    assert!(max_diff(&logits(&load(&dir).unwrap()), &expected) > 1e-3);
}

#[test]
fn key_names_with_the_adapter_name_and_fan_in_fan_out_load() {
    let f = fixture(&["q_proj", "v_proj"]);
    // PEFT's in-memory names carry the adapter's name: `lora_A.default.weight`.
    let renamed: HashMap<String, Tensor> = tensors(&f.dir)
        .into_iter()
        .map(|(k, v)| {
            let k = k
                .replace(".lora_A.weight", ".lora_A.default.weight")
                .replace(".lora_B.weight", ".lora_B.default.weight");
            (k, v)
        })
        .collect();
    write_tensors(&f.dir, &renamed);
    // fan_in_fan_out on nn.Linear layers is ignored, as PEFT ignores it; an adapter saved
    // in half precision is converted to the model's dtype.
    let mut json = f.json.clone();
    json["fan_in_fan_out"] = true.into();
    write_config(&f.dir, &json);
    assert_eq!(max_diff(&logits(&load(&f.dir).unwrap()), &f.expected), 0.0);
    let half: HashMap<String, Tensor> = renamed
        .iter()
        .map(|(k, v)| (k.clone(), v.to_dtype(DType::BF16).unwrap()))
        .collect();
    write_tensors(&f.dir, &half);
    assert!(max_diff(&logits(&load(&f.dir).unwrap()), &f.expected) < 1e-1);
}

#[test]
fn what_would_compute_something_else_is_refused_naming_the_key() {
    let f = fixture(&["q_proj"]);
    for (key, value, words) in [
        (
            "peft_type",
            serde_json::json!("IA3"),
            vec!["peft_type", "IA3"],
        ),
        ("use_dora", true.into(), vec!["use_dora"]),
        ("bias", "lora_only".into(), vec!["bias", "lora_only"]),
        ("lora_bias", true.into(), vec!["lora_bias"]),
        ("use_qalora", true.into(), vec!["use_qalora"]),
        (
            "modules_to_save",
            serde_json::json!(["lm_head"]),
            vec!["modules_to_save", "lm_head"],
        ),
        (
            "layer_replication",
            serde_json::json!([[0, 1]]),
            vec!["layer_replication"],
        ),
        (
            "trainable_token_indices",
            serde_json::json!([3, 4]),
            vec!["trainable_token_indices"],
        ),
        (
            "target_parameters",
            serde_json::json!(["experts.gate_up_proj"]),
            vec!["target_parameters"],
        ),
        (
            "init_lora_weights",
            "pissa_niter_4".into(),
            vec!["init_lora_weights", "pissa"],
        ),
        (
            "target_modules",
            serde_json::Value::Null,
            vec!["target_modules"],
        ),
        (
            "rank_pattern",
            serde_json::json!({"q_proj": 2.5}),
            vec!["rank_pattern"],
        ),
    ] {
        let mut json = f.json.clone();
        json[key] = value;
        write_config(&f.dir, &json);
        refused(&f.dir, CONFIG, &words);
    }
    // Settings that change nothing here are read.
    let mut json = f.json.clone();
    json["init_lora_weights"] = "gaussian".into();
    json["modules_to_save"] = serde_json::Value::Null;
    json["layer_replication"] = serde_json::Value::Null;
    json["peft_version"] = "0.21.2".into();
    write_config(&f.dir, &json);
    assert_eq!(max_diff(&logits(&load(&f.dir).unwrap()), &f.expected), 0.0);

    // Weights that are not those of a linear layer's LoRA are named.
    let good = tensors(&f.dir);
    for (key, words) in [
        (
            "base_model.model.model.embed_tokens.lora_embedding_A",
            vec!["lora_embedding_A", "embedding"],
        ),
        (
            "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector",
            vec!["lora_magnitude_vector", "DoRA"],
        ),
        (
            "base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias",
            vec!["lora_B.bias", "lora_bias"],
        ),
        (
            "model.layers.0.self_attn.q_proj.lora_A.weight",
            vec!["base_model.model"],
        ),
    ] {
        let mut t = good.clone();
        t.insert(
            key.into(),
            Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap(),
        );
        write_tensors(&f.dir, &t);
        refused(&f.dir, WEIGHTS, &words);
    }
    // A half that is missing is named.
    let mut t = good.clone();
    t.remove("base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight");
    write_tensors(&f.dir, &t);
    refused(
        &f.dir,
        WEIGHTS,
        &[
            "base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight",
            "missing",
        ],
    );
    // A pickle is not read.
    std::fs::remove_file(f.dir.join(WEIGHTS)).unwrap();
    std::fs::write(f.dir.join("adapter_model.bin"), b"not read").unwrap();
    refused(&f.dir, "adapter_model.bin", &["pickle"]);
}
