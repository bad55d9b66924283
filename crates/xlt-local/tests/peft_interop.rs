//! Adapters move between this crate and Python `peft`, checked on the real
//! SmolLM2-135M-Instruct (part 1's Q4_1 GGUF, dequantized to f32; fetched by
//! `scripts/fetch-smollm2`, and these tests fail, not skip, without it) against
//! `fixtures/local/peft_reference.json`, written by `fixtures/local/make_peft_reference.py`:
//!
//! - `fixtures/local/peft_adapter/` was made and saved by `peft` itself (a regular
//!   expression for `target_modules`, `use_rslora`, `rank_pattern`, `alpha_pattern`);
//!   loaded here, it gives `peft`'s log-probabilities.
//! - `fixtures/local/xlt_adapter/` was written by this crate ([`xlt_adapter`] below);
//!   `peft` loaded it with `PeftModel.from_pretrained`, and its log-probabilities are ours.
//!   A test checks that this crate still writes exactly that adapter, so the fixture cannot
//!   go stale silently; `XLT_BLESS=1` rewrites it (then rerun the Python script).

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use xlt_local::{
    DType, LoadOptions, LocalModel, LoraConfig, ModelSource, attach_lora, load_adapter,
    lora_params, merge_lora, save_adapter,
};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixtures() -> PathBuf {
    workspace().join("fixtures/local")
}

/// The GGUF file (`scripts/fetch-smollm2`).
fn gguf() -> PathBuf {
    xlt_local::testing::smollm2_gguf()
}

fn load() -> LocalModel {
    LocalModel::load(
        &ModelSource::Gguf(gguf()),
        &LoadOptions {
            dtype: DType::F32,
            ..LoadOptions::default()
        },
    )
    .unwrap()
}

#[derive(Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    prompt_ids: Vec<u32>,
    peft_adapter: Vec<Alt>,
    xlt_adapter: Vec<Alt>,
}

#[derive(Deserialize)]
struct Alt {
    id: u32,
    token: String,
    logprob: f32,
}

fn reference() -> Reference {
    let path = fixtures().join("peft_reference.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The adapter this crate writes for the fixture: rank 2, alpha 8 on `q_proj` and `v_proj`
/// of every layer; `lora_A` as [`attach_lora`] draws it from seed 7, `lora_B` uniform on
/// `[-0.05, 0.05]` from a ChaCha8 stream seeded with 8 (PEFT starts it at zero, which
/// would make an adapter that does nothing).
fn xlt_adapter(model: &mut LocalModel) -> LoraConfig {
    let config = LoraConfig {
        r: 2,
        lora_alpha: 8.0,
        lora_dropout: 0.0,
        target_modules: vec!["q_proj".into(), "v_proj".into()],
        use_rslora: false,
    };
    attach_lora(model.model_mut(), &config, 7).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    for p in lora_params(model.model()) {
        let b = p.b.as_tensor();
        let values: Vec<f32> = (0..b.elem_count())
            .map(|_| rng.random_range(-0.05f32..0.05))
            .collect();
        p.b.set(&candle_core::Tensor::from_vec(values, b.shape(), b.device()).unwrap())
            .unwrap();
    }
    config
}

/// Tolerance: both sides run the same f32 weights through the same network; the adapter
/// adds two small matrix products per projection. What differs is the order of summation
/// in matrix products (candle's gemm against PyTorch's), which moves log-probabilities by
/// about 1e-5 nat (see `smollm2.rs`). 1e-3 nat is the bound; a wrong scale (alpha
/// / r against alpha / sqrt(r)), a transposed or missed factor moves them by far more
/// than that, as the adapters move them by more than 0.05 nat from the base model's.
const TOL: f32 = 1e-3;

/// Next-token log-probabilities of every case's prompt.
fn logprobs(model: &LocalModel, reference: &Reference) -> Vec<Vec<f32>> {
    let prompts: Vec<Vec<u32>> = reference
        .cases
        .iter()
        .map(|c| c.prompt_ids.clone())
        .collect();
    model.next_token_logprobs(&prompts).unwrap()
}

/// Asserts that `ours` has `peft`'s top token and its top-5 log-probabilities within
/// [`TOL`], and that they are at least 0.05 nat from the base model's somewhere.
fn check(
    what: &str,
    ours: &[Vec<f32>],
    base: &[Vec<f32>],
    reference: &Reference,
    pick: fn(&Case) -> &[Alt],
) {
    let mut moved = 0f32;
    for (i, case) in reference.cases.iter().enumerate() {
        let row = &ours[i];
        let top = (0..row.len())
            .max_by(|&a, &b| row[a].total_cmp(&row[b]))
            .unwrap() as u32;
        let alts = pick(case);
        assert_eq!(top, alts[0].id, "{what}: top token of case {i}");
        for alt in alts {
            let got = row[alt.id as usize];
            assert!(
                (got - alt.logprob).abs() < TOL,
                "{what}, case {i}, token {:?}: ours {got}, peft {}",
                alt.token,
                alt.logprob
            );
            moved = moved.max((got - base[i][alt.id as usize]).abs());
        }
    }
    assert!(
        moved > 0.05,
        "{what}: the adapter hardly changes the log-probabilities ({moved} nat), so the comparison shows nothing"
    );
}

#[test]
fn an_adapter_written_by_peft_gives_peft_logprobs_merged_or_not() {
    let reference = reference();
    let mut model = load();
    let base = logprobs(&model, &reference);
    let config = load_adapter(model.model_mut(), &fixtures().join("peft_adapter")).unwrap();
    // target_modules is a regular expression over layers 0 and 29: the seven projections
    // of each, with rank 8 on down_proj (rank_pattern).
    assert_eq!(config.r, 4);
    assert!(config.use_rslora);
    assert_eq!(
        config.target_modules,
        [
            "down_proj",
            "gate_proj",
            "k_proj",
            "o_proj",
            "q_proj",
            "up_proj",
            "v_proj"
        ]
    );
    let params = lora_params(model.model());
    assert_eq!(params.len(), 14);
    assert_eq!(params[0].module, "model.layers.0.self_attn.q_proj");
    assert_eq!(params[13].module, "model.layers.29.mlp.down_proj");
    assert_eq!(params[13].a.dims(), [8, 1536]);
    let unmerged = logprobs(&model, &reference);
    check("peft's adapter", &unmerged, &base, &reference, |c| {
        &c.peft_adapter
    });

    // Folded into the weights, the adapter computes the same function: merged and
    // unmerged differ by f32 rounding only.
    let merged = merge_lora(model.model()).unwrap();
    *model.model_mut() = merged;
    assert!(lora_params(model.model()).is_empty());
    let merged = logprobs(&model, &reference);
    for (i, (u, m)) in unmerged.iter().zip(&merged).enumerate() {
        let diff = u
            .iter()
            .zip(m)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            diff < 1e-4,
            "case {i}: merged and unmerged differ by {diff}"
        );
    }
    check("peft's adapter, merged", &merged, &base, &reference, |c| {
        &c.peft_adapter
    });
}

#[test]
fn peft_reproduces_the_logprobs_of_an_adapter_written_here() {
    let reference = reference();
    let mut model = load();
    let base = logprobs(&model, &reference);
    xlt_adapter(&mut model);
    let ours = logprobs(&model, &reference);
    check("our adapter", &ours, &base, &reference, |c| &c.xlt_adapter);

    // Read back from the committed files, it is the same adapter.
    let mut loaded = load();
    let config = load_adapter(loaded.model_mut(), &fixtures().join("xlt_adapter")).unwrap();
    assert_eq!(config.target_modules, ["q_proj", "v_proj"]);
    assert_eq!(logprobs(&loaded, &reference), ours);
}

#[test]
fn the_committed_adapter_is_what_this_crate_writes() {
    let mut model = load();
    let config = xlt_adapter(&mut model);
    let committed = fixtures().join("xlt_adapter");
    if std::env::var_os("XLT_BLESS").is_some_and(|v| v == "1") {
        save_adapter(
            model.model(),
            &config,
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            &committed,
        )
        .unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    let fresh = tmp.path().join("adapter");
    save_adapter(
        model.model(),
        &config,
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        &fresh,
    )
    .unwrap();
    for file in [xlt_local::ADAPTER_CONFIG, xlt_local::ADAPTER_WEIGHTS] {
        let want = std::fs::read(committed.join(file)).unwrap();
        let got = std::fs::read(fresh.join(file)).unwrap();
        assert!(
            want == got,
            "{} differs from what this crate writes now: rewrite it with XLT_BLESS=1 cargo test -p xlt-local --test peft_interop, then rerun fixtures/local/make_peft_reference.py",
            committed.join(file).display()
        );
    }
}
