//! Letter scoring on tiny random models (issue #22): the letters' log-probabilities are the
//! full forward pass's, batched equals unbatched, a token ` A` counts for `A`, and the
//! provider answers a letters request (alone and among generation requests) with them.

use std::sync::Arc;

use tokenizers::Tokenizer;
use xlt_local::testing::{SMOLLM2_TEMPLATE, config, random_model, tokenizer_json};
use xlt_local::{ChatTemplate, LoadOptions, LocalModel, LocalProvider, Ops, ServeOptions};
use xlt_provider::{
    ChatMessage, ChatModel, ChatRequest, LetterSource, Role, log_add_exp, score_letters,
};

/// The tiny byte-level tokenizer with one more token, `ĠA` (` A`), id 259 (the tiny
/// config's spare id), and the merge that makes it.
fn tokenizer_with_space_a() -> Tokenizer {
    let mut json = tokenizer_json();
    json["model"]["vocab"]["ĠA"] = 259.into();
    json["model"]["merges"] = serde_json::json!([["Ġ", "A"]]);
    json.to_string().parse().unwrap()
}

fn model() -> LocalModel {
    let cfg = config("llama");
    let (_vm, model) = random_model(&cfg, Ops::Fused);
    let template = ChatTemplate::new(SMOLLM2_TEMPLATE, "", "<|im_end|>").unwrap();
    LocalModel::from_parts(
        model,
        tokenizer_with_space_a(),
        template,
        cfg.eos_token_id.clone(),
    )
}

fn prompt(m: &LocalModel, text: &str) -> Vec<u32> {
    m.encode_chat(&[ChatMessage::new(Role::User, text)])
        .unwrap()
}

const PROMPTS: [&str; 4] = [
    "Q?\nA. x\nB. y\nC. z\nD. w",
    "A longer question, with more tokens in it?\nA. one\nB. two\nC. three\nD. four",
    "Hi",
    "Which is it: A or B?",
];

// Both sides are the same f32 network; the letter path sums its log-softmax in f64, the
// reference path in f32 (candle's log_softmax), so they differ in the last bits of a
// log-probability of magnitude ~5: 1e-4 nat is far below any real difference (a wrong
// position or a missing token moves a letter by tenths to whole nats).
const TOL: f64 = 1e-4;

#[test]
fn the_letter_tokens_are_every_token_that_trims_to_the_letter() {
    let m = model();
    let tok = m.tokenizer();
    let ids = m.letter_token_ids();
    let a = tok.token_to_id("A").unwrap();
    assert_eq!(ids[0], vec![a, 259], "A and ` A`");
    for (k, l) in ["B", "C", "D"].iter().enumerate() {
        assert_eq!(ids[k + 1], vec![tok.token_to_id(l).unwrap()], "letter {l}");
    }
    // The prompt " A" is encoded with the merged token, so the test of ` A` is not vacuous.
    assert!(tok.encode(" A", false).unwrap().get_ids().contains(&259));
}

#[test]
fn letter_logprobs_equal_the_full_forward_pass_and_batched_equals_alone() {
    let m = model();
    let prompts: Vec<Vec<u32>> = PROMPTS.iter().map(|p| prompt(&m, p)).collect();
    let ids = m.letter_token_ids().clone();
    let batched = m.letter_logprobs(&prompts).unwrap();
    for (i, p) in prompts.iter().enumerate() {
        let full = &m.next_token_logprobs(std::slice::from_ref(p)).unwrap()[0];
        let alone = m.letter_logprobs(std::slice::from_ref(p)).unwrap()[0];
        for k in 0..4 {
            let reference = ids[k]
                .iter()
                .map(|&id| f64::from(full[id as usize]))
                .fold(f64::NEG_INFINITY, log_add_exp);
            for (what, ours) in [("alone", alone[k]), ("batched", batched[i][k])] {
                assert!(
                    (ours - reference).abs() < TOL,
                    "prompt {i}, letter {k}, {what}: {ours} against the forward pass's {reference}"
                );
            }
        }
        // ` A` is part of A: A's probability exceeds the bare token's alone.
        let bare = f64::from(full[ids[0][0] as usize]);
        assert!(batched[i][0] > bare, "{} <= {bare}", batched[i][0]);
    }
    assert!(m.letter_logprobs(&[]).unwrap().is_empty());
    assert!(m.letter_logprobs(&[vec![]]).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_scores_letters_beside_generation_requests() {
    let m = model();
    let expected: Vec<[f64; 4]> = PROMPTS
        .iter()
        .map(|p| m.letter_logprobs(&[prompt(&m, p)]).unwrap()[0])
        .collect();
    let provider = Arc::new(LocalProvider::new(
        LoadOptions::default(),
        ServeOptions {
            max_batch: 3,
            max_concurrent: 16,
        },
    ));
    provider.insert("tiny", m).await;
    let request = |text: &str| ChatRequest::new("tiny", vec![ChatMessage::new(Role::User, text)]);
    // Letter requests and generation requests at once: each batch holds one kind.
    let mut handles = Vec::new();
    for (i, text) in PROMPTS.iter().enumerate() {
        let p = provider.clone();
        let r = request(text);
        handles.push(tokio::spawn(async move {
            (i, score_letters(p.as_ref(), &r).await.unwrap())
        }));
        let p = provider.clone();
        let mut g = request(text);
        g.max_tokens = Some(3);
        tokio::spawn(async move { p.chat(&g).await.unwrap() });
    }
    for h in handles {
        let (i, s) = h.await.unwrap();
        assert_eq!(s.source, LetterSource::FullVocabulary);
        assert_eq!(s.response.usage.completion_tokens, 0);
        assert!(s.response.text.is_empty());
        for (k, v) in s.logprobs.to_array().into_iter().enumerate() {
            let v = v.expect("every letter is scored over the full vocabulary");
            assert!(
                (v - expected[i][k]).abs() < TOL,
                "prompt {i}, letter {k}: {v} against {}",
                expected[i][k]
            );
        }
        assert!(s.logprobs.mass() > 0.0 && s.logprobs.mass() < 1.0);
    }
}
