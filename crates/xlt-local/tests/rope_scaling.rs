//! Rotary frequency scaling: Llama 3.1's from a Hugging Face `config.json` and from a GGUF
//! file's `rope_freqs.weight` (as llama.cpp's converter writes it), checked against the
//! frequencies Python `transformers` computes, and linear scaling from GGUF metadata.

use candle_core::quantized::gguf_file::Value;
use candle_core::{Device, Tensor};
use xlt_local::testing::{config, random_model, write_gguf, write_hf_dir};
use xlt_local::{Config, LoadOptions, LocalError, Ops, RopeScaling, load_dir, load_gguf};

/// `transformers` 5.24's `_compute_llama3_parameters` for head_dim 16, rope_theta 500000,
/// factor 8, low_freq_factor 1, high_freq_factor 4, original_max_position_embeddings 8192
/// (computed in f32 by `LlamaConfig(hidden_size=64, num_attention_heads=4, ...)`): the four
/// short wavelengths (under 8192 / 4 positions) unchanged, index 4 (4443 positions)
/// interpolated, the three longest divided by 8.
const TRANSFORMERS_LLAMA3: [f32; 8] = [
    1.0,
    0.193_922_76,
    0.037_606_03,
    0.007_292_665,
    0.000_524_846,
    3.428_102_4e-5,
    6.647_869_7e-6,
    1.289_173_2e-6,
];

/// The same without scaling: `rope_theta^(-2i / 16)`.
const TRANSFORMERS_UNSCALED: [f32; 8] = [
    1.0,
    0.193_922_76,
    0.037_606_03,
    0.007_292_665,
    0.001_414_213_4,
    0.000_274_248_2,
    5.318_295_7e-5,
    1.031_338_5e-5,
];

/// A tiny Llama with 16-wide heads and Llama 3.1's rope scaling.
fn llama3_config() -> Config {
    Config {
        hidden_size: 64,
        num_attention_heads: 4,
        num_key_value_heads: Some(2),
        rope_theta: 500_000.0,
        rope_scaling: Some(RopeScaling {
            rope_type: "llama3".into(),
            factor: Some(8.0),
            low_freq_factor: Some(1.0),
            high_freq_factor: Some(4.0),
            original_max_position_embeddings: Some(8192),
        }),
        ..config("llama")
    }
}

/// llama.cpp's converter (`convert_hf_to_gguf.py`, `LlamaModel.generate_extra_tensors`):
/// the divisor of each frequency, from the unscaled frequencies and the `rope_scaling` entry.
fn llama_cpp_rope_factors(unscaled: &[f32]) -> Vec<f32> {
    let (factor, low, high, old) = (8.0f64, 1.0f64, 4.0f64, 8192.0f64);
    let (low_wavelen, high_wavelen) = (old / low, old / high);
    unscaled
        .iter()
        .map(|&f| {
            let wavelen = 2.0 * std::f64::consts::PI / f64::from(f);
            let r = if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (old / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            };
            r as f32
        })
        .collect()
}

/// Each frequency within a relative 1e-6 of `expected` (f32 rounding of the same formula).
fn check_frequencies(what: &str, model: &xlt_local::Model, expected: &[f32]) {
    let got: Vec<f32> = model.rotary().inv_freq().to_vec1().unwrap();
    assert_eq!(got.len(), expected.len(), "{what}");
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        assert!(
            ((g - e) / e).abs() < 1e-6,
            "{what}: frequency {i} is {g}, transformers computes {e}"
        );
    }
}

fn logits(model: &xlt_local::Model) -> Tensor {
    let ids: Vec<u32> = (0..12).map(|i| (i * 37 + 5) % 256).collect();
    let input = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    model.forward(&input, &mut model.new_cache(), None).unwrap()
}

#[test]
fn llama3_rope_scaling_matches_transformers_from_config_json_and_from_gguf() {
    let cfg = llama3_config();
    let (varmap, _) = random_model(&cfg, Ops::Fused);
    let dir = tempfile::tempdir().unwrap();
    write_hf_dir(dir.path(), &cfg, &varmap, false);
    let from_dir = load_dir(dir.path(), &LoadOptions::default()).unwrap();
    check_frequencies("config.json", &from_dir.model, &TRANSFORMERS_LLAMA3);

    // The GGUF file has no rope_scaling metadata, only the divisors.
    let unscaled = Config {
        rope_scaling: None,
        ..cfg.clone()
    };
    let factors = llama_cpp_rope_factors(&TRANSFORMERS_UNSCALED);
    assert_eq!(factors[..4], [1.0; 4]);
    assert_eq!(factors[5..], [8.0; 3]);
    let file = dir.path().join("llama3.gguf");
    let rope_freqs = Tensor::new(factors.as_slice(), &Device::Cpu).unwrap();
    write_gguf(
        &file,
        &unscaled,
        &varmap,
        &[("rope_freqs.weight", rope_freqs)],
        &[],
    );
    let from_gguf = load_gguf(&file, &LoadOptions::default()).unwrap();
    check_frequencies(
        "GGUF rope_freqs.weight",
        &from_gguf.model,
        &TRANSFORMERS_LLAMA3,
    );

    // The same network either way (the GGUF's q and k went through llama.cpp's permutation
    // and back).
    let a = logits(&from_dir.model);
    let b = logits(&from_gguf.model);
    let d = (&a - &b).unwrap().abs().unwrap().max_all().unwrap();
    let d: f32 = d.to_scalar().unwrap();
    assert!(d < 1e-4, "GGUF and config.json models differ by {d}");
}

#[test]
fn gguf_linear_rope_scaling_divides_every_frequency_and_yarn_is_refused() {
    let cfg = Config {
        rope_scaling: None,
        ..llama3_config()
    };
    let (varmap, _) = random_model(&cfg, Ops::Fused);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("linear.gguf");
    write_gguf(
        &file,
        &cfg,
        &varmap,
        &[],
        &[
            ("llama.rope.scaling.type", Value::String("linear".into())),
            ("llama.rope.scaling.factor", Value::F32(4.0)),
        ],
    );
    let model = load_gguf(&file, &LoadOptions::default()).unwrap().model;
    let quarter: Vec<f32> = TRANSFORMERS_UNSCALED.iter().map(|f| f / 4.0).collect();
    check_frequencies("linear", &model, &quarter);

    // Without scaling, the plain frequencies.
    let plain = dir.path().join("plain.gguf");
    write_gguf(&plain, &cfg, &varmap, &[], &[]);
    let model = load_gguf(&plain, &LoadOptions::default()).unwrap().model;
    check_frequencies("none", &model, &TRANSFORMERS_UNSCALED);

    let yarn = dir.path().join("yarn.gguf");
    write_gguf(
        &yarn,
        &cfg,
        &varmap,
        &[],
        &[("llama.rope.scaling.type", Value::String("yarn".into()))],
    );
    let e = load_gguf(&yarn, &LoadOptions::default()).unwrap_err();
    assert!(matches!(&e, LocalError::Metadata { key, .. } if key == "llama.rope.scaling.type"));
    assert!(e.to_string().contains("yarn.gguf"), "{e}");

    // Divisors of the wrong length are named.
    let short = dir.path().join("short.gguf");
    let two = Tensor::new(&[1.0f32, 8.0], &Device::Cpu).unwrap();
    write_gguf(&short, &cfg, &varmap, &[("rope_freqs.weight", two)], &[]);
    let e = load_gguf(&short, &LoadOptions::default()).unwrap_err();
    assert!(
        matches!(&e, LocalError::Tensor { tensor, .. } if tensor == "rope_freqs.weight"),
        "{e}"
    );
}
